"""The gradient methods compared: BPTT, checkpointed BPTT, sparseprop's online methods, dense
RTRL, and braintrace's D-RTRL and pp-prop (optional). Each `make_grad_fn(method, model)` is a
`grad_fn(params, states0, xs, targets) -> grads` summed over time and batch."""
from __future__ import annotations

import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

from ..api import online_grad
from ..surrogates import spike
from .problems import ALIF_BETA, ALIF_RHO, METHODS, MODELS, THRESHOLD, mse_loss


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
