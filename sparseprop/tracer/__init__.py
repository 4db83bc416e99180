"""The tracer: from a step's jaxpr to its online program, as passes over frozen records.

Passes (`passes/`, in order; each a function from records to a record, `records.py`):
trace the step → classify neuron mixing on the state graph → apply the method's cuts → the JVP
program of the cut step → its structural analysis → plan the traces (storage kinds, the
learning-signal form, pruning, probes) → emit the step function (`emit.py`).

- `records.py`: the frozen records (`Step`, `MixingGraph`, `Cuts`, `Jvp`, `Structure`, `Plan`).
- `storage.py`: storage kinds as types (diagonal, synaptic, dense, factorised, convolution
  window, readout-filtered, per-edge), each with its update, contraction and description.
- `methods.py`: exact, e-prop, OSTL, SnAp-1: one object each, whose hooks the planner calls.
- `registry.py`: everything the tracer knows about a primitive, one entry each (the place to
  add a primitive); `rules.py`, `indices.py`, `uniformity.py`, `linearity.py`: the functions
  its entries name.
- `analysis.py`: the walker that propagates dependency maps through a jaxpr (structure.py),
  finds synapses and mixing operations; `convolution.py`: kernels shared over space;
  `sparse.py`: sparse synapses (edge lists, BCOO, masked dense weights).
- `interpreter.py`: evaluates a jaxpr with equations replaced (probes, cuts); `seeds.py`:
  compressed JVP probes; `jacobian.py`: structured Jacobian blocks and their einsum algebra.
- `program.py`: `OnlineProgram`, a plan and its emitted functions.
"""
