// MLflow's client prints links to its own UI: /mlflow/<workspace>/#/experiments/<id>/runs/<run id>.
// The part after '#' never reaches the server, so this page reads it and opens TrainHub's run page.
(function () {
  var found = /^#\/experiments\/\d+\/runs\/([\w-]+)/.exec(window.location.hash);
  var page = document.getElementById("mlflow-links");
  if (found && page) {
    window.location.replace(page.dataset.runs + encodeURIComponent(found[1]) + "/");
  }
})();
