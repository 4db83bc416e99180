"""Surrogate gradients: a Heaviside spike forward, a chosen derivative backward.

A surrogate is a small frozen dataclass holding its width (or slope) and how its
derivative is injected. Calling it on `v - threshold` returns the spike
`H(x) = 1[x > 0]` (exactly 0.0 or 1.0) whose derivative is the surrogate `g'(x)`:

```python
import sparseprop as sp
z = sp.surrogates.Exponential(width=0.5)(v - 1.0)           # custom_jvp (the default)
z = sp.surrogates.Exponential(width=0.5, injection="fgi")(v - 1.0)
z = sp.spike(v - 1.0)                                       # fast sigmoid, slope 10
```

Two injections give the same forward value and the same derivative:

- `"custom_jvp"`: one `jax.custom_jvp` (`heaviside`) shared by every surrogate; the
  derivative formula is a static argument, the width an ordinary (traceable) argument
  whose own tangent is zero, since the forward value does not depend on it.
- `"fgi"`: forward gradient injection (Otte 2024), ordinary operations and
  `stop_gradient` only: `m = x·sg(g'(x)); y = (m − sg(m)) + sg(H(x))`. The order
  matters: `m − sg(m)` is exactly 0, so `y` is exactly `H(x)` in any precision.

Every derivative takes the width as an argument rather than closing over it, so a
width can be a traced value (a schedule, a learned or state-carried width) under jit.
"""
from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import Callable, ClassVar

import jax
import jax.numpy as jnp

__all__ = ["Surrogate", "FastSigmoid", "Sigmoid", "Arctan", "Triangle", "Exponential", "Gaussian",
           "Rectangular", "heaviside", "spike", "CATALOGUE", "INJECTIONS"]

INJECTIONS = ("custom_jvp", "fgi")


def _step(x):
    return (x > 0).astype(x.dtype)


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def heaviside(derivative: Callable, x, width):
    """`H(x) = 1[x > 0]` with derivative `derivative(x, width)`: the one custom_jvp of the module.

    **Arguments:**

    - `derivative`: `g'(x, width)`, a pure function (static: it identifies the surrogate).
    - `x`: the membrane potential minus the threshold.
    - `width`: the surrogate's width/slope (an array or float; it receives no gradient).

    **Returns:**

    An array like `x` holding 0.0 and 1.0.
    """
    return _step(x)


@heaviside.defjvp
def _heaviside_jvp(derivative, primals, tangents):
    x, width = primals
    dx, _ = tangents  # H does not depend on the width: its tangent contributes nothing
    return heaviside(derivative, x, width), derivative(x, width) * dx


def heaviside_fgi(derivative: Callable, x, width):
    """`H(x)` with derivative `derivative(x, width)`, by forward gradient injection (Otte 2024).

    **Arguments:** as for `heaviside`.

    **Returns:**

    An array like `x` holding exactly 0.0 and 1.0; d/dx = `derivative(x, width)`.
    """
    sg = jax.lax.stop_gradient
    m = x * sg(derivative(x, width))
    return (m - sg(m)) + sg(_step(x))


@dataclasses.dataclass(frozen=True)
class Surrogate:
    """Base class: a Heaviside spike whose derivative is `scale · derivative(x, width)`.

    Subclasses set `derivative` (a static method `g'(x, width)`) and declare their
    width/slope as the first field, so `FastSigmoid(25.0)` sets the slope.

    **Arguments (keyword only, common to all):**

    - `scale`: multiplies the derivative (SLAYER/EXODUS's `grad_scale`, Bellec's 0.3 dampening).
    - `injection`: `"custom_jvp"` (default) or `"fgi"` (forward gradient injection).
    """
    scale: float = dataclasses.field(default=1.0, kw_only=True)
    injection: str = dataclasses.field(default="custom_jvp", kw_only=True)
    derivative: ClassVar[Callable]
    width_name: ClassVar[str] = "width"

    def __post_init__(self):
        if self.injection not in INJECTIONS:
            raise ValueError(f"injection must be one of {INJECTIONS}, got {self.injection!r}")

    @property
    def width(self):
        """The surrogate's width or slope parameter (whatever the subclass calls it)."""
        return getattr(self, self.width_name)

    def grad(self, x):
        """The surrogate derivative `scale · g'(x)` itself (for plots and hand checks).

        **Arguments:**

        - `x`: the membrane potential minus the threshold.

        **Returns:**

        An array like `x`.
        """
        x = jnp.asarray(x)
        return self.scale * type(self).derivative(x, jnp.asarray(self.width, x.dtype))

    def __call__(self, x):
        """The spike `H(x)` with this surrogate's derivative.

        **Arguments:**

        - `x`: the membrane potential minus the threshold (a float array).

        **Returns:**

        An array like `x` holding exactly 0.0 and 1.0.
        """
        x = jnp.asarray(x)
        inject = heaviside if self.injection == "custom_jvp" else heaviside_fgi
        return inject(_scaled(type(self).derivative, self.scale), x, jnp.asarray(self.width, x.dtype))


@dataclasses.dataclass(frozen=True)
class _Scaled:
    """`scale · derivative(x, width)`, hashable so that equal surrogates share one jit cache entry."""
    derivative: Callable
    scale: float

    def __call__(self, x, width):
        g = self.derivative(x, width)
        return g if self.scale == 1.0 else self.scale * g


def _scaled(derivative, scale):
    return _Scaled(derivative, float(scale))


@dataclasses.dataclass(frozen=True)
class FastSigmoid(Surrogate):
    """SuperSpike (Zenke & Ganguli 2018): `g'(x) = 1 / (1 + slope·|x|)²` (peak 1)."""
    slope: float = 10.0
    width_name: ClassVar[str] = "slope"

    @staticmethod
    def derivative(x, slope):
        return 1.0 / (1.0 + slope * jnp.abs(x)) ** 2


@dataclasses.dataclass(frozen=True)
class Sigmoid(Surrogate):
    """Derivative of a logistic: `g'(x) = slope·σ(slope·x)·(1 − σ(slope·x))` (integral 1, peak slope/4)."""
    slope: float = 4.0
    width_name: ClassVar[str] = "slope"

    @staticmethod
    def derivative(x, slope):
        s = jax.nn.sigmoid(slope * x)
        return slope * s * (1.0 - s)


@dataclasses.dataclass(frozen=True)
class Arctan(Surrogate):
    """Derivative of `arctan(π/2·α·x)/π` (SpikingJelly's ATan): `g'(x) = (α/2) / (1 + (π/2·α·x)²)` (integral 1)."""
    alpha: float = 2.0
    width_name: ClassVar[str] = "alpha"

    @staticmethod
    def derivative(x, alpha):
        return (alpha / 2.0) / (1.0 + (math.pi / 2.0 * alpha * x) ** 2)


@dataclasses.dataclass(frozen=True)
class Triangle(Surrogate):
    """Piecewise linear (Bellec et al. 2018/2020 with `scale=0.3`): `g'(x) = max(0, 1 − |x|/width) / width` (integral 1)."""
    width: float = 1.0

    @staticmethod
    def derivative(x, width):
        return jnp.maximum(0.0, 1.0 - jnp.abs(x) / width) / width


@dataclasses.dataclass(frozen=True)
class Exponential(Surrogate):
    """SLAYER's spike pdf (Shrestha & Orchard 2018), EXODUS's default with width 0.5:
    `g'(x) = exp(−|x|/width) / width` (threshold 1; integral 2, as in sinabs)."""
    width: float = 0.5

    @staticmethod
    def derivative(x, width):
        return jnp.exp(-jnp.abs(x) / width) / width


@dataclasses.dataclass(frozen=True)
class Gaussian(Surrogate):
    """Normal density: `g'(x) = exp(−x²/(2·width²)) / (width·√(2π))` (integral 1; sinabs's width 0.5)."""
    width: float = 0.5

    @staticmethod
    def derivative(x, width):
        return jnp.exp(-x ** 2 / (2.0 * width ** 2)) / (width * math.sqrt(2.0 * math.pi))


@dataclasses.dataclass(frozen=True)
class Rectangular(Surrogate):
    """Box (straight-through within a window): `g'(x) = 1[|x| < width/2] / width` (integral 1)."""
    width: float = 1.0

    @staticmethod
    def derivative(x, width):
        return jnp.where(jnp.abs(x) < width / 2.0, 1.0 / width, 0.0).astype(x.dtype)


#: Every surrogate class of the catalogue, by name.
CATALOGUE = {cls.__name__: cls for cls in
             (FastSigmoid, Sigmoid, Arctan, Triangle, Exponential, Gaussian, Rectangular)}

DEFAULT = FastSigmoid(10.0)


def spike(v, surrogate: Surrogate | None = None):
    """Heaviside spike `H(v) = 1[v > 0]` with a surrogate derivative.

    **Arguments:**

    - `v`: the membrane potential minus the threshold (any float array).
    - `surrogate`: a `Surrogate` (e.g. `Exponential(0.5, injection="fgi")`); default
      `FastSigmoid(slope=10)`, i.e. `1 / (1 + 10·|v|)²`.

    **Returns:**

    An array like `v` holding 0.0 and 1.0.
    """
    if surrogate is None:
        surrogate = DEFAULT
    if not isinstance(surrogate, Surrogate):
        raise TypeError(f"surrogate must be a sparseprop.surrogates.Surrogate (e.g. FastSigmoid(10.0)), "
                        f"got {surrogate!r}; the positional slope of earlier versions is now "
                        f"spike(v, FastSigmoid(slope))")
    return surrogate(v)
