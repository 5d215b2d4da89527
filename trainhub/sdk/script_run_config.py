"""`ScriptRunConfig`: what to run (script or command), where, in which environment."""

from __future__ import annotations

import os
import shlex
from typing import Any

from trainhub.sdk.exceptions import UserErrorException
from trainhub.sdk.runconfig import RunConfiguration

DEFAULT_ENVIRONMENT = "TrainHub-PyTorch-2.13-CPU"
# Azure's "run on this machine, tracked in the workspace" (no compute_target means it too).
LOCAL_TARGET = "local"


class ScriptRunConfig:
    def __init__(
        self,
        source_directory: str | os.PathLike[str] = ".",
        script: str | None = None,
        arguments: list[Any] | None = None,
        run_config: Any = None,
        _telemetry_values: Any = None,
        compute_target: Any = None,
        environment: Any = None,
        distributed_job_config: Any = None,
        resume_from: Any = None,
        max_run_duration_seconds: int | None = None,
        command: list[str] | str | None = None,
        docker_runtime_config: Any = None,
    ):
        if script and command:
            raise UserErrorException("Give either script or command to ScriptRunConfig, not both.")
        self.source_directory = str(source_directory)
        self.run_config = run_config if run_config is not None else RunConfiguration()
        self.script = script
        self.arguments = list(arguments or [])
        if compute_target is not None:
            self.compute_target = compute_target
        if environment is not None:
            self.environment = environment
        if docker_runtime_config is not None:
            self.run_config.docker = docker_runtime_config
        self.distributed_job_config = distributed_job_config
        self.max_run_duration_seconds = max_run_duration_seconds
        self.command = command_line(command)
        self.use_gpu = False

    @property
    def compute_target(self) -> Any:
        return self.run_config.target

    @compute_target.setter
    def compute_target(self, target: Any) -> None:
        self.run_config.target = target

    @property
    def environment(self) -> Any:
        return self.run_config.environment

    @environment.setter
    def environment(self, environment: Any) -> None:
        self.run_config.environment = environment

    def _checked_target_name(self) -> str:
        """The compute target's name, once what can be checked here without the server is right."""
        if not self.script and not self.command:
            raise UserErrorException("ScriptRunConfig needs a script or a command.")
        if self.script and not (os.path.isfile(os.path.join(self.source_directory, self.script))):
            raise UserErrorException(
                f"The script {self.script!r} is not in source_directory {self.source_directory!r}."
            )
        target = self.compute_target
        return LOCAL_TARGET if target is None else target if isinstance(target, str) else target.name

    def _submission(self, workspace: Any) -> dict[str, Any]:
        """What the server is sent: the environment by name (the server looks it up), or with its
        spec where the workspace does not have it yet (the server registers it with the run)."""
        target_name = self._checked_target_name()
        environment = self.environment
        return {
            "compute_target": target_name,
            "environment": (
                {"name": DEFAULT_ENVIRONMENT, "version": None}
                if environment is None
                else environment._to_submission(workspace)
            ),
            "script": self.script,
            "command": list(self.command) if self.command else None,
            "arguments": [_argument(a) for a in self.arguments],
            "distributed": self.distributed_job_config._to_json() if self.distributed_job_config else None,
            "timeout_seconds": self.max_run_duration_seconds,
            "use_gpu": self.use_gpu,
        }


def command_line(command: list[Any] | str | None) -> list[str] | None:
    """A command as the words of one shell line: a list is joined with spaces first, as the cloud
    SDK does (["python train.py --data", dataset.as_download(), "--epochs 2"]); data inputs become
    their markers, and $VARIABLES stay for the node to expand."""
    if command is None:
        return None
    if not isinstance(command, str):
        command = " ".join(_argument(part) for part in command)
    return shlex.split(command)


def _argument(value: Any) -> str:
    to_argument = getattr(value, "_to_argument", None)
    return to_argument() if callable(to_argument) else str(value)
