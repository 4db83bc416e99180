"""Pass 5: the structural analysis of the JVP program → `Structure` (dependency maps of every
new state leaf on every tracked input, uniform Jacobian blocks, synapses)."""
from __future__ import annotations

from typing import Tuple

from ..analysis import analyse
from ..jaxpr_util import equation_at
from ..records import InputKey, Jvp, Projection, Step, Structure
from .chains import find_chains


def analyse_structure(step: Step, jvp: Jvp, projections: Tuple[Projection, ...]) -> Structure:
    """Walk the JVP program with `projections` standing for tracked inputs of their own."""
    jx = jvp.closed.jaxpr
    stand_ins = {**{pr.path: pr.key for pr in projections}, **{e.path: e.key for e in jvp.edges}}
    analysis = analyse(jx, list(jvp.in_deps), mode="jacobian", raw=jvp.raw, projections=stand_ins)
    S = step.diff_states
    n = len(S)
    jmap = {a: {InputKey(*key): m for key, m in d.items()} for a, d in zip(S, analysis.outputs[n: 2 * n])}
    uniform = {a: analysis.uniform[n + pos] for pos, a in enumerate(S)}
    shapes, dtypes = {}, {}
    for j, a in enumerate(step.p_avals):
        shapes[InputKey("param", j)], dtypes[InputKey("param", j)] = tuple(a.shape), a.dtype
    for i, a in enumerate(step.s_avals):
        shapes[InputKey("state", i)], dtypes[InputKey("state", i)] = tuple(a.shape), a.dtype
    for pr in projections:
        aval = pr.eqn.outvars[0].aval
        shapes[InputKey(*pr.key)], dtypes[InputKey(*pr.key)] = tuple(aval.shape), aval.dtype
    for syn in analysis.synapses:
        key = InputKey(*syn.key)
        shapes[key], dtypes[key] = tuple(syn.out_shape), equation_at(jx, syn.path).outvars[0].aval.dtype
    for edge in jvp.edges:
        shapes[edge.key] = edge.out_shape
        dtypes[edge.key] = equation_at(jx, edge.path).outvars[0].aval.dtype
    swapped = set(stand_ins) | {syn.path for syn in analysis.synapses}
    chains, chain_direct, chain_paths = find_chains(step, jvp, stand_ins, swapped)
    for key in chain_paths:
        shapes[key], dtypes[key] = shapes[InputKey("state", key.index)], dtypes[InputKey("state", key.index)]
    return Structure(jx, analysis, tuple(projections), jmap, uniform, shapes, dtypes, jvp.edges, chains, chain_paths,
                     chain_direct)
