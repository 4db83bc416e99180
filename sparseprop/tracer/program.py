"""The online program of one model at one set of shapes: its `Plan` and the emitted step.

`OnlineProgram` runs the tracer's passes once (`passes.build`) and holds the resulting frozen
`Plan`; its methods are the emitted run-time functions (`emit.py`) bound to that plan.
"""
from __future__ import annotations

from .emit import contract, step, zero_traces
from .errors import TracerError
from .methods import Method
from .passes import build
from .records import Plan


class OnlineProgram:
    """The traced structure of one model at one set of shapes (built once, then jitted).

    **Arguments:**

    - `model`, `method`: the step function and a `methods.Method`.
    - `params`, `state`, `x`: one example's pytrees (they fix shapes and dtypes).
    - `keep_all_traces`: carry every trace block (a learner without a loss).
    """

    def __init__(self, model, method: Method, params, state, x, keep_all_traces: bool = False):
        self.plan: Plan = build(model, method, params, state, x, keep_all_traces)

    def zero_traces(self):
        return zero_traces(self.plan)

    def contract(self, signals, traces, p, s, batched: bool = False):
        """See `emit.contract`."""
        return contract(self.plan, signals, traces, p, s, batched)

    def step(self, p, s, traces, xs, loss, batched: bool = False):
        """See `emit.step`."""
        return step(self.plan, p, s, traces, xs, loss, batched)


__all__ = ["OnlineProgram", "TracerError"]
