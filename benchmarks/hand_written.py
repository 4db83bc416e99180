"""Hand-written lower bounds for one LIF layer, and the generated online programs timed against them.

`reference_programs(n, B)` holds four programs written by hand for the LIF layer with a
detached reset by subtraction (`lif_shared` / `lif_perneuron` of `sparseprop.bench`): the
forward pass alone, BPTT, and the exact online gradient derived by hand in two forms: a
factorised trace (shared scalar leak: the synaptic eligibility of w is (psi_t)_i (xbar_t)_l
with xbar_t = alpha xbar_{t-1} + x_t, O(B·m) memory) and a per-neuron eligibility
(per-neuron leak: e_t = alpha_i e_{t-1} + x_t, O(B·n·m)). They are what a generated online
program can hope to reach; `compare_reference` times them side by side with sparseprop's
generated program. `benchmarks/reference_ratio.py` runs it.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, Optional, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from sparseprop import online_grad, spike
from sparseprop.bench import make_grad_fn, make_problem, machine_label, mse_loss, relative_error, time_per_step, write_csv
from sparseprop.bench.problems import THRESHOLD
from sparseprop.bench.sweeps import _progress


def _psi(v):
    return 1 / (1 + 10 * jnp.abs(v)) ** 2


def _ref_step(params, v, x):
    # detached reset by subtraction: v' = alpha*v + W x - sg(z_prev); z from v'
    z_prev = lax.stop_gradient(spike(v - THRESHOLD))
    v = params["alpha"] * v + x @ params["w"].T - z_prev * THRESHOLD
    return v, spike(v - THRESHOLD)


def reference_programs(n: int, batch: int) -> Dict[str, Callable]:
    """The hand-written programs for one LIF layer of n neurons and batch B.

    **Arguments:**

    - `n`: neurons; `batch`: B (the programs carry a (B, n) potential).

    **Returns:**

    name -> function: `forward(params, xs)`, `bptt(params, xs, ts)`,
    `online_factorised(params, xs, ts)` (shared leak, trace O(B·m)) and
    `online_eligibility(params, xs, ts)` (per-neuron leak, trace O(B·n·m)); params is
    `{"w", "alpha", "alpha_vec"}` as below.
    """
    def forward(params, xs):
        def body(v, x):
            v, z = _ref_step(params, v, x)
            return v, jnp.sum(z)
        return lax.scan(body, jnp.zeros((batch, n), xs.dtype), xs)[1].sum()

    def bptt(params, xs, ts):
        def total(p):
            def body(v, xt):
                x, t = xt
                v, z = _ref_step(p, v, x)
                return v, mse_loss(z, t)
            return lax.scan(body, jnp.zeros((batch, n), xs.dtype), (xs, ts))[1].sum()
        return jax.grad(total)(params)

    def online_factorised(params, xs, ts):
        a = params["alpha"]

        def body(c, xt):
            v, xbar, g = c
            x, t = xt
            v, z = _ref_step(params, v, x)
            xbar = a * xbar + x
            sig = (z - t) * _psi(v - THRESHOLD)
            return (v, xbar, g + sig.T @ xbar), None
        m = xs.shape[-1]
        c0 = (jnp.zeros((batch, n), xs.dtype), jnp.zeros((batch, m), xs.dtype), jnp.zeros((n, m), xs.dtype))
        return lax.scan(body, c0, (xs, ts))[0][2]

    def online_eligibility(params, xs, ts):
        a = params["alpha_vec"]

        def body(c, xt):
            v, e, g = c
            x, t = xt
            v = a * v + x @ params["w"].T - lax.stop_gradient(spike(v - THRESHOLD)) * THRESHOLD
            z = spike(v - THRESHOLD)
            e = a[None, :, None] * e + x[:, None, :]
            sig = (z - t) * _psi(v - THRESHOLD)
            return (v, e, g + jnp.einsum("bi,bil->il", sig, e)), None
        m = xs.shape[-1]
        c0 = (jnp.zeros((batch, n), xs.dtype), jnp.zeros((batch, n, m), xs.dtype), jnp.zeros((n, m), xs.dtype))
        return lax.scan(body, c0, (xs, ts))[0][2]

    return {"forward": forward, "bptt": bptt, "online_factorised": online_factorised,
            "online_eligibility": online_eligibility}


def _lif_w_only(alpha):
    """The reference's LIF as a per-example sparseprop model whose only parameter is w
    (the leak `alpha`, scalar or per-neuron, is a constant), so that the generated program
    computes exactly what the hand-written online programs compute."""
    def model(params, state, x):
        v = state
        z_prev = lax.stop_gradient(spike(v - THRESHOLD))
        v = alpha * v + params["w"] @ x - z_prev * THRESHOLD
        return v, spike(v - THRESHOLD)
    return model


def compare_reference(n: int = 256, m: int = 256, batch: int = 16, steps: int = 1000, repeats: int = 5,
                      extra_models: Sequence[str] = ("alif", "lif_recurrent"), extra_n: int = 32,
                      csv_path: Optional[str] = None, verbose: bool = True) -> dict:
    """Hand-written reference programs and the generated online programs, timed side by side.

    All programs of one comparison are compiled, warmed up and timed round-robin in one
    process (`time_per_step`), so the ratios are measured under the same load. Reports the
    ratios:

    - `exact_vs_bptt_shared`: generated online exact (shared leak) / BPTT per step (target <= 1.2 on CPU);
    - `exact_vs_hand_factorised`: generated / hand-written factorised program (target <= 1.1);
    - `exact_vs_hand_eligibility`: generated per-neuron-leak / hand-written eligibility (target <= 1.1);
    - for `extra_models` (at n = `extra_n`, shared `m`, `batch`, `steps`): online exact and e-prop / BPTT.

    "Generated" is `learner.run_batch` (the batch sum folded into each step's contraction), on a model whose only parameter is w (as in the hand-written programs); BPTT is the
    hand-written `bptt` above (gradient w.r.t. w, alpha, alpha_vec).

    **Arguments:**

    - `n`, `m`, `batch`, `steps`: the size (defaults: the reference's 256, 256, 16, 1000).
    - `repeats`: timed rounds, median reported.
    - `extra_models`, `extra_n`: benchmark models also reported against BPTT (empty to skip).
    - `csv_path`: where to write the per-program rows (skipped if `None`).
    - `verbose`: print the table.

    **Returns:**

    `{"rows": [...], "ratios": {...}, "machine": str}`; each row has `program, model, n, m,
    batch, T, ms_per_step, temp_bytes, rel_err_vs_bptt`.
    """
    machine = machine_label()
    dt = jnp.float32
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    params = {"w": jax.random.normal(k1, (n, m), dt) * 0.3, "alpha": jnp.asarray(0.9, dt),
              "alpha_vec": jnp.full((n,), 0.9, dt)}
    xs = (jax.random.uniform(k2, (steps, batch, m)) < 0.1).astype(dt)
    ts = (jax.random.uniform(k3, (steps, batch, n)) < 0.05).astype(dt)
    hand = reference_programs(n, batch)

    def generated(alpha):
        learner = online_grad(_lif_w_only(alpha), mse_loss, method="exact")

        def f(params, xs, ts):
            p = {"w": params["w"]}
            v0 = jnp.zeros((batch, n), xs.dtype)
            carry = learner.init_batch(p, v0, xs[0])
            return learner.run_batch(p, carry, xs, ts, time_major=True)[1].grads["w"]
        return f

    fns = {"forward": (hand["forward"], (params, xs)),
           "bptt": (hand["bptt"], (params, xs, ts)),
           "hand_factorised": (hand["online_factorised"], (params, xs, ts)),
           "generated_shared": (generated(params["alpha"]), (params, xs, ts)),
           "hand_eligibility": (hand["online_eligibility"], (params, xs, ts)),
           "generated_perneuron": (generated(params["alpha_vec"]), (params, xs, ts))}
    # bptt of the per-neuron model (alpha_vec is the leak): the reference for eligibility errors
    params_pn = dict(params, alpha=params["alpha_vec"])
    fns["bptt_perneuron"] = (hand["bptt"], (params_pn, xs, ts))
    rows, results = [], {}
    compiled = {k: jax.jit(f).lower(*a).compile() for k, (f, a) in fns.items()}
    for k, c in compiled.items():
        results[k] = jax.block_until_ready(c(*fns[k][1]))
    times = {k: [] for k in fns}
    bar = _progress(repeats, "reference", verbose)
    for _ in range(repeats):
        for k, c in compiled.items():
            t0 = time.perf_counter()
            jax.block_until_ready(c(*fns[k][1]))
            times[k].append(time.perf_counter() - t0)
        bar.update(1)
    bar.close()
    ms = {k: statistics.median(v) / steps * 1e3 for k, v in times.items()}
    for k in fns:
        g = results[k]
        if k == "forward":
            err = ""
        else:
            ref = results["bptt_perneuron" if "perneuron" in k or "eligibility" in k else "bptt"]["w"]
            err = relative_error(g["w"] if isinstance(g, dict) else g, ref)
        model = "lif_perneuron" if ("perneuron" in k or "eligibility" in k) else "lif_shared"
        rows.append(dict(program=k, model=model, n=n, m=m, batch=batch, T=steps, ms_per_step=ms[k],
                         temp_bytes=int(compiled[k].memory_analysis().temp_size_in_bytes),
                         rel_err_vs_bptt=err, machine=machine))
    ratios = {"bptt_vs_forward": ms["bptt"] / ms["forward"],
              "hand_factorised_vs_bptt": ms["hand_factorised"] / ms["bptt"],
              "exact_vs_bptt_shared": ms["generated_shared"] / ms["bptt"],
              "exact_vs_hand_factorised": ms["generated_shared"] / ms["hand_factorised"],
              "hand_eligibility_vs_bptt": ms["hand_eligibility"] / ms["bptt_perneuron"],
              "exact_perneuron_vs_bptt": ms["generated_perneuron"] / ms["bptt_perneuron"],
              "exact_vs_hand_eligibility": ms["generated_perneuron"] / ms["hand_eligibility"]}
    for mo in extra_models:
        args = make_problem(mo, extra_n, m, batch, steps, dt)
        timed = time_per_step({me: make_grad_fn(me, mo) for me in ("bptt", "online_exact", "online_eprop")},
                              args, steps, repeats)
        for me, res in timed.items():
            rows.append(dict(program=me, model=mo, n=extra_n, m=m, batch=batch, T=steps,
                             ms_per_step=res["ms_per_step"],
                             temp_bytes=int(jax.jit(make_grad_fn(me, mo)).lower(*args).compile()
                                            .memory_analysis().temp_size_in_bytes),
                             rel_err_vs_bptt=relative_error(res["result"], timed["bptt"]["result"]),
                             machine=machine))
            if me != "bptt":
                ratios[f"{me.split('_')[1]}_vs_bptt_{mo}"] = res["ms_per_step"] / timed["bptt"]["ms_per_step"]
    if verbose:
        print(machine)
        print(f"{'program':22s} {'model':14s} {'n':>5s} {'ms/step':>9s} {'temp MiB':>9s} {'rel err':>9s}")
        for r in rows:
            e = r["rel_err_vs_bptt"]
            print(f"{r['program']:22s} {r['model']:14s} {r['n']:5d} {r['ms_per_step']:9.4f} "
                  f"{r['temp_bytes'] / 2 ** 20:9.2f} {e if e == '' else format(e, '9.1e')}")
        for k, v in ratios.items():
            print(f"  {k:34s} {v:6.2f}")
    if csv_path:
        write_csv(rows, csv_path)
    return {"rows": rows, "ratios": ratios, "machine": machine}
