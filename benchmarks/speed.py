"""Speed sweep: time per step vs layer width n for every method and model (all methods of one
(model, n) timed side by side, round-robin), its error vs BPTT, and a float64 exactness check
at a tiny size. Writes benchmarks/results/speed.csv, accuracy.csv and docs/img/speed.png.
Usage: python benchmarks/speed.py [--quick]"""
import argparse
import os

from sparseprop import bench

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sweep (seconds), for a smoke test")
    ap.add_argument("--models", nargs="*", default=list(bench.MODELS))
    ap.add_argument("--methods", nargs="*", default=list(bench.METHODS))
    ap.add_argument("--widths", nargs="*", type=int, default=None)
    ap.add_argument("--steps", type=int, default=200, help="T of each timed run")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--inputs", type=int, default=256, help="input width m")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None, help="CSV folder; default: benchmarks/results (out/bench-quick with --quick)")
    ap.add_argument("--png", default=None, help="default: docs/img/speed.png (out/bench-quick/ with --quick)")
    a = ap.parse_args(argv)
    # A smoke run must not overwrite the committed results and figure.
    quick_dir = os.path.join(ROOT, "out", "bench-quick")
    a.out = a.out or (quick_dir if a.quick else os.path.join(HERE, "results"))
    a.png = a.png or (os.path.join(quick_dir, "speed.png") if a.quick else os.path.join(ROOT, "docs", "img", "speed.png"))
    widths = a.widths or ((16, 64) if a.quick else (32,) + bench.DEFAULT_N)
    steps = 50 if a.quick else a.steps
    if bench.braintrace_available():
        print(bench.braintrace_available())
    acc = bench.accuracy_check(a.models, a.methods, csv_path=os.path.join(a.out, "accuracy.csv"))
    print("float64 gradient error vs BPTT (n=12, m=10, B=3, T=60):")
    for r in acc:
        flag = "" if not r["exact_expected"] or r["rel_err_vs_bptt"] <= 1e-9 else "   <-- NOT EXACT"
        print(f"  {r['model']:14s} {r['method']:20s} rel err {r['rel_err_vs_bptt']:9.2e}  "
              f"cosine {r['cosine_vs_bptt']:.6f}  exact expected: {r['exact_expected']}{flag}")
    rows = bench.speed_sweep(a.models, a.methods, widths, steps, a.inputs, a.batch, a.repeats,
                             csv_path=os.path.join(a.out, "speed.csv"), png_path=a.png)
    print(f"\n{bench.machine_label()}\nms per step (T={steps}, m={a.inputs}, B={a.batch}), ratio to BPTT "
          f"measured side by side:")
    for r in rows:
        print(f"  {r['model']:14s} {r['method']:20s} n={r['n']:5d} {r['ms_per_step']:9.4f} ms "
              f"x{r['ratio_vs_bptt']:7.2f}  rel err {r['rel_err_vs_bptt']:8.1e}")
    print(f"wrote {a.out}/speed.csv, accuracy.csv and {a.png}")


if __name__ == "__main__":
    main()
