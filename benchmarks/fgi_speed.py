"""Forward gradient injection (Otte 2024) vs custom_jvp: speed of a jitted training step.

For every surrogate of the catalogue, in both injections, one jitted SGD step
(gradient of a batch + parameter update) of a LIF layer with a leaky readout, with the
gradient from BPTT (`sparseprop.bptt_grad`, vmapped) and from the online exact learner
(`learner.run_batch`). Reports the median wall time of REPEATS runs after warm-up, the
compile time, and the size of the optimised HLO (instructions), and writes
benchmarks/results/fgi_speed.csv. Configurations are interleaved round-robin, so that
load on a shared machine hits all of them alike.

Run: python benchmarks/fgi_speed.py [--repeats 7] [--batch 16] [--steps 100] [--float64]
"""
import argparse
import csv
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp

import sparseprop as sp
from sparseprop import neurons, surrogates

N_IN, N_HIDDEN, N_OUT = 20, 64, 4
LR = 1e-3
OUT = os.path.join(os.path.dirname(__file__), "results", "fgi_speed.csv")


def loss_fn(y, target):
    return 0.5 * jnp.sum((y - target) ** 2)


def network(surrogate):
    return neurons.Sequential((neurons.LIF(surrogate=surrogate), neurons.LeakyIntegrator()))


def make_train_step(net, method):
    """A jitted `(params, state0, xs, targets) -> params`: batch-mean gradient, one SGD update."""
    if method == "bptt":
        per_example = sp.bptt_grad(net, loss_fn)

        def batch_grads(params, state0, xs, targets):
            _, grads = jax.vmap(per_example, in_axes=(None, 0, 1, 1))(params, state0, xs, targets)
            return jax.tree_util.tree_map(lambda g: jnp.sum(g, axis=0), grads)
    else:
        learner = sp.online_grad(net, loss_fn, method="exact")

        def batch_grads(params, state0, xs, targets):
            carry = learner.init_batch(params, state0, xs[0])
            return learner.run_batch(params, carry, xs, targets, time_major=True)[1].grads

    def train_step(params, state0, xs, targets):
        grads = batch_grads(params, state0, xs, targets)
        batch = xs.shape[1]
        return jax.tree_util.tree_map(lambda p, g: p - LR * g / batch, params, grads)
    return jax.jit(train_step)


def problem(batch, steps, dtype):
    k_params, k_x, k_t = jax.random.split(jax.random.PRNGKey(0), 3)
    sizes = (N_IN, N_HIDDEN, N_OUT)
    net = network(surrogates.FastSigmoid())
    params = net.init_params(k_params, sizes, dtype)
    state0 = jax.tree_util.tree_map(lambda s: jnp.broadcast_to(s, (batch,) + s.shape), net.init_state(sizes, dtype))
    xs = (jax.random.uniform(k_x, (steps, batch, N_IN)) < 0.2).astype(dtype)
    targets = jax.random.normal(k_t, (steps, batch, N_OUT), dtype)
    return params, state0, xs, targets


def hlo_size(compiled) -> int:
    return sum(1 for line in compiled.as_text().splitlines() if " = " in line)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--float64", action="store_true")
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args()
    if args.float64:
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.float64 if args.float64 else jnp.float32
    params, state0, xs, targets = problem(args.batch, args.steps, dtype)

    configs = []
    for name, cls in surrogates.CATALOGUE.items():
        for injection in surrogates.INJECTIONS:
            for method in ("bptt", "online_exact"):
                step = make_train_step(network(cls(injection=injection)), method)
                t0 = time.perf_counter()
                compiled = step.lower(params, state0, xs, targets).compile()
                compile_s = time.perf_counter() - t0
                jax.block_until_ready(compiled(params, state0, xs, targets))     # warm-up
                configs.append({"surrogate": name, "injection": injection, "method": method,
                                "fn": compiled, "times": [], "compile_s": compile_s,
                                "hlo_instructions": hlo_size(compiled)})
    for _ in range(args.repeats):          # round-robin: load hits every configuration alike
        for c in configs:
            t0 = time.perf_counter()
            jax.block_until_ready(c["fn"](params, state0, xs, targets))
            c["times"].append(time.perf_counter() - t0)

    device = f"{jax.devices()[0].platform}:{jax.devices()[0].device_kind}"
    rows = []
    for c in configs:
        rows.append({"surrogate": c["surrogate"], "injection": c["injection"], "method": c["method"],
                     "median_ms": 1e3 * statistics.median(c["times"]), "min_ms": 1e3 * min(c["times"]),
                     "compile_s": c["compile_s"], "hlo_instructions": c["hlo_instructions"],
                     "repeats": args.repeats, "batch": args.batch, "steps": args.steps,
                     "hidden": N_HIDDEN, "dtype": jnp.dtype(dtype).name, "device": device,
                     "jax": jax.__version__, "machine": platform.node()})
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    print(f"{device}, {jnp.dtype(dtype).name}, batch {args.batch}, T {args.steps}, "
          f"LIF {N_IN}->{N_HIDDEN} + readout {N_OUT}; median of {args.repeats} (ms)")
    by_key = {(r["surrogate"], r["method"], r["injection"]): r for r in rows}
    print(f"{'surrogate':12s} {'method':13s} {'custom_jvp':>10s} {'fgi':>10s} {'fgi/jvp':>8s} {'HLO jvp/fgi':>12s}")
    for name in surrogates.CATALOGUE:
        for method in ("bptt", "online_exact"):
            a, b = by_key[(name, method, "custom_jvp")], by_key[(name, method, "fgi")]
            print(f"{name:12s} {method:13s} {a['median_ms']:10.2f} {b['median_ms']:10.2f} "
                  f"{b['median_ms'] / a['median_ms']:8.2f} {a['hlo_instructions']:6d}/{b['hlo_instructions']:<5d}")
    for method in ("bptt", "online_exact"):
        ratios = [by_key[(name, method, "fgi")]["median_ms"] / by_key[(name, method, "custom_jvp")]["median_ms"]
                  for name in surrogates.CATALOGUE]
        print(f"{method}: fgi/custom_jvp geometric mean {statistics.geometric_mean(ratios):.2f} "
              f"(range {min(ratios):.2f}-{max(ratios):.2f})")
    print(f"wrote {os.path.normpath(args.out)}")


if __name__ == "__main__":
    main()
