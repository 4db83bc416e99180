"""Spiking Heidelberg Digits, learned online by a recurrent ALIF network.

    python examples/shd.py --path shd_train.h5 [--test-path shd_test.h5] [--epochs 5] [--max-samples N]

SHD (20 spoken digits as spikes of 700 cochlear channels) is not bundled: download
shd_train.h5.gz / shd_test.h5.gz from https://zenkelab.org/datasets and gunzip them.
Without the file the script exits with code 2 and says so.

The events are binned into frames of `--dt` seconds and `--downsample` neighbouring
channels are merged (`sparseprop.data.shd`). A recurrent layer of adaptive LIF neurons
feeds a leaky-integrator readout (written as a per-neuron filtered spike train, see
examples/digits_online.py). Gradients are computed online, step by step, with
eligibility traces; one optax update per batch of sequences.

Method: the recurrent weights mix neurons, so exact online gradients (`--method exact`)
need traces of size hidden x hidden x inputs per example — full RTRL, correct but slow
for 128 neurons. The default `--method eprop` drops exactly the paths through the
recurrent matrix from the traces (the e-prop approximation; `learner.explain()` reports
them), which keeps traces per neuron.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Train a recurrent ALIF network online on SHD.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--path", required=True, help="shd_train.h5 (from https://zenkelab.org/datasets)")
    parser.add_argument("--test-path", default=None,
                        help="shd_test.h5 to evaluate on; without it 10%% of --path is held out")
    parser.add_argument("--max-samples", type=int, default=None, help="use only the first N samples of each file")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dt", type=float, default=0.01, help="frame length in seconds")
    parser.add_argument("--num-steps", type=int, default=100, help="frames per sample (longer samples are cut)")
    parser.add_argument("--downsample", type=int, default=5, help="merge this many neighbouring channels")
    parser.add_argument("--hidden", type=int, default=128, help="recurrent ALIF neurons")
    parser.add_argument("--method", default="eprop", choices=["eprop", "exact"])
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from sparseprop.data import SHDNotFoundError, read_shd
    try:
        train = read_shd(args.path, max_samples=args.max_samples)
        test = read_shd(args.test_path, max_samples=args.max_samples) if args.test_path else None
    except SHDNotFoundError as e:
        print(e, file=sys.stderr)
        return 2
    return train_online(args, train, test)


def train_online(args, train, test):
    # Heavy imports only once there is data to train on.
    import jax
    import jax.numpy as jnp
    import optax
    from tqdm import tqdm

    import sparseprop as sp
    from sparseprop.data import SHDEvents, batches
    from sparseprop.data.shd import SHD_NUM_CLASSES

    if test is None:
        # Hold out every tenth sample (at least one) for evaluation.
        n = len(train.labels)
        held = np.zeros(n, bool)
        held[::10] = True
        if held.all():
            held[:] = False
            held[0] = True
        pick = lambda ev, mask: SHDEvents([t for t, m in zip(ev.times, mask) if m],
                                          [u for u, m in zip(ev.units, mask) if m], ev.labels[mask], ev.num_units)
        train, test = pick(train, ~held), pick(train, held)
    n_in = -(-train.num_units // args.downsample)
    n_h, n_out, T, B = args.hidden, SHD_NUM_CLASSES, args.num_steps, args.batch_size
    adapt_decay, adapt_strength, readout_decay, threshold0 = 0.98, 0.3, 0.9, 1.0

    def recurrent_alif(params, state, x):
        """One step of the recurrent ALIF layer and its leaky readout, for one example."""
        alpha = jax.nn.sigmoid(params["leak"])
        adapt = adapt_decay * state["adapt"] + state["z"]
        threshold = threshold0 + adapt_strength * adapt
        current = params["w_in"] @ x + params["w_rec"] @ state["z"]
        v = alpha * state["v"] + current - state["z"] * state["threshold"]   # reset by subtraction
        z = sp.spike(v - threshold)
        trace = readout_decay * state["trace"] + z
        new_state = {"v": v, "adapt": adapt, "threshold": threshold, "z": z, "trace": trace}
        return new_state, params["w_out"] @ trace + params["b_out"]

    def loss_fn(y, target):
        onehot, weight = target
        return weight * optax.softmax_cross_entropy(y, onehot)

    keys = jax.random.split(jax.random.PRNGKey(args.seed), 3)
    params = {
        "w_in": jax.random.normal(keys[0], (n_h, n_in)) * (2.0 / np.sqrt(n_in)),
        "w_rec": jax.random.normal(keys[1], (n_h, n_h)) * (0.5 / np.sqrt(n_h)),
        "leak": jnp.full((n_h,), 3.0),            # alpha = sigmoid(3) ≈ 0.95: 20 frames
        "w_out": jax.random.normal(keys[2], (n_out, n_h)) / np.sqrt(n_h),
        "b_out": jnp.zeros((n_out,)),
    }
    zeros = jnp.zeros((n_h,))
    state0 = {"v": zeros, "adapt": zeros, "threshold": zeros + threshold0, "z": zeros, "trace": zeros}
    # No loss in the first quarter: the readout needs time to hear the digit.
    step_weights = (jnp.arange(T) >= T // 4).astype(jnp.float32)
    step_weights = step_weights / step_weights.sum()

    learner = sp.online_grad(recurrent_alif, loss_fn, method=args.method)
    optimizer = optax.adam(args.lr)
    opt_state = optimizer.init(params)

    def sequence(params, xs, label, valid):
        targets = (jnp.broadcast_to(jax.nn.one_hot(label, n_out), (T, n_out)), step_weights * valid)
        carry = learner.init(params, state0, xs[0])
        return learner.run(params, carry, xs, targets)[1]

    def predict(outputs):
        return jnp.argmax(jnp.einsum("btk,t->bk", outputs, step_weights), axis=-1)

    @sp.jit
    def train_step(params, opt_state, xs, labels, valid):
        total = jax.vmap(sequence, in_axes=(None, 0, 0, 0))(params, xs, labels, valid.astype(jnp.float32))
        n_valid = jnp.maximum(valid.sum(), 1)
        # padding rows have zero loss weight, so summing and dividing by the real rows is the mean
        grads = jax.tree_util.tree_map(lambda g: g.sum(0) / n_valid, total.grads)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        correct = jnp.sum((predict(total.outputs) == labels) & valid)
        return optax.apply_updates(params, updates), opt_state, total.loss.sum() / n_valid, correct

    @jax.jit
    def evaluate(params, xs, labels, valid):
        def forward(x):
            def body(state, x_t):
                state, y = recurrent_alif(params, state, x_t)
                return state, (y, state["z"])
            return jax.lax.scan(body, state0, x)[1]
        outputs, hidden = jax.vmap(forward)(xs)
        return jnp.sum((predict(outputs) == labels) & valid), jnp.sum(hidden.mean((1, 2)) * valid)

    def batches_of(events, shuffle, seed=0):
        return batches(events, B, dt=args.dt, num_steps=T, downsample=args.downsample, shuffle=shuffle, seed=seed)

    print(f"SHD: {len(train.labels)} training and {len(test.labels)} evaluation samples; "
          f"{T} frames of {args.dt * 1000:g} ms, {n_in} inputs, {n_h} recurrent ALIF neurons, "
          f"method={args.method}")
    t_start = time.time()
    n_batches = -(-len(train.labels) // B)
    for epoch in range(args.epochs):
        losses, correct, seen = [], 0, 0
        bar = tqdm(batches_of(train, True, args.seed + epoch), total=n_batches, desc=f"epoch {epoch + 1}", unit="batch")
        for batch in bar:
            params, opt_state, loss, ok = train_step(params, opt_state, jnp.asarray(batch.inputs),
                                                     jnp.asarray(batch.labels), jnp.asarray(batch.valid))
            losses.append(float(loss))
            correct += int(ok)
            seen += int(batch.valid.sum())
            bar.set_postfix(loss=f"{np.mean(losses):.3f}", acc=f"{correct / seen:.3f}")
        test_correct, rate, n_test = 0, 0.0, 0
        for batch in batches_of(test, False):
            ok, r = evaluate(params, jnp.asarray(batch.inputs), jnp.asarray(batch.labels), jnp.asarray(batch.valid))
            test_correct += int(ok)
            rate += float(r)
            n_test += int(batch.valid.sum())
        print(f"epoch {epoch + 1}: train loss {np.mean(losses):.4f}, train accuracy {correct / seen:.4f}, "
              f"evaluation accuracy {test_correct / n_test:.4f} ({n_test} samples), "
              f"hidden rate {rate / n_test:.3f} spikes/neuron/frame, {time.time() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
