// The runs table: follows the status, duration and metric cells of its active runs (every 2 s
// while one is shown), takes in new runs at its top when it shows the newest first (its first
// page, unsorted), and sends the runs ticked for comparison as one shareable ?runs=a,b,c.
// A row's status and duration are shown by times.js's TrainHubTimes.showRunState, as in every list.
(function () {
  "use strict";
  var table = document.getElementById("metric-runs");
  if (!table) return;
  var compare = document.getElementById("compare-form");
  compare.addEventListener("submit", function (event) {
    event.preventDefault();
    var chosen = Array.prototype.map.call(this.querySelectorAll('input[name="runs"]:checked'), function (box) { return box.value; });
    location.href = this.action + "?runs=" + chosen.map(encodeURIComponent).join(",");
  });

  var metricColumns = (table.dataset.columns || "").split(",").filter(function (key) { return key.indexOf("metrics.") === 0; });
  var active = function () { return table.querySelectorAll("tr[data-run][data-active]"); };

  function update(tr, state) {
    tr.querySelectorAll("td[data-metric]").forEach(function (cell) {
      var key = cell.dataset.metric;
      if (!(key in state.metrics)) return;
      cell.querySelector(".value").textContent = state.metrics[key];
      var range = state.metrics[key + ":range"];
      if (range === undefined) return;
      var shown = cell.querySelector(".range");
      if (!shown) {
        cell.appendChild(document.createElement("br"));
        shown = document.createElement("span");
        shown.className = "muted range";
        cell.appendChild(shown);
      }
      shown.textContent = range;
    });
    window.TrainHubTimes.showRunState(tr, state);
  }

  function states() {
    var rows = active();
    if (!rows.length) return Promise.resolve();
    var ids = Array.prototype.map.call(rows, function (tr) { return tr.dataset.run; });
    var url = table.dataset.liveUrl + "?runs=" + encodeURIComponent(ids.join(",")) +
              "&columns=" + encodeURIComponent(metricColumns.join(","));
    return fetch(url, {credentials: "same-origin"})
      .then(function (response) { return response.ok ? response.json() : {}; })
      .then(function (found) {
        active().forEach(function (tr) { if (found[tr.dataset.run]) update(tr, found[tr.dataset.run]); });
      });
  }

  function newRuns() {
    if (!table.dataset.newUrl) return Promise.resolve();
    return fetch(table.dataset.newUrl + "&newer=" + table.dataset.newest, {credentials: "same-origin"})
      .then(function (response) { return response.ok ? response.json() : {rows: []}; })
      .then(function (found) {
        if (!found.rows.length) return;
        var body = table.tBodies[0];
        var empty = document.getElementById("no-runs");
        if (empty) empty.remove();
        var holder = document.createElement("tbody");
        found.rows.slice().reverse().forEach(function (row) {
          if (row.id <= Number(table.dataset.newest)) return;
          holder.innerHTML = row.html;
          body.insertBefore(holder.firstElementChild, body.firstElementChild);
          table.dataset.newest = row.id;
        });
      });
  }

  function poll() {
    Promise.all([states(), newRuns()])
      .catch(function () {})
      .then(function () { if (active().length || table.dataset.newUrl) setTimeout(poll, 2000); });
  }
  setTimeout(poll, 2000);
})();
