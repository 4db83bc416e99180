"""Structured dependencies: which entries of a variable can depend on which entries of an input.

A *dependency map* of a variable `v` on a tracked input `u` is a tuple with one entry
per axis of `u`: an axis of `v` (an int) or `None`. Entry `k = j` promises that
`dv[α] / du[β] = 0` unless `β[k] == α[j]`: the k-th axis of `u` is *matched* to the
j-th axis of `v` (a per-neuron axis, a diagonal). `None` makes no promise (the axis is
*free*: summed, mixed, or reshaped beyond recognition). An axis is matched only where
the input and the variable have the same size along it: a size-1 axis broadcast
against a longer one, a slice, a pad or a concatenation changes the index range, and
the Jacobian blocks are stored (jacobian.py) with one shared index per matched pair.
The empty tuple with a scalar
input, or a map of all `None`, is a dense dependency. An input missing from a
variable's `Deps` dict has zero derivative.

Maps are sound over-approximations of the Jacobian's sparsity: the tracer only ever
turns a matched axis into a free one when unsure, never the reverse. Every map is
injective on its matched axes.
"""
from __future__ import annotations

from typing import Dict, Hashable, Optional, Tuple

AxisMap = Tuple[Optional[int], ...]
Deps = Dict[Hashable, AxisMap]


def identity_map(ndim: int) -> AxisMap:
    return tuple(range(ndim))


def merge_maps(a: Optional[AxisMap], b: Optional[AxisMap]) -> Optional[AxisMap]:
    """Union of two dependencies on the same input: keep only agreeing matches."""
    if a is None:
        return b
    if b is None:
        return a
    return tuple(x if x == y else None for x, y in zip(a, b))


def merge_deps(*all_deps: Deps) -> Deps:
    out: Deps = {}
    for deps in all_deps:
        for key, m in deps.items():
            out[key] = merge_maps(out.get(key), m)
    return out


def compose_maps(outer: AxisMap, inner: AxisMap) -> AxisMap:
    """Map of `a` on `p` from `outer` (a on b, over b's axes) and `inner` (b on p)."""
    return tuple(None if j is None else outer[j] for j in inner)


def remap_axes(deps: Deps, axis_to: Dict[int, int]) -> Deps:
    """Move matched axes through a layout change: `axis_to[old] = new`; absent → free."""
    return {key: tuple(axis_to.get(j) if j is not None else None for j in m) for key, m in deps.items()}


def free_all(deps: Deps) -> Deps:
    """Forget every match (a mixing operation)."""
    return {key: (None,) * len(m) for key, m in deps.items()}


def lost_matches(before: Deps, after: Deps) -> Dict[Hashable, Tuple[int, ...]]:
    """Input axes matched in `before` but free in `after`: the neuron axes an op mixed."""
    lost = {}
    for key, m in before.items():
        n = after.get(key)
        if n is None:
            continue
        axes = tuple(k for k, (x, y) in enumerate(zip(m, n)) if x is not None and y is None)
        if axes:
            lost[key] = axes
    return lost


def is_diagonal(m: AxisMap) -> bool:
    return all(j is not None for j in m)
