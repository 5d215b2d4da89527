"""Search spaces: random, grid and Bayesian sampling, with the cloud SDK's rules on each."""

from __future__ import annotations

from typing import Any

from trainhub.sdk.exceptions import UserErrorException

KINDS = (
    "choice",
    "randint",
    "uniform",
    "quniform",
    "loguniform",
    "qloguniform",
    "normal",
    "qnormal",
    "lognormal",
    "qlognormal",
)
EMPTY_SPACE = "The parameter space is empty: give at least one hyperparameter, e.g. {'lr': uniform(0.001, 0.1)}."
# A child's `--name value` argument is read as a parameter of at most 200 characters (the server's
# runs/parameters.py) and its tag of the same name shows in the runs table: a longer name would be two.
MAX_NAME_LENGTH = 200
BAD_NAME = (
    "Hyperparameter names are strings of 1 to " + str(MAX_NAME_LENGTH) + " letters, digits, '_', '-' and '.': "
    "{name!r} is not."
)
BAD_EXPRESSION = (
    "Hyperparameter {name!r} is not a parameter expression: use choice, randint, uniform, quniform, "
    "loguniform, qloguniform, normal, qnormal, lognormal or qlognormal."
)
GRID_ONLY_CHOICE = (
    "Grid sampling supports only discrete hyperparameters (choice): {name!r} is {kind}. Use "
    "RandomParameterSampling or BayesianParameterSampling for continuous or integer ranges."
)
BAYESIAN_KINDS = "Bayesian sampling supports only choice, uniform and quniform hyperparameters: {name!r} is {kind}."


def check_space(parameter_space: Any) -> dict[str, list[Any]]:
    """The space as {name: [kind, [arguments]]}, checked; the server checks the same way."""
    # Imported here: the hyperdrive package's __init__ imports this module.
    from trainhub.sdk.train.hyperdrive import parameter_expressions as expressions

    if not isinstance(parameter_space, dict) or not parameter_space:
        raise UserErrorException(EMPTY_SPACE)
    checked = {}
    for name, expression in parameter_space.items():
        bare = name[2:] if isinstance(name, str) and name.startswith("--") else name
        if (
            not isinstance(bare, str)
            or not 0 < len(bare) <= MAX_NAME_LENGTH
            or not all(c.isalnum() or c in "_-." for c in bare)
        ):
            raise UserErrorException(BAD_NAME.format(name=name))
        if (
            not isinstance(expression, list | tuple)
            or len(expression) != 2
            or expression[0] not in KINDS
            or not isinstance(expression[1], list | tuple)
        ):
            raise UserErrorException(BAD_EXPRESSION.format(name=name))
        kind, arguments = expression[0], list(expression[1])
        try:
            # Rebuilt through the expression itself, so a hand-made list meets the same rules.
            checked[name] = getattr(expressions, kind)(*arguments)
        except TypeError:
            raise UserErrorException(BAD_EXPRESSION.format(name=name)) from None
    return checked


class HyperParameterSampling:
    sampling_type = ""

    def __init__(self, parameter_space: dict[str, Any], properties: dict[str, Any] | None = None):
        self._parameter_space = check_space(parameter_space)
        self._properties = dict(properties or {})

    @property
    def parameter_space(self) -> dict[str, list[Any]]:
        return self._parameter_space

    def to_json(self) -> dict[str, Any]:
        return {"type": self.sampling_type, "space": self._parameter_space, "seed": self._properties.get("rngseed")}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._parameter_space!r})"


class RandomParameterSampling(HyperParameterSampling):
    """Each child draws every hyperparameter independently from its distribution."""

    sampling_type = "random"


class GridParameterSampling(HyperParameterSampling):
    """Every combination of the choices, in order (max_total_runs at most the number of combinations)."""

    sampling_type = "grid"

    def __init__(self, parameter_space: dict[str, Any], properties: dict[str, Any] | None = None):
        super().__init__(parameter_space, properties)
        for name, (kind, _arguments) in self._parameter_space.items():
            if kind != "choice":
                raise UserErrorException(GRID_ONLY_CHOICE.format(name=name, kind=kind))

    @property
    def combinations(self) -> int:
        total = 1
        for _kind, arguments in self._parameter_space.values():
            total *= len(arguments[0])
        return total


class BayesianParameterSampling(HyperParameterSampling):
    """Each child is chosen from the metrics of the children before it (optuna's TPE on the server)."""

    sampling_type = "bayesian"

    def __init__(self, parameter_space: dict[str, Any], properties: dict[str, Any] | None = None):
        super().__init__(parameter_space, properties)
        for name, (kind, _arguments) in self._parameter_space.items():
            if kind not in ("choice", "uniform", "quniform"):
                raise UserErrorException(BAYESIAN_KINDS.format(name=name, kind=kind))
