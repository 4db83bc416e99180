"""Online methods: which paths of the step a method keeps exactly and which it cuts.

A method is a small object with a name, a `cut` predicate that decides, for each
equation that mixes neurons of the previous state (found by the structural pass and
classified as *recurrent* — on a cycle of the step's state graph — or *feed-forward*),
whether its state-carrying operand gets a stop_gradient, and `cut_output`: whether that
cut also applies to the output the learning signal is taken through (the whole step) or
only to the trace recursion. Hence every method equals BPTT of an explicitly modified
model, which the tests check. A method may instead (or also) restrict the traces to the
entries a parameter reaches within one step (`one_step`, SnAp-1), which is checked
against a masked dense-RTRL oracle. Adding an approximation means adding one such object
to `METHODS`; the planner asks it through its hooks (`cut`, `cut_output`, `restrict`,
`signal_follows_traces`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict

from .analysis import Mixing


@dataclass(frozen=True)
class Method:
    """An online method: what it keeps exactly and what it cuts. The planner calls its hooks;
    nothing else in the tracer knows which method it runs.

    - `name`, `description`: as shown by `explain()`.
    - `exact`: the method equals BPTT whatever the model.
    - `cut(mixing) -> bool`: whether a neuron-mixing equation's state-carrying operand gets a
      stop_gradient.
    - `cut_output`: the cut holds in the whole step (state update and output, so also in the
      learning signal); otherwise only in the trace recursion, and the learning signal is
      taken through the unmodified step.
    - `one_step`: keep each trace only where a parameter acts within one step (`restrict`).
    """
    name: str
    exact: bool
    description: str
    cut: Callable[[Mixing], bool]
    cut_output: bool = False
    one_step: bool = False

    @property
    def truncates(self) -> bool:
        """Whether `restrict` may drop entries of the trace structure."""
        return self.one_step

    def restrict(self, direct: Dict, total: Dict) -> Dict:
        """The trace structure the method keeps, from the one-step maps `direct` (state, parameter)
        and their fixed point over time `total` (passes/blocks.py)."""
        return direct if self.one_step else total

    def signal_follows_traces(self, cuts, truncated) -> bool:
        """Whether traces and learning signal follow one and the same step, so the signal may
        meet the new traces (∂l_t/∂s_t) instead of the previous ones (λ_t = ∂l_t/∂s_{t-1})."""
        return not truncated and (not cuts or self.cut_output)


EXACT = Method(
    "exact", True,
    "RTRL (Williams & Zipser 1989): every path kept, equals BPTT; coupled state parts get "
    "dense traces",
    lambda mixing: False)

EPROP = Method(
    "eprop", False,
    "e-prop (Bellec et al. 2020): the neuron-mixing operations on a recurrent path (the new "
    "state of a population depends through them on its own previous state: recurrent "
    "matrices, reductions over a layer fed back into it) get a stop_gradient on their "
    "state-carrying operand in the whole step, state update and output alike, so the "
    "learning signal is the one of the paper (through the readout, not through recurrence); "
    "feed-forward mixing (hidden to readout, layer to layer) is kept exactly, e.g. the "
    "kappa-filtered eligibility of a leaky readout",
    lambda mixing: mixing.recurrent, cut_output=True)

OSTL = Method(
    "ostl", False,
    "OSTL-style (Bohnstingl et al. 2022): every neuron-mixing path from the previous state "
    "that reaches the new state (recurrent or feed-forward) is cut from the traces, so the "
    "traces are temporally local per neuron; the learning signal is taken through the "
    "unmodified step (spatially exact at each step). For a feed-forward stack this is OSTL; "
    "on a recurrent layer the learning signal also carries the one-step path through the "
    "recurrent matrix",
    lambda mixing: mixing.reaches_state)

SNAP1 = Method(
    "snap1", False,
    "SnAp-1 (Menick et al. 2020): every path is followed, but each trace block keeps only "
    "the entries a parameter reaches within one step (its per-neuron pattern); entries that "
    "only arise through coupling over several steps are dropped",
    lambda mixing: False, one_step=True)

METHODS: Dict[str, Method] = {m.name: m for m in (EXACT, EPROP, OSTL, SNAP1)}


def get_method(method) -> Method:
    """The `Method` named `method` (or `method` itself).

    **Raises:**

    `ValueError` for an unknown name, listing the choices.
    """
    if isinstance(method, Method):
        return method
    try:
        return METHODS[method]
    except KeyError:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS)} "
                         f"or pass a sparseprop.tracer.methods.Method") from None
