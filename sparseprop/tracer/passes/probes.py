"""Pass 6c: how each Jacobian block of one step is measured.

Forward probes, one per enumerated input index, compressed along proved diagonals (seeds.py);
or, for new-state leaves with a dense block, reverse rows (one per entry of that leaf: cheap
for a small readout fed by a wide layer). The cheaper mix in evaluations is chosen. The
coefficients of an intra-step chain take one probe per source.
"""
from __future__ import annotations

import numpy as np

from ..records import InputKey, ProbeEntry, Probes, Step, Structure
from ..seeds import compressed_axes, enumerated_shape


def plan_probes(step: Step, structure: Structure, blocks) -> Probes:
    traced = sorted({b.state for b in blocks if not b.derived})
    size = {a: int(np.prod(step.s_avals[a].shape, dtype=np.int64)) for a in step.diff_states}
    dense = [a for a in traced if any(m and all(x is None for x in m) for m in structure.jmap[a].values())]
    reverse = []
    best = _forward(structure, traced, ())[1]
    for a in sorted(dense, key=size.get):
        trial = reverse + [a]
        cost = _forward(structure, traced, trial)[1] + sum(size[r] for r in trial)
        if cost < best:
            reverse, best = trial, cost
    entries, count = _forward(structure, traced, reverse)
    # one probe per source of an intra-step chain: its coefficients are diagonal (passes/chains.py)
    chain_keys = sorted({InputKey("chain", b) for blk in blocks if blk.derived for b in blk.sources}, key=str)
    for key in chain_keys:
        entries += (ProbeEntry(key, tuple(range(len(structure.input_shapes[key]))), count, 1),)
        count += 1
    return Probes(entries, count, tuple(reverse))


def _forward(structure: Structure, traced, reverse):
    """Forward probes for every input that a traced new state outside `reverse` depends on."""
    S = [a for a in traced if a not in reverse]
    inputs = sorted({key for a in S for key in structure.jmap[a]}, key=str)
    entries, offset = [], 0
    for key in inputs:
        shape = structure.input_shapes[key]
        comp = compressed_axes([structure.jmap[a][key] for a in S if key in structure.jmap[a]], len(shape))
        count = int(np.prod(enumerated_shape(shape, comp), dtype=np.int64))
        entries.append(ProbeEntry(key, comp, offset, count))
        offset += count
    return tuple(entries), offset
