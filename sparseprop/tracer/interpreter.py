"""Evaluate a jaxpr equation by equation, with some equations replaced.

The emitted online program is this interpreter traced once under `jax.jit`: the
replacements (a synapse's output swapped for a probe, a stop_gradient on a mixing
operand, a custom_vjp turned forward-differentiable) cost nothing at run time.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, Sequence, Tuple

from jax._src import source_info_util
from jax.extend import core as jcore

import jax
import jax.numpy as jnp

from .errors import UNKNOWN_SOURCE, TracerError, source_line
from .jaxpr_util import sub_jaxpr
from .linearity import affine_equation
from .registry import entries, lookup

Override = Callable[[object, list], list]


def evaluate(jaxpr, consts: Sequence, args: Sequence, overrides: Dict[Tuple[int, ...], Override],
             by_primitive: Dict[str, Override] | None = None, path: Tuple[int, ...] = ()):
    """Run `jaxpr` on `args`; `overrides[path](eqn, invals)` replaces the equation at `path`.

    **Arguments:**

    - `jaxpr`, `consts`, `args`: an open jaxpr, its constants and its inputs.
    - `overrides`: replacement functions keyed by equation path (indices through calls).
    - `by_primitive`: replacement functions keyed by primitive name (applied everywhere).

    **Returns:**

    The list of output values.
    """
    by_primitive = by_primitive or {}
    env = {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    for v, x in zip(jaxpr.constvars, consts):
        env[v] = x
    for v, x in zip(jaxpr.invars, args):
        env[v] = x
    for i, eqn in enumerate(jaxpr.eqns):
        here = path + (i,)
        invals = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        if here in overrides:
            outs = overrides[here](eqn, invals)
        elif lookup(eqn).kind == "call" and sub_jaxpr(eqn)[0] is not None:
            sub, sub_consts = sub_jaxpr(eqn)
            # equations inside library calls (jnp.pad is a jit) keep the user's call site
            with _user_context(eqn):
                outs = evaluate(sub, sub_consts, invals, overrides, by_primitive, here)
        elif name in by_primitive:
            outs = by_primitive[name](eqn, invals)
        else:
            outs = bind(eqn, invals)
        if not eqn.primitive.multiple_results and not isinstance(outs, (list, tuple)):
            outs = [outs]
        for v, x in zip(eqn.outvars, outs):
            env[v] = x
    return [read(v) for v in jaxpr.outvars]


def _user_context(eqn):
    """The source context of `eqn`, or the enclosing one when `eqn` has no user frame."""
    if source_line(eqn) == UNKNOWN_SOURCE:
        return contextlib.nullcontext()
    return source_info_util.user_context(eqn.source_info.traceback, name_stack=eqn.source_info.name_stack)


def bind(eqn, invals):
    """Apply `eqn`'s primitive to `invals`, keeping the user's source information (through the
    registry's `apply` where the primitive itself cannot be transposed)."""
    apply = lookup(eqn).apply
    with _user_context(eqn):
        outs = apply(eqn, invals) if apply is not None else None
        if outs is not None:
            return list(outs)
        out = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
    return list(out) if eqn.primitive.multiple_results else [out]


def forward_custom_vjp(eqn, invals):
    """A custom_vjp call made forward-differentiable: J·t is the transpose of its vjp."""
    @jax.custom_jvp
    def call(*args):
        return bind(eqn, list(args))

    @call.defjvp
    def call_jvp(primals, tangents):
        out, vjp_fn = jax.vjp(lambda *a: bind(eqn, list(a)), *primals)
        tangents = [jnp.zeros_like(p) if type(t).__name__ == "SymbolicZero" else t
                    for p, t in zip(primals, tangents)]
        what = (f"the custom_vjp function {custom_function_name(eqn)}, called at {source_line(eqn)}, "
                f"has a backward rule that")
        advice = ("Define its derivative with jax.custom_jvp (or use sparseprop.spike / "
                  "sparseprop.surrogates); sparseprop.bptt_grad, which only needs the backward "
                  "rule, still works.")
        bwd = jax.make_jaxpr(vjp_fn)(out)
        affine = affine_equation(bwd.jaxpr, [True] * len(bwd.jaxpr.invars))
        if affine is not None:
            raise TracerError(
                f"{what} is not linear in the cotangent g (it has a term that does not scale "
                f"with g, e.g. `g * s(u) + c`, or uses g non-linearly). Forward mode reads "
                f"the derivative off the backward rule by transposing it, which is only right for "
                f"a rule linear in g. {advice}")
        try:
            (jvp_out,) = jax.linear_transpose(vjp_fn, out)(tuple(tangents))
        except Exception as e:
            raise TracerError(
                f"{what} cannot be transposed into a forward derivative (it must be linear in the "
                f"cotangent): {type(e).__name__}: {e}. {advice}") from e
        return out, list(jvp_out)

    return call(*invals)


def custom_function_name(eqn) -> str:
    """`'name' (defined at file:line)` of the user's function behind a custom-derivative call."""
    for key in ("call_jaxpr", "fun_jaxpr", "jaxpr"):
        j = eqn.params.get(key)
        name = _described(getattr(getattr(j, "jaxpr", j), "debug_info", None))
        if name:
            return name
    return f"'{eqn.params.get('name', eqn.primitive.name)}'"


def jvp_rule_name(eqn) -> str:
    """`'name' (defined at file:line)` of the JVP rule of a custom_jvp call, or ''."""
    return _described(getattr(eqn.params.get("jvp_jaxpr_fun"), "debug_info", None))


def _described(debug_info) -> str:
    src = getattr(debug_info, "func_src_info", None)
    if not src:
        return ""
    name, _, where = src.partition(" at ")
    return f"'{name}' (defined at {where})" if where else f"'{name}'"


# `evaluate(..., by_primitive=FORWARD_DIFFERENTIABLE)`: every primitive with a forward
# override in registry.py (custom_vjp calls), by name.
FORWARD_DIFFERENTIABLE = {info.name: info.forward for info in entries() if info.forward is not None}


def forward(eqn, invals):
    """Apply `eqn` in a form that jax.jvp can differentiate."""
    return (lookup(eqn).forward or bind)(eqn, invals)
