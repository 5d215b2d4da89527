// The sweep page, live: the children table (best first), a parallel-coordinates chart of
// parameters -> primary metric, and every child's primary metric over its intervals (uPlot).
(function () {
  "use strict";
  var table = document.getElementById("sweep-children");
  if (!table) return;
  var url = table.dataset.url;
  var FINAL = ["Completed", "Failed", "Canceled"];
  var SVG = "http://www.w3.org/2000/svg";
  var curves = null;

  function format(value) {
    if (value === null || value === undefined) return "";
    if (typeof value !== "number") return String(value);
    return Number.isInteger(value) ? String(value) : String(+value.toPrecision(6));
  }

  function cell(row, text, className) {
    var td = document.createElement("td");
    if (className) td.className = className;
    if (text instanceof Node) td.appendChild(text); else td.textContent = text;
    row.appendChild(td);
    return td;
  }

  function drawTable(data) {
    var body = table.tBodies[0];
    var fresh = document.createElement("tbody");
    data.children.forEach(function (child) {
      var row = document.createElement("tr");
      row.dataset.run = child.run_id;
      if (child.run_id === data.best_run_id) row.className = "best";
      cell(row, String(child.index));
      var link = document.createElement("a");
      link.href = child.url;
      link.textContent = "#" + child.number;
      cell(row, link);
      var status = document.createElement("span");
      var statusCell = cell(row, "");
      status.className = "status " + child.status;
      status.textContent = child.status;
      statusCell.appendChild(status);
      if ((child.status === "Canceled" || child.status === "Failed") && child.status_reason) {
        var why = document.createElement("span");
        why.className = "muted";
        why.textContent = " " + child.status_reason;
        statusCell.appendChild(why);
      }
      data.names.forEach(function (name) { cell(row, format(child.parameters[name]), "value"); });
      cell(row, format(child.best), "value");
      fresh.appendChild(row);
    });
    if (data.children.length) table.replaceChild(fresh, body);
    var status = document.getElementById("sweep-status");
    status.className = "status " + data.status;
    status.textContent = data.status;
    document.getElementById("sweep-reason").textContent = data.end_reason;
    var best = data.children.filter(function (child) { return child.run_id === data.best_run_id; })[0];
    if (best) {
      var shown = document.getElementById("sweep-best");
      var link = document.createElement("a");
      link.href = best.url;
      link.textContent = "#" + best.number;
      shown.replaceChildren(link, document.createTextNode(" " + data.metric + " = " + format(best.best)));
    }
  }

  function svg(name, attributes, parent) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attributes).forEach(function (key) { node.setAttribute(key, attributes[key]); });
    if (parent) parent.appendChild(node);
    return node;
  }

  // One vertical axis per parameter and one for the metric; a line per child through its values.
  function drawParallel(data) {
    var box = document.getElementById("sweep-parallel");
    var axes = data.names.concat([data.metric]);
    var width = Math.max(360, box.clientWidth - 8), height = 260, top = 24, bottom = 20, left = 50, right = 50;
    var step = (width - left - right) / Math.max(1, axes.length - 1);
    var scales = axes.map(function (name, i) {
      var values = data.children.map(function (child) {
        return i < data.names.length ? child.parameters[name] : child.best;
      }).filter(function (v) { return v !== null && v !== undefined; });
      var numeric = values.every(function (v) { return typeof v === "number"; });
      if (!numeric) {
        var labels = values.map(String).filter(function (v, k, all) { return all.indexOf(v) === k; });
        return {labels: labels, at: function (v) {
          return labels.length < 2 ? 0.5 : labels.indexOf(String(v)) / (labels.length - 1);
        }};
      }
      var low = Math.min.apply(null, values), high = Math.max.apply(null, values);
      return {low: low, high: high, at: function (v) { return high === low ? 0.5 : (v - low) / (high - low); }};
    });
    var chart = svg("svg", {width: width, height: height, role: "img", "aria-label": "parameters to " + data.metric});
    axes.forEach(function (name, i) {
      var x = left + i * step;
      svg("line", {x1: x, x2: x, y1: top, y2: height - bottom, "class": "axis"}, chart);
      svg("text", {x: x, y: top - 8, "text-anchor": "middle"}, chart).textContent = name;
      var scale = scales[i];
      if (scale.labels) {
        scale.labels.forEach(function (label) {
          svg("text", {x: x + 4, y: height - bottom - scale.at(label) * (height - top - bottom) + 4}, chart).textContent = label;
        });
      } else if (scale.low !== undefined && isFinite(scale.low)) {
        svg("text", {x: x + 4, y: height - bottom + 14}, chart).textContent = format(scale.low);
        svg("text", {x: x + 4, y: top + 12}, chart).textContent = format(scale.high);
      }
    });
    data.children.slice().reverse().forEach(function (child) {
      var points = [];
      axes.forEach(function (name, i) {
        var value = i < data.names.length ? child.parameters[name] : child.best;
        if (value === null || value === undefined) return;
        points.push((left + i * step) + "," + (height - bottom - scales[i].at(value) * (height - top - bottom)));
      });
      var kind = "line" + (child.run_id === data.best_run_id ? " best" : "") + (child.status === "Canceled" ? " stopped" : "");
      var line = svg("polyline", {points: points.join(" "), "class": kind, "data-run": child.run_id}, chart);
      svg("title", {}, line).textContent = "child " + child.index + ": " + format(child.best);
    });
    box.replaceChildren(chart);
  }

  // x = interval (1, 2, …: the n-th value logged), one series per child, the best one drawn thick.
  function drawCurves(data) {
    var box = document.getElementById("sweep-curves");
    if (typeof uPlot === "undefined") return;
    var longest = data.children.reduce(function (most, child) { return Math.max(most, child.values.length); }, 0);
    var xs = [];
    for (var i = 1; i <= longest; i++) xs.push(i);
    var columns = [xs].concat(data.children.map(function (child) {
      return xs.map(function (_, k) { return k < child.values.length ? child.values[k] : null; });
    }));
    var series = [{label: "interval"}].concat(data.children.map(function (child) {
      var best = child.run_id === data.best_run_id;
      return {label: "child " + child.index, stroke: best ? "#d3542f" : "#9aa9c7", width: best ? 3 : 1.25,
              dash: child.status === "Canceled" ? [5, 4] : undefined, spanGaps: false,
              value: function (u, v) { return format(v); }};
    }));
    var shape = series.map(function (s) { return s.label + s.stroke + s.width; }).join("|");
    if (curves && curves.shape === shape) { curves.plot.setData(columns); return; }
    if (curves) curves.plot.destroy();
    box.replaceChildren();
    var plot = new uPlot({width: Math.max(360, box.clientWidth - 12), height: 260, series: series,
                          scales: {x: {time: false}},
                          axes: [{}, {size: 64, values: function (u, ticks) { return ticks.map(format); }}],
                          legend: {live: true}}, columns, box);
    curves = {plot: plot, shape: shape};
  }

  function refresh() {
    fetch(url, {credentials: "same-origin"}).then(function (response) {
      if (!response.ok) throw new Error(response.status);
      return response.json();
    }).then(function (data) {
      drawTable(data);
      drawParallel(data);
      drawCurves(data);
      var done = FINAL.indexOf(data.status) >= 0 && data.children.every(function (c) { return FINAL.indexOf(c.status) >= 0; });
      if (!done) setTimeout(refresh, 2000);
    }).catch(function () { setTimeout(refresh, 5000); });
  }

  refresh();
})();
