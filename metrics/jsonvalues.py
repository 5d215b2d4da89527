"""Metric values in JSON: NaN and ±inf, which MLflow's client logs and TrainHub keeps, are written as
the strings "NaN", "Infinity" and "-Infinity" (protobuf's JSON mapping, which MLflow's API uses), so
that every answer stays valid JSON (a bare NaN is not) and clients read them back as floats."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def json_number(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    return NON_FINITE[repr(float(value))]


def json_numbers(values: np.ndarray) -> list[Any]:
    """A float64 array as a JSON list; the common case (all finite) costs one check."""
    if bool(np.isfinite(values).all()):
        return values.tolist()
    return [json_number(value) for value in values.tolist()]
