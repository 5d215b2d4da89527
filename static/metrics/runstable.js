// The runs table: follows the status, duration and metric cells of its active runs (every 2 s
// while one is shown), and sends the runs ticked for comparison as one shareable ?runs=a,b,c.
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
    var badge = tr.querySelector(".status");
    badge.className = "status " + state.status;
    badge.textContent = state.status;
    var duration = tr.querySelector("[data-duration]");
    if (duration) {
      if (state.started_at && !state.final) duration.dataset.runningSince = state.started_at;
      else delete duration.dataset.runningSince;
      duration.textContent = state.duration;
    }
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
    if (state.final) delete tr.dataset.active;
  }

  function poll() {
    var rows = active();
    if (!rows.length) return;
    var ids = Array.prototype.map.call(rows, function (tr) { return tr.dataset.run; });
    var url = table.dataset.liveUrl + "?runs=" + encodeURIComponent(ids.join(",")) +
              "&columns=" + encodeURIComponent(metricColumns.join(","));
    fetch(url, {credentials: "same-origin"})
      .then(function (response) { return response.ok ? response.json() : {}; })
      .then(function (states) {
        active().forEach(function (tr) { if (states[tr.dataset.run]) update(tr, states[tr.dataset.run]); });
      })
      .catch(function () {})
      .then(function () { if (active().length) setTimeout(poll, 2000); });
  }
  setTimeout(poll, 2000);
})();
