"""Train a few LIF neurons to fire their first spike at target times, with exact spike-time
gradients (Lee et al. 2022) computed online by sparseprop: no surrogate gradient anywhere.

Run: python examples/spike_time.py       (about 15 s on a laptop CPU; writes out/spike_time.png,
--out docs/img for the docs' figure)
"""
import argparse
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)   # float64 so the finite-difference check is sharp

import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

import sparseprop as sp
from sparseprop import plotting
from sparseprop.spike_time import NO_SPIKE, first_spike_loss, init_state, spike_time_lif

OUT_DIR = Path(__file__).resolve().parents[1] / "out"

T, M, N = 60, 20, 3                       # steps, input channels, neurons
LEAK, THETA = 0.9, 1.0
TARGETS = jnp.array([12.3, 27.8, 41.5])   # desired first-spike times (in steps)


def make_problem():
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    # Fixed input: Poisson-like spikes of random amplitude on M channels.
    xs = (jax.random.uniform(k[0], (T, M)) < 0.2) * jax.random.uniform(k[1], (T, M), minval=0.5, maxval=1.5)
    # A tonic bias gives the potential an upward drift, so a first spike can be moved
    # smoothly; with input spikes alone, a late target can sit on a potential peak that
    # only grazes θ, where the spike (and its gradient) vanishes.
    params = {"w": jax.random.uniform(k[2], (N, M), minval=0.0, maxval=0.05),
              "bias": jnp.full((N,), 0.12)}
    targets = {"time": jnp.broadcast_to(TARGETS, (T, N)),
               "weight": (jnp.arange(T) == T - 1).astype(jnp.float64)}   # score once, at the end
    return params, xs.astype(jnp.float64), targets


def model(params, state, x):
    """spike_time_lif plus the running maximum of the potential (to revive silent neurons)."""
    lif_state, v_max = state
    lif_state, y = spike_time_lif(params, lif_state, x, leak=LEAK, threshold=THETA)
    v_max = jnp.maximum(v_max, lif_state["v"])    # a silent neuron is never reset: v = u
    return (lif_state, v_max), dict(y, v_max=v_max)


def loss_fn(y, target):
    """Squared first-spike-time error; a neuron that has not fired by the end instead
    gets (θ - max potential), which pushes its weights up until it fires (a spike time
    that does not exist has no gradient)."""
    silent = y["first"] == NO_SPIKE
    revive = jnp.sum(jnp.where(silent, THETA - y["v_max"], 0.0))
    return first_spike_loss(y, target) + 10.0 * target["weight"] * revive


def initial_state():
    return init_state(N), jnp.full((N,), -jnp.inf)


@jax.jit
def forward(params, xs):
    return jax.lax.scan(lambda s, x: model(params, s, x), initial_state(), xs)[1]


def fd_check(params, xs, h=1e-6):
    """Online d(first-spike times)/dW vs central finite differences of the spike times.

    The probe loss `c · t_first` (random `c`, scored once at the end) has gradient
    `c^T dt_first/dW`, the spike times' own Jacobian seen through one random direction;
    checking it, rather than the training loss at a minimum where the gradient is ~0,
    keeps the comparison well conditioned. The raster must be the same at W ± h.
    """
    c = jax.random.normal(jax.random.PRNGKey(7), (N,))
    probe = lambda y, weight: weight * jnp.sum(c * y["first"])
    weights = (jnp.arange(T) == T - 1).astype(jnp.float64)
    learner = sp.online_grad(model, probe)
    _, total = jax.jit(learner.run)(params, learner.init(params, initial_state()), xs, weights)
    flat, unravel = ravel_pytree(params)

    @jax.jit
    def probe_and_raster(p):
        ys = forward(unravel(p), xs)
        return jnp.sum(c * ys["first"][-1]), ys["z"]

    _, raster = probe_and_raster(flat)
    assert bool(jnp.all(forward(params, xs)["first"][-1] != NO_SPIKE)), "every neuron must fire"
    eye = h * jnp.eye(flat.size)
    lp, rp = jax.vmap(probe_and_raster)(flat + eye)
    lm, rm = jax.vmap(probe_and_raster)(flat - eye)
    same = bool(jnp.all(rp == raster) & jnp.all(rm == raster))
    fd = (lp - lm) / (2 * h)
    g = ravel_pytree(total.grads)[0]
    return float(jnp.max(jnp.abs(g - fd)) / jnp.max(jnp.abs(fd))), same


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=OUT_DIR, help="folder for the figure (default: out/ at the repository "
                                                       "root; docs/img to regenerate the docs' figure)")
    out_dir = parser.parse_args(argv).out
    params, xs, targets = make_problem()
    learner = sp.online_grad(model, loss_fn, method="exact")
    run = jax.jit(learner.run)
    optimiser = optax.adam(optax.cosine_decay_schedule(3e-3, 400))   # anneal: spike times are sensitive near grazing crossings
    opt_state = optimiser.init(params)

    err0, same0 = fd_check(params, xs)
    print(f"initial weights: online d(first spike times)/dW vs finite differences, max rel err {err0:.2e} (same raster at W±h: {same0})")

    @jax.jit
    def train_step(params, opt_state):
        _, total = run(params, learner.init(params, initial_state()), xs, targets)
        updates, opt_state = optimiser.update(total.grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, total.loss

    history, firsts = [], []
    for it in range(400):
        firsts.append(np.asarray(forward(params, xs)["first"][-1]))
        params, opt_state, loss = train_step(params, opt_state)
        history.append(float(loss))
        if it % 100 == 0 or it == 399:
            print(f"iter {it:3d}  loss {float(loss):9.4f}  first spikes {np.round(firsts[-1], 2)}")
    after = forward(params, xs)
    err1, same1 = fd_check(params, xs)
    print(f"targets {np.asarray(TARGETS)}; reached {np.round(np.asarray(after['first'][-1]), 3)}")
    print(f"trained weights: online d(first spike times)/dW vs finite differences, max rel err {err1:.2e} (same raster at W±h: {same1})")

    # Membrane potentials (post-reset) of both runs, for the figure.
    def potentials(p):
        def body(s, x):
            s, _ = spike_time_lif(p, s, x, leak=LEAK, threshold=THETA)
            return s, s["v"]
        return jax.lax.scan(body, init_state(N), xs)[1]

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    axes[0].semilogy(history)
    axes[0].set(xlabel="iteration", ylabel="loss  Σ (t_first − target)² (+ silent term)", title="training (Adam, exact online grads)")
    firsts = np.array(firsts)
    colours = ["C0", "C1", "C2"]
    for i in range(N):
        axes[1].plot(np.where(firsts[:, i] == NO_SPIKE, np.nan, firsts[:, i]), color=colours[i], label=f"neuron {i}")
        axes[1].axhline(float(TARGETS[i]), color=colours[i], ls="--", lw=0.8)
    axes[1].set(xlabel="iteration", ylabel="first spike time (steps)", title="first-spike times → targets (dashed)")
    axes[1].legend(fontsize=8)
    v_after = potentials(params)
    t_axis = np.arange(1, T + 1)
    for i in range(N):
        axes[2].plot(t_axis, np.asarray(v_after[:, i]) + 1.5 * i, color=colours[i], lw=1)
        axes[2].axhline(THETA + 1.5 * i, color="grey", ls=":", lw=0.8)
        axes[2].axvline(float(TARGETS[i]), color=colours[i], ls="--", lw=0.8)
        first = float(after["first"][-1, i])
        axes[2].plot([first], [THETA + 1.5 * i], "v", color=colours[i], ms=7)
    axes[2].set(xlabel="time step", ylabel="potential v (offset per neuron)",
                title="trained: ▼ first spike, -- target, ·· θ")
    fig.suptitle(f"Exact spike-time gradients by forward propagation; FD agreement {max(err0, err1):.1e}")
    fig.tight_layout()
    print(f"wrote {plotting.save(fig, Path(out_dir) / 'spike_time.png', dpi=110)}")


if __name__ == "__main__":
    main()
