"""`learner.explain()`: what the tracer derived, in words a modeller can check (read off the `Plan`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Tuple

from .tracer.records import Plan


@dataclass
class BlockReport:
    """One trace block: d state / d param for one state leaf and one parameter leaf.

    `kind` names its storage (tracer/storage.py): "diagonal", "per-neuron (shared parameter)",
    "synaptic eligibility", "dense", "factorised synaptic eligibility (...)", "factorised
    convolution (...)", "readout-filtered eligibility" or "recomputed from the traces (...)" (an
    intra-step chain: only per-neuron coefficients are carried). `bytes_per_step`: trace bytes the
    block reads and writes per step and example.
    """
    param: str
    state: str
    kind: str
    shape: Tuple[int, ...]
    nbytes: int
    rule: str
    bytes_per_step: int = 0


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

    - `method`: the method's name (`"exact"`, `"eprop"`, `"ostl"`, `"snap1"`).
    - `exact`: whether the learner's gradient equals BPTT for this model (no term dropped;
      always True for `"exact"`).
    - `blocks`: one `BlockReport` per trace block d state / d parameter: its storage kind,
      shape, bytes per example, bytes moved per step and update rule.
    - `dropped`: one `DroppedTerm` per operation whose paths the method cuts from the
      traces, with the user's source line and the state leaves it mixes.
    - `mixing`: every operation mixing neurons of the previous state, classified.
    - `notes`: structure the tracer could not prove (an operation treated as mixing, a
      trace kept dense), with source lines, including those inside nested programs.
    - `trace_bytes` (property): the bytes of all traces for one example, independent of the
      sequence length; multiply by the batch size.
    - `bytes_per_step` (property): trace bytes read and written per step and example.
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

    @property
    def bytes_per_step(self) -> int:
        """Trace bytes read and written per step for one example."""
        return sum(b.bytes_per_step for b in self.blocks)

    def __str__(self) -> str:
        lines = [f"sparseprop online program, method={self.method!r}: "
                 f"{'exact (equals BPTT)' if self.exact else 'APPROXIMATE'}; "
                 f"traces {_bytes(self.trace_bytes)} per example; "
                 f"trace bytes moved per step {_bytes(self.bytes_per_step)} per example"]
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


def _input_name(plan: Plan, key) -> str:
    """A tracked input by the user's name: a state or parameter leaf, or a synapse's product."""
    kind, k = key
    if kind == "state":
        return plan.state_names[k]
    if kind == "param":
        return plan.param_names[k]
    if kind == "edge":
        e = plan.structure.edges[k]
        return f"the {e.describe()} of {plan.param_names[e.param]} at {e.source}"
    syn = plan.synapses[k]
    return f"the product with {plan.param_names[syn.param[1]]} at {syn.source}"


def explain(plan: Plan) -> Explanation:
    """Build the report of a plan.

    **Arguments:**

    - `plan`: the `Plan` of a learner at given shapes (`learner.plan(params, state0, x0)`).

    **Returns:**

    An `Explanation`.
    """
    sn, pn = plan.state_names, plan.param_names
    report = Explanation(plan.method.name, plan.exact)
    moved = plan.bytes_per_step
    for blk in sorted(plan.blocks, key=lambda b: (b.param, b.state)):
        report.blocks.append(BlockReport(pn[blk.param], sn[blk.state], blk.kind, blk.shape, blk.nbytes,
                                         blk.rule(plan), moved[(blk.state, blk.param)]))
    cut = {(c.path, c.operand) for c in plan.cuts.cuts}
    for mix in plan.graph.found:
        kind = "recurrent" if mix.recurrent else "feed-forward" if mix.reaches_state else "output only"
        report.mixing.append(MixingReport(mix.primitive, mix.source, tuple(sn[key[1]] for key in mix.states),
                                          kind, (mix.path, mix.operand) in cut))
    for c in plan.cuts.cuts:
        report.dropped.append(DroppedTerm(c.primitive, c.source, tuple(sn[key[1]] for key in c.states)))
    for a, p in plan.truncated:
        report.dropped.append(DroppedTerm("multi-step coupling", f"trace d{sn[a]}/d{pn[p]} kept at its one-step "
                                          f"pattern", (sn[a],)))
    if plan.pruned:
        report.notes.append("not carried (no learning signal of the loss reaches them; a learner without a "
                            "loss keeps them): " + ", ".join(f"d{sn[a]}/d{pn[p]}" for a, p in plan.pruned))
    report.notes.extend(plan.readout_notes)
    for note in plan.structure.analysis.notes + plan.cuts.analysis.notes:
        lost = "; ".join(f"axes {list(axes)} of {_input_name(plan, key)}" for key, axes in note.lost.items())
        report.notes.append(f"{note.primitive} at {note.source}: {note.what}" + (f" {lost}" if lost else ""))
    return report
