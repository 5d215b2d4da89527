"""Data handed to real runs on real nodes: a datastore path mounted and downloaded, the datastore
itself (also as the estimator's script_params={'--data_dir': ds}), a registered dataset version; read-only on the node,
copied once per node, the same on every node of a distributed run, and listed on the run's page."""

from __future__ import annotations

import pytest

from runs.models import LogChunk
from tests.datastores.conftest import DATA, PROJECTS, listing
from trainhub.sdk import Dataset, Environment, Experiment, ScriptRunConfig
from trainhub.sdk.compute import ComputeTarget
from trainhub.sdk.runconfig import PyTorchConfiguration
from trainhub.sdk.train.dnn import PyTorch

pytestmark = pytest.mark.slow


def reader_config(ws, arguments, **extra):
    return ScriptRunConfig(
        source_directory=str(PROJECTS / "reader"),
        script="read_data.py",
        arguments=arguments,
        compute_target=ComputeTarget(workspace=ws, name="cpu-cluster"),
        environment=Environment.get(workspace=ws, name="TrainHub-PyTorch-2.13-CPU"),
        **extra,
    )


def log_lines(run, text: str) -> list[str]:
    chunks = LogChunk.objects.filter(run__run_id=run.id).order_by("first_seq")
    return [line for chunk in chunks for line in chunk.text.split("\n") if text in line]


def read_line(run, label: str, rank: int = 0) -> str:
    lines = log_lines(run, f"rank {rank} {label} files=")
    assert len(lines) == 1, lines
    return lines[0]


def test_a_run_reads_its_inputs_and_a_second_run_copies_nothing(ws, node, data_dir, client_for, owner):
    ds = ws.get_default_datastore()
    ds.upload(src_dir=str(data_dir), target_path="fowl", show_progress=False)
    dataset = Dataset.File.from_files(path=(ds, "fowl/train/*.csv")).register(ws, "fowl", create_new_version=True)
    arguments = [
        "--mounted",
        ds.path("fowl").as_mount(),
        "--downloaded",
        ds.path("fowl/train").as_download(),
        "--root",
        ds,
        "--one-file",
        ds.path("fowl/labels.txt"),
        "--dataset",
        dataset.as_named_input("fowl_train").as_mount(),
        "--dataset-copy",
        Dataset.get_by_name(ws, "fowl", 1).as_named_input("fowl_copy").as_download(),
    ]
    experiment = Experiment(ws, "data")
    first = experiment.submit(reader_config(ws, arguments))
    assert first.wait_for_completion()["status"] == "Completed"

    train = {name[len("train/") :]: content for name, content in DATA.items() if name.startswith("train/")}
    expected = {
        "--mounted": listing(DATA),
        "--downloaded": listing(train),
        "--root": listing({f"fowl/{name}": content for name, content in DATA.items()}),
        "--one-file": listing({"labels.txt": DATA["labels.txt"]}),
        "--dataset": listing(train),
        "--dataset-copy": listing(train),
    }
    for label, files in expected.items():
        line = read_line(first, label)
        assert f"files={files} writable=False" in line
    assert "_data-cache" in read_line(first, "--mounted")
    assert f"/{first.id}/inputs/fowl_copy" in read_line(first, "--dataset-copy")
    staged = log_lines(first, "bytes copied to this node")
    assert len(staged) == 6 and sum(" 0 bytes copied" not in line for line in staged) >= 1

    second = experiment.submit(reader_config(ws, arguments))
    assert second.wait_for_completion()["status"] == "Completed"
    staged = log_lines(second, "bytes copied to this node")
    assert len(staged) == 6 and all(" 0 bytes copied" in line for line in staged), staged
    assert read_line(second, "--mounted").split(" path=")[1] == read_line(first, "--mounted").split(" path=")[1]

    estimator = PyTorch(
        source_directory=str(PROJECTS / "reader"),
        compute_target="cpu-cluster",
        entry_script="read_data.py",
        script_params={"--data_dir": ds},
    )
    third = experiment.submit(estimator)
    assert third.wait_for_completion()["status"] == "Completed"
    assert f"files={expected['--root']} writable=False" in read_line(third, "--data_dir")
    assert all(" 0 bytes copied" in line for line in log_lines(third, "bytes copied to this node"))

    client = client_for(owner)
    run_page = client.get(f"/w/birds/runs/{second.id}/").content.decode()
    assert "${TRAINHUB_INPUT_fowl_train}" in run_page
    assert '/w/birds/data/sets/fowl/1/"' in run_page and "/w/birds/data/stores/workspaceblobstore/" in run_page
    version_page = client.get("/w/birds/data/sets/fowl/1/").content.decode()
    assert first.id in version_page and second.id in version_page


def test_every_rank_of_a_two_node_run_reads_the_same_dataset(ws, two_nodes, data_dir):
    ds = ws.get_default_datastore()
    ds.upload(src_dir=str(data_dir), target_path="fowl", show_progress=False)
    dataset = Dataset.File.from_files(path=(ds, "fowl/**")).register(ws, "fowl")
    config = reader_config(
        ws,
        ["--data_dir", dataset.as_named_input("fowl").as_mount()],
        distributed_job_config=PyTorchConfiguration(process_count=4, node_count=2),
    )
    run = Experiment(ws, "data").submit(config)
    assert run.wait_for_completion()["status"] == "Completed"
    for rank in range(4):
        assert f"files={listing(DATA)} writable=False" in read_line(run, "--data_dir", rank)
    staged = log_lines(run, "Input fowl (mount): 3 files")
    assert len(staged) == 2  # once per node, shared by its two ranks
