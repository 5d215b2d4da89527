"""The sweep page and its data, the links to it, and the CLI's `sweep show|cancel`."""

from __future__ import annotations

import json
import re

import pytest

from runs.models import RunStatus
from tests.sweeps.test_sweep_services import GRID, children, log, submit

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_page_ranks_children_by_the_metric_with_parameters_as_columns(workspace, owner, client_for):
    sweep = submit(workspace, owner, sampling=GRID, concurrent=3)
    first, second, third = children(sweep)
    log(workspace, first, [0.5, 0.7])
    log(workspace, third, [0.6, 0.9])
    page = client_for(owner).get(f"/w/birds/sweeps/{sweep.parent.run_id}/").content.decode()
    table = page[page.index('id="sweep-children"') :]
    header = re.findall(r"<th>([^<]+)</th>", table[: table.index("</thead>")])
    assert header == ["Child", "Run", "Status", "lr", "momentum", "acc"]
    order = re.findall(r'<tr data-run="([^"]+)"', table)
    assert order == [third.run_id, first.run_id, second.run_id]
    assert f'<tr data-run="{third.run_id}" class="best">' in table
    assert "Cancel the sweep" in page

    data = client_for(owner).get(f"/w/birds/sweeps/{sweep.parent.run_id}/data.json").json()
    assert data["best_run_id"] == third.run_id and data["names"] == ["lr", "momentum"]
    assert [child["values"] for child in data["children"]] == [[0.6, 0.9], [0.5, 0.7], []]
    assert data["children"][0]["parameters"] == {"lr": 0.01, "momentum": 0.9}


def test_the_experiment_and_run_pages_link_to_the_sweep(workspace, owner, client_for):
    sweep = submit(workspace, owner, sampling=GRID)
    client = client_for(owner)
    url = f"/w/birds/sweeps/{sweep.parent.run_id}/"
    experiment = client.get("/w/birds/experiments/tune/").content.decode()
    assert f'href="{url}" class="param sweep-link">sweep</a>' in experiment
    assert experiment.count(f'<a href="{url}" class="muted">of sweep #{sweep.parent.number}</a>') == 2
    assert (
        f'href="{url}">This run is a hyperparameter sweep'
        in client.get(f"/w/birds/runs/{sweep.parent.run_id}/").content.decode()
    )
    child_page = client.get(f"/w/birds/runs/{children(sweep)[0].run_id}/").content.decode()
    assert f'A child of sweep <a href="{url}">#{sweep.parent.number}</a>' in child_page


def test_a_reader_sees_the_sweep_but_cannot_cancel_it(workspace, owner, reader, client_for):
    sweep = submit(workspace, owner, sampling=GRID)
    client = client_for(reader)
    assert "Cancel the sweep" not in client.get(f"/w/birds/sweeps/{sweep.parent.run_id}/").content.decode()
    assert client.post(f"/w/birds/sweeps/{sweep.parent.run_id}/cancel/").status_code == 403
    assert all(run.status == RunStatus.QUEUED for run in children(sweep))


def test_the_cli_shows_and_cancels_a_sweep(workspace, owner, live_url, owner_token, tmp_path, capsys):
    from trainhub.sdk.cli import main

    sweep = submit(workspace, owner, sampling=GRID)
    first, second = children(sweep)
    log(workspace, second, [0.8])
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"server_url": live_url, "workspace_name": "birds", "token": owner_token}))
    assert main(["--config", str(config), "sweep", "show", sweep.parent.run_id]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[0] == f"Sweep {sweep.parent.run_id}: Running"
    assert shown[1] == f"Primary metric: acc (maximize); best run: {second.run_id}"
    assert shown[3].split() == ["child", "run", "status", "lr", "momentum", "acc"]
    assert shown[4].split() == ["1", second.run_id, "Queued", "0.1", "0.99", "0.8"]
    assert shown[5].split() == ["0", first.run_id, "Queued", "0.1", "0.9"]
    assert main(["--config", str(config), "sweep", "cancel", sweep.parent.run_id]) == 0
    shown = capsys.readouterr().out
    assert f"Sweep {sweep.parent.run_id}: Canceled (Canceled by the user.)" in shown
    assert "child 0: Canceled with its sweep." in shown
    assert main(["--config", str(config), "sweep", "show", first.run_id]) == 1
    assert f"No sweep '{first.run_id}' in this workspace." in capsys.readouterr().err
