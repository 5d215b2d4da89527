"""What the registry shows of a version that is an MLflow model: its MLmodel file, read as data.

The MLmodel file is a member's YAML: it is read with a safe load (plain data, no Python objects),
only when it is small, and only its flavors, MLflow version and signature are kept as text. Nothing
of the model is loaded or unpickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import yaml
from django.core.files.storage import default_storage

from registry.models import ModelVersion

MLMODEL = "MLmodel"
MAX_MLMODEL_BYTES = 256 * 1024
MAX_COLUMNS = 200
MAX_TEXT = 200


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    shape: str


@dataclass(frozen=True)
class MlflowModel:
    flavors: list[str]
    mlflow_version: str
    inputs: list[Column] = field(default_factory=list)
    outputs: list[Column] = field(default_factory=list)

    @property
    def has_signature(self) -> bool:
        return bool(self.inputs or self.outputs)


def _text(value: Any) -> str:
    return "" if value is None else str(value)[:MAX_TEXT]


def _columns(spec: Any) -> list[Column]:
    # A signature's inputs and outputs are JSON strings in MLmodel: a list of column (or tensor) specs.
    if not isinstance(spec, str):
        return []
    try:
        items = json.loads(spec)
    except ValueError:
        return []
    if not isinstance(items, list):
        return []
    found = []
    for index, item in enumerate(items[:MAX_COLUMNS]):
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "tensor" and isinstance(item.get("tensor-spec"), dict):
            kind = f"tensor of {_text(item['tensor-spec'].get('dtype'))}"
            shape = item["tensor-spec"].get("shape")
        else:
            shape = item.get("shape")
        found.append(
            Column(
                name=_text(item.get("name")) or f"#{index}",
                type=_text(kind),
                shape=_text(tuple(shape) if isinstance(shape, list) else shape or ""),
            )
        )
    return found


def mlflow_model_of(version: ModelVersion) -> MlflowModel | None:
    """The version's MLflow model description, when its root holds an MLmodel file; else None."""
    path = f"{version.root}/{MLMODEL}" if version.is_folder else version.root
    found = version.files.filter(path=path, size__lte=MAX_MLMODEL_BYTES).first()
    if found is None or not path.endswith(MLMODEL):
        return None
    try:
        with default_storage.open(found.storage_name, "rb") as handle:
            data = yaml.safe_load(handle.read(MAX_MLMODEL_BYTES))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("flavors"), dict):
        return None
    signature = data.get("signature")
    if not isinstance(signature, dict):
        signature = {}
    return MlflowModel(
        flavors=[_text(name) for name in list(data["flavors"])[:20]],
        mlflow_version=_text(data.get("mlflow_version")),
        inputs=_columns(signature.get("inputs")),
        outputs=_columns(signature.get("outputs")),
    )
