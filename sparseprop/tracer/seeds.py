"""Compressed probes: one JVP evaluates many Jacobian entries at once when structure allows.

For an input `q`, the axes matched in *every* dependency map on `q` are compressed (the
probe is all ones along them, as in graph-colouring sparse Jacobians: the structural
pass proved that no two of those entries meet in any output); the other axes are
enumerated with one-hot probes.
"""
from __future__ import annotations

from typing import Iterable, Tuple

import numpy as np

from .structure import AxisMap


def compressed_axes(maps: Iterable[AxisMap], ndim: int) -> Tuple[int, ...]:
    maps = list(maps)
    return tuple(k for k in range(ndim) if all(m[k] is not None for m in maps))


def probes(shape: Tuple[int, ...], compressed: Tuple[int, ...], dtype) -> np.ndarray:
    """One probe per index of the enumerated axes: shape (count, *shape)."""
    enum_shape = enumerated_shape(shape, compressed)
    count = int(np.prod(enum_shape)) if enum_shape else 1
    one_hot = np.eye(count, dtype=dtype).reshape(
        (count,) + tuple(1 if k in compressed else n for k, n in enumerate(shape)))
    return np.broadcast_to(one_hot, (count,) + tuple(shape))


def enumerated_shape(shape, compressed) -> Tuple[int, ...]:
    return tuple(n for k, n in enumerate(shape) if k not in compressed)
