"""Online methods: which paths of the step a method keeps exactly and which it cuts.

A method is a small object with a name and a `cut` predicate that decides, for each
equation that mixes neurons of the previous state (found by the structural pass),
whether its state-carrying operand gets a stop_gradient in the trace recursion. The
loss and its local gradient are always taken from the unmodified step. Hence every
method equals BPTT of an explicitly modified model, which the tests check.
A method may instead (or also) restrict the traces to the entries a parameter reaches
within one step (`one_step_pattern`, SnAp-1), which is checked against a masked
dense-RTRL oracle. Adding an approximation means adding one such object to `METHODS`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict

from .analysis import Mixing


@dataclass(frozen=True)
class Method:
    name: str
    exact: bool
    description: str
    cut: Callable[[Mixing], bool]
    one_step_pattern: bool = False   # keep each trace only where a parameter acts within one step


EXACT = Method(
    "exact", True,
    "every path kept: equals BPTT; coupled state parts get dense traces",
    lambda mixing: False)

EPROP = Method(
    "eprop", False,
    "paths from the previous state through neuron-mixing operations (recurrent matrices, "
    "reductions over a layer, a layer feeding the next) are cut from the traces; the "
    "learning signal of each step stays exact (Bellec et al. 2020, generalised)",
    lambda mixing: True)

SNAP1 = Method(
    "snap1", False,
    "SnAp-1 (Menick et al. 2020): every path is followed, but each trace block keeps only "
    "the entries a parameter reaches within one step (its per-neuron pattern); entries that "
    "only arise through coupling over several steps are dropped",
    lambda mixing: False, one_step_pattern=True)

METHODS: Dict[str, Method] = {m.name: m for m in (EXACT, EPROP, SNAP1)}


def get_method(method) -> Method:
    if isinstance(method, Method):
        return method
    try:
        return METHODS[method]
    except KeyError:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS)} "
                         f"or pass a sparseprop.tracer.methods.Method") from None
