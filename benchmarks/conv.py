"""Convolutional spiking networks at event-camera-like sizes: memory and speed of online
gradients against BPTT and checkpointed BPTT, side by side in one run.

Problems (float32, batch B, ON/OFF input events of rate 0.1 on an S x S sensor):

- `conv_lif`: conv 3x3, 2 -> 16 channels (SAME) into LIF neurons, readout = spatial mean of
  the spikes per channel, squared error against a target per step.
  `online_exact` has per-channel leaks (C, 1, 1): per-neuron kernel eligibilities
  (16·S·S x 2·3·3 per example); `online_factorised` a shared leak with a detached reset:
  the filtered input (2·S·S per example) and one correlation per step for the gradient.
- `conv_snn2`: conv 2 -> 16 – 2x2 average pool – conv 16 -> 32 – readout, shared leaks.
  `online_ostl` (OSTL-style: neuron-mixing paths from the previous state cut from the
  traces, so both kernels' traces are factorised); `online_exact` (and `eprop`, equal to
  it here: nothing is recurrent) needs the dense layer-2 x kernel-1 block and is only
  reported (its size from the program's blocks).

Temp memory is XLA's compiled temporary buffer size (`memory_analysis()`) of the jitted
gradient over T steps, for every T; ms/step is the median of round-robin timed calls at
the smallest T. braintrace's conv D-RTRL (`braintrace.nn.Conv2d`) is run where it works.

Usage: python benchmarks/conv.py [--quick] [--size S] [--batch B] [--steps 100 1000]
Writes benchmarks/results/conv.csv and benchmarks/results/conv.png and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import platform

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import sparseprop as sp
from sparseprop.bench.timing import time_per_step

HERE = os.path.dirname(os.path.abspath(__file__))
sg = lax.stop_gradient
THRESHOLD = 1.0


# ----------------------------------------------------------------------------- models
def conv(x, kernel, padding="SAME"):
    return lax.conv_general_dilated(x[None], kernel, (1, 1), padding)[0]


def conv_lif_shared(p, s, x):
    z_prev = sg(sp.spike(s - THRESHOLD))
    v = p["alpha"] * s + conv(x, p["k1"]) - z_prev * THRESHOLD
    return v, jnp.mean(sp.spike(v - THRESHOLD), axis=(1, 2))


def conv_lif_perchannel(p, s, x):
    z_prev = sg(sp.spike(s - THRESHOLD))
    v = p["alpha_c"] * s + conv(x, p["k1"]) - z_prev * THRESHOLD
    return v, jnp.mean(sp.spike(v - THRESHOLD), axis=(1, 2))


def avg_pool(z):
    return lax.reduce_window(z, 0.0, lax.add, (1, 2, 2), (1, 2, 2), "VALID") / 4.0


def conv_snn2(p, s, x):
    v1, v2 = s
    v1 = p["alpha"] * v1 + conv(x, p["k1"]) - sg(sp.spike(v1 - THRESHOLD)) * THRESHOLD
    z1 = sp.spike(v1 - THRESHOLD)
    v2 = p["alpha"] * v2 + conv(avg_pool(z1), p["k2"]) - sg(sp.spike(v2 - THRESHOLD)) * THRESHOLD
    return (v1, v2), jnp.mean(sp.spike(v2 - THRESHOLD), axis=(1, 2))


def mse(y, t):
    return jnp.sum((y - t) ** 2)


def problem(name, size, batch, steps, seed=0):
    """(model, params, batched state0, xs (T, B, 2, S, S), targets (T, B, C_out))."""
    k = jax.random.split(jax.random.PRNGKey(seed), 5)
    c1, c2 = 16, 32
    params = {"k1": jax.random.normal(k[0], (c1, 2, 3, 3)) * 0.8, "alpha": jnp.array(0.9)}
    if name == "conv_lif":
        params["alpha_c"] = jnp.linspace(0.85, 0.95, c1).reshape(c1, 1, 1)
        state = jnp.zeros((batch, c1, size, size))
        c_out = c1
    else:
        params["k2"] = jax.random.normal(k[1], (c2, c1, 3, 3)) * 0.5
        state = (jnp.zeros((batch, c1, size, size)), jnp.zeros((batch, c2, size // 2, size // 2)))
        c_out = c2
    xs = (jax.random.uniform(k[2], (steps, batch, 2, size, size)) < 0.1).astype(jnp.float32)
    targets = 0.1 * jax.random.uniform(k[3], (steps, batch, c_out))
    return params, state, xs, targets


# --------------------------------------------------------------------------- methods
def bptt_fn(model, checkpoint):
    def total(params, states0, xs, targets):
        def body(states, inp):
            x, t = inp
            states, y = jax.vmap(model, in_axes=(None, 0, 0))(params, states, x)
            return states, jnp.sum(jax.vmap(mse)(y, t))
        steps = xs.shape[0]
        if not checkpoint:
            return jnp.sum(lax.scan(body, states0, (xs, targets))[1])
        c = min((d for d in range(1, steps + 1) if steps % d == 0), key=lambda d: (abs(d - math.sqrt(steps)), d))
        chunked = jax.tree_util.tree_map(lambda a: a.reshape((steps // c, c) + a.shape[1:]), (xs, targets))

        @jax.checkpoint
        def chunk(states, inp):
            states, losses = lax.scan(body, states, inp)
            return states, jnp.sum(losses)
        return jnp.sum(lax.scan(chunk, states0, chunked)[1])
    return jax.grad(total)


def online_fn(model, method):
    learner = sp.online_grad(model, mse, method=method)

    def f(params, states0, xs, targets):
        carry = learner.init_batch(params, states0, xs[0])
        return learner.run_batch(params, carry, xs, targets, time_major=True)[1].grads
    f.learner = learner
    return f


def braintrace_fn(size, batch):
    """braintrace's D-RTRL on the shared-leak conv LIF layer (channels-last Conv2d); None and
    a reason when braintrace cannot run it."""
    try:
        import brainstate
        import braintrace
    except Exception as e:    # not installed, or broken against this jax
        return None, f"braintrace not importable: {type(e).__name__}: {e}"

    class Layer(brainstate.nn.Module):
        def __init__(self, params):
            super().__init__()
            w = jnp.transpose(params["k1"], (2, 3, 1, 0))          # OIHW -> HWIO
            self.conv = braintrace.nn.Conv2d((size, size, 2), 16, 3, w_init=w, b_init=None)
            self.alpha = sg(params["alpha"])

        def init_state(self, batch_size=None, **kwargs):
            self.v = brainstate.HiddenState(jnp.zeros((batch_size, size, size, 16)))

        def update(self, x):
            v = self.v.value
            v = self.alpha * v + self.conv(x) - sg(sp.spike(v - THRESHOLD)) * THRESHOLD
            self.v.value = v
            return jnp.mean(sp.spike(v - THRESHOLD), axis=(1, 2))

    def f(params, states0, xs, targets):
        xs = jnp.transpose(xs, (0, 1, 3, 4, 2))                     # NCHW -> NHWC
        learner = braintrace.compile(Layer(params), braintrace.D_RTRL, xs[0], batch_size=batch)

        def step_loss(x, t):
            return jnp.sum(jax.vmap(mse)(learner(x), t))
        grads = learner.etrace_grad(xs, targets, step_fn=step_loss, reduction="sum")
        (g,) = [g["weight"] for g in grads.values()]
        return {"k1": jnp.transpose(g, (3, 2, 0, 1))}
    return f, None


# ---------------------------------------------------------------------- measurement
def temp_mib(f, *args):
    abstract = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), args)
    ma = jax.jit(f).lower(*abstract).compile().memory_analysis()
    return ma.temp_size_in_bytes / 2**20


def time_side_by_side(fns, args, steps, repeats):
    """ms per step and results of `fns`, timed round-robin (sparseprop.bench.timing)."""
    timed = time_per_step(fns, args, steps, repeats)
    return ({name: t["ms_per_step"] for name, t in timed.items()},
            {name: t["result"] for name, t in timed.items()})


def rel_error(g, ref):
    """max over the compared leaves of max|g - ref| / max|ref| (a leaf BPTT gives zero: absolute)."""
    keys = [k for k in g if k in ref]
    return max(float(jnp.max(jnp.abs(g[k] - ref[k])) / (float(jnp.max(jnp.abs(ref[k]))) or 1.0)) for k in keys)


SHARED = ("bptt_shared", "online_factorised", "braintrace_drtrl")   # the shared-leak conv LIF


def trace_mib(learner, params, states0, xs):
    """Trace bytes per example from the program's blocks (nothing is run)."""
    one = jax.tree_util.tree_map(lambda a: a[0], states0)
    prog = learner.plan(params, one, xs[0, 0])
    return sum(b.nbytes for b in prog.blocks) / 2**20


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="8x8 sensor, T in (20, 40): a smoke test")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-braintrace", action="store_true")
    ap.add_argument("--csv", default=os.path.join(HERE, "results", "conv.csv"))
    ap.add_argument("--png", default=os.path.join(HERE, "results", "conv.png"))
    a = ap.parse_args(argv)
    if a.quick:
        a.size, a.batch, a.steps, a.repeats = 8, 4, [20, 40], 2
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, jax {jax.__version__} ({jax.default_backend()})"
    print(f"machine: {machine}; sensor {a.size}x{a.size}, batch {a.batch}, float32")

    rows = []
    for name in ("conv_lif", "conv_snn2"):
        if name == "conv_lif":
            fns = {"bptt": bptt_fn(conv_lif_perchannel, False),
                   "bptt_checkpoint": bptt_fn(conv_lif_perchannel, True),
                   "online_exact": online_fn(conv_lif_perchannel, "exact"),
                   "bptt_shared": bptt_fn(conv_lif_shared, False),
                   "online_factorised": online_fn(conv_lif_shared, "exact")}
            if not a.no_braintrace:
                bt, why = braintrace_fn(a.size, a.batch)
                if bt is None:
                    print(f"skipping braintrace: {why}")
                else:
                    fns["braintrace_drtrl"] = bt
        else:
            fns = {"bptt": bptt_fn(conv_snn2, False), "bptt_checkpoint": bptt_fn(conv_snn2, True),
                   "online_ostl": online_fn(conv_snn2, "ostl")}
            exact = sp.online_grad(conv_snn2, mse, method="exact")
            p, s, xs, _ = problem(name, a.size, a.batch, 2)
            prog = exact.plan(p, jax.tree_util.tree_map(lambda v: v[0], s), xs[0, 0])
            print(f"conv_snn2 online_exact (= eprop here) not run: its traces are "
                  f"{trace_mib(exact, p, s, xs):.1f} MiB per example (the layer-2 x kernel-1 block is "
                  f"dense: exact RTRL through a convolution of the previous layer), and that block's "
                  f"Jacobian takes {prog.n_probes} forward probes + "
                  f"{sum(int(np.prod(prog.s_avals[a].shape)) for a in prog.reverse_states)} reverse rows "
                  f"per example and step")
        t_min = min(a.steps)
        params, states0, xs, targets = problem(name, a.size, a.batch, t_min)
        ms, results = {}, {}
        try:
            ms, results = time_side_by_side(fns, (params, states0, xs, targets), t_min, a.repeats)
        except Exception as e:     # braintrace is optional: time the others without it
            if "braintrace_drtrl" not in fns:
                raise
            print(f"skipping braintrace: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
            fns.pop("braintrace_drtrl")
            ms, results = time_side_by_side(fns, (params, states0, xs, targets), t_min, a.repeats)
        for method, f in fns.items():
            ref = results["bptt_shared" if method in SHARED else "bptt"]
            for T in a.steps:
                p, s, x, t = problem(name, a.size, a.batch, T)
                row = {"problem": name, "method": method, "T": T, "size": a.size, "batch": a.batch,
                       "temp_MiB": round(temp_mib(f, p, s, x, t), 3),
                       "ms_per_step": round(ms[method], 3) if T == t_min else "",
                       "rel_error_vs_bptt": f"{rel_error(results[method], ref):.2e}" if T == t_min else "",
                       "trace_MiB_per_example": round(trace_mib(f.learner, p, s, x), 4)
                       if hasattr(f, "learner") else ""}
                rows.append(row)
                print(row, flush=True)

    os.makedirs(os.path.dirname(a.csv), exist_ok=True)
    with open(a.csv, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(markdown(rows, machine))
    plot(rows, a.png)
    print(f"wrote {a.csv} and {a.png}")


def markdown(rows, machine):
    steps = sorted({r["T"] for r in rows})
    lines = [f"Machine: {machine}.", "",
             "| problem | method | " + " | ".join(f"temp MiB T={T}" for T in steps)
             + f" | ms/step (T={steps[0]}) | × BPTT time | trace MiB / example | max rel. error |",
             "|---|---|" + "---|" * (len(steps) + 4)]
    for (prob, method) in dict.fromkeys((r["problem"], r["method"]) for r in rows):
        rs = {r["T"]: r for r in rows if r["problem"] == prob and r["method"] == method}
        base = next(r for r in rows if r["problem"] == prob and r["T"] == steps[0]
                    and r["method"] == ("bptt_shared" if method in SHARED else "bptt"))
        first = rs[steps[0]]
        ratio = first["ms_per_step"] / base["ms_per_step"]
        lines.append(f"| {prob} | {method} | " + " | ".join(f"{rs[T]['temp_MiB']:.1f}" for T in steps)
                     + f" | {first['ms_per_step']:.2f} | {ratio:.2f} | {first['trace_MiB_per_example'] or '–'}"
                     + f" | {first['rel_error_vs_bptt']} |")
    return "\n".join(lines)


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = list(dict.fromkeys(r["problem"] for r in rows))
    fig, axes = plt.subplots(1, len(problems), figsize=(6 * len(problems), 4))
    for ax, prob in zip(np.atleast_1d(axes), problems):
        for method in dict.fromkeys(r["method"] for r in rows if r["problem"] == prob):
            rs = sorted((r for r in rows if r["problem"] == prob and r["method"] == method), key=lambda r: r["T"])
            ax.plot([r["T"] for r in rs], [max(r["temp_MiB"], 1e-3) for r in rs], "o-", label=method)
        ax.set(xscale="log", yscale="log", xlabel="sequence length T", ylabel="compiled temp memory (MiB)",
               title=prob)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
