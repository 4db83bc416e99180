"""Cosine to BPTT of every approximate method on a catalogue of mixing models (float64).

For each model and method: cosine similarity and max relative error of the summed online
gradient against jax.grad of a lax.scan unroll, whether the method claims exactness, and
the trace bytes per example. Writes benchmarks/results/method_cosines.csv and prints a
markdown table (used in docs/exact_vs_eprop.md).

Usage: python benchmarks/method_cosines.py [--T 100] [--n 32]
"""
import argparse
import csv
import os

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import sparseprop as sp  # noqa: E402
from sparseprop import neurons  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
METHODS = ("eprop", "ostl", "snap1")
sg = jax.lax.stop_gradient


def loss_fn(y, target):
    return 0.5 * jnp.sum((y - target) ** 2)


def recurrent_lif(n, m, k, key):
    net = neurons.Sequential((neurons.LIF(recurrent=True), neurons.LeakyIntegrator()))
    return net, net.init_params(key, (m, n, k)), net.init_state((m, n, k))


def recurrent_alif_leaky_readout(n, m, k, key):
    """Bellec's LSNN: recurrent ALIF, detached reset, spikes in the state, leaky readout (shared κ)."""
    keys = jax.random.split(key, 3)

    def model(p, s, x):
        v, a, z, y = s
        a = 0.96 * a + z
        threshold = 1.0 + 1.7 * a
        v = p["alpha"] * v + p["w_in"] @ x + p["w_rec"] @ z - sg(z)
        z = sp.spike(v - threshold, sp.surrogates.Triangle(scale=0.3))
        y = p["kappa"] * y + p["w_out"] @ z
        return (v, a, z, y), y
    params = {"alpha": jnp.linspace(0.85, 0.95, n), "w_in": jax.random.normal(keys[0], (n, m)) * 3 / m ** 0.5,
              "w_rec": jax.random.normal(keys[1], (n, n)) * (1 - jnp.eye(n)) / n ** 0.5,
              "w_out": jax.random.normal(keys[2], (k, n)) / n ** 0.5, "kappa": jnp.array(0.8)}
    return model, params, (jnp.zeros(n),) * 3 + (jnp.zeros(k),)


def two_layers(n, m, k, key):
    net = neurons.Sequential((neurons.LIF(), neurons.LIF(), neurons.LeakyIntegrator()))
    return net, net.init_params(key, (m, n, n, k)), net.init_state((m, n, n, k))


def global_inhibition(n, m, k, key):
    keys = jax.random.split(key, 2)

    def model(p, s, x):
        v, z = s
        v = 0.9 * v + p["w_in"] @ x - p["g"] * jnp.mean(z) - sg(z)
        z = sp.spike(v - 1.0)
        return (v, z), p["w_out"] @ z
    params = {"w_in": jax.random.normal(keys[0], (n, m)) * 3 / m ** 0.5, "g": jnp.array(2.0),
              "w_out": jax.random.normal(keys[1], (k, n)) / n ** 0.5}
    return model, params, (jnp.zeros(n), jnp.zeros(n))


def gru(n, m, k, key):
    net = neurons.Sequential((neurons.GRUCell(), neurons.LeakyIntegrator()))
    return net, net.init_params(key, (m, n, k)), net.init_state((m, n, k))


MODELS = {"recurrent LIF + leaky readout": recurrent_lif,
          "recurrent ALIF + leaky readout (LSNN)": recurrent_alif_leaky_readout,
          "two LIF layers + leaky readout": two_layers,
          "LIF with global inhibition": global_inhibition,
          "GRU + leaky readout": gru}


def cosine(a, b):
    a, b = (np.concatenate([np.ravel(v) for v in jax.tree_util.tree_leaves(t)]) for t in (a, b))
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def max_relative_error(a, b):
    a, b = (np.concatenate([np.ravel(v) for v in jax.tree_util.tree_leaves(t)]) for t in (a, b))
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--T", type=int, default=100)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    a = ap.parse_args(argv)
    m, k = 12, 4
    rows = []
    for name, build in MODELS.items():
        keys = jax.random.split(jax.random.PRNGKey(0), 3)
        model, params, state0 = build(a.n, m, k, keys[0])
        xs = (jax.random.uniform(keys[1], (a.T, m)) < 0.3).astype(jnp.float64)
        targets = jax.random.normal(keys[2], (a.T, k))
        loss, bptt = sp.bptt_grad(model, loss_fn)(params, state0, xs, targets)
        for method in ("exact",) + METHODS:
            learner = sp.online_grad(model, loss_fn, method=method)
            _, total = jax.jit(learner.run)(params, learner.init(params, state0, xs[0]), xs, targets)
            report = learner.explain(params, state0, xs[0], print_report=False)
            rows.append(dict(model=name, method=method, exact=report.exact, cosine=cosine(total.grads, bptt),
                             max_rel_error=max_relative_error(total.grads, bptt),
                             trace_KiB=report.trace_bytes / 1024, n=a.n, m=m, k=k, T=a.T))
            print(f"{name:40s} {method:6s} cos {rows[-1]['cosine']:.4f}  err {rows[-1]['max_rel_error']:.1e}  "
                  f"{rows[-1]['trace_KiB']:.1f} KiB")
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "method_cosines.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"\n| model (n={a.n}, m={m}, k={k}, T={a.T}, float64) | " + " | ".join(("exact",) + METHODS) + " |")
    print("|---|" + "---|" * (len(METHODS) + 1))
    for name in MODELS:
        cells = []
        for method in ("exact",) + METHODS:
            r = next(r for r in rows if r["model"] == name and r["method"] == method)
            cells.append(f"{r['cosine']:.4f}{' (exact)' if r['exact'] else ''}, {r['trace_KiB']:.1f} KiB")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
