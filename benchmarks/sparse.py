"""Sparse connectivity: e-prop with one trace per existing synapse against the dense forms.

Network: recurrent ALIF (per-neuron leak, detached reset) with a leaky readout (shared κ), m
inputs, n neurons, k = 10 readout units, input and recurrent synapses drawn independently with
probability `c` (no self-connections). The same network is written two ways:

- `sparse`: edge lists, `jax.ops.segment_sum(w * u[pre], post, n)` (weights: one per synapse);
- `dense`: full matrices that are zero off the connectivity (what a sparse network costs today
  without sparse synapses: traces B·n·(n+m)).

Programs, float32, batch B, time-major (T, B, ...), gradient summed over the batch in each step:
`sparse_eprop`, `dense_eprop` (sparseprop), `sparse_bptt`, `dense_bptt` (jax.value_and_grad of a
lax.scan), all of (params, states0, xs, targets) -> (loss, grads). Per program: ms per step
(round-robin timing, sparseprop.bench.timing), XLA's temp bytes (memory_analysis) and the trace
bytes per example from `explain()` (sparse: in units of nnz). Points too large for this machine
are skipped (a dense trace array of more than `--max-dense-gib`).

Writes `<out>/sparse.csv`, `<out>/sparse.png` and prints a markdown table.
Usage: python benchmarks/sparse.py [--quick] [--out DIR]
"""
from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

import sparseprop as sp
from sparseprop.bench.memory import temp_bytes
from sparseprop.bench.report import write_csv
from sparseprop.bench.timing import machine_label, time_per_step

HERE = os.path.dirname(os.path.abspath(__file__))
THR, BETA, RHO, KAPPA, K = 1.0, 1.7, 0.96, 0.8, 10
sg = jax.lax.stop_gradient
SPIKE = sp.surrogates.Triangle(scale=0.3)

GRID = [(256, 0.01), (256, 0.1), (256, 1.0), (1024, 0.01), (1024, 0.1), (1024, 1.0),
        (4096, 0.01), (4096, 0.1), (16384, 0.01)]
QUICK = [(64, 0.1), (64, 1.0)]


def mse(y, t):
    return jnp.sum((y - t) ** 2)


def draw(n, m, c, seed=0):
    """Input and recurrent edge lists (post, pre) at connectivity `c`, without self-connections."""
    rng = np.random.default_rng(seed)

    def edges(rows, cols, no_self):
        count = rng.binomial(rows * cols, c)
        flat = rng.choice(rows * cols, size=count, replace=False)
        post, pre = np.divmod(flat, cols)
        keep = pre != post if no_self else np.ones_like(pre, bool)
        return post[keep].astype(np.int32), pre[keep].astype(np.int32)
    return edges(n, m, False), edges(n, n, True)


def sparse_model(n, edges_in, edges_rec, alpha):
    (post_in, pre_in), (post_rec, pre_rec) = [tuple(map(jnp.asarray, e)) for e in (edges_in, edges_rec)]

    def model(p, s, x):
        v, a, z, y = s
        a = RHO * a + z
        i = jax.ops.segment_sum(p["w_in"] * x[pre_in], post_in, num_segments=n)
        i = i + jax.ops.segment_sum(p["w_rec"] * z[pre_rec], post_rec, num_segments=n)
        v = alpha * v + i - sg(z) * THR
        z = SPIKE((v - THR - BETA * a) / THR)
        y = KAPPA * y + p["w_out"] @ z
        return (v, a, z, y), y
    return model


def dense_model(alpha):
    def model(p, s, x):
        v, a, z, y = s
        a = RHO * a + z
        v = alpha * v + p["w_in"] @ x + p["w_rec"] @ z - sg(z) * THR
        z = SPIKE((v - THR - BETA * a) / THR)
        y = KAPPA * y + p["w_out"] @ z
        return (v, a, z, y), y
    return model


def problem(n, m, c, batch, steps, seed=0):
    """Both forms of one network with the same weights, and a batch of inputs that make it spike."""
    edges_in, edges_rec = draw(n, m, c, seed)
    keys = jax.random.split(jax.random.PRNGKey(seed), 5)
    w_in = np.asarray(jax.random.normal(keys[0], (edges_in[0].size,))) * 1.5 / np.sqrt(max(m * c * 0.1, 1e-3))
    w_rec = np.asarray(jax.random.normal(keys[1], (edges_rec[0].size,))) * 0.6 / np.sqrt(max(n * c / 9, 1e-3))
    w_out = jax.random.normal(keys[2], (K, n)) / np.sqrt(n / 9)
    alpha = jnp.linspace(0.82, 0.95, n)
    sparse_params = {"w_in": jnp.asarray(w_in, jnp.float32), "w_rec": jnp.asarray(w_rec, jnp.float32),
                     "w_out": w_out.astype(jnp.float32)}
    dense = {"w_in": np.zeros((n, m), np.float32), "w_rec": np.zeros((n, n), np.float32)}
    dense["w_in"][edges_in] = w_in
    dense["w_rec"][edges_rec] = w_rec
    dense_params = {"w_in": jnp.asarray(dense["w_in"]), "w_rec": jnp.asarray(dense["w_rec"]),
                    "w_out": sparse_params["w_out"]}
    xs = (jax.random.uniform(keys[3], (steps, batch, m)) < 0.1).astype(jnp.float32)
    targets = jax.random.normal(keys[4], (steps, batch, K), jnp.float32)
    states0 = tuple(jnp.zeros((batch, size), jnp.float32) for size in (n, n, n, K))
    return dict(sparse=(sparse_model(n, edges_in, edges_rec, alpha), sparse_params),
                dense=(dense_model(alpha), dense_params), xs=xs, targets=targets, states0=states0,
                nnz=int(edges_in[0].size + edges_rec[0].size))


def eprop_fn(model):
    learner = sp.online_grad(model, mse, method="eprop")

    def run(params, states0, xs, targets):
        carry = learner.init_batch(params, states0, xs[0])
        _, total = learner.run_batch(params, carry, xs, targets, time_major=True)
        return total.loss, total.grads
    return run, learner


def bptt_fn(model):
    batched = jax.vmap(model, in_axes=(None, 0, 0))

    def total(params, states0, xs, targets):
        def body(s, inp):
            s, y = batched(params, s, inp[0])
            return s, jnp.sum(jax.vmap(mse)(y, inp[1]))
        return jnp.sum(jax.lax.scan(body, states0, (xs, targets))[1])
    return jax.value_and_grad(total)


def measure(n, m, c, batch, steps, repeats, max_dense_gib):
    prob = problem(n, m, c, batch, steps)
    args = (prob["states0"], prob["xs"], prob["targets"])
    one = tuple(s[0] for s in prob["states0"])
    rows = []
    dense_fits = batch * n * (n + m) * 4 / 2**30 <= max_dense_gib
    fns, params = {}, {}
    for form in ("sparse", "dense"):
        if form == "dense" and not dense_fits:
            continue
        model, p = prob[form]
        run, learner = eprop_fn(model)
        fns[f"{form}_eprop"], params[f"{form}_eprop"] = run, p
        fns[f"{form}_bptt"], params[f"{form}_bptt"] = bptt_fn(model), p
        report = learner.explain(p, one, prob["xs"][0, 0], print_report=False)
        for name in (f"{form}_eprop",):
            params[name + "_trace_bytes"] = report.trace_bytes
    timed = time_per_step({name: (lambda *a, f=f, p=params[name]: f(p, *a)) for name, f in fns.items()},
                          args, steps, repeats)
    for name, f in fns.items():
        mem = temp_bytes(lambda *a, f=f, p=params[name]: f(p, *a), *args)
        rows.append(dict(program=name, n=n, m=m, connectivity=c, nnz=prob["nnz"], batch=batch, T=steps,
                         ms_per_step=timed[name]["ms_per_step"], ms_per_step_min=timed[name]["ms_per_step_min"],
                         temp_bytes=mem["temp_bytes"], trace_bytes_per_example=params.get(name + "_trace_bytes", ""),
                         machine=machine_label()))
    sparse_loss = float(timed["sparse_eprop"]["result"][0])
    if "dense_eprop" in timed:   # the same network: the same loss, and the same gradient on the synapses
        dense_loss = float(timed["dense_eprop"]["result"][0])
        assert abs(sparse_loss - dense_loss) <= 1e-3 * abs(dense_loss), (sparse_loss, dense_loss)
    return rows


def table(rows) -> str:
    by = {}
    for r in rows:
        by.setdefault((r["n"], r["connectivity"]), {})[r["program"]] = r
    lines = ["| n | c | nnz | sparse eprop ms/step | dense eprop ms/step | sparse/dense time | sparse/dense temp | "
             "sparse trace bytes / nnz | sparse bptt ms/step |", "|---|---|---|---|---|---|---|---|---|"]
    for (n, c), progs in sorted(by.items()):
        s, d, b = progs["sparse_eprop"], progs.get("dense_eprop"), progs["sparse_bptt"]
        ratio_t = f"{s['ms_per_step'] / d['ms_per_step']:.3f}" if d else "—"
        ratio_m = f"{s['temp_bytes'] / max(d['temp_bytes'], 1):.3f}" if d else "—"
        lines.append(f"| {n} | {c:g} | {s['nnz']} | {s['ms_per_step']:.2f} | "
                     f"{d['ms_per_step']:.2f} | " if d else f"| {n} | {c:g} | {s['nnz']} | {s['ms_per_step']:.2f} | — | ")
        lines[-1] += f"{ratio_t} | {ratio_m} | {s['trace_bytes_per_example'] / s['nnz']:.1f} | {b['ms_per_step']:.2f} |"
    return "\n".join(lines)


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for program, style in (("sparse_eprop", "o-"), ("dense_eprop", "s--"), ("sparse_bptt", "^:")):
        for c in sorted({r["connectivity"] for r in rows}):
            pts = sorted((r["n"], r["ms_per_step"], r["temp_bytes"]) for r in rows
                         if r["program"] == program and r["connectivity"] == c)
            if pts:
                ns, ms, mem = zip(*pts)
                axes[0].plot(ns, ms, style, label=f"{program}, c={c:g}")
                axes[1].plot(ns, np.asarray(mem) / 2**20, style, label=f"{program}, c={c:g}")
    for ax, label in zip(axes, ("ms per step", "XLA temp memory (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("neurons n")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"recurrent ALIF + leaky readout, m={rows[0]['m']}, B={rows[0]['batch']}, float32\n"
                 f"{rows[0]['machine']}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--m", type=int, default=700)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-dense-gib", type=float, default=1.0)
    args = ap.parse_args(argv)
    grid, m = (QUICK, 20) if args.quick else (GRID, args.m)
    rows = []
    for n, c in grid:
        print(f"n={n} c={c}", file=sys.stderr, flush=True)
        rows += measure(n, m, c, args.batch if not args.quick else 2, args.steps, args.repeats, args.max_dense_gib)
        write_csv(rows, os.path.join(args.out, "sparse.csv"))
    plot(rows, os.path.join(args.out, "sparse.png"))
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
