"""Pass 3: apply the method's cuts (a stop_gradient on each cut mixing operand) → `Cuts`;
and the cut step itself, evaluated (used by the JVP pass and at run time)."""
from __future__ import annotations

import jax

from ..analysis import analyse
from ..interpreter import FORWARD_DIFFERENTIABLE, evaluate, forward
from ..records import Cuts, MixingGraph, Step
from .mixing import set_flags, state_axes


def apply_cuts(step: Step, graph: MixingGraph, method) -> Cuts:
    """The cut model's mixing pass: later mixing is judged on the model with earlier cuts."""
    analysis = analyse(step.jaxpr, list(graph.in_deps), mode="mixing", cut=method.cut,
                       classify=lambda mix: set_flags(mix, graph.flags), neuron_axes=state_axes(graph.neuron_axes))
    # previous state leaves the output depends on, through the step the learning signal takes
    outputs = (analysis.outputs if method.cut_output else graph.uncut_outputs)[len(step.s_avals):]
    reads = frozenset(key[1] for d in outputs for key in d if isinstance(key, tuple) and key[0] == "state")
    cuts = tuple(m for m in analysis.mixing if method.cut(m))
    return Cuts(cuts, analysis, reads, method.cut_output)


def evaluate_cut(step: Step, cuts: Cuts, p, s, xs, forward_differentiable: bool):
    """The model's step with the cuts applied (`cuts=None`: as written); outputs as the step's
    jaxpr (state, then y). Evaluated through the interpreter, so every equation is applied in a
    form both modes of differentiation follow (registry.py's `apply`)."""
    overrides = {c.path: _stop_gradient_operand(c.operand) for c in cuts.cuts} if cuts is not None else {}
    return evaluate(step.jaxpr, step.consts, list(p) + list(s) + list(xs), overrides,
                    FORWARD_DIFFERENTIABLE if forward_differentiable else None)


def cut_state(step: Step, cuts: Cuts, p, s, xs):
    """The model's state update with the method's cuts applied."""
    return evaluate_cut(step, cuts, p, s, xs, True)[:len(s)]


def cut_output(step: Step, cuts, p, s, xs):
    """The model's output with the cuts applied (the step the learning signal goes through;
    `cuts=None`: the model as written)."""
    outs = evaluate_cut(step, cuts, p, s, xs, False)[len(s):]
    return jax.tree_util.tree_unflatten(step.y_def, outs)


def _stop_gradient_operand(k):
    def override(eqn, invals):
        invals = list(invals)
        invals[k] = jax.lax.stop_gradient(invals[k])
        return forward(eqn, invals)
    return override
