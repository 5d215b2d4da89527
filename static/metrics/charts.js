// Metric charts drawn with the vendored uPlot: one small chart per metric, x = step or time.
window.TrainHubCharts = (function () {
  "use strict";
  var COLORS = ["#2f5bd3", "#d3542f", "#1f8a4c", "#8a3fd1", "#c9a000", "#0f8b8d", "#d12f8a", "#5b6b7f"];

  // NaN and ±inf arrive as the strings "NaN", "Infinity", "-Infinity" (JSON has no such numbers).
  var NON_FINITE = {NaN: "NaN", Infinity: "inf", "-Infinity": "-inf"};

  function format(value) {
    if (value === null || value === undefined) return "";
    if (typeof value === "number" && !isFinite(value)) value = String(value);
    if (typeof value !== "number") return NON_FINITE.hasOwnProperty(value) ? NON_FINITE[value] : String(value);
    if (Number.isInteger(value)) return String(value);
    var abs = Math.abs(value);
    return abs !== 0 && (abs < 1e-4 || abs >= 1e6) ? value.toExponential(4) : String(+value.toPrecision(6));
  }

  // x ascending with one y per x (the last one logged), as uPlot expects.
  function sortedPairs(xs, ys) {
    var sorted = true;
    for (var i = 1; i < xs.length; i++) if (xs[i] <= xs[i - 1]) { sorted = false; break; }
    if (sorted) return [xs, ys];
    var order = xs.map(function (_, i) { return i; });
    order.sort(function (a, b) { return xs[a] - xs[b] || a - b; });
    var outX = [], outY = [];
    order.forEach(function (i) {
      if (outX.length && outX[outX.length - 1] === xs[i]) outY[outY.length - 1] = ys[i];
      else { outX.push(xs[i]); outY.push(ys[i]); }
    });
    return [outX, outY];
  }

  // options: {log: y on a log scale, height: pixels, dashed: dash every other run so identical
  // curves stay visible, colors / dashes: one per label instead (a run's colour, a metric's dash)}
  function chart(container, name, labels, data, axis, xLabel, options) {
    options = options || {};
    var card = document.createElement("div");
    card.className = "metric-chart";
    card.dataset.name = name;
    var title = document.createElement("h4");
    var label = document.createElement("span");
    label.textContent = name;
    var last = document.createElement("span");
    last.className = "last";
    title.appendChild(label);
    title.appendChild(last);
    card.appendChild(title);
    container.appendChild(card);
    var series = [{label: xLabel || axis}].concat(labels.map(function (text, i) {
      var color = options.colors ? options.colors[i] : COLORS[i % COLORS.length];
      var line = {label: text, stroke: color, width: 1.5, spanGaps: true, value: function (u, v) { return format(v); }};
      if (options.dashes) { if (options.dashes[i]) line.dash = options.dashes[i]; }
      else if (options.dashed && i % 2 === 1) line.dash = [6, 4];
      return line;
    }));
    var height = options.height || 190;
    var plot = new uPlot({
      width: Math.max(260, card.clientWidth - 12),
      height: height,
      scales: {x: {time: axis === "time"}, y: options.log ? {distr: 3} : {}},
      series: series,
      axes: [{}, {size: 64, values: function (u, ticks) { return ticks.map(format); }}],
      legend: {live: true},
    }, data, card);
    return {card: card, plot: plot, last: last, height: height};
  }

  function resizeAll(charts) {
    charts.forEach(function (c) { c.plot.setSize({width: Math.max(260, c.card.clientWidth - 12), height: c.height || 190}); });
  }

  return {chart: chart, format: format, sortedPairs: sortedPairs, resizeAll: resizeAll, COLORS: COLORS};
})();
