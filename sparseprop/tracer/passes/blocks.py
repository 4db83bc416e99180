"""Pass 6a: which trace blocks M[a, p] exist, and the storage kind of each (storage.py).

The blocks' structure is the fixed point total(a, p) = direct(a, p) ∪ ⋃_b J[a←b] ∘ total(b, p)
of the proved dependency maps; a method may restrict it (SnAp-1 keeps the one-step pattern).
Then, from the proved uniformity of the Jacobian blocks, the cheapest exact storage:
factorised (ū shared by every neuron), a convolution's filtered input, a block recomputed from
an intra-step chain's sources, or a readout's filtered eligibility.
"""
from __future__ import annotations

from typing import Dict, FrozenSet, Tuple

import jax.numpy as jnp

from .. import convolution
from .. import jacobian as jac
from ..errors import source_line
from ..jaxpr_util import equation_at
from ..records import InputKey, Step, Structure, nbytes
from ..storage import (ConvolutionWindow, Dense, Derived, DerivedPerEdge, Factorised, PerEdge, PerEntry,
                       ReadoutFiltered, Storage, Synaptic, per_entry)
from ..structure import AxisMap, compose_maps, identity_map, merge_maps

# Above this many bytes of dense trace per example, building a program warns.
DENSE_WARNING_BYTES = 64 * 2**20

Key = Tuple[int, int]    # (state leaf, parameter leaf)


def plan_blocks(step: Step, method, structure: Structure):
    """The blocks of the online program, their storage kinds, the truncated ones and the
    readout projections that cannot be kept filtered.

    **Returns:**

    `(blocks, truncated, rejected)`: the `Storage` of every block (readout-filtered ones after
    their sources), the keys of blocks a method cut to their one-step pattern, and `{key: why}`
    for the projections to analyse as plain operations (then the caller plans again).
    """
    direct = _direct_maps(step, structure)
    total = _fixed_point(step, structure, direct)
    kept = method.restrict(direct, total)
    truncated = tuple(sorted(k for k, m in total.items() if kept.get(k) != m))
    specs = dict(sorted(kept.items()))
    factorised = _factorisable(step, structure, specs)
    windows = _convolution_windows(step, structure, specs, factorised)
    edges = _per_edge(step, structure, specs, method.truncates)
    blocks = []
    for (a, pj), spec in specs.items():
        dtype = jnp.result_type(step.s_avals[a].dtype, step.p_avals[pj].dtype)
        p_shape = step.p_avals[pj].shape
        if (a, pj) in factorised:
            blocks.append(Factorised(a, pj, spec, jac.free_shape(spec, p_shape), dtype))
        elif (a, pj) in windows:
            syn = structure.synapses[windows[(a, pj)]]
            shape = tuple(equation_at(structure.jaxpr, syn.path).invars[0].aval.shape)
            blocks.append(ConvolutionWindow(a, pj, spec, shape, dtype, window=windows[(a, pj)]))
        elif (a, pj) in edges:
            blocks.append(PerEdge(a, pj, spec, (structure.edges[edges[(a, pj)]].nnz,), dtype, edge=edges[(a, pj)],
                                  one_step=method.truncates))
        else:
            blocks.append(per_entry(a, pj, spec, jac.stored_shape(step.s_avals[a].shape, spec, p_shape),
                                    dtype, p_shape))
    blocks = _derive(step, method, structure, blocks)
    filtered, rejected = _readout_filters(step, method, structure, blocks)
    return tuple(blocks) + filtered, truncated, rejected


def _direct_maps(step: Step, structure: Structure) -> Dict[Key, AxisMap]:
    """Maps of states on parameters within one step (through synapses or other uses)."""
    direct: Dict[Key, AxisMap] = {}
    for a in step.diff_states:
        for key, m in structure.jmap[a].items():
            if key.kind == "param":
                direct[(a, key.index)] = merge_maps(direct.get((a, key.index)), m)
            elif key.kind == "synapse":
                syn = structure.synapses[key.index]
                pm = compose_maps(m, synapse_param_map(syn, structure.input_shapes[InputKey(*syn.param)]))
                direct[(a, syn.param[1])] = merge_maps(direct.get((a, syn.param[1])), pm)
            elif key.kind == "edge":     # a sparse synapse: edge s reaches neuron post[s], not a fixed axis
                e = structure.edge(key)
                free = (None,) * len(step.p_avals[e.param].shape)
                direct[(a, e.param)] = merge_maps(direct.get((a, e.param)), free)
    return direct


def synapse_param_map(syn, p_shape) -> AxisMap:
    """Map of the synapse output I on its parameter W: kept axes matched, contracted free."""
    if syn.primitive == convolution.PRIMITIVE:
        return convolution.param_map(syn.params, syn.perm, len(p_shape))
    (lc, rc), (lb, rb) = syn.dimension_numbers
    ndims = len(p_shape)
    contract, batch = (lc, lb) if syn.param_side == 0 else (rc, rb)
    free = [a for a in range(ndims) if a not in contract and a not in batch]
    # output axes: batch, then the lhs's free axes, then the rhs's
    other_free = len(syn.out_shape) - len(batch) - len(free) if syn.param_side == 1 else 0
    out = [None] * ndims
    for pos, a in enumerate(batch):
        out[syn.perm[a]] = pos
    for pos, a in enumerate(free):
        out[syn.perm[a]] = len(batch) + other_free + pos
    return tuple(out)


def _fixed_point(step: Step, structure: Structure, direct) -> Dict[Key, AxisMap]:
    """total(a, p) = direct ∪ ⋃_b J[a←b] ∘ total(b, p), to a fixed point (maps only lose matches)."""
    total = dict(direct)
    changed = True
    while changed:
        changed = False
        for a in step.diff_states:
            for b, m in structure.state_inputs(a):
                for (bb, pj), tm in list(total.items()):
                    if bb != b:
                        continue
                    new = merge_maps(total.get((a, pj)), compose_maps(m, tm))
                    if new != total.get((a, pj)):
                        total[(a, pj)] = new
                        changed = True
    return total


def _factorisable(step: Step, structure: Structure, specs) -> FrozenSet[Key]:
    """Blocks stored as ū[l]: they provably do not depend on the neuron index.

    Holds when the block's only sources are synapses and other such blocks, through Jacobian
    blocks that are a scalar times the identity (uniformity.py), and every axis of the state
    is matched to the parameter (so nothing else indexes it).
    """
    ok = {}
    for (a, pj), spec in specs.items():
        deps, uniform = structure.jmap[a], structure.uniform[a]
        matched = sorted(x for x in spec if x is not None)
        ok[(a, pj)] = (
            matched == list(range(len(step.s_avals[a].shape))) and any(x is None for x in spec)
            and ("param", pj) not in deps
            and all(key in uniform for key in deps
                    if key.kind == "synapse" and structure.synapses[key.index].param == ("param", pj))
            and all(key in uniform for key in deps if key.kind == "state" and (key.index, pj) in specs))
    changed = True
    while changed:   # a factorised block may only be fed by factorised blocks (a source without a block is fine)
        changed = False
        for (a, pj), good in list(ok.items()):
            if good and not all(ok.get((b, pj), True) for b, _ in structure.state_inputs(a)):
                ok[(a, pj)] = False
                changed = True
    return frozenset(k for k, v in ok.items() if v)


def _convolution_windows(step: Step, structure: Structure, specs, factorised) -> Dict[Key, int]:
    """Kernel blocks stored as the filtered input ū of their convolution (convolution.py).

    Holds when the kernel enters through one convolution synapse, the block's sources are that
    synapse and other such blocks, every Jacobian feeding it is a scalar times the identity,
    and the state is the convolution's output up to size-1 axes.
    """
    ok = {}
    for (a, pj) in specs:
        syns = [k for k, syn in enumerate(structure.synapses) if syn.param == ("param", pj)]
        if (a, pj) in factorised or len(syns) != 1 or structure.synapses[syns[0]].primitive != convolution.PRIMITIVE:
            continue
        syn = structure.synapses[syns[0]]
        deps, uniform = structure.jmap[a], structure.uniform[a]
        if ("param", pj) in deps or not all(key in uniform for key in deps if key == syn.key or (
                key.kind == "state" and (key.index, pj) in specs)):
            continue
        if convolution.state_spec(syn.out_shape, step.s_avals[a].shape) is None:
            continue
        ok[(a, pj)] = syns[0]
    changed = True
    while changed:   # a filtered-input block may only be fed by such blocks
        changed = False
        for (a, pj) in list(ok):
            if not all((b, pj) in ok for b, _ in structure.state_inputs(a) if (b, pj) in specs):
                del ok[(a, pj)]
                changed = True
    return ok


def _per_edge(step: Step, structure: Structure, specs, one_step: bool) -> Dict[Key, int]:
    """Blocks of a sparse synapse's weights stored per edge (storage.PerEdge, sparse.py).

    Holds when the weights enter the network through that one sparse synapse only, the state has
    the synapse's output shape (one axis of neurons), every Jacobian between such states is per neuron,
    and the post indices can be recomputed from parameters and state (for the learning signal).
    A per-edge block is fed by per-edge blocks only (a fixed point); any block may read one.
    Under a one-step method (SnAp-1) a feed may couple neurons: the one-step pattern of a
    sparse synapse's trace is per edge, and the coupling's entries outside it are dropped.
    """
    ok = {}
    for (a, pj) in specs:
        edges = [k for k, e in enumerate(structure.edges) if e.param == pj]
        if len(edges) != 1:
            continue
        e, deps = structure.edges[edges[0]], structure.jmap[a]
        if (("param", pj) in deps or any(key.kind == "synapse" and structure.synapses[key.index].param == ("param", pj)
                                         for key in deps)
                or tuple(step.s_avals[a].shape) != e.out_shape or deps.get(e.key, (0,)) != (0,)
                or (e.index_var is None and e.rows is None)):
            continue
        ok[(a, pj)] = edges[0]
    changed = True
    while changed:
        changed = False
        for (a, pj) in list(ok):
            feeds = [(b, m) for b, m in structure.state_inputs(a) if (b, pj) in specs]
            coupled = lambda b, m: one_step and m == (None,) and tuple(step.s_avals[b].shape) == tuple(  # noqa: E731
                step.s_avals[a].shape)
            if any((m != (0,) and not coupled(b, m)) or (b, pj) not in ok for b, m in feeds):
                del ok[(a, pj)]
                changed = True
    return ok


def _derive(step: Step, method, structure: Structure, blocks) -> list:
    """Blocks of an intra-step chain's leaf z recomputed from its sources (`Derived`), placed after
    every other block: where each source block is stored per entry or factorised (so it can be
    read whole) and the coefficients are smaller than the block. A one-step method (SnAp-1)
    masks every block after its update, which a recomputed block would not follow: none there.
    """
    if method.truncates:
        return list(blocks)
    by_key = {(b.state, b.param): b for b in blocks}
    derived = []
    for blk in blocks:
        sources = structure.chains.get(blk.state, ())
        found = [by_key[(b, blk.param)] for b in sources if (b, blk.param) in by_key]
        coefficients = (len(sources),) + tuple(step.s_avals[blk.state].shape)
        if (not found or any(structure.chains.get(f.state) for f in found)
                or blk.param in structure.chain_direct.get(blk.state, ())     # z reads the parameter itself
                or nbytes(coefficients, blk.dtype) >= blk.nbytes):
            continue
        if type(blk) in (Synaptic, Dense) and all(isinstance(f, (PerEntry, Factorised)) for f in found):
            derived.append(Derived(blk.state, blk.param, blk.spec, coefficients, blk.dtype, sources=sources,
                                   full_shape=blk.shape))
        elif type(blk) is PerEdge and all(type(f) is PerEdge and f.edge == blk.edge for f in found):
            derived.append(DerivedPerEdge(blk.state, blk.param, blk.spec, coefficients, blk.dtype, edge=blk.edge,
                                          sources=sources, full_shape=blk.shape))
    replaced = {(d.state, d.param) for d in derived}
    return [b for b in blocks if (b.state, b.param) not in replaced] + derived


def _readout_filters(step: Step, method, structure: Structure, blocks) -> Tuple[tuple, Dict]:
    """Keep each readout projection as filtered traces (`ReadoutFiltered`) where that is exact;
    returns those blocks and `{key: why}` for the projections that are not (analysed as plain
    operations on the next planning round; the reason, with the cost, goes to `explain()`).

    The states the projection reaches (the readout y, and any linear filter downstream of it:
    a second leaky integrator, a synaptic current) form a group. Exact when, for each of them,
    the Jacobians on the projection and on every state it reads are scalars times the identity
    (uniformity.py), the states it reads are in the group, nothing else brings a parameter of
    b's traces into it, and no state outside the group reads it: then M[y, p] = W · ē[y, p] with
    ē[y] ← c ⊙ M[b, p] + Σ_{y'} c' ⊙ ē[y'] (one filtered eligibility per state of the group).
    Chosen when b's traces are smaller than the group's dense blocks would be. A state that is
    a per-neuron function of the group's new states (the spike of a layer fed by the readout)
    keeps no filter of its own: its block is recomputed (`Derived`) where the signal meets it.
    """
    S = step.diff_states
    jmap, uniform = structure.jmap, structure.uniform
    by_key = {(b.state, b.param): b for b in blocks}
    filtered, rejected = [], {}
    for pr in structure.projections:
        reached = [a for a in S if pr.key in jmap[a]]
        if not reached:
            continue
        # a per-neuron function of the group's new states (the next layer's spike) is no filter:
        # its block is recomputed from theirs where the signal meets it (read by no state)
        chained = [c for c in reached if c in structure.chains and not structure.chain_direct[c]
                   and set(structure.chains[c]) <= set(reached) - set(structure.chains)]
        group = [a for a in reached if a not in chained]
        b = pr.source
        sources = [blk.materialised(step.p_avals[blk.param].shape) if blk.derived else blk
                   for (bb, _), blk in sorted(by_key.items()) if bb == b]
        dense_bytes = sum(nbytes(step.s_avals[y].shape + step.p_avals[s.param].shape, s.dtype)
                          for y in reached for s in sources)
        reads = {y: [key.index for key in jmap[y] if key.kind == "state"] for y in group}
        checks = (
            (all(by_key[(b, s.param)].expandable for s in sources), "the state it reads keeps a filtered trace itself"),
            (not any(("state", c) in jmap[a] for c in chained for a in S), "a state reads the layer it feeds"),
            (not method.truncates, f"{method.name} keeps one-step patterns only"),
            (all(jmap[y][pr.key] == identity_map(len(structure.input_shapes[InputKey(*pr.key)])) for y in group),
             "it is reshaped"),
            (all(r in group for y in group for r in reads[y]), "a state it reaches also reads another state"),
            (all(pr.key in uniform[y] and all(("state", r) in uniform[y] for r in reads[y]) for y in group),
             "its coefficients (the readout's leak or its input's) are not one number for every unit"),
            (not any((y, s.param) in by_key for y in group for s in sources),
             "a parameter of the state it reads also reaches it another way"),
            (not any(isinstance(s, ConvolutionWindow) for s in sources), "it reads a convolution's filtered input"),
            (not any(("state", y) in jmap[a] for y in group for a in S if a not in reached), "another state reads it"),
            # worth it only where the ē are smaller than the group's own (dense) blocks
            (len(group) * sum(s.nbytes for s in sources) <= dense_bytes, "its own blocks are smaller"))
        failed = next((why for good, why in checks if not good), None)
        if failed is not None:
            rejected[pr.key] = (f"readout at {source_line(pr.eqn)} of {step.state_names[b]} into "
                                f"{', '.join(step.state_names[y] for y in reached)}: kept as dense blocks "
                                f"({dense_bytes} bytes per example), not as a filtered eligibility, because {failed}")
            continue
        for y in group:
            for s in sources:
                by_key[(y, s.param)] = ReadoutFiltered(y, s.param, s.spec, s.shape, s.dtype,
                                                       via=InputKey(*pr.key), source=s)
                filtered.append(by_key[(y, s.param)])
        for c in chained:
            c_shape = tuple(step.s_avals[c].shape)
            for s in sources:
                p_shape = tuple(step.p_avals[s.param].shape)
                by_key[(c, s.param)] = Derived(c, s.param, (None,) * len(p_shape),
                                               (len(structure.chains[c]),) + c_shape, s.dtype,
                                               sources=structure.chains[c], full_shape=c_shape + p_shape)
                filtered.append(by_key[(c, s.param)])
    return tuple(filtered), rejected


__all__ = ["plan_blocks", "DENSE_WARNING_BYTES", "Storage"]
