"""Exact spike-time gradients in continuous time, computed forward (Lee, Haghighatshoar & Karbasi 2022).

An event-driven, current-based leaky integrate-and-fire (LIF) neuron in continuous time,

    τ_m dV/dt = -V + I,        τ_s dI/dt = -I,        I += w_j at an input spike t_j,

fires at the times `t_k` where `V(t_k) = θ` (crossing from below), and is reset there by
subtracting `θ` (to 0; optionally held at 0 for a refractory period `t_ref` while `I` keeps
integrating). Between events the state has the closed form (`s` = time since the event,
`k = τ_s / (τ_m - τ_s)`)

    V(s) = (V_0 + k I_0) e^{-s/τ_m} - k I_0 e^{-s/τ_s},        I(s) = I_0 e^{-s/τ_s},

so a single input of weight `w` leaves the post-synaptic potential
`w k (e^{-s/τ_m} - e^{-s/τ_s})`. The next threshold crossing is found exactly: for
`τ_m = 2 τ_s`, `x = e^{-s/τ_m}` solves the quadratic `k I_0 x² - (V_0 + k I_0) x + θ = 0`
(the larger root); otherwise by a certified
bracketed root solve: `V` has at most one extremum between two events, at a closed-form time,
so `[event, min(extremum, next event)]` brackets the first crossing on a branch where `V`
increases, and Newton's method safeguarded by bisection refines it to machine precision.

**Forward propagation (FP).** A spike time is defined implicitly by `V(t_k; w) = θ`. Where the
crossing is transversal (`V'(t_k) > 0`) the implicit function theorem gives

    dt_k/dw = -(∂V/∂w + Σ_j ∂V/∂t_j · dt_j/dw) / V'(t_k),

where the sum runs over the earlier events `t_j` that `V(t_k)` depends on: the neuron's own
earlier spikes (through their resets) and its input spikes (through their post-synaptic
potentials). `forward_gradients` carries, in causal order, the derivative of the state at a
fixed time with respect to the weights, `δV = ∂V/∂w`, `δI = ∂I/∂w`. Between events it evolves
by the same linear flow as `(V, I)`; at an event at time `t_e` it jumps by the saltation rule
`δx⁺ = δx⁻ + Δ(jump)/∂w + (f⁻ - f⁺) dt_e/dw` (`f` the vector field before and after), which
for this neuron reads

- input `j` (weight `w`, time `t_j`):  `δI += ∂w/∂w + (w/τ_s) dt_j/dw`, `δV -= (w/τ_m) dt_j/dw`;
- own spike: `dt_k/dw = -δV(t_k⁻) / V'(t_k⁻)` (the formula above), then `δV = -(I/τ_m) dt_k/dw`
  (or `δV = 0` while held at the reset), and at the end of a refractory period
  `δV = -(I/τ_m) dt_k/dw`.

The first layer's neurons carry the derivative with respect to their own incoming weights (the
row of `W` they read: `n_in` numbers per neuron). A later layer's neurons carry that plus the
derivative with respect to every earlier layer's weights through the spike times they receive
(the *dense cross-layer part*: `Σ_{j<ℓ} size(W_j)` numbers per neuron). The gradient of a loss
of the output spike times is then `Σ ∂L/∂t_out · dt_out/dW`: no backward pass through the event
sequence, and memory independent of the number of events.

**Static sizes (for `jax.jit`).** Each neuron emits at most `max_spikes` spikes (a static
field of `EventLIF`); crossings after that are not emitted (the first `max_spikes` spike times
and their derivatives stay exact, because later spikes cannot change earlier ones), and the
neuron is flagged `saturated`. A layer with `E` input spikes runs `E + max_spikes + 1` event
steps (`E + 2 max_spikes + 1` with a refractory period). Absent spikes are `NO_SPIKE = inf`.
Events at or after `t_max` are ignored. Everything is a function of arrays: `jax.vmap` over a batch of input
spike times (weights broadcast) just works.

**Discontinuities.** The spike times are differentiable only while the spike pattern is fixed.
A spike appears or vanishes where a local maximum of `V` touches `θ`: near it
`V'(t_k) ≈ 2 sqrt(c (V_max - θ))` (`c` the curvature of `V` at its maximum), so `dt_k/dw` grows
like `1/sqrt(V_max - θ)` before the spike vanishes, and the loss jumps when it does. Every extremum
of `V` between events is computed anyway (it brackets the root), so each neuron reports
`margin`, the smallest `|V_max - θ| / θ` over its interior maxima, and `grazing = margin <
grazing_tol`; `pattern_changes` tests directly whether the spike count changes under a
perturbation of the weights. A spike moving past an input spike is *not* a discontinuity of
the spike times: they stay continuous, with a kink (`V'` jumps by `w/τ_m` at an input, so
`dt_k/dw` jumps there).

References: J. H. Lee, S. Haghighatshoar, A. Karbasi, *Exact Gradient Computation for Spiking
Neural Networks Through Forward Propagation* (2022, arXiv 2210.15415). The closed-form crossing
for `τ_m = 2 τ_s` is also derived in J. Göltz et al., *Fast and energy-efficient neuromorphic
deep learning with first-spike times*, Nature Machine Intelligence 3, 823-835 (2021).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["EventLIF", "NO_SPIKE", "LayerOutput", "ForwardGradients", "layer_spike_times",
           "spike_times", "forward_gradients", "loss_and_grad", "first_spike_times",
           "pattern_changes", "potential"]

#: The time of a spike that does not happen.
NO_SPIKE = math.inf

# Internal stand-in for "no event" (finite, so no inf·0 can reach a reverse-mode cotangent).
_FAR = 1e30


@dataclass(frozen=True)
class EventLIF:
    """Constants of a layer of event-driven current-based LIF neurons (hashable: a static jit argument).

    **Arguments:**

    - `tau_m`: membrane time constant `τ_m` (time units of the input spike times).
    - `tau_s`: synaptic time constant `τ_s`, `0 < τ_s < τ_m`.
    - `threshold`: `θ > 0`; the potential starts at 0 and is reset to 0 at a spike.
    - `refractory`: `t_ref ≥ 0`; after a spike `V` is held at 0 for `t_ref` (the synaptic
      current keeps integrating). 0: no refractory period.
    - `max_spikes`: the static maximum number of spikes per neuron (see the module docstring).
    - `t_max`: the end of the simulation; events at or after it are ignored.
    - `solver`: `"auto"` (closed form when `τ_m = 2 τ_s`, else `"newton"`), `"quadratic"` (the
      closed form; requires `τ_m = 2 τ_s`) or `"newton"` (certified bracketed Newton/bisection).
    - `grazing_tol`: relative distance `|V_max - θ|/θ` of an interior maximum of the potential
      below which a neuron is flagged `grazing` (a spike may appear or vanish nearby).

    **Raises:**

    `ValueError` for constants outside these ranges.
    """
    tau_m: float = 2.0
    tau_s: float = 1.0
    threshold: float = 1.0
    refractory: float = 0.0
    max_spikes: int = 1
    t_max: float = 10.0
    solver: str = "auto"
    grazing_tol: float = 1e-6

    def __post_init__(self):
        if not 0.0 < self.tau_s < self.tau_m:
            raise ValueError(f"EventLIF needs 0 < tau_s < tau_m, got tau_s={self.tau_s}, tau_m={self.tau_m}: "
                             "the closed forms assume a membrane slower than the synapse (tau_m = tau_s, "
                             "whose kernel is s·e^{-s/tau}, is not supported); pick tau_m > tau_s.")
        if self.threshold <= 0:
            raise ValueError(f"EventLIF needs a positive threshold, got {self.threshold}.")
        if self.refractory < 0:
            raise ValueError(f"EventLIF needs refractory >= 0, got {self.refractory}.")
        if int(self.max_spikes) != self.max_spikes or self.max_spikes < 1:
            raise ValueError(f"EventLIF needs an integer max_spikes >= 1, got {self.max_spikes}.")
        if self.solver not in ("auto", "quadratic", "newton"):
            raise ValueError(f"EventLIF solver must be 'auto', 'quadratic' or 'newton', got {self.solver!r}.")
        if self.solver == "quadratic" and not self.closed_form_exists:
            raise ValueError(f"solver='quadratic' needs tau_m == 2 tau_s (got tau_m={self.tau_m}, "
                             f"tau_s={self.tau_s}); use solver='newton' or 'auto'.")

    @property
    def closed_form_exists(self) -> bool:
        return math.isclose(self.tau_m, 2.0 * self.tau_s, rel_tol=1e-14)

    @property
    def uses_quadratic(self) -> bool:
        return self.solver == "quadratic" or (self.solver == "auto" and self.closed_form_exists)

    @property
    def k(self) -> float:
        return self.tau_s / (self.tau_m - self.tau_s)


# ---------------------------------------------------------------------------------------------
# Closed-form dynamics between events

def _evolve(cfg, v, i, s):
    """State after a time `s` without events (also the linear flow of the tangents)."""
    em, es = jnp.exp(-s / cfg.tau_m), jnp.exp(-s / cfg.tau_s)
    return (v + cfg.k * i) * em - cfg.k * i * es, i * es


def potential(cfg: EventLIF, w, in_times, in_sources, t, spikes=()):
    """The membrane potential `V(t)` of one neuron, from the sum of kernels (no refractory period).

    `V(t) = Σ_j w_{src(j)} k (e^{-(t-t_j)/τ_m} - e^{-(t-t_j)/τ_s}) - θ Σ_k e^{-(t-t_k)/τ_m}`
    over inputs `t_j < t` and own spikes `t_k < t`: an independent check of the event-driven
    simulation (tests), and handy for plots.

    **Arguments:**

    - `cfg`: the neuron constants (`refractory` must be 0).
    - `w`: the neuron's incoming weights, shape `(n_in,)`.
    - `in_times`, `in_sources`: input spike times and their source indices, shape `(E,)`.
    - `t`: the times at which to evaluate, any shape.
    - `spikes`: the neuron's own spike times (their resets are subtracted), shape `(K,)`.

    **Returns:**

    `V(t)`, the shape of `t`.

    **Raises:**

    `ValueError` if `cfg.refractory > 0` (the kernel sum has no closed form for a held reset).
    """
    if cfg.refractory:
        raise ValueError("potential() sums kernels and has no refractory hold; use refractory=0.")
    t = jnp.asarray(t)[..., None]
    s = t - jnp.asarray(in_times)
    on = (s > 0) & jnp.isfinite(s)
    s = jnp.where(on, s, 0.0)
    psp = cfg.k * (jnp.exp(-s / cfg.tau_m) - jnp.exp(-s / cfg.tau_s))
    v = jnp.sum(jnp.where(on, jnp.asarray(w)[jnp.asarray(in_sources)] * psp, 0.0), axis=-1)
    spikes = jnp.asarray(spikes, dtype=v.dtype).reshape(-1)
    if spikes.size:
        r = t - spikes
        fired = (r > 0) & jnp.isfinite(r)
        v = v - cfg.threshold * jnp.sum(jnp.where(fired, jnp.exp(-jnp.where(fired, r, 0.0) / cfg.tau_m), 0.0), -1)
    return v


class _Peak(NamedTuple):
    s_hi: jax.Array      # end of the bracket: the maximum of V, or the horizon
    found: jax.Array     # V crosses θ in (0, s_hi]
    rising: jax.Array    # V increases at the start of the interval
    interior: jax.Array  # the maximum lies strictly before the horizon
    gap: jax.Array       # V(s_hi) - θ


def _peak(cfg, v, i, horizon):
    """Closed-form maximum of V on [0, horizon]; it brackets the first crossing.

    With `a = V_0 + k I_0`, `b = k I_0`: `V'(s) = -a/τ_m e^{-s/τ_m} + b/τ_s e^{-s/τ_s}` changes sign
    at most once, at `s* = ln(b τ_m / (a τ_s)) / (1/τ_s - 1/τ_m)`, and only from + to - (a
    maximum) when `a, b > 0`. For `b ≤ 0` (net inhibitory current) or `a ≤ 0`, `V` cannot rise
    above `max(V_0, 0) < θ`.
    """
    a, b = v + cfg.k * i, cfg.k * i
    rising = (a > 0) & (b * cfg.tau_m > a * cfg.tau_s)
    ratio = jnp.where(rising, b * cfg.tau_m / jnp.where(rising, a * cfg.tau_s, 1.0), 1.0)
    s_star = jnp.log(ratio) / (1.0 / cfg.tau_s - 1.0 / cfg.tau_m)
    s_hi = jnp.where(rising, jnp.minimum(s_star, horizon), 0.0)
    gap = _evolve(cfg, v, i, s_hi)[0] - cfg.threshold
    return _Peak(s_hi, rising & (gap > 0) & (v < cfg.threshold), rising, rising & (s_star < horizon), gap)


def _quadratic_root(cfg, v, i, s_hi, found):
    """Closed form for τ_m = 2 τ_s: x = e^{-s/τ_m} solves b x² - a x + θ = 0; the first crossing
    is the larger root (x decreases from 1 as time runs), computed without cancellation (a > 0)."""
    a, b = v + cfg.k * i, cfg.k * i
    disc = jnp.maximum(a * a - 4.0 * b * cfg.threshold, 0.0)
    x = (a + jnp.sqrt(disc)) / (2.0 * jnp.where(found, b, 1.0))
    s = -cfg.tau_m * jnp.log(jnp.where(found, x, 1.0))
    return jnp.where(found, jnp.clip(s, 0.0, s_hi), s_hi)


def _newton_root(cfg, v, i, s_hi, found):
    """Newton's method safeguarded by bisection on the certified bracket [0, s_hi], where
    V(0) < θ < V(s_hi) and V increases; stops when a step no longer moves the iterate."""
    dtype = jnp.result_type(v, i, s_hi)
    eps = jnp.finfo(dtype).eps

    def f(s):
        vs, is_ = _evolve(cfg, v, i, s)
        return vs - cfg.threshold, (is_ - vs) / cfg.tau_m

    def cond(c):
        lo, hi, s, it, done = c
        return ~done & (it < 200)

    def body(c):
        lo, hi, s, it, _ = c
        fs, fp = f(s)
        lo = jnp.where(fs < 0, s, lo)
        hi = jnp.where(fs > 0, s, hi)
        newton = s - fs / jnp.where(fp > 0, fp, 1.0)
        ok = (fp > 0) & (newton > lo) & (newton < hi)
        s_new = jnp.where(ok, newton, 0.5 * (lo + hi))
        done = (fs == 0) | (jnp.abs(s_new - s) <= 2 * eps * jnp.maximum(jnp.abs(s), 1.0)) | (hi - lo <= 2 * eps * hi)
        return lo, hi, jnp.where(fs == 0, s, s_new), it + 1, done

    hi = jnp.where(found, s_hi, 0.0)
    init = (jnp.zeros_like(hi), hi, 0.5 * hi, 0, ~found)
    return jnp.where(found, lax.while_loop(cond, body, init)[2], s_hi)


def _root(cfg, v, i, s_hi, found):
    return (_quadratic_root if cfg.uses_quadratic else _newton_root)(cfg, v, i, s_hi, found)


def _crossing_slope_and_tangent(cfg, v, i, s, dv, di):
    """V'(s) at the crossing and the fixed-time tangent δV(s) from δV(0), δI(0)."""
    vs, is_ = _evolve(cfg, v, i, s)
    return (is_ - vs) / cfg.tau_m, _evolve(cfg, dv, di, s)[0]


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def _crossing_time(cfg, v, i, s_hi, found):
    """Time from the last event to the next threshold crossing, with the implicit-function
    derivative `ds = -δV(s)/V'(s)` as its JVP (used by the reverse-mode reference)."""
    return _root(cfg, v, i, s_hi, found)


@_crossing_time.defjvp
def _crossing_time_jvp(cfg, primals, tangents):
    v, i, s_hi, found = primals
    dv, di = tangents[0], tangents[1]     # the bracket and the flag carry no derivative
    s = _root(cfg, v, i, s_hi, found)
    slope, dv_s = _crossing_slope_and_tangent(cfg, v, i, s, dv, di)
    return s, jnp.where(found, -dv_s / jnp.where(found, slope, 1.0), 0.0)


# ---------------------------------------------------------------------------------------------
# One neuron, event by event

class LayerOutput(NamedTuple):
    """Spikes of a layer, with their forward-propagated derivatives when asked for.

    - `times`: spike times, `(n, K)`, ascending per neuron, `NO_SPIKE` (inf) where absent.
    - `count`: spikes emitted per neuron, `(n,)` int.
    - `grazing`: `(n,)` bool, a maximum of `V` came within `grazing_tol·θ` of threshold.
    - `margin`: `(n,)`, the smallest `|V_max - θ|/θ` over interior maxima (inf if none).
    - `saturated`: `(n,)` bool, the neuron would have fired after its `max_spikes`-th spike.
    - `vmax`: `(n,)`, the largest potential before the first spike (`< θ` for a silent neuron;
      `θ` once it fires): a smooth quantity that can pull a silent neuron back to firing.
    - `d_own`: `dt/dW` for the layer's own weights, `(n, K, n_in)` (row-local: spike times of
      neuron `i` depend only on row `i`); `None` without tangents.
    - `d_upstream`: `dt/d(earlier layers' weights)`, `(n, K, Q)`, flattened in layer order
      (the dense cross-layer part); `None` without tangents.
    - `d_vmax_own`, `d_vmax_upstream`: the same for `vmax`, `(n, n_in)` and `(n, Q)` (by the
      envelope theorem: at an interior maximum `V' = 0`, so only the fixed-time part counts).
    """
    times: jax.Array
    count: jax.Array
    grazing: jax.Array
    margin: jax.Array
    saturated: jax.Array
    vmax: jax.Array | None = None
    d_own: jax.Array | None = None
    d_upstream: jax.Array | None = None
    d_vmax_own: jax.Array | None = None
    d_vmax_upstream: jax.Array | None = None


def _neuron(cfg, w, ev_t, ev_src, ev_dt, with_tangents):
    """Simulate one neuron on a sorted input event list; optionally carry FP tangents."""
    n_in = w.shape[0]
    n_events = ev_t.shape[0]
    q = 0 if ev_dt is None else ev_dt.shape[1]
    K = cfg.max_spikes
    dtype = jnp.result_type(w, ev_t)
    ev_w = w[ev_src]
    zero = jnp.zeros((), dtype)
    state = dict(t=zero, v=zero, i=zero, p=jnp.int32(0), c=jnp.int32(0), clamped=jnp.bool_(False),
                 ref_end=zero, times=jnp.full((K,), _FAR, dtype), grazing=jnp.bool_(False),
                 margin=jnp.full((), jnp.inf, dtype), saturated=jnp.bool_(False), vmax=zero)
    if with_tangents:
        state.update(dv=jnp.zeros(n_in + q, dtype), di=jnp.zeros(n_in + q, dtype),
                     dtimes=jnp.zeros((K, n_in + q), dtype), dvmax=jnp.zeros(n_in + q, dtype))
    crossing = _root if with_tangents else _crossing_time

    def step(st, _):
        t, v, i, p, c, clamped = st["t"], st["v"], st["i"], st["p"], st["c"], st["clamped"]
        t_in = jnp.where(p < n_events, ev_t[jnp.minimum(p, n_events - 1)], _FAR)
        t_ref = jnp.where(clamped, st["ref_end"], _FAR)
        horizon = jnp.maximum(jnp.minimum(t_in, cfg.t_max) - t, 0.0)
        pk = _peak(cfg, lax.stop_gradient(v), lax.stop_gradient(i), lax.stop_gradient(horizon))
        free = ~clamped
        can_fire = c < K
        fires = pk.found & free & can_fire
        s_cross = crossing(cfg, v, i, pk.s_hi, fires)
        t_cross = jnp.where(fires, t + s_cross, _FAR)
        watched = pk.interior & free & can_fire
        margin = jnp.minimum(st["margin"], jnp.where(watched, jnp.abs(pk.gap) / cfg.threshold, jnp.inf))
        t_next = jnp.minimum(jnp.minimum(t_cross, t_ref), t_in)
        active = t_next < cfg.t_max
        is_cross = active & fires & (t_cross <= t_ref) & (t_cross <= t_in)
        is_ref = active & ~is_cross & clamped & (t_ref <= t_in)
        is_in = active & ~is_cross & ~is_ref
        dt = jnp.where(active, jnp.where(is_cross, s_cross, t_next - t), 0.0)

        v_adv, i_adv = _evolve(cfg, v, i, dt)
        v_adv = jnp.where(clamped, 0.0, v_adv)
        w_in = ev_w[jnp.minimum(p, n_events - 1)]
        new = dict(st)
        new["t"] = jnp.where(active, jnp.where(is_cross, t_cross, t_next), t)
        new["v"] = jnp.where(is_cross, 0.0, v_adv)           # reset by subtraction: θ - θ
        new["i"] = i_adv + jnp.where(is_in, w_in, 0.0)
        new["p"] = p + is_in.astype(p.dtype)
        new["c"] = c + is_cross.astype(c.dtype)
        slot = jnp.arange(K) == c
        new["times"] = jnp.where(is_cross & slot, t_cross, st["times"])
        hold = cfg.refractory > 0
        new["clamped"] = jnp.where(is_cross, hold, jnp.where(is_ref, False, clamped))
        new["ref_end"] = jnp.where(is_cross, t_cross + cfg.refractory, st["ref_end"])
        new["grazing"] = st["grazing"] | (watched & (jnp.abs(pk.gap) <= cfg.grazing_tol * cfg.threshold))
        new["margin"] = margin
        new["saturated"] = st["saturated"] | (pk.found & free & ~can_fire)
        # Largest potential before the first spike: at the interior maximum, or at the end of
        # the interval (the next input, whose time may move) when V still rises there.
        at_end = pk.rising & ~pk.interior
        end = jnp.minimum(t_in, cfg.t_max) - t
        s_top = jnp.where(at_end, end, lax.stop_gradient(pk.s_hi))
        v_top, i_top = _evolve(cfg, v, i, s_top)
        better = (c == 0) & free & (v_top > st["vmax"])
        new["vmax"] = jnp.where(better, jnp.minimum(v_top, cfg.threshold), st["vmax"])
        if with_tangents:
            # Fixed-time tangents follow the same linear flow as (V, I) between events.
            dv_adv, di_adv = _evolve(cfg, st["dv"], st["di"], dt)
            dv_adv = jnp.where(clamped, 0.0, dv_adv)
            # Own spike: implicit function theorem, then the reset's saltation.
            slope = (i_adv - v_adv) / cfg.tau_m
            dt_k = -dv_adv / jnp.where(is_cross, slope, 1.0)
            dv_reset = jnp.zeros_like(dv_adv) if hold else -(i_adv / cfg.tau_m) * dt_k
            # End of the refractory hold: V is released at t_k + t_ref, which moves with t_k.
            last = st["dtimes"][jnp.maximum(c - 1, 0)]
            dv_release = -(i_adv / cfg.tau_m) * last
            # Input spike: its weight (own part) and its time (upstream part) move I and V.
            own = (jnp.arange(n_in) == ev_src[jnp.minimum(p, n_events - 1)]).astype(dtype)
            if q:
                dt_e = ev_dt[jnp.minimum(p, n_events - 1)]
                di_jump = jnp.concatenate([own, (w_in / cfg.tau_s) * dt_e])
                dv_jump = jnp.concatenate([jnp.zeros(n_in, dtype), jnp.where(clamped, 0.0, -w_in / cfg.tau_m) * dt_e])
            else:
                di_jump, dv_jump = own, jnp.zeros(n_in, dtype)
            new["dv"] = jnp.where(is_cross, dv_reset, jnp.where(is_ref, dv_release,
                                                                dv_adv + jnp.where(is_in, 1.0, 0.0) * dv_jump))
            new["di"] = di_adv + jnp.where(is_in, 1.0, 0.0) * di_jump
            new["dtimes"] = jnp.where((is_cross & slot)[:, None], dt_k[None, :], st["dtimes"])
            dv_top = _evolve(cfg, st["dv"], st["di"], s_top)[0]
            if q:   # the end of the interval is an input spike time that moves with earlier weights
                moving = at_end & (t_in < cfg.t_max)
                slope_top = jnp.where(moving, (i_top - v_top) / cfg.tau_m, 0.0)
                dv_top = dv_top + jnp.concatenate([jnp.zeros(n_in, dtype), slope_top * dt_e])
            new["dvmax"] = jnp.where(better & (v_top < cfg.threshold), dv_top,
                                     jnp.where(better, 0.0, st["dvmax"]))
        return new, None

    # One step per event; +1 so a crossing after the last event is seen (saturation flag).
    n_steps = n_events + (2 * K if cfg.refractory > 0 else K) + 1
    st, _ = lax.scan(step, state, None, length=n_steps)
    times = jnp.where(st["times"] < cfg.t_max, st["times"], NO_SPIKE)
    out = dict(times=times, count=st["c"], grazing=st["grazing"], margin=st["margin"], saturated=st["saturated"],
               vmax=st["vmax"])
    if with_tangents:
        out.update(d_own=st["dtimes"][:, :n_in], d_upstream=st["dtimes"][:, n_in:],
                   d_vmax_own=st["dvmax"][:n_in], d_vmax_upstream=st["dvmax"][n_in:])
    return out


def _events(times, d_times=None):
    """Flatten per-source spike times `(m, K)` into an ascending event list."""
    m, K = times.shape
    flat = jnp.where(jnp.isfinite(times), times, _FAR).reshape(-1)
    order = jnp.argsort(lax.stop_gradient(flat))
    src = jnp.repeat(jnp.arange(m), K)[order]
    dt = None if d_times is None else d_times.reshape(m * K, -1)[order]
    return flat[order], src, dt


def _as_times(in_times):
    in_times = jnp.asarray(in_times)
    return in_times[:, None] if in_times.ndim == 1 else in_times


def layer_spike_times(cfg: EventLIF, w, in_times, d_in_times=None, *, with_tangents=False) -> LayerOutput:
    """Spike times of one layer of event-driven LIF neurons, exact to machine precision.

    Without tangents, the result is differentiable by `jax.grad` / `jax.jacrev` (each crossing
    time carries the implicit-function derivative as a custom JVP): the reverse-mode reference.

    **Arguments:**

    - `cfg`: the layer's constants (`EventLIF`).
    - `w`: weights, `(n, m)` (row `i`: the inputs of neuron `i`).
    - `in_times`: input spike times, `(m,)` (one per source) or `(m, K_in)`; `NO_SPIKE` = none.
    - `d_in_times`: with tangents, `d in_times / d(earlier weights)`, `(m, K_in, Q)`, or `None`.
    - `with_tangents`: also forward-propagate `dt/dW` (own weights) and `dt/d(earlier)`.

    **Returns:**

    A `LayerOutput`.
    """
    in_times = _as_times(in_times)
    ev_t, ev_src, ev_dt = _events(in_times, d_in_times if with_tangents else None)
    run = jax.vmap(lambda row: _neuron(cfg, row, ev_t, ev_src, ev_dt, with_tangents))
    return LayerOutput(**run(jnp.asarray(w)))


def spike_times(cfgs, weights, in_times):
    """Spike times of a feed-forward network (the plain simulation, differentiable in reverse mode).

    **Arguments:**

    - `cfgs`: one `EventLIF` per layer (a sequence, static under jit).
    - `weights`: one weight matrix per layer, `(n_ℓ, n_{ℓ-1})`.
    - `in_times`: input spike times, `(n_0,)` or `(n_0, K_0)`.

    **Returns:**

    The list of every layer's `LayerOutput` (tangent fields `None`).
    """
    outs, times = [], in_times
    for cfg, w in zip(cfgs, weights):
        out = layer_spike_times(cfg, w, times)
        outs.append(out)
        times = out.times
    return outs


class ForwardGradients(NamedTuple):
    """Output of `forward_gradients`.

    - `layers`: every layer's `LayerOutput`, with `d_own` and `d_upstream` filled in.
    - `jacobians`: `jacobians[ℓ][j]` = `d times_ℓ / d W_j` for `j ≤ ℓ`, shape
      `(n_ℓ, K_ℓ) + W_j.shape` (the own block expanded densely for uniform use).
    - `vmax_jacobians`: `vmax_jacobians[ℓ][j]` = `d vmax_ℓ / d W_j`, shape `(n_ℓ,) + W_j.shape`.
    """
    layers: list
    jacobians: list
    vmax_jacobians: list


def forward_gradients(cfgs, weights, in_times) -> ForwardGradients:
    """Spike times and their derivatives with respect to every weight, forward in causal order.

    Layer `ℓ` receives the spike times of layer `ℓ-1` together with their derivatives with
    respect to all earlier weights (row-local for `W_{ℓ-1}`, expanded to the dense cross-layer
    part here), and propagates them by the saltation rules of the module docstring.

    **Arguments:**

    - `cfgs`: one `EventLIF` per layer.
    - `weights`: one weight matrix per layer, `(n_ℓ, n_{ℓ-1})`.
    - `in_times`: the network's input spike times, `(n_0,)` or `(n_0, K_0)` (constants).

    **Returns:**

    A `ForwardGradients`. Memory: layer `ℓ` carries `n_ℓ K_ℓ (n_{ℓ-1} + Σ_{j<ℓ} size(W_j))`
    derivative entries per example; nothing grows with the number of events.
    """
    in_times = _as_times(in_times)
    layers, jacobians, vmax_jacobians = [], [], []
    times, d_times = in_times, None
    for ell, (cfg, w) in enumerate(zip(cfgs, weights)):
        w = jnp.asarray(w)
        out = layer_spike_times(cfg, w, times, d_times, with_tangents=True)
        layers.append(out)
        n, K = out.times.shape
        own_dense = jnp.einsum("ikc,ij->ikjc", out.d_own, jnp.eye(n, dtype=out.d_own.dtype))
        jac, vjac, offset = [], [], 0
        for wj in weights[:ell]:
            size = jnp.size(wj)
            jac.append(out.d_upstream[:, :, offset:offset + size].reshape((n, K) + jnp.shape(wj)))
            vjac.append(out.d_vmax_upstream[:, offset:offset + size].reshape((n,) + jnp.shape(wj)))
            offset += size
        jac.append(own_dense)
        vjac.append(jnp.einsum("ic,ij->ijc", out.d_vmax_own, jnp.eye(n, dtype=out.d_own.dtype)))
        jacobians.append(jac)
        vmax_jacobians.append(vjac)
        # The next layer sees these spike times with their derivatives w.r.t. W_1..W_ℓ.
        times = out.times
        d_times = jnp.concatenate([out.d_upstream, own_dense.reshape(n, K, -1)], axis=-1)
    return ForwardGradients(layers, jacobians, vmax_jacobians)


def first_spike_times(times, fill):
    """First spike time per neuron, `fill` where a neuron is silent (fill carries no derivative).

    **Arguments:**

    - `times`: `(..., n, K)` spike times (`NO_SPIKE` = none).
    - `fill`: the value used for silent neurons (e.g. `t_max`).

    **Returns:**

    `(..., n)`.
    """
    first = times[..., 0]
    return jnp.where(jnp.isfinite(first), first, fill)


def loss_and_grad(loss_fn, cfgs, weights, in_times, *args):
    """A loss of the output spike times and its gradient from forward-propagated dt/dW.

    `dL/dW_j = Σ_{i,k} ∂L/∂t_out[i,k] · d t_out[i,k] / d W_j (+ Σ_i ∂L/∂vmax_i · d vmax_i / d W_j)`:
    the only derivative taken in reverse is the loss's own, with respect to its arguments.

    **Arguments:**

    - `loss_fn`: `loss_fn(out_times, out_vmax, *args) -> scalar`; `out_times` `(n_L, K_L)` with
      `NO_SPIKE` where absent (use `first_spike_times(..., fill)` to make it finite), `out_vmax`
      `(n_L,)` the output neurons' largest potential before their first spike.
    - `cfgs`, `weights`, `in_times`: as in `forward_gradients` (one example; `jax.vmap` for a batch).
    - `*args`: passed on to `loss_fn` (e.g. the label).

    **Returns:**

    `(loss, grads, result)`: the scalar loss, a list of `dL/dW_j` shaped like `weights`, and the
    `ForwardGradients` (spike times and flags of every layer).
    """
    res = forward_gradients(cfgs, weights, in_times)
    out = res.layers[-1]
    loss, (g_t, g_v) = jax.value_and_grad(loss_fn, argnums=(0, 1))(out.times, out.vmax, *args)
    g_t = jnp.where(jnp.isfinite(out.times), g_t, 0.0)
    grads = [jnp.tensordot(g_t, jac, axes=2) + jnp.tensordot(g_v, vjac, axes=1)
             for jac, vjac in zip(res.jacobians[-1], res.vmax_jacobians[-1])]
    return loss, grads, res


def pattern_changes(cfgs, weights, in_times, perturbations):
    """Whether the spike counts change when the weights are perturbed (a discontinuity nearby).

    **Arguments:**

    - `cfgs`, `weights`, `in_times`: as in `spike_times`.
    - `perturbations`: a list of weight perturbations, each shaped like `weights`.

    **Returns:**

    A bool array, one entry per perturbation: `True` where some layer's spike count per neuron
    differs from the unperturbed one (the spike times are not differentiable across it).
    """
    base = [o.count for o in spike_times(cfgs, weights, in_times)]
    changed = []
    for dw in perturbations:
        counts = [o.count for o in spike_times(cfgs, [w + d for w, d in zip(weights, dw)], in_times)]
        changed.append(any(bool(jnp.any(a != b)) for a, b in zip(base, counts)))
    return jnp.asarray(changed)
