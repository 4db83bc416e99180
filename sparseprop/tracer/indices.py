"""Integer values that equal their own index along an axis (`jnp.arange(n)` and its broadcasts).

`x[jnp.arange(n), idx]` reads one entry per row: each neuron its own delay tap. Its gather
takes an index vector whose first component is an iota along the neuron axis, which makes
row i of the result depend on row i of `x` only. The structural rules of gather and scatter
read that from the facts kept here.

A fact about an integer variable `v` is a tuple with one entry per index-vector component
(the entries of v's last axis): `a` when `v[..., c]` equals the position along v's axis `a`
(for every index), else `None`. A whole iota (`v[α] == α[a]`) is stored as `("all", a)`,
and a predicate false everywhere as `("false",)`.

Each `*_fact(eqn, facts)` below is the index-fact rule of the primitives that registry.py
gives it: the facts of `eqn`'s outputs (one per output, None where nothing is known) from
its operands' facts, for an equation with no tangent input.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from jax.extend import core as jcore

Fact = Optional[tuple]


def columns(fact: Fact, shape) -> Optional[tuple]:
    """Per last-axis entry: the axis it counts along, or None."""
    if fact is None or not shape:
        return None
    if fact[0] == "all":
        a = fact[1]
        return None if a == len(shape) - 1 else (a,) * shape[-1]
    return fact


def iota_fact(eqn, facts: Sequence[Fact]) -> list:
    """`iota`: the whole array counts along its `dimension`."""
    return [("all", eqn.params["dimension"])]


def same_fact(eqn, facts: Sequence[Fact]) -> list:
    """A value-preserving copy (`convert_element_type`, `copy`): the operand's fact."""
    return [facts[0]]


def broadcast_fact(eqn, facts: Sequence[Fact]) -> list:
    """`broadcast_in_dim` of an iota: an iota along the axis its counting axis goes to
    (unless that axis is broadcast from size 1)."""
    if facts[0] is None or facts[0][0] != "all":
        return [None]
    a = facts[0][1]
    d = eqn.params["broadcast_dimensions"][a]
    return [("all", d) if eqn.invars[0].aval.shape[a] == eqn.params["shape"][d] else None]


def select_fact(eqn, facts: Sequence[Fact]) -> list:
    """`select_n(pred, a, b)` with a predicate false everywhere: case `a`'s fact."""
    return [facts[1] if facts[0] == ("false",) else None]


def negative_index_fact(eqn, facts: Sequence[Fact]) -> list:
    """`lt`: `arange(n) < 0` (JAX's negative-index normalisation) is false everywhere."""
    if facts[0] is None or facts[0][0] != "all":
        return [None]
    rhs = eqn.invars[1]
    false = isinstance(rhs, jcore.Literal) and np.all(np.asarray(rhs.val) <= 0)
    return [("false",) if false else None]


def concatenate_fact(eqn, facts: Sequence[Fact]) -> list:
    """Index vectors assembled along the last axis: the components of each operand."""
    if eqn.params["dimension"] != len(eqn.outvars[0].aval.shape) - 1:
        return [None]
    shapes = [getattr(v.aval, "shape", ()) for v in eqn.invars]
    cols = [columns(f, s) for f, s in zip(facts, shapes)]
    if all(c is None for c in cols):
        return [None]
    return [tuple(x for c, s in zip(cols, shapes) for x in (c or (None,) * s[-1]))]


def batch_axes(indices_ndim: int, index_vector_dim: int) -> list:
    """Axes of the index array that enumerate lookups (all but the index-vector axis)."""
    return [d for d in range(indices_ndim) if d != index_vector_dim]
