// The compare view: every selected run's curve of a metric on one chart, one chart per metric.
(function () {
  "use strict";
  var section = document.getElementById("compare");
  if (!section || !window.uPlot) return;
  var Charts = window.TrainHubCharts;
  var runs = JSON.parse(section.dataset.runs);
  var container = document.getElementById("compare-charts");
  var axisSelect = document.getElementById("compare-axis");
  var answers = null;
  var charts = [];

  function fetchRun(run, axis) {
    return fetch(section.dataset.api + encodeURIComponent(run.run_id) + "/metrics/chart?rank=0&x=" + axis,
                 {credentials: "same-origin"}).then(function (r) { return r.json(); });
  }

  function render() {
    charts.forEach(function (c) { c.plot.destroy(); c.card.remove(); });
    charts = [];
    var axis = axisSelect.value;
    var names = {};
    answers.forEach(function (answer) { answer.series.forEach(function (s) { names[s.name] = true; }); });
    Object.keys(names).sort().forEach(function (name) {
      var tables = answers.map(function (answer) {
        var s = answer.series.filter(function (item) { return item.name === name; })[0];
        if (!s) return [[], []];
        var xs = s.x;
        if (axis === "time") {
          var start = answer.start;
          xs = xs.map(function (t) { return +(t - start).toFixed(3); });
        }
        return Charts.sortedPairs(xs, s.values);
      });
      var data = uPlot.join(tables.filter(function (t) { return t[0].length; }));
      var labels = runs.filter(function (_, i) { return tables[i][0].length; }).map(function (r) { return r.label; });
      var chart = Charts.chart(container, name, labels, data, "step", axis === "time" ? "seconds" : "step");
      chart.card.dataset.runs = labels.length;
      charts.push(chart);
    });
    container.dataset.ready = "1";
  }

  function load() {
    var axis = axisSelect.value;
    Promise.all(runs.map(function (run) { return fetchRun(run, axis); })).then(function (found) {
      if (axis !== axisSelect.value) return;
      answers = found.map(function (answer) {
        // On the time axis each run starts at 0: its first point.
        var start = Infinity;
        answer.series.forEach(function (s) { if (s.x.length && s.x[0] < start) start = s.x[0]; });
        answer.start = start;
        return answer;
      });
      render();
    });
  }
  load();
  axisSelect.addEventListener("change", load);
  window.addEventListener("resize", function () { Charts.resizeAll(charts); });
})();
