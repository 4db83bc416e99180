"""The tracer's passes, in the order they run (each a function from records to a record):

1. `trace.py`      the step's jaxpr → `Step`; `neurons.py` which axes of each state leaf
   index neurons (from the synapses)
2. `mixing.py`     operations mixing neurons, classified on the state graph → `MixingGraph`
3. `cuts.py`       the method's cuts (stop_gradient on mixing operands) → `Cuts`
4. `jvp.py`        the JVP program of the cut step, readout candidates → `Jvp`
5. `structure.py`  the structural analysis of the JVP → `Structure` (with `chains.py`: new
   state leaves that are per-neuron functions of other new leaves)
6. `blocks.py`     trace blocks and their storage kinds; `signal.py` the learning-signal form and
   pruning; `probes.py` how each Jacobian block is measured → `Plan`

`build` runs them; `emit.py` turns a `Plan` into the online step.
"""
from __future__ import annotations

import warnings

from ..records import Plan
from .blocks import DENSE_WARNING_BYTES, plan_blocks
from .cuts import apply_cuts
from .jvp import trace_jvp
from .mixing import classify_mixing
from .neurons import find_neuron_axes
from .probes import plan_probes
from .signal import plan_signal
from .structure import analyse_structure
from .trace import trace_step


def build(model, method, params, state, x, keep_all_traces: bool = False) -> Plan:
    """Run every pass: the plan of the online program of `model` under `method` at these shapes.

    **Arguments:**

    - `model`: `model(params, state, x) -> (new_state, y)`.
    - `method`: a `methods.Method`.
    - `params`, `state`, `x`: one example's pytrees (they fix the shapes and dtypes).
    - `keep_all_traces`: carry every trace block (a learner without a loss: an external signal
      may meet any state leaf).

    **Returns:**

    The `Plan`.

    **Raises:**

    `TracerError` for a model the tracer cannot turn into a correct online program.
    """
    step = trace_step(model, params, state, x)
    graph = classify_mixing(step, find_neuron_axes(step))
    cuts = apply_cuts(step, graph, method)
    jvp = trace_jvp(step, cuts, graph.neuron_axes)
    projections, readout_notes = jvp.projections, []
    while True:     # a readout that cannot be kept filtered is analysed as a plain operation
        structure = analyse_structure(step, jvp, projections)
        blocks, truncated, rejected = plan_blocks(step, method, structure)
        if not rejected:
            break
        readout_notes += list(rejected.values())
        projections = tuple(pr for pr in projections if pr.key not in rejected)
    _warn_dense(blocks)
    signal, kept, pruned = plan_signal(step, method, cuts, structure, blocks, truncated, keep_all_traces)
    probes = plan_probes(step, structure, kept)
    return Plan(step, method, graph, cuts, jvp, structure, kept, truncated, pruned, signal, probes,
                tuple(readout_notes))


def _warn_dense(blocks) -> None:
    from . import blocks as blocks_module     # the threshold is read at call time (tests lower it)
    dense = sum(b.nbytes for b in blocks if b.kind == "dense" and len(b.spec))
    if dense > blocks_module.DENSE_WARNING_BYTES:
        warnings.warn(
            f"sparseprop: exact online learning needs dense trace blocks of {dense / 2**20:.1f} MiB "
            f"per example (a matrix or reduction couples neurons of the previous state); "
            f"method='eprop' keeps traces per neuron. See learner.explain().", stacklevel=5)


__all__ = ["build", "DENSE_WARNING_BYTES"]
