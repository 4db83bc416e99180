"""One NIR node as a discrete-time JAX step: its parameters, its state and its update.

NIR (Pedersen et al., "Neuromorphic intermediate representation: a unified instruction
set for interoperable brain-inspired computing", Nature Communications 2024) defines each
neuron as an ODE in continuous time. Here every ODE is advanced by one forward-Euler step
of length `dt` per call; a spike is `sparseprop.spike(v - v_threshold)` (Heaviside forward,
surrogate backward) taken on the Euler-updated potential, and a spiking neuron is then set
to `v_reset`:

    LIF      v' = v + dt/tau · ((v_leak - v) + r·I);  z = H(v' - v_threshold);  v⁺ = v' + z·(v_reset - v')
    CubaLIF  I' = I + dt/tau_syn · (w_in·S - I);  then LIF on I' with tau_mem
    LI       v' = v + dt/tau · ((v_leak - v) + r·I);  output v'
    CubaLI   I' as CubaLIF, then LI on I' with tau_mem
    I / IF   v' = v + dt · r·I  (IF: spike and reset as LIF)
    Delay    y_t = x_{t-k} with k = round(delay / dt) steps, per element (a delay line of k slots)

Stateless nodes act within the step: Affine `W x + b`, Linear `W x`, Scale `s ⊙ x`,
Threshold `H(x - threshold)`, Flatten, Conv1d/Conv2d (`lax.conv_general_dilated`, inputs
without a batch axis: `(C, N)` / `(C, H, W)`), SumPool2d/AvgPool2d (`lax.reduce_window`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np
from jax import lax

from ..surrogates import spike

#: The floating-point fields of each node type that become trainable parameters.
PARAMETERS = {
    "LIF": ("tau", "r", "v_leak", "v_threshold", "v_reset"),
    "CubaLIF": ("tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "v_reset", "w_in"),
    "LI": ("tau", "r", "v_leak"),
    "CubaLI": ("tau_syn", "tau_mem", "r", "v_leak", "w_in"),
    "I": ("r",),
    "IF": ("r", "v_threshold", "v_reset"),
    "Affine": ("weight", "bias"),
    "Linear": ("weight",),
    "Scale": ("scale",),
    "Threshold": ("threshold",),
    "Conv1d": ("weight", "bias"),
    "Conv2d": ("weight", "bias"),
    "Delay": (),
    "Flatten": (),
    "SumPool2d": (),
    "AvgPool2d": (),
    "Input": (),
    "Output": (),
    "Identity": (),
}

SUPPORTED = tuple(PARAMETERS)


@dataclass
class Node:
    """A node ready to step: `step(params, state, x) -> (new_state, y)` and its initial state."""
    kind: str
    step: Callable
    state0: dict = field(default_factory=dict)
    output_shape: Any = None


def _euler_lif(p, v, current, dt, tau, surrogate, fire):
    v = v + dt / tau * ((p["v_leak"] - v) + p["r"] * current)
    if not fire:
        return v, v
    z = spike(v - p["v_threshold"], surrogate)
    return v + z * (p["v_reset"] - v), z


def _euler_if(p, v, current, dt, surrogate, fire):
    v = v + dt * p["r"] * current
    if not fire:
        return v, v
    z = spike(v - p["v_threshold"], surrogate)
    return v + z * (p["v_reset"] - v), z


def _pairs(value, n):
    value = np.atleast_1d(np.asarray(value)).astype(int)
    return tuple(int(v) for v in (np.repeat(value, n) if value.size == 1 else value))


def _conv(node, ndim):
    stride = _pairs(node.stride, ndim)
    dilation = _pairs(node.dilation, ndim)
    if isinstance(node.padding, str):
        padding = node.padding.upper()
    else:
        padding = [(p, p) for p in _pairs(node.padding, ndim)]
    spec = ("NCH", "OIH", "NCH") if ndim == 1 else ("NCHW", "OIHW", "NCHW")
    groups = int(node.groups)

    def step(p, s, x):
        y = lax.conv_general_dilated(x[None], p["weight"], window_strides=stride, padding=padding,
                                     rhs_dilation=dilation, dimension_numbers=spec,
                                     feature_group_count=groups)[0]
        return s, y + p["bias"].reshape((-1,) + (1,) * ndim)
    return step


def _pool(node, average):
    kernel = _pairs(node.kernel_size, 2)
    stride = _pairs(node.stride, 2)
    padding = [(0, 0)] + [(p, p) for p in _pairs(node.padding, 2)]
    size = kernel[0] * kernel[1]

    def step(p, s, x):
        y = lax.reduce_window(x, np.zeros((), x.dtype), lax.add, (1,) + kernel, (1,) + stride, padding)
        return s, y / size if average else y
    return step


def _flatten(node):
    start, end = int(node.start_dim), int(node.end_dim)

    def step(p, s, x):
        shape = x.shape
        e = end % len(shape)
        return s, x.reshape(shape[:start] + (-1,) + shape[e + 1:])
    return step


def build(name: str, node, dt: float, dtype, surrogate) -> Node:
    """The step of one NIR node (see the module docstring for the discretisation).

    **Arguments:**

    - `name`: the node's name in the graph (for error messages).
    - `node`: a `nir` node instance.
    - `dt`: the time step, in the graph's time unit (the unit of its `tau` and `delay`).
    - `dtype`: the float dtype of the state.
    - `surrogate`: the `sparseprop.surrogates.Surrogate` of every threshold (None: the default).

    **Returns:**

    A `Node`.

    **Raises:**

    `NotImplementedError` for a node type outside `SUPPORTED`.
    """
    kind = type(node).__name__
    if kind not in PARAMETERS:
        raise NotImplementedError(
            f"NIR node {name!r} has type {kind}, which sparseprop.nir does not load; supported: "
            f"{', '.join(SUPPORTED)}. Flatten nested subgraphs into one graph first.")
    if kind in ("LIF", "LI"):
        fire = kind == "LIF"
        shape = np.shape(node.tau)

        def step(p, s, x):
            v, y = _euler_lif(p, s["v"], x, dt, p["tau"], surrogate, fire)
            return {"v": v}, y
        return Node(kind, step, {"v": jnp.asarray(node.v_leak, dtype)}, shape)
    if kind in ("CubaLIF", "CubaLI"):
        fire = kind == "CubaLIF"
        shape = np.shape(node.tau_mem)

        def step(p, s, x):
            current = s["i"] + dt / p["tau_syn"] * (p["w_in"] * x - s["i"])
            v, y = _euler_lif(p, s["v"], current, dt, p["tau_mem"], surrogate, fire)
            return {"i": current, "v": v}, y
        return Node(kind, step, {"i": jnp.zeros(shape, dtype), "v": jnp.asarray(node.v_leak, dtype)}, shape)
    if kind in ("I", "IF"):
        fire = kind == "IF"
        shape = np.shape(node.r)

        def step(p, s, x):
            v, y = _euler_if(p, s["v"], x, dt, surrogate, fire)
            return {"v": v}, y
        return Node(kind, step, {"v": jnp.zeros(shape, dtype)}, shape)
    if kind == "Delay":
        steps = np.rint(np.asarray(node.delay, float) / dt).astype(int)
        if np.any(steps < 0):
            raise ValueError(f"NIR Delay node {name!r} has a negative delay {node.delay}")
        depth = int(steps.max(initial=0))
        shape = np.shape(node.delay)
        index = jnp.asarray(steps)[..., None]

        def step(p, s, x):
            # Slot 0 is this step's input, slot k the input k steps ago: a per-element delay line.
            line = jnp.concatenate([x[..., None], s["line"]], axis=-1)
            return {"line": line[..., :-1]}, jnp.take_along_axis(line, index, axis=-1)[..., 0]
        if depth == 0:
            return Node(kind, lambda p, s, x: (s, x), {}, shape)
        return Node(kind, step, {"line": jnp.zeros(shape + (depth,), dtype)}, shape)
    if kind == "Affine":
        return Node(kind, lambda p, s, x: (s, p["weight"] @ x + p["bias"]), {}, np.shape(node.bias))
    if kind == "Linear":
        return Node(kind, lambda p, s, x: (s, p["weight"] @ x), {}, np.shape(node.weight)[:1])
    if kind == "Scale":
        return Node(kind, lambda p, s, x: (s, p["scale"] * x), {}, np.shape(node.scale))
    if kind == "Threshold":
        return Node(kind, lambda p, s, x: (s, spike(x - p["threshold"], surrogate)), {},
                    np.shape(node.threshold))
    if kind in ("Conv1d", "Conv2d"):
        return Node(kind, _conv(node, 1 if kind == "Conv1d" else 2), {}, _output_shape(node))
    if kind in ("SumPool2d", "AvgPool2d"):
        return Node(kind, _pool(node, kind == "AvgPool2d"), {}, _output_shape(node))
    if kind == "Flatten":
        return Node(kind, _flatten(node), {}, _output_shape(node))
    return Node(kind, lambda p, s, x: (s, x), {}, _output_shape(node))   # Input, Output, Identity


def _output_shape(node):
    out = getattr(node, "output_type", None) or {}
    shape = out.get("output")
    return None if shape is None else tuple(int(v) for v in np.asarray(shape))
