"""Layers for `neurons.Sequential` beside the neuron catalogue, as snnTorch, norse or spyx
users stack them: synapses without neurons (`Linear`, `Conv1d`, `Conv2d`), a weightless
spiking neuron (`Leaky`, snnTorch's `snn.Leaky`), pooling, flatten, dropout, a synaptic
`Filter`, and readouts that accumulate over time (`SpikeCount`, `FirstSpikeTime`, `MaxOverTime`) for the
sequence losses of `sparseprop.losses`.

Every layer is a plain step function `layer(params, state, x) -> (new_state, y)` for one
example and one time step (no batch axis: a convolution's input is `(C, H, W)`), traced
like any other model. A layer infers its output shape from its input shape:

- `layer.output_shape(in_shape) -> tuple`;
- `layer.init_params(key, in_shape, dtype=None) -> dict` (empty for a layer without weights);
- `layer.init_state(in_shape, dtype=None, batch=None) -> dict` (empty when stateless).

```python
from sparseprop import layers, neurons
net = neurons.Sequential((
    layers.Conv2d(2, 8, 3), layers.Leaky(),                   # conv 2->8 into LIF neurons
    layers.AvgPool2d(2),
    layers.Conv2d(8, 16, 3, padding="VALID"), layers.Leaky(leak="channel"),
    layers.Flatten(), neurons.LeakyIntegrator()))             # a catalogue neuron: needs a size
params = net.init_params(key, ((2, 10, 10), 10))              # input shape, then 10 readout units
```

A convolution feeding `Leaky(leak="shared")` (one leak for the whole layer, reset by
subtraction and detached: the defaults) has a post-synaptic Jacobian that is a scalar times
the identity, so the tracer stores the kernel's eligibility as the filtered input (the
convolution's input shape) instead of one trace per output neuron and tap (see
`docs/layers.md`).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .neurons import LIF, _float

__all__ = ["Layer", "Linear", "Conv1d", "Conv2d", "Leaky", "AvgPool2d", "MaxPool2d", "Flatten", "Dropout",
           "Filter", "SpikeCount", "FirstSpikeTime", "MaxOverTime", "LEAKS"]

LEAKS = ("shared", "channel", "neuron")


def _tuple(value, n, what):
    """An int or a sequence of n ints as a tuple of n ints."""
    if isinstance(value, (int, np.integer)):
        return (int(value),) * n
    value = tuple(int(v) for v in value)
    if len(value) != n:
        raise ValueError(f"{what} must be an int or {n} ints, got {value}")
    return value


def _batched(shape, batch):
    if batch is None:
        return tuple(shape)
    if int(batch) < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    return (int(batch),) + tuple(shape)


class Layer:
    """Base of the shape-inferring layers: `output_shape`, `init_params`, `init_state`, `__call__`.

    The defaults describe a stateless layer without parameters that keeps its input's shape.
    """

    def __call__(self, params, state, x):  # pragma: no cover - interface
        raise NotImplementedError

    def output_shape(self, in_shape: tuple) -> tuple:
        """The shape of `y` for an input of shape `in_shape` (one example)."""
        return tuple(in_shape)

    def init_params(self, key, in_shape: tuple, dtype=None) -> dict:
        """The layer's parameters for an input of shape `in_shape` (none by default)."""
        return {}

    def init_state(self, in_shape: tuple, dtype=None, batch=None) -> dict:
        """The layer's resting state for an input of shape `in_shape` (none by default)."""
        return {}


# -- synapses --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Linear(Layer):
    """A dense synapse without neurons: `y = W x (+ b)` (torch's `nn.Linear`).

    **Arguments:**

    - `in_features`, `out_features`: sizes of `x` (flat) and `y`.
    - `bias`: add a learned bias `b`.
    - `gain`: weights are drawn with std `gain/√in_features`.

    Parameters: `weight` (out, in) [, `bias` (out,)]. No state.
    """
    in_features: int
    out_features: int
    bias: bool = True
    gain: float = 2.0

    def __call__(self, params, state, x):
        y = params["weight"] @ x
        return state, (y + params["bias"] if self.bias else y)

    def output_shape(self, in_shape):
        if tuple(in_shape) != (self.in_features,):
            raise ValueError(f"Linear({self.in_features}, {self.out_features}) got an input of shape "
                             f"{tuple(in_shape)}; put layers.Flatten() before it for a multi-axis input")
        return (self.out_features,)

    def init_params(self, key, in_shape, dtype=None):
        """Weights with std `gain/√in_features`, zero bias.

        **Arguments:** `key` (PRNG key), `in_shape` (`(in_features,)`), `dtype` (float dtype).

        **Returns:** `{"weight": (out, in)[, "bias": (out,)]}`.
        """
        self.output_shape(in_shape)
        dtype = _float(dtype)
        params = {"weight": self.gain / math.sqrt(self.in_features)
                  * jax.random.normal(key, (self.out_features, self.in_features), dtype)}
        if self.bias:
            params["bias"] = jnp.zeros((self.out_features,), dtype)
        return params


@dataclasses.dataclass(frozen=True)
class _ConvNd(Layer):
    """An N-d convolution synapse (`lax.conv_general_dilated`), channels first, no batch axis."""
    in_channels: int
    out_channels: int
    kernel_size: Union[int, Sequence[int]]
    stride: Union[int, Sequence[int]] = 1
    padding: Union[str, int, Sequence[int]] = "SAME"
    dilation: Union[int, Sequence[int]] = 1
    groups: int = 1
    bias: bool = True
    gain: float = 2.0
    ndim = 2

    def __post_init__(self):
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"in_channels ({self.in_channels}) and out_channels ({self.out_channels}) must "
                             f"be multiples of groups ({self.groups})")
        if isinstance(self.padding, str) and self.padding.upper() not in ("SAME", "VALID"):
            raise ValueError(f"padding must be 'SAME', 'VALID', an int or {self.ndim} ints, got {self.padding!r}")

    @property
    def kernel_shape(self) -> tuple:
        """`(out_channels, in_channels / groups, *kernel_size)` (OIHW)."""
        return (self.out_channels, self.in_channels // self.groups) + _tuple(self.kernel_size, self.ndim, "kernel_size")

    def _padding(self):
        if isinstance(self.padding, str):
            return self.padding.upper()
        return [(p, p) for p in _tuple(self.padding, self.ndim, "padding")]

    def _conv(self, x, weight):
        # lax wants a batch axis: add it and take it away (one example per call).
        return lax.conv_general_dilated(x[None], weight, _tuple(self.stride, self.ndim, "stride"), self._padding(),
                                        rhs_dilation=_tuple(self.dilation, self.ndim, "dilation"),
                                        feature_group_count=self.groups)[0]

    def __call__(self, params, state, x):
        y = self._conv(x, params["weight"])
        if self.bias:
            y = y + params["bias"].reshape((-1,) + (1,) * self.ndim)
        return state, y

    def output_shape(self, in_shape):
        in_shape = tuple(in_shape)
        if len(in_shape) != self.ndim + 1 or in_shape[0] != self.in_channels:
            raise ValueError(f"{type(self).__name__} with {self.in_channels} input channels needs an input of shape "
                             f"(C={self.in_channels}, {', '.join('HW'[-self.ndim:])}) without a batch axis; "
                             f"got {in_shape}")
        x = jax.ShapeDtypeStruct(in_shape, jnp.float32)
        w = jax.ShapeDtypeStruct(self.kernel_shape, jnp.float32)
        return tuple(jax.eval_shape(self._conv, x, w).shape)

    def init_params(self, key, in_shape, dtype=None):
        """Kernel with std `gain/√fan_in` (fan_in = in_channels/groups × taps), zero bias.

        **Arguments:** `key` (PRNG key), `in_shape` (`(C_in, *spatial)`), `dtype` (float dtype).

        **Returns:** `{"weight": kernel_shape[, "bias": (out_channels,)]}`.
        """
        self.output_shape(in_shape)
        dtype = _float(dtype)
        fan_in = int(np.prod(self.kernel_shape[1:]))
        params = {"weight": self.gain / math.sqrt(fan_in) * jax.random.normal(key, self.kernel_shape, dtype)}
        if self.bias:
            params["bias"] = jnp.zeros((self.out_channels,), dtype)
        return params


@dataclasses.dataclass(frozen=True)
class Conv2d(_ConvNd):
    """A 2-D convolution synapse without neurons, one example `(C, H, W)` → `(O, H', W')`.

    `y = K ⋆ x (+ b)` by `lax.conv_general_dilated` (cross-correlation, as torch's `nn.Conv2d`).

    **Arguments:**

    - `in_channels`, `out_channels`, `kernel_size` (int or (kh, kw)).
    - `stride`, `dilation`: ints or pairs; `padding`: `"SAME"` (default), `"VALID"`, an int or a
      pair (symmetric zero padding per spatial axis); `groups`: feature groups.
    - `bias`: a learned bias per output channel; `gain`: kernel std is `gain/√fan_in`.

    Parameters: `weight` (O, C/groups, kh, kw) [, `bias` (O,)]. No state.
    """
    ndim = 2


@dataclasses.dataclass(frozen=True)
class Conv1d(_ConvNd):
    """A 1-D convolution synapse without neurons, one example `(C, L)` → `(O, L')`.

    **Arguments:** as `Conv2d`, with one spatial axis.

    Parameters: `weight` (O, C/groups, k) [, `bias` (O,)]. No state.
    """
    ndim = 1


# -- neurons without weights -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Leaky(LIF):
    """A layer of LIF neurons without weights, driven by the previous layer's output (snnTorch's
    `snn.Leaky`): the neuron after a `Conv2d` or a `Linear`.

    With `z_{t−1} = H(v_{t−1} − θ)`, `r = sg(z_{t−1})` (or `z_{t−1}` if `detach_reset=False`):

        v_t = α ⊙ reset(v_{t−1}) + x_t,    y_t = z_t = H(v_t − θ)      (reset as in `neurons.LIF`)

    **Arguments:**

    - `leak`: the shape of α: `"shared"` (one scalar for the layer), `"channel"` (one per
      channel: `(C, 1, ..., 1)`) or `"neuron"` (the input's shape).
    - `reset`, `threshold`, `surrogate`: as for `neurons.LIF`.
    - `detach_reset`: default True. With a shared leak and a detached subtractive reset, the
      potential's Jacobian is α times the identity, and a convolution's kernel trace is stored
      as the filtered input (factorised); a differentiated or `zero` reset makes it per neuron.
    - `init_leak`: the initial α.

    Parameters: `alpha` (), `(C, 1, ...)` or the input's shape. State: `{"v": input shape}`.
    """
    detach_reset: bool = True
    leak: str = "shared"
    init_leak: float = 0.9

    def __post_init__(self):
        super().__post_init__()
        if self.leak not in LEAKS:
            raise ValueError(f"leak must be one of {LEAKS}, got {self.leak!r}")
        if self.recurrent:
            raise ValueError("Leaky has no weights, so no recurrent ones: use neurons.LIF(recurrent=True)")

    def __call__(self, params, state, x):
        z_prev = self.spike(state["v"])
        v = self.leak_and_reset(params["alpha"], state["v"], z_prev) + x
        return {"v": v}, self.spike(v)

    def output_shape(self, in_shape):
        return tuple(in_shape)

    def init_params(self, key, in_shape, dtype=None):
        """`alpha = init_leak`, of the shape `leak` says.

        **Arguments:** `key` (unused: deterministic), `in_shape`, `dtype`.

        **Returns:** `{"alpha": ...}`.
        """
        in_shape = tuple(in_shape)
        shape = {"shared": (), "channel": in_shape[:1] + (1,) * (len(in_shape) - 1), "neuron": in_shape}[self.leak]
        return {"alpha": jnp.full(shape, self.init_leak, _float(dtype))}

    def init_state(self, in_shape, dtype=None, batch=None):
        """Resting state `v = 0` of the input's shape (`(batch, *in_shape)` with a batch).

        **Arguments:** `in_shape`, `dtype`, `batch`.

        **Returns:** `{"v": ...}`.
        """
        return {"v": jnp.zeros(_batched(in_shape, batch), _float(dtype))}


# -- pooling, flatten, dropout -----------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Pool2d(Layer):
    kernel_size: Union[int, Sequence[int]]
    stride: Optional[Union[int, Sequence[int]]] = None
    padding: Union[int, Sequence[int]] = 0

    def _window(self):
        kernel = _tuple(self.kernel_size, 2, "kernel_size")
        stride = kernel if self.stride is None else _tuple(self.stride, 2, "stride")
        padding = [(0, 0)] + [(p, p) for p in _tuple(self.padding, 2, "padding")]
        return (1,) + kernel, (1,) + stride, padding

    def output_shape(self, in_shape):
        if len(in_shape) != 3:
            raise ValueError(f"{type(self).__name__} needs a (C, H, W) input without a batch axis; got {tuple(in_shape)}")
        return tuple(jax.eval_shape(lambda x: self(None, {}, x)[1], jax.ShapeDtypeStruct(tuple(in_shape), jnp.float32)).shape)


@dataclasses.dataclass(frozen=True)
class AvgPool2d(_Pool2d):
    """Average pooling over `(C, H, W)` (`lax.reduce_window` sum / window size; padding counts as 0).

    **Arguments:** `kernel_size`, `stride` (default: the kernel size), `padding`: ints or pairs.
    No parameters, no state.
    """

    def __call__(self, params, state, x):
        window, stride, padding = self._window()
        total = lax.reduce_window(x, np.zeros((), x.dtype), lax.add, window, stride, padding)
        return state, total / (window[1] * window[2])


@dataclasses.dataclass(frozen=True)
class MaxPool2d(_Pool2d):
    """Max pooling over `(C, H, W)` (`lax.reduce_window` max; padding counts as −∞).

    On spikes the derivative reaches the first maximal input of each window (JAX's rule for
    `reduce_window` max). No parameters, no state. NIR 1.0 has no max-pooling node:
    `sparseprop.nir.export` refuses it.

    **Arguments:** `kernel_size`, `stride` (default: the kernel size), `padding`: ints or pairs.
    """

    def __call__(self, params, state, x):
        window, stride, padding = self._window()
        return state, lax.reduce_window(x, np.array(-np.inf, x.dtype), lax.max, window, stride, padding)


@dataclasses.dataclass(frozen=True)
class Flatten(Layer):
    """Every axis of one example into one: `(C, H, W)` → `(C·H·W,)` (row-major, as torch's
    `nn.Flatten` on a batch). No parameters, no state."""

    def __call__(self, params, state, x):
        return state, x.reshape(-1)

    def output_shape(self, in_shape):
        return (int(np.prod(in_shape)),)


@dataclasses.dataclass(frozen=True)
class Dropout(Layer):
    """Dropout with one mask per sequence ("variational" dropout of Gal & Ghahramani 2016).

    `y_t = m ⊙ x_t`, where the mask `m` (0 with probability `rate`, else `1/(1 − rate)`) is
    drawn when the state is initialised and is carried, unchanged, in the state. Online, the
    same units are dropped at every step of a stream until the state is initialised again
    (a new mask per sequence: `net.init_state(sizes, key=k)` with a fresh key); a mask per
    step would need a key per step in the input. Without a key the mask is all ones: no
    dropout, which is the evaluation mode.

    **Arguments:**

    - `rate`: the probability of dropping a unit, in [0, 1).

    No parameters. State: `{"mask": input shape}` (not learned: no gradient flows to it).
    """
    rate: float = 0.5

    def __post_init__(self):
        if not 0.0 <= self.rate < 1.0:
            raise ValueError(f"rate must be in [0, 1), got {self.rate}")

    def __call__(self, params, state, x):
        return state, state["mask"] * x

    def init_state(self, in_shape, dtype=None, batch=None, key=None):
        """The mask: all ones without `key`; else drawn (one per example with a batch).

        **Arguments:** `in_shape`, `dtype`, `batch`; `key`: a PRNG key, or None for no dropout.

        **Returns:** `{"mask": ...}`.
        """
        shape, dtype = _batched(in_shape, batch), _float(dtype)
        if key is None:
            return {"mask": jnp.ones(shape, dtype)}
        keep = jax.random.bernoulli(key, 1.0 - self.rate, shape)
        return {"mask": keep.astype(dtype) / (1.0 - self.rate)}


# -- readouts over time ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Filter(Layer):
    """A fixed low-pass filter of the input (a synaptic trace): `s_t = κ s_{t−1} + x_t`, `y_t = s_t`.

    Between spiking neurons and a `Linear` readout it gives the readout `W s_t`, a leaky
    integrator of the spikes whose state stays per hidden neuron (a readout potential
    `o_t = κ o_{t−1} + W z_t` mixes every hidden neuron into each state entry, and makes the
    exact traces of earlier layers dense; both readouts give the same output).

    **Arguments:** `decay`: κ (not learned). No parameters. State: `{"trace": input shape}`.
    """
    decay: float = 0.8

    def __call__(self, params, state, x):
        trace = self.decay * state["trace"] + x
        return {"trace": trace}, trace

    def init_state(self, in_shape, dtype=None, batch=None):
        """`trace = 0`. **Arguments:** `in_shape`, `dtype`, `batch`. **Returns:** the state dict."""
        return {"trace": jnp.zeros(_batched(in_shape, batch), _float(dtype))}


@dataclasses.dataclass(frozen=True)
class SpikeCount(Filter):
    """The running sum of the input over time: `c_t = c_{t−1} + x_t`, `y_t = c_t` (a `Filter`
    with κ = 1).

    On spikes this is the spike count so far (rate coding); on potentials, their integral.
    A loss on `y` at the last step (`sparseprop.losses.at_last_step`) is a loss on the count
    of the whole sequence, and its online gradient is exact: the count is a state.
    No parameters. State: `{"trace": input shape}`.
    """
    decay: float = 1.0


@dataclasses.dataclass(frozen=True)
class FirstSpikeTime(Layer):
    """The first spike time of each input so far, in steps, differentiable through the spikes.

        q_t = q_{t−1} ⊙ (1 − x_t)    (1 while silent, 0 from the first spike on)
        τ_t = τ_{t−1} + q_t,          y_t = τ_t

    At the last step `t = T − 1`, `τ` is the index of each input's first spike, or `T` if it
    never fired. With spikes from `sparseprop.spike`, the derivative of `τ` reaches every
    step's potential through the surrogate (an earlier spike lowers `τ`).
    No parameters. State: `{"silent": input shape, "time": input shape}`.
    """

    def __call__(self, params, state, x):
        silent = state["silent"] * (1.0 - x)
        time = state["time"] + silent
        return {"silent": silent, "time": time}, time

    def init_state(self, in_shape, dtype=None, batch=None):
        """`silent = 1`, `time = 0`. **Arguments:** `in_shape`, `dtype`, `batch`. **Returns:** the state dict."""
        shape, dtype = _batched(in_shape, batch), _float(dtype)
        return {"silent": jnp.ones(shape, dtype), "time": jnp.zeros(shape, dtype)}


@dataclasses.dataclass(frozen=True)
class MaxOverTime(Layer):
    """The running maximum of the input over time: `m_t = max(m_{t−1}, x_t)`, `y_t = m_t`.

    On a readout's membrane potential, a loss at the last step is snnTorch's
    `ce_max_membrane_loss` (the derivative reaches the step where the maximum was taken).
    The state starts at `initial` (default −1e9, a finite stand-in for −∞ that keeps the
    traces finite).
    No parameters. State: `{"max": input shape}`.
    """
    initial: float = -1e9

    def __call__(self, params, state, x):
        m = jnp.maximum(state["max"], x)
        return {"max": m}, m

    def init_state(self, in_shape, dtype=None, batch=None):
        """`max = initial`. **Arguments:** `in_shape`, `dtype`, `batch`. **Returns:** the state dict."""
        return {"max": jnp.full(_batched(in_shape, batch), self.initial, _float(dtype))}
