"""Handwritten digits as an event stream, learned online by a convolutional spiking network.

scikit-learn's bundled digits (8x8 pixels, no download) are shown as an event camera
sees them, in the manner of N-MNIST (Orchard et al. 2015): the image is moved by small
saccades (a triangle of sub-pixel shifts on a 10x10 canvas) and each pixel emits an ON
event when its brightness rises by more than a threshold since the last step and an
OFF event when it falls: a (T, 2, 10, 10) stream of binary events per digit.

The network is conv – pool – conv – readout, one example per call, stacked from
`sparseprop.layers` in a `neurons.Sequential`:

- `Conv2d` 3x3, 2 -> 8 channels (SAME) into `Leaky` LIF neurons with a shared leak and a
  detached reset by subtraction: the post-synaptic Jacobian is a scalar times the
  identity, so the kernel's eligibility is stored as the *filtered input* (2x10x10
  numbers per example) and its gradient is one correlation of the learning signal with it;
- `AvgPool2d` 2x2, `Conv2d` 3x3, 8 -> 16 channels (VALID) into `Leaky` neurons with
  per-channel learned leaks (C, 1, 1): per-neuron conv eligibilities (output neuron x 8·3·3);
- a readout of 10 units reading a per-neuron filtered spike train (`Filter`, then
  `Flatten` and `Linear`; see digits_online.py for why).

The default `method="ostl"` (OSTL-style, Bohnstingl et al. 2022) cuts from the traces
every path from the previous state through a neuron-mixing operation (here: layer 1's
potential reaching layer 2 through the pool and the second convolution), so every trace
stays per neuron or factorised; the learning signal of each step is exact, so kernel 1
learns from the error that reaches it through layer 2 within the step. `--method exact`
(equal to BPTT; `eprop` is the same here, nothing is recurrent) also keeps the dense
layer-2 x kernel-1 block and is much slower.

Run:  python examples/conv_digits.py            (about 2 minutes on 2 CPU cores)
      python examples/conv_digits.py --quick    (a few seconds: a smoke test)
Writes conv_digits_events.png and conv_digits_kernels.png to --out (default out/).
"""
from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy import ndimage
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import sparseprop as sp
from sparseprop import layers, neurons

C1, C2, N_OUT = 8, 16, 10
CANVAS = 10               # the 8x8 digit moves on a 10x10 sensor
READOUT_DECAY = 0.8
EVENT_THRESHOLD = 0.08    # brightness change that triggers an event (pixel values in [0, 1])


def saccade_path(num_steps):
    """Sub-pixel offsets (dy, dx) of the image at each step: three saccades along a triangle
    (as the N-MNIST recordings), starting at rest in the canvas centre."""
    corners = np.array([[0.0, 0.0], [1.0, 0.8], [-0.6, 1.0], [0.0, 0.0]])
    s = np.linspace(0.0, 3.0, num_steps)
    k = np.minimum(s.astype(int), 2)
    f = (s - k)[:, None]
    return corners[k] * (1 - f) + corners[k + 1] * f


def event_stream(images, num_steps):
    """ON/OFF events by temporal difference of the moving image: (N, T, 2, CANVAS, CANVAS) uint8."""
    pad = (CANVAS - 8) // 2
    canvas = np.pad(images, ((0, 0), (pad, pad), (pad, pad)))
    frames = np.stack([ndimage.shift(canvas, (0.0, dy, dx), order=1, mode="constant")
                       for dy, dx in saccade_path(num_steps + 1)], axis=1)     # (N, T+1, H, W)
    diff = np.diff(frames, axis=1)
    on, off = diff > EVENT_THRESHOLD, diff < -EVENT_THRESHOLD
    return np.stack([on, off], axis=2).astype(np.uint8)


NET = neurons.Sequential((
    layers.Conv2d(2, C1, 3, bias=False, gain=3.0), layers.Leaky(init_leak=0.82),
    layers.AvgPool2d(2),
    layers.Conv2d(C1, C2, 3, padding="VALID", bias=False, gain=7.6), layers.Leaky(leak="channel", init_leak=0.82),
    layers.Filter(READOUT_DECAY), layers.Flatten(), layers.Linear(C2 * 3 * 3, N_OUT, gain=1.0)))
SIZES = (2, CANVAS, CANVAS)   # the input's shape: every layer sizes itself from it
KERNEL_1, KERNEL_2 = "params[0]['weight']", "params[3]['weight']"


def loss_fn(y, target):
    """Cross-entropy of this step's readout, weighted (no loss in the first steps)."""
    onehot, weight = target
    return weight * optax.softmax_cross_entropy(y, onehot)


def step_weights(num_steps):
    w = (jnp.arange(num_steps) >= num_steps // 3).astype(jnp.float32)
    return w / w.sum()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--steps", type=int, default=12, help="time steps per event stream")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--method", default="ostl", choices=["ostl", "exact", "eprop"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a few updates on 128 digits (smoke test)")
    parser.add_argument("--out", default="out", help="directory for the figures")
    args = parser.parse_args(argv)
    t_start = time.time()

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    labels = digits.target
    if args.quick:
        images, labels, args.epochs = images[:160], labels[:160], 1
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.2, random_state=args.seed, stratify=labels)
    T, B = args.steps, args.batch_size
    ev_train = event_stream(x_train, T).astype(np.float32)
    ev_test = event_stream(x_test, T).astype(np.float32)
    weights = step_weights(T)

    learner = sp.online_grad(NET, loss_fn, method=args.method)
    state0 = NET.init_state(SIZES)
    key = jax.random.PRNGKey(args.seed)
    params = NET.init_params(key, SIZES)
    report = learner.explain(params, state0, jnp.asarray(ev_train[0, 0]), print_report=False)
    optimizer = optax.adam(args.lr)
    opt_state = optimizer.init(params)
    batch_state0 = jax.tree_util.tree_map(lambda v: jnp.broadcast_to(v, (B,) + v.shape), state0)

    @sp.jit
    def train_step(params, opt_state, events, labels):
        """One batch, online: traces carried through the T steps, gradients summed over the batch."""
        targets = (jnp.broadcast_to(jax.nn.one_hot(labels, N_OUT)[:, None], (B, T, N_OUT)),
                   jnp.broadcast_to(weights, (B, T)))
        carry = learner.init_batch(params, batch_state0, events[:, 0])
        _, total = learner.run_batch(params, carry, events, targets)
        grads = jax.tree_util.tree_map(lambda g: g / B, total.grads)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        accuracy = jnp.mean(predict_from(total.outputs) == labels)
        return optax.apply_updates(params, updates), opt_state, total.loss / B, accuracy

    def predict_from(outputs):
        return jnp.argmax(jnp.einsum("btk,t->bk", outputs, weights), axis=-1)

    @jax.jit
    def evaluate(params, events):
        forward = lambda x: sp.simulate(NET, params, state0, x, keep_states=False).outputs  # noqa: E731
        return predict_from(jax.vmap(forward)(events))

    rng = np.random.default_rng(args.seed)
    steps_per_epoch = len(x_train) // B
    train_time, updates = 0.0, 0
    for epoch in range(args.epochs):
        order = rng.permutation(len(x_train))
        losses, accs = [], []
        for i in range(steps_per_epoch):
            idx = order[i * B:(i + 1) * B]
            t0 = time.perf_counter()
            params, opt_state, loss, acc = train_step(params, opt_state, ev_train[idx], y_train[idx])
            loss.block_until_ready()
            if updates > 0:             # the first call compiles
                train_time += time.perf_counter() - t0
            updates += 1
            losses.append(float(loss))
            accs.append(float(acc))
        test_acc = float(np.mean(np.asarray(evaluate(params, ev_test)) == y_test))
        print(f"epoch {epoch + 1}: train loss {np.mean(losses):.3f}, train accuracy {np.mean(accs):.3f}, "
              f"test accuracy {test_acc:.3f}", flush=True)

    ms_per_step = 1e3 * train_time / max(updates - 1, 1) / T
    print(f"test accuracy {test_acc:.4f} on {len(x_test)} held-out digits ({args.epochs} epochs, T={T}, "
          f"method={args.method!r})")
    print(f"trace memory {report.trace_bytes / 1024:.1f} KiB per example "
          f"({report.trace_bytes * B / 2**20:.2f} MiB for a batch of {B}); "
          f"{ms_per_step:.2f} ms per online step of a batch of {B}; total {time.time() - t_start:.1f} s")
    for blk in report.blocks:
        if blk.param in (KERNEL_1, KERNEL_2):
            print(f"  d{blk.state}/d{blk.param}: {blk.kind}, shape {blk.shape}")

    os.makedirs(args.out, exist_ok=True)
    plot_events(x_test[0], ev_test[0], os.path.join(args.out, "conv_digits_events.png"))
    plot_kernels(np.asarray(params[0]["weight"]), os.path.join(args.out, "conv_digits_kernels.png"))
    return test_acc


def plot_events(image, events, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = np.linspace(0, len(events) - 1, 6).astype(int)
    fig, axes = plt.subplots(1, len(shown) + 1, figsize=(2 * (len(shown) + 1), 2.6))
    axes[0].imshow(image, cmap="gray_r")
    axes[0].set_title("digit")
    for ax, t in zip(axes[1:], shown):
        ax.imshow(events[t, 0] - events[t, 1], cmap="bwr", vmin=-1, vmax=1)
        ax.set_title(f"step {t}")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("events of the moving digit: ON (brighter) red, OFF (darker) blue")
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_kernels(k1, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, k1.shape[0], figsize=(1.4 * k1.shape[0] + 1.2, 3), layout="constrained")
    lim = np.abs(k1).max()
    for o in range(k1.shape[0]):
        for c, name in enumerate(("ON", "OFF")):
            image = axes[c, o].imshow(k1[o, c], cmap="bwr", vmin=-lim, vmax=lim)
            axes[c, o].set_xticks([])
            axes[c, o].set_yticks([])
            if o == 0:
                axes[c, o].set_ylabel(f"{name} input")
        axes[0, o].set_title(f"channel {o}", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.8, label="kernel weight")
    fig.suptitle("learned layer-1 kernels (3x3 taps per input channel)")
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
