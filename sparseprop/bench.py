"""Benchmarks: memory and speed of online gradients against BPTT, checkpointed BPTT, dense
RTRL and braintrace, on the neuron models of issue #6.

Every method is turned into one jitted function `grad_fn(params, states0, xs, targets)`
returning the loss gradient summed over a batch (`states0` has a leading batch axis B,
`xs` and `targets` are time-major, `(T, B, ...)`). Per point we measure

- `temp_bytes`: XLA's compiled temporary buffer size (`memory_analysis()`), from a
  compile only (abstract inputs, nothing allocated), cheap even for T = 25600;
- `ms_per_step`: median wall time of >= 5 runs after warm-up, divided by T;
- `rel_err`: max-over-leaves relative error of the gradient against BPTT;
- `rss_*`: peak resident memory (`getrusage` maxrss) of a child process running one point.

Timings on a shared machine are noisy: compare methods measured side by side in one
run (the sweeps interleave repeats round-robin), never numbers from different runs.

Entry points: `memory_sweep`, `speed_sweep`, `accuracy_check`, `compare_reference`,
`peak_rss`; the scripts in `benchmarks/` wrap them.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from .api import online_grad
from .surrogates import spike

__all__ = ["MODELS", "METHODS", "ModelSpec", "make_problem", "make_grad_fn", "temp_bytes",
           "time_per_step", "relative_error", "peak_rss", "memory_sweep", "speed_sweep",
           "accuracy_check", "compare_reference", "machine_label", "braintrace_available",
           "write_csv"]

THRESHOLD = 1.0


# ----------------------------------------------------------------------------------------
# Models: per example (no batch axis), the contract of `online_grad`.
# ----------------------------------------------------------------------------------------

def mse_loss(y, target):
    """`0.5 * sum((y - target)**2)`: the per-step loss of every benchmark model."""
    return 0.5 * jnp.sum((y - target) ** 2)


def lif_shared(params, state, x):
    """LIF with one shared (scalar) leak and detached reset by subtraction: the model of
    `shared/reference/limit_lif.py`. Its synaptic trace factorises (O(n + m))."""
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


# ----------------------------------------------------------------------------------------
# Methods: each returns grad_fn(params, states0, xs, targets) -> grads summed over the batch.
# ----------------------------------------------------------------------------------------

def _batched_total_loss(step, loss_fn, checkpoint_chunk: Optional[int] = None):
    def total(params, states0, xs, targets):
        def b(states, inp):
            x, t = inp
            states, y = jax.vmap(step, in_axes=(None, 0, 0))(params, states, x)
            return states, jnp.sum(jax.vmap(loss_fn)(y, t))
        if checkpoint_chunk is None:
            return jnp.sum(lax.scan(b, states0, (xs, targets))[1])
        steps = xs.shape[0]
        c = checkpoint_chunk
        chunked = jax.tree_util.tree_map(lambda a: a.reshape((steps // c, c) + a.shape[1:]), (xs, targets))

        @jax.checkpoint
        def chunk(states, inp):
            states, losses = lax.scan(b, states, inp)
            return states, jnp.sum(losses)
        return jnp.sum(lax.scan(chunk, states0, chunked)[1])
    return total


def checkpoint_chunk_size(steps: int) -> int:
    """The divisor of `steps` closest to sqrt(steps): chunk length of sqrt(T) checkpointing."""
    root = math.sqrt(steps)
    return min((d for d in range(1, steps + 1) if steps % d == 0), key=lambda d: (abs(d - root), d))


def _bptt_fn(step, loss_fn, checkpoint: bool):
    def f(params, states0, xs, targets):
        chunk = checkpoint_chunk_size(xs.shape[0]) if checkpoint else None
        return jax.grad(_batched_total_loss(step, loss_fn, chunk))(params, states0, xs, targets)
    return f


def _online_fn(step, loss_fn, method: str, init_state):
    learner = online_grad(step, loss_fn, method=method)

    def f(params, states0, xs, targets):
        carry = learner.init_batch(params, states0, xs[0])
        return learner.run_batch(params, carry, xs, targets, time_major=True)[1].grads
    f.learner = learner
    return f


def _dense_rtrl_fn(step, loss_fn):
    """Dense RTRL: M_t = ds_t/dtheta as a full |s| x |theta| matrix per example (jacfwd for the
    state Jacobian, jacrev for the parameter Jacobian). The textbook reference; small n only."""
    def f(params, states0, xs, targets):
        theta, unravel_p = ravel_pytree(params)
        s_example = jax.tree_util.tree_map(lambda a: a[0], states0)
        _, unravel_s = ravel_pytree(s_example)

        def per_example(state0, xs_b, ts_b):
            s0 = ravel_pytree(state0)[0]

            def body(carry, inp):
                s, big_m, g = carry
                x, t = inp

                def f_state(th, s_):
                    new, y = step(unravel_p(th), unravel_s(s_), x)
                    return ravel_pytree(new)[0], y

                j_s = jax.jacfwd(lambda s_: f_state(theta, s_)[0])(s)
                j_th = jax.jacrev(lambda th: f_state(th, s)[0])(theta)
                d_th, d_s = jax.grad(lambda th, s_: loss_fn(f_state(th, s_)[1], t), argnums=(0, 1))(theta, s)
                g = g + d_th + d_s @ big_m
                big_m = j_s @ big_m + j_th
                return (f_state(theta, s)[0], big_m, g), None
            c0 = (s0, jnp.zeros((s0.size, theta.size), theta.dtype), jnp.zeros_like(theta))
            return lax.scan(body, c0, (xs_b, ts_b))[0][2]
        g = jnp.sum(jax.vmap(per_example, in_axes=(0, 1, 1))(states0, xs, targets), axis=0)
        return unravel_p(g)
    return f


def make_grad_fn(method: str, model: str, loss_fn: Callable = mse_loss) -> Callable:
    """The gradient function of `method` for benchmark model `model` (not yet jitted).

    **Arguments:**

    - `method`: one of `METHODS`: `"bptt"` (jax.grad of a lax.scan), `"bptt_checkpoint"`
      (sqrt(T) chunks under `jax.checkpoint`), `"online_exact"`, `"online_eprop"` (sparseprop,
      batched by `learner.run_batch`), `"dense_rtrl"` (full Jacobian traces),
      `"braintrace_drtrl"`, `"braintrace_pp_prop"` (needs `braintrace`).
    - `model`: a key of `MODELS`.
    - `loss_fn`: the per-step loss `loss_fn(y, target)`.

    **Returns:**

    `grad_fn(params, states0, xs, targets) -> grads`, the gradient of the summed loss over
    time and batch, a pytree like `params`.
    """
    spec = MODELS[model]
    if method == "bptt":
        return _bptt_fn(spec.step, loss_fn, checkpoint=False)
    if method == "bptt_checkpoint":
        return _bptt_fn(spec.step, loss_fn, checkpoint=True)
    if method in ("online_exact", "online_eprop"):
        return _online_fn(spec.step, loss_fn, method.split("_", 1)[1], spec.init_state)
    if method == "dense_rtrl":
        return _dense_rtrl_fn(spec.step, loss_fn)
    if method.startswith("braintrace_"):
        return braintrace_grad_fn(method, model)
    raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")


# ----------------------------------------------------------------------------------------
# braintrace (optional): D-RTRL and pp-prop on the same models written as brainstate modules.
# ----------------------------------------------------------------------------------------

def braintrace_available() -> Optional[str]:
    """`None` if `braintrace` imports, else the reason it cannot be used (printed by the sweeps).

    **Arguments:** none.

    **Returns:** `None` or a message string.
    """
    try:
        import braintrace  # noqa: F401
        import brainstate  # noqa: F401
    except Exception as e:  # ImportError, or a broken install against this jax
        return f"braintrace not importable ({type(e).__name__}: {e}); pip install braintrace"
    return None


def braintrace_grad_fn(method: str, model: str) -> Callable:
    """braintrace's D-RTRL (`"braintrace_drtrl"`) or pp-prop (`"braintrace_pp_prop"`) on a
    benchmark model rewritten as a brainstate module (same mathematics, same surrogate).

    braintrace learns weights routed through its `matmul` op, so here only the synaptic
    weights are learned (`w`, and `r` for the recurrent model); leaks are constants. The
    returned gradient therefore has only those keys; compare it on them.
    The module is built inside the traced function, so the whole thing jits.

    **Arguments:**

    - `method`: `"braintrace_drtrl"` or `"braintrace_pp_prop"`.
    - `model`: a key of `MODELS`.

    **Returns:**

    `grad_fn(params, states0, xs, targets) -> {"w": ...[, "r": ...]}` (sum over time and batch).
    """
    import brainstate
    import braintrace

    algorithm = {"braintrace_drtrl": braintrace.D_RTRL, "braintrace_pp_prop": braintrace.pp_prop}[method]
    options = {"decay_or_rank": 0.9} if method == "braintrace_pp_prop" else {}

    class Layer(brainstate.nn.Module):
        def __init__(self, params, batch):
            super().__init__()
            n, m = params["w"].shape
            self.n, self.batch = n, batch
            self.lin = braintrace.nn.Linear(m, n, w_init=params["w"].T, b_init=None)
            if model == "lif_recurrent":
                self.rec = braintrace.nn.Linear(n, n, w_init=params["r"].T, b_init=None)
            self.alpha = lax.stop_gradient(params["alpha"])
            self.dtype = params["w"].dtype

        def init_state(self, batch_size=None, **kwargs):
            shape = (batch_size, self.n) if batch_size else (self.n,)
            self.v = brainstate.HiddenState(jnp.zeros(shape, self.dtype))
            if model == "alif":
                self.a = brainstate.HiddenState(jnp.zeros(shape, self.dtype))

        def update(self, x):
            v = self.v.value
            if model == "alif":
                a = self.a.value
                z_prev = spike(v - THRESHOLD - ALIF_BETA * a)
                v = self.alpha * v + self.lin(x) - lax.stop_gradient(z_prev) * THRESHOLD
                a = ALIF_RHO * a + z_prev
                self.v.value, self.a.value = v, a
                return spike(v - THRESHOLD - ALIF_BETA * a)
            if model == "lif_recurrent":
                z_prev = spike(v - THRESHOLD)
                v = (self.alpha * v + self.lin(x) + self.rec(z_prev)
                     - lax.stop_gradient(z_prev) * THRESHOLD)
            else:
                z_prev = lax.stop_gradient(spike(v - THRESHOLD))
                v = self.alpha * v + self.lin(x) - z_prev * THRESHOLD
            self.v.value = v
            return spike(v - THRESHOLD)

    def f(params, states0, xs, targets):
        batch = xs.shape[1]
        layer = Layer(params, batch)
        learner = braintrace.compile(layer, algorithm, xs[0], batch_size=batch, **options)
        # states0 are zeros in every benchmark problem: braintrace starts from its own zeros.

        def step_loss(x, t):
            return jnp.sum(jax.vmap(mse_loss)(learner(x), t))
        grads = learner.etrace_grad(xs, targets, step_fn=step_loss, reduction="sum")
        out = {}
        for path, g in grads.items():
            out["r" if "rec" in path else "w"] = g["weight"].T
        return out
    return f


_BRAINTRACE_MODELS = ("lif_shared", "lif_perneuron", "alif", "lif_recurrent")


# ----------------------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------------------

def _abstract(tree):
    return jax.tree_util.tree_map(
        lambda a: a if isinstance(a, jax.ShapeDtypeStruct) else jax.ShapeDtypeStruct(a.shape, a.dtype), tree)


def temp_bytes(grad_fn: Callable, *args) -> Dict[str, int]:
    """Compile `grad_fn` for `args` (arrays or ShapeDtypeStructs) and read XLA's memory analysis.

    **Arguments:**

    - `grad_fn`: the function to jit.
    - `args`: its arguments; only shapes and dtypes are used.

    **Returns:**

    `{"temp_bytes", "argument_bytes", "output_bytes", "compile_s"}`.
    """
    t0 = time.perf_counter()
    compiled = jax.jit(grad_fn).lower(*_abstract(args)).compile()
    ma = compiled.memory_analysis()
    return {"temp_bytes": int(ma.temp_size_in_bytes), "argument_bytes": int(ma.argument_size_in_bytes),
            "output_bytes": int(ma.output_size_in_bytes), "compile_s": time.perf_counter() - t0}


def time_per_step(fns: Dict[str, Callable], args: Sequence, steps: int, repeats: int = 5,
                  ) -> Dict[str, dict]:
    """Time several jitted functions side by side: warm-up, then `repeats` rounds, each round
    running every function once (round-robin, so machine noise hits all of them alike).

    **Arguments:**

    - `fns`: name -> function of `args`.
    - `args`: the arguments (real arrays).
    - `steps`: T, to turn seconds per call into ms per step.
    - `repeats`: timed rounds (>= 5 recommended); the median is reported.

    **Returns:**

    name -> `{"ms_per_step", "ms_per_step_min", "result"}` (`result`: the function's output).
    """
    compiled, results = {}, {}
    for name, f in fns.items():
        compiled[name] = jax.jit(f).lower(*args).compile()
        results[name] = jax.block_until_ready(compiled[name](*args))   # warm-up
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, c in compiled.items():
            t0 = time.perf_counter()
            jax.block_until_ready(c(*args))
            times[name].append(time.perf_counter() - t0)
    return {name: {"ms_per_step": statistics.median(ts) / steps * 1e3,
                   "ms_per_step_min": min(ts) / steps * 1e3, "result": results[name]}
            for name, ts in times.items()}


def _common(grads, reference):
    """Restrict two dict gradients to their common keys (braintrace learns only weights)."""
    if isinstance(grads, dict) and isinstance(reference, dict) and grads.keys() != reference.keys():
        keys = sorted(set(grads) & set(reference))
        return {k: grads[k] for k in keys}, {k: reference[k] for k in keys}
    return grads, reference


def relative_error(grads, reference) -> float:
    """max over leaves of max|g - ref| / max|ref| (a leaf with zero reference uses scale 1).

    **Arguments:**

    - `grads`, `reference`: pytrees of the same structure (dicts: compared on common keys).

    **Returns:** a float.
    """
    grads, reference = _common(grads, reference)
    errs = [0.0]
    for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(reference)):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        scale = float(np.max(np.abs(b))) if b.size else 0.0
        errs.append(float(np.max(np.abs(a - b))) / (scale if scale > 0 else 1.0) if b.size else 0.0)
    return max(errs)


def cosine(grads, reference) -> float:
    """Cosine between two gradient pytrees (flattened).

    **Arguments:** `grads`, `reference`: pytrees of the same structure.

    **Returns:** a float (1.0 when parallel).
    """
    grads, reference = _common(grads, reference)
    a = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree_util.tree_leaves(grads)])
    b = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree_util.tree_leaves(reference)])
    den = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / den) if den > 0 else float("nan")


def machine_label() -> str:
    """One line naming the machine: cpu count, platform, jax version and backend device.

    **Arguments:** none.

    **Returns:** a string.
    """
    dev = jax.devices()[0]
    return (f"{os.cpu_count()} CPU cores ({platform.machine()}, {platform.system()}), "
            f"jax {jax.__version__} backend={jax.default_backend()} device={dev.device_kind}")


def _vm_hwm_bytes() -> Optional[int]:
    """Linux: the peak RSS (VmHWM) of this process since the last reset, in bytes."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    """Linux: reset VmHWM to the current RSS (write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _child_point(spec: dict) -> dict:
    """Run in a child process: build one problem, compile and run one method once.

    The peak of the run alone is read by resetting Linux's VmHWM after data and compile
    (getrusage maxrss is monotone, so data generation would otherwise hide the run)."""
    kib = 1024  # Linux: ru_maxrss in KiB
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    dtype = jnp.dtype(spec.get("dtype", "float32"))
    args = make_problem(spec["model"], spec["n"], spec["m"], spec["batch"], spec["steps"], dtype)
    jax.block_until_ready(args)
    after_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    compiled = jax.jit(make_grad_fn(spec["method"], spec["model"])).lower(*args).compile()
    after_compile = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    reset = _reset_hwm()
    before_run = _vm_hwm_bytes() if reset else None
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    run_s = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    row = {"rss_import_bytes": base * kib, "rss_after_data_bytes": after_data * kib,
           "rss_after_compile_bytes": after_compile * kib, "rss_peak_bytes": peak * kib, "rss_run_s": run_s}
    if reset and before_run is not None:
        row["rss_before_run_bytes"] = before_run
        row["rss_run_peak_bytes"] = _vm_hwm_bytes()
    return row


def peak_rss(model: str, method: str, n: int, m: int, batch: int, steps: int, dtype: str = "float32",
             timeout: float = 600.0) -> dict:
    """Peak resident memory of a real run of one point, in a fresh child process.

    The child imports jax, builds the problem (inputs are O(T·B·m): see `rss_after_data_bytes`),
    compiles and runs the gradient once, and reports its own `getrusage` maxrss at each stage.
    `rss_run_delta_bytes` is what the run itself added: on Linux the peak (VmHWM) is reset
    after data and compile and read after the run; elsewhere peak − after-compile maxrss
    (a lower bound: maxrss is monotone, and generating the inputs may peak higher).

    **Arguments:**

    - `model`, `method`: keys of `MODELS` and `METHODS`.
    - `n`, `m`, `batch`, `steps`, `dtype`: the point.
    - `timeout`: seconds before the child is abandoned (the row then has `rss_error`).

    **Returns:**

    A dict of `rss_*` fields (bytes), or `{"rss_error": message}`.
    """
    spec = dict(model=model, method=method, n=n, m=m, batch=batch, steps=steps, dtype=dtype)
    code = ("import json,sys; from sparseprop.bench import _child_point; "
            "print('@@' + json.dumps(_child_point(json.loads(sys.argv[1]))))")
    env = dict(os.environ)
    env.setdefault("JAX_PLATFORMS", "cpu") if jax.default_backend() == "cpu" else None
    try:
        out = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True,
                             text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"rss_error": f"timeout after {timeout:.0f} s"}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("@@")]
    if out.returncode != 0 or not lines:
        return {"rss_error": (out.stderr.strip().splitlines() or ["exit %d" % out.returncode])[-1][:200]}
    row = json.loads(lines[-1][2:])
    if "rss_run_peak_bytes" in row:   # VmHWM reset before the run: what the run itself added
        row["rss_run_delta_bytes"] = row["rss_run_peak_bytes"] - row["rss_before_run_bytes"]
    else:                              # maxrss is monotone: a lower bound (0 when data dominated)
        row["rss_run_delta_bytes"] = row["rss_peak_bytes"] - row["rss_after_compile_bytes"]
    return row


# ----------------------------------------------------------------------------------------
# Which points are feasible
# ----------------------------------------------------------------------------------------

def _skip_reason(model: str, method: str, n: int, real_run: bool, dense_max_n: int,
                 exact_recurrent_max_n: int) -> Optional[str]:
    if method.startswith("braintrace_"):
        why = braintrace_available()
        if why:
            return why
        if not _braintrace_supports(method, model):
            return f"{method} cannot express {model}"
    if method == "dense_rtrl" and n > dense_max_n:
        return f"dense RTRL only for n <= {dense_max_n}"
    if method == "online_exact" and model == "lif_recurrent" and real_run and n > exact_recurrent_max_n:
        return f"exact recurrent (dense trace) only run for n <= {exact_recurrent_max_n}"
    return None


def _braintrace_supports(method: str, model: str) -> bool:
    return model in _BRAINTRACE_MODELS


def _progress(total: int, desc: str, enabled: bool = True):
    try:
        from tqdm.auto import tqdm
        return tqdm(total=total, desc=desc, disable=not enabled, leave=True)
    except ImportError:  # pragma: no cover
        class _Null:
            def update(self, *_): pass
            def set_postfix_str(self, *_): pass
            def close(self): pass
        return _Null()


# ----------------------------------------------------------------------------------------
# Sweeps
# ----------------------------------------------------------------------------------------

DEFAULT_T = (100, 400, 1600, 6400, 25600)
DEFAULT_N = (128, 512, 2048)


def _print_skipped(skipped) -> None:
    for (mo, me, why), ns in skipped.items():
        print(f"skipped {me} on {mo} (n={sorted(set(ns))}): {why}")


def memory_sweep(models: Sequence[str] = tuple(MODELS), methods: Sequence[str] = METHODS,
                 steps: Sequence[int] = DEFAULT_T, widths: Sequence[int] = DEFAULT_N,
                 inputs: int = 256, batch: int = 16, dtype=jnp.float32,
                 rss_points: Sequence[tuple] = (), dense_max_n: int = 128,
                 csv_path: Optional[str] = None, png_path: Optional[str] = None,
                 progress: bool = True, verbose: bool = True) -> List[dict]:
    """Compiled temp bytes of every (model, method, n, T), plus peak RSS of real runs.

    Temp bytes come from compiling with abstract inputs (nothing allocated), so large T is
    cheap. Real runs (peak RSS, one child process each) only for `rss_points`.

    **Arguments:**

    - `models`, `methods`: which to sweep (unavailable methods are skipped with a message).
    - `steps`: sequence lengths T; `widths`: layer widths n; `inputs`: m; `batch`: B.
    - `dtype`: float dtype.
    - `rss_points`: `(model, method, n, T)` tuples to also run for real in a child process.
    - `dense_max_n`: largest n for dense RTRL.
    - `csv_path`, `png_path`: where to write the rows and the figure (skipped if `None`).
    - `progress`: show a tqdm bar; `verbose`: print skip messages.

    **Returns:**

    A list of row dicts: `model, method, n, m, batch, T, dtype, temp_bytes, argument_bytes,
    output_bytes, compile_s, machine` and, for RSS points, the `rss_*` fields.
    """
    machine = machine_label()
    points = [(mo, me, n, t) for mo in models for me in methods for n in widths for t in steps]
    rows, skipped = [], {}
    bar = _progress(len(points) + len(rss_points), "memory", progress)
    for mo, me, n, t in points:
        bar.update(1)
        why = _skip_reason(mo, me, n, False, dense_max_n, 0)
        if why:
            skipped.setdefault((mo, me, why), []).append(n)
            continue
        bar.set_postfix_str(f"{mo} {me} n={n} T={t}")
        args = make_problem(mo, n, inputs, batch, t, dtype, abstract=True)
        row = dict(model=mo, method=me, n=n, m=inputs, batch=batch, T=t, dtype=jnp.dtype(dtype).name)
        try:
            row.update(temp_bytes(make_grad_fn(me, mo), *args))
        except Exception as e:  # report and keep sweeping
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
        row["machine"] = machine
        rows.append(row)
    for mo, me, n, t in rss_points:
        bar.update(1)
        bar.set_postfix_str(f"RSS {mo} {me} n={n} T={t}")
        row = next((r for r in rows if (r["model"], r["method"], r["n"], r["T"]) == (mo, me, n, t)), None)
        if row is None:
            row = dict(model=mo, method=me, n=n, m=inputs, batch=batch, T=t, dtype=jnp.dtype(dtype).name,
                       machine=machine)
            rows.append(row)
        row.update(peak_rss(mo, me, n, inputs, batch, t, jnp.dtype(dtype).name))
    bar.close()
    if verbose:
        _print_skipped(skipped)
    if csv_path:
        write_csv(rows, csv_path)
    if png_path:
        plot_memory(rows, png_path, machine, inputs, batch)
    return rows


def memory_growth(rows: List[dict]) -> List[dict]:
    """Per (model, method, n): temp bytes at the largest T over the smallest T.

    **Arguments:** `rows` from `memory_sweep`.

    **Returns:** rows `model, method, n, T_small, T_large, temp_small_MiB, temp_large_MiB, ratio`.
    """
    out, groups = [], {}
    for r in rows:
        if r.get("temp_bytes") not in (None, ""):
            groups.setdefault((r["model"], r["method"], r["n"]), []).append(r)
    for (mo, me, n), rs in groups.items():
        lo, hi = min(rs, key=lambda r: r["T"]), max(rs, key=lambda r: r["T"])
        out.append(dict(model=mo, method=me, n=n, T_small=lo["T"], T_large=hi["T"],
                        temp_small_MiB=lo["temp_bytes"] / 2 ** 20, temp_large_MiB=hi["temp_bytes"] / 2 ** 20,
                        ratio=hi["temp_bytes"] / max(lo["temp_bytes"], 1)))
    return out


def speed_sweep(models: Sequence[str] = tuple(MODELS), methods: Sequence[str] = METHODS,
                widths: Sequence[int] = (32,) + DEFAULT_N, steps: int = 200, inputs: int = 256,
                batch: int = 16, repeats: int = 5, dtype=jnp.float32, dense_max_n: int = 32,
                exact_recurrent_max_n: int = 32, csv_path: Optional[str] = None,
                png_path: Optional[str] = None, progress: bool = True, verbose: bool = True) -> List[dict]:
    """Time per step of every method, side by side per (model, n), and its error vs BPTT.

    For each (model, n) all methods are compiled, warmed up and then timed round-robin
    (`time_per_step`), so their ratios are measured under the same machine load.

    **Arguments:**

    - `models`, `methods`: which to time (BPTT is always run: it is the reference).
    - `widths`: layer widths n; `steps`: T of each timed run; `inputs`: m; `batch`: B.
    - `repeats`: timed rounds (median reported).
    - `dtype`: float dtype.
    - `dense_max_n`, `exact_recurrent_max_n`: largest n run for dense RTRL and for exact
      online learning of the recurrent model (both keep dense traces).
    - `csv_path`, `png_path`: outputs (skipped if `None`); `progress`, `verbose`: as usual.

    **Returns:**

    Rows `model, method, n, m, batch, T, dtype, ms_per_step, ms_per_step_min, ratio_vs_bptt,
    rel_err_vs_bptt, cosine_vs_bptt, temp_bytes, machine`.
    """
    machine = machine_label()
    rows, skipped = [], {}
    bar = _progress(len(models) * len(widths), "speed", progress)
    for mo in models:
        for n in widths:
            bar.set_postfix_str(f"{mo} n={n}")
            args = make_problem(mo, n, inputs, batch, steps, dtype)
            fns = {}
            for me in dict.fromkeys(("bptt",) + tuple(methods)):
                why = _skip_reason(mo, me, n, True, dense_max_n, exact_recurrent_max_n)
                if why:
                    skipped.setdefault((mo, me, why), []).append(n)
                    continue
                fns[me] = make_grad_fn(me, mo)
            timed = time_per_step(fns, args, steps, repeats)
            ref = timed["bptt"]
            for me, res in timed.items():
                mem = jax.jit(fns[me]).lower(*args).compile().memory_analysis()
                rows.append(dict(model=mo, method=me, n=n, m=inputs, batch=batch, T=steps,
                                 dtype=jnp.dtype(dtype).name, ms_per_step=res["ms_per_step"],
                                 ms_per_step_min=res["ms_per_step_min"],
                                 ratio_vs_bptt=res["ms_per_step"] / ref["ms_per_step"],
                                 rel_err_vs_bptt=relative_error(res["result"], ref["result"]),
                                 cosine_vs_bptt=cosine(res["result"], ref["result"]),
                                 temp_bytes=int(mem.temp_size_in_bytes), machine=machine))
            bar.update(1)
    bar.close()
    if verbose:
        _print_skipped(skipped)
    if csv_path:
        write_csv(rows, csv_path)
    if png_path:
        plot_speed(rows, png_path, machine, inputs, batch, steps)
    return rows


def accuracy_check(models: Sequence[str] = tuple(MODELS), methods: Sequence[str] = METHODS,
                   n: int = 12, m: int = 10, batch: int = 3, steps: int = 60, seed: int = 1,
                   input_rate: float = 0.3, csv_path: Optional[str] = None) -> List[dict]:
    """Gradient error of every method against BPTT in float64 at a tiny size.

    Runs under `jax.enable_x64(True)`. Exact methods should reach <= 1e-9; e-prop is
    exact where no path mixes neurons and approximate on the recurrent model (its cosine to
    BPTT is reported). Checks that neurons actually spike.

    **Arguments:**

    - `models`, `methods`: which to check.
    - `n`, `m`, `batch`, `steps`: the (tiny) size; `seed`: PRNG seed.
    - `input_rate`: input spike rate (high enough that neurons spike).
    - `csv_path`: where to write rows (skipped if `None`).

    **Returns:**

    Rows `model, method, n, m, batch, T, rel_err_vs_bptt, cosine_vs_bptt, spikes, exact_expected`
    (braintrace rows compare the weights only).
    """
    rows = []
    with jax.enable_x64(True):
        for mo in models:
            args = make_problem(mo, n, m, batch, steps, jnp.float64, seed=seed, input_rate=input_rate)
            spec = MODELS[mo]

            def count(params, states0, xs):
                def body(s, x):
                    s, y = jax.vmap(spec.step, in_axes=(None, 0, 0))(params, s, x)
                    return s, jnp.sum(y)
                return jnp.sum(lax.scan(body, states0, xs)[1])
            spikes = int(jax.jit(count)(*args[:3]))
            ref = jax.jit(make_grad_fn("bptt", mo))(*args)
            for me in methods:
                if me == "bptt":
                    continue
                why = _skip_reason(mo, me, n, True, 10 ** 9, 10 ** 9)
                if why:
                    continue
                g = jax.jit(make_grad_fn(me, mo))(*args)
                exact = exact_expected(mo, me)
                rows.append(dict(model=mo, method=me, n=n, m=m, batch=batch, T=steps,
                                 rel_err_vs_bptt=relative_error(g, ref), cosine_vs_bptt=cosine(g, ref),
                                 spikes=spikes, exact_expected=exact))
    if csv_path:
        write_csv(rows, csv_path)
    return rows


# ----------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------

def write_csv(rows: List[dict], path: str) -> None:
    """Write rows (dicts, union of keys as columns) to a CSV file, creating its folder.

    **Arguments:** `rows`: list of dicts; `path`: the file.

    **Returns:** nothing.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow(r)


_STYLE = {"bptt": ("k", "o-"), "bptt_checkpoint": ("tab:gray", "s--"), "online_exact": ("tab:red", "^-"),
          "online_eprop": ("tab:orange", "v:"), "dense_rtrl": ("tab:purple", "d-."),
          "braintrace_drtrl": ("tab:blue", "x-"), "braintrace_pp_prop": ("tab:cyan", "+--"),
          "hand_factorised": ("tab:green", "*-"), "hand_eligibility": ("tab:olive", "*--")}


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_memory(rows: List[dict], path: str, machine: str, inputs: int, batch: int) -> None:
    """Log-log compiled temp bytes vs T, one panel per (model, n), one line per method.

    **Arguments:** `rows` from `memory_sweep`; `path`: PNG file; `machine`, `inputs`, `batch`:
    stated in the title.

    **Returns:** nothing.
    """
    plt = _plt()
    rows = [r for r in rows if "temp_bytes" in r and r.get("temp_bytes") not in ("", None)]
    models = list(dict.fromkeys(r["model"] for r in rows))
    widths = sorted({r["n"] for r in rows})
    fig, axes = plt.subplots(len(models), len(widths), figsize=(max(4.2 * len(widths), 6.0), 3.2 * len(models)),
                             squeeze=False, sharex=True)
    for i, mo in enumerate(models):
        for j, n in enumerate(widths):
            ax = axes[i][j]
            for me in dict.fromkeys(r["method"] for r in rows):
                pts = sorted((r["T"], max(r["temp_bytes"], 1)) for r in rows
                             if r["model"] == mo and r["n"] == n and r["method"] == me)
                if pts:
                    c, s = _STYLE.get(me, (None, "o-"))
                    ax.loglog([p[0] for p in pts], [p[1] / 2 ** 20 for p in pts], s, color=c, label=me, ms=4)
            ax.set_title(f"{mo}, n={n}", fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
            if j == 0:
                ax.set_ylabel("XLA temp MiB")
            if i == len(models) - 1:
                ax.set_xlabel("sequence length T")
    handles = {}
    for ax in axes.flat:
        for h, l in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(l, h)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(len(handles), 3), fontsize=8)
    fig.suptitle(f"Gradient memory (compiled temp bytes) vs T; m={inputs}, batch={batch}\n{machine}", fontsize=9)
    fig.tight_layout(rect=(0, 0.09, 1, 0.95))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_speed(rows: List[dict], path: str, machine: str, inputs: int, batch: int, steps: int) -> None:
    """Time per step vs n (log-log), one panel per model, one line per method.

    **Arguments:** `rows` from `speed_sweep`; `path`: PNG file; `machine`, `inputs`, `batch`,
    `steps`: stated in the title.

    **Returns:** nothing.
    """
    plt = _plt()
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.6), squeeze=False)
    for j, mo in enumerate(models):
        ax = axes[0][j]
        for me in dict.fromkeys(r["method"] for r in rows):
            pts = sorted((r["n"], r["ms_per_step"]) for r in rows if r["model"] == mo and r["method"] == me)
            if pts:
                c, s = _STYLE.get(me, (None, "o-"))
                ax.loglog([p[0] for p in pts], [p[1] for p in pts], s, color=c, label=me, ms=4)
        ax.set_title(mo, fontsize=9)
        ax.set_xlabel("neurons n")
        widths = sorted({r["n"] for r in rows})
        ax.set_xticks(widths)
        ax.set_xticklabels([str(w) for w in widths])
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
        if j == 0:
            ax.set_ylabel("ms per step (median)")
    handles = {}
    for ax in axes.flat:
        for h, l in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(l, h)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=len(handles), fontsize=8)
    fig.suptitle(f"Gradient time per step vs n; m={inputs}, batch={batch}, T={steps}\n{machine}", fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 0.92))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------
# The hand-written reference programs (issue #6 item 3).
# Copied from shared/reference/limit_lif.py (the project's own file, no separate licence),
# made functions of (n, B) instead of module globals; the mathematics is unchanged.
# ----------------------------------------------------------------------------------------

def _psi(v):
    return 1 / (1 + 10 * jnp.abs(v)) ** 2


def _ref_step(params, v, x):
    # detached reset by subtraction: v' = alpha*v + W x - sg(z_prev); z from v'
    z_prev = lax.stop_gradient(spike(v - THRESHOLD))
    v = params["alpha"] * v + x @ params["w"].T - z_prev * THRESHOLD
    return v, spike(v - THRESHOLD)


def reference_programs(n: int, batch: int) -> Dict[str, Callable]:
    """The hand-written programs of limit_lif.py for one LIF layer of n neurons and batch B.

    **Arguments:**

    - `n`: neurons; `batch`: B (the programs carry a (B, n) potential).

    **Returns:**

    name -> function: `forward(params, xs)`, `bptt(params, xs, ts)`,
    `online_factorised(params, xs, ts)` (shared leak, trace O(B·m)) and
    `online_eligibility(params, xs, ts)` (per-neuron leak, trace O(B·n·m)); params is
    `{"w", "alpha", "alpha_vec"}` as in the reference.
    """
    def forward(params, xs):
        def body(v, x):
            v, z = _ref_step(params, v, x)
            return v, jnp.sum(z)
        return lax.scan(body, jnp.zeros((batch, n), xs.dtype), xs)[1].sum()

    def bptt(params, xs, ts):
        def total(p):
            def body(v, xt):
                x, t = xt
                v, z = _ref_step(p, v, x)
                return v, mse_loss(z, t)
            return lax.scan(body, jnp.zeros((batch, n), xs.dtype), (xs, ts))[1].sum()
        return jax.grad(total)(params)

    def online_factorised(params, xs, ts):
        a = params["alpha"]

        def body(c, xt):
            v, xbar, g = c
            x, t = xt
            v, z = _ref_step(params, v, x)
            xbar = a * xbar + x
            sig = (z - t) * _psi(v - THRESHOLD)
            return (v, xbar, g + sig.T @ xbar), None
        m = xs.shape[-1]
        c0 = (jnp.zeros((batch, n), xs.dtype), jnp.zeros((batch, m), xs.dtype), jnp.zeros((n, m), xs.dtype))
        return lax.scan(body, c0, (xs, ts))[0][2]

    def online_eligibility(params, xs, ts):
        a = params["alpha_vec"]

        def body(c, xt):
            v, e, g = c
            x, t = xt
            v = a * v + x @ params["w"].T - lax.stop_gradient(spike(v - THRESHOLD)) * THRESHOLD
            z = spike(v - THRESHOLD)
            e = a[None, :, None] * e + x[:, None, :]
            sig = (z - t) * _psi(v - THRESHOLD)
            return (v, e, g + jnp.einsum("bi,bil->il", sig, e)), None
        m = xs.shape[-1]
        c0 = (jnp.zeros((batch, n), xs.dtype), jnp.zeros((batch, n, m), xs.dtype), jnp.zeros((n, m), xs.dtype))
        return lax.scan(body, c0, (xs, ts))[0][2]

    return {"forward": forward, "bptt": bptt, "online_factorised": online_factorised,
            "online_eligibility": online_eligibility}


def _lif_w_only(alpha):
    """The reference's LIF as a per-example sparseprop model whose only parameter is w
    (the leak `alpha`, scalar or per-neuron, is a constant), so that the generated program
    computes exactly what the hand-written online programs compute."""
    def model(params, state, x):
        v = state
        z_prev = lax.stop_gradient(spike(v - THRESHOLD))
        v = alpha * v + params["w"] @ x - z_prev * THRESHOLD
        return v, spike(v - THRESHOLD)
    return model


def compare_reference(n: int = 256, m: int = 256, batch: int = 16, steps: int = 1000, repeats: int = 5,
                      extra_models: Sequence[str] = ("alif", "lif_recurrent"), extra_n: int = 32,
                      csv_path: Optional[str] = None, verbose: bool = True) -> dict:
    """Hand-written reference programs and the generated online programs, timed side by side.

    All programs of one comparison are compiled, warmed up and timed round-robin in one
    process (`time_per_step`), so the ratios are measured under the same load. Reports the
    ratios of issue #6 item 3:

    - `exact_vs_bptt_shared`: generated online exact (shared leak) / BPTT per step (target <= 1.2 on CPU);
    - `exact_vs_hand_factorised`: generated / hand-written factorised program (target <= 1.1);
    - `exact_vs_hand_eligibility`: generated per-neuron-leak / hand-written eligibility (target <= 1.1);
    - for `extra_models` (at n = `extra_n`, shared `m`, `batch`, `steps`): online exact and e-prop / BPTT.

    "Generated" is `learner.run_batch` (the batch sum folded into each step's contraction), on a model whose only parameter is w (as in the hand-written programs); BPTT is the
    hand-written `bptt` of limit_lif.py (gradient w.r.t. w, alpha, alpha_vec).

    **Arguments:**

    - `n`, `m`, `batch`, `steps`: the size (defaults: the reference's 256, 256, 16, 1000).
    - `repeats`: timed rounds, median reported.
    - `extra_models`, `extra_n`: benchmark models also reported against BPTT (empty to skip).
    - `csv_path`: where to write the per-program rows (skipped if `None`).
    - `verbose`: print the table.

    **Returns:**

    `{"rows": [...], "ratios": {...}, "machine": str}`; each row has `program, model, n, m,
    batch, T, ms_per_step, temp_bytes, rel_err_vs_bptt`.
    """
    machine = machine_label()
    dt = jnp.float32
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    params = {"w": jax.random.normal(k1, (n, m), dt) * 0.3, "alpha": jnp.asarray(0.9, dt),
              "alpha_vec": jnp.full((n,), 0.9, dt)}
    xs = (jax.random.uniform(k2, (steps, batch, m)) < 0.1).astype(dt)
    ts = (jax.random.uniform(k3, (steps, batch, n)) < 0.05).astype(dt)
    hand = reference_programs(n, batch)

    def generated(alpha):
        learner = online_grad(_lif_w_only(alpha), mse_loss, method="exact")

        def f(params, xs, ts):
            p = {"w": params["w"]}
            v0 = jnp.zeros((batch, n), xs.dtype)
            carry = learner.init_batch(p, v0, xs[0])
            return learner.run_batch(p, carry, xs, ts, time_major=True)[1].grads["w"]
        return f

    fns = {"forward": (hand["forward"], (params, xs)),
           "bptt": (hand["bptt"], (params, xs, ts)),
           "hand_factorised": (hand["online_factorised"], (params, xs, ts)),
           "generated_shared": (generated(params["alpha"]), (params, xs, ts)),
           "hand_eligibility": (hand["online_eligibility"], (params, xs, ts)),
           "generated_perneuron": (generated(params["alpha_vec"]), (params, xs, ts))}
    # bptt of the per-neuron model (alpha_vec is the leak): the reference for eligibility errors
    params_pn = dict(params, alpha=params["alpha_vec"])
    fns["bptt_perneuron"] = (hand["bptt"], (params_pn, xs, ts))
    rows, results = [], {}
    compiled = {k: jax.jit(f).lower(*a).compile() for k, (f, a) in fns.items()}
    for k, c in compiled.items():
        results[k] = jax.block_until_ready(c(*fns[k][1]))
    times = {k: [] for k in fns}
    bar = _progress(repeats, "reference", verbose)
    for _ in range(repeats):
        for k, c in compiled.items():
            t0 = time.perf_counter()
            jax.block_until_ready(c(*fns[k][1]))
            times[k].append(time.perf_counter() - t0)
        bar.update(1)
    bar.close()
    ms = {k: statistics.median(v) / steps * 1e3 for k, v in times.items()}
    for k in fns:
        g = results[k]
        if k == "forward":
            err = ""
        else:
            ref = results["bptt_perneuron" if "perneuron" in k or "eligibility" in k else "bptt"]["w"]
            err = relative_error(g["w"] if isinstance(g, dict) else g, ref)
        model = "lif_perneuron" if ("perneuron" in k or "eligibility" in k) else "lif_shared"
        rows.append(dict(program=k, model=model, n=n, m=m, batch=batch, T=steps, ms_per_step=ms[k],
                         temp_bytes=int(compiled[k].memory_analysis().temp_size_in_bytes),
                         rel_err_vs_bptt=err, machine=machine))
    ratios = {"bptt_vs_forward": ms["bptt"] / ms["forward"],
              "hand_factorised_vs_bptt": ms["hand_factorised"] / ms["bptt"],
              "exact_vs_bptt_shared": ms["generated_shared"] / ms["bptt"],
              "exact_vs_hand_factorised": ms["generated_shared"] / ms["hand_factorised"],
              "hand_eligibility_vs_bptt": ms["hand_eligibility"] / ms["bptt_perneuron"],
              "exact_perneuron_vs_bptt": ms["generated_perneuron"] / ms["bptt_perneuron"],
              "exact_vs_hand_eligibility": ms["generated_perneuron"] / ms["hand_eligibility"]}
    for mo in extra_models:
        args = make_problem(mo, extra_n, m, batch, steps, dt)
        timed = time_per_step({me: make_grad_fn(me, mo) for me in ("bptt", "online_exact", "online_eprop")},
                              args, steps, repeats)
        for me, res in timed.items():
            rows.append(dict(program=me, model=mo, n=extra_n, m=m, batch=batch, T=steps,
                             ms_per_step=res["ms_per_step"],
                             temp_bytes=int(jax.jit(make_grad_fn(me, mo)).lower(*args).compile()
                                            .memory_analysis().temp_size_in_bytes),
                             rel_err_vs_bptt=relative_error(res["result"], timed["bptt"]["result"]),
                             machine=machine))
            if me != "bptt":
                ratios[f"{me.split('_')[1]}_vs_bptt_{mo}"] = res["ms_per_step"] / timed["bptt"]["ms_per_step"]
    if verbose:
        print(machine)
        print(f"{'program':22s} {'model':14s} {'n':>5s} {'ms/step':>9s} {'temp MiB':>9s} {'rel err':>9s}")
        for r in rows:
            e = r["rel_err_vs_bptt"]
            print(f"{r['program']:22s} {r['model']:14s} {r['n']:5d} {r['ms_per_step']:9.4f} "
                  f"{r['temp_bytes'] / 2 ** 20:9.2f} {e if e == '' else format(e, '9.1e')}")
        for k, v in ratios.items():
            print(f"  {k:34s} {v:6.2f}")
    if csv_path:
        write_csv(rows, csv_path)
    return {"rows": rows, "ratios": ratios, "machine": machine}
