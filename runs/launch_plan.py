"""A run's launch plan, as pure data: for each host of the run, the processes to start (argv,
variables, working folder, ranks and log stream). Nothing here touches a node, the database or
Redis: runs/execution.py builds the plan of its host and runs/executor.py carries it out.

Launch modes (the guide's): *per process* (TrainHub starts each rank: DDP with Gloo or NCCL, and a
plain script), *per node* (a `command` under `PyTorchConfiguration(node_count=N)` without
process_count, e.g. `torchrun` or `python -m torch.distributed.launch`, started once per host and
forking the ranks itself), and *MPI* (`mpirun` on the lead host; Open MPI's daemons on the others).
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from runs.mpi_agent import HOST_PREFIX as MPI_HOST_PREFIX
from trainhub.sandbox import SYSTEM_PATH

VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
# Set by each host for the MPI ranks it hosts (mpirun's and Open MPI's daemon's children inherit it).
MPI_RANK_DIR = "TRAINHUB_MPI_RANK_DIR"
MPI_AGENT = Path(__file__).with_name("mpi_agent.py")
# The variables a rank gets of its own; the rest of its environment is its host's.
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "AZ_BATCHAI_TASK_INDEX", "TRAINHUB_RANK")
# As under torchrun's agent: every rank connects to a rendezvous store that is up before it starts
# (torch/distributed/rendezvous.py, _create_c10d_store) instead of rank 0 creating it on the way.
AGENT_STORE_VARIABLES = {"TORCHELASTIC_USE_AGENT_STORE": "True", "TORCHELASTIC_RESTART_COUNT": "0"}
STORE_STREAM = "rendezvous_store"
STORE_READY = "TrainHub: the run's rendezvous store is up"
# The listening socket the lead host binds before it starts the store and the ranks (runs/executor.py),
# handed to the store by its file descriptor: a rank that reaches init_process_group while the store
# still imports torch is connected at once and answered once it serves, where a refused connection
# waits out torch's retry backoff (hundreds of milliseconds, growing with each attempt).
STORE_LISTEN_FD = "TRAINHUB_STORE_LISTEN_FD"
# Where a store in a container (a Docker launch) asks for that socket instead: a container inherits
# no descriptor, so the node hands it over a unix socket in the run's folder (runs/run_socket.py).
STORE_LISTEN_SOCKET = "TRAINHUB_STORE_LISTEN_SOCKET"
STORE_SOCKET_NAME = ".trainhub-store.sock"
# The store of a per-process launch: torch's TCPStore served by the run's own Python, in the run's
# box (or container) on the lead host, as the run's user (it holds what the ranks send). Without
# torch (a container's image may lack it) it serves nothing: no rank can use torch.distributed
# there either. A torch that cannot serve a given socket closes it and binds the port itself. Its
# ready line says when it came up (bench/distributed.py sets it against the ranks' arrival).
STORE_PROGRAM = f"""
import os, signal, socket, time
from datetime import timedelta
if "{STORE_LISTEN_SOCKET}" in os.environ:
    path = os.environ["{STORE_LISTEN_SOCKET}"]
    os.chdir(os.path.dirname(path))  # a unix socket's path holds 107 bytes, the run's folder may be deeper
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as handover:
        handover.connect(os.path.basename(path))
        listening = socket.recv_fds(handover, 1, 1)[1][0]
else:
    listening = int(os.environ["{STORE_LISTEN_FD}"])
try:
    from torch.distributed import TCPStore
except ImportError:
    TCPStore = None
if TCPStore is not None:
    where = (os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), int(os.environ["WORLD_SIZE"]), True,
             timedelta(minutes=30))
    try:
        store = TCPStore(*where, wait_for_workers=False, master_listen_fd=listening)
    except TypeError:
        os.close(listening)
        store = TCPStore(*where, wait_for_workers=False)
    up = f"at {{time.time():.6f}}"
    print("{STORE_READY} on port", os.environ["MASTER_PORT"], up, "as uid", os.getuid(), flush=True)
while True:
    signal.pause()
"""


def expand_variables(value: str, env: Mapping[str, str]) -> str:
    """$VAR and ${VAR} from the rank's environment; unknown names stay as written."""
    return VARIABLE.sub(lambda m: env.get(m.group(1) or m.group(2), m.group(0)), value)


def node_variables_passed(environ: Mapping[str, str], names: list[str]) -> dict[str, str]:
    """What a run gets of the node's own variables: those of `names` (TRAINHUB_NODE_PASS_ENV; NAME*
    for a prefix), nothing else (the node's credentials, proxies, tokens stay the node's)."""
    exact = {name for name in names if not name.endswith("*")}
    prefixes = tuple(name[:-1] for name in names if name.endswith("*"))
    return {name: value for name, value in environ.items() if name in exact or (prefixes and name.startswith(prefixes))}


class LaunchMode(StrEnum):
    PER_PROCESS = "per_process"
    PER_NODE = "per_node"
    MPI = "mpi"


def launch_mode(command: Sequence[Any], distributed: Mapping[str, Any]) -> LaunchMode:
    """MPI for an MpiConfiguration; per node for a `command` under a PyTorchConfiguration without
    process_count (the command is the launcher); per process otherwise."""
    kind = distributed.get("type")
    if kind == "mpi":
        return LaunchMode.MPI
    if command and kind == "pytorch" and not distributed.get("process_count"):
        return LaunchMode.PER_NODE
    return LaunchMode.PER_PROCESS


@dataclass(frozen=True)
class RunLaunch:
    """What of a run decides its launch (read from runs.models.Run by `of`)."""

    pk: int
    run_id: str
    workspace: str
    experiment: str
    experiment_id: int
    script: str
    command: tuple[str, ...]
    arguments: tuple[str, ...]
    distributed: Mapping[str, Any]
    node_count: int
    process_count_per_node: int

    @classmethod
    def of(cls, run: Any) -> RunLaunch:
        return cls(
            pk=run.pk,
            run_id=run.run_id,
            workspace=run.workspace.name,
            experiment=run.experiment.name,
            experiment_id=run.experiment_id,
            script=run.script,
            command=tuple(str(part) for part in run.command or ()),
            arguments=tuple(str(part) for part in run.arguments or ()),
            distributed=dict(run.distributed or {}),
            node_count=run.node_count,
            process_count_per_node=run.process_count_per_node,
        )

    @property
    def mode(self) -> LaunchMode:
        return launch_mode(self.command, self.distributed)

    @property
    def uses_agent_store(self) -> bool:
        """A DDP launch of several ranks that TrainHub starts itself (torchrun has its own store)."""
        world = self.node_count * self.process_count_per_node
        return self.mode is LaunchMode.PER_PROCESS and self.distributed.get("type") == "pytorch" and world > 1

    @property
    def processes_started_per_node(self) -> int:
        """What TrainHub starts on each host: a per-node launcher forks the ranks itself."""
        return 1 if self.mode is LaunchMode.PER_NODE else self.process_count_per_node

    @property
    def argv(self) -> list[str]:
        if self.command:
            return [*self.command, *self.arguments]
        return ["python", self.script, *self.arguments]


@dataclass(frozen=True)
class Host:
    """One host of the run's placement, with what the launch needs of it."""

    node_rank: int
    name: str
    workdir: Path
    # The environment's interpreter on this host (its bin folder goes first on PATH).
    python: Path
    # The run's environment variables (its spec's, plus the paths of its staged inputs).
    run_variables: Mapping[str, str] = field(default_factory=dict)
    # The node's own environment and which of its names a run gets (TRAINHUB_NODE_PASS_ENV).
    node_environ: Mapping[str, str] = field(default_factory=dict)
    pass_env: tuple[str, ...] = ()
    # The folder of the in-run SDK, first on the ranks' PYTHONPATH.
    sdk_folder: Path = Path("/")
    # Whether the environment may hold torch (its ranks can meet at a store it serves).
    torch: bool = True


@dataclass(frozen=True)
class Rendezvous:
    addr: str
    port: int


@dataclass(frozen=True)
class RunAccess:
    """How ranks reach the server as the run (its token acts for this run only)."""

    server_url: str
    token: str


@dataclass(frozen=True)
class Process:
    """One process a host starts: a rank, a per-node launcher (its first rank is `rank`), or mpirun."""

    rank: int
    local_rank: int
    stream: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    # The names of `env` inherited from the node (a container gets only what the run set).
    node_variables: frozenset[str]
    launcher: bool = False


@dataclass(frozen=True)
class MpiPlan:
    """mpirun on the lead host starts every rank; the other hosts start what its agent asks."""

    total: int
    hosts: str
    # The user's command, variables expanded: what mpirun starts for each rank (or the container
    # launcher's stand-in for it, see runs/containers.py).
    app: list[str]
    # (rank, node rank, local rank) of every rank of the run.
    ranks: list[tuple[int, int, int]]
    node_count: int
    per_node: int


@dataclass(frozen=True)
class HostPlan:
    node_rank: int
    mode: LaunchMode
    env: dict[str, str]
    node_variables: frozenset[str]
    cwd: Path
    processes: list[Process]
    mpi: MpiPlan | None = None
    # Started on the lead host before the ranks, and stopped once the run is over there.
    store: Process | None = None

    @property
    def leader(self) -> bool:
        return self.node_rank == 0


def host_environment(
    run: RunLaunch, host: Host, rendezvous: Rendezvous, access: RunAccess
) -> tuple[dict[str, str], frozenset[str]]:
    """The variables every process of the host starts with, and which of them are the node's own."""
    inherited = node_variables_passed(host.node_environ, list(host.pass_env))
    bin_dir = str(host.python.parent)
    pythonpath = host.run_variables.get("PYTHONPATH", inherited.get("PYTHONPATH"))
    world_size = run.processes_started_per_node * run.node_count
    run_set = dict(host.run_variables)
    run_set.update(
        {
            "PATH": f"{bin_dir}{os.pathsep}{host.node_environ.get('PATH') or SYSTEM_PATH}",
            # The run folder is its home; the box's user has no passwd entry to name it.
            "HOME": str(host.workdir),
            "USER": f"trainhub-run-{run.pk}",
            "LOGNAME": f"trainhub-run-{run.pk}",
            "VIRTUAL_ENV": str(host.python.parent.parent),
            "PYTHONPATH": os.pathsep.join([str(host.sdk_folder)] + ([pythonpath] if pythonpath else [])),
            "PYTHONUNBUFFERED": "1",
            # A rank that dies in native code (a segmentation fault, an abort in a C++ library)
            # prints where its Python threads were, into its log and the run's error.
            "PYTHONFAULTHANDLER": host.run_variables.get("PYTHONFAULTHANDLER", "1"),
            "TRAINHUB_RUN_ID": run.run_id,
            "TRAINHUB_RUN_TOKEN": access.token,
            "TRAINHUB_SERVER_URL": access.server_url,
            "TRAINHUB_WORKSPACE": run.workspace,
            "TRAINHUB_EXPERIMENT": run.experiment,
            "TRAINHUB_OUTPUTS_DIR": str(host.workdir / "outputs"),
            # MLflow's client logs into this run unchanged: start_run() resumes MLFLOW_RUN_ID
            # (mlflow_compat/), with the run's own token, which reaches this run only.
            "MLFLOW_TRACKING_URI": f"{access.server_url.rstrip('/')}/mlflow/{run.workspace}",
            "MLFLOW_TRACKING_TOKEN": access.token,
            "MLFLOW_RUN_ID": run.run_id,
            "MLFLOW_EXPERIMENT_NAME": run.experiment,
            "MLFLOW_EXPERIMENT_ID": str(run.experiment_id),
            "MASTER_ADDR": rendezvous.addr,
            "MASTER_PORT": str(rendezvous.port),
            "NODE_RANK": str(host.node_rank),
            "WORLD_SIZE": str(world_size),
            "AZ_BATCHAI_PYTORCH_INIT_METHOD": f"tcp://{rendezvous.addr}:{rendezvous.port}",
            "TRAINHUB_DIST_BACKEND": str(run.distributed.get("communication_backend") or "gloo").lower(),
            "TRAINHUB_NODE_COUNT": str(run.node_count),
        }
    )
    if run.process_count_per_node > 1 and "OMP_NUM_THREADS" not in host.run_variables:
        # Several ranks share the node's cores: one thread each, as torchrun sets by default;
        # otherwise every rank starts one thread per core and they fight over the CPUs.
        run_set["OMP_NUM_THREADS"] = "1"
    if run.mode is LaunchMode.PER_NODE:
        # The launcher's ranks share its pipe and run with `python -u`: see trainhub/sdk/_whole_lines.py.
        run_set["TRAINHUB_WHOLE_LINES"] = "1"
    return inherited | run_set, frozenset(inherited.keys() - run_set.keys())


def plan_host(run: RunLaunch, host: Host, rendezvous: Rendezvous, access: RunAccess) -> HostPlan:
    """What `host` starts for its share of `run`."""
    env, node_variables = host_environment(run, host, rendezvous, access)
    mode = run.mode
    if mode is LaunchMode.MPI:
        return HostPlan(
            node_rank=host.node_rank,
            mode=mode,
            env=env,
            node_variables=node_variables,
            cwd=host.workdir,
            processes=[],
            mpi=_mpi_plan(run, env),
        )
    per_node = run.processes_started_per_node
    agent_store = run.uses_agent_store and host.torch
    processes = []
    for local_rank in range(per_node):
        rank = host.node_rank * per_node + local_rank
        own = dict(zip(RANK_VARIABLES, (str(rank), str(local_rank), str(rank), str(rank)), strict=True))
        rank_env = dict(env, **own, **(AGENT_STORE_VARIABLES if agent_store else {}))
        argv = [expand_variables(part, rank_env) for part in run.argv]
        if argv and argv[0] in ("python", "python3"):
            argv[0] = str(host.python)
        launcher = mode is LaunchMode.PER_NODE
        processes.append(
            Process(
                rank=rank,
                local_rank=local_rank,
                # A launcher's ranks' lines go to their own logs; what it prints itself, to this one.
                stream=f"launcher_node_{host.node_rank}" if launcher else f"std_log_process_{rank}",
                argv=argv,
                env=rank_env,
                cwd=host.workdir,
                node_variables=node_variables - own.keys(),
                launcher=launcher,
            )
        )
    store = None
    if agent_store and host.node_rank == 0:
        store = Process(
            rank=-1,
            local_rank=0,
            stream=STORE_STREAM,
            argv=[str(host.python), "-c", STORE_PROGRAM],
            env=env,
            cwd=host.workdir,
            node_variables=node_variables,
        )
    return HostPlan(host.node_rank, mode, env, node_variables, host.workdir, processes, store=store)


def without_agent_store(plan: HostPlan) -> HostPlan:
    """The plan of a host whose store did not come up: rank 0 serves the store itself, as the ranks
    of other hosts expect either way (they only connect to it)."""
    processes = [
        dataclasses.replace(p, env={k: v for k, v in p.env.items() if k not in AGENT_STORE_VARIABLES})
        for p in plan.processes
    ]
    return dataclasses.replace(plan, processes=processes, store=None)


def plan_run(run: RunLaunch, hosts: list[Host], rendezvous: Rendezvous, access: RunAccess) -> list[HostPlan]:
    """The whole run's plan, host by host (each host builds only its own: `plan_host`)."""
    return [plan_host(run, host, rendezvous, access) for host in sorted(hosts, key=lambda h: h.node_rank)]


def _mpi_plan(run: RunLaunch, env: dict[str, str]) -> MpiPlan:
    per_node = run.process_count_per_node
    hosts = [f"localhost:{per_node}"] + [f"{MPI_HOST_PREFIX}{rank}:{per_node}" for rank in range(1, run.node_count)]
    total = run.node_count * per_node
    return MpiPlan(
        total=total,
        hosts=",".join(hosts),
        app=[expand_variables(part, env) for part in run.argv],
        ranks=[(rank, *divmod(rank, per_node)) for rank in range(total)],
        node_count=run.node_count,
        per_node=per_node,
    )


def mpi_rank_app(app: list[str], workdir: Path) -> tuple[list[str], dict[str, str]]:
    """Open MPI starts every rank in mpirun's working folder (node 0's, or the home folder where it
    does not exist): each rank first moves to its own host's, which the host names in MPI_RANK_DIR."""
    in_own_folder = ["/bin/sh", "-c", f'cd "${MPI_RANK_DIR}" && exec "$@"', "trainhub-mpi-rank", *app]
    return in_own_folder, {MPI_RANK_DIR: str(workdir)}


def mpirun_argv(mpi: MpiPlan, app: list[str], python: str = sys.executable) -> list[str]:
    """mpirun's command on the lead host; its agent (runs/mpi_agent.py, in the run's box) asks the
    other hosts for Open MPI's daemons. Isolated and without site-packages: the agent needs the
    standard library only."""
    return [
        "mpirun",
        "--allow-run-as-root",
        "--tag-output",
        "--oversubscribe",
        "-np",
        str(mpi.total),
        "--host",
        mpi.hosts,
        "--mca",
        "plm_rsh_agent",
        f"{python} -I -S {MPI_AGENT}",
        "--mca",
        "btl",
        "tcp,self",
        "--mca",
        "orte_keep_fqdn_hostnames",
        "1",
        *app,
    ]


def mpirun_environment(
    env: dict[str, str], app_variables: Mapping[str, str], agent_socket: Mapping[str, str]
) -> dict[str, str]:
    """mpirun's variables: the host's, what the rank's app needs, and where its agent asks; Open MPI
    passes its ranks' output through unbuffered by itself."""
    merged = dict(env, **app_variables, **agent_socket)
    merged.pop("PYTHONUNBUFFERED", None)
    return merged
