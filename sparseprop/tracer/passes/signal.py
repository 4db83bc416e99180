"""Pass 6b: where the learning signal meets the traces, and which blocks are carried at all.

The signal meets the traces in one of two equal ways: λ_t = ∂l_t/∂s_{t-1} with the previous
traces plus the step's direct term (always valid), or, when the output provably depends on
the previous state and the traced parameters only through the new state's values, ∂l_t/∂s_t
with the new traces (no direct term). Blocks that neither the signal nor the update of a
needed block reads are not carried; of the two forms, the one that moves fewer bytes per step
wins (the previous-state form also forms a direct term as large as each parameter).
"""
from __future__ import annotations

from typing import Dict, FrozenSet, Optional, Set, Tuple

from jax.extend import core as jcore

from ..records import Cuts, SignalForm, Step, Structure, nbytes
from ..storage import ReadoutFiltered


def plan_signal(step: Step, method, cuts: Cuts, structure: Structure, blocks, truncated, keep_all: bool):
    """**Returns:** `(SignalForm, carried blocks, pruned block keys)`.

    `keep_all` (a learner without a loss: external signals may meet any leaf) keeps every block.
    """
    new_form = _new_state_form(step, blocks) if method.signal_follows_traces(cuts.cuts, truncated) else None
    need = _needed(structure, blocks, cuts.output_reads_previous)
    via_new = False
    if new_form is not None:
        need_new = _needed(structure, blocks, new_form[1])
        size = lambda keys: sum(b.nbytes for b in blocks if (b.state, b.param) in keys)   # noqa: E731
        # bytes moved per step and example: each carried block read, written and met by the
        # signal; the previous-state form also forms a direct term the size of each parameter
        direct = sum(nbytes(step.p_avals[j].shape, step.p_avals[j].dtype) for j in {p for _, p in need_new})
        if 3 * size(need_new) <= 3 * size(need) + direct:
            need, via_new = need_new, True
    signalled = new_form[1] if via_new else cuts.output_reads_previous
    form = SignalForm(via_new, frozenset(signalled), new_form[0] if new_form else {})
    if keep_all:
        return form, tuple(blocks), ()
    pruned = tuple(sorted((b.state, b.param) for b in blocks if (b.state, b.param) not in need))
    return form, tuple(b for b in blocks if (b.state, b.param) in need), pruned


def _new_state_form(step: Step, blocks) -> Optional[Tuple[Dict, FrozenSet[int]]]:
    """`(model outvar → state leaf, state leaves the output reads)` when the output y reaches the
    previous state and the traced parameters only through the new state's values (proved on the
    model's jaxpr, top level); else None."""
    jx = step.jaxpr
    n_s = len(step.s_avals)
    # a leaf without a derivative that passes through unchanged (an integer counter) or is a
    # constant has the same value before and after the step: the output may read it either way
    state_out = {i: v for i, v in enumerate(jx.outvars[:n_s])
                 if i in step.diff_states or (isinstance(v, jcore.Var) and v not in jx.invars)}
    if any(not isinstance(v, jcore.Var) or v in jx.invars for v in state_out.values()) or \
            len(set(state_out.values())) != len(state_out):
        return None
    traced = {b.param for b in blocks}
    tainted = {v for j, v in enumerate(jx.invars[:len(step.p_avals)]) if j in traced}
    tainted |= {jx.invars[len(step.p_avals) + i] for i in step.diff_states}
    cut = set(state_out.values())
    for eqn in jx.eqns:
        if any(isinstance(v, jcore.Var) and v in tainted for v in eqn.invars):
            tainted |= {v for v in eqn.outvars if v not in cut}
    if any(isinstance(v, jcore.Var) and v in tainted for v in jx.outvars[n_s:]):
        return None
    # the new state values the output reads (it reads them as values: no further back)
    needed = {v for v in jx.outvars[n_s:] if isinstance(v, jcore.Var)}
    for eqn in reversed(jx.eqns):
        if any(v in needed and v not in cut for v in eqn.outvars):
            needed |= {v for v in eqn.invars if isinstance(v, jcore.Var)}
    position = {v: i for i, v in state_out.items()}
    return position, frozenset(i for i, v in state_out.items() if v in needed)


def _needed(structure: Structure, blocks, signalled) -> Set[Tuple[int, int]]:
    """Blocks the learning signal meets (states in `signalled`) and those their updates read."""
    by_key = {(b.state, b.param): b for b in blocks}
    need = {key for key in by_key if key[0] in signalled}
    stack = list(need)
    while stack:
        a, pj = stack.pop()
        reads = [b for b, _ in structure.state_inputs(a)]
        blk = by_key[(a, pj)]
        if isinstance(blk, ReadoutFiltered):
            reads.append(blk.source.state)
        if blk.derived:
            reads.extend(blk.sources)
        for b in reads:
            if (b, pj) in by_key and (b, pj) not in need:
                need.add((b, pj))
                stack.append((b, pj))
    return need
