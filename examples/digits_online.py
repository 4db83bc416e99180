"""Handwritten digits, learned online by a spiking network with exact gradients.

scikit-learn's bundled digits (1797 images of 8x8 pixels, no download) are rate-encoded
into spike trains of T steps with `sparseprop.data.rate_encode`. A layer of adaptive
LIF (ALIF) neurons with per-neuron, learned leaks feeds a leaky-integrator readout of
10 units. `sp.online_grad(..., method="exact")` carries eligibility traces forward in
time, so each sequence's gradient is ready when its last step is, with no stored
history; it equals backpropagation through time. One optax update per batch of
sequences (the per-sequence gradients are batched with `jax.vmap`).

Why the readout is written the way it is: a readout o_t = κ·o_{t-1} + W_out·z_t has
state that mixes every hidden neuron, so the exact traces of W_in through it would be
dense (10 x 128 x 64 per example, and about 40x slower here). Because the readout is
linear, o_t = W_out·z̄_t with z̄_t = κ·z̄_{t-1} + z_t, a per-neuron filtered spike
train. Keeping that filter as hidden-neuron state gives the same readout while every
trace stays per-neuron (see docs/writing_models.md).

Run:  python examples/digits_online.py      (about a minute on 2 CPU cores)
Writes out/digits_learning_curve.png and out/digits_raster.png (--out docs/img regenerates the docs' figures).
"""
from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tqdm import tqdm

import sparseprop as sp
from sparseprop import plotting
from sparseprop.data import rate_encode

N_IN, N_HIDDEN, N_OUT = 64, 128, 10
READOUT_DECAY = 0.8      # κ of the leaky-integrator readout
ADAPT_DECAY = 0.95       # decay of the ALIF adaptation variable
ADAPT_STRENGTH = 0.5     # threshold increase per unit of adaptation
THRESHOLD = 1.0


def alif_network(params, state, x):
    """One step of ALIF hidden layer + leaky-integrator readout, for one example.

    The hidden neurons have per-neuron leaks `sigmoid(params["leak"])` and an adaptive
    threshold; `state["trace"]` is the filtered spike train that the readout reads.
    Returns the new state and the readout `W_out · trace + b` (the leaky integrator).
    """
    alpha = jax.nn.sigmoid(params["leak"])
    adapt = ADAPT_DECAY * state["adapt"] + state["z"]
    threshold = THRESHOLD + ADAPT_STRENGTH * adapt
    # Reset by subtraction of the threshold at which the neuron fired.
    v = alpha * state["v"] + params["w_in"] @ x - state["z"] * state["threshold"]
    z = sp.spike(v - threshold)
    trace = READOUT_DECAY * state["trace"] + z
    new_state = {"v": v, "adapt": adapt, "threshold": threshold, "z": z, "trace": trace}
    return new_state, params["w_out"] @ trace + params["b_out"]


def loss_fn(y, target):
    """Cross-entropy of this step's readout, weighted (weight 0 in the first steps)."""
    onehot, weight = target
    return weight * optax.softmax_cross_entropy(y, onehot)


def init_params(key):
    k_in, k_out = jax.random.split(key)
    return {
        "w_in": jax.random.normal(k_in, (N_HIDDEN, N_IN)) * (1.5 / np.sqrt(N_IN)),
        "leak": jnp.full((N_HIDDEN,), 2.0),         # alpha = sigmoid(2) ≈ 0.88
        "w_out": jax.random.normal(k_out, (N_OUT, N_HIDDEN)) / np.sqrt(N_HIDDEN),
        "b_out": jnp.zeros((N_OUT,)),
    }


def initial_state():
    zeros = jnp.zeros((N_HIDDEN,))
    return {"v": zeros, "adapt": zeros, "threshold": zeros + THRESHOLD, "z": zeros, "trace": zeros}


def step_weights(num_steps):
    # The readout needs a few steps to integrate evidence: no loss in the first quarter,
    # then equal weights summing to one.
    w = (jnp.arange(num_steps) >= num_steps // 4).astype(jnp.float32)
    return w / w.sum()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--steps", type=int, default=25, help="time steps per spike train")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--max-prob", type=float, default=0.5, help="firing probability per step of a white pixel")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "out"),
                        help="folder for the figures (default: out/ at the repository root; docs/img to regenerate the docs' figures)")
    args = parser.parse_args(argv)
    t_start = time.time()

    digits = load_digits()
    images = (digits.data / 16.0).astype(np.float32)             # pixel intensities in [0, 1]
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=0.2, random_state=args.seed, stratify=digits.target)
    T, B = args.steps, args.batch_size
    weights = step_weights(T)

    learner = sp.online_grad(alif_network, loss_fn, method="exact")
    state0 = initial_state()
    optimizer = optax.adam(args.lr)

    def sequence(params, spikes, label):
        """One example, online: init the traces, run the T steps, return the summed loss/grads."""
        targets = (jnp.broadcast_to(jax.nn.one_hot(label, N_OUT), (T, N_OUT)), weights)
        carry = learner.init(params, state0, spikes[0])
        _, total = learner.run(params, carry, spikes, targets)
        return total

    @sp.jit
    def train_step(params, opt_state, key, images, labels):
        # Fresh spike trains every time an image is seen (the encoder is part of the jitted step).
        spikes = rate_encode(key, images, T, max_prob=args.max_prob, time_axis=1)   # (B, T, 64)
        total = jax.vmap(sequence, in_axes=(None, 0, 0))(params, spikes, labels)
        grads = jax.tree_util.tree_map(lambda g: g.mean(0), total.grads)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        accuracy = jnp.mean(predict_from(total.outputs) == labels)
        return optax.apply_updates(params, updates), opt_state, total.loss.mean(), accuracy

    def predict_from(outputs):
        # The class with the largest weighted readout over the sequence.
        return jnp.argmax(jnp.einsum("btk,t->bk", outputs, weights), axis=-1)

    @jax.jit
    def evaluate(params, key, images):
        spikes = rate_encode(key, images, T, max_prob=args.max_prob, time_axis=1)

        def forward(x):
            def body(state, x_t):
                state, y = alif_network(params, state, x_t)
                return state, (y, state["z"])
            return jax.lax.scan(body, state0, x)[1]
        outputs, hidden = jax.vmap(forward)(spikes)
        return predict_from(outputs), spikes, hidden, outputs

    key = jax.random.PRNGKey(args.seed)
    key, k_init = jax.random.split(key)
    params = init_params(k_init)
    opt_state = optimizer.init(params)
    steps_per_epoch = len(x_train) // B
    history = {"update": [], "loss": [], "train_acc": [], "epoch": [], "test_acc": []}
    rng = np.random.default_rng(args.seed)
    update = 0
    bar = tqdm(total=args.epochs * steps_per_epoch, desc="digits, online exact gradients", unit="update")
    for epoch in range(args.epochs):
        order = rng.permutation(len(x_train))
        for i in range(steps_per_epoch):
            idx = order[i * B:(i + 1) * B]
            key, k = jax.random.split(key)
            params, opt_state, loss, acc = train_step(params, opt_state, k, x_train[idx], y_train[idx])
            update += 1
            history["update"].append(update)
            history["loss"].append(float(loss))
            history["train_acc"].append(float(acc))
            bar.update(1)
        key, k = jax.random.split(key)
        test_acc = float(np.mean(np.asarray(evaluate(params, k, x_test)[0]) == y_test))
        history["epoch"].append(update)
        history["test_acc"].append(test_acc)
        bar.set_postfix(loss=f"{np.mean(history['loss'][-steps_per_epoch:]):.3f}", test_acc=f"{test_acc:.3f}")
    bar.close()

    key, k = jax.random.split(key)
    pred, spikes, hidden, outputs = evaluate(params, k, x_test)
    test_acc = float(np.mean(np.asarray(pred) == y_test))
    elapsed = time.time() - t_start
    print(f"test accuracy {test_acc:.4f} on {len(x_test)} held-out digits "
          f"({args.epochs} epochs, T={T}, {update} updates, {elapsed:.1f} s)")
    print(f"mean hidden firing probability per step: {float(hidden.mean()):.3f}")

    os.makedirs(args.out, exist_ok=True)
    plot_learning_curve(history, steps_per_epoch, os.path.join(args.out, "digits_learning_curve.png"))
    plot_raster(x_test[0], y_test[0], int(pred[0]), spikes[0], hidden[0], outputs[0], weights,
                os.path.join(args.out, "digits_raster.png"))
    return test_acc


def plot_learning_curve(history, steps_per_epoch, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    u = np.asarray(history["update"])
    loss = np.asarray(history["loss"])
    smooth = np.convolve(loss, np.ones(steps_per_epoch) / steps_per_epoch, mode="valid")
    ax_loss.plot(u, loss, color="0.75", lw=0.8, label="per batch")
    ax_loss.plot(u[steps_per_epoch - 1:], smooth, color="C0", label="running mean (1 epoch)")
    ax_loss.set(xlabel="optimizer update", ylabel="cross-entropy", title="training loss", yscale="log")
    ax_loss.legend()
    acc = np.asarray(history["train_acc"])
    smooth_acc = np.convolve(acc, np.ones(steps_per_epoch) / steps_per_epoch, mode="valid")
    ax_acc.plot(u[steps_per_epoch - 1:], smooth_acc, color="C0", label="train (running mean)")
    ax_acc.plot(history["epoch"], history["test_acc"], "o-", color="C3", ms=3, label="test")
    ax_acc.axhline(0.9, color="0.5", ls=":", lw=1, label="90 % accuracy")
    ax_acc.set(xlabel="optimizer update", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    ax_acc.legend(loc="lower right")
    fig.suptitle("sklearn digits: ALIF network trained online with exact gradients (sparseprop)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {os.path.normpath(path)}")


def plot_raster(image, label, prediction, spikes, hidden, outputs, weights, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spikes, hidden, outputs = map(np.asarray, (spikes, hidden, outputs))
    fig = plt.figure(figsize=(11, 6))
    grid = fig.add_gridspec(3, 2, width_ratios=(1, 4), height_ratios=(1, 1.4, 1))
    ax_img = fig.add_subplot(grid[0, 0])
    ax_img.imshow(image.reshape(8, 8), cmap="gray_r")
    ax_img.set(title=f"label {label}, predicted {prediction}", xticks=[], yticks=[])
    ax_in = fig.add_subplot(grid[0, 1])
    plotting.spike_raster(spikes, ax=ax_in, label="input pixel", title="rate-encoded input spikes", marker_size=14)
    ax_in.set_xlabel("")
    ax_hid = fig.add_subplot(grid[1, :], sharex=ax_in)
    plotting.spike_raster(hidden, ax=ax_hid, color="C0", label="hidden ALIF neuron", marker_size=10,
                          title=f"hidden spikes ({hidden.mean():.2f} spikes / neuron / step)")
    ax_hid.set_xlabel("")
    ax_out = fig.add_subplot(grid[2, :], sharex=ax_in)
    for k in range(outputs.shape[1]):
        ax_out.plot(outputs[:, k], lw=2.2 if k == label else 0.8, color="C3" if k == label else "0.6",
                    label=f"class {label}" if k == label else None)
    ax_out.axvspan(np.argmax(np.asarray(weights) > 0) - 0.5, len(weights) - 0.5, color="C2", alpha=0.08,
                   label="steps in the loss")
    ax_out.set(xlabel="time step", ylabel="readout", title="leaky-integrator readout (other classes grey)")
    ax_out.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {os.path.normpath(path)}")


if __name__ == "__main__":
    main()
