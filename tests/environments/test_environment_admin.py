"""Curating in the admin site: create, edit (a new version), deprecate, build now; staff only."""

from __future__ import annotations

import re

import django_rq
import pytest

from trainhub.environments import services
from trainhub.environments.curated import CURATED_NEEDS_PREFIX, PYTORCH_CPU_NAME
from trainhub.environments.models import BuildStatus, Environment, EnvironmentBuild
from trainhub.sdk.environment import AZUREML_LEFT_OUT

pytestmark = pytest.mark.django_db

ADD_URL = "/admin/environments/environment/add/"
CHANGELIST_URL = "/admin/environments/environment/"


def form(environment=None, **fields):
    """The admin form's POST data, with the (read-only) versions inline's management fields."""
    versions = list(environment.versions.order_by("-version")) if environment else []
    data = {
        "name": "TrainHub-Six",
        "description": "Six, for tests.",
        "python": "3.11",
        "pip": "six\n",
        "conda": "",
        "channels": "",
        "docker_base_image": "",
        "docker_base_dockerfile": "",
        "environment_variables": "",
        "versions-TOTAL_FORMS": str(len(versions)),
        "versions-INITIAL_FORMS": str(len(versions)),
        "versions-MIN_NUM_FORMS": "0",
        "versions-MAX_NUM_FORMS": "1000",
    }
    for i, version in enumerate(versions):
        data[f"versions-{i}-id"] = str(version.pk)
        data[f"versions-{i}-environment"] = str(environment.pk)
    data.update(fields)
    return data


def test_staff_create_a_curated_environment(client_for, staff):
    response = client_for(staff).post(ADD_URL, form(environment_variables="OMP_NUM_THREADS=1"))
    assert response.status_code == 302, response.content.decode()[:3000]
    environment = Environment.objects.get(name="TrainHub-Six")
    assert environment.is_curated
    version = environment.versions.get()
    assert version.version == 1 and version.created_by == staff
    assert version.spec["pip"] == ["six"] and version.spec["environment_variables"] == {"OMP_NUM_THREADS": "1"}


def test_the_cloud_sdks_pip_packages_are_left_out_with_the_sdks_warning(client_for, staff):
    pip = "six\nazureml-defaults\nazureml-core==1.48.0\n"
    response = client_for(staff).post(ADD_URL, form(pip=pip), follow=True)
    assert Environment.objects.get(name="TrainHub-Six").versions.get().spec["pip"] == ["six"]
    shown = [str(message) for message in response.context["messages"]]
    assert AZUREML_LEFT_OUT.format(where="pip", packages="azureml-defaults, azureml-core==1.48.0") in shown


def test_editing_the_spec_makes_a_new_version_and_keeps_the_old(client_for, staff, curated):
    client = client_for(staff)
    url = f"/admin/environments/environment/{curated.pk}/change/"
    page = client.get(url).content.decode()
    assert "torch==2.13.0" in page  # the form starts from the latest spec
    response = client.post(url, form(curated, name=PYTORCH_CPU_NAME, pip="torch==2.13.0\nnumpy\nsix\n"))
    assert response.status_code == 302, response.content.decode()[:3000]
    assert [v.spec["pip"] for v in curated.versions.order_by("version")] == [
        ["torch==2.13.0", "numpy"],
        ["torch==2.13.0", "numpy", "six"],
    ]
    # Saving again without a change adds nothing.
    client.post(url, form(curated, name=PYTORCH_CPU_NAME, pip="torch==2.13.0\nnumpy\nsix\n"))
    assert curated.versions.count() == 2


def test_a_curated_name_needs_the_prefix(client_for, staff):
    response = client_for(staff).post(ADD_URL, form(name="six-env"))
    assert response.status_code == 200
    assert CURATED_NEEDS_PREFIX.replace("'", "&#x27;") in response.content.decode()
    assert not Environment.objects.exists()


def test_non_staff_cannot_reach_the_admin(client_for, contributor):
    client = client_for(contributor)
    assert client.get(ADD_URL).status_code == 302
    response = client.post(ADD_URL, form())
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert not Environment.objects.exists()


def test_staff_mark_an_environment_deprecated(client_for, staff, curated):
    client = client_for(staff)
    client.post(CHANGELIST_URL, {"action": "mark_deprecated", "_selected_action": [curated.pk]})
    curated.refresh_from_db()
    assert curated.deprecated


def test_build_now_builds_on_the_servers_worker_and_records_it(
    client_for, staff, django_capture_on_commit_callbacks, settings, tmp_path
):
    settings.TRAINHUB_ENV_CACHE_DIR = str(tmp_path / "envs")
    client = client_for(staff)
    client.post(ADD_URL, form())
    environment = Environment.objects.get(name="TrainHub-Six")
    queue = django_rq.get_queue("default")
    before = set(queue.job_ids)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(CHANGELIST_URL, {"action": "build_now", "_selected_action": [environment.pk]})
    assert response.status_code == 302
    [job_id] = set(queue.job_ids) - before
    job = queue.fetch_job(job_id)
    assert job.func_name == "trainhub.environments.jobs.build_version_job"
    queue.remove(job)
    # What the server's worker does with it, in this process so it sees this test's database.
    assert job.perform() == BuildStatus.SUCCEEDED
    build = EnvironmentBuild.objects.get()
    assert build.node.endswith("(server worker)") and build.version == environment.versions.get()
    assert "six" in build.log and build.finished_at is not None
    page = client_for(staff).get(f"/admin/environments/environmentbuild/{build.pk}/change/")
    assert page.status_code == 200


def test_staff_set_the_cloud_names_a_curated_environment_answers_to(client_for, staff, curated):
    client = client_for(staff)
    response = client.post(ADD_URL, form(answers_to="AzureML-Six-1.0\nazureml-six-1.0\nTrainHub-six-2.0\n"))
    assert response.status_code == 302, response.content.decode()[:3000]
    six = Environment.objects.get(name="TrainHub-Six")
    assert six.answers_to == ["AzureML-Six-1.0", "TrainHub-six-2.0"]  # the same name twice is kept once

    # A name another curated environment answers to, or one without the prefix, is refused.
    pytorch = Environment.objects.get(name="TrainHub-PyTorch-2.13")
    url = f"/admin/environments/environment/{six.pk}/change/"
    response = client.post(url, form(six, answers_to=f"{pytorch.answers_to[0]}\n"))
    assert response.status_code == 200 and "already finds the curated environment TrainHub-PyTorch-2.13" in (
        response.content.decode().replace("&#x27;", "'")
    )
    response = client.post(url, form(six, answers_to="six-1.0\n"))
    assert "is not a cloud curated name" in response.content.decode().replace("&#x27;", "'")
    six.refresh_from_db()
    assert six.answers_to == ["AzureML-Six-1.0", "TrainHub-six-2.0"]


def test_a_user_managed_environment_stays_user_managed_in_its_next_version(client_for, staff):
    spec = {"python": "3.11", "pip": ["six"], "user_managed_dependencies": True}
    six = services.curated_environment_save(user=staff, name="TrainHub-Six", spec=spec).version.environment
    client = client_for(staff)
    url = f"/admin/environments/environment/{six.pk}/change/"
    page = client.get(url).content.decode()
    assert re.search(r'<input type="checkbox" name="user_managed_dependencies"[^>]* checked>', page)
    response = client.post(url, form(six, pip="six\nidna\n", user_managed_dependencies="on"))
    assert response.status_code == 302, response.content.decode()[:3000]
    second = six.versions.get(version=2).spec
    assert second["pip"] == ["six", "idna"] and second["user_managed_dependencies"] is True
    # Unticked, the next version is built as any other (and hashes as one without the key).
    client.post(url, form(six, pip="six\nidna\n"))
    assert "user_managed_dependencies" not in six.versions.get(version=3).spec
