"""Data handed to a run as an argument: what `ds.path('fowl').as_mount()`, a datastore itself and
`dataset.as_named_input('fowl').as_mount()` turn into. ScriptRunConfig calls `_to_argument()`;
the marker it returns names the data, the server records it as an input of the run and the node
replaces it with a local read-only path."""

from __future__ import annotations

import base64
import json
from typing import Any

MOUNT = "mount"
DOWNLOAD = "download"


def marker(description: dict[str, Any]) -> str:
    encoded = base64.urlsafe_b64encode(json.dumps(description, sort_keys=True).encode()).decode()
    return "{{trainhub-input:" + encoded + "}}"


class DataInput:
    """Something that becomes a local path on the node: its `mode` is mount (the node's shared
    read-only copy) or download (a copy in the run's own folder, also read-only)."""

    mode = MOUNT

    def _description(self) -> dict[str, Any]:
        raise NotImplementedError

    def _with_mode(self, mode: str) -> Any:
        raise NotImplementedError

    def as_mount(self, path_on_compute: str | None = None) -> Any:
        return self._with_mode(MOUNT)

    def as_download(self, path_on_compute: str | None = None, overwrite: bool = False) -> Any:
        return self._with_mode(DOWNLOAD)

    def _to_argument(self) -> str:
        return marker(dict(self._description(), mode=self.mode))

    def __str__(self) -> str:
        return self._to_argument()
