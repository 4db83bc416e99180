"""What SNN users draw: spike rasters, membrane traces with their threshold, online-vs-BPTT
gradient agreement, and memory against sequence length.

Every function draws into a matplotlib `Axes` (a new figure when `ax` is None) and returns
it, so panels compose with `plt.subplots`. matplotlib is imported on first use: install the
plot extra (`pip install -e ".[plot]"`) or any extra that includes it (examples, bench).
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

__all__ = ["spike_raster", "membrane_traces", "recording", "gradient_agreement", "memory_vs_length", "save"]


def _plt():
    try:
        import matplotlib
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            "sparseprop.plotting needs matplotlib: pip install -e \".[plot]\" (or pip install matplotlib)") from e
    del matplotlib                 # without a display matplotlib picks the Agg backend itself
    import matplotlib.pyplot as plt
    return plt


def _axes(ax, figsize):
    if ax is not None:
        return ax
    _, ax = _plt().subplots(figsize=figsize)
    return ax


def _time_axis(T, dt):
    t = np.arange(T) if dt is None else np.arange(T) * dt
    return t, ("time step" if dt is None else "time (s)")


def spike_raster(spikes, dt: Optional[float] = None, ax=None, color="k", label: str = "neuron",
                 title: Optional[str] = None, marker_size: float = 12.0):
    """A spike raster: one mark per spike, time on x, neuron on y.

    **Arguments:**

    - `spikes`: `(T, n)` array, nonzero where a neuron spiked (time-major, one example).
    - `dt`: step length in seconds for a time axis in seconds (default: time steps).
    - `ax`: the `Axes` to draw into (default: a new figure).
    - `color`, `label` (y-axis label), `title`, `marker_size`: appearance.

    **Returns:**

    The `Axes`.

    **Raises:**

    `ValueError` if `spikes` is not 2-D; `ModuleNotFoundError` without matplotlib.
    """
    spikes = np.asarray(spikes)
    if spikes.ndim != 2:
        raise ValueError(f"spikes must be (T, n) for one example; got shape {spikes.shape} "
                         f"(index a batch first, e.g. spikes[:, 0])")
    ax = _axes(ax, (8, 3))
    t_idx, n_idx = np.nonzero(spikes)
    t, xlabel = _time_axis(spikes.shape[0], dt)
    ax.scatter(t[t_idx], n_idx, s=marker_size, marker="|", color=color, linewidths=1.0)
    ax.set(xlabel=xlabel, ylabel=label, xlim=(t[0] - 0.5 * (t[1] - t[0] if len(t) > 1 else 1),
                                              t[-1] + 0.5 * (t[1] - t[0] if len(t) > 1 else 1)),
           ylim=(-0.5, spikes.shape[1] - 0.5))
    if title:
        ax.set_title(title)
    return ax


def membrane_traces(v, threshold=None, spikes=None, neurons: Optional[Sequence[int]] = None,
                    dt: Optional[float] = None, ax=None, title: Optional[str] = None):
    """Membrane potentials over time with the firing threshold as a labelled dashed line.

    **Arguments:**

    - `v`: `(T, n)` membrane potentials of one example (or `(T,)` for one neuron).
    - `threshold`: a scalar, or `(n,)` per neuron (one line per drawn neuron), or None.
    - `spikes`: optional `(T, n)` spikes, marked with a dot at the threshold height.
    - `neurons`: which neuron indices to draw (default: the first five).
    - `dt`: step length in seconds (default: time steps); `ax`, `title`: as `spike_raster`.

    **Returns:**

    The `Axes` (with a legend naming each neuron and the threshold).

    **Raises:**

    `ValueError` if `v` is not 1-D or 2-D.
    """
    v = np.asarray(v)
    if v.ndim == 1:
        v = v[:, None]
    if v.ndim != 2:
        raise ValueError(f"v must be (T, n) or (T,) for one example; got shape {v.shape}")
    neurons = list(range(min(5, v.shape[1]))) if neurons is None else list(neurons)
    ax = _axes(ax, (8, 3))
    t, xlabel = _time_axis(v.shape[0], dt)
    thr = None if threshold is None else np.broadcast_to(np.asarray(threshold, float), (v.shape[1],))
    for k, i in enumerate(neurons):
        line, = ax.plot(t, v[:, i], lw=1.0, label=f"neuron {i}")
        if thr is not None and (k == 0 or np.ndim(threshold) > 0):
            ax.axhline(thr[i], ls="--", lw=0.9, color="0.4" if np.ndim(threshold) == 0 else line.get_color(),
                       label="threshold" if k == 0 else None)
        if spikes is not None:
            fired = np.nonzero(np.asarray(spikes)[:, i])[0]
            height = thr[i] if thr is not None else np.max(v[:, i])
            ax.plot(t[fired], np.full(len(fired), height), "o", ms=3, color=line.get_color())
    ax.set(xlabel=xlabel, ylabel="membrane potential")
    ax.legend(loc="best", fontsize=8)
    if title:
        ax.set_title(title)
    return ax


def recording(rec, thresholds=None, layers: Optional[Sequence[int]] = None, dt: Optional[float] = None,
              neurons: Optional[Sequence[int]] = None, max_neurons: int = 200):
    """Every layer of a recorded `Sequential`: a spike raster per layer, and beside it the
    membrane potentials with the layer's threshold (snnTorch's `spk_rec` / `mem_rec` plots).

    **Arguments:**

    - `rec`: the `outputs` of `sparseprop.simulate` (or `learner.run`) on a
      `Sequential(..., record=True)`: a `neurons.Recording` whose leaves are `(T, ...)`,
      one example. A layer's `(T, C, H, W)` output is drawn flattened to `(T, C·H·W)`.
    - `thresholds`: `net.thresholds` (one per layer, None where a layer has none).
    - `layers`: which layer indices to draw (default: those with a membrane potential).
    - `dt`: step length in seconds (default: time steps).
    - `neurons`: the neuron indices whose potentials are drawn (default: the first five).
    - `max_neurons`: rasters show at most this many neurons of a layer (the first ones).

    **Returns:**

    The `Figure`, one row per drawn layer (raster left, potentials right).

    **Raises:**

    `ValueError` if `rec` is not a recording or a layer index is out of range.
    """
    if not hasattr(rec, "spikes") or not hasattr(rec, "potentials"):
        raise ValueError("rec must be the outputs of simulate on a Sequential(..., record=True) "
                         "(a neurons.Recording with spikes and potentials)")
    count = len(rec.spikes)
    layers = [k for k in range(count) if rec.potentials[k] is not None] if layers is None else list(layers)
    if not layers or any(not 0 <= k < count for k in layers):
        raise ValueError(f"layers must be indices in [0, {count}) (default: the layers with potentials); got {layers}")
    thresholds = [None] * count if thresholds is None else list(thresholds)
    flat = lambda a: np.asarray(a).reshape(np.shape(a)[0], -1)   # noqa: E731
    fig, axes = _plt().subplots(len(layers), 2, figsize=(12, 2.6 * len(layers)), squeeze=False,
                                layout="constrained")
    for row, k in zip(axes, layers):
        spikes = flat(rec.spikes[k])[:, :max_neurons]
        spike_raster(spikes, dt=dt, ax=row[0], title=f"layer {k}: output", marker_size=6.0)
        if rec.potentials[k] is None:
            row[1].set_axis_off()
            continue
        membrane_traces(flat(rec.potentials[k]), threshold=thresholds[k], spikes=flat(rec.spikes[k]),
                        neurons=neurons, dt=dt, ax=row[1], title=f"layer {k}: membrane potential")
    return fig


def _flat(tree):
    import jax
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree_util.tree_leaves(tree)])


def gradient_agreement(online, bptt, ax=None, title: Optional[str] = None, label: str = "online"):
    """Scatter of every gradient entry, online against BPTT, with the identity line.

    **Arguments:**

    - `online`, `bptt`: gradient pytrees of the same structure (e.g. `total.grads` of
      `learner.run` and the gradient of `sparseprop.bptt_grad`).
    - `ax`, `title`: as `spike_raster`; `label`: the y-axis name of the online method.

    **Returns:**

    The `Axes`; its legend states the relative error max|online − bptt| / max|bptt|, both
    maxima over every entry of every leaf, and the cosine between the two gradients.

    **Raises:**

    `ValueError` if the two gradients have different sizes.
    """
    a, b = _flat(online), _flat(bptt)
    if a.shape != b.shape:
        raise ValueError(f"the gradients differ in size ({a.size} vs {b.size}); pass pytrees of the same structure")
    ax = _axes(ax, (4, 4))
    scale = np.max(np.abs(b)) or 1.0
    err = float(np.max(np.abs(a - b)) / scale)
    den = np.linalg.norm(a) * np.linalg.norm(b)
    cos = float(a @ b / den) if den > 0 else float("nan")
    lim = 1.05 * max(np.max(np.abs(a)), np.max(np.abs(b)), 1e-30)
    ax.plot([-lim, lim], [-lim, lim], color="0.6", lw=0.8, label="online = BPTT")
    ax.scatter(b, a, s=6, alpha=0.6, color="C3", label=f"max|online − BPTT| / max|BPTT| = {err:.1e}\ncosine {cos:.6f}")
    ax.set(xlabel="BPTT gradient", ylabel=f"{label} gradient", xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal")
    ax.legend(loc="upper left", fontsize=8)
    if title:
        ax.set_title(title)
    return ax


_STYLE = {"bptt": ("k", "o-"), "bptt_checkpoint": ("tab:gray", "s--"), "online_exact": ("tab:red", "^-"),
          "online_eprop": ("tab:orange", "v:")}


def memory_vs_length(lengths: Sequence[int], memory: Mapping[str, Sequence[float]], ax=None,
                     title: Optional[str] = None, ylabel: str = "XLA temp memory (MiB)"):
    """Memory against sequence length T on log-log axes, one line per method.

    **Arguments:**

    - `lengths`: the sequence lengths T.
    - `memory`: method name -> bytes at each T (e.g. `temp_bytes` rows of `sparseprop.bench`);
      drawn in MiB (2**20 bytes).
    - `ax`, `title`: as `spike_raster`; `ylabel`: the y-axis label.

    **Returns:**

    The `Axes`.

    **Raises:**

    `ValueError` if a method has not one value per length.
    """
    ax = _axes(ax, (6, 4))
    for name, values in memory.items():
        if len(values) != len(lengths):
            raise ValueError(f"{name}: {len(values)} memory values for {len(lengths)} lengths")
        color, style = _STYLE.get(name, (None, "o-"))
        ax.loglog(lengths, np.maximum(np.asarray(values, float), 1.0) / 2 ** 20, style, color=color, ms=4, label=name)
    ax.set(xlabel="sequence length T", ylabel=ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return ax


def save(fig_or_ax, path, dpi: int = 120) -> str:
    """Save a figure (or the figure of an `Axes`), creating the folder; close it; return the path.

    **Arguments:**

    - `fig_or_ax`: a matplotlib `Figure` or `Axes`.
    - `path`: the image file (its suffix picks the format).
    - `dpi`: resolution.

    **Returns:**

    `path` as a string.
    """
    import os
    fig = getattr(fig_or_ax, "figure", fig_or_ax)
    os.makedirs(os.path.dirname(os.path.abspath(str(path))), exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    _plt().close(fig)
    return str(path)
