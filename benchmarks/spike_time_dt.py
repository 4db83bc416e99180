"""Discrete-time vs continuous-time exact spike-time gradients on the same neurons, as the step shrinks.

The continuous model is `sparseprop.event_lif` (current-based LIF, `τ_m dV/dt = -V + I`,
`τ_s dI/dt = -I`, crossings solved exactly). The discrete model is `sparseprop.spike_time`
(`u = λ v + W x`, crossing by linear interpolation inside the step, reset `θ λ^(1-s)`) driven by
`x_t[c]`, the exact increment over step `t` of channel `c`'s unit post-synaptic potential:
`x_t = P_c(t Δt) - λ P_c((t-1) Δt)`, `λ = e^{-Δt/τ_m}`. With that input the discrete potential
equals the continuous one at every grid point (the reset is the continuous one too), so the
only difference left is the linear interpolation of the crossing inside a step: the spike
times and their derivatives `dt_first/dW` converge at first order in `Δt`.

Run: python benchmarks/spike_time_dt.py      (a few seconds; prints a table)
"""
import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp
import numpy as np

from sparseprop.event_lif import EventLIF, forward_gradients
from sparseprop.spike_time import NO_SPIKE, init_state, spike_time_lif

TAU_M, TAU_S, THETA, T_MAX = 2.0, 1.0, 1.0, 8.0
N, M = 3, 6


def problem(seed=0):
    """Input spike times (one per channel) and weights for which every neuron fires."""
    rng = np.random.default_rng(seed)
    in_times = np.sort(rng.uniform(0.0, 2.0, M))
    w = rng.uniform(0.8, 2.0, (N, M))
    return jnp.asarray(in_times), jnp.asarray(w)


def continuous(in_times, w):
    """First spike times `(N,)` and `dt_first/dW` `(N, N, M)` from event-driven forward propagation."""
    cfg = EventLIF(tau_m=TAU_M, tau_s=TAU_S, threshold=THETA, max_spikes=1, t_max=T_MAX)
    res = forward_gradients([cfg], [w], in_times)
    return res.layers[0].times[:, 0], res.jacobians[0][0][:, 0]


def discrete(in_times, w, dt):
    """First spike times and `dt_first/dW` of the discrete model with step `dt` (times in the
    units of `in_times`; derivatives by reverse mode of the scan, equal to the online trace)."""
    steps = int(round(T_MAX / dt))
    k = TAU_S / (TAU_M - TAU_S)
    grid = np.arange(steps + 1) * dt
    age = grid[:, None] - np.asarray(in_times)[None, :]
    psp = np.where(age > 0, k * (np.exp(-np.maximum(age, 0) / TAU_M) - np.exp(-np.maximum(age, 0) / TAU_S)), 0.0)
    leak = np.exp(-dt / TAU_M)
    xs = jnp.asarray(psp[1:] - leak * psp[:-1])

    def first(w):
        def body(state, x):
            state, y = spike_time_lif({"w": w}, state, x, leak=leak, threshold=THETA)
            return state, None
        state, _ = jax.lax.scan(body, init_state(N, xs.dtype), xs)
        return state["first"] * dt

    first = jax.jit(first)
    return first(w), jax.jit(jax.jacrev(first))(w)


def compare(dts, seed=0):
    """Rows `(dt, max |Δt_first|, max rel. error of dt_first/dW)` of discrete vs continuous.

    **Arguments:**

    - `dts`: the step sizes to try (in units of `τ_s`).
    - `seed`: the problem's seed.

    **Returns:**

    A list of `(dt, time_error, gradient_error)` tuples.

    **Raises:**

    `AssertionError` if some neuron does not fire in either model (nothing to compare).
    """
    in_times, w = problem(seed)
    t_c, g_c = continuous(in_times, w)
    assert bool(jnp.all(jnp.isfinite(t_c))), "every neuron must fire in the continuous model"
    rows = []
    for dt in dts:
        t_d, g_d = discrete(in_times, w, dt)
        assert bool(jnp.all(t_d != NO_SPIKE * dt)), f"every neuron must fire in the discrete model (dt={dt})"
        rows.append((dt, float(jnp.max(jnp.abs(t_d - t_c))),
                     float(jnp.max(jnp.abs(g_d - g_c)) / jnp.max(jnp.abs(g_c)))))
    return rows


def main():
    rows = compare([0.1, 0.03, 0.01, 0.003, 0.001])
    print("dt (τ_s)   max |t_discrete - t_continuous|   max rel. err. of dt_first/dW")
    for dt, et, eg in rows:
        print(f"{dt:8.3f}   {et:30.2e}   {eg:28.2e}")


if __name__ == "__main__":
    main()
