"""The SDK's Environment, as the guide uses it, against a live server (and conda files on disk)."""

from __future__ import annotations

import json
import textwrap

import pytest

from tests.conftest import issue_token
from trainhub.environments.models import Environment as EnvironmentRow
from trainhub.sdk import Environment, Workspace, exceptions
from trainhub.sdk import environment as sdk_environment

CURATED = "TrainHub-PyTorch-2.13-CPU"

CONDA_YAML = textwrap.dedent(
    """
    channels:
    - conda-forge
    dependencies:
    - python=3.11
    - pip
    - pip:
      - six
      - idna>=3
    variables:
      OMP_NUM_THREADS: 1
    """
)


@pytest.fixture
def ws(live_url, workspace, owner, owner_token):
    from trainhub.environments.services import seed_demo

    seed_demo(workspace=workspace, user=owner)
    return Workspace.get("birds", url=live_url, token=owner_token)


@pytest.fixture
def conda_file(tmp_path):
    path = tmp_path / "conda_dependencies.yml"
    path.write_text(CONDA_YAML)
    return path


def test_get_a_curated_environment_exactly_as_the_guide_writes_it(ws):
    pytorch_env = Environment.get(workspace=ws, name=CURATED)
    assert (pytorch_env.name, pytorch_env.version, pytorch_env.is_curated) == (CURATED, 1, True)
    assert pytorch_env.python.conda_dependencies.pip_packages == ["torch==2.13.0", "numpy"]
    assert pytorch_env.python.conda_dependencies.get_python_version() == "3.11"
    assert pytorch_env._to_submission(ws) == {"name": CURATED, "version": 1}
    assert pytorch_env._ensure_registered(ws) == (CURATED, 1)


def test_save_to_directory_writes_the_conda_yaml_that_load_reads_back(ws, tmp_path):
    pytorch_env = Environment.get(workspace=ws, name=CURATED)
    pytorch_env.save_to_directory(path=str(tmp_path / CURATED))
    conda_text = (tmp_path / CURATED / "conda_dependencies.yml").read_text()
    assert "python=3.11" in conda_text and "torch==2.13.0" in conda_text
    definition = json.loads((tmp_path / CURATED / sdk_environment.DEFINITION_FILE).read_text())
    assert definition["name"] == CURATED and definition["version"] == 1
    with pytest.raises(exceptions.UserErrorException, match="already holds a saved environment"):
        pytorch_env.save_to_directory(path=str(tmp_path / CURATED))
    loaded = Environment.load_from_directory(tmp_path / CURATED)
    assert loaded._spec() == pytorch_env._spec() and loaded.version is None


def test_a_conda_specification_registers_as_version_one_then_n_plus_one(ws, conda_file):
    pytorch_env = Environment.from_conda_specification(name="pytorch-1.6-cpu", file_path=str(conda_file))
    conda = pytorch_env.python.conda_dependencies
    assert conda.get_python_version() == "3.11" and conda.pip_packages == ["six", "idna>=3"]
    assert conda.conda_packages == [] and conda.conda_channels == ["conda-forge"]
    assert pytorch_env.environment_variables == {"OMP_NUM_THREADS": "1"}
    assert pytorch_env._to_submission(ws)["spec"]["pip"] == ["six", "idna>=3"]

    registered = pytorch_env.register(workspace=ws)
    assert registered is pytorch_env and pytorch_env.version == 1
    assert Environment.from_conda_specification("pytorch-1.6-cpu", conda_file).register(ws).version == 1
    pytorch_env.python.conda_dependencies.add_pip_package("six==1.17.0")
    assert pytorch_env._to_submission(ws)["name"] == "pytorch-1.6-cpu"
    assert pytorch_env._ensure_registered(ws) == ("pytorch-1.6-cpu", 2)
    assert Environment.get(workspace=ws, name="pytorch-1.6-cpu", version=1).python.conda_dependencies.pip_packages == [
        "six",
        "idna>=3",
    ]
    assert "pytorch-1.6-cpu" in Environment.list(workspace=ws)


def test_docker_settings_and_environment_variables_are_stored(ws, conda_file):
    pytorch_env = Environment.from_conda_specification(name="pytorch-gpu", file_path=conda_file)
    pytorch_env.docker.enabled = True
    pytorch_env.docker.base_image = "openmpi3.1.2-cuda10.1-cudnn7-ubuntu18.04"
    pytorch_env.environment_variables["NCCL_DEBUG"] = "INFO"
    pytorch_env.register(workspace=ws)
    again = Environment.get(workspace=ws, name="pytorch-gpu")
    assert again.docker.enabled and again.docker.base_image == "openmpi3.1.2-cuda10.1-cudnn7-ubuntu18.04"
    assert again.environment_variables == {"NCCL_DEBUG": "INFO", "OMP_NUM_THREADS": "1"}


def test_clone_gives_a_name_of_my_own_and_refuses_the_reserved_prefix(ws):
    pytorch_env = Environment.get(workspace=ws, name=CURATED)
    with pytest.raises(exceptions.UserErrorException) as error:
        pytorch_env.clone(new_name="TrainHub-PyTorch-mine")
    assert error.value.message == sdk_environment.RESERVED_NAME
    mine = pytorch_env.clone(new_name="pytorch-mine")
    mine.python.conda_dependencies.add_pip_package("six")
    assert mine._ensure_registered(ws) == ("pytorch-mine", 1)
    assert Environment.get(workspace=ws, name=CURATED).python.conda_dependencies.pip_packages == [
        "torch==2.13.0",
        "numpy",
    ]


def test_registering_a_reserved_name_is_refused_by_the_server(ws, conda_file):
    from trainhub.environments.services import RESERVED_NAME

    sneaky = Environment.from_conda_specification(name="TrainHub-PyTorch-2.13-CPU", file_path=conda_file)
    with pytest.raises(exceptions.UserErrorException) as error:
        sneaky.register(workspace=ws)
    assert error.value.message == RESERVED_NAME and error.value.status == 400
    changed = Environment.get(workspace=ws, name=CURATED)
    changed.python.conda_dependencies.add_pip_package("six")
    with pytest.raises(exceptions.UserErrorException, match="clone it first"):
        changed.register(workspace=ws)
    assert EnvironmentRow.objects.get(name=CURATED).versions.count() == 1


def test_a_reader_cannot_register(ws, workspace, reader, live_url, conda_file):
    as_reader = Workspace.get("birds", url=live_url, token=issue_token(workspace, reader))
    with pytest.raises(exceptions.PermissionDeniedError, match="reader"):
        Environment.from_conda_specification("mine", conda_file).register(workspace=as_reader)


def test_an_unknown_environment_is_not_found(ws):
    with pytest.raises(exceptions.NotFoundError, match="No environment named 'nope'"):
        Environment.get(workspace=ws, name="nope")
    with pytest.raises(exceptions.NotFoundError, match="no version 9"):
        Environment.get(workspace=ws, name=CURATED, version=9)


def test_a_deprecated_environment_still_works_with_a_warning(ws):
    EnvironmentRow.objects.filter(name=CURATED).update(deprecated=True)
    with pytest.warns(UserWarning, match="deprecated"):
        assert Environment.get(workspace=ws, name=CURATED).deprecated


def test_from_pip_requirements_reads_comments_continuations_and_includes(ws, tmp_path):
    (tmp_path / "base.txt").write_text("idna>=3  # for URLs\n")
    (tmp_path / "requirements.txt").write_text("# training\nsix \\\n  >=1.16\n-r base.txt\n\n")
    env = Environment.from_pip_requirements(name="from-pip", file_path=tmp_path / "requirements.txt")
    assert env.python.conda_dependencies.pip_packages == ["six >=1.16", "idna>=3"]
    assert env.register(workspace=ws).version == 1


def test_pip_options_in_requirements_are_a_clear_error(tmp_path):
    (tmp_path / "requirements.txt").write_text("six\n--index-url http://example.invalid/simple\n")
    with pytest.raises(exceptions.UserErrorException, match="line 2: '--index-url .*' is a pip option"):
        Environment.from_pip_requirements(name="x", file_path=tmp_path / "requirements.txt")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("dependencies: [python=3.11\n- pip:", "is not valid YAML: .*line"),
        ("- six\n- numpy\n", "is not a conda environment file: it should be a mapping"),
        ("dependencies: six\n", "dependencies: must be a list"),
        (
            "dependencies:\n- python>=3.9\n",
            r"give the Python version as python=X.Y \(found 'python>=3.9'\)",
        ),
        ("dependencies:\n- pip: six\n", "pip: must be a list"),
        ("dependencies:\n- {conda: six}\n", "unexpected entry"),
    ],
)
def test_bad_conda_files_are_clear_errors(tmp_path, text, message):
    path = tmp_path / "conda_dependencies.yml"
    path.write_text(text)
    with pytest.raises(exceptions.UserErrorException, match=message):
        Environment.from_conda_specification(name="x", file_path=path)


def test_conda_only_packages_are_kept_for_the_builder_to_judge(tmp_path):
    path = tmp_path / "conda_dependencies.yml"
    path.write_text("dependencies:\n- python=3.11\n- cudatoolkit=10.1\n- pip:\n  - six\n")
    env = Environment.from_conda_specification(name="x", file_path=path)
    assert env.python.conda_dependencies.conda_packages == ["cudatoolkit=10.1"]
    assert env._to_submission(workspace=None)["spec"]["conda"] == ["cudatoolkit=10.1"]


def test_a_missing_conda_file_is_a_clear_error(tmp_path):
    with pytest.raises(exceptions.UserErrorException, match="Cannot read"):
        Environment.from_conda_specification(name="x", file_path=tmp_path / "nope.yml")
