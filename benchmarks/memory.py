"""Memory sweep: compiled temp bytes vs sequence length T for every method and model, plus
peak RSS of real runs in child processes. Writes benchmarks/results/memory.csv and
docs/img/memory.png.  Usage: python benchmarks/memory.py [--quick] [--no-rss]"""
import argparse
import os

from sparseprop import bench

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sweep (seconds), for a smoke test")
    ap.add_argument("--no-rss", action="store_true", help="skip the real runs measuring peak RSS")
    ap.add_argument("--models", nargs="*", default=list(bench.MODELS))
    ap.add_argument("--methods", nargs="*", default=list(bench.METHODS))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--inputs", type=int, default=256, help="input width m")
    ap.add_argument("--csv", default=None, help="default: benchmarks/results/memory.csv (out/bench-quick/ with --quick)")
    ap.add_argument("--png", default=None, help="default: docs/img/memory.png (out/bench-quick/ with --quick)")
    a = ap.parse_args(argv)
    # A smoke run must not overwrite the committed results and figure.
    quick_dir = os.path.join(ROOT, "out", "bench-quick")
    a.csv = a.csv or (os.path.join(quick_dir, "memory.csv") if a.quick else os.path.join(HERE, "results", "memory.csv"))
    a.png = a.png or (os.path.join(quick_dir, "memory.png") if a.quick else os.path.join(ROOT, "docs", "img", "memory.png"))
    if a.quick:
        steps, widths, rss_t, rss_n = (100, 400, 1600), (32,), (100, 1600), 32
    else:
        steps, widths, rss_t, rss_n = bench.DEFAULT_T, bench.DEFAULT_N, (100, 1600, 25600), 128
    rss_methods = [m for m in ("bptt", "bptt_checkpoint", "online_exact", "online_eprop", "braintrace_drtrl")
                   if m in a.methods and not (m.startswith("braintrace") and bench.braintrace_available())]
    rss_points = [] if a.no_rss else [(mo, me, rss_n, t) for mo in ("lif_shared", "lif_perneuron")
                                      if mo in a.models for me in rss_methods for t in rss_t]
    if bench.braintrace_available():
        print(bench.braintrace_available())
    rows = bench.memory_sweep(a.models, a.methods, steps, widths, a.inputs, a.batch, rss_points=rss_points,
                              csv_path=a.csv, png_path=a.png)
    # memory growth T_max / T_min per (model, method, n)
    print(f"\n{bench.machine_label()}\ntemp bytes T={max(steps)} / T={min(steps)} (m={a.inputs}, B={a.batch}):")
    for r in bench.memory_growth(rows):
        print(f"  {r['model']:14s} {r['method']:20s} n={r['n']:5d}  {r['temp_small_MiB']:10.3f} -> "
              f"{r['temp_large_MiB']:10.3f} MiB  ratio {r['ratio']:8.2f}")
    print(f"wrote {a.csv} and {a.png}")


if __name__ == "__main__":
    main()
