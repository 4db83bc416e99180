"""AdaLi surrogate: forward values, the two-level derivative, schedules, the width rule,
and exactness of online learning with it (vs BPTT, float64)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparseprop as sp
from sparseprop.adali import (adali_derivative, adali_spike, width_schedule,
                              widths_from_potentials)
from reference import bptt, max_relative_error, mse


def test_forward_is_exactly_zero_one():
    x = jnp.linspace(-3.0, 3.0, 1001)
    z = adali_spike(x, 0.7, 0.4)
    assert set(np.unique(np.asarray(z)).tolist()) <= {0.0, 1.0}
    np.testing.assert_array_equal(np.asarray(z), np.asarray(x > 0, dtype=np.float64))
    assert float(adali_spike(0.0, 1.0)) == 0.0          # strict inequality, as torch.gt
    assert adali_spike(jnp.float32(0.3), 1.0).dtype == jnp.float32


@pytest.mark.parametrize("x, expected", [
    (-0.5, 0.5 / 0.8),    # inside the left box, w_L = 0.8: α / w_L
    (-0.8, 0.5 / 0.8),    # left edge is closed
    (-0.81, 0.0),         # just outside the left box
    (-1e-9, 0.5 / 0.8),
    (0.0, 0.5 / 0.25),    # threshold belongs to the right box: β / w_R
    (0.25, 0.5 / 0.25),   # right edge is closed
    (0.2501, 0.0),
    (0.1, 0.5 / 0.25),
    (5.0, 0.0),
])
def test_derivative_hand_computed(x, expected):
    # x is v - θ; edges are tested on x itself so no rounding of v - θ blurs them.
    f = lambda x: adali_spike(x, 0.8, 0.25)
    x = jnp.float64(x)
    assert float(jax.grad(f)(x)) == pytest.approx(expected, rel=1e-12)
    assert float(jax.jvp(f, (x,), (jnp.float64(1.0),))[1]) == pytest.approx(expected, rel=1e-12)
    assert float(adali_derivative(x, 0.8, 0.25)) == pytest.approx(expected, rel=1e-12)
    # Relative to a threshold θ = 1 (interior points only): the same values at v = x + θ.
    if abs(x) > 1e-6 and abs(x + 0.8) > 1e-6 and abs(x - 0.25) > 1e-6:
        v = x + 1.0
        assert float(jax.grad(lambda v: adali_spike(v - 1.0, 0.8, 0.25))(v)) == pytest.approx(expected, rel=1e-12)


def test_derivative_alpha_beta_and_area():
    # Non-default areas: α = 0.3 over w_L = 0.6, β = 0.9 over w_R = 1.5.
    g = jax.vmap(jax.grad(lambda x: adali_spike(x, 0.6, 1.5, alpha=0.3, beta=0.9)))
    np.testing.assert_allclose(g(jnp.array([-0.3, 0.7, -0.7, 1.6])), [0.5, 0.6, 0.0, 0.0], rtol=1e-12)
    # Default areas: the surrogate integrates to 1 (the jump of H); midpoint rule on a fine grid.
    dx = 1e-5
    xs = jnp.arange(-3.0, 3.0, dx) + dx / 2
    area = float(jnp.sum(adali_derivative(xs, 0.45, 1.2)) * dx)
    assert area == pytest.approx(1.0, abs=1e-4)


def test_derivative_per_neuron_widths_and_no_width_gradient():
    x = jnp.array([-0.5, -0.5, 0.5])
    wl = jnp.array([1.0, 0.4, 0.7])
    wr = jnp.array([0.3, 0.3, 0.6])
    grad_x = jax.grad(lambda x: jnp.sum(adali_spike(x, wl, wr)))(x)
    np.testing.assert_allclose(grad_x, [0.5, 0.0, 0.5 / 0.6], rtol=1e-12)
    grad_w = jax.grad(lambda wl: jnp.sum(adali_spike(x, wl, wr)))(wl)
    np.testing.assert_array_equal(grad_w, 0.0)


def test_widths_change_without_retracing():
    traces = []

    @jax.jit
    def g(x, w):
        traces.append(1)
        return jax.grad(lambda x: adali_spike(x, w))(x)

    assert float(g(0.1, 0.5)) == pytest.approx(1.0)
    assert float(g(0.1, 0.25)) == pytest.approx(2.0)
    assert float(g(0.1, 0.05)) == 0.0
    assert len(traces) == 1


def test_log_schedule_values():
    E = 200
    assert float(width_schedule(1, E)) == pytest.approx(1.5, rel=1e-12)
    assert float(width_schedule(E, E)) == pytest.approx(0.3, rel=1e-12)
    e = 37
    assert float(width_schedule(e, E)) == pytest.approx(1.5 * e ** (math.log(0.2) / math.log(E)), rel=1e-12)
    ws = np.asarray(width_schedule(jnp.arange(1, E + 1), E))
    assert np.all(np.diff(ws) < 0)
    # The growing variant (the code's mode '+'): 0.3 -> 1.5.
    assert float(width_schedule(1, E, start=0.3, end=1.5)) == pytest.approx(0.3)
    assert float(width_schedule(E, E, start=0.3, end=1.5)) == pytest.approx(1.5)


@pytest.mark.parametrize("kind", ["linear", "sqrt"])
def test_linear_and_sqrt_schedules(kind):
    E = 11
    assert float(width_schedule(1, E, kind=kind)) == pytest.approx(1.5, rel=1e-12)
    assert float(width_schedule(E, E, kind=kind)) == pytest.approx(0.3, rel=1e-12)
    mid = float(width_schedule(6, E, kind=kind))    # (e-1)/(E-1) = 0.5
    expected = 1.5 - 1.2 * (0.5 if kind == "linear" else math.sqrt(0.5))
    assert mid == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError):
        width_schedule(1, E, kind="cosine")


def test_widths_from_potentials_known_distribution():
    theta = 1.0
    # Below θ: distances 0.1 … 0.9 (median 0.5); above: 0.2, 0.4, 0.6, 0.8 (median 0.5,
    # q=0.25 -> 0.35 by linear interpolation).
    below = theta - np.arange(1, 10) / 10
    above = theta + np.array([0.2, 0.4, 0.6, 0.8])
    v = jnp.asarray(np.concatenate([below, above]))
    wl, wr = widths_from_potentials(v, theta, coverage=0.5, min_width=0.01)
    assert float(wl) == pytest.approx(0.5, rel=1e-12)
    assert float(wr) == pytest.approx(0.5, rel=1e-12)
    wl, wr = widths_from_potentials(v, theta, coverage=0.25, min_width=0.01)
    assert float(wl) == pytest.approx(0.3, rel=1e-12)
    assert float(wr) == pytest.approx(0.35, rel=1e-12)
    # The rule's promise: a fraction `coverage` of each side falls inside the box.
    rng = np.random.default_rng(0)
    sigma = 0.4
    v = theta + sigma * rng.standard_normal(200_000)
    wl, wr = jax.jit(widths_from_potentials, static_argnames=("coverage",))(v, theta, coverage=0.5)
    half_normal_median = sigma * 0.6744897501960817
    assert float(wl) == pytest.approx(half_normal_median, rel=0.02)
    assert float(wr) == pytest.approx(half_normal_median, rel=0.02)
    inside = np.mean(np.abs(v[v < theta] - theta) <= float(wl))
    assert inside == pytest.approx(0.5, abs=0.01)
    # Scale equivariance (inside the clip range).
    wl2, _ = widths_from_potentials(theta + 2 * (v - theta), theta, coverage=0.5, max_width=10.0)
    assert float(wl2) == pytest.approx(2 * float(wl), rel=1e-9)


def test_widths_from_potentials_per_neuron_clip_and_fallback():
    # (time, neurons): neuron 0 never reaches θ -> w_R falls back to w_L; neuron 1 is far
    # below -> clipped to max_width; neuron 2 is tight -> clipped to min_width.
    v = jnp.array([[0.2, -5.0, 0.99],
                   [0.6, -6.0, 1.01],
                   [0.4, -7.0, 0.995]])
    wl, wr = widths_from_potentials(v, 1.0, coverage=0.5, axis=0)
    np.testing.assert_allclose(wl, [0.6, 1.5, 0.2], rtol=1e-12)
    np.testing.assert_allclose(wr, [0.6, 1.5, 0.2], rtol=1e-12)
    with pytest.raises(ValueError):
        widths_from_potentials(v, 1.0, coverage=0.0)


# --- online exactness -------------------------------------------------------------------

THETA = 1.0


def adali_lif(params, state, x):
    """LIF, reset by subtraction (differentiated), AdaLi surrogate with per-neuron widths
    carried in the state (left) and passed with the input (right), leaky readout."""
    v = params["leak"] * (state["v"] - THETA * state["z"]) + params["w_in"] @ x["spikes"]
    z = adali_spike(v - THETA, state["width_left"], x["width_right"])
    r = 0.8 * state["r"] + params["w_out"] @ z
    new_state = {"v": v, "z": z, "r": r, "width_left": state["width_left"]}
    return new_state, r


def _problem(T=40, m=5, n=7, k=3):
    keys = jax.random.split(jax.random.PRNGKey(3), 6)
    params = {
        "w_in": 0.6 * jax.random.normal(keys[0], (n, m)) + 0.35,
        "w_out": jax.random.normal(keys[1], (k, n)),
        "leak": jax.random.uniform(keys[2], (n,), minval=0.7, maxval=0.95),
    }
    state0 = {"v": jnp.zeros(n), "z": jnp.zeros(n), "r": jnp.zeros(k),
              "width_left": jax.random.uniform(keys[3], (n,), minval=0.4, maxval=1.5)}
    spikes = (jax.random.uniform(keys[4], (T, m)) < 0.4).astype(jnp.float64)
    # Right widths change every step: the learner must read them, not bake them in.
    width_right = jnp.tile(jnp.linspace(0.3, 1.2, n), (T, 1)) * (1.0 + 0.3 * jnp.sin(jnp.arange(T)))[:, None]
    xs = {"spikes": spikes, "width_right": width_right}
    targets = jax.random.normal(keys[5], (T, k))
    return params, state0, xs, targets


@pytest.mark.slow
def test_adali_lif_online_exact_vs_bptt():
    params, state0, xs, targets = _problem()
    loss_ref, grads_ref, ys = bptt(adali_lif, mse, params, state0, xs, targets)
    learner = sp.online_grad(adali_lif, mse, method="exact")
    carry, total = jax.jit(learner.run)(params, learner.init(params, state0), xs, targets)
    # Neurons really spike, and some potentials fall inside the boxes (non-zero surrogate).
    _, zs = jax.lax.scan(lambda s, x: (adali_lif(params, s, x)[0],) * 2, state0, xs)
    n_spikes = int(jnp.sum(zs["z"]))
    assert 20 < n_spikes < zs["z"].size - 20, n_spikes
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree_util.tree_leaves(grads_ref))
    assert float(total.loss) == pytest.approx(float(loss_ref), rel=1e-12)
    err = max_relative_error(total.grads, grads_ref)
    print("AdaLi LIF online vs BPTT, max rel err:", err)
    assert err <= 1e-9


@pytest.mark.slow
def test_adali_lif_schedule_between_epochs_same_program():
    """Widths set from a schedule, then from the potentials, between 'epochs': still exact."""
    params, state0, xs, targets = _problem(T=25)
    learner = sp.online_grad(adali_lif, mse)
    run = jax.jit(learner.run)
    for epoch in (1, 5):
        w = width_schedule(epoch, 5)
        s0 = dict(state0, width_left=jnp.full_like(state0["width_left"], w))
        x = dict(xs, width_right=jnp.full_like(xs["width_right"], w))
        _, ref, _ = bptt(adali_lif, mse, params, s0, x, targets)
        _, total = run(params, learner.init(params, s0), x, targets)
        assert max_relative_error(total.grads, ref) <= 1e-9
    # Widths from the potentials of the last run, one pair per neuron.
    _, states = jax.lax.scan(lambda s, x: (adali_lif(params, s, x)[0],) * 2, s0, x)
    wl, wr = widths_from_potentials(states["v"], THETA, coverage=0.5, axis=0)
    assert wl.shape == wr.shape == state0["width_left"].shape
    s0 = dict(state0, width_left=wl)
    x = dict(xs, width_right=jnp.broadcast_to(wr, xs["width_right"].shape))
    _, ref, _ = bptt(adali_lif, mse, params, s0, x, targets)
    _, total = run(params, learner.init(params, s0), x, targets)
    assert max_relative_error(total.grads, ref) <= 1e-9
