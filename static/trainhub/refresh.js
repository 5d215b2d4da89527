// Keeps a table with data-refresh-seconds current without a reload: every that many seconds its
// body is replaced by the same table's body in a fresh copy of the page (the cluster page's nodes).
(function () {
  "use strict";
  var tables = document.querySelectorAll("table[data-refresh-seconds][id]");
  tables.forEach(function (table) {
    var seconds = Math.max(1, parseInt(table.dataset.refreshSeconds, 10) || 5);
    function refresh() {
      if (document.hidden) return;
      fetch(window.location.href, {credentials: "same-origin", headers: {"Accept": "text/html"}})
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) {
          if (!html) return;
          var fresh = new DOMParser().parseFromString(html, "text/html").getElementById(table.id);
          if (fresh && fresh.tBodies[0] && table.tBodies[0]) {
            table.replaceChild(document.importNode(fresh.tBodies[0], true), table.tBodies[0]);
          }
        })
        .catch(function () {});
    }
    setInterval(refresh, seconds * 1000);
  });
})();
