"""The benchmark problems: four LIF-family models per example (no batch axis, the contract of
`online_grad`), their initialisers, the methods compared, and random spike problems."""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Dict

import jax
import jax.numpy as jnp
from jax import lax

from ..surrogates import spike


THRESHOLD = 1.0


def mse_loss(y, target):
    """`0.5 * sum((y - target)**2)`: the per-step loss of every benchmark model."""
    return 0.5 * jnp.sum((y - target) ** 2)


def lif_shared(params, state, x):
    """LIF with one shared (scalar) leak and detached reset by subtraction: the model of
    `benchmarks/hand_written.py`. Its synaptic trace factorises (O(n + m))."""
    v = state["v"]
    z_prev = lax.stop_gradient(spike(v - THRESHOLD))
    v = params["alpha"] * v + params["w"] @ x - z_prev * THRESHOLD
    return {"v": v}, spike(v - THRESHOLD)


def lif_perneuron(params, state, x):
    """LIF with a per-neuron leak vector and detached reset: needs the full n x m eligibility."""
    v = state["v"]
    z_prev = lax.stop_gradient(spike(v - THRESHOLD))
    v = params["alpha"] * v + params["w"] @ x - z_prev * THRESHOLD
    return {"v": v}, spike(v - THRESHOLD)


ALIF_RHO, ALIF_BETA = 0.97, 0.2


def alif(params, state, x):
    """Adaptive LIF (Bellec et al. 2020): two state variables per neuron (v, a), threshold
    1 + beta*a, detached reset; the adaptation path through the spike is kept (2x2 blocks)."""
    v, a = state["v"], state["a"]
    z_prev = spike(v - THRESHOLD - ALIF_BETA * a)
    v = params["alpha"] * v + params["w"] @ x - lax.stop_gradient(z_prev) * THRESHOLD
    a = ALIF_RHO * a + z_prev
    return {"v": v, "a": a}, spike(v - THRESHOLD - ALIF_BETA * a)


def lif_recurrent(params, state, x):
    """LIF with recurrent weights r (n x n) acting on the previous spikes: neuron-mixing, so
    exact online learning needs a dense trace and e-prop drops the recurrent path."""
    v = state["v"]
    z_prev = spike(v - THRESHOLD)
    v = (params["alpha"] * v + params["w"] @ x + params["r"] @ z_prev
         - lax.stop_gradient(z_prev) * THRESHOLD)
    return {"v": v}, spike(v - THRESHOLD)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A benchmark model: `step(params, state, x) -> (state, y)`, its initialisers and a label."""
    name: str
    step: Callable
    init_params: Callable      # (key, n, m, dtype) -> params
    init_state: Callable       # (n, dtype) -> state of one example
    description: str


def _w(key, n, m, dtype, scale=0.3):
    return (jax.random.normal(key, (n, m)) * scale * math.sqrt(256.0 / m)).astype(dtype)


def _leaks(key, n, dtype):
    return jax.random.uniform(key, (n,), minval=0.8, maxval=0.95).astype(dtype)


MODELS: Dict[str, ModelSpec] = {
    "lif_shared": ModelSpec(
        "lif_shared", lif_shared,
        lambda k, n, m, dt: {"w": _w(k, n, m, dt), "alpha": jnp.asarray(0.9, dt)},
        lambda n, dt: {"v": jnp.zeros((n,), dt)},
        "LIF, shared scalar leak, detached reset (factorisable trace)"),
    "lif_perneuron": ModelSpec(
        "lif_perneuron", lif_perneuron,
        lambda k, n, m, dt: {"w": _w(k, n, m, dt), "alpha": _leaks(jax.random.fold_in(k, 1), n, dt)},
        lambda n, dt: {"v": jnp.zeros((n,), dt)},
        "LIF, per-neuron leak, detached reset (full n x m eligibility)"),
    "alif": ModelSpec(
        "alif", alif,
        lambda k, n, m, dt: {"w": _w(k, n, m, dt), "alpha": _leaks(jax.random.fold_in(k, 1), n, dt)},
        lambda n, dt: {"v": jnp.zeros((n,), dt), "a": jnp.zeros((n,), dt)},
        "ALIF, per-neuron leak, adaptive threshold (2x2 per-neuron blocks)"),
    "lif_recurrent": ModelSpec(
        "lif_recurrent", lif_recurrent,
        lambda k, n, m, dt: {"w": _w(k, n, m, dt), "alpha": _leaks(jax.random.fold_in(k, 1), n, dt),
                             "r": (jax.random.normal(jax.random.fold_in(k, 2), (n, n))
                                   * 0.2 / math.sqrt(n)).astype(dt)},
        lambda n, dt: {"v": jnp.zeros((n,), dt)},
        "recurrent LIF (n x n recurrent weights; exact = dense trace)"),
}


METHODS = ("bptt", "bptt_checkpoint", "online_exact", "online_eprop", "dense_rtrl",
           "braintrace_drtrl", "braintrace_pp_prop")


# Methods whose gradient must equal BPTT (per model: e-prop is exact where nothing mixes neurons).
EXACT_METHODS = ("bptt_checkpoint", "online_exact", "dense_rtrl")


def exact_expected(model: str, method: str) -> bool:
    """Whether `method` should equal BPTT on `model`: the exact methods always; e-prop and
    braintrace D-RTRL where no path mixes neurons (all models but `lif_recurrent`).

    **Arguments:** `model`, `method`: keys of `MODELS` and `METHODS`.

    **Returns:** a bool.
    """
    if method in EXACT_METHODS or method == "bptt":
        return True
    return method in ("online_eprop", "braintrace_drtrl") and model != "lif_recurrent"


def make_problem(model: str, n: int, m: int, batch: int, steps: int, dtype=jnp.float32, seed: int = 0,
                 abstract: bool = False, input_rate: float = 0.1, target_rate: float = 0.05):
    """A benchmark problem: parameters, a batch of initial states, spike inputs and targets.

    **Arguments:**

    - `model`: a key of `MODELS`.
    - `n`, `m`, `batch`, `steps`: neurons, inputs, batch size B and sequence length T.
    - `dtype`: float dtype of everything.
    - `seed`: PRNG seed (parameters, inputs and targets use distinct keys).
    - `abstract`: return `jax.ShapeDtypeStruct`s for `xs`/`targets` (compile-only, no memory).
    - `input_rate`, `target_rate`: Bernoulli rates of input and target spikes.

    **Returns:**

    `(params, states0, xs, targets)`; `states0` has leading axis B, `xs` is (T, B, m) and
    `targets` (T, B, n).
    """
    spec = MODELS[model]
    kp, kx, kt = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = spec.init_params(kp, n, m, dtype)
    states0 = jax.tree_util.tree_map(lambda s: jnp.zeros((batch,) + s.shape, s.dtype), spec.init_state(n, dtype))
    if abstract:
        return (params, states0, jax.ShapeDtypeStruct((steps, batch, m), dtype),
                jax.ShapeDtypeStruct((steps, batch, n), dtype))
    xs = (jax.random.uniform(kx, (steps, batch, m)) < input_rate).astype(dtype)
    targets = (jax.random.uniform(kt, (steps, batch, n)) < target_rate).astype(dtype)
    return params, states0, xs, targets
