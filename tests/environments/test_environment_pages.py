"""The environment pages: the list, one environment, one version with its builds, and cloning."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.environments.conftest import SIX_SPEC
from trainhub.environments import services
from trainhub.environments.curated import PYTORCH_CPU_NAME
from trainhub.environments.models import BuildStatus, Environment
from trainhub.workspaces.models import Role
from trainhub.workspaces.permissions import Access

pytestmark = pytest.mark.django_db


@pytest.fixture
def birds_env(workspace, contributor):
    access = Access(workspace=workspace, role=Role.CONTRIBUTOR)
    spec = dict(
        SIX_SPEC,
        environment_variables={"OMP_NUM_THREADS": "2"},
        docker={"enabled": True, "base_image": "python:3.11-slim"},
    )
    return services.environment_register(access=access, user=contributor, name="birds-env", spec=spec).version


def test_the_list_shows_curated_and_own_environments_only(
    client_for, reader, curated, birds_env, other_workspace, outsider
):
    services.environment_register(
        access=Access(workspace=other_workspace, role=Role.OWNER),
        user=outsider,
        name="secret-env",
        spec=SIX_SPEC,
    )
    body = client_for(reader).get("/w/birds/environments/").content.decode()
    assert PYTORCH_CPU_NAME in body and "birds-env" in body
    assert "secret-env" not in body
    assert 'href="/w/birds/environments/"' in body  # the workspace's navigation links here


def test_the_environment_page_lists_its_versions(client_for, reader, birds_env, contributor):
    services.environment_register(
        access=Access(workspace=birds_env.environment.workspace, role=Role.CONTRIBUTOR),
        user=contributor,
        name="birds-env",
        spec={"pip": ["six", "idna"]},
    )
    body = client_for(reader).get("/w/birds/environments/birds-env/").content.decode()
    assert "/w/birds/environments/birds-env/versions/1/" in body
    assert "/w/birds/environments/birds-env/versions/2/" in body
    assert "Environment.get(workspace=ws, name='birds-env')" in body


def test_the_version_page_shows_the_full_spec_who_made_it_and_its_builds(client_for, reader, birds_env):
    build = services.record_build(spec_hash=birds_env.spec_hash, node="node-7", version=birds_env)
    services.build_finish(
        build=build,
        status=BuildStatus.FAILED,
        log="Resolved 1 package\nerror: disk full\n",
        reason="The requirements cannot be installed: disk full",
    )
    body = client_for(reader).get("/w/birds/environments/birds-env/versions/1/").content.decode()
    for text in [
        "3.11",
        "<code>six</code>",
        "OMP_NUM_THREADS=2",
        "python:3.11-slim",
        "by carl",
        "node-7",
        "failed",
        "The requirements cannot be installed: disk full",
        "error: disk full",
        "python=3.11",
        birds_env.spec_hash,
    ]:
        assert text in body, text


def test_a_curated_version_page_works_from_any_workspace(client_for, outsider, other_workspace, curated):
    body = client_for(outsider).get(f"/w/elsewhere/environments/{PYTORCH_CPU_NAME}/versions/1/").content.decode()
    assert "torch==2.13.0" in body and "Not built yet" in body


def test_a_contributor_clones_a_curated_environment(client_for, contributor, workspace, curated):
    response = client_for(contributor).post(
        f"/w/birds/environments/{PYTORCH_CPU_NAME}/clone/", {"new_name": "my-torch", "version": 1}
    )
    assert response.status_code == 302 and response["Location"] == "/w/birds/environments/my-torch/"
    clone = Environment.objects.get(name="my-torch")
    assert clone.workspace.name == "birds" and clone.versions.get().spec["pip"] == [
        "torch==2.13.0",
        "numpy",
    ]


def test_cloning_into_the_reserved_prefix_shows_the_error(client_for, contributor, workspace, curated):
    response = client_for(contributor).post(
        f"/w/birds/environments/{PYTORCH_CPU_NAME}/clone/",
        {"new_name": "TrainHub-Mine", "version": 1},
    )
    assert response.status_code == 400
    assert "reserved for curated environments" in response.content.decode()
    assert not Environment.objects.filter(name="TrainHub-Mine").exists()


def test_a_reader_cannot_clone(client_for, reader, workspace, curated):
    response = client_for(reader).post(f"/w/birds/environments/{PYTORCH_CPU_NAME}/clone/", {"new_name": "x"})
    assert response.status_code == 403
    assert (
        "Clone into this workspace"
        not in client_for(reader).get(f"/w/birds/environments/{PYTORCH_CPU_NAME}/").content.decode()
    )


PAGES = [
    "/w/birds/environments/",
    "/w/birds/environments/birds-env/",
    "/w/birds/environments/birds-env/versions/1/",
    f"/w/birds/environments/{PYTORCH_CPU_NAME}/",
    f"/w/birds/environments/{PYTORCH_CPU_NAME}/versions/1/",
]


@pytest.mark.parametrize("url", PAGES)
def test_outsiders_get_404_on_every_page(client_for, outsider, birds_env, curated, url):
    assert client_for(outsider).get(url).status_code == 404


def test_outsiders_cannot_clone_through_the_page(client_for, outsider, birds_env):
    response = client_for(outsider).post("/w/birds/environments/birds-env/clone/", {"new_name": "stolen"})
    assert response.status_code == 404
    assert not Environment.objects.filter(name="stolen").exists()


def test_another_workspaces_environment_is_404_in_mine(client_for, owner, other_workspace, outsider):
    services.environment_register(
        access=Access(workspace=other_workspace, role=Role.OWNER),
        user=outsider,
        name="secret-env",
        spec=SIX_SPEC,
    )
    assert client_for(owner).get("/w/birds/environments/secret-env/").status_code == 404


def test_anonymous_visitors_are_asked_to_sign_in(workspace):
    response = Client().get("/w/birds/environments/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_the_pages_say_an_environment_is_user_managed(client_for, reader, workspace, contributor):
    access = Access(workspace=workspace, role=Role.CONTRIBUTOR)
    spec = dict(SIX_SPEC, user_managed_dependencies=True)
    services.environment_register(access=access, user=contributor, name="mine", spec=spec)
    services.environment_register(access=access, user=contributor, name="mine", spec=SIX_SPEC)
    client = client_for(reader)
    versions = client.get("/w/birds/environments/mine/").content.decode()
    assert versions.count("(user-managed)") == 1
    first = client.get("/w/birds/environments/mine/versions/1/").content.decode()
    assert "user-managed: on <code>compute_target='local'</code> a run uses the submitter" in first
    second = client.get("/w/birds/environments/mine/versions/2/").content.decode()
    assert "user-managed" not in second and "built from the packages above" in second
