"""AdaLi: the adaptive lightweight surrogate gradient (two-level box around the threshold).

AdaLi ("Adaptive and lightweight surrogate gradients: enhancing training efficiency of
spiking neural networks"; code: github.com/paran-ia/AdaLi) replaces the Heaviside's
derivative by a box of two levels around the threshold. With `x = v - θ` (the potential
relative to the threshold), left width `w_L` and right width `w_R`:

    H(x)  = 1[x > 0]                                  (forward: an exact 0/1 spike)

            ⎧ α / w_L   if -w_L <= x < 0
    H'(x) = ⎨ β / w_R   if  0 <= x <= w_R               (backward: the surrogate)
            ⎩ 0         otherwise

with α = β = 0.5 by default, so the surrogate integrates to α + β = 1, the height of the
Heaviside's jump. In the authors' code (`modules/neuron.py`) the box is applied to
`mem / V_th` with `V_th = 1`; here it acts on `v - θ` in the units of `v`.

The widths shrink (or grow) with the training epoch (`width_schedule`), or are set from
the observed membrane potentials (`widths_from_potentials`, a rule of ours: the paper's
abstract promises one, the released code has none).

Widths are ordinary array arguments of every call, never Python constants baked into the
traced program: carry them in the model's state, pass them with the input, or change
them between epochs, and nothing is retraced. They receive no gradient (the custom JVP
ignores their tangents), so as a state leaf they carry a zero eligibility trace.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = ["adali_spike", "adali_derivative", "width_schedule", "widths_from_potentials"]

DEFAULT_ALPHA = 0.5
DEFAULT_BETA = 0.5


def adali_derivative(x, width_left, width_right=None, alpha=DEFAULT_ALPHA, beta=DEFAULT_BETA):
    """The AdaLi surrogate derivative, `α/w_L` on `[-w_L, 0)`, `β/w_R` on `[0, w_R]`, 0 elsewhere.

    **Arguments:**

    - `x`: the membrane potential minus the threshold.
    - `width_left`: `w_L > 0`, broadcastable against `x` (e.g. one width per neuron).
    - `width_right`: `w_R > 0`; `None` means `w_R = w_L`.
    - `alpha`, `beta`: the box areas on the left and right (0.5 each in the paper).

    **Returns:**

    An array of the broadcast shape of `x` and the widths: the surrogate's value at `x`.
    """
    x = jnp.asarray(x)
    wl = jnp.asarray(width_left, x.dtype)
    wr = wl if width_right is None else jnp.asarray(width_right, x.dtype)
    left = (x >= -wl) & (x < 0)
    right = (x >= 0) & (x <= wr)
    zero = jnp.zeros((), x.dtype)
    return jnp.where(left, alpha / wl, jnp.where(right, beta / wr, zero))


@jax.custom_jvp
def _adali_heaviside(x, width_left, width_right, alpha, beta):
    # Strict inequality as in the authors' code (torch.gt) and in sparseprop.spike.
    return (x > 0).astype(x.dtype)


@_adali_heaviside.defjvp
def _adali_heaviside_jvp(primals, tangents):
    x, width_left, width_right, alpha, beta = primals
    dx = tangents[0]
    # Widths and areas are hyper-parameters: their tangents are ignored on purpose, so they
    # can live in the state (adapted online) without acquiring a gradient.
    slope = adali_derivative(x, width_left, width_right, alpha, beta)
    return _adali_heaviside(*primals), slope * dx


def adali_spike(x, width_left, width_right=None, alpha=DEFAULT_ALPHA, beta=DEFAULT_BETA):
    """Heaviside spike `1[x > 0]` whose derivative is the AdaLi two-level box.

    Forward: exactly 0.0 or 1.0. Derivative (a `jax.custom_jvp`, so it works in forward
    and reverse mode and inside `sparseprop.online_grad`):
    `d/dx = α/w_L` on `[-w_L, 0)`, `β/w_R` on `[0, w_R]`, `0` elsewhere.

    **Arguments:**

    - `x`: the membrane potential minus the threshold, `v - θ`.
    - `width_left`: `w_L`, an array broadcastable against `x` (a scalar, or one per
      neuron). Pass it as data (from the state, the input or a schedule), not as a
      constant closed over by the model, to change it without retracing.
    - `width_right`: `w_R`; `None` means `w_R = w_L`.
    - `alpha`, `beta`: areas of the left and right boxes (default 0.5 each: the surrogate
      integrates to 1).

    **Returns:**

    An array of the broadcast shape, holding 0.0 and 1.0, in the dtype of `x`.
    """
    x = jnp.asarray(x)
    wl = jnp.asarray(width_left, x.dtype)
    wr = wl if width_right is None else jnp.asarray(width_right, x.dtype)
    shape = jnp.broadcast_shapes(x.shape, wl.shape, wr.shape)
    x = jnp.broadcast_to(x, shape)
    return _adali_heaviside(x, wl, wr, jnp.asarray(alpha, x.dtype), jnp.asarray(beta, x.dtype))


def width_schedule(epoch, num_epochs: int, start: float = 1.5, end: float = 0.3, kind: str = "log"):
    """The width `w(e)` for epoch `e = 1 … E`, going from `start` at `e = 1` to `end` at `e = E`.

    The AdaLi schedules (authors' `modules/adaptive_func.py`):

    - `"log"` (the paper's): `w(e) = start · e^(ln(end/start) / ln E)`; with the defaults
      `w(e) = 1.5 · e^(ln 0.2 / ln E)`: 1.5 at `e = 1`, 0.3 at `e = E`.
    - `"linear"`: `w(e) = start + (end - start) · (e - 1) / (E - 1)`.
    - `"sqrt"`: `w(e) = start + (end - start) · sqrt((e - 1) / (E - 1))`. The authors' code
      divides `sqrt(e) - 1` by `sqrt(E - 1)`, which misses `end` at `e = E`; we normalise so
      both end points hold, as for the other two.

    `start < end` gives the growing variant the code calls mode `'+'`.

    **Arguments:**

    - `epoch`: the epoch `e`, counted from 1 (a number or a JAX array).
    - `num_epochs`: `E >= 1` (with `E = 1` the width is `start`).
    - `start`, `end`: the widths at the first and the last epoch (both > 0).
    - `kind`: `"log"`, `"linear"` or `"sqrt"`.

    **Returns:**

    The width, a float (or an array when `epoch` is one).
    """
    if kind not in ("log", "linear", "sqrt"):
        raise ValueError(f"unknown width schedule {kind!r}; use 'log', 'linear' or 'sqrt'")
    if start <= 0 or end <= 0:
        raise ValueError("widths must be positive")
    if num_epochs < 1:
        raise ValueError("num_epochs must be >= 1")
    e = jnp.asarray(epoch, jnp.result_type(float))
    if num_epochs == 1:
        return start + 0.0 * e
    if kind == "log":
        exponent = math.log(end / start) / math.log(num_epochs)
        return start * e ** exponent
    fraction = (e - 1.0) / (num_epochs - 1.0)
    if kind == "sqrt":
        fraction = jnp.sqrt(fraction)
    return start + (end - start) * fraction


def widths_from_potentials(v, threshold=0.0, coverage: float = 0.5, axis=None,
                           min_width: float = 0.2, max_width: float = 1.5):
    """Set `(w_L, w_R)` from observed membrane potentials: the box covers a fraction `coverage`
    of the potentials on each side of the threshold.

    The rule (ours; AdaLi's abstract describes widths "determined based on the distribution
    of membrane potentials" but its code has no such rule):

        w_L = clip( Q_coverage( θ - v  |  v <  θ ), min_width, max_width )
        w_R = clip( Q_coverage( v - θ  |  v >= θ ), min_width, max_width )

    where `Q_q` is the `q`-quantile (linear interpolation) over the observed samples on that
    side. Why: a box surrogate gives a non-zero gradient exactly to the neurons inside the
    box, so `coverage` directly fixes the fraction of sub-threshold (and supra-threshold)
    potentials that receive a learning signal; the widths scale with the spread of the
    potentials (scaling `v - θ` by `c` scales the widths by `c`), and shrink on their own as
    training concentrates the potentials, the trend the epoch schedule imposes by hand.
    Quantiles are robust to the large mass of reset/resting potentials far from the
    threshold, which would inflate a standard-deviation rule. Each side is treated apart
    because sub-threshold potentials are far more common than supra-threshold ones. A side
    with no samples (e.g. no potential reached the threshold) takes the other side's width;
    with neither, `max_width`. The clip mirrors the authors' guard (their code refuses
    widths <= 0.2 for a unit threshold) and the schedule's starting width 1.5.

    **Arguments:**

    - `v`: recent membrane potentials (pre-reset), any shape, e.g. `(time, neurons)`.
    - `threshold`: `θ`, broadcastable against `v`.
    - `coverage`: the quantile level `q` in (0, 1].
    - `axis`: the axes to pool over (`None`: all, one width pair; `0` on a `(time, n)`
      array: one pair per neuron).
    - `min_width`, `max_width`: the clip range.

    **Returns:**

    `(width_left, width_right)`, arrays of the reduced shape. Jittable.
    """
    if not 0.0 < coverage <= 1.0:
        raise ValueError("coverage must be in (0, 1]")
    v = jnp.asarray(v)
    if not jnp.issubdtype(v.dtype, jnp.floating):
        v = v.astype(jnp.result_type(float))
    x = v - jnp.asarray(threshold, v.dtype)
    nan = jnp.asarray(jnp.nan, x.dtype)
    # nanquantile over masked copies keeps the shapes static (jittable) while each side
    # sees only its own samples.
    below = jax.lax.stop_gradient(jnp.where(x < 0, -x, nan))
    above = jax.lax.stop_gradient(jnp.where(x >= 0, x, nan))
    wl = jnp.nanquantile(below, coverage, axis=axis)
    wr = jnp.nanquantile(above, coverage, axis=axis)
    wl_ok, wr_ok = jnp.isfinite(wl), jnp.isfinite(wr)
    fallback = jnp.asarray(max_width, x.dtype)
    wl, wr = (jnp.where(wl_ok, wl, jnp.where(wr_ok, wr, fallback)),
              jnp.where(wr_ok, wr, jnp.where(wl_ok, wl, fallback)))
    return jnp.clip(wl, min_width, max_width), jnp.clip(wr, min_width, max_width)
