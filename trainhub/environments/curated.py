"""The curated environments TrainHub ships, seeded by `make run` (admins add more in the admin)."""

from __future__ import annotations

from typing import Any

RESERVED_PREFIX = "TrainHub-"
CURATED_NEEDS_PREFIX = "A curated environment's name must start with '" + RESERVED_PREFIX + "'."

PYTORCH_CPU_NAME = "TrainHub-PyTorch-2.13-CPU"
PYTORCH_CPU_DESCRIPTION = "PyTorch 2.13.0 (CPU build) and NumPy on Python 3.11."
PYTORCH_CPU_SPEC: dict[str, Any] = {"python": "3.11", "pip": ["torch==2.13.0", "numpy"]}


def is_reserved(name: str) -> bool:
    # Any capitalisation: "trainhub-pytorch" next to "TrainHub-PyTorch" would fool people as well.
    return name.lower().startswith(RESERVED_PREFIX.lower())
