"""`learner.explain()`: what the tracer derived, in words a modeller can check."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Tuple

import numpy as np

from .tracer.errors import source_line
from .tracer.program import OnlineProgram
from .tracer.structure import is_diagonal


@dataclass
class BlockReport:
    """One trace block: d state / d param for one state leaf and one parameter leaf."""
    param: str
    state: str
    kind: str            # "diagonal", "per-neuron (shared parameter)", "synaptic eligibility", "dense",
                         # "readout-filtered eligibility" (W · ē, see tracer/program.py Projection)
    shape: Tuple[int, ...]
    nbytes: int
    rule: str


@dataclass
class DroppedTerm:
    """A path the method cuts: `primitive` at `source` mixes neurons of these state leaves."""
    primitive: str
    source: str
    states: Tuple[str, ...]


@dataclass
class MixingReport:
    """An operation that mixes neurons of the previous state, and what the method does with it.

    `kind` is "recurrent" (on a cycle of the step's state graph: e-prop cuts it),
    "feed-forward" (reaches another population's new state: e-prop keeps it) or
    "output only" (reaches no new state: never cut); `cut` says whether this method cuts it.
    """
    primitive: str
    source: str
    states: Tuple[str, ...]
    kind: str
    cut: bool


@dataclass
class Explanation:
    """What the tracer derived for one model, method and set of shapes: `learner.explain()`.

    `str(explanation)` is the printed report; the fields are there for programs (tests,
    the `sparseprop check` table, memory budgets).

    **Fields:**

    - `method`: the method's name (`"exact"`, `"eprop"`, `"snap1"`).
    - `exact`: whether the learner's gradient equals BPTT for this model (no term dropped;
      always True for `"exact"`).
    - `blocks`: one `BlockReport` per trace block d state / d parameter: its kind
      (`"diagonal"`, `"per-neuron (shared parameter)"`, `"synaptic eligibility"`,
      `"dense"`), shape, bytes per example and update rule.
    - `dropped`: one `DroppedTerm` per operation whose paths the method cuts from the
      traces, with the user's source line and the state leaves it mixes.
    - `notes`: structure the tracer could not prove (an operation treated as mixing, a
      trace kept dense), with source lines.
    - `trace_bytes` (property): the bytes of all traces for one example, independent of the
      sequence length; multiply by the batch size.
    """
    method: str
    exact: bool
    blocks: List[BlockReport] = field(default_factory=list)
    dropped: List[DroppedTerm] = field(default_factory=list)
    mixing: List[MixingReport] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    @property
    def trace_bytes(self) -> int:
        """Bytes of all traces for one example."""
        return sum(b.nbytes for b in self.blocks)

    def __str__(self) -> str:
        lines = [f"sparseprop online program, method={self.method!r}: "
                 f"{'exact (equals BPTT)' if self.exact else 'APPROXIMATE'}; "
                 f"traces {_bytes(self.trace_bytes)} per example"]
        param = None
        for b in self.blocks:
            if b.param != param:
                param = b.param
                lines.append(f"  parameter {param}")
            lines.append(f"    d{b.state}/d{b.param}: {b.kind}, shape {b.shape}, {_bytes(b.nbytes)}")
            lines.append(f"      {b.rule}")
        if self.mixing:
            lines.append("  operations mixing neurons of the previous state:")
            for m in self.mixing:
                verdict = f"cut by {self.method!r}" if m.cut else "kept"
                lines.append(f"    {m.primitive} at {m.source}  [{', '.join(m.states)}]: {m.kind} ({verdict})")
        if self.dropped:
            lines.append(f"  dropped by {self.method!r} (paths from the previous state through these operations):")
            for d in self.dropped:
                lines.append(f"    {d.primitive} at {d.source}  [mixes {', '.join(d.states)}]")
        for note in self.notes:
            lines.append(f"  note: {note}")
        return "\n".join(lines)


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def block_kind(spec, param_ndim: int, param_size: int = 0, via=None) -> str:
    """The name of a trace block's storage (see `BlockReport.kind`)."""
    if via is not None:
        return "readout-filtered eligibility"
    if param_ndim == 0 or param_size == 1:     # one entry, broadcast: shared by every neuron
        return "per-neuron (shared parameter)"
    if is_diagonal(spec):
        return "diagonal"
    if any(s is not None for s in spec):
        return "synaptic eligibility"
    return "dense"


def _input_name(prog: OnlineProgram, key) -> str:
    """A tracked input by the user's name: a state or parameter leaf, or a synapse's product."""
    kind, k = key
    if kind == "state":
        return prog.state_names[k]
    if kind == "param":
        return prog.param_names[k]
    syn = prog.jacobian_analysis.synapses[k]
    return f"the product with {prog.param_names[syn.param[1]]} at {syn.source}"


def explain(prog: OnlineProgram) -> Explanation:
    """Build the report for a traced program.

    **Arguments:**

    - `prog`: the `OnlineProgram` of a learner at given shapes.

    **Returns:**

    An `Explanation`.
    """
    sn, pn = prog.state_names, prog.param_names
    report = Explanation(prog.method.name, prog.method.exact or not (prog.cuts or prog.truncated))
    for blk in sorted(prog.blocks, key=lambda b: (b.param, b.state)):
        a, p = blk.state, blk.param
        e = f"e[{sn[a]},{pn[p]}]"
        if blk.via is not None:
            pr = prog._projection(blk.via)
            b = sn[pr.source]
            rule = (f"{e} = W · ē,  ē ← c ⊙ ē + c' ⊙ e[{b},{pn[p]}]  (W: the readout matrix of "
                    f"{b} at {source_line(pr.eqn)}, at its current value; ē has the shape of e[{b},{pn[p]}])")
            report.blocks.append(BlockReport(pn[p], sn[a], block_kind(blk.spec, 0, via=blk.via), blk.shape,
                                             blk.nbytes, rule))
            continue
        terms = []
        for key, m in sorted(prog.jmap[a].items(), key=str):
            if key[0] == "state" and (key[1], p) in prog.block_index:
                op = "⊙" if is_diagonal(m) else "·"
                name = "D" if is_diagonal(m) else "J"
                terms.append(f"{name}[{sn[a]}←{sn[key[1]]}] {op} e[{sn[key[1]]},{pn[p]}]")
            elif key == ("param", p):
                terms.append(f"∂{sn[a]}/∂{pn[p]}")
            elif key[0] == "synapse":
                syn = prog.jacobian_analysis.synapses[key[1]]
                if syn.param == ("param", p):
                    terms.append(f"ψ[{sn[a]}] ⊗ u  (u: the other operand of {pn[p]} at {syn.source})")
        rule = f"{e} ← " + (" + ".join(terms) if terms else "0")
        kind = block_kind(blk.spec, len(prog.p_avals[p].shape), int(np.prod(prog.p_avals[p].shape)))
        if getattr(blk, "window", None) is not None:
            kind = "factorised convolution (filtered input ū; kernel gradient by one correlation)"
        report.blocks.append(BlockReport(pn[p], sn[a], kind, blk.shape, blk.nbytes, rule))
    cut = {(c.path, c.operand) for c in prog.cuts}
    for mix in prog.mixing_found:
        kind = "recurrent" if mix.recurrent else "feed-forward" if mix.reaches_state else "output only"
        report.mixing.append(MixingReport(mix.primitive, mix.source, tuple(sn[key[1]] for key in mix.states),
                                          kind, (mix.path, mix.operand) in cut))
    for cut in prog.cuts:
        states = tuple(sn[key[1]] for key in cut.states)
        report.dropped.append(DroppedTerm(cut.primitive, cut.source, states))
    for a, p in prog.truncated:
        report.dropped.append(DroppedTerm("multi-step coupling", f"trace d{sn[a]}/d{pn[p]} kept at its one-step "
                                          f"pattern", (sn[a],)))
    if prog.pruned:
        report.notes.append("not carried (no learning signal of the loss reaches them; a learner without a "
                            "loss keeps them): " + ", ".join(f"d{sn[a]}/d{pn[p]}" for a, p in prog.pruned))
    for note in prog.jacobian_analysis.notes + prog.mixing_analysis.notes:
        lost = "; ".join(f"axes {list(axes)} of {_input_name(prog, key)}" for key, axes in note.lost.items())
        report.notes.append(f"{note.primitive} at {note.source}: {note.what}" + (f" {lost}" if lost else ""))
    return report
