"""What each child of a sweep gets (server side): random and grid values depend only on the
child's index, Bayesian ones come from optuna's TPE on the children before; the policies' choices."""

from __future__ import annotations

import math

import pytest
from django.core.exceptions import ValidationError

from sweeps import policies, sampling
from sweeps.services import check_spec
from trainhub.sdk.train.hyperdrive import (
    choice,
    lognormal,
    loguniform,
    normal,
    qlognormal,
    qloguniform,
    qnormal,
    quniform,
    randint,
    uniform,
)

SPACE = {
    "lr": uniform(0.001, 0.1),
    "momentum": quniform(0.5, 0.99, 0.01),
    "layers": randint(4),
    "act": choice("relu", "tanh"),
    "wd": loguniform(-9, -3),
    "steps": qloguniform(1, 5, 10),
    "noise": normal(0, 1),
    "q": qnormal(10, 2, 1),
    "scale": lognormal(0, 0.5),
    "width": qlognormal(3, 0.5, 8),
}


def spec(kind: str, space: dict, **extra) -> dict:
    return {
        "sampling": {"type": kind, "space": space, "seed": 7},
        "policy": None,
        "primary_metric_name": "acc",
        "primary_metric_goal": "MAXIMIZE",
        "max_total_runs": 50,
        "max_concurrent_runs": 4,
        "max_duration_minutes": 60,
    } | extra


def test_random_children_draw_within_their_distributions_and_repeat_by_index():
    checked = sampling.check_sampling({"type": "random", "space": SPACE, "seed": 7})
    drawn = [sampling.parameters_for(checked, index, maximize=True) for index in range(200)]
    assert drawn[3] == sampling.parameters_for(checked, 3, maximize=True)
    assert len({child["lr"] for child in drawn}) == 200
    for child in drawn:
        assert 0.001 <= child["lr"] <= 0.1
        assert 0.5 <= child["momentum"] <= 0.99 and math.isclose(
            round(child["momentum"] / 0.01) * 0.01, child["momentum"]
        )
        assert child["layers"] in range(4) and child["act"] in ("relu", "tanh")
        assert math.exp(-9) <= child["wd"] <= math.exp(-3)
        assert isinstance(child["steps"], int) and child["steps"] % 10 == 0
        assert isinstance(child["q"], int) and child["width"] % 8 == 0 and child["scale"] > 0
    assert {child["act"] for child in drawn} == {"relu", "tanh"}


def test_grid_enumerates_every_combination_once_in_order():
    checked = sampling.check_sampling({"type": "grid", "space": {"a": choice(1, 2), "b": choice("x", "y", "z")}})
    assert sampling.grid_size(checked) == 6
    combos = [sampling.parameters_for(checked, index, maximize=True) for index in range(6)]
    assert combos[0] == {"a": 1, "b": "x"} and combos[5] == {"a": 2, "b": "z"}
    assert len({tuple(c.items()) for c in combos}) == 6
    assert check_spec(spec("grid", {"a": choice(1, 2)}))["max_total_runs"] == 2


def test_bayesian_moves_towards_the_better_region():
    checked = sampling.check_sampling({"type": "bayesian", "space": {"x": uniform(0, 10), "c": choice("a", "b")}})
    history = []
    for index in range(30):
        found = sampling.parameters_for(checked, index, history, maximize=False)
        assert 0 <= found["x"] <= 10
        history.append((found, (found["x"] - 2) ** 2 + (0 if found["c"] == "a" else 5)))
    late = [parameters for parameters, _ in history[20:]]
    assert sum(abs(p["x"] - 2) < 2.5 for p in late) >= 6
    assert sum(p["c"] == "a" for p in late) >= 6


def test_the_server_refuses_what_the_sdk_refuses_with_the_same_rule():
    with pytest.raises(ValidationError, match="Grid sampling supports only discrete hyperparameters"):
        check_spec(spec("grid", {"lr": uniform(0, 1)}))
    with pytest.raises(ValidationError, match="Bayesian sampling does not support early termination policies"):
        check_spec(spec("bayesian", {"lr": uniform(0, 1)}, policy={"type": "BanditPolicy", "slack_factor": 0.1}))
    with pytest.raises(ValidationError, match="is not a parameter expression"):
        check_spec(spec("random", {"lr": ["gamma", [1, 2]]}))
    with pytest.raises(ValidationError, match="lower bound"):
        check_spec(spec("random", {"lr": ["uniform", [2, 1]]}))
    with pytest.raises(ValidationError, match="either slack_factor or slack_amount"):
        check_spec(spec("random", {"lr": uniform(0, 1)}, policy={"type": "BanditPolicy"}))
    with pytest.raises(ValidationError, match="max_concurrent_runs must be an integer between 1 and 100"):
        check_spec(spec("random", {"lr": uniform(0, 1)}, max_concurrent_runs=500))
    with pytest.raises(ValidationError, match="names are strings of 1 to 200 letters"):
        check_spec(spec("random", {"lr; rm -rf": uniform(0, 1)}))
    # A longer one would name a child's parameter and tag differently (its parameter is cut at 200).
    with pytest.raises(ValidationError, match="names are strings of 1 to 200 letters"):
        check_spec(spec("random", {"--" + "k" * 201: uniform(0, 1)}))


BANDIT = {"type": "BanditPolicy", "evaluation_interval": 1, "delay_evaluation": 0, "slack_factor": 0.1}


def test_bandit_stops_a_child_outside_the_slack_and_keeps_one_within():
    values = {0: [0.5, 0.8, 0.9], 1: [0.5, 0.79, 0.85], 2: [0.5, 0.75, 0.3]}
    stopped = policies.to_stop(BANDIT, maximize=True, values=values, running={1, 2})
    assert stopped == {2: "early termination: BanditPolicy, slack 0.1 at interval 3"}
    # A poor child that logs faster than the others is stopped at the first interval they reach.
    ahead = {0: [1.0, 1.0], 1: [0.1, 0.1, 0.1, 0.1, 0.1]}
    assert policies.to_stop(BANDIT, maximize=True, values=ahead, running={1}) == {
        1: "early termination: BanditPolicy, slack 0.1 at interval 1"
    }
    # Minimising, with a slack amount: 1.0 + 0.2 is the limit.
    amount = BANDIT | {"slack_factor": None, "slack_amount": 0.2}
    assert policies.to_stop(amount, maximize=False, values={0: [1.0], 1: [1.15], 2: [1.3]}, running={1, 2}) == {
        2: "early termination: BanditPolicy, slack amount 0.2 at interval 1"
    }


def test_delay_and_interval_decide_when_the_policy_looks():
    policy = BANDIT | {"evaluation_interval": 2, "delay_evaluation": 4}
    values = {0: [1, 1, 1, 1], 1: [0, 0, 0]}
    assert policies.to_stop(policy, maximize=True, values=values, running={1}) == {}
    values[1].append(0)
    assert policies.to_stop(policy, maximize=True, values=values, running={1}) == {
        1: "early termination: BanditPolicy, slack 0.1 at interval 4"
    }


def test_median_and_truncation():
    median = {"type": "MedianStoppingPolicy", "evaluation_interval": 1, "delay_evaluation": 0}
    values = {0: [0.9, 0.9], 1: [0.8, 0.85], 2: [0.2, 0.3], 3: [0.8, 0.85]}
    assert policies.to_stop(median, maximize=True, values=values, running={2, 3}) == {
        2: "early termination: MedianStoppingPolicy at interval 1"
    }
    truncation = {
        "type": "TruncationSelectionPolicy",
        "evaluation_interval": 1,
        "delay_evaluation": 0,
        "truncation_percentage": 50,
    }
    assert set(policies.to_stop(truncation, maximize=True, values=values, running={1, 2, 3})) == {2, 3}
    assert policies.to_stop({"type": "NoTerminationPolicy"}, maximize=True, values=values, running={2}) == {}
