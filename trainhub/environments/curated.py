"""The curated environments TrainHub ships, seeded by `make run` (admins add more in the admin)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

RESERVED_PREFIX = "TrainHub-"
CURATED_NEEDS_PREFIX = "A curated environment's name must start with '" + RESERVED_PREFIX + "'."

PYTORCH_CPU_NAME = "TrainHub-PyTorch-2.13-CPU"
PYTORCH_CPU_DESCRIPTION = "PyTorch 2.13.0 (CPU build) and NumPy on Python 3.11."
PYTORCH_CPU_SPEC: dict[str, Any] = {"python": "3.11", "pip": ["torch==2.13.0", "numpy"]}


def is_reserved(name: str) -> bool:
    # Any capitalisation: "trainhub-pytorch" next to "TrainHub-PyTorch" would fool people as well.
    return name.lower().startswith(RESERVED_PREFIX.lower())


PYTORCH_NAME = "TrainHub-PyTorch-2.13"
PYTORCH_DESCRIPTION = (
    "PyTorch 2.13.0 (the nodes' build: CPU, or CUDA where nodes have GPUs), torchvision, NumPy, "
    "Pillow, ONNX, onnxscript, MLflow and mpi4py on Python 3.11: what the cloud SDK's curated "
    "PyTorch environments hold, at TrainHub's versions. The cloud's curated PyTorch names find "
    "this environment. On CPU nodes torchvision is its CUDA build (the only one the package indexes "
    "have for torch 2.13) without its compiled operators: models, transforms and datasets work, "
    "torchvision.ops (nms, roi_align) and torchvision.io's image decoding do not. Not in it: "
    "torchaudio (no release for torch 2.13 exists; the newest, 2.11, is a CUDA build whose compiled "
    "part does not load beside a CPU torch) and Horovod (use torch.distributed under MPI)."
)
PYTORCH_SPEC: dict[str, Any] = {
    "python": "3.11",
    "pip": ["torch==2.13.0", "torchvision", "numpy", "pillow", "onnx", "onnxscript", "mlflow>=3.1,<4", "mpi4py"],
}
# Specs this environment shipped with before: a site still on one gets the current one when seeded.
PYTORCH_EARLIER_SPECS: tuple[dict[str, Any], ...] = (
    {"python": "3.11", "pip": ["torch==2.13.0", "numpy", "pillow", "onnx", "onnxscript", "mpi4py"]},
)

# The cloud SDK's curated PyTorch names that its published v1 examples use. Each is found as
# TrainHub-<rest> (the porting rule) and as written; the versions inside are TrainHub's.
AZURE_PREFIX = "AzureML-"
PYTORCH_ANSWERS_TO = [
    "AzureML-PyTorch-1.6-GPU",
    "AzureML-PyTorch-1.6-CPU",
    "AzureML-pytorch-1.10-ubuntu18.04-py38-cuda11-gpu",
    "AzureML-pytorch-1.7-ubuntu18.04-py37-cuda11-gpu",
    "AzureML-acpt-pytorch-1.13-cuda11.7",
    "AzureML-acpt-pytorch-2.2-cuda12.1",
    "AzureML-Minimal",
]


def alias_key(name: str) -> str | None:
    """'TrainHub-PyTorch-1.6-GPU' and 'AzureML-pytorch-1.6-gpu' → 'pytorch-1.6-gpu'; None for
    a name with neither prefix."""
    lowered = name.lower()
    for prefix in (RESERVED_PREFIX.lower(), AZURE_PREFIX.lower()):
        if lowered.startswith(prefix):
            return lowered[len(prefix) :]
    return None


@dataclass(frozen=True)
class Seeded:
    name: str
    spec: dict[str, Any]
    description: str
    answers_to: list[str] = field(default_factory=list)
    earlier_specs: tuple[dict[str, Any], ...] = ()


SEEDED = (
    Seeded(PYTORCH_CPU_NAME, PYTORCH_CPU_SPEC, PYTORCH_CPU_DESCRIPTION),
    Seeded(PYTORCH_NAME, PYTORCH_SPEC, PYTORCH_DESCRIPTION, PYTORCH_ANSWERS_TO, PYTORCH_EARLIER_SPECS),
)
