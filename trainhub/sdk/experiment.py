"""`Experiment`: a named group of runs in a workspace; `submit` packs, uploads and starts a run."""

from __future__ import annotations

import builtins
from typing import Any

from trainhub.sdk import exceptions
from trainhub.sdk._local_runner import check_machine, start_runner, submitter_python
from trainhub.sdk._snapshot import pack_source_directory
from trainhub.sdk._uploads import progress_bar
from trainhub.sdk.run import Run
from trainhub.sdk.script_run_config import LOCAL_TARGET
from trainhub.sdk.train.hyperdrive.run import HyperDriveRun

LOCAL_SWEEP = (
    "A HyperDrive sweep runs its children on a compute cluster's nodes: compute_target='local' (or none) "
    "is for single runs on this machine. Give the run config a cluster."
)


class Experiment:
    def __init__(self, workspace: Any, name: str, **_ignored: Any):
        self.workspace = workspace
        self.name = name

    def submit(self, config: Any, tags: dict[str, str] | None = None, show_progress: bool = True, **_ignored: Any):
        sweep = getattr(config, "_is_hyperdrive", False)
        run_config = config.run_config if sweep else config
        local = run_config._checked_target_name() == LOCAL_TARGET
        if local and sweep:
            raise exceptions.UserErrorException(LOCAL_SWEEP)
        python = None
        if local:
            # Before anything is recorded: a refused submit registers no environment either.
            python = submitter_python(config.environment)
            check_machine()
        submission = run_config._submission(self.workspace)
        packed = pack_source_directory(config.source_directory)
        packed.say_left_out()
        handed_over = False
        try:
            payload = dict(submission, snapshot=packed.sha256, tags=dict(tags or {}))
            store = self.workspace._store
            submit = store.submit_run
            if sweep:
                payload = {"run": payload, "sweep": config._sweep_json()}
                submit = store.submit_sweep
            # Most submits send a snapshot the server already has: try without uploading.
            details = _submit_unless_snapshot_unknown(submit, self.name, payload)
            if details is None:
                upload_packed(self.workspace, packed, show_progress=show_progress)
                details = submit(self.name, payload)
            if run_config.environment is not None:
                run_config.environment._submitted((details["run"] if sweep else details)["environment"], self.workspace)
            if local:
                # The runner unpacks this very snapshot (checked against the run's) and removes it.
                handed_over = True
                start_runner(self.workspace, details["run_id"], packed.path, python)
        finally:
            if not handed_over:
                packed.discard()
        if sweep:
            return HyperDriveRun(self, details["run"]["run_id"], _details=details["run"])
        return Run(self, details["run_id"], _details=details)

    @staticmethod
    def list(workspace: Any, experiment_name: str | None = None, **_ignored: Any) -> list[Experiment]:
        """The workspace's experiments (only `experiment_name` when given), as the guide's SDK lists them."""
        found = workspace._store.list_experiments()
        return [Experiment(workspace, e["name"]) for e in found if experiment_name in (None, e["name"])]

    def get_runs(self, status: str | None = None) -> builtins.list[Run]:
        found = self.workspace._store.list_runs(self.name, status)
        return [Run(self, d["run_id"], _details=d) for d in found]

    def __repr__(self) -> str:
        return f"Experiment(workspace={self.workspace.name!r}, name={self.name!r})"


def _submit_unless_snapshot_unknown(submit: Any, experiment: str, payload: dict[str, Any]) -> Any:
    """The server's answer, or None when it lacks the snapshot. A refusal after the upload is then
    raised on its own, not chained to this one."""
    try:
        return submit(experiment, payload)
    except exceptions.UserErrorException as error:
        if error.code != "snapshot_unknown":
            raise
    return None


def upload_packed(workspace: Any, packed: Any, *, show_progress: bool = True) -> None:
    workspace._store.upload_snapshot(
        packed.sha256, packed.path, on_progress=progress_bar("Uploading snapshot", show_progress)
    )
