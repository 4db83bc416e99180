"""Memory scaling, the smallest version of benchmarks/memory.py.

One LIF layer (n=128 neurons, 64 inputs, batch 4). For sequence lengths T = 100 ... 6400
it compiles the gradient computation of BPTT, BPTT with jax.checkpoint, and the online
learner (exact and e-prop), reads XLA's temporary memory, prints a table and writes
docs/img/memory_scaling.png. BPTT's memory grows with T; the online learner's does not.
"""
import os

from sparseprop import bench

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    rows = bench.memory_sweep(models=("lif_shared",), methods=("bptt", "bptt_checkpoint", "online_exact",
                                                               "online_eprop"),
                              steps=(100, 400, 1600, 6400), widths=(128,), inputs=64, batch=4,
                              png_path=os.path.join(HERE, "..", "docs", "img", "memory_scaling.png"))
    print(f"\n{bench.machine_label()}; LIF n=128, m=64, batch 4, float32")
    print(f"{'method':18s} " + " ".join(f"T={t:<8d}" for t in (100, 400, 1600, 6400)) + "  growth")
    for method in ("bptt", "bptt_checkpoint", "online_exact", "online_eprop"):
        sizes = [r["temp_bytes"] for r in rows if r["method"] == method]
        cells = " ".join(f"{s / 2**20:8.2f}M" for s in sizes)
        print(f"{method:18s} {cells}  {sizes[-1] / max(sizes[0], 1):6.1f}x")


if __name__ == "__main__":
    main()
