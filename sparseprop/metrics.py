"""Accuracy of recorded spiking outputs (what `snntorch.functional` offers as `accuracy_rate`
and `accuracy_temporal`), for evaluation after `sparseprop.simulate` or `learner.run`.

Every function reads a whole recording, time-major by default (`(T, n)` for one example,
`(T, B, n)` for a batch; `time_axis=1` for batch-major `(B, T, n)`), so it is not a per-step
loss: use `sparseprop.losses` for training.
"""
from __future__ import annotations

import jax.numpy as jnp

__all__ = ["spike_counts", "first_spike_times", "predict_rate", "predict_first_spike", "accuracy_rate",
           "accuracy_first_spike"]


def spike_counts(spikes, time_axis: int = 0):
    """Spikes summed over time.

    **Arguments:** `spikes`: a recording with a time axis at `time_axis`.

    **Returns:** the counts, the time axis removed.
    """
    return jnp.sum(jnp.asarray(spikes), axis=time_axis)


def first_spike_times(spikes, time_axis: int = 0):
    """The step of each unit's first spike, or `T` for a unit that never fires.

    **Arguments:** `spikes`: a recording (nonzero where a unit spiked) with a time axis at
    `time_axis`.

    **Returns:** int32 times, the time axis removed.
    """
    fired = jnp.moveaxis(jnp.asarray(spikes), time_axis, 0) > 0
    T = fired.shape[0]
    return jnp.where(jnp.any(fired, axis=0), jnp.argmax(fired, axis=0), T).astype(jnp.int32)


def predict_rate(spikes, time_axis: int = 0):
    """The class of the unit with the most spikes (ties: the lowest index).

    **Arguments:** `spikes`: `(T, ..., n_classes)` (time at `time_axis`, classes last).

    **Returns:** int class indices, of the recording's shape without time and class axes.
    """
    return jnp.argmax(spike_counts(spikes, time_axis), axis=-1)


def predict_first_spike(spikes, time_axis: int = 0):
    """The class of the unit that fires first (ties: the one with more spikes, then the lowest index).

    **Arguments:** `spikes`: `(T, ..., n_classes)` (time at `time_axis`, classes last).

    **Returns:** int class indices.
    """
    times = first_spike_times(spikes, time_axis).astype(jnp.float32)
    counts = spike_counts(spikes, time_axis).astype(jnp.float32)
    # a count adds less than one step, so it only breaks ties between equal first times
    T = jnp.shape(spikes)[time_axis]
    return jnp.argmin(times - counts / (T + 1.0), axis=-1)


def accuracy_rate(spikes, labels, time_axis: int = 0):
    """Fraction of examples whose most active output unit is the label (snnTorch's `accuracy_rate`).

    **Arguments:** `spikes`: `(T, n_classes)` or `(T, B, n_classes)` (time at `time_axis`);
    `labels`: int, or `(B,)` ints.

    **Returns:** a float scalar in [0, 1].
    """
    return jnp.mean(predict_rate(spikes, time_axis) == jnp.asarray(labels))


def accuracy_first_spike(spikes, labels, time_axis: int = 0):
    """Fraction of examples whose first-firing output unit is the label (snnTorch's `accuracy_temporal`).

    **Arguments:** as `accuracy_rate`.

    **Returns:** a float scalar in [0, 1].
    """
    return jnp.mean(predict_first_spike(spikes, time_axis) == jnp.asarray(labels))
