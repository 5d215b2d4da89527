"""The launch plans users' runs get, host by host: what each host starts, with which variables and
ranks, for every launch mode of the guide. Pure data: no node, server, database or Redis."""

from __future__ import annotations

from pathlib import Path

from runs.launch_plan import (
    MPI_AGENT,
    STORE_PROGRAM,
    Host,
    LaunchMode,
    Rendezvous,
    RunAccess,
    RunLaunch,
    expand_variables,
    mpi_rank_app,
    mpirun_argv,
    mpirun_environment,
    plan_run,
    without_agent_store,
)
from runs.models import Experiment, Run
from runs.output_routing import (
    crash_report,
    last_traceback,
    launcher_failed_exit_code,
    launcher_failed_rank,
    mpi_failed_rank,
    signal_named,
    split_mpi_output,
)
from runs.services import _placement
from trainhub.sdk.runconfig import MpiConfiguration, PyTorchConfiguration
from trainhub.workspaces.models import Workspace

PYTHON = Path("/cache/envs/abc123/bin/python")
SDK = Path("/cache/sdk/1")
RENDEZVOUS = Rendezvous("10.0.0.5", 6105)
ACCESS = RunAccess(server_url="http://server:8000/", token="thr_run_token")
NODE_ENVIRON = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C", "AWS_SECRET_ACCESS_KEY": "node-secret"}


def submitted(script="train.py", command=(), arguments=(), distributed=None) -> RunLaunch:
    """A run as run_submit records it from the SDK's configuration."""
    config = distributed._to_json() if distributed is not None else {}  # what the SDK sends
    node_count, per_node = _placement(config)
    run = Run(
        pk=42,
        run_id="mnist_1_abcd",
        workspace=Workspace(name="birds"),
        experiment=Experiment(pk=7, name="mnist"),
        script="" if command else script,
        command=list(command),
        arguments=list(arguments),
        distributed=config,
        node_count=node_count,
        process_count_per_node=per_node,
    )
    return RunLaunch.of(run)


def host(node_rank: int, **extra) -> Host:
    values = dict(
        node_rank=node_rank,
        name=f"node-{node_rank}",
        workdir=Path(f"/work/node-{node_rank}/mnist_1_abcd"),
        python=PYTHON,
        node_environ=NODE_ENVIRON,
        pass_env=("LANG", "LC_*", "TZ"),
        sdk_folder=SDK,
    )
    values.update(extra)
    return Host(**values)


def plans(run: RunLaunch, **host_extra):
    return plan_run(run, [host(rank, **host_extra) for rank in range(run.node_count)], RENDEZVOUS, ACCESS)


def ranks_of(plan) -> list[tuple[int, int, str]]:
    return [(p.rank, p.local_rank, p.stream) for p in plan.processes]


def test_a_single_process_script_runs_once_with_the_environments_python():
    [plan] = plans(submitted(arguments=["--lr", 0.1]))
    [process] = plan.processes
    assert plan.mode is LaunchMode.PER_PROCESS and plan.leader
    assert process.argv == [str(PYTHON), "train.py", "--lr", "0.1"]
    assert (process.rank, process.local_rank, process.stream) == (0, 0, "std_log_process_0")
    assert process.cwd == Path("/work/node-0/mnist_1_abcd") and not process.launcher
    env = process.env
    assert (env["RANK"], env["LOCAL_RANK"], env["NODE_RANK"], env["WORLD_SIZE"]) == ("0", "0", "0", "1")
    assert env["MASTER_ADDR"] == "10.0.0.5" and env["MASTER_PORT"] == "6105"
    assert env["PATH"] == f"{PYTHON.parent}:/usr/bin:/bin"
    assert env["VIRTUAL_ENV"] == "/cache/envs/abc123" and env["PYTHONPATH"] == str(SDK)
    assert env["HOME"] == "/work/node-0/mnist_1_abcd" and env["USER"] == "trainhub-run-42"
    assert env["TRAINHUB_OUTPUTS_DIR"] == "/work/node-0/mnist_1_abcd/outputs"
    assert env["TRAINHUB_RUN_TOKEN"] == env["MLFLOW_TRACKING_TOKEN"] == "thr_run_token"
    assert env["MLFLOW_TRACKING_URI"] == "http://server:8000/mlflow/birds"
    assert (env["MLFLOW_RUN_ID"], env["MLFLOW_EXPERIMENT_ID"]) == ("mnist_1_abcd", "7")
    assert env["PYTHONUNBUFFERED"] == env["PYTHONFAULTHANDLER"] == "1"
    assert "OMP_NUM_THREADS" not in env and "TRAINHUB_WHOLE_LINES" not in env
    assert plan.store is None and "TORCHELASTIC_USE_AGENT_STORE" not in env


def test_a_per_process_launch_gives_each_rank_its_numbers_on_two_hosts_by_two():
    first, second = plans(submitted(distributed=PyTorchConfiguration(process_count=4, node_count=2)))
    assert ranks_of(first) == [(0, 0, "std_log_process_0"), (1, 1, "std_log_process_1")]
    assert ranks_of(second) == [(2, 0, "std_log_process_2"), (3, 1, "std_log_process_3")]
    for plan in (first, second):
        for process in plan.processes:
            env = process.env
            assert env["RANK"] == env["AZ_BATCHAI_TASK_INDEX"] == env["TRAINHUB_RANK"] == str(process.rank)
            assert env["LOCAL_RANK"] == str(process.local_rank) and env["NODE_RANK"] == str(plan.node_rank)
            assert env["WORLD_SIZE"] == "4" and env["TRAINHUB_NODE_COUNT"] == "2"
            assert env["AZ_BATCHAI_PYTORCH_INIT_METHOD"] == "tcp://10.0.0.5:6105"
            assert env["TRAINHUB_DIST_BACKEND"] == "gloo"
            # Two ranks share the host's cores: one thread each, as torchrun sets.
            assert env["OMP_NUM_THREADS"] == "1"
            assert process.cwd == Path(f"/work/node-{plan.node_rank}/mnist_1_abcd")
            # They connect to the store the lead host started before them, as under torchrun's agent.
            assert env["TORCHELASTIC_USE_AGENT_STORE"] == "True" and env["TORCHELASTIC_RESTART_COUNT"] == "0"


def test_the_lead_host_of_a_per_process_launch_serves_the_rendezvous_store_first():
    first, second = plans(submitted(distributed=PyTorchConfiguration(process_count=4, node_count=2)))
    assert second.store is None
    store = first.store
    assert store.argv == [str(PYTHON), "-c", STORE_PROGRAM] and store.stream == "rendezvous_store"
    assert store.env["MASTER_PORT"] == "6105" and store.env["WORLD_SIZE"] == "4" and "RANK" not in store.env
    assert store.cwd == first.cwd
    # An environment without torch has no store; where it cannot run (a launcher of neither kind), rank 0
    # serves the store itself: its host's ranks lose the agent's variables.
    config = PyTorchConfiguration(process_count=2, node_count=1)
    [plain] = plans(submitted(distributed=config), torch=False)
    assert plain.store is None and not any("TORCHELASTIC_USE_AGENT_STORE" in p.env for p in plain.processes)
    alone = without_agent_store(first)
    assert alone.store is None and ranks_of(alone) == ranks_of(first)
    assert not any("TORCHELASTIC_USE_AGENT_STORE" in p.env for p in alone.processes)


def test_the_older_editions_arguments_are_expanded_per_rank():
    arguments = ["--dist-url", "$AZ_BATCHAI_PYTORCH_INIT_METHOD", "--rank", "$AZ_BATCHAI_TASK_INDEX", "--world-size", 2]
    config = PyTorchConfiguration(communication_backend="Gloo", node_count=2)
    first, second = plans(submitted(arguments=arguments, distributed=config))
    argv = [p.argv for plan in (first, second) for p in plan.processes]
    assert argv == [
        [str(PYTHON), "train.py", "--dist-url", "tcp://10.0.0.5:6105", "--rank", str(rank), "--world-size", "2"]
        for rank in (0, 1)
    ]


def test_torchrun_runs_once_per_host_with_its_node_rank_expanded():
    command = (
        "torchrun --nproc_per_node 2 --nnodes 2 --node_rank ${NODE_RANK} --master_addr ${MASTER_ADDR} "
        "--master_port ${MASTER_PORT} train.py --epochs 1"
    ).split()
    for plan in plans(submitted(command=command, distributed=PyTorchConfiguration(node_count=2))):
        [launcher] = plan.processes
        assert plan.mode is LaunchMode.PER_NODE and launcher.launcher
        assert launcher.stream == f"launcher_node_{plan.node_rank}"
        assert (launcher.rank, launcher.local_rank) == (plan.node_rank, 0)
        assert launcher.argv == [
            "torchrun",  # found first on PATH: the environment's
            *("--nproc_per_node", "2", "--nnodes", "2", "--node_rank", str(plan.node_rank)),
            *("--master_addr", "10.0.0.5", "--master_port", "6105", "train.py", "--epochs", "1"),
        ]
        assert launcher.env["PATH"].startswith(f"{PYTHON.parent}:")
        # Its ranks share its pipe: each line comes tagged with its rank (trainhub/sdk/_whole_lines.py).
        assert launcher.env["TRAINHUB_WHOLE_LINES"] == "1"
        assert launcher.env["WORLD_SIZE"] == "2" and "OMP_NUM_THREADS" not in launcher.env
        assert plan.store is None and "TORCHELASTIC_USE_AGENT_STORE" not in launcher.env


def test_torch_distributed_launch_runs_with_the_environments_python():
    command = (
        "python -m torch.distributed.launch --nproc_per_node 2 --nnodes 2 --node_rank $NODE_RANK "
        "--master_addr $MASTER_ADDR --master_port $MASTER_PORT --use_env train.py"
    ).split()
    second = plans(submitted(command=command, distributed=PyTorchConfiguration(node_count=2)))[1]
    [launcher] = second.processes
    assert launcher.argv[:3] == [str(PYTHON), "-m", "torch.distributed.launch"]
    assert launcher.argv[7:13] == ["--node_rank", "1", "--master_addr", "10.0.0.5", "--master_port", "6105"]


def test_a_command_with_a_per_process_config_is_started_per_rank():
    config = PyTorchConfiguration(process_count=2, node_count=1)
    [plan] = plans(submitted(command=["python3", "train.py", "--rank", "$RANK"], distributed=config))
    assert plan.mode is LaunchMode.PER_PROCESS
    assert [p.argv for p in plan.processes] == [[str(PYTHON), "train.py", "--rank", str(r)] for r in (0, 1)]


def test_mpi_starts_every_rank_from_mpirun_on_the_lead_host():
    run = submitted(script="mpi_allreduce.py", distributed=MpiConfiguration(node_count=2, process_count_per_node=2))
    lead, other = plans(run)
    assert lead.mode is other.mode is LaunchMode.MPI
    assert lead.processes == other.processes == [] and lead.store is None
    assert lead.mpi.total == 4 and lead.mpi.hosts == "localhost:2,trainhub-node-1:2"
    assert lead.mpi.ranks == [(0, 0, 0), (1, 0, 1), (2, 1, 0), (3, 1, 1)]
    assert lead.mpi.app == ["python", "mpi_allreduce.py"]  # each rank's PATH finds the environment's
    app, rank_dir = mpi_rank_app(lead.mpi.app, Path("/work/node-0/mnist_1_abcd"))
    assert app == ["/bin/sh", "-c", 'cd "$TRAINHUB_MPI_RANK_DIR" && exec "$@"', "trainhub-mpi-rank", *lead.mpi.app]
    assert rank_dir == {"TRAINHUB_MPI_RANK_DIR": "/work/node-0/mnist_1_abcd"}
    argv = mpirun_argv(lead.mpi, app, python="/srv/python")
    assert argv[:9] == ["mpirun", "--allow-run-as-root", "--tag-output", "--oversubscribe", "-np", "4", "--host"] + [
        "localhost:2,trainhub-node-1:2",
        "--mca",
    ]
    assert argv[9:11] == ["plm_rsh_agent", f"/srv/python -I -S {MPI_AGENT}"] and argv[-len(app) :] == app
    env = mpirun_environment(lead.env, rank_dir, {"TRAINHUB_MPI_AGENT_SOCKET": "/sock"})
    assert "PYTHONUNBUFFERED" not in env and env["TRAINHUB_MPI_RANK_DIR"] == "/work/node-0/mnist_1_abcd"
    # Open MPI's daemon on each host starts that host's ranks in the host's environment.
    assert (lead.env["NODE_RANK"], other.env["NODE_RANK"]) == ("0", "1")
    assert lead.env["OMP_NUM_THREADS"] == "1" and lead.env["WORLD_SIZE"] == "4"


def test_the_run_gets_its_own_variables_and_only_the_nodes_it_is_allowed():
    run_variables = {"LEARNING_RATE": "0.1", "PYTHONPATH": "/extra", "OMP_NUM_THREADS": "4", "LANG": "fr_FR"}
    config = PyTorchConfiguration(process_count=2, node_count=1)
    [plan] = plans(submitted(distributed=config), run_variables=run_variables)
    env = plan.processes[0].env
    assert env["LEARNING_RATE"] == "0.1" and env["OMP_NUM_THREADS"] == "4"
    assert env["PYTHONPATH"] == f"{SDK}:/extra"
    assert env["LANG"] == "fr_FR" and env["LC_ALL"] == "C"  # passed: named, and by prefix
    assert "AWS_SECRET_ACCESS_KEY" not in env
    # Of the node's: only what the run did not set itself (a container gets the run's only).
    assert plan.node_variables == frozenset({"LC_ALL"})
    assert plan.processes[0].node_variables == frozenset({"LC_ALL"})


def test_variables_expand_in_both_spellings_and_unknown_names_stay():
    env = {"NODE_RANK": "1", "MASTER_PORT": "6105"}
    assert expand_variables("--node_rank=$NODE_RANK:${MASTER_PORT}/$UNSET/${ALSO_UNSET}", env) == (
        "--node_rank=1:6105/$UNSET/${ALSO_UNSET}"
    )


def test_mpirun_output_goes_to_each_ranks_stream_in_whole_lines():
    pending: dict[str, str] = {}
    assert split_mpi_output("[1,0]<stdout>:hello from 0", pending) == [("std_log_process_0", "hello from 0")]
    # One physical line holding a piece of rank 1's line and then rank 0's whole line.
    assert split_mpi_output("[1,1]<stdout>:part one [1,0]<stderr>:zero", pending) == [("std_log_process_0", "zero")]
    assert split_mpi_output("[1,1]<stdout>: and two", pending) == [("std_log_process_1", "part one  and two")]
    assert split_mpi_output("mpirun noticed a problem", pending) == [("mpirun", "mpirun noticed a problem")]


def test_the_failed_rank_is_the_one_the_launcher_or_mpirun_names():
    torchrun = ["Root Cause (first observed failure):", "[0]:", "  rank      : 3 (local_rank: 1)", "  exitcode  : 1"]
    assert launcher_failed_rank({"launcher_node_1": torchrun}, "launcher_node_1", default=1) == 3
    tails = {"std_log_process_2": ["ok"], "std_log_process_3": ["Traceback (most recent call last):", "  boom"]}
    assert launcher_failed_rank(tails, "launcher_node_1", default=1) == 3
    assert mpi_failed_rank({"mpirun": ["  Process name: [[4567,1],2]", "  Exit code: 1"]}) == 2
    assert mpi_failed_rank({}) == 0


def test_a_launchers_rank_that_died_in_native_code_its_exit_code_and_crash_report():
    """torchrun's output when a rank aborted: faulthandler's report came untagged, then torchrun's own."""
    launcher = ["W1205 torch/distributed/run.py:874] *****", "Fatal Python error: Aborted", ""]
    launcher += ["Thread 0x00007f (most recent call first):", '  File "ddp_check.py", line 60 in main', ""]
    launcher += ["Extension modules: torch._C (total: 1)", "E1205 failed (exitcode: -6) local_rank: 1"]
    launcher += ["Traceback (most recent call last):", "ChildFailedError:", "Root Cause (first observed failure):"]
    launcher += ["  rank      : 3 (local_rank: 1)", "  exitcode  : -6 (pid: 4242)  (SIGABRT)"]
    assert crash_report(launcher) == launcher[1:7]
    assert crash_report(["Traceback (most recent call last):", "ValueError: no crash"]) == []
    assert launcher_failed_exit_code({"launcher_node_1": launcher}, "launcher_node_1") == 134
    python_error = ["Root Cause (first observed failure):", "  exitcode  : 1 (pid: 7)"]
    assert launcher_failed_exit_code({"launcher_node_1": python_error}, "launcher_node_1") == 1
    assert launcher_failed_exit_code({}, "launcher_node_1") is None


def test_the_traceback_and_the_signal_of_a_failed_rank():
    lines = ["epoch 1", "Traceback (most recent call last):", '  File "a.py"', "ValueError: first", "retrying"]
    lines += ["Traceback (most recent call last):", "ValueError: second"]
    assert last_traceback(lines) == "Traceback (most recent call last):\nValueError: second"
    assert last_traceback([f"line {i}" for i in range(40)]).startswith("line 10\n")
    assert (signal_named(134), signal_named(-11), signal_named(1), signal_named(None)) == (
        " (SIGABRT)",
        " (SIGSEGV)",
        "",
        "",
    )
