"""Spike encoders: turn analogue values (pixel intensities, features) into spike trains, or
a signal that changes over time into change events (`delta_encode`).

Every encoder is a pure function of its inputs (and of a `jax.random` key where it is
random), so the same key always gives the same spike train, and each one jits and vmaps.
Inputs may be numpy or JAX arrays of any shape; the result gains one time axis, placed
at `time_axis` (0 by default: `(num_steps, *values.shape)`; use `time_axis=1` on a
`(batch, features)` array to get the `(batch, time, features)` layout that
`jax.vmap(learner.run)` expects).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["rate_encode", "latency_encode", "delta_encode"]


def _move_time_axis(spikes, time_axis: int):
    # Encoders build (time, *values.shape); moving the axis afterwards keeps them simple.
    return jnp.moveaxis(spikes, 0, time_axis) if time_axis != 0 else spikes


def rate_encode(key, values, num_steps: int, *, max_prob: float = 1.0, method: str = "bernoulli",
                time_axis: int = 0, dtype=jnp.float32):
    """Rate coding: each value sets a firing probability per time step.

    A value `v` (clipped to [0, 1]) fires with probability `p = v · max_prob` in every
    step, independently across steps and inputs, so the expected spike count over the
    train is `num_steps · p`.

    **Arguments:**

    - `key`: a `jax.random` key; the same key gives the same spike train.
    - `values`: intensities in [0, 1] (anything outside is clipped), any shape.
    - `num_steps`: length of the spike train.
    - `max_prob`: firing probability per step of a value of 1 (e.g. `rate_hz · dt`).
    - `method`: `"bernoulli"` (0/1 spikes, probability `p` per step) or `"poisson"`
      (spike counts per step drawn from Poisson(`p`); counts above 1 are possible, which
      is the right model when a time step may hold several events).
    - `time_axis`: where the time axis goes in the result.
    - `dtype`: the result's dtype.

    **Returns:**

    An array of shape `values.shape` with a time axis of length `num_steps` inserted at
    `time_axis`, holding spikes (bernoulli) or spike counts (poisson).
    """
    # max_prob may be a traced value under jit; only a concrete number can be checked here.
    concrete = isinstance(max_prob, (int, float))
    if concrete and max_prob < 0.0:
        raise ValueError(f"max_prob must be non-negative, got {max_prob}")
    values = jnp.clip(jnp.asarray(values, jnp.float32), 0.0, 1.0)
    prob = values * max_prob
    shape = (num_steps,) + values.shape
    if method == "bernoulli":
        if concrete and max_prob > 1.0:
            raise ValueError(f"bernoulli rate coding needs max_prob <= 1 (a probability), got {max_prob}; "
                             f"use method='poisson' for more than one event per step")
        spikes = jax.random.bernoulli(key, prob, shape)
    elif method == "poisson":
        spikes = jax.random.poisson(key, prob, shape)
    else:
        raise ValueError(f"unknown rate coding method {method!r}; use 'bernoulli' or 'poisson'")
    return _move_time_axis(spikes.astype(dtype), time_axis)


def latency_encode(values, num_steps: int, *, method: str = "linear", tau: float = 5.0,
                   threshold: float = 0.0, time_axis: int = 0, dtype=jnp.float32):
    """Latency (time-to-first-spike) coding: each input fires once, larger values earlier.

    Deterministic: no key. A value `v` (clipped to [0, 1]) fires a single spike at step

    - `method="linear"`: `round((1 - v) · (num_steps - 1))`, so 1 fires at step 0 and a
      value just above `threshold` near the last step;
    - `method="log"`: `round(tau · ln(1 / v))` (the firing time of a leaky integrator
      driven by a constant current), and not at all if that is `>= num_steps`.

    Values `<= threshold` never fire (the background of an image stays silent).

    **Arguments:**

    - `values`: intensities in [0, 1], any shape.
    - `num_steps`: length of the spike train.
    - `method`: `"linear"` or `"log"`.
    - `tau`: time constant of the log code, in steps.
    - `threshold`: values at or below it do not fire.
    - `time_axis`: where the time axis goes in the result.
    - `dtype`: the result's dtype.

    **Returns:**

    A 0/1 array of shape `values.shape` with a time axis of length `num_steps` inserted at
    `time_axis`; each input holds at most one spike.
    """
    values = jnp.clip(jnp.asarray(values, jnp.float32), 0.0, 1.0)
    if method == "linear":
        when = jnp.round((1.0 - values) * (num_steps - 1))
    elif method == "log":
        # ln(1/0) is inf: a zero input never fires, as the docstring promises.
        when = jnp.round(tau * jnp.log(1.0 / jnp.maximum(values, 1e-30)))
    else:
        raise ValueError(f"unknown latency coding method {method!r}; use 'linear' or 'log'")
    fires = values > threshold
    steps = jnp.arange(num_steps).reshape((num_steps,) + (1,) * values.ndim)
    spikes = (steps == when[None]) & fires[None]
    return _move_time_axis(spikes.astype(dtype), time_axis)


def delta_encode(signal, threshold: float, *, off_spikes: bool = True, time_axis: int = 0, dtype=jnp.float32):
    """Delta modulation (send-on-delta, as an event camera or a silicon cochlea): a spike
    whenever the signal has moved by `threshold` from a reference that follows it.

    Deterministic. The reference starts at the first sample; at every step `t`,

        up_t = x_t − ref ≥ θ,   down_t = ref − x_t ≥ θ,   ref ← ref + θ·(up_t − down_t)

    so at most one event per step and input, and the reference moves by one threshold per
    event (a fast change is spread over several steps, as a real delta modulator's is).
    snnTorch's `spikegen.delta` compares consecutive samples instead, without a reference.

    **Arguments:**

    - `signal`: samples, time at `time_axis` (`(T, ...)` by default).
    - `threshold`: θ > 0, in the signal's unit.
    - `off_spikes`: True: `up − down` (+1 / −1 events in one array); False: two channels
      stacked on a new axis after time, ON first: `(T, 2, ...)`.
    - `time_axis`: where time is in `signal` and in the result.
    - `dtype`: the result's dtype.

    **Returns:**

    `(T, ...)` events in {−1, 0, 1} (`off_spikes=True`), or `(T, 2, ...)` 0/1 ON and OFF
    events, with time moved back to `time_axis`.

    **Raises:**

    `ValueError` for a non-positive threshold.
    """
    if not threshold > 0:
        raise ValueError(f"threshold must be positive, got {threshold}")
    x = jnp.moveaxis(jnp.asarray(signal, jnp.float32), time_axis, 0)

    def body(ref, x_t):
        up = x_t - ref >= threshold
        down = ref - x_t >= threshold
        return ref + threshold * (up.astype(ref.dtype) - down.astype(ref.dtype)), (up, down)
    _, (up, down) = jax.lax.scan(body, x[0], x)
    if off_spikes:
        events = up.astype(dtype) - down.astype(dtype)
    else:
        events = jnp.stack([up, down], axis=1).astype(dtype)
    return _move_time_axis(events, time_axis)
