"""RQ jobs of the environments app: thin callers of its services."""

from __future__ import annotations

import socket
from pathlib import Path

from django.conf import settings

from trainhub.environments import services
from trainhub.environments.models import EnvironmentVersion


def build_version_job(version_pk: int) -> str:
    """Build a version on the machine of the server's worker (the admin's "build now")."""
    version = EnvironmentVersion.objects.select_related("environment").get(pk=version_pk)
    build = services.build_version(
        version=version,
        cache_dir=Path(settings.TRAINHUB_ENV_CACHE_DIR),
        node=f"{socket.gethostname()} (server worker)",
    )
    return build.status
