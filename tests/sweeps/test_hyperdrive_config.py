"""The SDK's hyperdrive module: its expressions, samplings, policies and HyperDriveConfig refuse
what the cloud SDK refuses, at construction, with the rule in the message."""

from __future__ import annotations

import pytest

from trainhub.sdk import ScriptRunConfig
from trainhub.sdk.exceptions import UserErrorException
from trainhub.sdk.train.hyperdrive import (
    BanditPolicy,
    BayesianParameterSampling,
    GridParameterSampling,
    HyperDriveConfig,
    MedianStoppingPolicy,
    NoTerminationPolicy,
    PrimaryMetricGoal,
    RandomParameterSampling,
    TruncationSelectionPolicy,
    choice,
    loguniform,
    normal,
    quniform,
    randint,
    runconfig,
    sampling,
    uniform,
)
from trainhub.sdk.train.hyperdrive import policy as policy_module


def config(**overrides):
    given = {
        "run_config": ScriptRunConfig(source_directory=".", script="train.py", compute_target="cpu-cluster"),
        "hyperparameter_sampling": RandomParameterSampling({"lr": uniform(0.001, 0.1)}),
        "primary_metric_name": "accuracy",
        "primary_metric_goal": PrimaryMetricGoal.MAXIMIZE,
        "max_total_runs": 8,
    }
    return HyperDriveConfig(**(given | overrides))


def test_the_v1_import_paths_hold_the_same_names():
    from trainhub.sdk.train.hyperdrive.parameter_expressions import uniform as deep_uniform
    from trainhub.sdk.train.hyperdrive.run import PrimaryMetricGoal as run_goal
    from trainhub.sdk.train.hyperdrive.runconfig import HyperDriveConfig as deep_config

    assert deep_uniform is uniform and deep_config is HyperDriveConfig and run_goal is PrimaryMetricGoal


def test_expressions_are_the_cloud_sdks_lists():
    assert choice(1, 2, 3) == ["choice", [[1, 2, 3]]] == choice([1, 2, 3]) == choice(range(1, 4))
    assert randint(5) == ["randint", [5]]
    assert quniform(0, 10, 2) == ["quniform", [0, 10, 2]]
    with pytest.raises(UserErrorException, match=r"uniform\(0.1, 0.01\): the lower bound must be below"):
        uniform(0.1, 0.01)
    with pytest.raises(UserErrorException, match="sigma must be a positive number"):
        normal(0, 0)
    with pytest.raises(UserErrorException, match="randint"):
        randint(0)
    with pytest.raises(UserErrorException, match="choice"):
        choice()


def test_grid_over_a_continuous_range_fails_with_the_rule():
    with pytest.raises(UserErrorException) as refused:
        GridParameterSampling({"lr": uniform(0.001, 0.1), "batch": choice(16, 32)})
    assert str(refused.value) == sampling.GRID_ONLY_CHOICE.format(name="lr", kind="uniform")
    assert GridParameterSampling({"a": choice(1, 2), "b": choice("x", "y", "z")}).combinations == 6


def test_bayesian_takes_only_choice_uniform_quniform_and_no_policy():
    with pytest.raises(UserErrorException, match="Bayesian sampling supports only choice, uniform and quniform"):
        BayesianParameterSampling({"lr": loguniform(-6, -1)})
    bayesian = BayesianParameterSampling({"lr": uniform(0.001, 0.1), "batch": choice(16, 32), "n": quniform(1, 9, 1)})
    with pytest.raises(UserErrorException) as refused:
        config(hyperparameter_sampling=bayesian, policy=BanditPolicy(slack_factor=0.1))
    assert str(refused.value) == runconfig.BAYESIAN_NO_POLICY
    assert config(hyperparameter_sampling=bayesian, policy=NoTerminationPolicy()).policy.policy_type == (
        "NoTerminationPolicy"
    )


def test_policies_check_their_arguments():
    with pytest.raises(UserErrorException, match="either slack_factor or slack_amount, but not both"):
        BanditPolicy(slack_factor=0.1, slack_amount=0.2)
    with pytest.raises(UserErrorException, match="either slack_factor or slack_amount"):
        BanditPolicy(evaluation_interval=2)
    with pytest.raises(UserErrorException, match="evaluation_interval must be an integer of at least 1"):
        MedianStoppingPolicy(evaluation_interval=0)
    with pytest.raises(UserErrorException, match=r"truncation_percentage must be an integer between 1 and 99"):
        TruncationSelectionPolicy(truncation_percentage=100)
    assert BanditPolicy(slack_factor=0.15, evaluation_interval=1, delay_evaluation=10).to_json() == {
        "type": "BanditPolicy",
        "evaluation_interval": 1,
        "delay_evaluation": 10,
        "slack_factor": 0.15,
        "slack_amount": None,
    }
    assert policy_module.BAD_DELAY.format(value=-1) in str(
        pytest.raises(UserErrorException, BanditPolicy, slack_factor=0.1, delay_evaluation=-1).value
    )


def test_hyperdrive_config_rules():
    with pytest.raises(UserErrorException) as refused:
        config(estimator=ScriptRunConfig(script="x.py"))
    assert str(refused.value) == runconfig.ONE_CONFIG
    with pytest.raises(UserErrorException, match="primary_metric_goal must be PrimaryMetricGoal.MAXIMIZE"):
        config(primary_metric_goal="maximize")
    with pytest.raises(UserErrorException, match="max_total_runs must be an integer between 1 and 1000"):
        config(max_total_runs=1001)
    with pytest.raises(UserErrorException, match="max_concurrent_runs must be an integer between 1 and 100"):
        config(max_concurrent_runs=0)
    with pytest.raises(UserErrorException, match="a sweep needs a limit"):
        config(max_total_runs=None, max_duration_minutes=None)
    grid = GridParameterSampling({"a": choice(1, 2), "b": choice(3, 4)})
    made = config(hyperparameter_sampling=grid, max_total_runs=None, max_concurrent_runs=2)
    assert (made.max_total_runs, made.max_concurrent_runs) == (4, 2)
    assert made._sweep_json()["policy"] == {
        "type": "NoTerminationPolicy",
        "evaluation_interval": 1,
        "delay_evaluation": 0,
    }
