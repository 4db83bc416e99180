"""Integer values that equal their own index along an axis (`jnp.arange(n)` and its broadcasts).

`x[jnp.arange(n), idx]` reads one entry per row: each neuron its own delay tap. Its gather
takes an index vector whose first component is an iota along the neuron axis, which makes
row i of the result depend on row i of `x` only. The structural rules of gather and scatter
read that from the facts kept here.

A fact about an integer variable `v` is a tuple with one entry per index-vector component
(the entries of v's last axis): `a` when `v[..., c]` equals the position along v's axis `a`
(for every index), else `None`. A whole iota (`v[α] == α[a]`) is stored as `("all", a)`,
and a predicate false everywhere as `("false",)`.
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


def index_fact(eqn, facts: Sequence[Fact]) -> list:
    """Facts about `eqn`'s outputs from its operands' (an equation with no tangent input)."""
    name = eqn.primitive.name
    out = [None for _ in eqn.outvars]
    shapes = [getattr(v.aval, "shape", ()) for v in eqn.invars]
    if name == "iota":
        out[0] = ("all", eqn.params["dimension"])
    elif name in ("convert_element_type", "copy", "copy_p") and facts[0] is not None:
        out[0] = facts[0]
    elif name == "broadcast_in_dim" and facts[0] is not None and facts[0][0] == "all":
        a = facts[0][1]
        d = eqn.params["broadcast_dimensions"][a]
        if shapes[0][a] == eqn.params["shape"][d]:
            out[0] = ("all", d)
    elif name == "select_n" and facts[0] == ("false",):
        out[0] = facts[1]
    elif name == "lt" and _always_false_compare(eqn, facts):
        out[0] = ("false",)   # `arange(n) < 0`: JAX's negative-index normalisation
    elif name == "concatenate" and eqn.params["dimension"] == len(eqn.outvars[0].aval.shape) - 1:
        cols = [columns(f, s) for f, s in zip(facts, shapes)]
        if any(c is not None for c in cols):
            out[0] = tuple(x for c, s in zip(cols, shapes) for x in (c or (None,) * s[-1]))
    return out


def _always_false_compare(eqn, facts: Sequence[Fact]) -> bool:
    if facts[0] is None or facts[0][0] != "all":
        return False
    rhs = eqn.invars[1]
    return isinstance(rhs, jcore.Literal) and np.all(np.asarray(rhs.val) <= 0)


def batch_axes(indices_ndim: int, index_vector_dim: int) -> list:
    """Axes of the index array that enumerate lookups (all but the index-vector axis)."""
    return [d for d in range(indices_ndim) if d != index_vector_dim]
