"""Memory scaling, the smallest version of benchmarks/memory.py.

One LIF layer (n=128 neurons, 64 inputs, batch 4). For sequence lengths T = 100 ... 6400
it compiles the gradient computation of BPTT, BPTT with jax.checkpoint, and the online
learner (exact and e-prop), reads XLA's temporary memory, prints a table (MiB = 2**20
bytes) and writes out/memory_scaling.png (--out docs/img regenerates the docs' figure).
BPTT's memory grows with T; the online learner's does not.
"""
import argparse
import os

from sparseprop import bench, plotting

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = (100, 400, 1600, 6400)
METHODS = ("bptt", "bptt_checkpoint", "online_exact", "online_eprop")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(HERE, "..", "out"),
                        help="folder for the figure (default: out/ at the repository root; docs/img to "
                             "regenerate the docs' figure)")
    args = parser.parse_args(argv)
    rows = bench.memory_sweep(models=("lif_shared",), methods=METHODS, steps=STEPS, widths=(128,), inputs=64,
                              batch=4)
    memory = {m: [r["temp_bytes"] for r in rows if r["method"] == m] for m in METHODS}
    machine = bench.machine_label()
    print(f"\n{machine}; LIF n=128, m=64, batch 4, float32; XLA temp memory in MiB")
    print(f"{'method':18s} " + " ".join(f"{'T=' + str(t):>10s}" for t in STEPS) + "  growth")
    for method, sizes in memory.items():
        cells = " ".join(f"{s / 2**20:10.2f}" for s in sizes)
        print(f"{method:18s} {cells}  {sizes[-1] / max(sizes[0], 1):6.1f}x")
    ax = plotting.memory_vs_length(STEPS, memory, title=f"Gradient memory vs T: LIF n=128, m=64, batch 4\n{machine}")
    ax.title.set_fontsize(9)
    print(f"wrote {os.path.normpath(plotting.save(ax, os.path.join(args.out, 'memory_scaling.png')))}")


if __name__ == "__main__":
    main()
