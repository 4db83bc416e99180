"""A `neurons.Sequential` as a NIR graph, in NIR's forward-Euler semantics (as `load` reads it).

Each discrete leak `α` becomes a time constant `τ = dt/(1 − α)` with input resistance
`r = 1/(1 − α)`, so that one Euler step of NIR's ODE, `v + dt/τ·(−v + r·I)`, is `α v + I`:
loading the graph again gives the same outputs (up to rounding in `dt/τ·r`).

| sparseprop layer                        | NIR nodes                                               |
|-----------------------------------------|---------------------------------------------------------|
| `LIF`, `layers.Leaky`, reset zero or multiplicative | (`Linear` w_in) → `LIF` (v_reset 0)          |
| same, reset by subtraction              | (`Linear`) → `LI` → `Threshold`, and `Threshold` → `Scale(−α θ)` → `LI` one step later |
| `CurrentLIF`                            | `Linear` → `CubaLIF` (zero reset), or `LI` (synapse) → `LI` → `Threshold` with the `Scale` reset edge |
| `recurrent=True`                        | a `Linear` w_rec edge from the spikes back to the input, one step later |
| `LeakyIntegrator`                       | `Affine` → `LI`                                          |
| `layers.Linear`, `Conv1d`, `Conv2d`     | `Affine` / `Linear`, `Conv1d`, `Conv2d`                  |
| `layers.AvgPool2d`, `Flatten`           | `AvgPool2d`, `Flatten`                                   |
| `layers.Filter` (κ < 1), `SpikeCount`   | `LI`, `I`                                                |
| `layers.Dropout`                        | nothing (NIR describes inference: no dropout)           |

Other layers (ALIF, Izhikevich, AdEx, resonate-and-fire, LRU, GRU, max pooling, first
spike times, maxima over time) have no NIR node and are refused.
"""
from __future__ import annotations

import numpy as np

from .. import layers, neurons


def _nir():
    from .graph import _nir as nir
    return nir()


def _leak(alpha, shape, dt):
    """`(tau, r)` of NIR's leaky node for a discrete leak α."""
    alpha = np.broadcast_to(np.asarray(alpha, float), shape)
    if np.any(alpha >= 1.0) or np.any(alpha < 0.0):
        raise ValueError("a leak alpha outside [0, 1) has no NIR time constant")
    return dt / (1.0 - alpha), 1.0 / (1.0 - alpha)


class _Builder:
    """Collects nodes and edges; `add` returns the node's name."""

    def __init__(self, nir, dt):
        self.nir, self.dt, self.nodes, self.edges = nir, dt, {}, []

    def add(self, name, node, after=None):
        self.nodes[name] = node
        if after is not None:
            self.edges.append((after, name))
        return name

    def spiking(self, k, alpha, theta, reset, shape, after, synapse_alpha=None):
        """A LIF (or current-based LIF) population after node `after`: (entry, exit) names."""
        nir = self.nir
        tau, r = _leak(alpha, shape, self.dt)
        theta = np.full(shape, float(theta))
        zeros = np.zeros(shape)
        if reset not in ("zero", "multiplicative", "subtract"):
            raise NotImplementedError(f"layer {k}: reset {reset!r} has no NIR form")
        if reset != "subtract":             # both reset the potential to 0 after a spike
            if synapse_alpha is None:
                node = nir.LIF(tau=tau, r=r, v_leak=zeros, v_threshold=theta, v_reset=zeros)
            else:
                tau_syn, w_in = _leak(synapse_alpha, shape, self.dt)
                node = nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau, r=r, v_leak=zeros, v_threshold=theta,
                                   v_reset=zeros, w_in=w_in)
            name = self.add(f"{k}_lif", node, after)
            return name, name
        entry = after
        if synapse_alpha is not None:
            tau_syn, r_syn = _leak(synapse_alpha, shape, self.dt)
            entry = self.add(f"{k}_synapse", nir.LI(tau=tau_syn, r=r_syn, v_leak=zeros), after)
        first = f"{k}_synapse" if synapse_alpha is not None else f"{k}_membrane"
        membrane = self.add(f"{k}_membrane", nir.LI(tau=tau, r=r, v_leak=zeros), entry)
        spikes = self.add(f"{k}_spike", nir.Threshold(theta), membrane)
        # subtraction of α·θ·z_{t−1}: a cycle, so the loader reads it one step later
        scale = -np.broadcast_to(np.asarray(alpha, float), shape) * theta
        self.add(f"{k}_reset", nir.Scale(scale), spikes)
        self.edges.append((f"{k}_reset", membrane))
        return first, spikes


def export(net, params, sizes, dt: float = 1.0):
    """The NIR graph of a `neurons.Sequential` and its (trained) parameters.

    **Arguments:**

    - `net`: a `sparseprop.neurons.Sequential` of the layers listed in this module's table.
    - `params`: its parameters (`net.init_params(...)`, possibly trained).
    - `sizes`: as for `net.init_params` (the input's shape, then the catalogue neurons' sizes).
    - `dt`: the time step in the graph's time unit (NIR time constants are `dt/(1 − α)`);
      stored in the graph's `metadata["dt"]`, so `load(graph)` needs no `dt`.

    **Returns:**

    A `nir.NIRGraph` with nodes named `"{layer index}_{role}"` (`"0_conv"`, `"1_lif"`, ...),
    one Input and one Output node.

    **Raises:**

    `NotImplementedError` for a layer without a NIR form; `ValueError` for a leak outside
    [0, 1) or a non-positive `dt`.
    """
    nir = _nir()
    if not dt > 0:
        raise ValueError(f"dt must be a positive time step, got {dt}")
    b = _Builder(nir, float(dt))
    shapes = net.shapes(sizes)
    last = b.add("input", nir.Input(np.array(shapes[0][0])))
    for k, (layer, p, (in_shape, out_shape, _)) in enumerate(zip(net.layers, params, shapes)):
        last = _layer(b, k, layer, {f: np.asarray(v, float) for f, v in p.items()}, in_shape, out_shape, last)
    b.add("output", nir.Output(np.array(shapes[-1][1])), last)
    return nir.NIRGraph(nodes=b.nodes, edges=b.edges, metadata={"dt": float(dt), "source": "sparseprop"},
                        type_check=False)


def _layer(b, k, layer, p, in_shape, out_shape, last):
    """Add one layer's nodes after `last`; return the name of the node that carries its output."""
    nir, kind = b.nir, type(layer).__name__
    if isinstance(layer, layers.Leaky):
        return b.spiking(k, p["alpha"], layer.threshold, layer.reset, out_shape, last)[1]
    if type(layer) in (neurons.LIF, neurons.CurrentLIF):
        current = b.add(f"{k}_w_in", nir.Linear(p["w_in"]), last)
        synapse = p.get("alpha_syn") if type(layer) is neurons.CurrentLIF else None
        entry, spikes = b.spiking(k, p["alpha"], layer.threshold, layer.reset, out_shape, current, synapse)
        if layer.recurrent:               # W_rec z_{t−1}: a cycle, read one step later
            b.add(f"{k}_w_rec", nir.Linear(p["w_rec"]), spikes)
            b.edges.append((f"{k}_w_rec", entry))
        return spikes
    if type(layer) is neurons.LeakyIntegrator:
        tau, r = _leak(p["alpha"], out_shape, b.dt)
        affine = b.add(f"{k}_w_in", nir.Affine(p["w_in"], p["bias"]), last)
        return b.add(f"{k}_li", nir.LI(tau=tau, r=r, v_leak=np.zeros(out_shape)), affine)
    if isinstance(layer, layers.Linear):
        node = nir.Affine(p["weight"], p["bias"]) if layer.bias else nir.Linear(p["weight"])
        return b.add(f"{k}_linear", node, last)
    if isinstance(layer, (layers.Conv1d, layers.Conv2d)):
        padding = layer.padding.lower() if isinstance(layer.padding, str) else np.array(
            layers._tuple(layer.padding, layer.ndim, "padding"))
        bias = p["bias"] if layer.bias else np.zeros(layer.out_channels)
        cls, spatial = (nir.Conv2d, tuple(in_shape[1:])) if layer.ndim == 2 else (nir.Conv1d, int(in_shape[1]))
        node = cls(input_shape=spatial, weight=p["weight"], stride=np.array(layers._tuple(layer.stride, layer.ndim, "stride")),
                   padding=padding, dilation=np.array(layers._tuple(layer.dilation, layer.ndim, "dilation")),
                   groups=layer.groups, bias=bias)
        return b.add(f"{k}_conv", node, last)
    if isinstance(layer, layers.AvgPool2d):
        window, stride, padding = layer._window()
        node = nir.AvgPool2d(kernel_size=np.array(window[1:]), stride=np.array(stride[1:]),
                             padding=np.array([lo for lo, _ in padding[1:]]))
        return b.add(f"{k}_pool", node, last)
    if isinstance(layer, layers.Flatten):
        node = nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=0, end_dim=-1)
        return b.add(f"{k}_flatten", node, last)
    if isinstance(layer, layers.Filter):
        if layer.decay == 1.0:
            return b.add(f"{k}_integrator", nir.I(r=np.full(out_shape, 1.0 / b.dt)), last)
        tau, r = _leak(layer.decay, out_shape, b.dt)
        return b.add(f"{k}_filter", nir.LI(tau=tau, r=r, v_leak=np.zeros(out_shape)), last)
    if isinstance(layer, layers.Dropout):
        return last
    raise NotImplementedError(f"layer {k} ({kind}) has no NIR node in NIR 1.0; exportable: LIF, CurrentLIF, "
                              f"LeakyIntegrator and the layers Leaky, Linear, Conv1d, Conv2d, AvgPool2d, Flatten, "
                              f"Filter, SpikeCount, Dropout")
