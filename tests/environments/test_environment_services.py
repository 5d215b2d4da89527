"""Registering, versioning, curating and recording builds of environments, through the services."""

from __future__ import annotations

import re

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from tests.environments.conftest import SIX_SPEC
from trainhub.environments import curated as shipped
from trainhub.environments import selectors, services
from trainhub.environments.curated import CURATED_NEEDS_PREFIX, PYTORCH_CPU_NAME
from trainhub.environments.models import BuildStatus, Environment, EnvironmentVersion
from trainhub.environments.spec import normalise_spec
from trainhub.ops.demo import seed_demo as seed_make_run_demo
from trainhub.workspaces.models import Role
from trainhub.workspaces.permissions import READ_ONLY_MESSAGE, Access

pytestmark = pytest.mark.django_db


@pytest.fixture
def member(workspace):
    return Access(workspace=workspace, role=Role.CONTRIBUTOR)


def register(member, user, name="birds-env", spec=SIX_SPEC):
    return services.environment_register(access=member, user=user, name=name, spec=spec)


def test_a_changed_spec_registers_the_next_version(member, contributor):
    first = register(member, contributor)
    second = register(member, contributor, spec={"python": "3.11", "pip": ["six", "idna"]})
    assert (first.version.version, first.created) == (1, True)
    assert (second.version.version, second.created) == (2, True)
    # Versions are immutable: the first keeps its spec.
    first.version.refresh_from_db()
    assert first.version.spec["pip"] == ["six"]


def test_an_identical_spec_returns_the_existing_version(member, contributor, owner):
    first = register(member, contributor)
    again = register(member, owner, spec=normalise_spec(SIX_SPEC))
    assert not again.created and again.version.pk == first.version.pk
    assert EnvironmentVersion.objects.count() == 1


def test_going_back_to_an_older_spec_makes_it_the_latest_again(member, contributor):
    register(member, contributor)
    register(member, contributor, spec={"pip": ["idna"]})
    back = register(member, contributor)
    assert back.created and back.version.version == 3


@pytest.mark.parametrize("name", ["TrainHub-mine", "trainhub-PyTorch-2.13-CPU", " TRAINHUB-x"])
def test_nobody_registers_a_reserved_name(member, owner, name):
    with pytest.raises(ValidationError) as error:
        register(member, owner, name=name)
    assert error.value.message_dict["name"] == [services.RESERVED_NAME]
    assert not Environment.objects.exists()


def test_nobody_clones_into_a_reserved_name(member, contributor, curated):
    source = selectors.version_get(curated)
    with pytest.raises(ValidationError, match="reserved"):
        services.environment_clone(access=member, user=contributor, source=source, new_name="TrainHub-mine")
    clone = services.environment_clone(access=member, user=contributor, source=source, new_name="mine")
    assert clone.version.spec == source.spec and clone.version.environment.workspace == member.workspace


def test_a_reader_cannot_register(workspace, reader):
    with pytest.raises(PermissionDenied, match=re.escape(READ_ONLY_MESSAGE)):
        register(Access(workspace=workspace, role=Role.READER), reader)


def test_a_bad_spec_is_refused_with_its_reason(member, contributor):
    with pytest.raises(ValidationError) as error:
        register(member, contributor, spec={"pip": ["--extra-index-url http://x"]})
    assert "pip option" in error.value.message_dict["spec"][0]


def test_names_differing_in_case_are_one_name(member, contributor):
    register(member, contributor, name="Herons")
    with pytest.raises(ValidationError, match="already exists"):
        register(member, contributor, name="herons")


def test_only_staff_curate(contributor, staff):
    with pytest.raises(PermissionDenied, match=re.escape(services.CURATED_STAFF_ONLY)):
        services.curated_environment_save(user=contributor, name="TrainHub-X", spec=SIX_SPEC)
    with pytest.raises(ValidationError) as error:
        services.curated_environment_save(user=staff, name="no-prefix", spec=SIX_SPEC)
    assert error.value.message_dict["name"] == [CURATED_NEEDS_PREFIX]
    saved = services.curated_environment_save(user=staff, name="TrainHub-X", spec=SIX_SPEC)
    assert saved.version.environment.is_curated and saved.version.created_by == staff


def test_curated_environments_are_seen_by_every_workspace_but_custom_ones_only_by_theirs(
    member, contributor, other_workspace, curated
):
    register(member, contributor)
    assert [e.name for e in selectors.visible_environments(member.workspace)] == [
        "TrainHub-PyTorch-2.13",
        PYTORCH_CPU_NAME,
        "birds-env",
    ]
    assert [e.name for e in selectors.visible_environments(other_workspace)] == [
        "TrainHub-PyTorch-2.13",
        PYTORCH_CPU_NAME,
    ]
    with pytest.raises(Exception, match="No environment named 'birds-env'"):
        selectors.environment_get(other_workspace, "birds-env")


def test_make_run_seeds_the_curated_pytorch_environment_once(db):
    seed_make_run_demo()
    seed_make_run_demo()
    environment = Environment.objects.get(name=PYTORCH_CPU_NAME)
    assert environment.is_curated and environment.versions.count() == 1
    spec = environment.versions.get().spec
    assert spec["python"] == "3.11" and spec["pip"] == ["torch==2.13.0", "numpy"]


def test_seeding_moves_a_site_on_an_earlier_shipped_spec_to_the_current_one_but_keeps_an_admins(staff):
    earlier = shipped.PYTORCH_EARLIER_SPECS[0]
    services.curated_environment_save(user=staff, name=shipped.PYTORCH_NAME, spec=earlier, description="old")
    seed_make_run_demo()
    environment = Environment.objects.get(name=shipped.PYTORCH_NAME)
    assert [v.spec["pip"] for v in environment.versions.order_by("version")] == [
        earlier["pip"],
        shipped.PYTORCH_SPEC["pip"],
    ]
    assert "torchaudio (no release for torch 2.13 exists" in environment.description
    edited = {**shipped.PYTORCH_SPEC, "pip": [*shipped.PYTORCH_SPEC["pip"], "six"]}
    services.curated_environment_save(
        user=staff, name=shipped.PYTORCH_NAME, spec=edited, description="ours", environment=environment
    )
    seed_make_run_demo()
    assert environment.versions.order_by("-version").first().spec["pip"][-1] == "six"


def test_a_run_gets_the_name_version_and_full_spec(member, contributor, curated):
    register(member, contributor)
    choice = selectors.environment_for_run(workspace=member.workspace, name="birds-env", version=None)
    assert (choice.name, choice.version, choice.spec) == ("birds-env", 1, normalise_spec(SIX_SPEC))
    choice = selectors.environment_for_run(workspace=member.workspace, name=PYTORCH_CPU_NAME, version=1)
    assert choice.spec["pip"] == ["torch==2.13.0", "numpy"]


def test_a_build_record_keeps_the_tail_of_a_huge_log(member, contributor):
    version = register(member, contributor).version
    log = "first line\n" + "x" * services.MAX_STORED_LOG_CHARS + "\nlast line\n"
    build = services.record_build(spec_hash=version.spec_hash, node="n1", version=version)
    services.build_finish(build=build, status=BuildStatus.FAILED, log=log, reason="It broke.\nDetails")
    build.refresh_from_db()
    assert build.log.endswith("last line\n") and "first line" not in build.log
    assert "earlier characters of the build log dropped" in build.log
    assert build.reason == "It broke." and build.finished_at is not None


def test_an_executor_build_is_recorded_but_a_cache_hit_is_not(member, contributor, cache_dir):
    from trainhub.environments.builders import BuildError
    from trainhub.environments.models import EnvironmentBuild

    version = register(member, contributor).version
    lines: list[str] = []
    built = services.materialise_recorded(
        version.spec, cache_dir=cache_dir, node="node-3", log=lines.append, version=version
    )
    assert not built.cache_hit and any("six" in line for line in lines)
    services.materialise_recorded(version.spec, cache_dir=cache_dir, node="node-3", log=lines.append)
    build = EnvironmentBuild.objects.get()
    assert (build.node, build.status, build.version) == ("node-3", BuildStatus.SUCCEEDED, version)
    assert "six" in build.log and build.spec_hash == version.spec_hash

    with pytest.raises(BuildError):
        services.materialise_recorded({"pip": ["six==0.0.1"]}, cache_dir=cache_dir, node="node-3", log=print)
    failed = EnvironmentBuild.objects.get(status=BuildStatus.FAILED)
    assert failed.reason.startswith("The requirements cannot be installed") and "Build failed" in failed.log
