"""TrainHub's Python SDK: the names and signatures of the cloud guide's `azureml.core`.

Imports are lazy so that `from trainhub.sdk import Run` inside a training script needs
nothing beyond the standard library.
"""

from __future__ import annotations

import importlib
from typing import Any

# The SDK's version (the cloud SDK's notebooks print `azureml.core.VERSION` first).
VERSION = "0.1.0"

_EXPORTS = {
    "Workspace": "trainhub.sdk.workspace",
    "Experiment": "trainhub.sdk.experiment",
    "Environment": "trainhub.sdk.environment",
    "ComputeTarget": "trainhub.sdk.compute",
    "AmlCompute": "trainhub.sdk.compute",
    "SlurmCompute": "trainhub.sdk.compute",
    "ScriptRunConfig": "trainhub.sdk.script_run_config",
    "Run": "trainhub.sdk.run",
    "Model": "trainhub.sdk.model",
    "Datastore": "trainhub.sdk.datastore",
    "Dataset": "trainhub.sdk.dataset",
    "InferenceConfig": "trainhub.sdk.model",
    "Webservice": "trainhub.sdk.webservice",
    "AciWebservice": "trainhub.sdk.webservice",
    "AksWebservice": "trainhub.sdk.webservice",
    "LocalWebservice": "trainhub.sdk.webservice",
}

__all__ = sorted([*_EXPORTS, "VERSION"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'trainhub.sdk' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
