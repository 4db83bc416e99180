"""Pass 1b: which axes of each state leaf index neurons (no axis is assumed to).

The neuron axes of a state leaf are the axes the model's synapses index: the output axes of a
product with a parameter matrix that come from the matrix (not from a batch or the input), a
convolution's output channels and positions, the `post` of a sparse synapse; and the axes that
such axes of other state leaves reach one to one (the one axis of a one-axis leaf counts as a
neuron axis). Every other axis is internal to a neuron (delay taps, compartments, real and
imaginary parts, a batch axis written into the model): coupling along it is per-neuron
dynamics, which every method keeps. A leaf that nothing reaches keeps its leading axis.

Found on the structure of the model's uncut JVP program (passes 4 and 5 without cuts).
"""
from __future__ import annotations

from typing import Dict, FrozenSet

from jax.extend import core as jcore

from .. import convolution
from ..jaxpr_util import equation_at, sub_jaxpr
from ..records import InputKey, Step
from ..registry import lookup
from .blocks import synapse_param_map
from .jvp import trace_jvp
from .structure import analyse_structure

NeuronAxes = Dict[int, FrozenSet[int]]


def default_axes(step: Step) -> NeuronAxes:
    """The leading axis of every state leaf (all a one-axis leaf has)."""
    return {i: frozenset({0}) if len(a.shape) else frozenset() for i, a in enumerate(step.s_avals)}


def find_neuron_axes(step: Step) -> NeuronAxes:
    """The neuron axes of every state leaf (`{flat state index: axes}`).

    Leaves of one axis or none need no search (their only axis is the neuron axis).
    """
    axes = default_axes(step)
    if all(len(step.s_avals[i].shape) <= 1 for i in step.diff_states):
        return axes
    jvp = trace_jvp(step, None)
    structure = analyse_structure(step, jvp, ())
    # a leaf of one axis: that axis indexes neurons (the default, which other leaves inherit)
    found = {a: set(axes[a]) if len(step.s_avals[a].shape) == 1 else set() for a in step.diff_states}
    # a product whose other operand is the previous state itself (`s @ G` over compartments)
    # acts inside a neuron unless nothing else says where the neurons are: input synapses first
    recurrent = _state_fed(jvp.closed.jaxpr, len(step.p_avals), len(step.s_avals))
    feedforward = {InputKey(*syn.key) for syn in structure.synapses
                   if _operand(jvp.closed.jaxpr, syn) not in recurrent}
    for a in step.diff_states:
        keys = [key for key in structure.jmap[a] if key.kind != "synapse" or key in feedforward]
        if not any(_synapse_axes(structure, key) for key in keys):
            keys = list(structure.jmap[a])
        for key in keys:
            m = structure.jmap[a][key]
            for axis in _synapse_axes(structure, key):
                if m[axis] is not None:
                    found[a].add(m[axis])
    changed = True
    while changed:      # neuron axes reach other leaves through one-to-one maps
        changed = False
        for a in step.diff_states:
            for b, m in structure.state_inputs(a):
                more = {m[k] for k in found.get(b, ()) if m[k] is not None} - found[a]
                if more:
                    found[a] |= more
                    changed = True
    return {**axes, **{a: frozenset(f) for a, f in found.items() if f}}


def _operand(jaxpr, syn):
    """The variable of a synapse's other operand (the presynaptic value)."""
    eqn = equation_at(jaxpr, syn.path)
    return eqn.invars[1 - syn.param_side] if syn.primitive != convolution.PRIMITIVE else eqn.invars[0]


def _state_fed(jaxpr, n_params: int, n_states: int) -> set:
    """Variables of the JVP program (at any depth of calls) whose value depends on the previous state."""
    fed = set(jaxpr.invars[n_params: n_params + n_states])
    _spread(jaxpr, fed)
    return fed


def _spread(jaxpr, fed: set) -> None:
    for eqn in jaxpr.eqns:
        sub, _ = sub_jaxpr(eqn)
        if sub is not None and lookup(eqn).kind == "call":
            fed |= {iv for iv, ov in zip(sub.invars, eqn.invars) if isinstance(ov, jcore.Var) and ov in fed}
            _spread(sub, fed)
            if any(v in fed for v in sub.outvars if isinstance(v, jcore.Var)):
                fed |= {ov for ov, iv in zip(eqn.outvars, sub.outvars) if isinstance(iv, jcore.Var) and iv in fed}
        elif any(isinstance(v, jcore.Var) and v in fed for v in eqn.invars):
            fed |= set(eqn.outvars)


def _synapse_axes(structure, key: InputKey):
    """Axes of a synapse's output that index neurons."""
    if key.kind == "edge":
        return (0,)
    if key.kind != "synapse":
        return ()
    syn = structure.synapses[key.index]
    if syn.primitive == convolution.PRIMITIVE:
        _, _, out_spec = syn.params["dimension_numbers"]
        return tuple(out_spec[1:])                 # output channels and positions
    p_shape = structure.input_shapes[InputKey(*syn.param)]
    return tuple(j for j in synapse_param_map(syn, p_shape) if j is not None)
