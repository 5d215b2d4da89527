// Live log of a run page: replays from the last line shown, then follows; reconnects without loss.
(function () {
  "use strict";
  var pre = document.getElementById("log");
  if (!pre) return;
  var MAX_LINES = 5000;
  var seen = {};          // first_seq of every chunk already shown
  var spans = {};         // first_seq -> line count, for chunks above the contiguous prefix
  var contiguous = 0;     // every line up to this sequence number is shown
  var streams = {};
  var finalStates = {Completed: 1, Failed: 1, Canceled: 1};
  var status = document.getElementById("run-status");
  var reason = document.getElementById("run-reason");
  var initialStatus = status ? status.textContent : "";
  var tail = JSON.parse(document.getElementById("log-tail").textContent);

  function advance() {
    while (spans[contiguous + 1] !== undefined) {
      var n = spans[contiguous + 1];
      delete spans[contiguous + 1];
      contiguous += n;
    }
  }
  function remember(chunk) {
    if (seen[chunk.first_seq]) return false;
    seen[chunk.first_seq] = true;
    streams[chunk.stream] = true;
    spans[chunk.first_seq] = chunk.lines.length;
    return true;
  }
  tail.forEach(function (chunk) {
    remember(chunk);
    // The page shows the tail: everything before it is in the full download, not here.
    if (contiguous === 0) contiguous = chunk.first_seq - 1;
  });
  advance();

  // One rank's lines or all of them: every chunk is a span tagged with its stream.
  var filter = document.getElementById("log-filter");
  function offer(stream) {
    if (!filter) return;
    for (var i = 0; i < filter.options.length; i++) if (filter.options[i].value === stream) return;
    filter.appendChild(new Option(stream, stream));
  }
  function shown(span) {
    span.hidden = Boolean(filter && filter.value && span.dataset.stream !== filter.value);
  }
  if (filter) {
    filter.addEventListener("change", function () {
      Array.prototype.forEach.call(pre.children, shown);
      pre.scrollTop = pre.scrollHeight;
    });
  }

  function append(chunk) {
    if (!remember(chunk)) return;
    advance();
    offer(chunk.stream);
    var prefix = Object.keys(streams).length > 2 ? "[" + chunk.stream + "] " : "";
    var atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 20;
    var span = document.createElement("span");
    span.dataset.stream = chunk.stream;
    span.textContent = chunk.lines.map(function (l) { return prefix + l + "\n"; }).join("");
    shown(span);
    pre.appendChild(span);
    var extra = pre.childNodes.length - MAX_LINES / 50;
    while (extra-- > 0) pre.removeChild(pre.firstChild);
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  }
  function setStatus(message) {
    if (!status) return;
    status.textContent = message.status;
    status.className = "status " + message.status;
    if (reason && message.reason !== undefined) reason.textContent = message.reason || "";
    if (finalStates[message.status]) {
      var cancel = document.getElementById("cancel-form");
      if (cancel) cancel.remove();
      // Files, the failure box and the ranks' exit codes are rendered by the server.
      if (message.status !== initialStatus) setTimeout(function () { location.reload(); }, 1500);
    }
  }
  var delay = 500;
  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + location.host + pre.dataset.ws + "?after=" + contiguous);
    socket.onmessage = function (event) {
      var message = JSON.parse(event.data);
      if (message.type === "lines") append(message);
      else if (message.type === "status") setStatus(message);
      delay = 500;
    };
    socket.onclose = function (event) {
      if (status && finalStates[status.textContent]) return;
      if (event.code === 4401 || event.code === 4403 || event.code === 4404) {  // no access: say why, stop
        var notice = document.createElement("p");
        notice.className = "error";
        notice.setAttribute("role", "alert");
        notice.textContent = event.code === 4401
          ? "You are signed out (here or by a password change): sign in again to follow this log."
          : "You no longer have access to this run: the log stopped following.";
        pre.parentNode.insertBefore(notice, pre);
        return;
      }
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 10000);
    };
  }
  connect();
})();
