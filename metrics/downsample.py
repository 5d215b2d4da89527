"""Largest-Triangle-Three-Buckets (Steinarsson, 2013): the points of a long series worth drawing.

Written here rather than taken from PyPI: the `lttb` package pins numpy~=1.17 and `lttbc` is
compiled against numpy 1.x, while TrainHub runs numpy 2.
"""

from __future__ import annotations

import numpy as np


def lttb_indices(x: np.ndarray, y: np.ndarray, n_out: int) -> np.ndarray:
    """Indices of the `n_out` points of (x, y) that LTTB keeps; x must be sorted ascending.

    The first and last points are always kept. Each of the n_out - 2 buckets in between gives
    the point forming the largest triangle with the point kept from the previous bucket and
    the mean of the next bucket.
    """
    n = len(x)
    if n_out >= n or n_out < 3:
        return np.arange(n)
    x = x.astype(np.float64, copy=False)
    y = y.astype(np.float64, copy=False)
    buckets = n_out - 2
    edges = np.linspace(1, n - 1, buckets + 1).astype(np.int64)
    sizes = np.diff(edges)
    # Every bucket's mean in one pass; the bucket after the last one is the last point.
    mean_x = (np.add.reduceat(x[1 : n - 1], edges[:-1] - 1) / sizes).tolist() + [float(x[-1])]
    mean_y = (np.add.reduceat(y[1 : n - 1], edges[:-1] - 1) / sizes).tolist() + [float(y[-1])]
    bounds = edges.tolist()
    kept = [0]
    ax, ay = float(x[0]), float(y[0])
    # Plain floats for the per-bucket scalars: numpy scalar arithmetic would triple the loop's cost.
    for bucket in range(buckets):
        low, high = bounds[bucket], bounds[bucket + 1]
        next_x, next_y = mean_x[bucket + 1], mean_y[bucket + 1]
        areas = np.abs((ax - next_x) * (y[low:high] - ay) - (next_y - ay) * (ax - x[low:high]))
        chosen = low + int(areas.argmax())
        kept.append(chosen)
        ax, ay = float(x[chosen]), float(y[chosen])
    kept.append(n - 1)
    return np.asarray(kept, dtype=np.int64)
