// The compare view: every selected run's curve of a metric on one chart, one chart per metric,
// with a log scale, smoothing (an exponential moving average, as TensorBoard's) and large panels.
(function () {
  "use strict";
  var section = document.getElementById("compare");
  if (!section || !window.uPlot) return;
  var Charts = window.TrainHubCharts;
  var runs = JSON.parse(document.getElementById("compare-runs").textContent);
  var container = document.getElementById("compare-charts");
  var axisSelect = document.getElementById("compare-axis");
  var scaleSelect = document.getElementById("compare-scale");
  var sizeSelect = document.getElementById("compare-size");
  var smoothing = document.getElementById("compare-smoothing");
  var smoothingShown = document.getElementById("compare-smoothing-value");
  var answers = null;
  var charts = [];

  function fetchRun(run, axis) {
    return fetch(section.dataset.api + encodeURIComponent(run.run_id) + "/metrics/chart?rank=0&x=" + axis,
                 {credentials: "same-origin"}).then(function (r) { return r.json(); });
  }

  function smooth(values, weight) {
    if (!weight) return values;
    var out = [], last = null;
    values.forEach(function (v) {
      if (v === null || v === undefined || !isFinite(v)) { out.push(v); return; }
      last = last === null ? v : last * weight + (1 - weight) * v;
      out.push(last);
    });
    return out;
  }

  function render() {
    charts.forEach(function (c) { c.plot.destroy(); c.card.remove(); });
    charts = [];
    var axis = axisSelect.value;
    var log = scaleSelect.value === "log";
    var large = sizeSelect.value === "large";
    var weight = +smoothing.value;
    container.classList.toggle("large", large);
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
        var pairs = Charts.sortedPairs(xs, s.values);
        var ys = smooth(pairs[1], weight);
        if (log) ys = ys.map(function (v) { return v > 0 ? v : null; });  // a log axis has no place for them
        return [pairs[0], ys];
      });
      var data = uPlot.join(tables.filter(function (t) { return t[0].length; }));
      var labels = runs.filter(function (_, i) { return tables[i][0].length; }).map(function (r) { return r.label; });
      var chart = Charts.chart(container, name, labels, data, "step", axis === "time" ? "seconds" : "step",
                               {log: log, height: large ? 380 : 190, dashed: true});
      chart.card.dataset.runs = labels.length;
      chart.card.dataset.scale = log ? "log" : "linear";
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
  scaleSelect.addEventListener("change", function () { if (answers) render(); });
  sizeSelect.addEventListener("change", function () { if (answers) render(); });
  smoothing.addEventListener("input", function () {
    smoothingShown.textContent = smoothing.value;
    if (answers) render();
  });
  window.addEventListener("resize", function () { Charts.resizeAll(charts); });
})();
