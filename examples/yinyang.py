"""Train a 5 → hidden → 3 event-driven spiking network on Yin-Yang by time-to-first-spike, with
exact continuous-time spike-time gradients computed forward (Lee et al. 2022): no surrogate, no
backward pass through the event sequence.

Each of the 4 inputs (x, y, 1-x, 1-y) is one spike at a time in [0.15, 2] (plus a bias spike at
0.9); hidden and output neurons fire at most once; the predicted class is the output neuron that
fires first. Loss (in the spirit of Göltz et al. 2021): cross-entropy of softmax(-t_out/τ_0), plus
a small term pulling the correct output's spike earlier, plus (1 - V_max) for a correct output
that stays silent (its spike time does not exist, but its peak potential has a gradient). The
second term anchors the time scale: the cross-entropy alone is invariant to shifting all output
spikes later, and drifting later makes outputs graze threshold and fall silent.

Run: python examples/yinyang.py [--out out] [--quick]      (writes OUT/yinyang.png)
"""
import argparse
import os
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.colors import ListedColormap
import numpy as np
import optax

from sparseprop.data import encode_spike_times, yinyang
from sparseprop.event_lif import EventLIF, first_spike_times, loss_and_grad, spike_times

T_MAX = 10.0                     # simulation end (units of τ_s); a silent output counts as T_MAX
TAU_0 = 0.12                     # temperature of the softmax over -t_out
ALPHA, BETA = 1.0, 2.0           # earlier-correct-spike term α (e^{t/β} - 1)
HIDDEN = EventLIF(tau_m=2.0, tau_s=1.0, threshold=1.0, max_spikes=1, t_max=T_MAX)   # τ_m = 2 τ_s: closed form
OUTPUT = EventLIF(tau_m=2.0, tau_s=1.0, threshold=1.0, max_spikes=1, t_max=T_MAX)
CFGS = (HIDDEN, OUTPUT)


W1_MEAN, W1_STD = 2.0, 2.0
W2_SUM, W2_STD = 30.0, 4.0


def init(key, hidden):
    k1, k2 = jax.random.split(key)
    w1 = W1_MEAN + W1_STD * jax.random.normal(k1, (hidden, 5))     # most hidden neurons fire at first
    w2 = W2_SUM / hidden + W2_STD / np.sqrt(hidden) * jax.random.normal(k2, (3, hidden))
    return [w1, w2]


def loss_fn(times, vmax, label):
    silent = ~jnp.isfinite(times[label, 0])
    t = first_spike_times(times, T_MAX)
    ce = optax.softmax_cross_entropy_with_integer_labels(-t / TAU_0, label)
    return ce + ALPHA * (jnp.exp(t[label] / BETA) - 1.0) + jnp.where(silent, OUTPUT.threshold - vmax[label], 0.0)


def make_train_step(optimiser):
    @jax.jit
    def train_step(params, opt_state, x, y):
        loss, grads, res = jax.vmap(lambda xx, yy: loss_and_grad(loss_fn, CFGS, params, xx, yy))(x, y)
        grads = [jnp.mean(g, axis=0) for g in grads]
        updates, opt_state = optimiser.update(grads, opt_state, params)
        flagged = jnp.mean(jnp.any(res.layers[0].grazing, -1) | jnp.any(res.layers[1].grazing, -1))
        return optax.apply_updates(params, updates), opt_state, jnp.mean(loss), flagged
    return train_step


@jax.jit
def predict(params, x):
    out = jax.vmap(lambda xx: spike_times(CFGS, params, xx))(x)
    t = first_spike_times(out[-1].times, T_MAX)
    return jnp.argmin(t, axis=-1), t


def gradient_check(params, x, y):
    """Forward-propagated loss gradient vs reverse-mode autodiff of the same simulation."""
    _, grads, _ = jax.vmap(lambda xx, yy: loss_and_grad(loss_fn, CFGS, params, xx, yy))(x, y)

    def reference(p):
        out = jax.vmap(lambda xx: spike_times(CFGS, p, xx))(x)[-1]
        return jax.vmap(loss_fn)(out.times, out.vmax, y)

    ref = jax.jacrev(lambda p: jnp.sum(reference(p)))(params)
    return max(float(jnp.max(jnp.abs(jnp.sum(g, 0) - r)) / jnp.max(jnp.abs(r))) for g, r in zip(grads, ref))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out", help="output directory for the figure")
    parser.add_argument("--hidden", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--lr", type=float, default=6e-3)
    parser.add_argument("--train-size", type=int, default=5000)
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="a tiny run (tests): 2 epochs on 300 points")
    args = parser.parse_args()
    if args.quick:
        args.hidden, args.epochs, args.train_size, args.test_size = 16, 2, 300, 200

    train, test = yinyang(args.train_size, seed=42), yinyang(args.test_size, seed=40)   # the published seeds
    x_train, x_test = encode_spike_times(train.inputs), encode_spike_times(test.inputs)
    params = init(jax.random.PRNGKey(0), args.hidden)
    steps = args.epochs * (args.train_size // args.batch_size)
    optimiser = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(optax.cosine_decay_schedule(args.lr, steps)))
    opt_state = optimiser.init(params)
    train_step = make_train_step(optimiser)

    err = gradient_check(params, x_train[:8], train.labels[:8])
    print(f"forward-propagated gradient vs reverse-mode autodiff (8 examples): max rel. error {err:.1e}")

    rng = np.random.default_rng(0)
    history = []
    for epoch in range(args.epochs):
        start = time.perf_counter()
        order = rng.permutation(args.train_size)
        losses, flagged = [], []
        for b in range(0, args.train_size - args.batch_size + 1, args.batch_size):
            idx = order[b:b + args.batch_size]
            params, opt_state, loss, flag = train_step(params, opt_state, x_train[idx], train.labels[idx])
            losses.append(float(loss))
            flagged.append(float(flag))
        seconds = time.perf_counter() - start
        accuracy = float(np.mean(np.asarray(predict(params, x_test)[0]) == test.labels))
        history.append((np.mean(losses), accuracy, seconds))
        print(f"epoch {epoch + 1}: train loss {np.mean(losses):.4f}  test accuracy {accuracy:.3f}  "
              f"time {seconds:.1f} s  (grazing-flagged examples {100 * np.mean(flagged):.2f} %)", flush=True)
    times_per_epoch = [h[2] for h in history[1:]] or [history[0][2]]
    print(f"test accuracy {history[-1][1]:.3f}; time per epoch {np.median(times_per_epoch):.1f} s "
          f"(median, after the first, which includes compilation)")

    os.makedirs(args.out, exist_ok=True)
    figure(params, history, test, x_test, os.path.join(args.out, "yinyang.png"))
    print(f"wrote {os.path.join(args.out, 'yinyang.png')}")


def figure(params, history, test, x_test, path):
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    loss, acc, _ = zip(*history)
    ax = axes[0]
    ax.plot(np.arange(1, len(loss) + 1), loss, "C0-o", ms=3, label="train loss")
    ax.set(xlabel="epoch", ylabel="loss", title="training")
    twin = ax.twinx()
    twin.plot(np.arange(1, len(acc) + 1), acc, "C1-o", ms=3, label="test accuracy")
    twin.set_ylabel("test accuracy")
    lines = ax.get_lines() + twin.get_lines()   # one legend for both y axes
    ax.legend(lines, [line.get_label() for line in lines], fontsize=7, loc="center right")
    # Decision regions on a grid over the disc.
    g = np.linspace(0, 1, 120)
    gx, gy = np.meshgrid(g, g)
    inside = np.hypot(gx - 0.5, gy - 0.5) <= 0.5
    pts = np.stack([gx[inside], gy[inside]], -1)
    pred = np.asarray(predict(params, encode_spike_times(np.concatenate([pts, 1 - pts], -1)))[0])
    region = np.full(gx.shape, np.nan)
    region[inside] = pred
    ax = axes[1]
    ax.imshow(region, origin="lower", extent=(0, 1, 0, 1), cmap=ListedColormap(["C0", "C1", "C2"]), vmin=0, vmax=2,
              alpha=0.25)
    test_pred, test_t = (np.asarray(a) for a in predict(params, x_test))
    for c, marker in zip(range(3), "o^s"):
        sel = test.labels == c
        ax.scatter(test.inputs[sel, 0], test.inputs[sel, 1], s=6, marker=marker, c=f"C{c}", label=f"class {c}")
    wrong = test_pred != test.labels
    ax.scatter(test.inputs[wrong, 0], test.inputs[wrong, 1], s=18, facecolors="none", edgecolors="k", lw=0.6,
               label="misclassified")
    ax.set(xlabel="x", ylabel="y", title="decision regions (background) and test points", aspect="equal")
    ax.legend(fontsize=7, loc="upper right")
    ax = axes[2]
    for c in range(3):
        sel = test.labels == c
        parts = ax.violinplot([test_t[sel, k] for k in range(3)], positions=np.arange(3) + 0.25 * (c - 1),
                              widths=0.22, showmedians=True)
        for body in parts["bodies"]:
            body.set_color(f"C{c}")
        ax.plot([], [], color=f"C{c}", label=f"inputs of class {c}")
    ax.set(xticks=range(3), xticklabels=[f"output {k}" for k in range(3)], ylabel=f"first spike time (τ_s; silent = {T_MAX:g})",
           title="output spike times on the test set")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
