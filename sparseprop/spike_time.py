"""Exact spike-time gradients by forward propagation (Lee, Haghighatshoar & Karbasi 2022).

A spike time `t_k` is defined implicitly by `V(t_k; w) = θ`. Where `V` crosses the
threshold with a non-zero slope, the implicit function theorem gives its derivative:

    dt_k/dw = -(∂V/∂w + Σ_j ∂V/∂t_j · dt_j/dw) / V'(t_k)

(the sum over the earlier spikes `t_j` that `V` depends on, e.g. through their resets).
"Forward propagation" computes these derivatives in causal order, forward in time.

Here, in discrete time (step `t` covers the interval `(t-1, t]`), the crossing inside a
step is located by linear interpolation of the potential between the post-reset value
`v_{t-1}` at the step's start and the pre-reset value `u_t` at its end:

    u_t = λ v_{t-1} + W x_t                          (integrate)
    z_t = 1[u_t > θ]                                 (spike: a plain comparison, no surrogate)
    s_t = (θ - v_{t-1}) / (u_t - v_{t-1})            (sub-step crossing, in (0, 1])
    t*  = (t - 1) + s_t                              (the spike time)
    v_t = u_t - z_t · θ · λ^(1 - s_t)                (reset by θ at t*, decayed to the step's end)

The Heaviside `z_t` has derivative zero; all the gradient flows through `s_t`, which is a
smooth function of the weights while the spike pattern is fixed. `ds/dw` is exactly the
implicit-function-theorem derivative of the interpolated crossing: with
`V(τ) = v_{t-1} + τ (u_t - v_{t-1})`, `∂V/∂τ = u_t - v_{t-1}` and
`ds/dw = -(∂V/∂w at τ = s) / (∂V/∂τ)`. The reset `θ λ^(1-s)` is the continuous-time
reset (subtract θ at `t*`, leak for the remaining `1 - s` of the step), so the next
potential, and every later spike time, depends on this spike's time: the `∂V/∂t_j` term.

Because this is an ordinary step function `model(params, state, x) -> (new_state, y)`,
`sparseprop.online_grad(spike_time_lif, loss_fn)` carries `d state / d w` forward in
time, in particular `d first_spike_time / d w`: that eligibility trace *is* the forward
propagated spike-time derivative. No surrogate, and equal to BPTT of the same model.

Assumptions: at most one spike per neuron per step (pick the step fine enough); a
potential already at or above θ at the start of a step (a reset too small for a huge
input) fires at the step's start, `s = 0`, with no time derivative. Gradients are those
of the discrete model: exact where the spike pattern does not change under a small
change of the weights (a spike appearing or vanishing is a discontinuity of the loss).
"""
from __future__ import annotations

from functools import partial

import jax.numpy as jnp

__all__ = ["spike_time_layer", "spike_time_lif", "init_state", "first_spike_loss", "with_constants",
           "NO_SPIKE"]

#: Marker for "no spike yet" in `first` (any value works: it carries no derivative).
NO_SPIKE = -1.0


def spike_time_layer(v, current, leak=0.9, threshold=1.0):
    """One step of a layer of LIF neurons whose spikes carry sub-step crossing times.

    Implements `u = λ v + I`, `z = 1[u > θ]`, `s = (θ - v)/(u - v)` where `z`,
    `v_new = u - z θ λ^(1-s)` (see the module docstring for why each term is there).

    **Arguments:**

    - `v`: the post-reset potentials at the step's start, shape `(n,)`.
    - `current`: this step's input current `I` (e.g. `W @ x`), shape `(n,)`.
    - `leak`: `λ` in (0, 1], the decay per step (a constant, not trained).
    - `threshold`: `θ` (a constant).

    **Returns:**

    `(v_new, z, s, event)`: the post-reset potentials, the 0/1 spikes, the crossing time
    inside the step (`s` in (0, 1] where `z = 1`, 0 elsewhere), and `event = z λ^(1-s)`,
    a spike of unit weight emitted at `t - 1 + s` and leaked to the step's end: feed it to
    a downstream layer (with the same `λ`) as its input to propagate spike times.
    """
    u = leak * v + current
    fired = u > threshold
    z = fired.astype(u.dtype)
    # Crossing from below only; a potential already above θ fires at the step's start.
    crossing = fired & (v < threshold)
    # Division guarded on both branches of the where: the unselected branch must stay
    # finite, else its zero cotangent times inf would poison the gradient with NaN.
    slope = jnp.where(crossing, u - v, jnp.ones_like(u))
    s = jnp.where(crossing, (threshold - v) / slope, jnp.zeros_like(u))
    decay = jnp.exp((1.0 - s) * jnp.log(jnp.asarray(leak, u.dtype)))   # λ^(1-s)
    event = z * decay
    v_new = u - threshold * event
    return v_new, z, s, event


def init_state(n, dtype=None):
    """The state at time 0: potentials at rest, clock at 0, no spike yet.

    **Arguments:**

    - `n`: the number of neurons.
    - `dtype`: the float dtype (default: JAX's default float, float64 under x64).

    **Returns:**

    `{"v": zeros(n), "clock": 0.0, "first": NO_SPIKE·ones(n), "fired": zeros(n)}`.
    """
    dtype = dtype or jnp.result_type(float)
    return {"v": jnp.zeros(n, dtype), "clock": jnp.zeros((), dtype),
            "first": jnp.full((n,), NO_SPIKE, dtype), "fired": jnp.zeros(n, dtype)}


def spike_time_lif(params, state, x, *, leak=0.9, threshold=1.0):
    """A LIF layer with exact, surrogate-free spike-time gradients (a sparseprop model).

    Equations (step `t`, interval `(t-1, t]`; `clock = t - 1` at the step's start):

        u = λ v + W x (+ b)
        z = 1[u > θ],  s = (θ - v) / (u - v),  spike time = clock + s
        v' = u - z θ λ^(1-s)
        first' = first if fired before, clock + s if z (first spike now), else first

    Use with `functools.partial(spike_time_lif, leak=..., threshold=...)` to change the
    constants, and `sparseprop.online_grad(model, loss_fn)` to learn online: the trace of
    `first` is `d(first spike time)/dW`, propagated forward in time.

    **Arguments:**

    - `params`: `{"w": (n, m)}`, optionally `"bias": (n,)`.
    - `state`: from `init_state(n)` or the previous step.
    - `x`: this step's input, shape `(m,)` (spikes, or `event`s of an upstream layer).
    - `leak`, `threshold`: `λ` and `θ`.

    **Returns:**

    `(new_state, y)` with `y = {"z": spikes, "time": z·(clock + s)` (this step's spike
    times, 0 where no spike)`, "event": z λ^(1-s), "first": first spike times so far
    (NO_SPIKE where none)}`.
    """
    current = params["w"] @ x
    if "bias" in params:
        current = current + params["bias"]
    v, z, s, event = spike_time_layer(state["v"], current, leak, threshold)
    clock = state["clock"]
    first_now = (z > 0) & (state["fired"] == 0)
    first = jnp.where(first_now, clock + s, state["first"])
    new_state = {"v": v, "clock": clock + 1.0, "first": first,
                 "fired": jnp.maximum(state["fired"], z)}
    y = {"z": z, "time": z * (clock + s), "event": event, "first": first}
    return new_state, y


def first_spike_loss(y, target):
    """Squared error of first-spike times, counted at the steps where `target["weight"]` is 1.

    `loss = weight · Σ_i fired_i · (first_i - target_i)²`; a neuron that has not fired
    contributes nothing (its spike time does not exist, so it has no gradient).

    **Arguments:**

    - `y`: a `spike_time_lif` output (uses `y["first"]`).
    - `target`: `{"time": (n,) target first-spike times, "weight": scalar}`; give weight 1
      at the last step only to score the final first-spike times once.

    **Returns:**

    The scalar loss.
    """
    fired = y["first"] != NO_SPIKE
    err = jnp.where(fired, y["first"] - target["time"], 0.0)
    return target["weight"] * jnp.sum(err ** 2)


def with_constants(leak=0.9, threshold=1.0):
    """`spike_time_lif` with other constants (a convenience for `functools.partial`).

    **Arguments:**

    - `leak`, `threshold`: `λ` and `θ`.

    **Returns:**

    A model `(params, state, x) -> (new_state, y)`.
    """
    return partial(spike_time_lif, leak=leak, threshold=threshold)
