"""The run page says in words how a run's processes were laid out."""

from __future__ import annotations

from runs.models import Run, RunProcess
from runs.selectors import launch_summary
from tests.runs.builders import make_run


def test_a_single_process_run():
    assert launch_summary(Run(node_count=1, process_count_per_node=1, distributed={}), 0) == ("1 node × 1 process", "")


def test_a_per_process_launch():
    run = Run(
        node_count=2,
        process_count_per_node=2,
        distributed={"type": "pytorch", "communication_backend": "Gloo", "process_count": 4, "node_count": 2},
    )
    assert launch_summary(run, 4) == ("2 nodes × 2 processes", "PyTorch DDP (Gloo), per process")


def test_a_per_node_launch_counts_the_ranks_its_launchers_started():
    run = Run(
        node_count=2,
        process_count_per_node=1,
        command=["torchrun", "--nproc_per_node", "2", "train.py"],
        distributed={"type": "pytorch", "communication_backend": "Nccl", "process_count": None, "node_count": 2},
    )
    layout, launch = launch_summary(run, 4)
    assert layout == "2 nodes × 2 processes"
    assert launch == "PyTorch DDP (Nccl), per node: the command starts each node's processes"
    assert launch_summary(run, 0)[0] == "2 nodes × one launcher"


def test_an_mpi_launch():
    run = Run(node_count=2, process_count_per_node=3, distributed={"type": "mpi", "process_count_per_node": 3})
    assert launch_summary(run, 6) == ("2 nodes × 3 processes", "MPI: mpirun (Open MPI) starts every process")


def test_the_run_page_shows_the_layout_in_words(client_for, reader, workspace):
    run = make_run(
        workspace,
        node_count=2,
        command=["torchrun", "train.py"],
        distributed={"type": "pytorch", "communication_backend": "Gloo", "process_count": None, "node_count": 2},
    )
    for rank in range(4):
        RunProcess.objects.create(run=run, rank=rank, node_rank=rank // 2, local_rank=rank % 2, node_name="n")
    html = client_for(reader).get(f"/w/birds/runs/{run.run_id}/").content.decode()
    assert "2 nodes × 2 processes</dd>" in html
    assert "PyTorch DDP (Gloo), per node" in html
    assert "{&#x27;type&#x27;" not in html
