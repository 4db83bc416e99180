"""The generated online programs against the hand-written ones of benchmarks/hand_written.py
and against BPTT, timed side by side in one process.
Writes benchmarks/results/reference.csv and reference_ratios.csv.
Usage: python benchmarks/reference_ratio.py [--quick] [n m B T]"""
import argparse
import os

from sparseprop import bench

from hand_written import compare_reference

HERE = os.path.dirname(os.path.abspath(__file__))

TARGETS = {"exact_vs_bptt_shared": 1.2, "exact_vs_hand_factorised": 1.1, "exact_vs_hand_eligibility": 1.1}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="n=m=64, B=4, T=200")
    ap.add_argument("size", nargs="*", type=int, help="n m B T (default 256 256 16 1000)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--extra-n", type=int, default=32, help="n for the ALIF and recurrent LIF rows")
    ap.add_argument("--out", default=None, help="CSV folder; default: benchmarks/results (out/bench-quick with --quick)")
    a = ap.parse_args(argv)
    # A smoke run must not overwrite the committed results.
    a.out = a.out or (os.path.join(os.path.dirname(HERE), "out", "bench-quick") if a.quick else os.path.join(HERE, "results"))
    n, m, b, t = a.size if len(a.size) == 4 else ((64, 64, 4, 200) if a.quick else (256, 256, 16, 1000))
    res = compare_reference(n, m, b, t, repeats=a.repeats, extra_n=16 if a.quick else a.extra_n,
                                  csv_path=os.path.join(a.out, "reference.csv"))
    ratio_rows = [dict(ratio=k, value=v, target=TARGETS.get(k, ""),
                       met=("" if k not in TARGETS else v <= TARGETS[k]), n=n, m=m, batch=b, T=t,
                       machine=res["machine"]) for k, v in res["ratios"].items()]
    bench.write_csv(ratio_rows, os.path.join(a.out, "reference_ratios.csv"))
    print("targets:")
    for r in ratio_rows:
        if r["target"] != "":
            print(f"  {r['ratio']:30s} {r['value']:6.2f}  target <= {r['target']}  {'met' if r['met'] else 'NOT met'}")


if __name__ == "__main__":
    main()
