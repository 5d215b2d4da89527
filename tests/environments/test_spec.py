"""The environment spec: its normal form, its hash, its conda YAML, and the mistakes it refuses."""

from __future__ import annotations

import pytest
import yaml

from trainhub.environments.spec import (
    DOCKER_BOTH,
    SpecError,
    normalise_spec,
    spec_hash,
    to_conda_yaml,
)


def test_a_minimal_spec_gets_every_key_with_defaults():
    assert normalise_spec({"pip": ["six"]}) == {
        "python": "3.11",
        "pip": ["six"],
        "conda": [],
        "channels": [],
        "docker": {"enabled": False, "base_image": None, "base_dockerfile": None},
        "environment_variables": {},
    }


def test_normalising_twice_changes_nothing_and_the_hash_ignores_form():
    spec = {
        "python": "3.10",
        "pip": [" numpy>=1.26 ", ""],
        "environment_variables": {"B": 1, "A": True},
    }
    once = normalise_spec(spec)
    assert normalise_spec(once) == once
    assert once["environment_variables"] == {"A": "true", "B": "1"}
    assert spec_hash(spec) == spec_hash(once) != spec_hash({"python": "3.10", "pip": ["numpy>=1.26"]})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"pyton": "3.11"}, "Unknown key(s) in the environment spec: pyton"),
        ({"python": "three"}, "python must be a version such as 3.11"),
        ({"pip": "six"}, "pip must be a list of strings"),
        ({"pip": ["-r other.txt"]}, "is a pip option"),
        ({"pip": ["six>=>1"]}, "is not a valid requirement"),
        ({"conda": ["python=3.9"]}, "Give the Python version as python"),
        ({"docker": {"base_image": "a", "base_dockerfile": "FROM b"}}, DOCKER_BOTH),
        ({"docker": {"image": "a"}}, "docker.image"),
        ({"environment_variables": {"1BAD": "x"}}, "Environment variable names"),
    ],
)
def test_it_refuses_mistakes_with_a_clear_message(spec, message):
    with pytest.raises(SpecError) as error:
        normalise_spec(spec)
    assert message in str(error.value)


def test_the_conda_yaml_holds_python_conda_and_pip():
    spec = normalise_spec(
        {
            "python": "3.11",
            "pip": ["torch==2.13.0"],
            "conda": ["mkl"],
            "channels": ["conda-forge"],
            "environment_variables": {"OMP_NUM_THREADS": "1"},
        }
    )
    document = yaml.safe_load(to_conda_yaml(spec, "birds"))
    assert document == {
        "name": "birds",
        "channels": ["conda-forge"],
        "dependencies": ["python=3.11", "mkl", {"pip": ["torch==2.13.0"]}],
        "variables": {"OMP_NUM_THREADS": "1"},
    }


def test_user_managed_dependencies_is_kept_only_when_true_so_other_specs_keep_their_hash():
    plain = normalise_spec({"pip": ["six"]})
    assert normalise_spec({"pip": ["six"], "user_managed_dependencies": False}) == plain
    user_managed = normalise_spec({"pip": ["six"], "user_managed_dependencies": True})
    assert user_managed == {**plain, "user_managed_dependencies": True}
    assert normalise_spec(user_managed) == user_managed
    assert (
        spec_hash(user_managed) != spec_hash(plain) == spec_hash({"pip": ["six"], "user_managed_dependencies": False})
    )
    with pytest.raises(SpecError, match="user_managed_dependencies must be true or false, not 'yes'"):
        normalise_spec({"user_managed_dependencies": "yes"})
