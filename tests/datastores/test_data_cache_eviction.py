"""A node's data cache stays within TRAINHUB_DATA_CACHE_MAX_BYTES: staging a run evicts the least
recently used inputs that no unfinished run needs, and a later run stages an evicted input again."""

from __future__ import annotations

import os
import time

import pytest

from datastores import staging
from datastores.models import RunInput
from runs.models import Run, RunStatus
from tests.conftest import api_client, issue_token
from tests.datastores.builders import submit, upload
from trainhub.sdk._data_reference import marker

pytestmark = pytest.mark.django_db

CONTENT = {folder: folder.encode() * 1000 for folder in ("a", "b", "c", "d")}  # 1,000 bytes each


def run_reading(client, workspace, folder: str) -> Run:
    answer = submit(
        client,
        workspace,
        [
            "--data_dir",
            marker(
                {
                    "kind": "datastore",
                    "datastore": "workspaceblobstore",
                    "path": folder,
                    "mode": "mount",
                    "name": "data",
                }
            ),
        ],
    )
    assert answer.status_code == 201, answer.content
    return Run.objects.get(run_id=answer.json()["run_id"])


def age(path, seconds: float) -> None:
    """Make everything under `path` look last used `seconds` ago."""
    then = time.time() - seconds
    for folder, _, names in os.walk(path):
        for name in names:
            os.utime(os.path.join(folder, name), (then, then))
    os.utime(path, (then, then))


def test_least_recently_used_inputs_no_unfinished_run_needs_are_evicted(
    workspace, owner, curated_env, settings, tmp_path
):
    settings.TRAINHUB_DATA_CACHE_DIR = str(tmp_path / "cache")
    settings.TRAINHUB_DATA_CACHE_MAX_BYTES = 0  # no limit while the first three are staged
    client = api_client(issue_token(workspace, owner))
    upload(client, "birds", {f"{folder}/data.bin": content for folder, content in CONTENT.items()})
    runs = {folder: run_reading(client, workspace, folder) for folder in CONTENT}
    said: list[str] = []
    trees = {}
    for folder in "abc":
        staged = staging.stage_run_inputs(runs[folder], "node-1", tmp_path / folder, said.append)
        trees[folder] = (
            staging.cache_root("node-1")
            / "trees"
            / staging._tree_key(workspace.pk, RunInput.objects.get(run=runs[folder]).files)
        )
        assert staged["TRAINHUB_INPUT_data"] == str(trees[folder])
    # a: oldest, but its run has not finished; b: older than c, its run finished; c: finished.
    for folder, seconds in (("a", 4000), ("b", 3000), ("c", 2000)):
        age(trees[folder], seconds)
    age(staging.cache_root("node-1") / "blobs", 5000)
    Run.objects.filter(pk__in=[runs["b"].pk, runs["c"].pk]).update(status=RunStatus.COMPLETED)

    settings.TRAINHUB_DATA_CACHE_MAX_BYTES = 3500  # d's 1,000 bytes make 4,000: one input must go
    staging.stage_run_inputs(runs["d"], "node-1", tmp_path / "d", said.append)

    assert [folder for folder in "abc" if trees[folder].is_dir()] == ["a", "c"]
    assert said[-1] == "Data cache: freed 1000\xa0bytes of least recently used inputs on this node."
    blobs = sorted(path.read_bytes()[:1] for path in (staging.cache_root("node-1") / "blobs").glob("??/*"))
    assert blobs == [b"a", b"c", b"d"]
    assert (trees["a"] / "data.bin").read_bytes() == CONTENT["a"]

    # A later run of b stages it again, which pushes out c, now the least recently used unneeded input.
    again = run_reading(client, workspace, "b")
    said.clear()
    staging.stage_run_inputs(again, "node-1", tmp_path / "b2", said.append)
    assert (trees["b"] / "data.bin").read_bytes() == CONTENT["b"]
    assert "; 1000 bytes copied to this node" in said[0]
    assert [folder for folder in "abc" if trees[folder].is_dir()] == ["a", "b"]

    # Nothing left that may go: the cache stays past its limit and says so.
    settings.TRAINHUB_DATA_CACHE_MAX_BYTES = 1000
    said.clear()
    staging.stage_run_inputs(runs["d"], "node-1", tmp_path / "d2", said.append)
    assert said[-1] == (
        "Data cache: 2.9\xa0KB on this node is past its 1000\xa0bytes limit; "
        "the rest is needed by unfinished or recent runs."
    )
