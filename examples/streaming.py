"""An endless stream learned online, in constant memory.

The stream is a mixture of three sinusoids whose frequencies drift slowly; it is
generated on the fly (nothing is stored), and the network must predict the value
HORIZON steps ahead from the present one (so it must remember the recent past to know
where each oscillation is heading). A layer of LIF neurons with learned per-neuron leaks turns the
input into spikes; a leaky-integrator readout (written as a per-neuron filtered spike
train, so every trace stays per-neuron) makes the prediction.

Learning is truly online: `learner.step` gives, at every step, the exact gradient of
that step's loss with the whole past included (eligibility traces, no stored history),
and optax applies one update per time step. The loop is a jitted `lax.scan` over chunks
of steps; between chunks the script records the loss and the process memory (resident
set size now and its peak), which stays flat however long the stream runs: memory does
not grow with time, unlike backpropagation through time, which must keep the history.

Run:  python examples/streaming.py          (about 30 s on 2 CPU cores; --steps to go longer)
Writes out/streaming.png (--out docs/img regenerates the docs' figure).
"""
from __future__ import annotations

import argparse
import os
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

import sparseprop as sp

N_IN, N_HIDDEN = 2, 128
READOUT_DECAY = 0.8
THRESHOLD = 1.0

# The stream: three sinusoids whose angular frequencies (radians per step) wander
# around these centres with these depths and periods (in steps).
BASE_FREQ = np.array([0.11, 0.23, 0.37])
DRIFT_DEPTH = np.array([0.3, 0.25, 0.2])     # relative
DRIFT_PERIOD = np.array([41_000.0, 27_000.0, 61_000.0])
AMPLITUDE = np.array([0.6, 0.4, 0.25])
HORIZON = 5                                   # predict the value this many steps ahead


def lif_predictor(params, state, x):
    """One step of LIF layer + leaky readout for one stream; returns (state, prediction)."""
    alpha = jax.nn.sigmoid(params["leak"])
    v = alpha * state["v"] + params["w_in"] @ x + params["bias"] - state["z"] * THRESHOLD
    z = sp.spike(v - THRESHOLD)
    trace = READOUT_DECAY * state["trace"] + z
    y = params["w_out"] @ trace + params["b_out"]
    return {"v": v, "z": z, "trace": trace}, y[0]


def loss_fn(y, target):
    return (y - target) ** 2


def stream_value(phases):
    return jnp.sum(AMPLITUDE * jnp.sin(phases))


def advance_stream(phases, t):
    """Move the generator one step; the frequencies drift with the step index t."""
    freq = BASE_FREQ * (1.0 + DRIFT_DEPTH * jnp.sin(2 * jnp.pi * t / DRIFT_PERIOD))
    return jnp.mod(phases + freq, 2 * jnp.pi)


def init_params(key):
    k_in, k_b, k_leak = jax.random.split(key, 3)
    return {
        "w_in": jax.random.normal(k_in, (N_HIDDEN, N_IN)) * 1.0,
        "bias": jax.random.uniform(k_b, (N_HIDDEN,), minval=0.0, maxval=0.5),
        # a spread of time constants gives the readout a bank of memories
        "leak": jax.random.uniform(k_leak, (N_HIDDEN,), minval=0.0, maxval=4.0),
        "w_out": jnp.zeros((1, N_HIDDEN)),
        "b_out": jnp.zeros((1,)),
    }


def rss_mib():
    """(current, peak) resident set size of this process in MiB.

    Read from /proc/self/status (VmRSS, VmHWM: both in kB, from the same snapshot) on
    Linux; elsewhere only the peak is known, from getrusage.
    """
    fields = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    fields[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    # ru_maxrss is in kB on Linux, in bytes on macOS.
    scale = 1024 * 1024 if os.uname().sysname == "Darwin" else 1024
    peak = fields.get("VmHWM", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale)
    return fields.get("VmRSS", peak), peak


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=1000, help="steps per jitted scan between memory readings")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "out"),
                        help="folder for the figures (default: out/ at the repository root; docs/img to regenerate the docs' figures)")
    args = parser.parse_args(argv)
    t_start = time.time()

    learner = sp.online_grad(lif_predictor, loss_fn, method="exact")
    # One update per step sees one noisy sample: clip rare large gradients (spike bursts).
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(args.lr))
    params = init_params(jax.random.PRNGKey(args.seed))
    state0 = {"v": jnp.zeros(N_HIDDEN), "z": jnp.zeros(N_HIDDEN), "trace": jnp.zeros(N_HIDDEN)}
    carry = learner.init(params, state0, jnp.zeros(N_IN))
    opt_state = optimizer.init(params)
    # The generator runs HORIZON steps ahead of the network: `ahead` holds the values
    # s_t .. s_{t+HORIZON-1}; the network sees s_t and must predict s_{t+HORIZON}.
    phases = jnp.array([0.0, 1.0, 2.0])
    ahead = []
    for _ in range(HORIZON):
        ahead.append(stream_value(phases))
        phases = advance_stream(phases, 0.0)
    stream = (phases, jnp.stack(ahead))

    @sp.jit
    def run_chunk(params, opt_state, carry, stream, t0):
        def one_step(acc, t):
            params, opt_state, carry, (phases, ahead) = acc
            now = ahead[0]
            phases = advance_stream(phases, t)
            target = stream_value(phases)                 # s_{t+HORIZON}: what to predict
            ahead = jnp.concatenate([ahead[1:], target[None]])
            x = jnp.stack([now, 1.0])                     # the present value and a constant input
            carry, out = learner.step(params, carry, x, target)
            updates, opt_state = optimizer.update(out.grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            # the naive forecast "later = now" as a yardstick
            return (params, opt_state, carry, (phases, ahead)), (out.loss, (target - now) ** 2, out.output, target)
        steps = t0 + jnp.arange(args.chunk, dtype=jnp.float32)
        acc, (loss, naive, y, target) = jax.lax.scan(one_step, (params, opt_state, carry, stream), steps)
        return (*acc, loss.mean(), naive.mean(), y, target)

    n_chunks = args.steps // args.chunk
    log = {"step": [], "loss": [], "naive": [], "rss": [], "peak": []}
    first_y = first_target = None
    for i in tqdm(range(n_chunks), desc="streaming, one update per step", unit="chunk"):
        params, opt_state, carry, stream, loss, naive, y, target = run_chunk(
            params, opt_state, carry, stream, jnp.float32(i * args.chunk))
        if i == 0:
            first_y, first_target = np.asarray(y), np.asarray(target)
        rss, peak = rss_mib()
        log["step"].append((i + 1) * args.chunk)
        log["loss"].append(float(loss))
        log["naive"].append(float(naive))
        log["rss"].append(rss)
        log["peak"].append(peak)
    last_y, last_target = np.asarray(y), np.asarray(target)
    elapsed = time.time() - t_start

    signal_var = float(np.sum(AMPLITUDE ** 2) / 2)
    print(f"{n_chunks * args.chunk} steps in {elapsed:.1f} s, one optax update per step; "
          f"final hidden firing: {float(carry.state['z'].mean()):.3f} spikes / neuron / step")
    for k in sorted({0, 1, 9, n_chunks // 2, n_chunks - 1} & set(range(n_chunks))):
        print(f"  after {log['step'][k]:>7} steps: mean squared error {log['loss'][k]:.5f} "
              f"(naive 'later = now' {log['naive'][k]:.5f}, signal variance {signal_var:.3f}); "
              f"RSS {log['rss'][k]:.0f} MiB, peak {log['peak'][k]:.0f} MiB")
    print(f"RSS grew by {log['rss'][-1] - log['rss'][1]:+.1f} MiB between step {log['step'][1]} and "
          f"step {log['step'][-1]} (peak {log['peak'][1]:.0f} -> {log['peak'][-1]:.0f} MiB)")
    os.makedirs(args.out, exist_ok=True)
    plot(log, signal_var, first_y, first_target, last_y, last_target, args.chunk,
         os.path.join(args.out, "streaming.png"))
    return log


def plot(log, signal_var, first_y, first_target, last_y, last_target, chunk, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(11, 6.5))
    grid = fig.add_gridspec(2, 2)
    ax_loss = fig.add_subplot(grid[0, 0])
    ax_loss.plot(log["step"], log["loss"], color="C0", label="online LIF network")
    ax_loss.plot(log["step"], log["naive"], color="0.5", ls="--", label=f"naive forecast: s(t+{HORIZON}) = s(t)")
    ax_loss.axhline(signal_var, color="0.7", ls=":", label="signal variance")
    # Head room above the curves (log axis) so that the legend sits above them, not over them.
    top = 6 * max(max(log["loss"]), max(log["naive"]), signal_var)
    ax_loss.set(xlabel="time step", ylabel=f"mean squared error (per {chunk} steps)", yscale="log",
                ylim=(None, top), title="prediction error over the stream")
    ax_loss.legend(loc="upper right", fontsize=8)
    ax_mem = fig.add_subplot(grid[0, 1])
    ax_mem.plot(log["step"], log["rss"], color="C2", label="resident set size")
    ax_mem.plot(log["step"], log["peak"], color="C3", ls="--", label="peak resident set size")
    top = max(log["peak"]) * 1.3
    ax_mem.set(xlabel="time step", ylabel="MiB", ylim=(0, top), title="process memory: flat in time")
    ax_mem.legend(loc="lower right", fontsize=8)
    n = 300
    for col, (y, target, when) in enumerate(((first_y, first_target, "first"), (last_y, last_target, "last"))):
        ax = fig.add_subplot(grid[1, col])
        t0 = 0 if when == "first" else log["step"][-1] - chunk
        steps = t0 + np.arange(len(y))[-n:]
        ax.plot(steps, target[-n:], color="k", lw=1.5, label=f"stream s(t+{HORIZON})")
        ax.plot(steps, y[-n:], color="C1", lw=1.2, label="prediction")
        ax.set(xlabel="time step", title=f"the {when} chunk's last {n} steps", ylim=(-1.6, 2.4))
        ax.legend(loc="upper center", ncol=2, fontsize=8)     # one row, above the curves
    fig.suptitle("streaming: a drifting signal learned online, one optax update per step (sparseprop, exact)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {os.path.normpath(path)}")


if __name__ == "__main__":
    main()
