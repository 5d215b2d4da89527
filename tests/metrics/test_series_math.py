"""The arithmetic of series: LTTB keeps the reference points; steps left to the server."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.exceptions import ValidationError

from metrics.downsample import lttb_indices
from metrics.services import AUTO_STEP, BAD_STEP, _steps, fill_steps


def reference_lttb(data: np.ndarray, n_out: int) -> np.ndarray:
    """The textbook loop (as in the `lttb` package): equal bins, one triangle per bin."""
    bins = np.array_split(data[1:-1], n_out - 2)
    out = np.zeros((n_out, 2))
    out[0], out[-1] = data[0], data[-1]
    for i, this_bin in enumerate(bins):
        following = bins[i + 1] if i < len(bins) - 1 else data[-1:]
        a, c = out[i], following.mean(axis=0)
        areas = np.abs((a[0] - c[0]) * (this_bin[:, 1] - a[1]) - (a[0] - this_bin[:, 0]) * (c[1] - a[1]))
        out[i + 1] = this_bin[np.argmax(areas)]
    return out


def test_lttb_picks_the_reference_points():
    rng = np.random.default_rng(7)
    n = 2 + 498 * 20  # bins of equal size, so both split the data the same way
    x = np.arange(n, dtype=np.float64)
    y = np.cumsum(rng.normal(size=n))
    kept = lttb_indices(x, y, 500)
    expected = reference_lttb(np.column_stack([x, y]), 500)
    assert np.array_equal(x[kept], expected[:, 0])
    assert np.array_equal(y[kept], expected[:, 1])


def test_lttb_keeps_the_ends_and_short_series():
    x = np.arange(1_000_000)
    y = np.sin(x / 1000.0)
    kept = lttb_indices(x, y, 2000)
    assert len(kept) == 2000 and kept[0] == 0 and kept[-1] == 999_999
    assert np.all(np.diff(kept) > 0)
    assert list(lttb_indices(np.arange(5), np.arange(5.0), 10)) == [0, 1, 2, 3, 4]


def test_steps_left_to_the_server_follow_the_previous_step():
    assert fill_steps(np.array([-1, -1, 10, -1, 3, -1]), None).tolist() == [0, 1, 10, 11, 3, 4]
    assert fill_steps(np.array([-1, -1]), 41).tolist() == [42, 43]
    assert _steps("loss", [None, 5, None]).tolist() == [AUTO_STEP, 5, AUTO_STEP]


def test_an_explicit_negative_step_is_refused():
    with pytest.raises(ValidationError) as error:
        _steps("loss", [None, -1])
    assert error.value.messages == [BAD_STEP.format(name="loss", value=-1, index=1)]
