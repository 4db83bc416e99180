"""The Yin-Yang data set (Kriener, Göltz & Petrovici 2021), generated offline from its formula.

Points `(x, y)` are drawn uniformly in the square `[0, 2 r_big]²` and kept if they lie in the
disc of radius `r_big` centred at `(r_big, r_big)`. Each point belongs to one of three classes:
the two dots (class 2: within `r_small` of the centre of either the right dot
`(1.5 r_big, r_big)` or the left dot `(0.5 r_big, r_big)`), or one of the two halves of the
yin-yang sign (class 1: within `r_small` of the right dot, or in the small upper-left disc
of radius `r_big/2` around the left dot but outside its dot, or in the upper half outside
the small disc around the right dot; class 0: the rest). A class is chosen uniformly at
random first and points are drawn until one of that class is found (rejection sampling), so
the classes are balanced in expectation. The network input is `(x, y, 1 - x, 1 - y)`: the
mirrored coordinates make the summed input independent of the position, so a model cannot
classify by input intensity alone.

This follows the reference implementation accompanying L. Kriener, J. Göltz, M. A. Petrovici,
*The Yin-Yang dataset*, NICE 2022 (arXiv 2102.08211), including its class numbering and its
use of a NumPy `RandomState` (the published splits use seeds 42 / 41 / 40 for train /
validation / test, of sizes 5000 / 1000 / 1000).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["YinYang", "yinyang", "yinyang_class", "encode_spike_times", "CLASS_NAMES"]

#: Class names in the order of the reference implementation (2 = the dots).
CLASS_NAMES = ("yin", "yang", "dot")


class YinYang(NamedTuple):
    """A Yin-Yang sample set.

    - `inputs`: `(size, 4)` float64, `(x, y, 1 - x, 1 - y)`, each in `[0, 1]`.
    - `labels`: `(size,)` int64 in `{0, 1, 2}`.
    """
    inputs: np.ndarray
    labels: np.ndarray


def yinyang_class(x, y, r_small=0.1, r_big=0.5):
    """The class of points of the yin-yang sign (vectorised).

    **Arguments:**

    - `x`, `y`: coordinates (arrays of one shape), inside the disc of radius `r_big` centred
      at `(r_big, r_big)`.
    - `r_small`, `r_big`: the radii of the dots and of the sign.

    **Returns:**

    int64 array of the shape of `x`: 2 for the dots, else 1 for the region the reference code
    calls `is_yin`, else 0.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    d_right = np.hypot(x - 1.5 * r_big, y - r_big)
    d_left = np.hypot(x - 0.5 * r_big, y - r_big)
    is_yin = ((d_right <= r_small) | ((d_left > r_small) & (d_left <= 0.5 * r_big))
              | ((y > r_big) & (d_right > 0.5 * r_big)))
    is_dot = (d_right < r_small) | (d_left < r_small)
    return np.where(is_dot, 2, is_yin.astype(np.int64)).astype(np.int64)


def yinyang(size=1000, seed=42, r_small=0.1, r_big=0.5) -> YinYang:
    """Draw a Yin-Yang sample set (deterministic for a given seed).

    **Arguments:**

    - `size`: the number of points.
    - `seed`: seed of the NumPy `RandomState` (42 / 41 / 40: the published train / validation /
      test seeds).
    - `r_small`, `r_big`: the radii of the dots and of the sign (published: 0.1 and 0.5).

    **Returns:**

    A `YinYang` of `size` points.

    **Raises:**

    `ValueError` if `size < 1` or the radii do not satisfy `0 < r_small < r_big / 2`.
    """
    if size < 1:
        raise ValueError(f"yinyang needs size >= 1, got {size}.")
    if not 0 < r_small < r_big / 2:
        raise ValueError(f"yinyang needs 0 < r_small < r_big/2, got r_small={r_small}, r_big={r_big}.")
    rng = np.random.RandomState(seed)
    inputs, labels = np.empty((size, 4)), np.empty(size, np.int64)
    for n in range(size):
        goal = rng.randint(3)
        while True:     # rejection sampling, point by point, as in the reference implementation
            x, y = rng.rand(2) * 2.0 * r_big
            if np.hypot(x - r_big, y - r_big) > r_big:
                continue
            c = int(yinyang_class(x, y, r_small, r_big))
            if c == goal:
                break
        inputs[n] = (x, y, 1.0 - x, 1.0 - y)
        labels[n] = c
    return YinYang(inputs, labels)


def encode_spike_times(inputs, t_early=0.15, t_late=2.0, bias_time=0.9):
    """Latency code: one spike per input value, plus a bias spike at a fixed time.

    `t = t_early + v (t_late - t_early)` for each value `v` in `[0, 1]`, then a fifth spike at
    `bias_time` (a constant input that lets every neuron fire independently of the data), as in
    the time-to-first-spike networks of Göltz et al. 2021.

    **Arguments:**

    - `inputs`: `(..., 4)` values in `[0, 1]` (e.g. `YinYang.inputs`).
    - `t_early`, `t_late`: the times of the values 0 and 1.
    - `bias_time`: the time of the bias spike.

    **Returns:**

    `(..., 5)` float64 spike times.
    """
    inputs = np.asarray(inputs, float)
    times = t_early + inputs * (t_late - t_early)
    bias = np.full(inputs.shape[:-1] + (1,), bias_time)
    return np.concatenate([times, bias], axis=-1)
