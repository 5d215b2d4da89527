"""Run configurations of the guide: per-process/per-node PyTorch, MPI, Docker, and `run_config`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class PyTorchConfiguration:
    communication_backend: str = "Gloo"
    process_count: int | None = None
    node_count: int = 1

    def _to_json(self) -> dict[str, Any]:
        return {
            "type": "pytorch",
            "communication_backend": self.communication_backend,
            "process_count": self.process_count,
            "node_count": self.node_count,
        }


@dataclass
class MpiConfiguration:
    process_count_per_node: int = 1
    node_count: int = 1

    def _to_json(self) -> dict[str, Any]:
        return {
            "type": "mpi",
            "process_count_per_node": self.process_count_per_node,
            "node_count": self.node_count,
        }


@dataclass
class DockerConfiguration:
    """`docker_runtime_config=DockerConfiguration(use_docker=True)`, accepted as the cloud SDK's
    notebooks pass it: whether a run is built as an image follows the environment's
    `docker.enabled`."""

    use_docker: bool | None = None
    shm_size: str | None = None
    shared_volumes: bool = True
    arguments: list[str] | None = None


class RunConfiguration:
    """What `ScriptRunConfig.run_config` holds: where (`target`) and in what (`environment`) the
    run goes, its launch (`node_count`, distributed configs) and `docker`; changing `target` or
    `environment` here changes the ScriptRunConfig, as in the cloud SDK's notebooks."""

    def __init__(
        self,
        script: str | None = None,
        arguments: list[Any] | None = None,
        target: Any = None,
        environment: Any = None,
        command: Any = None,
        max_run_duration_seconds: int | None = None,
        docker: DockerConfiguration | None = None,
        **_ignored: Any,
    ):
        self.script = script
        self.arguments = list(arguments or [])
        self.target = target
        self.environment = environment
        self.command = command
        self.max_run_duration_seconds = max_run_duration_seconds
        self.docker = docker or DockerConfiguration()
        self.node_count = 1

    def __repr__(self) -> str:
        return f"RunConfiguration(target={self.target!r}, environment={self.environment!r})"
