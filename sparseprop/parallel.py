"""Data-parallel online learning over several devices with `jax.sharding`.

Online gradients are per example, so scaling past one device is data parallelism: the
batch axis is split over a 1-D device mesh (axis name `"batch"`), parameters are
replicated, every device runs `learner.run_batch` on its slice of the batch, and the
gradient sums are reduced across devices. Nothing here is specific to a
model: XLA inserts the one all-reduce of the gradient sum, and the carries (states
and eligibility traces) stay on the device that owns their examples across calls.

```python
import sparseprop as sp
from sparseprop.parallel import make_mesh, data_parallel_run, data_parallel_init

mesh = make_mesh()                                    # all local devices on axis "batch"
learner = sp.online_grad(model, loss_fn)
carry = data_parallel_init(learner, mesh)(params, states0, xs[:, 0])   # (B, ...) leaves
run = data_parallel_run(learner, mesh)
for chunk_xs, chunk_targets in stream:                # (B, T_chunk, ...) each
    carry, total = run(params, carry, chunk_xs, chunk_targets)
    params = update(params, total.grads)              # summed over the batch, as run_batch
```

Batch-major layout: every leaf of `states0`, `xs` and `targets` has the batch as its
leading axis (`xs` is `(B, T, ...)`), and B must be a multiple of the number of devices.
On several hosts, call `jax.distributed.initialize()` first and build the mesh from
`jax.devices()` (all hosts' devices); the functions below are unchanged.
"""
from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .api import OnlineLearner, RunTotal, StepOutput

__all__ = ["make_mesh", "batch_sharding", "replicated", "shard_batch", "data_parallel_init",
           "data_parallel_run", "data_parallel_step"]

AXIS = "batch"


def make_mesh(devices: Optional[Sequence] = None, axis_name: str = AXIS) -> Mesh:
    """A 1-D device mesh whose single axis carries the batch.

    **Arguments:**

    - `devices`: the devices to use (default: `jax.devices()`, every device of every host).
    - `axis_name`: the mesh axis name (default `"batch"`).

    **Returns:**

    A `jax.sharding.Mesh` of shape `(len(devices),)`.
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("make_mesh needs at least one device")
    return Mesh(np.array(devices), (axis_name,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over the mesh's (single) axis, the rest of each array whole.

    **Arguments:**

    - `mesh`: from `make_mesh`.

    **Returns:**

    A `NamedSharding`.
    """
    return NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of the mesh (for parameters and reduced gradients).

    **Arguments:**

    - `mesh`: from `make_mesh`.

    **Returns:**

    A `NamedSharding`.
    """
    return NamedSharding(mesh, PartitionSpec())


def _check_batch(mesh: Mesh, *trees):
    n = mesh.devices.size
    for tree in trees:
        for leaf in jax.tree_util.tree_leaves(tree):
            shape = np.shape(leaf)
            if not shape:
                raise ValueError("every leaf of the batched arguments needs a leading batch axis; got a scalar")
            if shape[0] % n:
                raise ValueError(f"the batch size {shape[0]} is not a multiple of the {n} devices of the mesh: "
                                 f"pad the batch or use make_mesh(jax.devices()[:k])")


def shard_batch(mesh: Mesh, tree):
    """Place a batch-major pytree on the mesh, its leading axis split over the devices.

    Not required (the jitted functions below reshard their inputs) but it avoids a copy
    through one device when the data starts on the host.

    **Arguments:**

    - `mesh`: from `make_mesh`.
    - `tree`: a pytree whose leaves have a leading batch axis divisible by the device count.

    **Returns:**

    The pytree of sharded `jax.Array`s.
    """
    _check_batch(mesh, tree)
    return jax.device_put(tree, batch_sharding(mesh))


def data_parallel_init(learner: OnlineLearner, mesh: Mesh) -> Callable:
    """A jitted `init` for a batch: zero traces per example, sharded like the batch.

    **Arguments:**

    - `learner`: from `sparseprop.online_grad`.
    - `mesh`: from `make_mesh`.

    **Returns:**

    `f(params, states0, x0) -> carry`, where `states0` and `x0` (one step's input) have a
    leading batch axis; the carry's leaves have it too and are sharded over the mesh.
    """
    def init(params, states0, x0):
        return jax.vmap(learner.init, in_axes=(None, 0, 0))(params, states0, x0)
    return _checked(mesh, jax.jit(init, in_shardings=(replicated(mesh), batch_sharding(mesh),
                                                      batch_sharding(mesh)), out_shardings=batch_sharding(mesh)))


def _checked(mesh: Mesh, jitted: Callable) -> Callable:
    """Check the batch axis before calling `jitted` (whose own error, raised while placing
    the inputs, names tiling factors rather than the batch), keeping `lower` for inspection."""
    @functools.wraps(jitted)
    def call(params, *batched):
        _check_batch(mesh, *batched)
        return jitted(params, *batched)
    call.lower = jitted.lower
    call.jitted = jitted
    return call


def data_parallel_run(learner: OnlineLearner, mesh: Mesh, reduce: str = "sum") -> Callable:
    """`learner.run` over a batch split across devices, gradients reduced over the batch.

    **Arguments:**

    - `learner`: from `sparseprop.online_grad` (with a loss).
    - `mesh`: from `make_mesh`.
    - `reduce`: `"sum"` (default, as `learner.run_batch`: the same numbers on one device or
      many) or `"mean"` (divided by the batch size B) over the batch, for the loss and gradients.

    **Returns:**

    A jitted `f(params, carry, xs, targets) -> (carry, RunTotal(loss, grads, outputs))`:
    `params` replicated; `carry` from `data_parallel_init` (or a previous call: chunks chain);
    `xs`, `targets` batch-major `(B, T, ...)`. `loss` and `grads` are the batch sum (or mean)
    of each example's sum over time, replicated on every device; `carry` and `outputs`
    `(B, T, ...)` stay sharded over the batch.
    """
    reducer = _reducer(reduce)

    def run(params, carry, xs, targets):
        # run_batch folds the batch sum into each step's contraction; XLA all-reduces it
        carry, total = learner.run_batch(params, carry, xs, targets)
        batch = jax.tree_util.tree_leaves(xs)[0].shape[0]
        return carry, RunTotal(reducer(total.loss, batch), reducer(total.grads, batch), total.outputs)

    batch, rep = batch_sharding(mesh), replicated(mesh)
    return _checked(mesh, jax.jit(run, in_shardings=(rep, batch, batch, batch),
                                  out_shardings=(batch, RunTotal(rep, rep, batch))))


def data_parallel_step(learner: OnlineLearner, mesh: Mesh, reduce: str = "sum") -> Callable:
    """`learner.step` for a batch split across devices: one time step, gradients reduced.

    For streaming with an update after every step; prefer `data_parallel_run` on chunks
    when the update can wait, since each call has a dispatch and all-reduce cost.

    **Arguments:**

    - `learner`, `mesh`, `reduce`: as for `data_parallel_run`.

    **Returns:**

    A jitted `f(params, carry, x, target) -> (carry, StepOutput(loss, output, grads))`
    with `x`, `target` of shape `(B, ...)`; `loss` and `grads` reduced and replicated.
    """
    reducer = _reducer(reduce)

    def step(params, carry, x, target):
        carry, out = learner.step_batch(params, carry, x, target)
        batch = jax.tree_util.tree_leaves(x)[0].shape[0]
        return carry, StepOutput(reducer(out.loss, batch), out.output, reducer(out.grads, batch))

    batch, rep = batch_sharding(mesh), replicated(mesh)
    return _checked(mesh, jax.jit(step, in_shardings=(rep, batch, batch, batch),
                                  out_shardings=(batch, StepOutput(rep, batch, rep))))


def _reducer(reduce: str) -> Callable:
    """From batch sums to the requested reduction."""
    if reduce == "mean":
        return lambda tree, batch: jax.tree_util.tree_map(lambda g: g / batch, tree)
    if reduce == "sum":
        return lambda tree, batch: tree
    raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")

