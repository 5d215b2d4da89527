// The compare view: every selected run's curve of a metric on one chart, one chart per metric
// (or several chosen metrics together on one), with a log scale, smoothing (an exponential moving
// average, as TensorBoard's), large panels, a step, relative-time or wall-clock x axis, and a
// scatter of one parameter or metric against another across the runs. The axis and the metrics
// drawn together are kept in the URL.
(function () {
  "use strict";
  var section = document.getElementById("compare");
  if (!section || !window.uPlot) return;
  var Charts = window.TrainHubCharts;
  var runs = JSON.parse(document.getElementById("compare-runs").textContent);
  var scatter = JSON.parse(document.getElementById("compare-scatter-data").textContent);
  var container = document.getElementById("compare-charts");
  var axisSelect = document.getElementById("compare-axis");
  var scaleSelect = document.getElementById("compare-scale");
  var sizeSelect = document.getElementById("compare-size");
  var smoothing = document.getElementById("compare-smoothing");
  var smoothingShown = document.getElementById("compare-smoothing-value");
  var together = document.getElementById("compare-together");
  var answers = null;
  var charts = [];
  var params = new URLSearchParams(location.search);

  if (["step", "time", "wall"].indexOf(params.get("x")) >= 0) axisSelect.value = params.get("x");
  var chosen = (params.get("together") || "").split(",");
  if (together) together.querySelectorAll("input").forEach(function (box) { box.checked = chosen.indexOf(box.value) >= 0; });

  function remember() {
    var query = new URLSearchParams(location.search);
    if (axisSelect.value === "step") query.delete("x"); else query.set("x", axisSelect.value);
    var names = togetherNames();
    if (names.length) query.set("together", names.join(",")); else query.delete("together");
    var search = "?" + query.toString().replace(/%2C/g, ",");
    if (search !== location.search) history.replaceState(null, "", location.pathname + search);
  }

  function togetherNames() {
    if (!together) return [];
    return Array.prototype.filter.call(together.querySelectorAll("input"), function (box) { return box.checked; })
      .map(function (box) { return box.value; });
  }

  function fetchRun(run, axis) {
    return fetch(section.dataset.api + encodeURIComponent(run.run_id) + "/metrics/chart?rank=0&x=" + (axis === "step" ? "step" : "time"),
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

  // Each run's [xs, ys] of one metric, as the controls ask ([[], []] where a run has none).
  function tablesOf(name, axis, log, weight) {
    return answers.map(function (answer) {
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
  }

  // Several metrics on one chart: each run keeps its colour, each metric has its own dash.
  var DASHES = [null, [6, 4], [2, 3], [10, 3, 2, 3]];

  function draw(title, key, parts, axis, log, large, joined) {
    var drawn = parts.filter(function (part) { return part.table[0].length; });
    if (!drawn.length) return;
    var data = uPlot.join(drawn.map(function (part) { return part.table; }));
    var labels = drawn.map(function (part) { return part.label; });
    var xLabel = {step: "step", time: "seconds", wall: "time"}[axis];
    var options = {log: log, height: large || joined ? 380 : 190, dashed: true};
    if (joined) {
      options.colors = drawn.map(function (part) { return Charts.COLORS[part.run % Charts.COLORS.length]; });
      options.dashes = drawn.map(function (part) { return DASHES[part.metric % DASHES.length]; });
    }
    var chart = Charts.chart(container, title, labels, data, axis === "wall" ? "time" : "step", xLabel, options);
    chart.card.classList.toggle("together", !!joined);
    chart.card.dataset.name = key;
    chart.card.dataset.runs = labels.length;
    chart.card.dataset.scale = log ? "log" : "linear";
    charts.push(chart);
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
    var joined = togetherNames().filter(function (name) { return names[name]; });
    if (joined.length > 1) {
      var parts = [];
      joined.forEach(function (name, m) {
        tablesOf(name, axis, log, weight).forEach(function (table, i) {
          parts.push({table: table, label: name + " · " + runs[i].label, run: i, metric: m});
        });
      });
      draw(joined.join(" + "), joined.join("+"), parts, axis, log, large, true);
    } else {
      joined = [];
    }
    Object.keys(names).sort().forEach(function (name) {
      if (joined.indexOf(name) >= 0) return;
      draw(name, name, tablesOf(name, axis, log, weight).map(function (table, i) {
        return {table: table, label: runs[i].label};
      }), axis, log, large);
    });
    container.dataset.ready = "1";
  }

  function load() {
    var axis = axisSelect.value;
    remember();
    Promise.all(runs.map(function (run) { return fetchRun(run, axis); })).then(function (found) {
      if (axis !== axisSelect.value) return;
      answers = found.map(function (answer) {
        // On the relative time axis each run starts at 0: its first point.
        var start = Infinity;
        answer.series.forEach(function (s) { if (s.x.length && s.x[0] < start) start = s.x[0]; });
        answer.start = start;
        return answer;
      });
      render();
    });
  }

  // ---------------------------------------------------------------- scatter

  var xSelect = document.getElementById("scatter-x");
  var ySelect = document.getElementById("scatter-y");
  var plot = document.getElementById("compare-scatter");
  var SVG = "http://www.w3.org/2000/svg";

  function numberOf(value) {
    if (value === null || value === undefined || value === "") return null;
    var n = typeof value === "number" ? value : Number(value);
    return isFinite(n) ? n : null;
  }

  function element(name, attributes, parent) {
    var el = document.createElementNS(SVG, name);
    Object.keys(attributes).forEach(function (key) { el.setAttribute(key, attributes[key]); });
    if (parent) parent.appendChild(el);
    return el;
  }

  function drawScatter() {
    plot.textContent = "";
    var xKey = xSelect.value, yKey = ySelect.value;
    var points = [], leftOut = [];
    scatter.runs.forEach(function (run, i) {
      var x = numberOf(run.values[xKey]), y = numberOf(run.values[yKey]);
      if (x === null || y === null) leftOut.push(run.label); else points.push({x: x, y: y, label: run.label, color: Charts.COLORS[i % Charts.COLORS.length]});
    });
    var width = 640, height = 320, left = 64, right = 16, top = 12, bottom = 44;
    var svg = element("svg", {width: width, height: height, viewBox: "0 0 " + width + " " + height, role: "img",
                              "aria-label": ySelect.selectedOptions[0].text + " against " + xSelect.selectedOptions[0].text}, plot);
    function range(values) {
      var low = Math.min.apply(null, values), high = Math.max.apply(null, values);
      if (low === high) { low -= Math.abs(low) * 0.1 || 1; high += Math.abs(high) * 0.1 || 1; }
      var pad = (high - low) * 0.06;
      return [low - pad, high + pad];
    }
    var xs = range(points.length ? points.map(function (p) { return p.x; }) : [0, 1]);
    var ys = range(points.length ? points.map(function (p) { return p.y; }) : [0, 1]);
    var px = function (x) { return left + (x - xs[0]) / (xs[1] - xs[0]) * (width - left - right); };
    var py = function (y) { return height - bottom - (y - ys[0]) / (ys[1] - ys[0]) * (height - top - bottom); };
    element("line", {x1: left, y1: height - bottom, x2: width - right, y2: height - bottom, stroke: "#999"}, svg);
    element("line", {x1: left, y1: top, x2: left, y2: height - bottom, stroke: "#999"}, svg);
    for (var t = 0; t <= 4; t++) {
      var xv = xs[0] + (xs[1] - xs[0]) * t / 4, yv = ys[0] + (ys[1] - ys[0]) * t / 4;
      element("text", {x: px(xv), y: height - bottom + 14, "text-anchor": "middle"}, svg).textContent = Charts.format(+xv.toPrecision(3));
      element("text", {x: left - 6, y: py(yv) + 4, "text-anchor": "end"}, svg).textContent = Charts.format(+yv.toPrecision(3));
    }
    element("text", {x: (left + width - right) / 2, y: height - 6, "text-anchor": "middle"}, svg).textContent = xSelect.selectedOptions[0].text;
    element("text", {x: 12, y: (top + height - bottom) / 2, "text-anchor": "middle",
                     transform: "rotate(-90 12 " + (top + height - bottom) / 2 + ")"}, svg).textContent = ySelect.selectedOptions[0].text;
    points.forEach(function (p) {
      var dot = element("circle", {cx: px(p.x), cy: py(p.y), r: 6, fill: p.color, "fill-opacity": 0.8, stroke: "#fff", "data-run": p.label}, svg);
      element("title", {}, dot).textContent = p.label + ": " + Charts.format(p.x) + ", " + Charts.format(p.y);
    });
    var legend = document.createElement("p");
    legend.className = "scatter-legend";
    points.forEach(function (p) {
      var item = document.createElement("span");
      var dot = document.createElement("span");
      dot.textContent = "● ";
      dot.style.color = p.color;
      item.appendChild(dot);
      item.appendChild(document.createTextNode(p.label));
      legend.appendChild(item);
    });
    plot.appendChild(legend);
    if (leftOut.length) {
      var note = document.createElement("p");
      note.className = "muted left-out";
      note.textContent = "Not drawn (no number for one of the axes): " + leftOut.join(", ");
      plot.appendChild(note);
    }
    plot.dataset.points = points.length;
  }

  function fillSelect(select, chosen) {
    scatter.fields.forEach(function (field) {
      var option = document.createElement("option");
      option.value = field.key;
      option.textContent = field.label;
      select.appendChild(option);
    });
    if (chosen) select.value = chosen;
  }
  if (scatter.fields.length) {
    var numeric = function (key) { return scatter.runs.some(function (run) { return numberOf(run.values[key]) !== null; }); };
    var firstMetric = scatter.fields.filter(function (f) { return f.key.indexOf("metrics.") === 0; })[0];
    var xDefault = scatter.differing.filter(numeric)[0] || (scatter.fields.filter(function (f) { return numeric(f.key); })[0] || {}).key;
    fillSelect(xSelect, xDefault);
    fillSelect(ySelect, firstMetric ? firstMetric.key : xDefault);
    xSelect.addEventListener("change", drawScatter);
    ySelect.addEventListener("change", drawScatter);
    drawScatter();
  }

  load();
  axisSelect.addEventListener("change", load);
  if (together) together.addEventListener("change", function () { remember(); if (answers) render(); });
  scaleSelect.addEventListener("change", function () { if (answers) render(); });
  sizeSelect.addEventListener("change", function () { if (answers) render(); });
  smoothing.addEventListener("input", function () {
    smoothingShown.textContent = smoothing.value;
    if (answers) render();
  });
  window.addEventListener("resize", function () { Charts.resizeAll(charts); });
})();
