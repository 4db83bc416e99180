"""The benchmark grid: sparseprop's generated programs against hand-written e-prop and BPTT,
with the bytes each program's loop body moves per step and the bandwidth floor they imply.

Networks (`eprop_reference.py`): `lif` (recurrent LIF, shared leak), `alif` (recurrent ALIF,
per-neuron leak, leaky readout), `alif_beta` (recurrent ALIF, shared leak, per-neuron β,
leaky readout), `lif2` (two feed-forward LIF layers). Programs, all (params, states0, xs,
targets) -> (loss, grads), float32, gradients summed over the batch inside each step:

- `bptt`: `jax.value_and_grad` of a `lax.scan` (the full gradient);
- `eprop`: sparseprop's generated `online_grad(model, mse, method="eprop")`;
- `exact`: sparseprop's `method="exact"`, skipped where its traces (`plan().trace_bytes` · B)
  exceed `--exact-max-gib` (the reason is recorded);
- `hand_<layout>`: the hand-written e-prop, per trace layout; `hand` in the ratios is the
  fastest layout of the point.

Per point all programs are compiled first, then timed round-robin (a warm-up call each, then
`--repeats` rounds; median ms/step). Per program: XLA's temp bytes (`memory_analysis`), the
bytes the loop body reads and writes per step (`sparseprop.bench.hlo`, BPTT: forward and
backward loop bodies together) in units of U = B·n·(n+m)·4 bytes (one float32 per synapse
and example), and the floor = bytes per step / streaming bandwidth (measured once here).

Writes `grid.csv`, `grid_ratios.csv`, `grid.png` and `grid.md` to `--out` (default
`benchmarks/results/`; `--quick`: `out/bench-quick/`) and prints the markdown table.
`--check` compares every hand-written program with sparseprop in float64 (and `lif2` with
BPTT); `--selftest` checks the HLO byte counter on loops whose bytes are known.

Every program (generated, hand-written, BPTT) is compiled twice, with XLA's default options
and with `sparseprop.compiler_options()`, and all are timed in one round robin (`--xla` picks
one); rows record which.

Usage: python benchmarks/grid.py [--quick] [--networks lif alif] [--sizes 128,128 512,700]
       [--steps 20] [--repeats 5] [--xla default sparseprop] [--append] [--render] [--check] [--selftest]
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
import warnings

import jax
import jax.numpy as jnp

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import eprop_reference as ref  # noqa: E402

import sparseprop as sp  # noqa: E402
from sparseprop.bench import machine_label, write_csv  # noqa: E402
from sparseprop.bench.timing import time_compiled  # noqa: E402
from sparseprop.bench.hlo import hlo_loop_bytes, loop_body_bytes, streaming_bandwidth  # noqa: E402

SIZES = tuple((n, m) for m in (128, 700) for n in (128, 256, 512, 1024))
QUICK_SIZES = ((16, 8), (32, 8))
#: trace layouts timed for the networks with per-synapse arrays (`lif` has none)
HAND_LAYOUTS = {"nb": "neuron_batch", "bf": "batch_first"}
CHECK_TOL = 1e-9


# ---------------------------------------------------------------------------------------
# Programs of one point
# ---------------------------------------------------------------------------------------

def _args(problem):
    return problem["params"], problem["states0"], problem["xs"], problem["targets"]


def exact_skip_reason(problem, max_bytes: float):
    """Why `method="exact"` is not run at this point (None when it is).

    **Arguments:**

    - `problem`: from `ref.make_problem`.
    - `max_bytes`: the largest batched trace size run.

    **Returns:**

    A short reason string, or None.
    """
    learner = sp.online_grad(problem["model"], ref.mse, method="exact")
    one = jax.tree_util.tree_map(lambda v: v[0], problem["states0"])
    with warnings.catch_warnings():      # the dense-trace warning: the returned reason says it
        warnings.simplefilter("ignore", UserWarning)
        plan = learner.plan(problem["params"], one, problem["xs"][0, 0])
    nbytes = plan.trace_bytes * problem["xs"].shape[1]
    if nbytes > max_bytes:
        return f"exact traces {nbytes / 2 ** 30:.2f} GiB > {max_bytes / 2 ** 30:.2f} GiB"
    return None


def programs(network: str, problem: dict, exact: bool) -> dict:
    """name -> un-jitted program of (params, states0, xs, targets) for one point.

    **Arguments:**

    - `network`: one of `ref.NETWORKS`; `problem`: from `ref.make_problem`.
    - `exact`: whether to include sparseprop's `method="exact"`.

    **Returns:**

    A dict `bptt`, `eprop`, (`exact`), and `hand` (`lif`) or `hand_<layout>` per `HAND_LAYOUTS`.
    """
    fns = {"bptt": ref.bptt_fn(problem["model"]), "eprop": ref.sparseprop_fn(problem["model"], "eprop")}
    if exact:
        fns["exact"] = ref.sparseprop_fn(problem["model"], "exact")
    if network == "lif":
        fns["hand"] = ref.hand_written_fn("lif", problem["consts"])
    else:
        for short, layout in HAND_LAYOUTS.items():
            fns["hand_" + short] = ref.hand_written_fn(network, problem["consts"], layout)
    return fns


def max_rel(a, b) -> float:
    """max over leaves of max|a − b| / max|b|."""
    return max(float(jnp.max(jnp.abs(x - y)) / jnp.max(jnp.abs(y)))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


#: XLA settings a point can be compiled with: name -> compiler options
XLA_SETTINGS = {"default": lambda: {}, "sparseprop": sp.compiler_options}


def measure_point(network: str, n: int, m: int, cfg: dict, bandwidth: float) -> list:
    """Compile, analyse and time every program of one point, under each XLA setting of
    `cfg["xla"]` (all timed in one round robin, so the settings are compared side by side).

    **Arguments:**

    - `network`, `n`, `m`: the point.
    - `cfg`: `{k, batch, steps, repeats, exact_max_bytes, machine, xla}` (`xla`: names of
      `XLA_SETTINGS`).
    - `bandwidth`: streaming bandwidth in bytes/s, for the floor.

    **Returns:**

    One row (dict) per program and setting, skipped programs included (with `skip`).
    """
    k, batch, steps = cfg["k"], cfg["batch"], cfg["steps"]
    problem = ref.make_problem(network, n, m, k, batch, steps)
    args = _args(problem)
    unit = batch * n * (n + m) * 4
    skip = exact_skip_reason(problem, cfg["exact_max_bytes"])
    base = dict(network=network, n=n, m=m, k=k, batch=batch, T=steps, U_MiB=round(unit / 2 ** 20, 3))
    compiled, static = {}, {}
    fns = programs(network, problem, exact=skip is None)
    for xla in cfg["xla"]:
        options = XLA_SETTINGS[xla]()
        for name, fn in fns.items():
            t0 = time.perf_counter()
            c = compiled[(xla, name)] = jax.jit(fn).lower(*args).compile(compiler_options=options)
            hlo = hlo_loop_bytes(c.as_text(), unit, every_loop=True)
            moved = hlo["read_bytes"] + hlo["written_bytes"]
            static[(xla, name)] = dict(
                compile_s=round(time.perf_counter() - t0, 2),
                temp_MiB=round(c.memory_analysis().temp_size_in_bytes / 2 ** 20, 2), loops=hlo["loops"],
                MB_per_step=round(moved / 1e6, 3), passes_U=round(hlo["passes"], 2),
                unit_buffers_read=hlo["unit_buffers_read"], unit_buffers_written=hlo["unit_buffers_written"],
                copies=hlo["copies"], floor_ms=moved / bandwidth * 1e3)
    # exact (dense traces, up to a GiB) is timed on its own: in the round robin its large
    # buffers made the program timed after it pay page faults (BPTT 30x slower at lif 128/128)
    timing = time_compiled({key: c for key, c in compiled.items() if key[1] != "exact"}, args, steps, cfg["repeats"])
    timing.update(time_compiled({key: c for key, c in compiled.items() if key[1] == "exact"}, args, steps,
                                cfg["repeats"]))
    rows = []
    for (xla, name) in compiled:
        med, best, result = (timing[(xla, name)][key] for key in ("ms_per_step", "ms_per_step_min", "result"))
        floor = static[(xla, name)]["floor_ms"]
        rows.append(dict(base, xla=xla, program=name, ms_per_step=round(med, 4), ms_per_step_min=round(best, 4),
                         **{key: value for key, value in static[(xla, name)].items() if key != "floor_ms"},
                         floor_ms=round(floor, 4), x_floor=round(med / floor, 2),
                         relerr_vs_eprop_f32=f"{max_rel(result[1], timing[(xla, 'eprop')]['result'][1]):.1e}",
                         repeats=cfg["repeats"], machine=cfg["machine"]))
    if skip:
        rows += [dict(base, xla=xla, program="exact", skip=skip, machine=cfg["machine"]) for xla in cfg["xla"]]
    return rows


def ratios(rows: list) -> list:
    """Per point: eprop / hand (fastest layout), eprop / bptt, exact / bptt, and the passes and
    floor multiples of eprop and hand.

    **Arguments:**

    - `rows`: from `measure_point`.

    **Returns:**

    One dict per point.
    """
    points = {}
    for r in rows:
        if "ms_per_step" in r and r["ms_per_step"] not in (None, ""):
            points.setdefault((r["network"], r["n"], r["m"], r.get("xla") or "default"), {})[r["program"]] = r
    out = []
    for (network, n, m, xla), p in points.items():
        hand = min((name for name in p if name.startswith("hand")), key=lambda name: p[name]["ms_per_step"])
        exact = p.get("exact")
        out.append(dict(network=network, n=n, m=m, xla=xla, hand_layout=hand,
                        eprop_over_hand=round(p["eprop"]["ms_per_step"] / p[hand]["ms_per_step"], 3),
                        eprop_over_bptt=round(p["eprop"]["ms_per_step"] / p["bptt"]["ms_per_step"], 3),
                        exact_over_bptt=round(exact["ms_per_step"] / p["bptt"]["ms_per_step"], 3) if exact else "",
                        hand_over_bptt=round(p[hand]["ms_per_step"] / p["bptt"]["ms_per_step"], 3),
                        passes_eprop=p["eprop"]["passes_U"], passes_hand=p[hand]["passes_U"],
                        passes_bptt=p["bptt"]["passes_U"],
                        x_floor_eprop=p["eprop"]["x_floor"], x_floor_hand=p[hand]["x_floor"],
                        x_floor_bptt=p["bptt"]["x_floor"]))
    return out


# ---------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------

TITLES = {"lif": "recurrent LIF, shared leak", "alif": "recurrent ALIF, per-neuron α, leaky readout",
          "alif_beta": "recurrent ALIF, shared α, per-neuron β", "lif2": "two feed-forward LIF layers"}


def plot(ratio_rows: list, path: str, title: str) -> None:
    """One column per network: eprop / hand time per step (top) and the bytes each moves per
    step in passes of U (bottom) vs n; a colour per m, a line style per XLA setting.

    **Arguments:** `ratio_rows` from `ratios`; `path`: the PNG; `title`: the figure title.

    **Returns:** nothing.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    networks = [w for w in ref.NETWORKS if any(r["network"] == w for r in ratio_rows)]
    fig, axes = plt.subplots(2, len(networks), figsize=(3.6 * len(networks), 6.0), squeeze=False, sharex=True)
    ms = sorted({r["m"] for r in ratio_rows})
    styles = {"default": "-", "sparseprop": "--"}
    for col, network in enumerate(networks):
        top, bottom = axes[0, col], axes[1, col]
        for (colour, m), (xla, style) in itertools.product(enumerate(ms), styles.items()):
            rows = sorted((r for r in ratio_rows if r["network"] == network and r["m"] == m and r["xla"] == xla),
                          key=lambda r: r["n"])
            if not rows:
                continue
            ns = [r["n"] for r in rows]
            top.plot(ns, [r["eprop_over_hand"] for r in rows], f"C{colour}o{style}", label=f"m={m}, xla {xla}")
            bottom.plot(ns, [r["passes_eprop"] for r in rows], f"C{colour}o{style}", label=f"eprop, m={m}, xla {xla}")
            bottom.plot(ns, [r["passes_hand"] for r in rows], f"C{colour}x{style}", alpha=0.6,
                        label=f"hand, m={m}, xla {xla}")
        top.axhline(1.0, color="k", lw=0.6)
        top.set_title(TITLES[network], fontsize=9)
        top.set_ylabel("eprop / hand (ms per step)" if col == 0 else "")
        bottom.set_ylabel("U moved per step (passes)" if col == 0 else "")
        bottom.set_xlabel("n (hidden neurons)")
        for ax in (top, bottom):
            ax.set_xscale("log", base=2)
            ax.grid(alpha=0.3)
    for row in range(2):
        handles, labels = axes[row, 0].get_legend_handles_labels()
        axes[row, -1].legend(handles, labels, fontsize=6, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(title + "\nbottom: o eprop, x hand", fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def markdown(rows: list, ratio_rows: list, cfg: dict, command: str) -> str:
    """The markdown report: the setup, the ratio table and the per-program table.

    **Arguments:** `rows`, `ratio_rows`: as measured; `cfg`: the run's settings; `command`:
    the command line that produced them.

    **Returns:** the markdown text.
    """
    # each run measures the bandwidth once: rows appended from earlier runs carry their own floor
    measured = [r["MB_per_step"] / r["floor_ms"] for r in rows if r.get("floor_ms") and r["MB_per_step"] >= 1]
    bandwidth = f"{min(measured):.1f}–{max(measured):.1f}" if measured else f"{cfg['bandwidth'] / 1e9:.1f}"
    lines = ["# Generated vs hand-written e-prop: the grid", "",
             f"Rendered by `{command}` (rows measured by it or kept from earlier `--append` runs); "
             f"machine: {cfg['machine']}; streaming bandwidth "
             f"{bandwidth} GB/s (in-place axpy, best of 5, once per run). float32, B = {cfg['batch']}, "
             f"T = {cfg['steps']}, k = {cfg['k']}, median of {cfg['repeats']} round-robin calls after a warm-up. "
             "U = B·n·(n+m)·4 bytes (one float32 per synapse and example); *passes* = bytes the loop "
             "body reads and writes per step (optimised HLO, BPTT: forward + backward bodies) / U; "
             "*floor* = those bytes / bandwidth; *× floor* = measured ms/step / floor. "
             "*hand* is the fastest hand-written layout of the point.", "",
             "*xla*: every program compiled with XLA's default options or with "
             "`sparseprop.compiler_options()` (region-analysis copy insertion on CPU).", "",
             "| network | n | m | xla | eprop/hand | eprop/bptt | exact/bptt | passes U: eprop | hand | bptt "
             "| × floor: eprop | hand | bptt | hand layout |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in ratio_rows:
        exact = format(r["exact_over_bptt"], ".3g") if r["exact_over_bptt"] else "—"
        lines.append(f"| {r['network']} | {r['n']} | {r['m']} | {r['xla']} | {r['eprop_over_hand']:.2f} | "
                     f"{r['eprop_over_bptt']:.2f} | {exact} | {r['passes_eprop']} | "
                     f"{r['passes_hand']} | {r['passes_bptt']} | {r['x_floor_eprop']} | {r['x_floor_hand']} | "
                     f"{r['x_floor_bptt']} | {r['hand_layout']} |")
    lines += ["", "| network | n | m | xla | program | ms/step | floor ms/step | × floor | MB/step | passes U "
              "| U-sized read / written | copies | temp MiB | f32 rel. err vs eprop | skipped |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        head = f"| {r['network']} | {r['n']} | {r['m']} | {r.get('xla') or 'default'} | {r['program']} |"
        if r.get("skip"):
            lines.append(f"{head} | | | | | | | | | {r['skip']} |")
            continue
        lines.append(f"{head} {r['ms_per_step']} | "
                     f"{r['floor_ms']} | {r['x_floor']} | {r['MB_per_step']} | {r['passes_U']} | "
                     f"{r['unit_buffers_read']} / {r['unit_buffers_written']} | {r['copies']} | {r['temp_MiB']} | "
                     f"{r['relerr_vs_eprop_f32']} | |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------

def check() -> bool:
    """Every hand-written program (each layout) against sparseprop's `method="eprop"` in
    float64, and `lif2`'s (feed-forward: e-prop is exact) against BPTT; prints the errors.

    **Arguments:** none (enables float64 for this process).

    **Returns:** True when all errors are below `CHECK_TOL`.
    """
    jax.config.update("jax_enable_x64", True)
    ok = True
    for network in ref.NETWORKS:
        problem = ref.make_problem(network, n=12, m=7, k=3, batch=4, steps=40, dtype=jnp.float64)
        args = _args(problem)
        loss, grads = jax.jit(ref.sparseprop_fn(problem["model"], "eprop"))(*args)
        _, full = jax.jit(ref.bptt_fn(problem["model"]))(*args)
        rates = spike_rates(network, problem)
        for layout in (("neuron_first",) if network == "lif" else ref.LAYOUTS):
            hand_loss, hand = jax.jit(ref.hand_written_fn(network, problem["consts"], layout))(*args)
            err, loss_err = max_rel(hand, grads), abs(float(hand_loss - loss)) / abs(float(loss))
            ok &= err <= CHECK_TOL and loss_err <= CHECK_TOL
            print(f"{network:9s} {layout:12s} hand vs eprop {err:.1e} (loss {loss_err:.1e})  "
                  f"hand vs bptt {max_rel(hand, full):.1e}  spike rates {rates}")
        if network == "lif2":
            err = max_rel(grads, full)
            ok &= err <= CHECK_TOL
            print(f"{network:9s} eprop vs bptt {err:.1e} (feed-forward: must be exact)")
    print("check", "passed" if ok else "FAILED", f"(tolerance {CHECK_TOL:g})")
    return ok


#: position of the spikes in each network's state (lif2: both layers)
SPIKE_STATES = {"lif": (1,), "alif": (2,), "alif_beta": (2,), "lif2": (1, 3)}


def spike_rates(network: str, problem: dict) -> list:
    """Mean spike rate of each spiking state (layer) over the problem's run.

    **Arguments:** `network`: one of `ref.NETWORKS`; `problem`: from `ref.make_problem`.

    **Returns:** a list of rates, one per spiking layer.
    """
    model = jax.vmap(problem["model"], in_axes=(None, 0, 0))
    names = SPIKE_STATES[network]

    def body(s, x):
        s, _ = model(problem["params"], s, x)
        return s, jnp.stack([jnp.mean(s[i]) for i in names])
    rates = jax.lax.scan(body, problem["states0"], problem["xs"])[1].mean(0)
    return [round(float(r), 3) for r in rates]


def selftest() -> bool:
    """Check the HLO byte counter on two loops whose bytes are known, and print the numbers.

    1. `a ← a·c + x_t` on float32 (N,) arrays: each step reads a, c and a slice of xs
       (3·4N bytes) and writes a (4N); only the loop counter adds a few bytes.
    2. a scan that stacks its carry into an output (T, N): the in-place update writes 4N, not 4TN.

    **Arguments:** none.

    **Returns:** True when both match to within 64 bytes.
    """
    N, T = 1 << 16, 7

    def axpy_loop(a, c, xs):
        return jax.lax.scan(lambda a, x: (a * c + x, None), a, xs)[0]

    def stacking_loop(a, xs):
        return jax.lax.scan(lambda a, x: (a + x, a + x), a, xs)

    ones = jnp.ones((N,), jnp.float32)
    first = loop_body_bytes(axpy_loop, (ones, ones, jnp.ones((T, N), jnp.float32)), unit_bytes=4 * N)
    second = loop_body_bytes(stacking_loop, (ones, jnp.ones((T, N), jnp.float32)))
    ok = abs(first["read_bytes"] - 12 * N) <= 64 and abs(first["written_bytes"] - 4 * N) <= 64
    # the stacked output is one more (N,) write per step, and possibly a read of the new carry
    ok &= second["written_bytes"] <= 2 * 4 * N + 64
    print(f"axpy loop: read {first['read_bytes']} (expected {12 * N} + counter), written "
          f"{first['written_bytes']} (expected {4 * N} + counter), passes {first['passes']:.4f} (expected 4)")
    print(f"stacking loop: read {second['read_bytes']}, written {second['written_bytes']} "
          f"(a full (T, N) buffer would be {4 * T * N}); by opcode {second['by_opcode']}")
    print("selftest", "passed" if ok else "FAILED")
    return ok


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------

def measure_points(points: list, cfg: dict) -> list:
    """`measure_point` for every (network, n, m) of `points`, with a progress bar if tqdm is
    installed.

    **Arguments:** `points`: (network, n, m) tuples; `cfg`: as for `measure_point`.

    **Returns:** the rows of all points.
    """
    if not points:
        return []
    print(f"{cfg['machine']}; streaming bandwidth {cfg['bandwidth'] / 1e9:.1f} GB/s; {len(points)} points",
          flush=True)
    try:
        from tqdm import tqdm
        progress, say = tqdm(points, desc="grid"), tqdm.write
    except ImportError:
        progress, say = points, print
    rows = []
    for network, n, m in progress:
        point = measure_point(network, n, m, cfg, cfg["bandwidth"])
        say(f"{network} n={n} m={m}: " + "  ".join(f"{r['program']}={r.get('ms_per_step', 'skip')}" for r in point))
        rows += point
    return rows


def _size(text: str):
    n, m = text.split(",")
    return int(n), int(m)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds (smoke check)")
    ap.add_argument("--networks", nargs="+", default=list(ref.NETWORKS), choices=list(ref.NETWORKS))
    ap.add_argument("--sizes", nargs="+", type=_size, default=None, metavar="N,M",
                    help="(n, m) points; default the full grid n in 128..1024, m in 128, 700")
    ap.add_argument("--steps", type=int, default=None, help="T (default 20; --quick 5)")
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5; --quick 2)")
    ap.add_argument("--batch", type=int, default=None, help="B (default 16; --quick 4)")
    ap.add_argument("--exact-max-gib", type=float, default=1.0,
                    help="skip method='exact' where its batched traces exceed this (GiB)")
    ap.add_argument("--out", default=None, help="output folder (default benchmarks/results; --quick out/bench-quick)")
    ap.add_argument("--append", action="store_true", help="keep the rows of other points already in grid.csv")
    ap.add_argument("--render", action="store_true", help="only re-render ratios, figure and table from grid.csv")
    ap.add_argument("--xla", nargs="+", choices=tuple(XLA_SETTINGS), default=list(XLA_SETTINGS),
                    help="compile every program with XLA's default options and/or with "
                         "sparseprop.compiler_options() (default both, timed side by side)")
    ap.add_argument("--check", action="store_true", help="float64 checks of the hand-written programs, then exit")
    ap.add_argument("--selftest", action="store_true", help="check the HLO byte counter, then exit")
    a = ap.parse_args(argv)
    if a.selftest or a.check:
        ok = (selftest() if a.selftest else True) and (check() if a.check else True)
        sys.exit(0 if ok else 1)
    quick = a.quick
    out = a.out or (os.path.join(os.path.dirname(HERE), "out", "bench-quick") if quick
                    else os.path.join(HERE, "results"))
    bandwidth = 0.0 if a.render else streaming_bandwidth(20e6 if quick else 200e6)
    cfg = dict(k=10, batch=a.batch or (4 if quick else 16), steps=a.steps or (5 if quick else 20),
               repeats=a.repeats or (2 if quick else 5), exact_max_bytes=a.exact_max_gib * 2 ** 30,
               machine=machine_label(), bandwidth=bandwidth, xla=a.xla)
    points = [] if a.render else [(w, n, m) for w in a.networks
                                  for n, m in (a.sizes or (QUICK_SIZES if quick else SIZES))]
    rows = []
    if a.append or a.render:
        from eprop_speed import read_csv
        rows = [r for r in read_csv(os.path.join(out, "grid.csv"))
                if ((r["network"], r["n"], r["m"]) not in points or (r.get("xla") or "default") not in a.xla)]
    rows += measure_points(points, cfg)
    ratio_rows = ratios(rows)
    write_csv(rows, os.path.join(out, "grid.csv"))
    write_csv([dict(r, machine=cfg["machine"]) for r in ratio_rows], os.path.join(out, "grid_ratios.csv"))
    plot(ratio_rows, os.path.join(out, "grid.png"),
         f"{cfg['machine']}; float32, B={cfg['batch']}, T={cfg['steps']}, k={cfg['k']}")
    command = "python benchmarks/grid.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = markdown(rows, ratio_rows, cfg, command.strip())
    with open(os.path.join(out, "grid.md"), "w") as fh:
        fh.write(text)
    print(text)


if __name__ == "__main__":
    main()
