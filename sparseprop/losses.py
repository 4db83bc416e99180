"""Losses for spiking outputs (what `snntorch.functional` offers), written as per-step losses.

sparseprop's `loss_fn(y, target)` is applied at every step and the sequence loss is the
sum over steps, `L = Σ_t loss_fn(y_t, target_t)`: that is what `online_grad` differentiates
forward in time. A loss of the whole sequence (a spike count, a first spike time, a maximum
over time) is therefore written as a readout layer that accumulates it in its state
(`sparseprop.layers.SpikeCount`, `FirstSpikeTime`, `MaxOverTime`) and a loss applied at the
last step only (`at_last_step`: weight 1 at `T − 1`, 0 before): the gradient is then exact
online, since everything the loss reads is a state.

| snnTorch                 | here (readout, loss, targets)                                          |
|--------------------------|-------------------------------------------------------------------------|
| `ce_rate_loss`           | spikes, `rate_cross_entropy`, labels every step                         |
| `ce_count_loss`          | `SpikeCount`, `count_cross_entropy`, `at_last_step(labels, T)`          |
| `mse_count_loss`         | `SpikeCount`, `count_mse`, `at_last_step(count_targets(...), T)`        |
| `ce_temporal_loss`       | `FirstSpikeTime`, `first_spike_cross_entropy`, `at_last_step(labels, T)` |
| `mse_temporal_loss`      | `FirstSpikeTime`, `first_spike_mse`, `at_last_step(times, T)`           |
| `mse_membrane_loss`      | potentials, `membrane_mse`, targets every step                          |
| `ce_max_membrane_loss`   | `MaxOverTime`, `membrane_cross_entropy`, `at_last_step(labels, T)`      |

Sums, not means: each loss sums over output units and over steps (divide the learning rate
by `T` to match a mean over time). Labels are integer class indices (a scalar per example).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["Weighted", "at_last_step", "on_output", "rate_cross_entropy", "count_cross_entropy", "count_mse",
           "count_targets", "first_spike_cross_entropy", "first_spike_mse", "membrane_mse",
           "membrane_cross_entropy"]


class Weighted(NamedTuple):
    """A target with a weight per step: the loss of step t is `weight_t · loss(y_t, target_t)`.

    - `target`: the targets, leaves `(T, ...)` (one example) like any `targets` of `learner.run`.
    - `weight`: `(T,)` floats.
    """
    target: Any
    weight: Any


def at_last_step(targets, num_steps: int, dtype=None) -> Weighted:
    """Targets for a loss of the whole sequence, read from an accumulating readout at the last step.

    **Arguments:**

    - `targets`: one example's target without a time axis (a label, a vector of counts or
      times); it is repeated along a new leading time axis `(T, ...)`.
    - `num_steps`: the sequence length `T`.
    - `dtype`: the weights' float dtype (default: JAX's default float).

    **Returns:**

    `Weighted(target, weight)` with `target` repeated along a leading time axis and `weight`
    1 at step `T − 1`, 0 before. For a batch-major run (`run_batch`), map it over examples:
    `jax.vmap(lambda t: at_last_step(t, T))(labels)`.
    """
    dtype = jnp.zeros(()).dtype if dtype is None else dtype
    target = jax.tree_util.tree_map(lambda v: jnp.broadcast_to(v, (num_steps,) + jnp.shape(v)), targets)
    return Weighted(target, (jnp.arange(num_steps) == num_steps - 1).astype(dtype))


def _per_step(loss: Callable) -> Callable:
    """Accept a `Weighted` target: the step's loss times the step's weight."""
    def wrapped(y, target):
        if isinstance(target, Weighted):
            return target.weight * loss(y, target.target)
        return loss(y, target)
    wrapped.__name__, wrapped.__doc__ = loss.__name__, loss.__doc__
    return wrapped


def on_output(loss: Callable) -> Callable:
    """A loss of a `Sequential(..., record=True)` model: `loss(y.output, target)`.

    **Arguments:** `loss`: a per-step loss. **Returns:** the per-step loss of a `Recording`.
    """
    return lambda y, target: loss(y.output, target)


def _cross_entropy(logits, label):
    return -jnp.take(jax.nn.log_softmax(logits), label)


@_per_step
def rate_cross_entropy(spikes, label):
    """Cross-entropy of one step's output spikes taken as logits (snnTorch's `ce_rate_loss`).

    Per step: `−log softmax(z_t)[label]`; the sequence loss is its sum over steps, which
    pushes the correct unit to fire at every step and the others to stay silent.

    **Arguments:** `spikes`: `(n_classes,)` this step's spikes; `label`: the class index
    (an int scalar), or a `Weighted` one.

    **Returns:** a scalar.
    """
    return _cross_entropy(spikes, label)


@_per_step
def count_cross_entropy(count, label):
    """Cross-entropy of the spike counts taken as logits (snnTorch's `ce_count_loss`).

    Read from `layers.SpikeCount` with `at_last_step(labels, T)`: the sequence loss is
    `−log softmax(Σ_t z_t)[label]`.

    **Arguments:** `count`: `(n_classes,)` running counts; `label`: class index or `Weighted`.

    **Returns:** a scalar.
    """
    return _cross_entropy(count, label)


def count_targets(label, num_classes: int, num_steps: int, correct_rate: float = 0.8,
                  incorrect_rate: float = 0.2, dtype=None):
    """Target spike counts of snnTorch's `mse_count_loss`: `correct_rate · T` for the label's
    unit, `incorrect_rate · T` for the others.

    **Arguments:** `label` (int, or an int array for a batch), `num_classes`, `num_steps`,
    `correct_rate`, `incorrect_rate` (firing probabilities per step), `dtype`.

    **Returns:** `(..., num_classes)` float counts.
    """
    onehot = jax.nn.one_hot(label, num_classes, dtype=jnp.zeros(()).dtype if dtype is None else dtype)
    return num_steps * (incorrect_rate + (correct_rate - incorrect_rate) * onehot)


@_per_step
def count_mse(count, target_count):
    """Squared error of the spike counts (snnTorch's `mse_count_loss`, summed over units).

    Read from `layers.SpikeCount` with `at_last_step(count_targets(...), T)`: the sequence
    loss is `Σ_i (Σ_t z_{t,i} − c_i)²`.

    **Arguments:** `count`: `(n,)` running counts; `target_count`: `(n,)` or `Weighted`.

    **Returns:** a scalar.
    """
    return jnp.sum((count - target_count) ** 2)


@_per_step
def first_spike_cross_entropy(times, label):
    """Cross-entropy of negated first spike times (snnTorch's `ce_temporal_loss`): the correct
    unit should fire first.

    Read from `layers.FirstSpikeTime` with `at_last_step(labels, T)`: the sequence loss is
    `−log softmax(−τ)[label]`, `τ` the first spike times in steps (`T` for a silent unit).

    **Arguments:** `times`: `(n_classes,)`; `label`: class index or `Weighted`.

    **Returns:** a scalar.
    """
    return _cross_entropy(-times, label)


@_per_step
def first_spike_mse(times, target_times):
    """Squared error of the first spike times in steps (snnTorch's `mse_temporal_loss`).

    Read from `layers.FirstSpikeTime` with `at_last_step(target_times, T)`.

    **Arguments:** `times`: `(n,)`; `target_times`: `(n,)` (steps) or `Weighted`.

    **Returns:** a scalar.
    """
    return jnp.sum((times - target_times) ** 2)


@_per_step
def membrane_mse(v, target):
    """Squared error of one step's membrane potential (snnTorch's `mse_membrane_loss`).

    Per step `Σ_i (v_{t,i} − target_{t,i})²`, summed over steps.

    **Arguments:** `v`: `(n,)` a readout's potential (e.g. `neurons.LeakyIntegrator`);
    `target`: `(n,)` or `Weighted`.

    **Returns:** a scalar.
    """
    return jnp.sum((v - target) ** 2)


@_per_step
def membrane_cross_entropy(v, label):
    """Cross-entropy of one step's membrane potential taken as logits.

    Every step with labels every step; from `layers.MaxOverTime` at the last step it is
    snnTorch's `ce_max_membrane_loss`, from `layers.SpikeCount` over potentials spyx's
    integral cross-entropy.

    **Arguments:** `v`: `(n_classes,)`; `label`: class index or `Weighted`.

    **Returns:** a scalar.
    """
    return _cross_entropy(v, label)
