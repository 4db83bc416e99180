"""Surrogate gradients: a Heaviside spike forward, a chosen derivative backward."""
from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_jvp
def _heaviside_fast_sigmoid(x, slope):
    return (x > 0).astype(x.dtype)


@_heaviside_fast_sigmoid.defjvp
def _heaviside_fast_sigmoid_jvp(primals, tangents):
    x, slope = primals
    dx, _ = tangents
    # SuperSpike (Zenke & Ganguli 2018): 1 / (1 + slope·|x|)^2; the slope gets no gradient.
    return _heaviside_fast_sigmoid(x, slope), dx / (1.0 + slope * jnp.abs(x)) ** 2


def spike(v, slope: float = 10.0):
    """Heaviside spike `H(v) = 1[v > 0]` with a fast-sigmoid surrogate derivative.

    **Arguments:**

    - `v`: the membrane potential minus the threshold (any float array).
    - `slope`: steepness of the surrogate `1 / (1 + slope·|v|)^2`.

    **Returns:**

    An array like `v` holding 0.0 and 1.0.
    """
    v = jnp.asarray(v)
    return _heaviside_fast_sigmoid(v, jnp.asarray(slope, v.dtype))
