"""Distributed job configurations of the guide: per-process/per-node PyTorch, and MPI."""

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


class RunConfiguration:
    """Kept for scripts that build one by hand; ScriptRunConfig is the way to submit."""

    def __init__(self, **kwargs: Any):
        self.__dict__.update(kwargs)
