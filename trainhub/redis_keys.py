"""Every name TrainHub gives a key or a channel in Redis, one function each, so that a reader
finds here what the site keeps there (RQ names its queues' and jobs' own keys: the server's worker's)."""

from __future__ import annotations

PREFIX = "trainhub:"
# Live events go out on channels named LIVE_CHANNEL_PREFIX + the group (trainhub.live).
LIVE_CHANNEL_PREFIX = f"{PREFIX}live:"


def live_channel(group: str) -> str:
    return LIVE_CHANNEL_PREFIX + group


def node_alive(node_pk: int) -> str:
    """Set by each heartbeat with a short expiry: a node whose key expired is lost."""
    return f"{PREFIX}node:{node_pk}:alive"


def heartbeats_kept() -> str:
    """Set by the controller, without expiry: gone when Redis lost its data (a restart without
    persistence), and every node's heartbeat with it."""
    return f"{PREFIX}heartbeats-kept"


def node_load(node_pk: int) -> str:
    """The node's machine's load averages, from its last heartbeat."""
    return f"{PREFIX}node:{node_pk}:load"


def node_usage(node_pk: int) -> str:
    """The node's machine's CPU, memory and GPU use (JSON), from its last report (trainhub/compute/usage.py)."""
    return f"{PREFIX}node:{node_pk}:usage"


def node_jobs(node_pk: int) -> str:
    """A list of the node's jobs (JSON: a run's id and the node's rank in it, never a secret), pushed
    by the dispatch and taken by the node in one blocking pop (runs/scheduling.py, runs/node_worker.py)."""
    return f"{PREFIX}node:{node_pk}:jobs"


def node_job(run_pk: int, node_rank: int) -> str:
    """Set with the job of the run's node `node_rank` and deleted when that node is done with it: a
    placement not yet started whose key is gone was lost with Redis's data (runs/scheduling.py)."""
    return f"{PREFIX}run:{run_pk}:node-job:{node_rank}"


def node_standby(token: str) -> str:
    """A list a local cluster's standby node process waits on: the provisioner pushes its order to
    become a node (trainhub_node --standby)."""
    return f"{PREFIX}standby:{token}"


def controller_wake() -> str:
    """A list of at most one item, pushed when a queued run waits for nodes: the controller blocks on
    it between its ticks and provisions and dispatches at once (runs/scheduling.py)."""
    return f"{PREFIX}controller:wake"


def endpoint_routes_channel() -> str:
    """The channel an endpoint's pk is published on whenever its replicas or keys change or it is
    deleted: each scoring proxy drops what it keeps of it (endpoints/proxy.py)."""
    return f"{PREFIX}endpoint-routes"


def endpoint_route_acks(change: str) -> str:
    """A list each scoring proxy pushes to once it dropped what a change published on
    endpoint_routes_channel() names (a key regenerated, an endpoint deleted)."""
    return f"{PREFIX}endpoint-routes:ack:{change}"


def endpoint_stats(endpoint_pk: int) -> str:
    """The endpoint's request count and total latency (a hash)."""
    return f"{PREFIX}endpoint:{endpoint_pk}:stats"


def run_peers_done(run_pk: int) -> str:
    """A list each node of the run pushes its node rank onto as it finishes: the lead node blocks
    on it rather than reading the database in a loop (runs/services.py, placement_done)."""
    return f"{PREFIX}run:{run_pk}:peers-done"


def slurm_wake() -> str:
    """A list of at most one item, pushed when a run is queued on a Slurm cluster: the controller's
    Slurm thread blocks on it between its passes and submits the run's job at once (runs/slurm.py)."""
    return f"{PREFIX}slurm:wake"


def run_task_alive(run_pk: int, node_rank: int) -> str:
    """Set by each heartbeat of a Slurm run's task on one host, with a short expiry: a task whose
    key expired has stopped, its host dead or hung (runs/slurm_execution.py, runs/slurm.py)."""
    return f"{PREFIX}run:{run_pk}:task:{node_rank}:alive"


def run_abort(run_pk: int) -> str:
    """Set to the run's final status when it is canceled or fails: every node of it stops its ranks."""
    return f"{PREFIX}run:{run_pk}:abort"


def run_local_runner(run_pk: int) -> str:
    """Held while the runner of a run on the submitting machine (compute_target="local") reports."""
    return f"{PREFIX}run:{run_pk}:local-runner"


def run_log_sequence(run_pk: int) -> str:
    """The last sequence number given to a line of the run's log."""
    return f"{PREFIX}run:{run_pk}:logseq"


def run_rendezvous(run_pk: int) -> str:
    """The lead node's address and port, which the run's other nodes wait for."""
    return f"{PREFIX}run:{run_pk}:rendezvous"


def run_mpi_requests(run_pk: int, node_rank: int) -> str:
    """The list of mpirun's launch requests for one node of an MPI run (runs/mpi_relay.py)."""
    return f"{PREFIX}run:{run_pk}:mpi:{node_rank}"


def run_mpi_result(run_pk: int, request_id: str) -> str:
    """The exit code of one launch request of an MPI run."""
    return f"{PREFIX}run:{run_pk}:mpi:result:{request_id}"


def master_port(address: str, port: int) -> str:
    """Held by the run that took this rendezvous port on this address, so no other run takes it."""
    return f"{PREFIX}master-port:{address}:{port}"
