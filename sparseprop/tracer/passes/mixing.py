"""Pass 2: find the operations that mix neurons of the previous state and classify them on
the step's state graph → `MixingGraph`.

An operation is *recurrent* when it lies on a cycle of the state graph (the new state of a
population depends through it on that population's previous state), *feed-forward* when its
result reaches another population's new state only, *output only* when it reaches no new state.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

from ..analysis import Analysis, Mixing, MixTag, analyse
from ..records import MixingGraph, Step
from ..structure import identity_map


def model_in_deps(step: Step) -> Tuple:
    """Tracked inputs of the model's jaxpr: each differentiable previous state leaf."""
    return tuple([{} for _ in step.p_avals] + [
        {("state", i): identity_map(len(a.shape))} if i in step.diff_states else {}
        for i, a in enumerate(step.s_avals)] + [{} for _ in step.x_avals])


def classify_mixing(step: Step, neuron_axes) -> MixingGraph:
    """The state graph comes from the model as written; cutting every mixing operand finds
    them all (a cut never reveals a new one). An operation mixes neurons when it loses a match
    along a neuron axis of a state leaf (`neuron_axes`, passes/neurons.py)."""
    in_deps = model_in_deps(step)
    axes = state_axes(neuron_axes)
    uncut = analyse(step.jaxpr, list(in_deps), mode="mixing", neuron_axes=axes).outputs
    found = analyse(step.jaxpr, list(in_deps), mode="mixing", cut=lambda mix: True, neuron_axes=axes)
    flags = mixing_flags(found, uncut[:len(step.s_avals)])
    for mix in found.mixing:
        set_flags(mix, flags)
    return MixingGraph(tuple(found.mixing), flags, tuple(uncut), in_deps, dict(neuron_axes))


def state_axes(neuron_axes):
    """`{("state", i): axes}`: the walker's form of the neuron axes."""
    return {("state", i): axes for i, axes in neuron_axes.items()}


def mixing_flags(found: Analysis, graph: List[Dict]) -> Dict[Tuple, Tuple[bool, bool]]:
    """`(recurrent, reaches_state)` of every mixing equation in `found`, by path and operand.

    `graph[a]` holds the dependencies of new state leaf a: an edge b → a for each previous
    state leaf b in it. A mixing equation whose operand carries previous state b and whose
    result reaches new state a lies on a recurrent path when a == b or a reaches b in that
    graph (a cycle through the equation).
    """
    edges = {a: {key[1] for key in d if isinstance(key, tuple) and key[0] == "state"} for a, d in enumerate(graph)}
    # reach[b]: the leaves whose value depends, some steps later, on leaf b's value now
    reach = {b: {a for a in edges if b in edges[a]} for b in edges}
    changed = True
    while changed:
        changed = False
        for b in reach:
            more = set().union(set(), *(reach[c] for c in reach[b])) - reach[b]
            if more:
                reach[b] |= more
                changed = True
    flags = {}
    for mix in found.mixing:
        reached = {a for a, d in enumerate(found.outputs[:len(graph)]) if MixTag(mix.path) in d}
        olds = {key[1] for key in mix.states}
        recurrent = any(a == b or b in reach[a] for a in reached for b in olds)
        flags[(mix.path, mix.operand)] = (recurrent, bool(reached))
    return flags


def set_flags(mix: Mixing, flags) -> None:
    # a mixing equation unseen in the uncut pass cannot arise from cutting: stay conservative
    mix.recurrent, mix.reaches_state = flags.get((mix.path, mix.operand), (True, True))
