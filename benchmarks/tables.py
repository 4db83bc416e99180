"""Render the benchmark CSVs (benchmarks/results/) as the markdown tables of docs/benchmarks.md.

Usage: python benchmarks/tables.py > docs/benchmark_tables.md
"""
import csv
import os
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")


def read(name):
    path = os.path.join(RESULTS, name)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def reference_section():
    rows, ratios = read("reference.csv"), read("reference_ratios.csv")
    if not rows:
        return ""
    r0 = rows[0]
    out = [f"### Generated vs hand-written vs BPTT (n={r0['n']}, m={r0['m']}, B={r0['batch']}, "
           f"T={r0['T']}, float32)", "", f"Machine: {r0['machine']}", ""]
    out.append(table(["program", "model", "n", "ms/step", "temp MiB", "rel err vs BPTT"],
                     [[r["program"], r["model"], r["n"], f"{float(r['ms_per_step']):.4f}",
                       f"{int(r['temp_bytes']) / 2**20:.2f}",
                       f"{float(r['rel_err_vs_bptt']):.1e}" if r["rel_err_vs_bptt"] else ""] for r in rows]))
    out += ["", table(["ratio", "measured", "target"],
                      [[r["ratio"], f"{float(r['value']):.2f}",
                        "" if not r["target"] else f"≤ {r['target']} ({'met' if r['met'] == 'True' else 'NOT met'})"]
                       for r in ratios])]
    return "\n".join(out)


def speed_section():
    rows = read("speed.csv")
    if not rows:
        return ""
    ns = sorted({int(r["n"]) for r in rows})
    cells = defaultdict(dict)
    err = defaultdict(float)
    for r in rows:
        key = (r["model"], r["method"])
        cells[key][int(r["n"])] = f"{float(r['ms_per_step']):.4f} (×{float(r['ratio_vs_bptt']):.2f})"
        if r["rel_err_vs_bptt"]:
            err[key] = max(err[key], float(r["rel_err_vs_bptt"]))
    r0 = rows[0]
    out = [f"### Speed: ms per step (× BPTT, side by side), T={r0['T']}, m={r0['m']}, B={r0['batch']}, "
           f"{r0['dtype']}", "", f"Machine: {r0['machine']}", ""]
    out.append(table(["model", "method"] + [f"n={n}" for n in ns] + ["rel err vs BPTT"],
                     [[m, meth] + [c.get(n, "—") for n in ns] + [f"{err[(m, meth)]:.1e}"]
                      for (m, meth), c in cells.items()]))
    return "\n".join(out)


def memory_section():
    rows = read("memory.csv")
    if not rows:
        return ""
    ts = sorted({int(r["T"]) for r in rows})
    lo, hi = ts[0], ts[-1]
    by = defaultdict(dict)
    for r in rows:
        by[(r["model"], r["method"], int(r["n"]))][int(r["T"])] = int(r["temp_bytes"])
    ns = sorted({k[2] for k in by})
    cells = defaultdict(dict)
    for (model, method, n), t in by.items():
        if lo in t and hi in t:
            cells[(model, method)][n] = (f"{t[lo] / 2**20:.3g} → {t[hi] / 2**20:.4g} "
                                         f"(×{t[hi] / max(t[lo], 1):.2f})")
    r0 = rows[0]
    out = [f"### Memory: temp MiB at T={lo} → T={hi} (ratio), m={r0['m']}, B={r0['batch']}, {r0['dtype']}",
           "", f"Machine: {r0['machine']}", ""]
    out.append(table(["model", "method"] + [f"n={n}" for n in ns],
                     [[m, meth] + [c.get(n, "—") for n in ns] for (m, meth), c in cells.items()]))
    rss = [r for r in rows if r.get("rss_peak_bytes")]
    if rss:
        out += ["", "### Peak RSS of real runs (child process; 'run added' = VmHWM growth during the run)", ""]
        out.append(table(["model", "method", "n", "T", "peak RSS MiB", "run added MiB", "run s"],
                         [[r["model"], r["method"], r["n"], r["T"], f"{int(r['rss_peak_bytes']) / 2**20:.0f}",
                           f"{int(r['rss_run_delta_bytes'] or 0) / 2**20:.1f}", f"{float(r['rss_run_s']):.2f}"]
                          for r in rss]))
    return "\n".join(out)


def fgi_section():
    rows = read("fgi_speed.csv")
    if not rows:
        return ""
    med = {(r["surrogate"], r["injection"], r["method"]): float(r["median_ms"]) for r in rows}
    surr = sorted({k[0] for k in med})
    r0 = rows[0]
    out = [f"### FGI vs custom_jvp: ms per jitted training step (B={r0['batch']}, T={r0['steps']}, "
           f"hidden {r0['hidden']}, {r0['dtype']})", "", f"Machine: {r0['machine']}", ""]
    out.append(table(["surrogate", "BPTT custom_jvp", "BPTT fgi", "ratio", "online custom_jvp", "online fgi", "ratio"],
                     [[s] + sum(([f"{med[(s, 'custom_jvp', m)]:.2f}", f"{med[(s, 'fgi', m)]:.2f}",
                                  f"{med[(s, 'fgi', m)] / med[(s, 'custom_jvp', m)]:.2f}"]
                                 for m in ("bptt", "online_exact")), []) for s in surr]))
    return "\n".join(out)


if __name__ == "__main__":
    print("\n\n".join(s for s in (reference_section(), speed_section(), memory_section(), fgi_section()) if s))
