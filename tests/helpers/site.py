"""A TrainHub site that lasts a whole test module: users, a workspace, a token, the curated
environment, nodes. Slow modules share one instead of rebuilding it per test; the database
is flushed when the module ends, as a transactional test would leave it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.processes import NodeProcess, wait_until


@dataclass
class Site:
    url: str
    token: str
    owner: object
    workspace: object
    blocker: object
    log_dir: Path
    nodes: list[NodeProcess] = field(default_factory=list)

    def write_config(self, folder: Path) -> Path:
        """The config.json the owner downloads from the workspace page, token included."""
        path = folder / "config.json"
        with self.blocker.unblock():
            path.write_bytes(download_config(self.owner, self.url))
        return path

    def start_nodes(self, cluster_name: str, count: int) -> list[NodeProcess]:
        """`count` nodes for a cluster made through the API, started by hand as people do."""
        return self.start_cluster_nodes({cluster_name: count})

    def start_cluster_nodes(self, counts: dict[str, int]) -> list[NodeProcess]:
        """Nodes for several clusters at once ({cluster name: count}), all started before waiting
        for any: each takes seconds to come up, and they come up side by side."""
        from trainhub.compute.models import ComputeCluster, Node

        with self.blocker.unblock():
            clusters = {
                name: ComputeCluster.objects.select_related("workspace").get(workspace=self.workspace, name=name)
                for name in counts
            }
            started = [
                NodeProcess(cluster, self.log_dir, TRAINHUB_NODE_SERVER_URL=self.url).start(wait=False)
                for name, cluster in clusters.items()
                for _ in range(counts[name])
            ]
            self.nodes += started
            for name, cluster in clusters.items():
                wait_until(
                    lambda cluster=cluster, count=counts[name]: (
                        Node.objects.filter(cluster=cluster, state="idle").count() >= count
                    ),
                    90,
                    message=f"{counts[name]} idle nodes in {name}",
                )
        return started


def download_config(user, server_url: str) -> bytes:
    """POST the workspace page's config.json form with "include a token", as the portal does."""
    from django.test import Client

    client = Client()
    client.force_login(user)
    response = client.post("/w/birds/config.json", {"include_token": "on"}, HTTP_HOST=server_url.split("//", 1)[1])
    assert response.status_code == 200, response.status_code
    return response.content


@contextmanager
def module_site(blocker, server, log_dir: Path) -> Iterator[Site]:
    from django.core.management import call_command
    from django.db import connection

    from tests.conftest import issue_token, make_user
    from trainhub.environments.services import seed_demo
    from trainhub.workspaces import services

    with blocker.unblock():
        # pytest-django creates the test database only when some selected test asks for `db`.
        assert "auth_user" in connection.introspection.table_names(), (
            "No test database: select at least one test of this module that uses the db fixture too."
        )
        owner = make_user("olivia")
        workspace = services.workspace_create(name="birds", user=owner, description="Fowl classifiers")
        seed_demo(workspace=workspace, user=owner)
        token = issue_token(workspace, owner)
    site = Site(url=server.url, token=token, owner=owner, workspace=workspace, blocker=blocker, log_dir=log_dir)
    try:
        yield site
    finally:
        for node in site.nodes:
            node.stop()
        with blocker.unblock():
            call_command("flush", interactive=False, verbosity=0)
