"""EXODUS vs SLAYER: per-layer gradient norms of a 3-layer LIF network with the reset
differentiated (EXODUS, = BPTT of the network as written) or detached (SLAYER).

Both choices are one option of `sparseprop.neurons.LIF`; each is exact online (checked
here against BPTT of the same model). The script prints, for every layer, the norm of
the input-weight gradient under both choices, their ratio and cosine, and writes
out/exodus_grad_norms.png (--out docs/img for the docs' figure). See docs/exodus.md for the discussion.

Run: python examples/exodus_reset.py   (about 30 s on 2 CPU cores)
"""
import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)   # the exactness check is made in float64

import sparseprop as sp  # noqa: E402
from sparseprop import neurons, plotting  # noqa: E402
from sparseprop.surrogates import Exponential  # noqa: E402

SIZES = (20, 40, 40, 40, 3)     # input, three LIF layers, leaky readout
T, BATCH = 100, 16
SURROGATE = Exponential(0.5)    # EXODUS's default: single exponential, width 0.5
INPUT_RATE = 0.2
OUT_DIR = os.path.join(os.path.dirname(__file__), "..", "out")


def network(detach_reset):
    lif = neurons.LIF(reset="subtract", detach_reset=detach_reset, surrogate=SURROGATE)
    return neurons.Sequential((lif, lif, lif, neurons.LeakyIntegrator()))


def loss_fn(y, target):
    return 0.5 * jnp.sum((y - target) ** 2)


def data(key):
    """Poisson input spike trains and smooth random targets, time-major (T, BATCH, ...)."""
    k_x, k_phase = jax.random.split(key)
    xs = (jax.random.uniform(k_x, (T, BATCH, SIZES[0])) < INPUT_RATE).astype(jnp.float64)
    phase = jax.random.uniform(k_phase, (BATCH, SIZES[-1]), maxval=2 * np.pi)
    t = jnp.arange(T)[:, None, None]
    return xs, jnp.sin(t / 10.0 + phase)


def firing_rates(net, params, state0, xs):
    """Mean spikes per neuron and step of each LIF layer, on the first example."""
    inputs, rates = xs[:, 0], []
    for layer, p, s in zip(net.layers[:-1], params, state0):
        _, inputs = jax.lax.scan(lambda s, x: layer(p, s, x), s, inputs)
        rates.append(float(inputs.mean()))
    return rates


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=OUT_DIR, help="folder for the figure (default: out/ at the repository "
                                                       "root; docs/img to regenerate the docs' figure)")
    out_dir = parser.parse_args(argv).out
    k_params, k_data = jax.random.split(jax.random.PRNGKey(0))
    xs, targets = data(k_data)
    params = network(False).init_params(k_params, SIZES)
    state0 = network(False).init_state(SIZES)
    batched_state0 = jax.tree_util.tree_map(lambda s: jnp.broadcast_to(s, (BATCH,) + s.shape), state0)

    print("firing rates per LIF layer:", ", ".join(f"{r:.3f}" for r in firing_rates(network(False), params, state0, xs)))
    norms, grads = {}, {}
    for name, detach in (("differentiated (EXODUS)", False), ("detached (SLAYER)", True)):
        net = network(detach)
        bptt = jax.jit(jax.vmap(sp.bptt_grad(net, loss_fn), in_axes=(None, 0, 1, 1)))
        _, g = bptt(params, batched_state0, xs, targets)
        g = [jnp.mean(layer["w_in"], axis=0) for layer in g]            # batch mean, per layer
        grads[name] = [np.asarray(x).ravel() for x in g[:3]]
        norms[name] = [float(np.linalg.norm(x)) for x in grads[name]]

        # the online learner is exact for either choice: compare one example with BPTT
        learner = sp.online_grad(net, loss_fn, method="exact")
        _, total = learner.run(params, learner.init(params, state0), xs[:, 0], targets[:, 0])
        _, reference = sp.bptt_grad(net, loss_fn)(params, state0, xs[:, 0], targets[:, 0])
        err = max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
                  for a, b in zip(jax.tree_util.tree_leaves(total.grads), jax.tree_util.tree_leaves(reference)))
        print(f"{name}: online exact vs BPTT, max relative error {err:.1e}")

    exodus, slayer = norms["differentiated (EXODUS)"], norms["detached (SLAYER)"]
    print("\nlayer   |grad W| EXODUS   |grad W| SLAYER   SLAYER/EXODUS   cosine")
    cosines = []
    for layer in range(3):
        a, b = grads["differentiated (EXODUS)"][layer], grads["detached (SLAYER)"][layer]
        cosines.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
        print(f"{layer + 1:5d}   {exodus[layer]:15.4e}   {slayer[layer]:15.4e}   "
              f"{slayer[layer] / exodus[layer]:13.2f}   {cosines[layer]:6.3f}")
    plot(exodus, slayer, cosines, out_dir)


def plot(exodus, slayer, cosines, out_dir=OUT_DIR):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = np.arange(1, 4)
    fig, (ax_norm, ax_ratio) = plt.subplots(1, 2, figsize=(9, 3.6))
    ax_norm.bar(layers - 0.18, exodus, 0.36, label="reset differentiated (EXODUS = BPTT)")
    ax_norm.bar(layers + 0.18, slayer, 0.36, label="reset detached (SLAYER)")
    ax_norm.set_yscale("log")
    ax_norm.set_xticks(layers, [f"layer {i}" for i in layers])
    ax_norm.set_ylabel("‖∂L/∂W_in‖ (batch mean)")
    ax_norm.set_title("Per-layer gradient norm")
    ax_norm.legend(fontsize=8)
    ratio = np.array(slayer) / np.array(exodus)
    ax_ratio.plot(layers, ratio, "o-")
    for layer, r, c in zip(layers, ratio, cosines):
        ax_ratio.annotate(f"cos {c:.2f}", (layer, r), textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax_ratio.axhline(1.0, color="grey", lw=0.8)
    ax_ratio.set_yscale("log")
    ax_ratio.set_xticks(layers, [f"layer {i}" for i in layers])
    ax_ratio.set_ylabel("‖SLAYER grad‖ / ‖EXODUS grad‖")
    ax_ratio.set_title("Scale error of the detached reset")
    fig.tight_layout()
    path = plotting.save(fig, os.path.join(out_dir, "exodus_grad_norms.png"))
    print(f"\nwrote {os.path.normpath(path)}")


if __name__ == "__main__":
    main()
