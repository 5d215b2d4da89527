"""Where an environment's packages may come from: local paths and file:// never, direct URLs only when
the administrator allows them (TRAINHUB_ALLOW_DIRECT_URL_REQUIREMENTS), refused at creation through
every door (API, admin form, the builder on the node) with a message naming the requirement."""

from __future__ import annotations

import pytest

from tests.conftest import api_client, issue_token
from tests.environments.test_environment_admin import ADD_URL, form
from trainhub.environments.builders import BuildError, materialise_environment
from trainhub.environments.models import Environment, EnvironmentVersion
from trainhub.environments.spec import SpecError, normalise_spec

BASE = "/api/v1/workspaces/birds/environments"

LOCAL = [
    "pkg @ file:///tmp/somewhere",
    "pkg @ FILE:///tmp/somewhere",
    "pkg @ git+file:///tmp/repo",
    "pkg @ /abs/path",
    "pkg@./x",
    "./x",
    "../x",
    "/abs/path",
    "~/x",
    "x/y",
    "dist/pkg-1.0-py3-none-any.whl",
    "pkg-1.0.tar.gz",
    "file:///tmp/somewhere",
]
OPTIONS = [
    "-e /tmp/x",
    "--editable=/tmp/x",
    "-f /tmp/wheels",
    "--find-links /tmp/wheels",
    "-i http://127.0.0.1:9/simple",
    "--index-url http://127.0.0.1:9/simple",
    "--extra-index-url http://127.0.0.1:9/simple",
    "-r other.txt",
    "-c constraints.txt",
]
DIRECT = [
    "pkg @ http://127.0.0.1:8000/pkg.tar.gz",
    "pkg @ https://example.org/pkg-1.0-py3-none-any.whl",
    "pkg @ git+https://example.org/pkg.git",
    "pkg @ git+ssh://git@example.org/pkg.git",
]


@pytest.mark.parametrize("entry", LOCAL)
@pytest.mark.parametrize("allowed", [False, True])
def test_a_local_path_is_refused_whatever_the_setting(entry, allowed):
    with pytest.raises(SpecError) as error:
        normalise_spec({"pip": ["six", entry]}, allow_direct_urls=allowed)
    assert repr(entry) in str(error.value) and "local paths and file:// URLs are refused" in str(error.value)


@pytest.mark.parametrize("entry", OPTIONS)
def test_an_installer_option_is_refused(entry):
    with pytest.raises(SpecError) as error:
        normalise_spec({"pip": [entry]}, allow_direct_urls=True)
    assert f"{entry!r} is a pip option" in str(error.value)


@pytest.mark.parametrize("entry", DIRECT)
def test_a_direct_url_is_refused_unless_allowed(entry):
    with pytest.raises(SpecError) as error:
        normalise_spec({"pip": [entry]})
    assert repr(entry) in str(error.value) and "TRAINHUB_ALLOW_DIRECT_URL_REQUIREMENTS" in str(error.value)
    assert normalise_spec({"pip": [entry]}, allow_direct_urls=True)["pip"] == [entry]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("https://example.org/pkg.whl", "a URL without a package name"),
        ("git+https://example.org/pkg.git", "a URL without a package name"),
        ("pkg @ https://example.org/${DJANGO_SECRET_KEY}", "refers to an environment variable"),
    ],
)
def test_a_bare_url_or_a_variable_is_refused_even_when_allowed(entry, message):
    with pytest.raises(SpecError) as error:
        normalise_spec({"pip": [entry]}, allow_direct_urls=True)
    assert message in str(error.value)


def test_a_conda_url_or_path_is_refused():
    for entry in ("https://conda.example.org/x.tar.bz2", "/tmp/x.tar.bz2", "./x"):
        with pytest.raises(SpecError, match="in conda is a URL or a path"):
            normalise_spec({"conda": [entry]})


def test_a_dockerfile_add_of_a_url_is_refused_and_a_local_add_is_not():
    for dockerfile in (
        "FROM base\nADD http://127.0.0.1:6379/ /x",
        "FROM base\nadd --chown=1 \\\n  https://example.org/x.tar /x",
        "FROM base\nADD git@example.org:a/b.git /src",
    ):
        with pytest.raises(SpecError, match="fetches a URL with ADD"):
            normalise_spec({"docker": {"enabled": True, "base_dockerfile": dockerfile}})
    kept = "FROM base\nADD files.tar /x\nRUN echo https://example.org"
    assert normalise_spec({"docker": {"base_dockerfile": kept}})["docker"]["base_dockerfile"] == kept


@pytest.mark.django_db
def test_the_api_refuses_them_by_name_and_registers_nothing(workspace, contributor, settings):
    api = api_client(issue_token(workspace, contributor))
    for entry in ("pkg @ file:///tmp/somewhere", "pkg @ http://127.0.0.1:8000/pkg.tar.gz", "-e /tmp/x"):
        response = api.post(
            BASE, {"name": "birds-env", "spec": {"pip": ["six", entry]}}, content_type="application/json"
        )
        assert response.status_code == 400 and repr(entry) in response.json()["detail"]
    assert not Environment.objects.filter(workspace=workspace).exists()
    assert not EnvironmentVersion.objects.exists()

    settings.TRAINHUB_ALLOW_DIRECT_URL_REQUIREMENTS = True
    direct = {"pip": ["pkg @ https://example.org/pkg-1.0-py3-none-any.whl"]}
    response = api.post(BASE, {"name": "birds-env", "spec": direct}, content_type="application/json")
    assert response.status_code == 201, response.content
    local = {"pip": ["pkg @ file:///tmp/somewhere"]}
    response = api.post(BASE, {"name": "birds-env", "spec": local}, content_type="application/json")
    assert response.status_code == 400 and "file:// URLs are refused" in response.json()["detail"]
    assert EnvironmentVersion.objects.count() == 1


@pytest.mark.django_db
def test_the_admin_form_shows_the_refusal_and_saves_nothing(client_for, staff):
    response = client_for(staff).post(ADD_URL, form(pip="six\npkg @ file:///tmp/somewhere\n"))
    assert response.status_code == 200
    assert "local paths and file:// URLs are refused" in response.content.decode().replace("&#x27;", "'")
    assert not Environment.objects.filter(name="TrainHub-Six").exists()


def test_the_node_refuses_to_build_a_stored_spec_it_would_not_admit(tmp_path):
    """A spec stored before this check (or under another setting) is not built either."""
    with pytest.raises(BuildError) as error:
        materialise_environment(
            {"pip": ["pkg @ http://127.0.0.1:9/pkg.tar.gz"]}, cache_dir=tmp_path / "envs", log=lambda _l: None
        )
    assert "is a direct URL" in error.value.reason
    assert not any((tmp_path / "envs").glob("[0-9a-f]*"))
