"""What a deployment sends for an inference config (Model.deploy, Webservice.update): its entry
script's folder packed and uploaded when the server lacks it, and its environment registered."""

from __future__ import annotations

import os
from typing import Any

from trainhub.sdk import exceptions
from trainhub.sdk.environment import Environment
from trainhub.sdk.script_run_config import DEFAULT_ENVIRONMENT


def inference_payload(config: Any, workspace: Any) -> dict[str, Any]:
    """The deployment's entry script, snapshot and environment for `config`, an InferenceConfig
    (trainhub/sdk/model.py)."""
    if not config.entry_script:
        environment = config.environment
        return {
            "entry_script": None,
            "snapshot": None,
            "environment": _environment_ref(environment, workspace) if environment is not None else None,
        }
    # Imported here: packing needs pathspec, which the in-run SDK (standard library only) lacks, and
    # model.py, which imports this module, is imported inside runs (scoring scripts use Model).
    from trainhub.sdk._snapshot import pack_source_directory
    from trainhub.sdk.experiment import upload_packed

    source = config.source_directory or "."
    if not os.path.isfile(os.path.join(source, config.entry_script)):
        raise exceptions.UserErrorException(
            f"The entry script {config.entry_script!r} is not in source_directory {source!r}."
        )
    environment = config.environment or Environment.get(workspace=workspace, name=DEFAULT_ENVIRONMENT)
    packed = pack_source_directory(source)
    packed.say_left_out()
    try:
        try:
            workspace._store.get_snapshot(packed.sha256)
        except exceptions.NotFoundError:
            upload_packed(workspace, packed, show_progress=False)
    finally:
        packed.discard()
    return {
        "entry_script": config.entry_script.replace(os.sep, "/"),
        "snapshot": packed.sha256,
        "environment": _environment_ref(environment, workspace),
    }


def _environment_ref(environment: Any, workspace: Any) -> dict[str, Any]:
    name, version = environment._ensure_registered(workspace)
    return {"name": name, "version": version}
