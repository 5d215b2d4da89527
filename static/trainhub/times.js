// Keeps "5 minutes ago" current, counts up the elapsed time of running runs, and follows the
// status and duration of the active runs a list shows (tables with data-states-url).
// TrainHubTimes.showRunState(row, state) is how every list shows a run's new status and duration
// (the runs table's script uses it too).
(function () {
  "use strict";
  var UNITS = [["year", 31536000], ["month", 2592000], ["week", 604800], ["day", 86400],
               ["hour", 3600], ["minute", 60]];

  function ago(seconds) {
    for (var i = 0; i < UNITS.length; i++) {
      var n = Math.floor(seconds / UNITS[i][1]);
      if (n >= 1) return n + " " + UNITS[i][0] + (n === 1 ? "" : "s") + " ago";
    }
    return "0 minutes ago";
  }

  function duration(seconds) {
    if (seconds < 60) return seconds.toFixed(1) + " s";
    var s = Math.floor(seconds), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return (h ? h + " h " : "") + m + " min " + (s % 60) + " s";
  }

  function tick() {
    var now = Date.now();
    document.querySelectorAll("time[datetime]").forEach(function (el) {
      el.textContent = ago(Math.max(0, (now - Date.parse(el.getAttribute("datetime"))) / 1000));
    });
    document.querySelectorAll("[data-running-since]").forEach(function (el) {
      el.textContent = duration(Math.max(0, (now - Date.parse(el.dataset.runningSince)) / 1000));
    });
  }

  // A run's row given what the server says of it now: {status, final, started_at, duration}
  // (seconds, or null before it starts). A running run's duration then counts up on its own.
  function showRunState(tr, state) {
    var badge = tr.querySelector(".status");
    badge.className = "status " + state.status;
    badge.textContent = state.status;
    var cell = tr.querySelector("[data-duration]");
    if (cell) {
      if (state.started_at && !state.final) cell.dataset.runningSince = state.started_at;
      else delete cell.dataset.runningSince;
      cell.textContent = state.duration === null ? "" : duration(state.duration);
    }
    if (state.final) delete tr.dataset.active;
  }
  window.TrainHubTimes = {showRunState: showRunState};

  function follow(table) {
    var rows = function () { return table.querySelectorAll("tr[data-run][data-active]"); };
    if (!rows().length) return;
    var poll = function () {
      var ids = Array.prototype.map.call(rows(), function (tr) { return tr.dataset.run; });
      if (!ids.length) return;
      fetch(table.dataset.statesUrl + "?runs=" + encodeURIComponent(ids.join(",")), {credentials: "same-origin"})
        .then(function (response) { return response.ok ? response.json() : {}; })
        .then(function (states) {
          rows().forEach(function (tr) {
            if (states[tr.dataset.run]) showRunState(tr, states[tr.dataset.run]);
          });
        })
        .catch(function () {})
        .then(function () { if (rows().length) setTimeout(poll, 2000); });
    };
    setTimeout(poll, 2000);
  }

  tick();
  setInterval(tick, 1000);
  document.querySelectorAll("table[data-states-url]").forEach(follow);
})();
