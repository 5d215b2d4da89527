"""Which hyperparameters the sweep's child number `index` gets. Pure, given the sweep's spec (and,
for Bayesian sampling, the metrics of the children before it).

Random and grid children depend only on their index (and the sweep's seed): a child made again
after a crash gets the same values. Bayesian children come from optuna's TPE, fitted each time on
the finished children's values in the database, so nothing lives in a process between children.
"""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

from django.core.exceptions import ValidationError

from trainhub.sdk.exceptions import UserErrorException
from trainhub.sdk.train.hyperdrive import sampling as sdk_sampling

SAMPLING_TYPES = {
    "random": sdk_sampling.RandomParameterSampling,
    "grid": sdk_sampling.GridParameterSampling,
    "bayesian": sdk_sampling.BayesianParameterSampling,
}
BAD_SAMPLING = "sampling.type is one of: random, grid, bayesian."


def check_sampling(sampling: Any) -> dict[str, Any]:
    """The spec as stored: the SDK's own rules (the same messages), a seed, and the names' order
    (a PostgreSQL JSON object does not keep it)."""
    if not isinstance(sampling, dict) or sampling.get("type") not in SAMPLING_TYPES:
        raise ValidationError(BAD_SAMPLING)
    try:
        checked = SAMPLING_TYPES[sampling["type"]](sampling.get("space") or {})
    except UserErrorException as error:
        raise ValidationError(str(error)) from None
    seed = sampling.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        seed = random.SystemRandom().randrange(2**31)
    space = checked.parameter_space
    return {"type": sampling["type"], "space": space, "order": list(space), "seed": seed}


def grid_size(sampling: dict[str, Any]) -> int:
    return math.prod(len(sampling["space"][name][1][0]) for name in sampling["order"])


def argument_name(name: str) -> str:
    return name if name.startswith("--") else f"--{name}"


def parameters_for(
    sampling: dict[str, Any], index: int, history: list[tuple[dict[str, Any], float]] | None = None, *, maximize: bool
) -> dict[str, Any]:
    """{name: value} of child `index`; `history` is [(parameters, primary metric)] of ended children."""
    if sampling["type"] == "grid":
        options = [sampling["space"][name][1][0] for name in sampling["order"]]
        combination = next(itertools.islice(itertools.product(*options), index, None))
        return dict(zip(sampling["order"], combination, strict=True))
    if sampling["type"] == "bayesian":
        return _bayesian(sampling, index, history or [], maximize=maximize)
    rng = random.Random(f"{sampling['seed']}:{index}")
    return {name: draw(sampling["space"][name], rng) for name in sampling["order"]}


def _quantized(value: float, q: float) -> float | int:
    rounded = round(value / q) * q
    if isinstance(q, int):
        return int(rounded)
    return round(rounded, 12)


def draw(expression: list[Any], rng: random.Random) -> Any:
    kind, arguments = expression
    if kind == "choice":
        return rng.choice(arguments[0])
    if kind == "randint":
        return rng.randrange(arguments[0])
    if kind in ("uniform", "quniform", "loguniform", "qloguniform"):
        value = rng.uniform(arguments[0], arguments[1])
        if kind.endswith("loguniform"):
            value = math.exp(value)
    else:
        value = rng.gauss(arguments[0], arguments[1])
        if kind.endswith("lognormal"):
            value = math.exp(value)
    return _quantized(value, arguments[2]) if kind.startswith("q") else value


def _bayesian(
    sampling: dict[str, Any], index: int, history: list[tuple[dict[str, Any], float]], *, maximize: bool
) -> dict[str, Any]:
    import optuna  # imported by Bayesian sweeps only: it takes a second or more to import

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions: dict[str, Any] = {}
    for name in sampling["order"]:
        kind, arguments = sampling["space"][name]
        if kind == "choice":
            distributions[name] = optuna.distributions.CategoricalDistribution(arguments[0])
        else:
            distributions[name] = optuna.distributions.FloatDistribution(arguments[0], arguments[1])
    study = optuna.create_study(
        direction="maximize" if maximize else "minimize",
        sampler=optuna.samplers.TPESampler(seed=sampling["seed"] + index),
    )
    for parameters, value in history:
        known = {name: parameters.get(name) for name in sampling["order"]}
        if all(distributions[name]._contains(distributions[name].to_internal_repr(known[name])) for name in known):
            study.add_trial(optuna.trial.create_trial(params=known, distributions=distributions, value=value))
    trial = study.ask(distributions)
    found = {}
    for name in sampling["order"]:
        kind, arguments = sampling["space"][name]
        value = trial.params[name]
        if kind == "quniform":
            value = min(max(_quantized(value, arguments[2]), arguments[0]), arguments[1])
        found[name] = value
    return found
