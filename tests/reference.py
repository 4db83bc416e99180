"""Test-side references, written independently of the library: BPTT by jax.grad of a lax.scan."""
import jax
import jax.numpy as jnp
import numpy as np


def bptt(model, loss_fn, params, state0, xs, targets):
    """(summed loss, grads, outputs) by reverse-mode through a lax.scan unroll."""
    def total(params):
        def body(state, inp):
            x, t = inp
            state, y = model(params, state, x)
            return state, (loss_fn(y, t), y)
        _, (losses, ys) = jax.lax.scan(body, state0, (xs, targets))
        return jnp.sum(losses), ys
    (loss, ys), grads = jax.value_and_grad(total, has_aux=True)(params)
    return loss, grads, ys


def max_relative_error(a, b) -> float:
    """max over leaves of max|a - b| / max|b| (b is the reference)."""
    errs = []
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        scale = float(jnp.max(jnp.abs(y)))
        errs.append(float(jnp.max(jnp.abs(x - y))) / (scale if scale > 0 else 1.0))
    return max(errs)


def cosine(a, b) -> float:
    va = jnp.concatenate([jnp.ravel(x) for x in jax.tree_util.tree_leaves(a)])
    vb = jnp.concatenate([jnp.ravel(x) for x in jax.tree_util.tree_leaves(b)])
    return float(va @ vb / (jnp.linalg.norm(va) * jnp.linalg.norm(vb)))


def spike_count(outputs_or_states) -> int:
    return int(np.sum(np.asarray(outputs_or_states) > 0.5))


def mse(y, t):
    return jnp.sum((y - t) ** 2)
