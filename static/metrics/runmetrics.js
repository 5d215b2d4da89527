// Live metric charts of a run page: reads what is stored (downsampled), then appends each batch
// the WebSocket brings; a point already read (by its position in the series) is not added twice.
(function () {
  "use strict";
  var section = document.getElementById("metrics");
  if (!section || !window.uPlot) return;
  var Charts = window.TrainHubCharts;
  var api = section.dataset.api;
  var container = document.getElementById("metrics-charts");
  var axisSelect = document.getElementById("metrics-axis");
  var rankSelect = document.getElementById("metrics-rank");
  var finals = document.querySelector("#metrics-finals tbody");
  var MAX_CLIENT_POINTS = 20000;
  var finalStates = {Completed: 1, Failed: 1, Canceled: 1};
  var state = {axis: "step", rank: 0, series: {}, loaded: false, pending: [], dirty: {}, timer: null, generation: 0};

  function get(path) {
    return fetch(api + path, {credentials: "same-origin", headers: {Accept: "application/json"}})
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); });
  }

  function clearCharts() {
    Object.keys(state.series).forEach(function (name) {
      var chart = state.series[name].chart;
      if (chart) { chart.plot.destroy(); chart.card.remove(); }
    });
    state.series = {};
  }

  function load() {
    var generation = ++state.generation;
    state.loaded = false;
    return Promise.all([
      get("/chart?rank=" + state.rank + "&x=" + state.axis),
      get("/summary"),
    ]).then(function (answers) {
      if (generation !== state.generation) return;
      clearCharts();
      answers[0].series.forEach(function (s) {
        state.series[s.name] = {xs: s.x, values: s.values, count: s.count, last: s.last_value, skipped: s.skipped || 0};
        draw(s.name);
      });
      renderFinals(answers[1].series.filter(function (s) { return s.rank === state.rank && s.kind === "scalar"; }));
      renderTags(answers[1].tags);
      answers[1].ranks.forEach(ensureRank);
      state.loaded = true;
      var pending = state.pending;
      state.pending = [];
      pending.forEach(apply);
    }).catch(function () { setTimeout(load, 2000); });
  }

  function draw(name) {
    var st = state.series[name];
    var data = Charts.sortedPairs(st.xs, st.values);
    if (!st.chart) {
      st.chart = Charts.chart(container, name, [name], data, state.axis);
      sortCharts();
    } else {
      st.chart.plot.setData(data);
    }
    st.chart.last.textContent = (st.values.length || st.skipped ? "last " + Charts.format(st.last) + " · " + st.count + " pts" : "")
      + (st.skipped ? " · " + st.skipped + " NaN/inf not drawn" : "");
  }

  function sortCharts() {
    Array.prototype.slice.call(container.children)
      .sort(function (a, b) { return a.dataset.name < b.dataset.name ? -1 : 1; })
      .forEach(function (card) { container.appendChild(card); });
  }

  function schedule(name) {
    state.dirty[name] = true;
    if (state.timer) return;
    state.timer = setTimeout(function () {
      state.timer = null;
      var names = Object.keys(state.dirty);
      state.dirty = {};
      var tooMany = names.some(function (n) { return state.series[n].values.length > MAX_CLIENT_POINTS; });
      if (tooMany) { load(); return; }  // the server downsamples again
      names.forEach(draw);
    }, 150);
  }

  function apply(batch) {
    if (batch.tags) renderTags(batch.tags);
    ensureRank(batch.rank);
    if (batch.rank !== state.rank) return;
    batch.series.forEach(function (s) {
      var st = state.series[s.name];
      if (!st) st = state.series[s.name] = {xs: [], values: [], count: 0, last: null, skipped: 0};
      if (s.first > st.count) { load(); return; }  // a batch went missing: read again
      for (var i = 0; i < s.values.length; i++) {
        var position = s.index ? s.index[i] : s.first + i;
        if (position < st.count) continue;
        if (typeof s.values[i] !== "number") { st.skipped++; continue; }  // NaN or ±inf: not drawn
        st.xs.push(state.axis === "step" ? s.steps[i] : s.times[i]);
        st.values.push(s.values[i]);
      }
      if (s.count > st.count) {
        st.count = s.count;
        st.last = s.values[s.values.length - 1];
        updateFinal(s);
      }
      schedule(s.name);
    });
  }

  function cell(text, className) {
    var td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function finalRow(s) {
    var tr = document.createElement("tr");
    tr.dataset.name = s.name;
    tr.appendChild(cell(s.name));
    tr.appendChild(cell(Charts.format(s.last_value), "value"));
    tr.appendChild(cell(s.last_step === null ? "" : String(s.last_step)));
    tr.appendChild(cell(String(s.count)));
    var range = cell(Charts.format(s.min_value) + " / " + Charts.format(s.max_value), "range");
    // The stored summary: live points only ever widen it (a page opened mid-run knows the
    // points before it opened only through these).
    if (s.min_value !== null && s.min_value !== undefined) range.dataset.min = s.min_value;
    if (s.max_value !== null && s.max_value !== undefined) range.dataset.max = s.max_value;
    tr.appendChild(range);
    var link = document.createElement("a");
    link.href = section.dataset.csv + "?name=" + encodeURIComponent(s.name) + "&rank=" + state.rank;
    link.textContent = "CSV";
    var td = document.createElement("td");
    td.appendChild(link);
    tr.appendChild(td);
    return tr;
  }

  function renderFinals(series) {
    finals.textContent = "";
    series.forEach(function (s) { finals.appendChild(finalRow(s)); });
  }

  function updateFinal(s) {
    var empty = finals.querySelector("tr.empty");
    if (empty) empty.remove();
    var row = finals.querySelector('tr[data-name="' + CSS.escape(s.name) + '"]');
    var last = s.values[s.values.length - 1];
    var numbers = s.values.map(Number).filter(function (v) { return !isNaN(v); });  // ±inf counts, NaN not
    var low = numbers.length ? Math.min.apply(null, numbers) : null;
    var high = numbers.length ? Math.max.apply(null, numbers) : null;
    if (row) {
      var old = row.children[4].dataset;
      if (old.min !== undefined) low = low === null ? +old.min : Math.min(low, +old.min);
      if (old.max !== undefined) high = high === null ? +old.max : Math.max(high, +old.max);
    }
    var fresh = finalRow({name: s.name, last_value: last, last_step: s.steps[s.steps.length - 1], count: s.count,
                          min_value: low, max_value: high});
    if (row) finals.replaceChild(fresh, row); else finals.appendChild(fresh);
  }

  function renderTags(tags) {
    var list = document.getElementById("metrics-tags");
    list.textContent = "";
    var keys = Object.keys(tags).sort();
    if (!keys.length) { var none = document.createElement("dd"); none.className = "muted"; none.textContent = "No tags."; list.appendChild(none); }
    keys.forEach(function (key) {
      var dt = document.createElement("dt"); dt.textContent = key;
      var dd = document.createElement("dd"); dd.textContent = tags[key] || "—";
      list.appendChild(dt); list.appendChild(dd);
    });
  }

  function ensureRank(rank) {
    if (rankSelect.querySelector('option[value="' + rank + '"]')) return;
    var option = document.createElement("option");
    option.value = rank;
    option.textContent = rank;
    rankSelect.appendChild(option);
  }

  axisSelect.addEventListener("change", function () { state.axis = axisSelect.value; load(); });
  rankSelect.addEventListener("change", function () { state.rank = +rankSelect.value; load(); });
  window.addEventListener("resize", function () {
    Charts.resizeAll(Object.keys(state.series).map(function (n) { return state.series[n].chart; }).filter(Boolean));
  });

  var delay = 500;
  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + location.host + section.dataset.ws);
    socket.onmessage = function (event) {
      var message = JSON.parse(event.data);
      if (message.type === "subscribed") { delay = 500; load(); }
      else if (message.type === "batch") { if (state.loaded) apply(message); else state.pending.push(message); }
    };
    socket.onclose = function (event) {
      var status = document.getElementById("run-status");
      if (status && finalStates[status.textContent]) return;
      if (event.code === 4401 || event.code === 4403 || event.code === 4404) {  // no access: say why, stop
        var notice = document.createElement("p");
        notice.className = "error";
        notice.setAttribute("role", "alert");
        notice.textContent = event.code === 4401
          ? "You are signed out (here or by a password change): sign in again to follow these metrics."
          : "You no longer have access to this run: the charts stopped following.";
        section.insertBefore(notice, section.firstChild);
        return;
      }
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 10000);
    };
  }
  connect();
})();
