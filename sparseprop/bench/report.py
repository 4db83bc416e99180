"""Benchmark output: rows as CSV, and the memory and speed figures (matplotlib, the bench extra)."""
from __future__ import annotations

import csv
import os
from typing import List


def write_csv(rows: List[dict], path: str) -> None:
    """Write rows (dicts, union of keys as columns) to a CSV file, creating its folder.

    **Arguments:** `rows`: list of dicts; `path`: the file.

    **Returns:** nothing.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow(r)


_STYLE = {"bptt": ("k", "o-"), "bptt_checkpoint": ("tab:gray", "s--"), "online_exact": ("tab:red", "^-"),
          "online_eprop": ("tab:orange", "v:"), "dense_rtrl": ("tab:purple", "d-."),
          "braintrace_drtrl": ("tab:blue", "x-"), "braintrace_pp_prop": ("tab:cyan", "+--"),
          "hand_factorised": ("tab:green", "*-"), "hand_eligibility": ("tab:olive", "*--")}


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_memory(rows: List[dict], path: str, machine: str, inputs: int, batch: int) -> None:
    """Log-log compiled temp bytes vs T, one panel per (model, n), one line per method.

    **Arguments:** `rows` from `memory_sweep`; `path`: PNG file; `machine`, `inputs`, `batch`:
    stated in the title.

    **Returns:** nothing.
    """
    plt = _plt()
    rows = [r for r in rows if "temp_bytes" in r and r.get("temp_bytes") not in ("", None)]
    models = list(dict.fromkeys(r["model"] for r in rows))
    widths = sorted({r["n"] for r in rows})
    # Constrained layout keeps room for the title and the legend row outside the panels, so a
    # single row of panels is not squashed.
    fig, axes = plt.subplots(len(models), len(widths), figsize=(max(4.2 * len(widths), 6.0), 3.0 * len(models) + 1.2),
                             squeeze=False, sharex=True, layout="constrained")
    for i, mo in enumerate(models):
        for j, n in enumerate(widths):
            ax = axes[i][j]
            for me in dict.fromkeys(r["method"] for r in rows):
                pts = sorted((r["T"], max(r["temp_bytes"], 1)) for r in rows
                             if r["model"] == mo and r["n"] == n and r["method"] == me)
                if pts:
                    c, s = _STYLE.get(me, (None, "o-"))
                    ax.loglog([p[0] for p in pts], [p[1] / 2 ** 20 for p in pts], s, color=c, label=me, ms=4)
            ax.set_title(f"{mo}, n={n}", fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
            if j == 0:
                ax.set_ylabel("XLA temp MiB")
            if i == len(models) - 1:
                ax.set_xlabel("sequence length T")
    handles = {}
    for ax in axes.flat:
        for h, l in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(l, h)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=min(len(handles), 3), fontsize=8)
    fig.suptitle(f"Gradient memory (compiled temp bytes) vs T; m={inputs}, batch={batch}\n{machine}", fontsize=9)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_speed(rows: List[dict], path: str, machine: str, inputs: int, batch: int, steps: int) -> None:
    """Time per step vs n (log-log), one panel per model, one line per method.

    **Arguments:** `rows` from `speed_sweep`; `path`: PNG file; `machine`, `inputs`, `batch`,
    `steps`: stated in the title.

    **Returns:** nothing.
    """
    plt = _plt()
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(max(4.2 * len(models), 6.0), 4.4), squeeze=False,
                             layout="constrained")
    for j, mo in enumerate(models):
        ax = axes[0][j]
        for me in dict.fromkeys(r["method"] for r in rows):
            pts = sorted((r["n"], r["ms_per_step"]) for r in rows if r["model"] == mo and r["method"] == me)
            if pts:
                c, s = _STYLE.get(me, (None, "o-"))
                ax.loglog([p[0] for p in pts], [p[1] for p in pts], s, color=c, label=me, ms=4)
        ax.set_title(mo, fontsize=9)
        ax.set_xlabel("neurons n")
        widths = sorted({r["n"] for r in rows})
        ax.set_xticks(widths)
        ax.set_xticklabels([str(w) for w in widths])
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
        if j == 0:
            ax.set_ylabel("ms per step (median)")
    handles = {}
    for ax in axes.flat:
        for h, l in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(l, h)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=min(len(handles), 5), fontsize=8)
    fig.suptitle(f"Gradient time per step vs n; m={inputs}, batch={batch}, T={steps}\n{machine}", fontsize=9)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
