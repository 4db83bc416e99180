"""A streaming learner (recurrent ALIF + readout, Adam after every step) that checkpoints every
EVERY steps and can be killed mid-stream; `python resumable_stream.py MODE CKPT OUT [KILL_AT]`.

- `kill`: run from step 0, checkpoint every EVERY steps, SIGKILL itself after step KILL_AT.
- `resume`: load the last checkpoint, run to the end, write the final params to OUT.
Used by test_checkpoint.py; `run_stream` is the uninterrupted run.
"""
import os
import signal
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

jax.config.update("jax_enable_x64", True)

import sparseprop as sp  # noqa: E402
from sparseprop import checkpoint, neurons  # noqa: E402

N_STEPS, EVERY = 30, 5
SIZES = (4, 7, 2)


def setup():
    net = neurons.Sequential((neurons.ALIF(recurrent=True), neurons.LeakyIntegrator()))
    k_p, k_x = jax.random.split(jax.random.PRNGKey(0))
    params = net.init_params(k_p, SIZES)
    state0 = net.init_state(SIZES)
    xs = jax.random.bernoulli(k_x, 0.4, (N_STEPS, SIZES[0])).astype(jnp.float64) * 2.0
    t = jnp.arange(N_STEPS, dtype=jnp.float64)[:, None]
    targets = jnp.concatenate([jnp.sin(t / 4.0), jnp.cos(t / 7.0)], axis=1)
    learner = sp.online_grad(net, lambda y, target: jnp.sum((y - target) ** 2))
    optimizer = optax.adam(1e-2)

    @jax.jit
    def update(params, carry, opt_state, x, target):
        carry, out = learner.step(params, carry, x, target)
        updates, opt_state = optimizer.update(out.grads, opt_state, params)
        return optax.apply_updates(params, updates), carry, opt_state

    fresh = (params, learner.init(params, state0, xs[0]), optimizer.init(params), 0)
    return fresh, update, xs, targets


def run_stream(ckpt=None, kill_at=None, resume=False):
    """The stream; returns the final params. Checkpoints `(params, carry, opt_state, next step)`."""
    fresh, update, xs, targets = setup()
    params, carry, opt_state, start = checkpoint.load(ckpt, fresh) if resume else fresh
    for i in range(start, N_STEPS):
        params, carry, opt_state = update(params, carry, opt_state, xs[i], targets[i])
        if ckpt is not None and (i + 1) % EVERY == 0:
            checkpoint.save(ckpt, (params, carry, opt_state, i + 1))
        if i == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)          # a crash: no cleanup, no final save
    return params


if __name__ == "__main__":
    mode, ckpt, out = sys.argv[1:4]
    if mode == "kill":
        run_stream(ckpt, kill_at=int(sys.argv[4]))
    else:
        final = run_stream(ckpt, resume=True)
        np.savez(out, *[np.asarray(v) for v in jax.tree_util.tree_leaves(final)])
