"""Is a custom derivative rule linear in its tangent (or cotangent)? A structural check on its jaxpr.

Used on custom_vjp backward rules (linear in the cotangent g) and on custom_jvp rules
(linear in the tangent du).

A forward derivative is read off a backward rule by transposing it (`jax.linear_transpose`),
which is right only for a linear rule. JAX's transpose rules of `add`, `pad`, `select_n`,
`concatenate`, ... pass the cotangent to the linear operand and ignore a constant one, so an
affine rule (`g * s(u) + 0.01`) would be transposed silently and wrongly. Non-linear uses of
the cotangent (`g * g`, `clip(g)`) make the transpose itself fail, which is reported too.

The check marks each value as *linear* (depends on the cotangent), *zero* (a known zero
constant) or *constant* (anything else), and flags an equation that combines a linear
operand with a non-zero constant one, except in a slot where a constant multiplies or
selects (`mul`, the denominator of `div`, `dot_general`, convolutions, indices, predicates).
It also flags a product of two linear operands (`g * g`) and a linear operand of a
non-linear elementwise function (`sin(g)`, `max(g, 0)`). Each primitive's class is said in
registry.py (`PrimitiveInfo.linearity`); a primitive in no class passes a linear operand on
as linear when every float operand is linear or zero.
"""
from __future__ import annotations

from typing import List, Optional

import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from .jaxpr_util import sub_jaxpr
from .registry import lookup


def _is_float(v) -> bool:
    return jnp.issubdtype(v.aval.dtype, jnp.inexact)


def affine_equation(jaxpr, linear_in: List[bool]) -> Optional[object]:
    """The first equation of `jaxpr` that is affine (or not provably linear) in the inputs
    flagged in `linear_in`, or None. A float output that is a non-zero constant also counts
    (the rule adds it whatever the cotangent): that output variable is returned."""
    found, outs = _walk(jaxpr, ["linear" if lin else None for lin in linear_in])
    if found is not None:
        return found
    for v, k in zip(jaxpr.outvars, outs):
        if _is_float(v) and k is None:
            return v
    return None


def _walk(jaxpr, in_kinds):
    """(first affine equation or None, kind of each output)."""
    kind = {v: k for v, k in zip(jaxpr.invars, in_kinds) if k is not None}

    def read(v):
        if isinstance(v, jcore.Literal):
            # numpy, not jnp: this runs inside a trace, where jnp would build tracers
            return "zero" if not np.any(np.asarray(v.val)) else None
        return kind.get(v)

    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        info = lookup(eqn)
        sub, _ = sub_jaxpr(eqn)
        if "linear" not in ins:
            if sub is not None:    # a library call building zeros (jnp.zeros_like under jit)
                outs = _walk(sub, ins)[1]
            else:
                outs = ["zero" if _zero(eqn, info.linearity, ins) else None for _ in eqn.outvars]
        elif sub is not None:
            found, outs = _walk(sub, ins)
            if found is not None:
                return found, []
        elif info.kind == "branch":
            found, outs = _branches(eqn, ins)
            if found is not None:
                return found, []
        elif not _linear(eqn, info.linearity, ins):
            return eqn, []
        else:
            outs = ["linear" for _ in eqn.outvars]
        for v, k in zip(eqn.outvars, outs):
            if k is not None:
                kind[v] = k
    return None, [read(v) for v in jaxpr.outvars]


def _zero(eqn, linearity: str, ins) -> bool:
    """Whether an equation without linear operands outputs a known zero."""
    floats = [k for k, v in enumerate(eqn.invars) if _is_float(v)]
    return ((linearity == "zero_preserving" and bool(ins) and ins[0] == "zero")
            or (linearity == "bilinear" and "zero" in ins)
            or (linearity == "sum" and all(ins[k] == "zero" for k in floats)))


def _linear(eqn, linearity: str, ins) -> bool:
    """Whether an equation with a linear operand is linear in it: every float operand is
    linear or zero, except in a slot where a constant multiplies (a product's other factor,
    a denominator); a product of two linear factors and a non-linear function are not."""
    floats = [k for k, v in enumerate(eqn.invars) if _is_float(v)]
    if linearity == "nonlinear":
        return False
    if linearity == "bilinear":
        return ins.count("linear") == 1
    if linearity == "quotient":
        return ins[1] != "linear"
    return all(ins[k] is not None for k in floats)


def _branches(eqn, ins):
    """(first affine equation or None, output kinds) of a cond over its branches."""
    outs = None
    for br in eqn.params["branches"]:
        found, o = _walk(br.jaxpr, ins[1:])
        if found is not None:
            return found, []
        outs = o if outs is None else [a if a == b else (None if "linear" not in (a, b) else "mixed")
                                       for a, b in zip(outs, o)]
    if "mixed" in outs:
        return eqn, []    # one branch passes the cotangent on, another a constant
    return None, outs


__all__ = ["affine_equation"]
