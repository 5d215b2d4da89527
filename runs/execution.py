"""What a node does for its share of a run, step by step: make the host ready (runs/preparation.py:
environment, snapshot, box; datastores/staging.py: inputs), meet the other nodes
(runs/rendezvous.py), build this host's launch plan (runs/launch_plan.py) and have the executor
carry it out (runs/executor.py) while watching for cancel, failures and the time limit; then the
run's end: outputs and logs copied into its history (runs/run_files.py), and its final state (the
lead node, once its peers are done)."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import close_old_connections
from django.db.models import Exists, OuterRef

from datastores.models import RunInput
from datastores.staging import stage_run_inputs
from metrics.services import metrics_ingest, parse_batch
from runs import preparation, rendezvous, services, system_metrics
from runs.containers import ContainerLauncher, Launcher, ProcessLauncher
from runs.executor import HostExecutor, RunAborted, RunTimedOut, SetupFailed, StartedProcess
from runs.launch_plan import Host, HostPlan, Rendezvous, RunAccess, RunLaunch, plan_host
from runs.limits import OUT_OF_MEMORY, RunCgroup
from runs.models import PlacementState, ProcessState, Run, RunNode, RunStatus
from runs.run_files import copy_run_files
from runs.scheduling import dispatch_cluster
from runs.tokens import run_token
from trainhub import redis_keys
from trainhub.compute.models import Node
from trainhub.compute.services import node_set_idle
from trainhub.environments.builders import sdk_path
from trainhub.redis_conn import get_redis
from trainhub.sandbox import Box, node_is_root, python_folders, warm_supervisor
from trainhub.workspaces.models import Role
from trainhub.workspaces.permissions import Access

logger = logging.getLogger(__name__)

PREPARE_FLUSH_SECONDS = 0.25
ABORT_POLL_SECONDS = 0.2
PEERS_TIMEOUT_SECONDS = 60
PEERS_RECHECK_SECONDS = 1


class NodeExecution:
    def __init__(self, run_pk: int, node: Node, node_rank: int, stop_event: threading.Event | None = None):
        self.run = (
            Run.objects.select_related("workspace", "experiment", "snapshot", "cluster")
            .annotate(has_inputs=Exists(RunInput.objects.filter(run=OuterRef("pk"))))
            .get(pk=run_pk)
        )
        self.node = node
        self.node_rank = node_rank
        # Derived here, from the row and the secret key: the job that brought the node here holds ids only.
        self.token = run_token(self.run.pk, self.run.token_salt)
        self.stop_event = stop_event or threading.Event()
        self.redis = get_redis()
        self.workdir = Path(settings.TRAINHUB_NODE_WORK_DIR) / self.node.name / self.run.run_id
        self.private_logs = self.workdir.parent / f"{self.run.run_id}.logs"
        self.box_folder = self.workdir.parent / f"{self.run.run_id}.box"  # its /tmp and /dev/shm
        self.prepare_stream = f"prepare_node_{node_rank}"
        self.prepare_lines: list[str] = []
        self.prepare_pending: list[str] = []
        self.prepare_flushed_at = time.monotonic()
        self.launcher: Launcher = ProcessLauncher()
        self.system = system_metrics.Sampler()
        self.box: Box | None = None
        self.cgroup: RunCgroup | None = None
        self.executor: HostExecutor | None = None
        self.ranks_left_to_mpirun = False
        # The job was no longer this node's when it took it up: nothing of the run is touched.
        self.taken_back = False

    # ------------------------------------------------------------ helpers

    @property
    def leader(self) -> bool:
        return self.node_rank == 0

    @property
    def mpi(self) -> bool:
        return self.run.distributed.get("type") == "mpi"

    def say(self, line: str) -> None:
        """A line of the node's own (prepare/system) log; sent in batches, at most every
        PREPARE_FLUSH_SECONDS, so a long build streams and a cache hit costs one write."""
        self.prepare_lines.append(line)
        self.prepare_pending.append(line)
        if time.monotonic() - self.prepare_flushed_at >= PREPARE_FLUSH_SECONDS:
            self.flush_prepare()

    def flush_prepare(self) -> None:
        if self.prepare_pending:
            services.log_append(self.run.pk, self.prepare_stream, self.prepare_pending)
            self.prepare_pending = []
        self.prepare_flushed_at = time.monotonic()

    def aborted(self) -> str | None:
        if self.stop_event.is_set():
            return "node stopped"
        value = self.redis.get(redis_keys.run_abort(self.run.pk))
        return value.decode() if isinstance(value, bytes) else value

    def check_abort(self) -> None:
        reason = self.aborted()
        if reason:
            raise RunAborted(reason)

    def stop_processes(self) -> None:
        if self.executor is not None:
            self.executor.stop()

    def drain(self) -> None:
        if self.executor is not None:
            self.executor.drain()

    def starting(self) -> None:
        """Ready to start the ranks: the lead node records the run's Starting, unless it was canceled
        or ended meanwhile (read in that transaction); another node asks for the run's abort."""
        if self.stop_event.is_set():
            raise RunAborted("node stopped")
        if not self.leader:
            self.check_abort()
            return
        ended = services.run_starting(self.run.pk)
        if ended:
            raise RunAborted(ended)

    def transition(self, status: str, **kwargs: Any) -> None:
        if self.leader:
            services.run_transition(self.run.pk, status, **kwargs)

    # ------------------------------------------------------------ phases

    def execute(self) -> None:
        try:
            if self.stop_event.is_set():
                raise RunAborted("node stopped")
            # An abort asked before the pickup (the run canceled or ended) is read in its transaction.
            ended = services.placement_preparing(
                self.run.pk, self.node_rank, lead=self.leader, node_pk=self.node.pk, token_salt=self.run.token_salt
            )
            if ended == services.TAKEN_BACK:
                self.taken_back = True
                logger.warning(
                    "node %s: the job of run %s (rank %s) was taken back and placed again: dropped",
                    self.node.name,
                    self.run.run_id,
                    self.node_rank,
                )
                return
            if ended:
                raise RunAborted(ended)
            began = time.monotonic()
            python, env_vars = self.prepare_environment()
            if time.monotonic() - began > ABORT_POLL_SECONDS:
                self.check_abort()  # a build that took a while: not unpacked for a canceled run
            self.unpack_snapshot()
            # Read with the run: most runs have no input, and need no query of their own for it.
            inputs = stage_run_inputs(self.run, self.node.name, self.workdir, self.say) if self.run.has_inputs else {}
            env_vars.update(inputs)
            self.sandbox_processes(python, [Path(path) for path in inputs.values()])
            if self.mpi:
                self.flush_prepare()  # another host's start below lasts as long as the run
            self.starting()
            plan = self.plan(python, env_vars, self.rendezvous())
            self.executor = HostExecutor(
                run_pk=self.run.pk,
                node_rank=self.node_rank,
                node_name=self.node.name,
                workdir=self.workdir,
                private_logs=self.private_logs,
                launcher=self.launcher,
                box=self.box,
                connection=self.redis,
            )
            self.executor.start(plan, self.watch())  # another host of an MPI run serves mpirun in there
            # The node's lines of preparing are stored once the ranks have started, not before: a
            # rank's start does not wait for them, and they still come before its first line.
            self.flush_prepare()
            self.transition(RunStatus.RUNNING)
            failed = self.executor.pump(self.watch())
            # The ranks have ended: the next run's spares start beside this one's end, so that they
            # are ready when its first rank starts (a spare box's waiter takes ~25 ms of CPU).
            warm_supervisor()
            # Open MPI's daemon of another host ended as mpirun ended it, after the ranks: how they
            # ended is mpirun's to say, on node 0 (their rows are its to close).
            self.ranks_left_to_mpirun = failed is None and not self.leader and self.mpi
            if failed is not None and failed.rank < 0 and not failed.store:
                failed = None  # an MPI daemon of another node: mpirun on node 0 reports failures
            self.finish(failed)
        except RunAborted as aborted:
            self.flush_prepare()
            self.stop_processes()
            self.drain()
            self.finalize_files()
            self.end_aborted(str(aborted))
        except SetupFailed as failure:
            self.flush_prepare()
            self.stop_processes()
            self.finalize_files()
            services.fail_run(self.run.pk, failure.reason, error_traceback=failure.details)
        except Exception as error:  # the node must survive anything a run does
            logger.exception("run %s failed on node %s", self.run.run_id, self.node.name)
            self.flush_prepare()
            self.stop_processes()
            services.fail_run(
                self.run.pk,
                f"TrainHub node {self.node.name} failed: {type(error).__name__}: {error}",
                error_traceback=traceback.format_exc(),
            )
        finally:
            if self.executor is not None:
                self.executor.close()
            self.launcher.remove_leftovers()
            if not self.taken_back:
                self.flush_prepare()
                if not self.ranks_left_to_mpirun:
                    # Announced by a per-node launch's rank after its launcher was stopped, or never ended.
                    services.running_processes_ended(self.run.pk, ProcessState.STOPPED, node_rank=self.node_rank)
                services.placement_done(self.run.pk, self.node_rank)
            shutil.rmtree(self.workdir, ignore_errors=True)
            shutil.rmtree(self.private_logs, ignore_errors=True)
            if self.box is not None:
                self.box.cleanup()
            if self.cgroup is not None:
                self.cgroup.remove()
            shutil.rmtree(self.box_folder, ignore_errors=True)

    def prepare_environment(self) -> tuple[Path, dict[str, str]]:
        python, variables, self.launcher = preparation.prepare_environment(self.run, self.node, self.workdir, self.say)
        return python, variables

    def unpack_snapshot(self) -> None:
        preparation.unpack_snapshot(self.run, self.workdir, self.private_logs, self.say)

    @functools.cached_property
    def sdk_folder(self) -> Path:
        """The in-run SDK (and the sitecustomize) that goes on the ranks' PYTHONPATH."""
        return sdk_path(Path(settings.TRAINHUB_ENV_CACHE_DIR))

    def sandbox_processes(self, python: Path, inputs: list[Path]) -> None:
        self.launcher, self.box = preparation.make_box(
            self.run,
            launcher=self.launcher,
            readable=[*python_folders(python), self.sdk_folder],
            inputs=inputs,
            workdir=self.workdir,
            box_folder=self.box_folder,
            say=self.say,
        )
        if self.box is not None:
            self.box.prepare()
            self.box, self.cgroup = preparation.hold_to_limits(self.run, self.node, self.box, self.say)

    def rendezvous(self) -> Rendezvous:
        if self.leader:
            return rendezvous.publish(self.redis, self.run.pk, self.node.address, peers=self.run.node_count > 1)
        return rendezvous.wait_for_leader(
            self.redis, self.run.pk, node_name=self.node.name, node_rank=self.node_rank, check_abort=self.check_abort
        )

    def plan(self, python: Path, env_vars: dict[str, str], rendezvous: Rendezvous) -> HostPlan:
        """This host's share of the run's launch plan (runs/launch_plan.py)."""
        host = Host(
            node_rank=self.node_rank,
            name=self.node.name,
            workdir=self.workdir,
            python=python,
            run_variables=env_vars,
            node_environ=dict(os.environ),
            pass_env=tuple(settings.TRAINHUB_NODE_PASS_ENV),
            sdk_folder=self.sdk_folder,
            # An image's packages cannot be seen from here: its store serves nothing where torch is missing.
            torch=isinstance(self.launcher, ContainerLauncher)
            or any(python_folders(python)[0].glob("lib/python*/site-packages/torch/distributed/rendezvous.py")),
        )
        access = RunAccess(server_url=settings.TRAINHUB_NODE_SERVER_URL, token=self.token)
        return plan_host(RunLaunch.of(self.run), host, rendezvous, access)

    def watch(self) -> Callable[[], None]:
        """What the node checks while the run's processes run: the run's abort, its time limit,
        and (every TRAINHUB_SYSTEM_METRICS_SECONDS) its ranks' CPU, memory and GPU use."""
        last_abort_check = 0.0
        timeout_at = time.monotonic() + self.run.timeout_seconds if self.run.timeout_seconds else None
        sample_every = settings.TRAINHUB_SYSTEM_METRICS_SECONDS
        # The first sample only starts each rank's CPU clock: take it soon.
        next_sample = time.monotonic() + min(1.0, sample_every)

        def tick() -> None:
            nonlocal last_abort_check, next_sample
            now = time.monotonic()
            if sample_every and now >= next_sample:
                next_sample = now + sample_every
                self.record_system_metrics()
            if now - last_abort_check >= ABORT_POLL_SECONDS:
                last_abort_check = now
                self.check_abort()
            if timeout_at is not None and now > timeout_at:
                raise RunTimedOut()

        return tick

    def record_system_metrics(self) -> None:
        """CPU, memory (and GPU) of each running rank's process tree (a Docker rank's container's), as
        the run's system/ metrics. Not for an MPI launch in containers: its ranks' containers are
        asked for by Open MPI's processes, which tell no rank."""
        if self.executor is None or (self.mpi and not isinstance(self.launcher, ProcessLauncher)):
            return
        platform = Access(workspace=self.run.workspace, role=Role.CONTRIBUTOR)
        try:
            samples = self.system.sample(self.executor.running_ranks())
        except Exception:  # a run never fails for want of a sample
            logger.warning("system metrics of run %s failed", self.run.run_id, exc_info=True)
            return
        for rank, values in samples.items():  # one rank's failed sample costs the others none
            try:
                metrics_ingest(access=platform, run=self.run, batch=parse_batch(system_metrics.batch(rank, values)))
            except Exception:
                logger.warning("system metrics of run %s, rank %s failed", self.run.run_id, rank, exc_info=True)

    def finish(self, failed: StartedProcess | None) -> None:
        if failed is not None:
            assert self.executor is not None
            cause = ""
            if self.cgroup is not None and self.cgroup.out_of_memory():
                cause = ": " + OUT_OF_MEMORY.format(memory_gb=f"{self.run.limits.get('memory_gb'):g}")
            failure = self.executor.failure(failed, cause=cause)
            if cause and failure.rank is not None:
                self.say(f"Rank {failure.rank} was stopped{cause}.")
            services.fail_run(
                self.run.pk,
                failure.reason,
                exit_code=failure.exit_code,
                failed_rank=failure.rank,
                error_traceback=failure.traceback,
            )
            self.stop_processes()
            self.drain()
            self.finalize_files()
            return
        if not self.leader:
            self.finalize_files()
            return
        self.wait_for_peers()
        assert self.executor is not None
        self.executor.stop_store()
        if self.mpi:
            services.running_processes_ended(self.run.pk, ProcessState.COMPLETED, exit_code=0)
        self.transition(RunStatus.FINALIZING)
        self.finalize_files()
        self.transition(RunStatus.COMPLETED, exit_code=0)

    def wait_for_peers(self) -> None:
        """Until every other node of the run is done. The database says which are; each node's end
        wakes this one through Redis (services.placement_done), and a wait that Redis never ends
        (its data lost) reads the database again every PEERS_RECHECK_SECONDS. Counted against the
        run's node count: a Slurm task joins the run only as it starts, not at dispatch."""
        deadline = time.monotonic() + PEERS_TIMEOUT_SECONDS
        key = redis_keys.run_peers_done(self.run.pk)
        peers_done = RunNode.objects.filter(run=self.run, state=PlacementState.DONE).exclude(node_rank=0)
        while peers_done.count() < self.run.node_count - 1:
            self.check_abort()
            if time.monotonic() > deadline:
                raise SetupFailed("The other nodes of the run did not finish in time.", "")
            self.redis.blpop([key], timeout=PEERS_RECHECK_SECONDS)

    def end_aborted(self, reason: str) -> None:
        self.run.refresh_from_db(fields=["status", "cancel_requested_at", "cancel_reason"])
        if self.run.is_final:
            return
        if reason == RunStatus.CANCELED or self.run.cancel_requested_at:
            services.run_transition(self.run.pk, RunStatus.FINALIZING)
            services.run_transition(
                self.run.pk, RunStatus.CANCELED, reason=self.run.cancel_reason or services.CANCELED_BY_USER
            )
        elif reason == "timeout":
            services.fail_run(
                self.run.pk, f"The run passed its time limit of {self.run.timeout_seconds} s and was stopped."
            )
        else:
            services.fail_run(self.run.pk, f"Stopped: {reason}")

    def finalize_files(self) -> None:
        """Copy outputs/ and logs/ into the run's history, with the node's own log of the run."""
        if self.executor is not None:
            self.executor.close_logs()
        if self.prepare_lines:
            # A build can fail before the snapshot (and this folder) is unpacked.
            self.private_logs.mkdir(parents=True, exist_ok=True)
            (self.private_logs / f"{self.prepare_stream}.txt").write_text("\n".join(self.prepare_lines) + "\n")
        copy_run_files(
            self.run,
            workdir=self.workdir,
            private_logs=self.private_logs,
            owner=self.box.uid if self.box is not None and node_is_root() else None,
            log_stream=self.prepare_stream,
        )


def execute_on_node(run_pk: int, node: Node, node_rank: int, stop_event: threading.Event | None = None) -> bool:
    """Carry out the node's share of the run; False when the job was taken back before the node
    took it up (the controller placed the run again: the node's state and the job's key in Redis
    are the new placement's, and are left to it)."""
    close_old_connections()
    taken_back = False
    try:
        execution = NodeExecution(run_pk, node, node_rank, stop_event)
        execution.execute()
        taken_back = execution.taken_back
    finally:
        if not taken_back:
            node_set_idle(node.pk)
        dispatch_cluster(node.cluster_id)
        close_old_connections()
        warm_supervisor()  # the next run's first rank starts from it
    return not taken_back
