"""Speed of sparseprop's e-prop against BPTT and a hand-written Bellec e-prop, side by side.

Per network (recurrent LIF with shared leak; recurrent ALIF + leaky readout) and size, three
jitted programs of the same (params, states0, xs, targets) -> (loss, grads), float32,
gradients summed over the batch inside each step:

- `bptt`: `jax.value_and_grad` of a `lax.scan` (the full gradient);
- `eprop`: sparseprop's generated program, `online_grad(model, mse, "eprop").run_batch`;
- `hand`: the hand-written e-prop of `eprop_reference.py` (for ALIF in several trace
  layouts, `hand_<variant>` of `VARIANTS`; ratios use the fastest of them per repetition).

All programs of one point are compiled first, then timed round-robin (a warm-up call each,
then `--repeats` rounds, median per program), and the whole round-robin is done twice
(`--reps`) to show the spread on a shared machine. Also the SHD configuration (700 inputs
-> recurrent ALIF, leaky readout of 20 classes, T = 100) at one large size: ms/step, XLA's
compiled temp bytes and the peak RSS of a child process running the program once.

Writes `<out>/eprop_speed.csv`, `eprop_speed_ratios.csv`, `eprop_shd.csv`, `eprop_hlo.csv`,
`eprop_speed.png` (default `benchmarks/results/`) and the markdown table `--docs` (default
`docs/eprop_benchmarks.md`); `--quick` writes to `out/bench-quick/` instead.
Usage: python benchmarks/eprop_speed.py [--quick] [--shd N B] [--hlo]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import subprocess
import sys
import time

import jax
import jax.numpy as jnp

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import eprop_reference as ref  # noqa: E402
from sparseprop.bench.timing import time_compiled  # noqa: E402

SIZES = ((128, 128), (256, 128), (512, 128), (256, 700))      # (n, m)
QUICK_SIZES = ((32, 16),)


#: hand-written ALIF variants: name -> (layout of the per-synapse arrays, how the batch sum is formed)
VARIANTS = {"nf": ("neuron_first", "dot"), "nb": ("neuron_batch", "dot"), "bf": ("batch_first", "dot"),
            "nf_sum": ("neuron_first", "reduce"), "nb_sum": ("neuron_batch", "reduce"),
            "bf_sum": ("batch_first", "reduce")}
TIMED_VARIANTS = ("nb", "bf")


def programs(network: str, problem: dict, variants=TIMED_VARIANTS) -> dict:
    """name -> un-jitted function of (params, states0, xs, targets)."""
    fns = {"bptt": ref.bptt_fn(problem["model"]), "eprop": ref.sparseprop_fn(problem["model"], "eprop")}
    if network == "lif":
        fns["hand"] = ref.hand_written_fn("lif", problem["consts"])
    else:
        for v in variants:
            fns["hand_" + v] = ref.hand_written_fn("alif", problem["consts"], *VARIANTS[v])
    return fns


def _args(problem):
    return problem["params"], problem["states0"], problem["xs"], problem["targets"]


def max_rel(a, b) -> float:
    """max over leaves of max|a − b| / max|b|."""
    return max(float(jnp.max(jnp.abs(x - y)) / jnp.max(jnp.abs(y)))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def spike_rate(problem) -> float:
    model = jax.vmap(problem["model"], in_axes=(None, 0, 0))
    z_index = 1 if len(problem["states0"]) == 2 else 2

    def body(s, x):
        s, _ = model(problem["params"], s, x)
        return s, jnp.mean(s[z_index])
    return float(jnp.mean(jax.jit(lambda: jax.lax.scan(body, problem["states0"], problem["xs"])[1])()))


def measure_point(network, n, m, k, batch, steps, repeats, reps, variants=TIMED_VARIANTS) -> list:
    """Rows (one per repetition and program) for one network and size."""
    problem = ref.make_problem(network, n, m, k, batch, steps)
    args = _args(problem)
    compiled = {name: jax.jit(f).lower(*args).compile() for name, f in programs(network, problem, variants).items()}
    results = {name: c(*args) for name, c in compiled.items()}
    hands = [name for name in compiled if name.startswith("hand")]
    err = max(max_rel(results["eprop"][1], results[h][1]) for h in hands)
    rate = spike_rate(problem)
    rows = []
    for rep in range(reps):
        timing = time_compiled(compiled, args, steps, repeats)
        for name, t in timing.items():
            med, best = t["ms_per_step"], t["ms_per_step_min"]
            rows.append(dict(network=network, n=n, m=m, k=k, batch=batch, T=steps, rep=rep, repeats=repeats, program=name,
                             ms_per_step=round(med, 4), ms_per_step_min=round(best, 4),
                             eprop_vs_hand_relerr_f32=f"{err:.1e}", spike_rate=round(rate, 3)))
        print(f"  {network} n={n} m={m} rep {rep}: " + "  ".join(f"{k_}={v['ms_per_step']:.3f}" for k_, v in timing.items()),
              flush=True)
    return rows


def ratios(rows) -> list:
    """Per network, size and repetition: eprop / hand (fastest hand-written layout), eprop / BPTT."""
    out, groups = [], {}
    for r in rows:
        groups.setdefault((r["network"], r["n"], r["m"], r["rep"]), {})[r["program"]] = r["ms_per_step"]
    for (network, n, m, rep), t in groups.items():
        hands = {name: v for name, v in t.items() if name.startswith("hand")}
        best = min(hands, key=hands.get)
        out.append(dict(network=network, n=n, m=m, rep=rep, bptt=t["bptt"], eprop=t["eprop"],
                        hand=hands[best], hand_layout=best, eprop_over_hand=t["eprop"] / hands[best],
                        eprop_over_bptt=t["eprop"] / t["bptt"], hand_over_bptt=hands[best] / t["bptt"],
                        **{name: v for name, v in hands.items() if name != "hand"}))
    return out


# ---------------------------------------------------------------------------------------
# SHD configuration: speed and memory
# ---------------------------------------------------------------------------------------

def _rss_child(spec: dict) -> dict:
    """In a fresh process: build, compile and run one program once; report peak RSS."""
    cmd = [sys.executable, os.path.abspath(__file__), "--rss-child", json.dumps(spec)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        return {"peak_rss_mb": None, "error": out.stderr[-500:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def rss_child_main(spec: dict) -> None:
    problem = ref.make_problem("alif", spec["n"], 700, 20, spec["batch"], spec["T"])
    fn = programs("alif", problem, variants=(spec["variant"],))[spec["program"]]
    jax.block_until_ready(jax.jit(fn)(*_args(problem)))
    # VmHWM, not getrusage's maxrss: after fork + exec the latter keeps the parent's peak
    with open("/proc/self/status") as f:
        hwm_kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    print(json.dumps({"peak_rss_mb": hwm_kb / 1024}))


def measure_shd(n, batch, steps, repeats, reps, rss=True, variant="nb", run=True) -> list:
    """The SHD configuration (m = 700, k = 20, ALIF + leaky readout): ms/step, temp bytes, peak RSS.
    With `run=False` only compiled (temp bytes, no timing)."""
    problem = ref.make_problem("alif", n, 700, 20, batch, steps)
    args = _args(problem)
    fns = programs("alif", problem, variants=(variant,))
    compiled, memory = {}, {}
    for name, f in fns.items():
        t0 = time.perf_counter()
        compiled[name] = jax.jit(f).lower(*args).compile()
        ma = compiled[name].memory_analysis()
        memory[name] = dict(temp_mb=ma.temp_size_in_bytes / 2 ** 20, compile_s=time.perf_counter() - t0)
    timings = [time_compiled(compiled, args, steps, repeats) for _ in range(reps)] if run else []
    rows = []
    for name in fns:
        peak = _rss_child(dict(n=n, batch=batch, T=steps, program=name, variant=variant)) if rss and run \
            else {"peak_rss_mb": None}
        rows.append(dict(network="alif", n=n, m=700, k=20, batch=batch, T=steps, program=name,
                         **{f"ms_per_step_rep{i}": round(t[name]["ms_per_step"], 3) for i, t in enumerate(timings)},
                         temp_mb=round(memory[name]["temp_mb"], 1), peak_rss_mb=peak["peak_rss_mb"] and
                         round(peak["peak_rss_mb"], 1), compile_s=round(memory[name]["compile_s"], 1)))
        print(f"  SHD {rows[-1]}", flush=True)
    return rows


# ---------------------------------------------------------------------------------------
# HLO: what a loop body does
# ---------------------------------------------------------------------------------------

def loop_body_ops(fn, args) -> dict:
    """Count the top-level operations of the (largest) while-loop body in the optimised HLO of
    `fn`: dots (plain `dot` plus XLA:CPU's custom dot fusions), loop fusions, copies, transposes."""
    text = jax.jit(fn).lower(*args).compile().as_text()
    computations = dict(re.findall(r"^(?:ENTRY )?(%[\w.\-]+) .*?\{\n(.*?)\n\}", text, re.S | re.M))
    bodies = re.findall(r"while\(.*?body=(%[\w.\-]+)", text)
    name = max(bodies, key=lambda b: len(computations[b]))
    lines = computations[name].splitlines()
    opcode = lambda line: (re.search(r"= (?:\([^=]*?\)|\S+) ([\w\-]+)\(", line) or [None, None])[1]
    ops = [(opcode(line), line) for line in lines]
    custom = sum(op == "fusion" and "kind=kCustom" in line for op, line in ops)
    return dict(body=name, dot=sum(op == "dot" for op, _ in ops) + custom,
                fusion=sum(op == "fusion" for op, _ in ops) - custom,
                copy=sum(op == "copy" for op, _ in ops), transpose=sum(op == "transpose" for op, _ in ops),
                instructions=len(lines))


def trace_floats_per_example(network: str, problem: dict) -> dict:
    """Floats of eligibility state carried per example: sparseprop's blocks vs the hand-written program."""
    import sparseprop as sp
    learner = sp.online_grad(problem["model"], ref.mse, method="eprop")
    one = lambda tree: jax.tree_util.tree_map(lambda v: v[0], tree)
    prog = learner.plan(problem["params"], one(problem["states0"]), problem["xs"][0, 0])
    eprop = sum(int(jnp.prod(jnp.array(b.shape))) for b in prog.blocks)
    n, m = problem["params"]["w_in"].shape
    hand = (n + m) if network == "lif" else 3 * n * (n + m)
    return {"eprop": eprop, "hand": hand}


# ---------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------

def write_csv(rows, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def read_csv(path) -> list:
    """Rows of a CSV written by `write_csv`, numbers converted back ([] if the file is missing)."""
    if not os.path.exists(path):
        return []

    def value(v):
        for cast in (int, float):
            try:
                return cast(v)
            except ValueError:
                pass
        return None if v == "" else v
    with open(path) as f:
        return [{k: (v if k == "eprop_vs_hand_relerr_f32" else value(v)) for k, v in r.items()}
                for r in csv.DictReader(f)]


def plot(ratio_rows, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, network in zip(axes, ("lif", "alif")):
        rows = [r for r in ratio_rows if r["network"] == network]
        points = sorted({(r["n"], r["m"]) for r in rows})
        labels = [f"n={n}\nm={m}" for n, m in points]
        for key, color in (("eprop_over_hand", "C0"), ("eprop_over_bptt", "C1"), ("hand_over_bptt", "C2")):
            for rep, marker in ((0, "o"), (1, "s")):
                ys = [next((r[key] for r in rows if (r["n"], r["m"]) == p and r["rep"] == rep), float("nan"))
                      for p in points]
                ax.plot(range(len(points)), ys, marker=marker, color=color, linestyle="-" if rep == 0 else ":",
                        label=f"{key.replace('_over_', ' / ')} (rep {rep})")
        ax.axhline(1.0, color="k", lw=0.6)
        ax.axhline(1.1, color="C0", lw=0.6, ls="--")
        ax.set_xticks(range(len(points)), labels)
        ax.set_title({"lif": "recurrent LIF, shared leak, plain readout",
                      "alif": "recurrent ALIF + leaky readout"}[network], fontsize=10)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("ratio of ms per step")
    axes[1].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine() -> str:
    return f"{os.cpu_count()} CPU cores ({platform.machine()}), jax {jax.__version__} {jax.default_backend()}"


def markdown(rows, ratio_rows, shd_rows, hlo_rows, cfg) -> str:
    lines = ["# e-prop speed: generated vs hand-written vs BPTT", "",
             f"Machine: {machine()}, shared with other jobs while measuring, so absolute times vary "
             "between runs: compare the ratios, which come from programs timed round-robin in one "
             "process, and the spread of the two repetitions (rep 0 / rep 1). float32, "
             f"B = {cfg['batch']}, T = {cfg['T']}, k = {cfg['k']} readout units; median of "
             "at least 5 timed calls after a warm-up (the count is given per network), per repetition. Generated by "
             "`python benchmarks/eprop_speed.py` (programs in `benchmarks/eprop_reference.py`; CSVs and "
             "the figure `eprop_speed.png` in `benchmarks/results/`; `--quick` for a smoke run). The "
             "hand-written programs equal sparseprop's e-prop to 1e-9 in float64 "
             "(`tests/test_eprop_reference.py`); the column *f32 rel. err* is the same comparison in float32.",
             "",
             "Every network: recurrent weights without self-connections, reset by subtraction with the spike "
             "detached, spike H((v − threshold) / v_th) with Bellec's pseudo-derivative "
             "0.3 · max(0, 1 − |·|), input Bernoulli spikes (rate 0.1), loss Σ_k (y − y*)² per step. "
             "Parameters learned: w_in, w_rec, w_out, b_out (leaks fixed). ALIF: ρ = 0.96, β = 1.7, "
             "α_j from 0.82 to 0.95, κ = 0.8; LIF: α = 0.9.", "",
             "- **bptt**: `jax.value_and_grad` of a `lax.scan` over the batched model (the full gradient).",
             "- **eprop**: sparseprop, `online_grad(model, mse, method=\"eprop\").run_batch` (jitted).",
             "- **hand**: a hand-written batched Bellec e-prop (LIF: factorised presynaptic traces, one "
             "matmul per weight and step; ALIF: ε^v, ε^a, ē per synapse stored neuron-first `nf` (n, pre, B), "
             "`nb` (n, B, pre) or batch-first `bf` (B, n, pre), batch sum as a batched dot or, `_sum`, "
             "multiply-and-reduce; the ratio uses the fastest variant of that repetition).", ""]
    for network, title in (("lif", "Recurrent LIF, shared leak, detached reset, plain readout"),
                           ("alif", "Recurrent ALIF (per-neuron leak) + leaky readout (shared κ)")):
        counts = sorted({r.get("repeats") or 5 for r in rows if r["network"] == network})
        lines += [f"## {title}", "", f"Median of {' or '.join(map(str, counts))} timed calls per program and repetition.", "",
                  "| n | m | BPTT ms/step | eprop ms/step | hand ms/step | eprop / hand | eprop / BPTT "
                  "| hand / BPTT | f32 rel. err eprop vs hand | spike rate |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for n, m in sorted({(r["n"], r["m"]) for r in ratio_rows if r["network"] == network}):
            rr = sorted((r for r in ratio_rows if (r["network"], r["n"], r["m"]) == (network, n, m)),
                        key=lambda r: r["rep"])
            extra = next(r for r in rows if (r["network"], r["n"], r["m"]) == (network, n, m))
            fmt = lambda key, f="{:.3f}": " / ".join(f.format(r[key]) for r in rr)
            hand = " / ".join(f"{r['hand']:.3f}" + (f" ({r['hand_layout'][5:]})" if network == "alif" else "")
                              for r in rr)
            lines.append(f"| {n} | {m} | {fmt('bptt')} | {fmt('eprop')} | {hand} | "
                         f"{fmt('eprop_over_hand', '{:.2f}')} | {fmt('eprop_over_bptt', '{:.2f}')} | "
                         f"{fmt('hand_over_bptt', '{:.2f}')} | {extra['eprop_vs_hand_relerr_f32']} | "
                         f"{extra['spike_rate']} |")
        if network == "alif":
            lay = [r for r in ratio_rows if r["network"] == "alif"]
            names = sorted({r["program"] for r in rows if r["network"] == "alif" and r["program"].startswith("hand_")})
            if len(names) > 1:
                lines += ["", "Hand-written ALIF variants, ms/step (rep 0 / rep 1): " + "; ".join(
                    f"n={n} m={m}: " + ", ".join(
                        name[5:] + " " + " / ".join(f"{r[name]:.3f}" for r in lay if (r['n'], r['m']) == (n, m)
                                                    and r.get(name) is not None)
                        for name in names)
                    for n, m in sorted({(r['n'], r['m']) for r in lay})) + "."]
        lines.append("")
    if shd_rows:
        s = shd_rows[0]
        lines += ["## SHD configuration", "",
                  f"700 inputs -> recurrent ALIF (per-neuron leak) -> leaky readout of 20 classes, T = {s['T']}, "
                  "float32. Temp = XLA's compiled temp bytes (`memory_analysis().temp_size_in_bytes`, "
                  "arguments excluded); peak RSS = a fresh process that builds, compiles and runs the program "
                  "once (jax itself included). Rows without times were only compiled.", "",
                  "| n | B | program | ms/step (rep 0 / rep 1) | temp MB | peak RSS MB | compile s |",
                  "|---|---|---|---|---|---|---|"]
        for r in shd_rows:
            reps = " / ".join(str(r[k_]) for k_ in r if k_.startswith("ms_per_step_rep") and r[k_] is not None)
            lines.append(f"| {r['n']} | {r['batch']} | {r['program']} | {reps or 'compiled only'} | {r['temp_mb']} | "
                         f"{r['peak_rss_mb'] if r['peak_rss_mb'] is not None else '-'} | {r['compile_s']} |")
        lines.append("")
    if hlo_rows:
        lines += ["## Loop body of the optimised HLO", "",
                  "Top-level instructions of the scan's while-body (`jax.jit(f).lower(...).compile().as_text()`).", "",
                  "Trace floats: eligibility state carried per example (sparseprop: its trace blocks; BPTT: none, "
                  "it stores the T states instead).", "",
                  "| network | n | m | program | dot | fusion | copy | transpose | instructions | trace floats / example |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in hlo_rows:
            lines.append(f"| {r['network']} | {r['n']} | {r['m']} | {r['program']} | {r['dot']} | {r['fusion']} | "
                         f"{r['copy']} | {r['transpose']} | {r['instructions']} | {r.get('trace_floats_per_example') or '-'} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, B=4, T=20 (a smoke run, < 30 s)")
    ap.add_argument("--networks", nargs="+", default=["lif", "alif"], choices=["lif", "alif"],
                    help="(the other networks are in benchmarks/grid.py)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--variants", nargs="+", default=list(TIMED_VARIANTS), choices=list(VARIANTS),
                    help="hand-written ALIF variants to time")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--shd", nargs=2, type=int, default=None, metavar=("N", "B"),
                    help="SHD configuration size (default 512 16; 0 0 to skip)")
    ap.add_argument("--shd-repeats", type=int, default=3)
    ap.add_argument("--shd-reps", type=int, default=2)
    ap.add_argument("--shd-variant", default="nb", choices=list(VARIANTS), help="hand-written ALIF variant")
    ap.add_argument("--shd-compile", nargs=2, type=int, default=None, metavar=("N", "B"),
                    help="also compile (no run) the SHD configuration at this size: temp bytes only")
    ap.add_argument("--hlo", action="store_true", help="count loop-body ops of eprop and hand (m=128, n=256)")
    ap.add_argument("--out", default=None, help="CSV/PNG folder; default: benchmarks/results "
                                                 "(out/bench-quick with --quick)")
    ap.add_argument("--docs", default=None, help="markdown table; default: docs/eprop_benchmarks.md "
                                                 "(out/bench-quick/eprop_benchmarks.md with --quick)")
    ap.add_argument("--shd-rss", nargs=2, type=int, default=None, metavar=("N", "B"),
                    help="only (re)measure the peak RSS of the timed SHD rows of this size in the CSV")
    ap.add_argument("--skip-grid", action="store_true", help="only the SHD / HLO parts (table from existing CSVs)")
    ap.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.rss_child:
        return rss_child_main(json.loads(a.rss_child))
    quick = a.quick
    quick_dir = os.path.join(os.path.dirname(HERE), "out", "bench-quick")
    a.out = a.out or (quick_dir if quick else os.path.join(HERE, "results"))
    a.docs = a.docs or (os.path.join(quick_dir, "eprop_benchmarks.md") if quick
                        else os.path.join(os.path.dirname(HERE), "docs", "eprop_benchmarks.md"))
    cfg = dict(batch=4 if quick else 16, T=20 if quick else 100, k=10, repeats=a.repeats)
    sizes = QUICK_SIZES if quick else SIZES
    shd = a.shd or ((32, 4) if quick else (512, 16))
    if not a.skip_grid:
        # rows of networks not measured now are kept from the existing CSV
        rows = [r for r in read_csv(os.path.join(a.out, "eprop_speed.csv")) if r["network"] not in a.networks]
        for network in a.networks:
            for n, m in sizes:
                rows += measure_point(network, n, m, cfg["k"], cfg["batch"], cfg["T"], a.repeats, a.reps, a.variants)
        write_csv(rows, os.path.join(a.out, "eprop_speed.csv"))
        write_csv(ratios(rows), os.path.join(a.out, "eprop_speed_ratios.csv"))
    if shd[0] > 0 or a.shd_compile:
        shd_rows = measure_shd(shd[0], shd[1], cfg["T"], 1 if quick else a.shd_repeats, a.shd_reps,
                               rss=not quick, variant=a.shd_variant) if shd[0] > 0 else []
        for n, b in ([a.shd_compile] if a.shd_compile else []):
            shd_rows += measure_shd(n, b, cfg["T"], 0, 0, variant=a.shd_variant, run=False)
        write_csv(shd_rows, os.path.join(a.out, "eprop_shd.csv"))
    if a.shd_rss:     # (re)measure the peak RSS of SHD rows already in the CSV
        path = os.path.join(a.out, "eprop_shd.csv")
        shd_rows = read_csv(path)
        for r in shd_rows:
            if (r["n"], r["batch"]) == tuple(a.shd_rss) and r.get("ms_per_step_rep0") is not None:
                r["peak_rss_mb"] = round(_rss_child(dict(n=r["n"], batch=r["batch"], T=r["T"], program=r["program"],
                                                         variant=a.shd_variant))["peak_rss_mb"], 1)
                print("  RSS", r["program"], r["peak_rss_mb"], flush=True)
        write_csv(shd_rows, path)
    if a.hlo:
        hlo_rows = []
        for network in a.networks:
            for n, m in ((sizes[min(1, len(sizes) - 1)],) if quick else ((256, 128), (256, 700))):
                problem = ref.make_problem(network, n, m, cfg["k"], cfg["batch"], cfg["T"])
                floats = trace_floats_per_example(network, problem)
                for name, f in programs(network, problem, a.variants).items():
                    hlo_rows.append(dict(network=network, n=n, m=m, program=name,
                                         **loop_body_ops(f, _args(problem)),
                                         trace_floats_per_example=floats.get(name[:4] if name != "eprop" else name, "")))
                    print("  HLO", hlo_rows[-1], flush=True)
        write_csv(hlo_rows, os.path.join(a.out, "eprop_hlo.csv"))
    # the table and figure are rendered from whatever CSVs are in --out (parts can be re-measured alone)
    rows, shd_rows, hlo_rows = (read_csv(os.path.join(a.out, name))
                                for name in ("eprop_speed.csv", "eprop_shd.csv", "eprop_hlo.csv"))
    ratio_rows = ratios(rows)
    plot(ratio_rows, os.path.join(a.out, "eprop_speed.png"),
         f"{machine()}; float32, B={cfg['batch']}, T={cfg['T']}, k={cfg['k']}; solid: rep 0, dotted: rep 1")
    os.makedirs(os.path.dirname(os.path.abspath(a.docs)), exist_ok=True)
    with open(a.docs, "w") as f:
        f.write(markdown(rows, ratio_rows, shd_rows, hlo_rows, cfg))
    print("\n".join(f"{r['network']:5s} n={r['n']:4d} m={r['m']:3d} rep {r['rep']}: eprop/hand {r['eprop_over_hand']:.2f}"
                    f"  eprop/bptt {r['eprop_over_bptt']:.2f}  hand/bptt {r['hand_over_bptt']:.2f} ({r['hand_layout']})"
                    for r in ratio_rows))


if __name__ == "__main__":
    main()
