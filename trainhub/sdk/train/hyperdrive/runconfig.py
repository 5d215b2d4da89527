"""`HyperDriveConfig`: a run configuration, a search space, a policy and the sweep's limits."""

from __future__ import annotations

import enum
from typing import Any

from trainhub.sdk.exceptions import UserErrorException
from trainhub.sdk.train.hyperdrive.policy import EarlyTerminationPolicy, NoTerminationPolicy
from trainhub.sdk.train.hyperdrive.sampling import (
    BayesianParameterSampling,
    GridParameterSampling,
    HyperParameterSampling,
)

MAX_TOTAL_RUNS = 1000
MAX_CONCURRENT_RUNS = 100
MAX_DURATION_MINUTES = 43200
ONE_CONFIG = "Give HyperDriveConfig either run_config or estimator, not both and not neither."
NOT_SAMPLING = (
    "hyperparameter_sampling must be a RandomParameterSampling, GridParameterSampling or "
    "BayesianParameterSampling, not {given!r}."
)
NOT_POLICY = (
    "policy must be a BanditPolicy, MedianStoppingPolicy, TruncationSelectionPolicy, NoTerminationPolicy "
    "or None, not {given!r}."
)
BAYESIAN_NO_POLICY = (
    "Bayesian sampling does not support early termination policies: give policy=None or NoTerminationPolicy()."
)
BAD_METRIC = "primary_metric_name must be the name of a metric the script logs, not {given!r}."
BAD_GOAL = "primary_metric_goal must be PrimaryMetricGoal.MAXIMIZE or PrimaryMetricGoal.MINIMIZE, not {given!r}."
BAD_TOTAL = f"max_total_runs must be an integer between 1 and {MAX_TOTAL_RUNS}, not {{given!r}}."
BAD_CONCURRENT = f"max_concurrent_runs must be an integer between 1 and {MAX_CONCURRENT_RUNS}, not {{given!r}}."
BAD_DURATION = f"max_duration_minutes must be an integer between 1 and {MAX_DURATION_MINUTES}, not {{given!r}}."
NO_LIMIT = "Give max_total_runs or max_duration_minutes (or both): a sweep needs a limit."


class PrimaryMetricGoal(enum.Enum):
    MAXIMIZE = "MAXIMIZE"
    MINIMIZE = "MINIMIZE"


def _bounded(value: Any, top: int, message: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
        raise UserErrorException(message.format(given=value))
    return value


class HyperDriveConfig:
    _is_hyperdrive = True

    def __init__(
        self,
        hyperparameter_sampling: HyperParameterSampling,
        primary_metric_name: str,
        primary_metric_goal: PrimaryMetricGoal,
        max_total_runs: int | None = None,
        max_concurrent_runs: int | None = None,
        max_duration_minutes: int | None = 10080,
        policy: EarlyTerminationPolicy | None = None,
        estimator: Any = None,
        run_config: Any = None,
        **_ignored: Any,
    ):
        if (estimator is None) == (run_config is None):
            raise UserErrorException(ONE_CONFIG)
        if not isinstance(hyperparameter_sampling, HyperParameterSampling):
            raise UserErrorException(NOT_SAMPLING.format(given=hyperparameter_sampling))
        if policy is not None and not isinstance(policy, EarlyTerminationPolicy):
            raise UserErrorException(NOT_POLICY.format(given=policy))
        if isinstance(hyperparameter_sampling, BayesianParameterSampling) and not (
            policy is None or isinstance(policy, NoTerminationPolicy)
        ):
            raise UserErrorException(BAYESIAN_NO_POLICY)
        if not isinstance(primary_metric_name, str) or not primary_metric_name.strip():
            raise UserErrorException(BAD_METRIC.format(given=primary_metric_name))
        if not isinstance(primary_metric_goal, PrimaryMetricGoal):
            raise UserErrorException(BAD_GOAL.format(given=primary_metric_goal))
        if max_total_runs is None and max_duration_minutes is None:
            raise UserErrorException(NO_LIMIT)
        if max_total_runs is not None:
            _bounded(max_total_runs, MAX_TOTAL_RUNS, BAD_TOTAL)
        if max_duration_minutes is not None:
            _bounded(max_duration_minutes, MAX_DURATION_MINUTES, BAD_DURATION)
        if isinstance(hyperparameter_sampling, GridParameterSampling):
            combinations = hyperparameter_sampling.combinations
            max_total_runs = min(max_total_runs or combinations, combinations)
        max_total_runs = max_total_runs or MAX_TOTAL_RUNS
        if max_concurrent_runs is None:
            max_concurrent_runs = min(max_total_runs, MAX_CONCURRENT_RUNS)
        _bounded(max_concurrent_runs, MAX_CONCURRENT_RUNS, BAD_CONCURRENT)
        self.run_config = run_config if run_config is not None else estimator
        self.estimator = estimator
        self.hyperparameter_sampling = hyperparameter_sampling
        self.policy = policy if policy is not None else NoTerminationPolicy()
        self.primary_metric_name = primary_metric_name
        self.primary_metric_goal = primary_metric_goal
        self.max_total_runs = max_total_runs
        self.max_concurrent_runs = min(max_concurrent_runs, max_total_runs)
        self.max_duration_minutes = max_duration_minutes

    @property
    def source_directory(self) -> str:
        return self.run_config.source_directory

    def _sweep_json(self) -> dict[str, Any]:
        return {
            "sampling": self.hyperparameter_sampling.to_json(),
            "policy": self.policy.to_json(),
            "primary_metric_name": self.primary_metric_name,
            "primary_metric_goal": self.primary_metric_goal.value,
            "max_total_runs": self.max_total_runs,
            "max_concurrent_runs": self.max_concurrent_runs,
            "max_duration_minutes": self.max_duration_minutes,
        }
