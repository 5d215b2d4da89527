"""The cloud SDK's parameter expressions: each returns the same `[kind, [arguments]]` list that
Azure's does, which is also what the sweep's JSON carries to the server."""

from __future__ import annotations

from typing import Any

from trainhub.sdk.exceptions import UserErrorException

BAD_RANGE = "{kind}({low}, {high}): the lower bound must be below the upper bound."
BAD_Q = "{kind}: q must be a positive number, not {q!r}."
BAD_SIGMA = "{kind}: sigma must be a positive number, not {sigma!r}."
EMPTY_CHOICE = "choice() needs at least one option."
BAD_OPTION = "choice() options are numbers, strings, booleans or None: {option!r} is not."
BAD_UPPER = "randint(upper): upper must be a positive integer, not {upper!r}."


def _number(kind: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserErrorException(f"{kind}: {value!r} is not a number.")
    return value


def _range(kind: str, low: Any, high: Any) -> None:
    if _number(kind, low) >= _number(kind, high):
        raise UserErrorException(BAD_RANGE.format(kind=kind, low=low, high=high))


def _q(kind: str, q: Any) -> None:
    if isinstance(q, bool) or not isinstance(q, int | float) or q <= 0:
        raise UserErrorException(BAD_Q.format(kind=kind, q=q))


def _sigma(kind: str, sigma: Any) -> None:
    if isinstance(sigma, bool) or not isinstance(sigma, int | float) or sigma <= 0:
        raise UserErrorException(BAD_SIGMA.format(kind=kind, sigma=sigma))


def choice(*options: Any) -> list[Any]:
    """One of the options: `choice(1, 2, 3)`, `choice([1, 2, 3])` or `choice(range(1, 4))`."""
    values = list(options[0]) if len(options) == 1 and isinstance(options[0], list | tuple | range) else list(options)
    if not values:
        raise UserErrorException(EMPTY_CHOICE)
    for option in values:
        if option is not None and not isinstance(option, int | float | str | bool):
            raise UserErrorException(BAD_OPTION.format(option=option))
    return ["choice", [values]]


def randint(upper: int) -> list[Any]:
    """An integer in [0, upper)."""
    if isinstance(upper, bool) or not isinstance(upper, int) or upper < 1:
        raise UserErrorException(BAD_UPPER.format(upper=upper))
    return ["randint", [upper]]


def uniform(min_value: float, max_value: float) -> list[Any]:
    _range("uniform", min_value, max_value)
    return ["uniform", [min_value, max_value]]


def quniform(min_value: float, max_value: float, q: float) -> list[Any]:
    """round(uniform(min_value, max_value) / q) * q."""
    _range("quniform", min_value, max_value)
    _q("quniform", q)
    return ["quniform", [min_value, max_value, q]]


def loguniform(min_value: float, max_value: float) -> list[Any]:
    """exp(uniform(min_value, max_value)): the bounds are natural logarithms, as in the cloud SDK."""
    _range("loguniform", min_value, max_value)
    return ["loguniform", [min_value, max_value]]


def qloguniform(min_value: float, max_value: float, q: float) -> list[Any]:
    _range("qloguniform", min_value, max_value)
    _q("qloguniform", q)
    return ["qloguniform", [min_value, max_value, q]]


def normal(mu: float, sigma: float) -> list[Any]:
    _number("normal", mu)
    _sigma("normal", sigma)
    return ["normal", [mu, sigma]]


def qnormal(mu: float, sigma: float, q: float) -> list[Any]:
    _number("qnormal", mu)
    _sigma("qnormal", sigma)
    _q("qnormal", q)
    return ["qnormal", [mu, sigma, q]]


def lognormal(mu: float, sigma: float) -> list[Any]:
    """exp(normal(mu, sigma))."""
    _number("lognormal", mu)
    _sigma("lognormal", sigma)
    return ["lognormal", [mu, sigma]]


def qlognormal(mu: float, sigma: float, q: float) -> list[Any]:
    _number("qlognormal", mu)
    _sigma("qlognormal", sigma)
    _q("qlognormal", q)
    return ["qlognormal", [mu, sigma, q]]
