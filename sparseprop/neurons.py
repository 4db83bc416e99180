"""Neuron models of the SNN literature as plain step functions.

Every model is a small frozen dataclass (its options are static) with

- `model(params, state, x) -> (new_state, y)`: one time step of one example (no batch
  axis), exactly the contract of `sparseprop.online_grad`;
- `model.init_params(key, n_in, n, dtype=None)`: a dict of learnable parameters
  (weights, and per-neuron leaks, thresholds-adaptation strengths, ... as vectors);
- `model.init_state(n, dtype=None, batch=None)`: the resting state, leaves `(n,)`, or
  `(batch, n)` for a batch (`learner.init_batch`).

`dtype=None` means JAX's default float (float64 under `jax_enable_x64`).

```python
from sparseprop import neurons
net = neurons.Sequential((neurons.LIF(reset="subtract"), neurons.LeakyIntegrator()))
params = net.init_params(key, (n_in, 64, n_out))
state0 = net.init_state((n_in, 64, n_out))
learner = sparseprop.online_grad(net, loss_fn)
```

Time is discrete (one step = `dt`); leaks are parameters `α = exp(−dt/τ)` in (0, 1).
`H` is the Heaviside spike with the model's surrogate derivative and `sg` is
`stop_gradient`. Spiking neurons recompute last step's spike `z_{t−1} = H(v_{t−1} − θ)`
from the state rather than storing it: the value is the same and the derivative of the
reset then flows through the surrogate at the right time step, `t − 1`.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .surrogates import FastSigmoid, Surrogate

__all__ = ["Neuron", "LIF", "CurrentLIF", "ALIF", "Izhikevich", "AdEx", "ResonateAndFire",
           "LeakyIntegrator", "DiagonalLRU", "GRUCell", "Sequential", "Recording", "RESETS"]

RESETS = ("subtract", "zero", "multiplicative")
_sg = jax.lax.stop_gradient


# -- helpers shared by the models ----------------------------------------------------------

def _float(dtype):
    return jnp.zeros(()).dtype if dtype is None else jnp.dtype(dtype)


def _shape(n, batch):
    """`(n,)`, or `(batch, n)` for a batch of resting states."""
    if batch is None:
        return (n,)
    if int(batch) < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    return (int(batch), n)


def _normal(key, shape, scale, dtype):
    return scale * jax.random.normal(key, shape, dtype)


def _uniform(key, n, low, high, dtype):
    return jax.random.uniform(key, (n,), dtype, low, high)


def _synapses(key, n_in, n, recurrent, gain, dtype):
    """`w_in` (n, n_in) with std gain/√n_in, and `w_rec` (n, n) if recurrent."""
    k_in, k_rec = jax.random.split(key)
    params = {"w_in": _normal(k_in, (n, n_in), gain / math.sqrt(n_in), dtype)}
    if recurrent:
        params["w_rec"] = _normal(k_rec, (n, n), gain / math.sqrt(n), dtype)
    return params


def _current(params, x, z_prev):
    """Synaptic input `I = W_in x (+ W_rec z_{t−1})`."""
    current = params["w_in"] @ x
    if "w_rec" in params:
        current = current + params["w_rec"] @ z_prev
    return current


class Neuron:
    """Base of the catalogue: subclasses define `__call__`, `init_params` and `init_state`."""

    def __call__(self, params, state, x):  # pragma: no cover - interface
        raise NotImplementedError

    def init_params(self, key, n_in: int, n: int, dtype=None) -> dict:  # pragma: no cover
        raise NotImplementedError

    def init_state(self, n: int, dtype=None, batch=None) -> dict:  # pragma: no cover
        """The resting state of `n` neurons, leaves `(n,)` of `dtype`, or `(batch, n)` with a batch
        size (the `states0` of `learner.init_batch`)."""
        raise NotImplementedError


# -- leaky integrate-and-fire family ------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LIF(Neuron):
    """Leaky integrate-and-fire neuron with a choice of reset.

    With `z_{t−1} = H(v_{t−1} − θ)`, `r = z_{t−1}` (or `sg(z_{t−1})` if `detach_reset`)
    and `I_t = W_in x_t (+ W_rec z_{t−1} if recurrent)`:

        subtract:        v_t = α ⊙ (v_{t−1} − θ·r) + I_t              (EXODUS's form)
        zero:            v_t = α ⊙ where(z_{t−1} > 0, 0, v_{t−1}) + I_t
        multiplicative:  v_t = α ⊙ v_{t−1} ⊙ (1 − r) + I_t
        y_t = z_t = H(v_t − θ)

    Differentiated reset (EXODUS, Bauer et al. 2022): dv_t/dv_{t−1} = α(1 − θ·H'(v_{t−1} − θ))
    for `subtract`, which is BPTT's gradient. Detached reset (SLAYER's choice):
    dv_t/dv_{t−1} = α. The `zero` reset selects with `where`, which carries no derivative
    through the spike whatever `detach_reset` says; `multiplicative` is the same reset
    written as a product, so its reset term is differentiated unless detached.

    **Arguments:**

    - `reset`: `"subtract"`, `"zero"` or `"multiplicative"`.
    - `detach_reset`: stop the gradient through the reset term.
    - `surrogate`: the spike's surrogate derivative (default fast sigmoid, slope 10).
    - `threshold`: θ.
    - `recurrent`: add recurrent weights `w_rec` acting on last step's spikes.

    Parameters: `w_in` (n, n_in), `alpha` (n,) [, `w_rec` (n, n)]. State: `{"v": (n,)}`.
    """
    reset: str = "subtract"
    detach_reset: bool = False
    surrogate: Surrogate = FastSigmoid(10.0)
    threshold: float = 1.0
    recurrent: bool = False

    def __post_init__(self):
        if self.reset not in RESETS:
            raise ValueError(f"reset must be one of {RESETS}, got {self.reset!r}")

    def spike(self, v):
        """`H(v − θ)` with this neuron's surrogate."""
        return self.surrogate(v - self.threshold)

    def leak_and_reset(self, alpha, v_prev, z_prev):
        """`α ⊙ reset(v_{t−1})`: the leaky, reset membrane potential before the input is added."""
        r = _sg(z_prev) if self.detach_reset else z_prev
        if self.reset == "subtract":
            return alpha * (v_prev - self.threshold * r)
        if self.reset == "zero":
            return alpha * jnp.where(z_prev > 0, jnp.zeros_like(v_prev), v_prev)
        return alpha * v_prev * (1.0 - r)

    def __call__(self, params, state, x):
        z_prev = self.spike(state["v"])
        v = self.leak_and_reset(params["alpha"], state["v"], z_prev) + _current(params, x, z_prev)
        z = self.spike(v)
        return {"v": v}, z

    def init_params(self, key, n_in, n, dtype=None):
        """Weights with std 2/√n_in (std 2/√n recurrent) and leaks `alpha` uniform in [0.8, 0.95].

        **Arguments:**

        - `key`: a PRNG key.
        - `n_in`, `n`: input size and number of neurons.
        - `dtype`: float dtype (default: JAX's default float).

        **Returns:**

        A dict of parameter arrays.
        """
        dtype = _float(dtype)
        k_syn, k_alpha = jax.random.split(key)
        return {**_synapses(k_syn, n_in, n, self.recurrent, 2.0, dtype),
                "alpha": _uniform(k_alpha, n, 0.8, 0.95, dtype)}

    def init_state(self, n, dtype=None, batch=None):
        """Resting state: `v = 0`.

        **Arguments:**

        - `n`: number of neurons; `dtype`: float dtype.
        - `batch`: a batch size `B`: every leaf gets a leading axis, `(B, n)`.

        **Returns:**

        The state dict.
        """
        return {"v": jnp.zeros(_shape(n, batch), _float(dtype))}


@dataclasses.dataclass(frozen=True)
class CurrentLIF(LIF):
    """Current-based LIF: the synaptic current is a second, leaky state variable.

        i_t = α_syn ⊙ i_{t−1} + I_t,     I_t = W_in x_t (+ W_rec z_{t−1})
        v_t = α ⊙ reset(v_{t−1}) + i_t   (reset as in `LIF`)
        y_t = z_t = H(v_t − θ)

    **Arguments:** as for `LIF`.

    Parameters: `w_in`, `alpha` (membrane leak), `alpha_syn` (synaptic leak) [, `w_rec`].
    State: `{"i": (n,), "v": (n,)}`.
    """

    def __call__(self, params, state, x):
        z_prev = self.spike(state["v"])
        i = params["alpha_syn"] * state["i"] + _current(params, x, z_prev)
        v = self.leak_and_reset(params["alpha"], state["v"], z_prev) + i
        return {"i": i, "v": v}, self.spike(v)

    def init_params(self, key, n_in, n, dtype=None):
        """As `LIF.init_params`, plus `alpha_syn` uniform in [0.5, 0.8].

        **Arguments:** `key`, `n_in`, `n`, `dtype` as for `LIF.init_params`.

        **Returns:**

        A dict of parameter arrays.
        """
        k_lif, k_syn = jax.random.split(key)
        params = super().init_params(k_lif, n_in, n, dtype)
        params["alpha_syn"] = _uniform(k_syn, n, 0.5, 0.8, _float(dtype))
        return params

    def init_state(self, n, dtype=None, batch=None):
        """Resting state: `i = v = 0`.

        **Arguments:** `n`, `dtype`, `batch` (as for `Neuron.init_state`).

        **Returns:**

        The state dict.
        """
        zeros = jnp.zeros(_shape(n, batch), _float(dtype))
        return {"i": zeros, "v": zeros}


@dataclasses.dataclass(frozen=True)
class ALIF(LIF):
    """Adaptive LIF (Bellec et al. 2020, e-prop): a spike raises the threshold, which decays back.

        A_{t−1} = θ + β ⊙ a_{t−1},   z_{t−1} = H(v_{t−1} − A_{t−1})
        a_t = ρ ⊙ a_{t−1} + z_{t−1}
        v_t = α ⊙ reset(v_{t−1}) + I_t   (reset as in `LIF`, by the base threshold θ)
        y_t = z_t = H(v_t − θ − β ⊙ a_t)

    **Arguments:** as for `LIF`.

    Parameters: `w_in`, `alpha`, `rho` (adaptation decay), `beta` (adaptation strength)
    [, `w_rec`]. State: `{"v": (n,), "a": (n,)}`.
    """

    def __call__(self, params, state, x):
        z_prev = self.surrogate(state["v"] - self.threshold - params["beta"] * state["a"])
        a = params["rho"] * state["a"] + z_prev
        v = self.leak_and_reset(params["alpha"], state["v"], z_prev) + _current(params, x, z_prev)
        z = self.surrogate(v - self.threshold - params["beta"] * a)
        return {"v": v, "a": a}, z

    def init_params(self, key, n_in, n, dtype=None):
        """As `LIF.init_params`, plus `rho` uniform in [0.9, 0.99] and `beta` in [0.5, 2].

        **Arguments:** `key`, `n_in`, `n`, `dtype` as for `LIF.init_params`.

        **Returns:**

        A dict of parameter arrays.
        """
        k_lif, k_rho, k_beta = jax.random.split(key, 3)
        dtype = _float(dtype)
        params = super().init_params(k_lif, n_in, n, dtype)
        params["rho"] = _uniform(k_rho, n, 0.9, 0.99, dtype)
        params["beta"] = _uniform(k_beta, n, 0.5, 2.0, dtype)
        return params

    def init_state(self, n, dtype=None, batch=None):
        """Resting state: `v = a = 0`.

        **Arguments:** `n`, `dtype`, `batch` (as for `Neuron.init_state`).

        **Returns:**

        The state dict.
        """
        zeros = jnp.zeros(_shape(n, batch), _float(dtype))
        return {"v": zeros, "a": zeros}


# -- richer spiking dynamics ---------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Izhikevich(Neuron):
    """Izhikevich (2003) neuron, forward Euler with step `dt` (ms), reset by `where`, clipped.

        v' = v + dt (0.04 v² + 5 v + 140 − u + I_t),   I_t = W_in x_t
        u' = u + dt · a (b v − u)
        z_t = H(v' − v_peak)
        v_t = where(z_t > 0, c, clip(v', v_min, v_peak)),   u_t = u' + d ⊙ z_t
        y_t = z_t

    The reset value `c` is reached through `where` (no derivative through the spike),
    the recovery jump `d ⊙ z_t` through the surrogate.

    **Arguments:**

    - `surrogate`: the spike's surrogate (default fast sigmoid with slope 0.1, for mV).
    - `dt`, `v_peak`, `v_min`: step (ms), spike cut-off and lower clip (mV).

    Parameters: `w_in`, `a`, `b`, `c`, `d` (per neuron). State: `{"v", "u"}`.
    """
    surrogate: Surrogate = FastSigmoid(0.1)
    dt: float = 0.5
    v_peak: float = 30.0
    v_min: float = -90.0

    def __call__(self, params, state, x):
        v, u = state["v"], state["u"]
        v_next = v + self.dt * (0.04 * v ** 2 + 5.0 * v + 140.0 - u + params["w_in"] @ x)
        u_next = u + self.dt * params["a"] * (params["b"] * v - u)
        z = self.surrogate(v_next - self.v_peak)
        v_next = jnp.where(z > 0, params["c"], jnp.clip(v_next, self.v_min, self.v_peak))
        return {"v": v_next, "u": u_next + params["d"] * z}, z

    def init_params(self, key, n_in, n, dtype=None):
        """Regular-spiking neurons (a, b, c, d ≈ 0.02, 0.2, −65, 8, jittered), weights std 20/√n_in.

        **Arguments:** `key`, `n_in`, `n`, `dtype` as for `LIF.init_params`.

        **Returns:**

        A dict of parameter arrays.
        """
        dtype = _float(dtype)
        k_w, k_a, k_b, k_c, k_d = jax.random.split(key, 5)
        return {"w_in": _normal(k_w, (n, n_in), 20.0 / math.sqrt(n_in), dtype),
                "a": _uniform(k_a, n, 0.018, 0.022, dtype), "b": _uniform(k_b, n, 0.18, 0.22, dtype),
                "c": _uniform(k_c, n, -67.0, -63.0, dtype), "d": _uniform(k_d, n, 7.0, 9.0, dtype)}

    def init_state(self, n, dtype=None, batch=None):
        """Rest: `v = −65`, `u = 0.2·v = −13`.

        **Arguments:** `n`, `dtype`, `batch` (as for `Neuron.init_state`).

        **Returns:**

        The state dict.
        """
        dtype = _float(dtype)
        return {"v": jnp.full(_shape(n, batch), -65.0, dtype), "u": jnp.full(_shape(n, batch), -13.0, dtype)}


@dataclasses.dataclass(frozen=True)
class AdEx(Neuron):
    """Adaptive exponential integrate-and-fire (Brette & Gerstner 2005), forward Euler.

    With leak conductance 1 (currents in mV), `k_m = dt/τ_m`, `k_w = dt/τ_w`:

        v' = v + k_m ⊙ (−(v − E_L) + Δ_T exp((v − V_T)/Δ_T) − w + I_t),   I_t = W_in x_t
        w' = w + k_w ⊙ (a ⊙ (v − E_L) − w)
        z_t = H(v' − V_peak)
        v_t = where(z_t > 0, V_r, min(v', V_peak)),   w_t = w' + b ⊙ z_t
        y_t = z_t

    The state never exceeds `V_peak`, which keeps the exponential finite.

    **Arguments:**

    - `surrogate`: default fast sigmoid with slope 1 (mV).
    - `e_leak`, `v_t`, `delta_t`, `v_peak`, `v_reset`: E_L, V_T, Δ_T, V_peak, V_r (mV).

    Parameters: `w_in`, `k_m`, `k_w`, `a`, `b` (per neuron). State: `{"v", "w"}`.
    """
    surrogate: Surrogate = FastSigmoid(1.0)
    e_leak: float = -70.0
    v_t: float = -50.0
    delta_t: float = 2.0
    v_peak: float = -40.0
    v_reset: float = -58.0

    def __call__(self, params, state, x):
        v, w = state["v"], state["w"]
        drive = -(v - self.e_leak) + self.delta_t * jnp.exp((v - self.v_t) / self.delta_t) - w
        v_next = v + params["k_m"] * (drive + params["w_in"] @ x)
        w_next = w + params["k_w"] * (params["a"] * (v - self.e_leak) - w)
        z = self.surrogate(v_next - self.v_peak)
        v_next = jnp.where(z > 0, jnp.full_like(v, self.v_reset), jnp.minimum(v_next, self.v_peak))
        return {"v": v_next, "w": w_next + params["b"] * z}, z

    def init_params(self, key, n_in, n, dtype=None):
        """`k_m` in [0.04, 0.06] (τ_m ≈ 20 steps), `k_w` in [0.005, 0.01], `a` in [0, 0.5],
        `b` in [1, 3], weights std 40/√n_in.

        **Arguments:** `key`, `n_in`, `n`, `dtype` as for `LIF.init_params`.

        **Returns:**

        A dict of parameter arrays.
        """
        dtype = _float(dtype)
        k_w, k_m, k_tw, k_a, k_b = jax.random.split(key, 5)
        return {"w_in": _normal(k_w, (n, n_in), 40.0 / math.sqrt(n_in), dtype),
                "k_m": _uniform(k_m, n, 0.04, 0.06, dtype), "k_w": _uniform(k_tw, n, 0.005, 0.01, dtype),
                "a": _uniform(k_a, n, 0.0, 0.5, dtype), "b": _uniform(k_b, n, 1.0, 3.0, dtype)}

    def init_state(self, n, dtype=None, batch=None):
        """Rest: `v = E_L`, `w = 0`.

        **Arguments:** `n`, `dtype`, `batch` (as for `Neuron.init_state`).

        **Returns:**

        The state dict.
        """
        dtype = _float(dtype)
        return {"v": jnp.full(_shape(n, batch), self.e_leak, dtype), "w": jnp.zeros(_shape(n, batch), dtype)}


@dataclasses.dataclass(frozen=True)
class ResonateAndFire(Neuron):
    """Resonate-and-fire neuron (Izhikevich 2001): a damped oscillator, `x + i·y`, spiking on `y`.

    The complex state is rotated by ω and damped by λ each step; the input drives the
    real part; a spike subtracts θ from the imaginary part:

        z_{t−1} = H(y_{t−1} − θ),   r = z_{t−1} (or sg(z_{t−1}) if `detach_reset`)
        x_t = λ ⊙ (cos ω ⊙ x_{t−1} − sin ω ⊙ (y_{t−1} − θ r)) + I_t,   I_t = W_in x_t
        y_t = λ ⊙ (sin ω ⊙ x_{t−1} + cos ω ⊙ (y_{t−1} − θ r))
        y_out = z_t = H(y_t − θ)

    **Arguments:**

    - `surrogate`, `threshold`, `detach_reset`: as for `LIF`.

    Parameters: `w_in`, `decay` (λ), `omega` (ω, radians per step). State: `{"x", "y"}`.
    """
    surrogate: Surrogate = FastSigmoid(10.0)
    threshold: float = 1.0
    detach_reset: bool = False

    def __call__(self, params, state, x):
        z_prev = self.surrogate(state["y"] - self.threshold)
        r = _sg(z_prev) if self.detach_reset else z_prev
        re, im = state["x"], state["y"] - self.threshold * r
        cos, sin, decay = jnp.cos(params["omega"]), jnp.sin(params["omega"]), params["decay"]
        new_re = decay * (cos * re - sin * im) + params["w_in"] @ x
        new_im = decay * (sin * re + cos * im)
        return {"x": new_re, "y": new_im}, self.surrogate(new_im - self.threshold)

    def init_params(self, key, n_in, n, dtype=None):
        """`decay` in [0.85, 0.97], `omega` in [0.2, 0.8] rad/step, weights std 2/√n_in.

        **Arguments:** `key`, `n_in`, `n`, `dtype` as for `LIF.init_params`.

        **Returns:**

        A dict of parameter arrays.
        """
        dtype = _float(dtype)
        k_w, k_d, k_o = jax.random.split(key, 3)
        return {"w_in": _normal(k_w, (n, n_in), 2.0 / math.sqrt(n_in), dtype),
                "decay": _uniform(k_d, n, 0.85, 0.97, dtype), "omega": _uniform(k_o, n, 0.2, 0.8, dtype)}

    def init_state(self, n, dtype=None, batch=None):
        """Rest: `x = y = 0`.

        **Arguments:** `n`, `dtype`, `batch` (as for `Neuron.init_state`).

        **Returns:**

        The state dict.
        """
        zeros = jnp.zeros(_shape(n, batch), _float(dtype))
        return {"x": zeros, "y": zeros}


# -- non-spiking units ---------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LeakyIntegrator(Neuron):
    """Leaky integrator readout (non-spiking): `v_t = α ⊙ v_{t−1} + W_in x_t + b`, `y_t = v_t`.

    Parameters: `w_in` (n, n_in), `alpha` (n,), `bias` (n,). State: `{"v": (n,)}`.
    """

    def __call__(self, params, state, x):
        v = params["alpha"] * state["v"] + params["w_in"] @ x + params["bias"]
        return {"v": v}, v

    def init_params(self, key, n_in, n, dtype=None):
        """Weights std 1/√n_in, `alpha` in [0.8, 0.95], zero bias.

        **Arguments:** `key`, `n_in`, `n`, `dtype` as for `LIF.init_params`.

        **Returns:**

        A dict of parameter arrays.
        """
        dtype = _float(dtype)
        k_w, k_alpha = jax.random.split(key)
        return {"w_in": _normal(k_w, (n, n_in), 1.0 / math.sqrt(n_in), dtype),
                "alpha": _uniform(k_alpha, n, 0.8, 0.95, dtype), "bias": jnp.zeros((n,), dtype)}

    def init_state(self, n, dtype=None, batch=None):
        """Rest: `v = 0`.

        **Arguments:** `n`, `dtype`, `batch` (as for `Neuron.init_state`).

        **Returns:**

        The state dict.
        """
        return {"v": jnp.zeros(_shape(n, batch), _float(dtype))}


@dataclasses.dataclass(frozen=True)
class DiagonalLRU(Neuron):
    """Linear recurrent unit with a complex diagonal recurrence (Orvieto et al. 2023).

        λ = exp(−exp(ν) + i·exp(φ)),   γ = √(1 − |λ|²)
        h_t = λ ⊙ h_{t−1} + γ ⊙ (B x_t),       B = B_re + i·B_im   (n, n_in)
        y_t = Re(C h_t) + D x_t,               C = C_re + i·C_im   (n_out, n)

    `h` is stored as its real and imaginary parts. `n_out` defaults to `n`.

    Parameters: `nu_log`, `phase_log` (n,), `b_re`, `b_im`, `c_re`, `c_im`, `d`.
    State: `{"re": (n,), "im": (n,)}`.
    """
    n_out: int | None = None

    def __call__(self, params, state, x):
        modulus = jnp.exp(-jnp.exp(params["nu_log"]))
        phase = jnp.exp(params["phase_log"])
        lam_re, lam_im = modulus * jnp.cos(phase), modulus * jnp.sin(phase)
        gamma = jnp.sqrt(1.0 - modulus ** 2)
        u_re, u_im = gamma * (params["b_re"] @ x), gamma * (params["b_im"] @ x)
        re = lam_re * state["re"] - lam_im * state["im"] + u_re
        im = lam_re * state["im"] + lam_im * state["re"] + u_im
        y = params["c_re"] @ re - params["c_im"] @ im + params["d"] @ x
        return {"re": re, "im": im}, y

    def init_params(self, key, n_in, n, dtype=None):
        """Ring initialisation: |λ| uniform in [0.5, 0.95], phase in [0.05, π/4]; Glorot-like B, C, D.

        **Arguments:** `key`, `n_in`, `n`, `dtype` as for `LIF.init_params`.

        **Returns:**

        A dict of parameter arrays.
        """
        dtype = _float(dtype)
        n_out = n if self.n_out is None else self.n_out
        k = jax.random.split(key, 7)
        modulus = _uniform(k[0], n, 0.5, 0.95, dtype)
        phase = _uniform(k[1], n, 0.05, math.pi / 4, dtype)
        b_scale, c_scale = 1.0 / math.sqrt(2 * n_in), 1.0 / math.sqrt(n)
        return {"nu_log": jnp.log(-jnp.log(modulus)), "phase_log": jnp.log(phase),
                "b_re": _normal(k[2], (n, n_in), b_scale, dtype), "b_im": _normal(k[3], (n, n_in), b_scale, dtype),
                "c_re": _normal(k[4], (n_out, n), c_scale, dtype), "c_im": _normal(k[5], (n_out, n), c_scale, dtype),
                "d": _normal(k[6], (n_out, n_in), 1.0 / math.sqrt(n_in), dtype)}

    def init_state(self, n, dtype=None, batch=None):
        """Rest: `h = 0`.

        **Arguments:** `n`, `dtype`, `batch` (as for `Neuron.init_state`).

        **Returns:**

        The state dict.
        """
        zeros = jnp.zeros(_shape(n, batch), _float(dtype))
        return {"re": zeros, "im": zeros}


@dataclasses.dataclass(frozen=True)
class GRUCell(Neuron):
    """Gated recurrent unit (Cho et al. 2014; PyTorch's convention for the candidate):

        r_t = σ(W_r x_t + U_r h_{t−1} + b_r)
        u_t = σ(W_u x_t + U_u h_{t−1} + b_u)
        n_t = tanh(W_n x_t + b_n + r_t ⊙ (U_n h_{t−1} + c_n))
        h_t = (1 − u_t) ⊙ n_t + u_t ⊙ h_{t−1},   y_t = h_t

    Parameters: `w_r`, `w_u`, `w_n` (n, n_in), `u_r`, `u_u`, `u_n` (n, n), `b_r`, `b_u`,
    `b_n`, `c_n` (n,). State: `{"h": (n,)}`. `U` mixes neurons, so the exact traces are dense.
    """

    def __call__(self, params, state, x):
        h = state["h"]
        r = jax.nn.sigmoid(params["w_r"] @ x + params["u_r"] @ h + params["b_r"])
        u = jax.nn.sigmoid(params["w_u"] @ x + params["u_u"] @ h + params["b_u"])
        cand = jnp.tanh(params["w_n"] @ x + params["b_n"] + r * (params["u_n"] @ h + params["c_n"]))
        h = (1.0 - u) * cand + u * h
        return {"h": h}, h

    def init_params(self, key, n_in, n, dtype=None):
        """Weights std 1/√fan_in, zero biases.

        **Arguments:** `key`, `n_in`, `n`, `dtype` as for `LIF.init_params`.

        **Returns:**

        A dict of parameter arrays.
        """
        dtype = _float(dtype)
        k = jax.random.split(key, 6)
        params = {}
        for i, gate in enumerate("run"):
            params[f"w_{gate}"] = _normal(k[2 * i], (n, n_in), 1.0 / math.sqrt(n_in), dtype)
            params[f"u_{gate}"] = _normal(k[2 * i + 1], (n, n), 1.0 / math.sqrt(n), dtype)
            params[f"b_{gate}"] = jnp.zeros((n,), dtype)
        params["c_n"] = jnp.zeros((n,), dtype)
        return params

    def init_state(self, n, dtype=None, batch=None):
        """Rest: `h = 0`.

        **Arguments:** `n`, `dtype`, `batch` (as for `Neuron.init_state`).

        **Returns:**

        The state dict.
        """
        return {"h": jnp.zeros(_shape(n, batch), _float(dtype))}


# -- composition ---------------------------------------------------------------------------

def _infers_shape(layer) -> bool:
    """A `sparseprop.layers` layer (it sizes itself from its input), not a catalogue neuron."""
    return hasattr(layer, "output_shape")


class Recording(NamedTuple):
    """Every layer's output and membrane potential at one step, the output of a
    `Sequential(..., record=True)` (snnTorch's `spk_rec` / `mem_rec` once stacked by
    `sparseprop.simulate` or `learner.run`: every leaf gains a leading time axis).

    - `output`: the last layer's output (what a loss reads: `losses.on_output(loss)`).
    - `spikes`: a tuple, layer k's output `y_k` (spikes for a spiking layer).
    - `potentials`: a tuple, layer k's membrane potential `state_k["v"]` after the step (before
      the reset that the next step applies), or None for a layer without one.
    """
    output: Any
    spikes: tuple
    potentials: tuple


@dataclasses.dataclass(frozen=True)
class Sequential:
    """Layers applied in order within one time step: layer k's output is layer k+1's input.

    Params and state are tuples with one entry per layer (an empty dict for a layer without
    parameters or state). Layers are catalogue neurons (`LIF`, ..., each with its own input
    weights and a size `n`) or `sparseprop.layers` layers (convolutions, pooling, flatten,
    weightless `Leaky` neurons, ...), which infer their shapes from their input.

    **Arguments:**

    - `layers`: a tuple of neuron models and layers.
    - `record`: return a `Recording` (every layer's output and potential) instead of the
      last layer's output alone; `sparseprop.simulate` then stacks it over time.
    """
    layers: tuple
    record: bool = False

    def __call__(self, params, state, x):
        new_state, spikes, potentials = [], [], []
        for layer, p, s in zip(self.layers, params, state):
            s, x = layer(p, s, x)
            new_state.append(s)
            spikes.append(x)
            potentials.append(s.get("v") if isinstance(s, dict) else None)
        if self.record:
            return tuple(new_state), Recording(x, tuple(spikes), tuple(potentials))
        return tuple(new_state), x

    @property
    def thresholds(self) -> tuple:
        """Each layer's firing threshold θ (None for a layer without one), for plots of `Recording`."""
        return tuple(getattr(layer, "threshold", None) for layer in self.layers)

    def shapes(self, sizes: Sequence) -> list:
        """Each layer's input and output shape, `[(in_shape, out_shape, n), ...]`.

        **Arguments:**

        - `sizes`: `(input, n_1, ..., n_K)`: the input's shape (an int for a flat input, or a
          tuple), then the size `n` of each catalogue neuron layer, in order; layers from
          `sparseprop.layers` take no entry (they size themselves).

        **Returns:**

        A list with one `(in_shape, out_shape, n)` per layer (`n` None for a `layers` layer).

        **Raises:**

        `ValueError` if `sizes` does not have one entry per catalogue neuron after the input,
        or a catalogue neuron gets a multi-axis input.
        """
        sizes = self._normalise(sizes)
        shape = (int(sizes[0]),) if np.ndim(sizes[0]) == 0 else tuple(int(v) for v in sizes[0])
        own = iter(sizes[1:])
        out = []
        for k, layer in enumerate(self.layers):
            if _infers_shape(layer):
                out.append((shape, layer.output_shape(shape), None))
            else:
                if len(shape) != 1:
                    raise ValueError(f"layer {k} ({type(layer).__name__}) has input weights for a flat input, but "
                                     f"gets shape {shape}: put layers.Flatten() before it")
                n = int(next(own))
                out.append((shape, (getattr(layer, "n_out", None) or n,), n))
            shape = out[-1][1]
        return out

    def init_params(self, key, sizes: Sequence, dtype=None) -> tuple:
        """Each layer's `init_params`, with its own key.

        **Arguments:**

        - `key`: a PRNG key.
        - `sizes`: `(input, n_1, ..., n_K)`, see `shapes`: for catalogue neurons only,
          `(n_in, n_1, ..., n_L)`, one more entry than there are layers.
        - `dtype`: float dtype.

        **Returns:**

        A tuple of per-layer parameter dicts.
        """
        keys = jax.random.split(key, len(self.layers))
        return tuple(layer.init_params(k, in_shape, dtype) if n is None else layer.init_params(k, in_shape[0], n, dtype)
                     for layer, k, (in_shape, _, n) in zip(self.layers, keys, self.shapes(sizes)))

    def init_state(self, sizes: Sequence, dtype=None, batch=None, key=None) -> tuple:
        """Each layer's `init_state`.

        **Arguments:**

        - `sizes`: as for `init_params`; `dtype`: float dtype.
        - `batch`: a batch size `B`: every leaf gets a leading axis `(B, ...)`.
        - `key`: a PRNG key for layers with a random state (`layers.Dropout`'s mask, drawn
          once per sequence); None gives them their deterministic state (no dropout).

        **Returns:**

        A tuple of per-layer states.
        """
        keys = [None] * len(self.layers) if key is None else list(jax.random.split(key, len(self.layers)))
        states = []
        for layer, k, (in_shape, _, n) in zip(self.layers, keys, self.shapes(sizes)):
            if n is not None:
                states.append(layer.init_state(n, dtype, batch))
            elif "key" in inspect.signature(layer.init_state).parameters:
                states.append(layer.init_state(in_shape, dtype, batch, key=k))
            else:
                states.append(layer.init_state(in_shape, dtype, batch))
        return tuple(states)

    def _normalise(self, sizes):
        """`sizes` as `(input, n_1, ..., n_K)`; a network without catalogue neurons may be given
        its input shape alone (`(2, 10, 10)` or `16`)."""
        need = sum(not _infers_shape(layer) for layer in self.layers)
        if need == 0 and (isinstance(sizes, (int, np.integer)) or all(np.ndim(v) == 0 for v in sizes)):
            sizes = (sizes,)
        if len(sizes) != need + 1:
            raise ValueError(f"sizes must be (input, n_1, ..., n_K): the input's shape, then one size for each of "
                             f"the {need} catalogue neuron layers ({len(self.layers) - need} layers from "
                             f"sparseprop.layers size themselves), {need + 1} entries; got {tuple(sizes)}")
        return tuple(sizes)
