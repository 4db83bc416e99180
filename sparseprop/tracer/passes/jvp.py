"""Pass 4: the JVP program of the cut step, and the readouts whose traces may be kept filtered
→ `Jvp`."""
from __future__ import annotations

from typing import Tuple

import jax
from jax.extend import core as jcore

from ..analysis import NEURON_AXIS
from ..errors import TracerError, source_line
from ..jaxpr_util import all_equations, live_program
from ..records import Cuts, InputKey, Jvp, Projection, Step
from ..sparse import check_constant_indices, find_edge_synapses
from ..structure import identity_map
from .cuts import cut_state


def trace_jvp(step: Step, cuts: Cuts, neuron_axes=None) -> Jvp:
    """(p, s, xs, dp, ds) -> (new differentiable state, its tangent, the other new state leaves).

    `cuts=None`: the model as written. `neuron_axes` (passes/neurons.py; default: the leading
    axis) tells which readouts mix neurons.

    **Raises:**

    `TracerError` when the step has no forward-mode derivative (naming the primitive and line).
    """
    S = step.diff_states
    fixed = [i for i in range(len(step.s_avals)) if i not in S]

    def jvp_program(p, s, xs, dp, ds):
        def f(p, sd):
            full = list(s)
            for i, v in zip(S, sd):
                full[i] = v
            new = cut_state(step, cuts, p, full, xs)
            return [new[i] for i in S]
        primal, tangent = jax.jvp(f, (p, [s[i] for i in S]), (dp, ds))
        # state leaves without a derivative (integer counters) still advance
        new = cut_state(step, cuts, p, s, xs) if fixed else []
        return primal, tangent, [new[i] for i in fixed]

    p, s, xs = list(step.p_avals), list(step.s_avals), list(step.x_avals)
    try:
        closed = jax.make_jaxpr(jvp_program)(p, s, xs, p, [s[i] for i in S])
    except TracerError:
        raise
    except Exception as e:    # the model traced fine, so this is about its derivative
        raise TracerError(_explain_jvp_failure(e, step.jaxpr)) from e
    closed = live_program(closed)
    jx = closed.jaxpr
    n_in = len(p) + len(s) + len(xs)
    in_deps = [{} for _ in range(n_in)]
    in_deps += [{("param", j): identity_map(len(a.shape))} for j, a in enumerate(p)]
    in_deps += [{("state", i): identity_map(len(s[i].shape))} for i in S]
    dp_vars = jx.invars[n_in: n_in + len(p)]
    raw = {v: (("param", j), identity_map(len(p[j].shape))) for j, v in enumerate(dp_vars)}
    edges = find_edge_synapses(closed, len(p), len(s), len(xs))
    for edge in edges:
        check_constant_indices(edge, closed)
    return Jvp(closed, tuple(in_deps), raw, find_projections(jx, S, len(p), neuron_axes or {}), edges)


def find_projections(jx, S, n_params, neuron_axes) -> Tuple[Projection, ...]:
    """Readouts of a new state leaf through a fixed matrix: `dot_general(W, ds_b)` at the top
    level of the JVP program, with W computed from parameters alone and the product mixing
    b's neuron axis. Such a readout's trace can be kept as a filtered copy of b's trace."""
    n = len(S)
    tangent_of = {v: S[pos] for pos, v in enumerate(jx.outvars[n: 2 * n]) if isinstance(v, jcore.Var)}
    param_only = set(jx.invars[:n_params]) | set(jx.constvars)
    for eqn in jx.eqns:
        if all(isinstance(v, jcore.Literal) or v in param_only for v in eqn.invars):
            param_only |= set(eqn.outvars)
    fixed = lambda v: isinstance(v, jcore.Literal) or v in param_only   # noqa: E731
    producer = {v: eqn for eqn in jx.eqns for v in eqn.outvars}
    found = []
    for i, eqn in enumerate(jx.eqns):
        if eqn.primitive.name != "dot_general":
            continue
        for side in (0, 1):
            t, w = eqn.invars[side], eqn.invars[1 - side]
            contracting = eqn.params["dimension_numbers"][0][side]
            t, prefix = _gains(t, producer, tangent_of, fixed)
            if (t is not None and set(contracting) & neuron_axes.get(tangent_of[t], {NEURON_AXIS}) and fixed(w)):
                found.append(Projection((i,), InputKey("projection", len(found)), tangent_of[t], side, eqn, prefix))
                break
    return tuple(found)


def _gains(t, producer, tangent_of, fixed):
    """`(state tangent, prefix)` where `t` is that tangent times fixed per-neuron factors
    (elementwise products of the same shape), else `(None, ())`."""
    prefix = []
    while isinstance(t, jcore.Var) and t not in tangent_of:
        eqn = producer.get(t)
        if eqn is None or eqn.primitive.name != "mul":
            return None, ()
        k = next((k for k in (0, 1) if not fixed(eqn.invars[k])), None)
        if k is None or not fixed(eqn.invars[1 - k]) or eqn.invars[k].aval.shape != t.aval.shape:
            return None, ()
        prefix.append((eqn, k))
        t = eqn.invars[k]
    return (t, tuple(reversed(prefix))) if isinstance(t, jcore.Var) else (None, ())


def _explain_jvp_failure(e, jaxpr) -> str:
    msg = str(e)
    lowered = msg.lower()
    for eqn in all_equations(jaxpr):
        name = eqn.primitive.name
        if name in msg or name.replace("_", " ") in lowered:
            return (f"sparseprop cannot differentiate the primitive '{name}' (at {source_line(eqn)}) "
                    f"in forward mode, which every online method needs: {type(e).__name__}: {msg} "
                    f"Give that operation a derivative with jax.custom_jvp, or keep it out of the "
                    f"state update (an operation on the output only is differentiated in reverse mode).")
    return f"sparseprop cannot build the forward-mode program of this model: {type(e).__name__}: {msg}"
