"""The demo `make run` seeds: an administrator, a workspace `demo`, and a config.json for it."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from trainhub.compute.services import seed_demo as seed_compute
from trainhub.environments.services import seed_demo as seed_environments
from trainhub.workspaces import selectors, services
from trainhub.workspaces.models import Membership, Role, Workspace
from trainhub.workspaces.permissions import Access

ADMIN_USERNAME = "admin"
DEMO_WORKSPACE = "demo"


@dataclass(frozen=True)
class Demo:
    username: str
    password: str
    workspace: str
    config_path: Path


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


@transaction.atomic
def seed_demo(*, data_dir: Path | None = None, server_url: str | None = None) -> Demo:
    """Idempotent: a second call reuses the user, workspace and token it made the first time."""
    data_dir = data_dir or settings.DATA_DIR
    server_url = server_url or settings.TRAINHUB_PUBLIC_URL
    password_file = data_dir / "admin-password.txt"
    User = get_user_model()
    admin = User.objects.filter(username=ADMIN_USERNAME).first()
    if admin is None:
        password = secrets.token_urlsafe(12)
        admin = User.objects.create_superuser(ADMIN_USERNAME, "admin@localhost", password)
        _write_private(password_file, password + "\n")
    else:
        password = password_file.read_text().strip() if password_file.exists() else "(unchanged)"

    workspace = Workspace.objects.filter(name=DEMO_WORKSPACE).first()
    if workspace is None:
        workspace = services.workspace_create(
            name=DEMO_WORKSPACE, user=admin, description="The demo workspace make run seeded."
        )
    Membership.objects.get_or_create(workspace=workspace, user=admin, defaults={"role": Role.OWNER})

    config_path = data_dir / "config.json"
    token = _reusable_token(config_path, workspace)
    if token is None:
        token = services.token_create(
            access=Access(workspace=workspace, role=Role.OWNER), user=admin, name="make run demo"
        ).secret
    config = services.config_json(workspace=workspace, server_url=server_url, token=token)
    _write_private(config_path, json.dumps(config, indent=2) + "\n")

    for seed in _app_seeds():
        seed(workspace=workspace, user=admin)
    return Demo(ADMIN_USERNAME, password, workspace.name, config_path)


def _reusable_token(config_path: Path, workspace: Workspace) -> str | None:
    try:
        token = json.loads(config_path.read_text()).get("token")
    except (OSError, ValueError):
        return None
    api_token = selectors.active_token(token or "")
    return token if api_token is not None and api_token.workspace_id == workspace.pk else None


def _app_seeds() -> list:
    """Each app that ships demo content adds its seeding function here."""
    return [seed_environments, seed_compute]
