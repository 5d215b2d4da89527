"""Comparing runs of several experiments: parameters read from arguments and tags, what differs
between the runs highlighted, and legends that name run and differing parameters."""

from __future__ import annotations

import json

from runs.models import Run
from runs.selectors import differing_parameters, run_parameters
from tests.conftest import api_client
from tests.metrics.builders import post_batch, running_run, series_body


def test_arguments_are_read_as_named_parameters():
    run = Run(
        arguments=["--lr", "0.01", "--momentum=0.9", "--shuffle", "--offset", "-3", "data", "--epochs", 5],
        tags={"optimizer": "sgd"},
    )
    assert run_parameters(run) == {
        "lr": "0.01",
        "momentum": "0.9",
        "shuffle": "true",
        "offset": "-3",
        "epochs": "5",
        "optimizer": "sgd",
    }


def test_what_differs_between_runs():
    assert differing_parameters([{"lr": "0.1", "epochs": "5"}, {"lr": "0.01", "epochs": "5"}, {"lr": "0.1"}]) == [
        "epochs",
        "lr",
    ]


def two_experiments(workspace):
    first, token = running_run(workspace, experiment="baseline", arguments=["--lr", "0.1", "--epochs", "5"])
    post_batch(api_client(token), first, series_body("loss", [1.0, 0.5]))
    second, token = running_run(
        workspace, experiment="tuned", arguments=["--lr", "0.01", "--epochs", "5"], tags={"note": "warm"}
    )
    post_batch(api_client(token), second, series_body("loss", [0.9, 0.2]))
    return first, second


def test_runs_of_two_experiments_are_compared_with_their_parameters(client_for, reader, workspace, other_workspace):
    first, second = two_experiments(workspace)
    foreign, _ = running_run(other_workspace, experiment="baseline")
    html = (
        client_for(reader)
        .get("/w/birds/compare/", {"runs": f"{first.run_id},{second.run_id},{foreign.run_id}"})
        .content.decode()
    )
    assert f"Not runs of this workspace: {foreign.run_id}" in html
    labels = json.loads(html.split('<script id="compare-runs" type="application/json">', 1)[1].split("</script>")[0])
    assert [label["label"] for label in labels] == ["baseline #1 (lr=0.1, note=—)", "tuned #1 (lr=0.01, note=warm)"]
    params = html.split('id="compare-params"', 1)[1].split("</table>", 1)[0]
    assert '<tr data-name="lr" class="differs"><td>lr</td><td>0.1</td><td>0.01</td></tr>' in params
    assert '<tr data-name="epochs"><td>epochs</td><td>5</td><td>5</td></tr>' in params
    assert '<tr data-name="note" class="differs"><td>note</td><td></td><td>warm</td></tr>' in params


def test_a_run_of_another_experiment_is_added_from_the_page(client_for, reader, workspace):
    first, second = two_experiments(workspace)
    html = client_for(reader).get(f"/w/birds/experiments/baseline/compare/?runs={first.run_id}").content.decode()
    form = html.split('id="compare-add"', 1)[1].split("</form>", 1)[0]
    assert '<form method="get" action="/w/birds/compare/" id="compare-add"' in html
    assert f'<input type="hidden" name="runs" value="{first.run_id}">' in form
    assert f'<option value="{second.run_id}">tuned #1' in form
    assert f'<option value="{first.run_id}"' not in form
    added = client_for(reader).get(f"/w/birds/compare/?runs={first.run_id}&runs={second.run_id}").content.decode()
    assert f"?runs={first.run_id},{second.run_id}</code>" in added


def test_outsiders_get_404_from_the_workspace_compare(client_for, outsider, workspace):
    first, second = two_experiments(workspace)
    assert client_for(outsider).get(f"/w/birds/compare/?runs={first.run_id}").status_code == 404
