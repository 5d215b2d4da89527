"""`run.register_model(...)`: the registry side of a run (standard library only at import time)."""

from __future__ import annotations

import os
from pathlib import PurePosixPath
from typing import Any


class RunRegistryMixin:
    """Registers a file or folder of a run as the next version of a model.

    Outside the run, the server references the run's stored files (nothing is uploaded). Inside
    the running script the outputs are not stored yet (they are copied when the script ends),
    so the file is uploaded from the working folder, with the run as its lineage."""

    id: str
    _ws: Any

    def register_model(
        self,
        model_name: str,
        model_path: str | None = None,
        tags: dict[str, Any] | None = None,
        properties: dict[str, Any] | None = None,
        description: str | None = None,
        model_framework: str | None = None,
        model_framework_version: str | None = None,
        **_ignored: Any,
    ) -> Any:
        # Imported at a run's first registration: a run's ranks start without the registry's modules.
        from trainhub.sdk.model import Model, register_local

        workspace = self._ws
        if model_path is None:
            model_path = model_name
        local = self._local_output(model_path)
        if local is not None:
            return register_local(
                workspace,
                local,
                model_name,
                run_id=self.id,
                tags=tags,
                properties=properties,
                description=description,
                model_framework=model_framework,
                model_framework_version=model_framework_version,
                show_progress=False,
            )
        details = workspace._store.register_model_version(
            model_name,
            {
                "run_id": self.id,
                "model_path": str(model_path),
                "tags": dict(tags or {}),
                "properties": dict(properties or {}),
                "description": description or "",
                "framework": model_framework or "PyTorch",
                "framework_version": model_framework_version or "",
            },
        )
        return Model(workspace, _details=details)

    def _local_output(self, model_path: str) -> str | None:
        """The path in this script's working folder, when this is the current run and it is."""
        if os.environ.get("TRAINHUB_RUN_ID") != self.id:
            return None
        path = PurePosixPath(str(model_path).replace(os.sep, "/"))
        if path.is_absolute() or ".." in path.parts or os.path.islink(str(path)):
            return None  # the server refuses it with the reason
        return str(path) if os.path.exists(str(path)) else None
