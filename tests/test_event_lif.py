"""Event-driven continuous-time LIF (sparseprop.event_lif): exact crossings, forward-propagated
spike-time derivatives vs reverse-mode autodiff and central finite differences (float64),
discontinuity flags, jit/vmap; the Yin-Yang generator; discrete vs continuous as dt shrinks."""
import importlib.util
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparseprop.data import encode_spike_times, yinyang, yinyang_class
from sparseprop.event_lif import (EventLIF, first_spike_times, forward_gradients, layer_spike_times,
                                  loss_and_grad, pattern_changes, potential, spike_times)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

QUADRATIC = EventLIF(tau_m=2.0, tau_s=1.0, max_spikes=6, t_max=12.0)
NEWTON = EventLIF(tau_m=3.0, tau_s=1.0, max_spikes=6, t_max=12.0)
REFRACTORY = EventLIF(tau_m=2.5, tau_s=0.7, max_spikes=6, t_max=12.0, refractory=0.3)
CONFIGS = {"quadratic": QUADRATIC, "newton": NEWTON, "refractory": REFRACTORY}


def network(seed=0, m=5, n1=7, n2=3):
    """Input times and two weight matrices of different shapes from distinct keys."""
    k = jax.random.split(jax.random.PRNGKey(seed), 3)
    in_times = jax.random.uniform(k[0], (m,), minval=0.0, maxval=3.0)
    w1 = 1.5 * jax.random.normal(k[1], (n1, m)) + 1.5
    w2 = 1.0 * jax.random.normal(k[2], (n2, n1)) + 1.5
    return in_times, [w1, w2]


def finite(x):
    return jnp.where(jnp.isfinite(x), x, 0.0)


# --- forward dynamics -------------------------------------------------------------------------

def test_single_input_crossing_matches_hand_computed_closed_form():
    # τ_m = 2 τ_s, k = 1: one input of weight w at t0 gives V = w (x - x²), x = e^{-(t-t0)/τ_m};
    # V = θ at the larger root x = (1 + sqrt(1 - 4θ/w)) / 2.
    t0, w, theta = 0.7, 5.0, 1.0
    expected = t0 - 2.0 * math.log((1 + math.sqrt(1 - 4 * theta / w)) / 2)
    for solver in ("quadratic", "newton"):
        cfg = EventLIF(tau_m=2.0, tau_s=1.0, threshold=theta, t_max=10.0, solver=solver)
        out = layer_spike_times(cfg, jnp.array([[w]]), jnp.array([t0]))
        assert abs(float(out.times[0, 0]) - expected) <= 1e-14 * expected, solver
        assert int(out.count[0]) == 1


def test_potential_between_events_is_the_closed_form():
    # Independent of the simulator: the kernel sum against the two-exponential formula.
    cfg = NEWTON
    t = jnp.linspace(0.0, 6.0, 61)
    v = potential(cfg, jnp.array([2.0, -0.5]), jnp.array([0.5, 1.5]), jnp.array([0, 1]), t)
    k = 1.0 / (3.0 - 1.0)
    psp = lambda s: jnp.where(s > 0, k * (jnp.exp(-s / 3.0) - jnp.exp(-s / 1.0)), 0.0)
    assert float(jnp.max(jnp.abs(v - (2.0 * psp(t - 0.5) - 0.5 * psp(t - 1.5))))) < 1e-15


@pytest.mark.slow
@pytest.mark.parametrize("name", ["quadratic", "newton"])
def test_crossings_are_exact_and_none_is_missed(name):
    cfg = CONFIGS[name]
    in_times, (w1, _) = network()
    out = jax.jit(layer_spike_times, static_argnums=0)(cfg, w1, in_times)
    assert int(jnp.sum(out.count)) >= 8 and int(jnp.max(out.count)) >= 2, "neurons must really spike, several times"
    assert not bool(jnp.any(out.saturated))
    grid = jnp.linspace(0.0, cfg.t_max, 4001)
    for i in range(w1.shape[0]):
        spikes = out.times[i][jnp.isfinite(out.times[i])]
        # V(t_k) = θ, from the kernel sum with the earlier resets subtracted.
        if spikes.size:
            v_at = potential(cfg, w1[i], in_times, jnp.arange(in_times.size), spikes, spikes)
            assert float(jnp.max(jnp.abs(v_at - cfg.threshold))) < 1e-13
        # No crossing was missed: the potential never exceeds θ anywhere.
        v = potential(cfg, w1[i], in_times, jnp.arange(in_times.size), grid, spikes)
        assert float(jnp.max(v)) <= cfg.threshold + 1e-12


@pytest.mark.slow
def test_newton_equals_the_quadratic_closed_form():
    in_times, weights = network(seed=3)
    newton = EventLIF(tau_m=2.0, tau_s=1.0, max_spikes=6, t_max=12.0, solver="newton")
    a = spike_times([QUADRATIC, QUADRATIC], weights, in_times)
    b = spike_times([newton, newton], weights, in_times)
    for x, y in zip(a, b):
        assert bool(jnp.all(x.count == y.count)) and int(jnp.sum(x.count)) > 0
        assert float(jnp.max(jnp.abs(finite(x.times) - finite(y.times)))) < 1e-13


def test_refractory_period_holds_the_neuron():
    in_times, (w1, _) = network()
    out = layer_spike_times(REFRACTORY, 3.0 * w1, in_times)
    gaps = jnp.diff(out.times, axis=1)
    gaps = gaps[jnp.isfinite(gaps)]
    assert gaps.size > 0 and float(jnp.min(gaps)) >= REFRACTORY.refractory


def test_saturation_is_flagged_and_earlier_spikes_are_unchanged():
    in_times, (w1, _) = network()
    few = EventLIF(tau_m=2.0, tau_s=1.0, max_spikes=2, t_max=12.0)
    a = layer_spike_times(few, w1, in_times)
    b = layer_spike_times(QUADRATIC, w1, in_times)
    assert bool(jnp.all(a.saturated == (b.count > 2)))
    assert bool(jnp.any(a.saturated))
    assert bool(jnp.all(finite(a.times) == finite(b.times[:, :2])))


# --- forward gradients ------------------------------------------------------------------------

def relative_error(a, b):
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CONFIGS))
def test_forward_gradients_equal_reverse_mode_autodiff(name):
    cfg = CONFIGS[name]
    in_times, weights = network()
    cfgs = [cfg, cfg]
    res = forward_gradients(cfgs, weights, in_times)
    assert int(jnp.sum(res.layers[0].count)) >= 5 and int(jnp.sum(res.layers[1].count)) >= 3
    assert not any(bool(jnp.any(o.grazing)) for o in res.layers)
    rev = jax.jacrev(lambda w1, w2: [finite(o.times) for o in spike_times(cfgs, [w1, w2], in_times)],
                     argnums=(0, 1))(*weights)
    assert relative_error(res.jacobians[0][0], rev[0][0]) <= 1e-9
    assert relative_error(res.jacobians[1][1], rev[1][1]) <= 1e-9
    # The dense cross-layer part: output spike times through hidden spike times.
    assert float(jnp.max(jnp.abs(rev[1][0]))) > 1e-3
    assert relative_error(res.jacobians[1][0], rev[1][0]) <= 1e-9


@pytest.mark.slow
@pytest.mark.parametrize("name", ["quadratic", "refractory"])
def test_forward_gradients_equal_finite_differences(name):
    cfg = CONFIGS[name]
    cfgs = [cfg, cfg]
    in_times, weights = network()
    res = forward_gradients(cfgs, weights, in_times)
    h = 1e-6
    base = spike_times(cfgs, weights, in_times)
    flat = [w.reshape(-1) for w in weights]

    def times_at(w1, w2):
        out = spike_times(cfgs, [w1.reshape(weights[0].shape), w2.reshape(weights[1].shape)], in_times)
        return [finite(o.times) for o in out], [o.count for o in out]

    times_at = jax.jit(times_at)
    checked = 0
    for which in (0, 1):
        for idx in range(flat[which].size):
            e = jnp.zeros_like(flat[which]).at[idx].set(h)
            plus = [f + (e if j == which else 0) for j, f in enumerate(flat)]
            minus = [f - (e if j == which else 0) for j, f in enumerate(flat)]
            (tp, cp), (tm, cm) = times_at(*plus), times_at(*minus)
            for o, a, b in zip(base, cp, cm):    # same spike pattern at w ± h
                assert bool(jnp.all(o.count == a) & jnp.all(o.count == b))
            for layer in range(which, 2):
                fd = (tp[layer] - tm[layer]) / (2 * h)
                jac = res.jacobians[layer][which].reshape(fd.shape + (-1,))[..., idx]
                assert float(jnp.max(jnp.abs(fd - jac))) <= 1e-6 * max(1.0, float(jnp.max(jnp.abs(jac))))
                checked += 1
    assert checked == weights[0].size * 2 + weights[1].size


@pytest.mark.slow
def test_loss_gradient_from_forward_quantities_equals_reverse_mode():
    cfg = EventLIF(tau_m=2.0, tau_s=1.0, max_spikes=1, t_max=8.0)
    cfgs = [cfg, cfg]
    in_times, (w1, w2) = network(seed=1)
    w2 = 0.5 * w2
    c = jax.random.normal(jax.random.PRNGKey(9), (3,))

    def loss_fn(times, vmax, label):
        t = first_spike_times(times, 8.0)
        silent = ~jnp.isfinite(times[:, 0])
        return -jax.nn.log_softmax(-t)[label] + jnp.sum(c * t) + jnp.sum(jnp.where(silent, 1.0 - vmax, 0.0))

    loss, grads, res = loss_and_grad(loss_fn, cfgs, [w1, w2], in_times, 1)
    out = res.layers[-1]
    assert 0 < int(jnp.sum(out.count)) < 3, "the test needs firing and silent output neurons"

    def reference(w1, w2):
        o = spike_times(cfgs, [w1, w2], in_times)[-1]
        return loss_fn(o.times, o.vmax, 1)

    ref_loss, ref_grads = jax.value_and_grad(reference, argnums=(0, 1))(w1, w2)
    assert abs(float(loss - ref_loss)) < 1e-14
    for g, r in zip(grads, ref_grads):
        assert relative_error(g, r) <= 1e-9


@pytest.mark.slow
def test_jit_and_vmap_over_a_batch():
    cfgs = (QUADRATIC, QUADRATIC)
    _, weights = network()
    batch = jax.random.uniform(jax.random.PRNGKey(5), (4, 5), minval=0.0, maxval=3.0)
    one = lambda x: (forward_gradients(cfgs, weights, x).jacobians[1][0], spike_times(cfgs, weights, x)[1].times)
    batched = jax.jit(jax.vmap(one))(batch)
    single = jax.jit(one)
    assert int(jnp.sum(jnp.isfinite(batched[1]))) >= 4, "output neurons must spike"
    for b in range(batch.shape[0]):
        for x, y in zip(single(batch[b]), batched):
            assert float(jnp.max(jnp.abs(finite(x) - finite(y[b])))) < 1e-13


# --- discontinuities --------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("excess, fires", [(-1e-9, False), (1e-9, True)])
def test_grazing_potential_is_flagged(excess, fires):
    # A single input of weight w peaks at w/4 (τ_m = 2 τ_s): put the peak next to θ.
    cfg = EventLIF(tau_m=2.0, tau_s=1.0, t_max=10.0)
    w = jnp.array([[4.0 * (1.0 + excess)]])
    out = layer_spike_times(cfg, w, jnp.array([0.5]))
    assert bool(out.count[0] == 1) == fires
    assert bool(out.grazing[0]) and float(out.margin[0]) < 2e-9
    # The spike count changes under a small perturbation across the peak.
    assert bool(pattern_changes([cfg], [w], jnp.array([0.5]), [[-2 * excess * w]])[0])
    # Far from θ: no flag, and the pattern is stable.
    out = layer_spike_times(cfg, 2.0 * w, jnp.array([0.5]))
    assert not bool(out.grazing[0]) and float(out.margin[0]) > 0.5
    assert not bool(pattern_changes([cfg], [2.0 * w], jnp.array([0.5]), [[1e-6 * w]])[0])


def test_bad_constants_raise_with_a_message():
    with pytest.raises(ValueError, match="tau_s < tau_m"):
        EventLIF(tau_m=1.0, tau_s=2.0)
    with pytest.raises(ValueError, match="tau_m == 2 tau_s"):
        EventLIF(tau_m=3.0, tau_s=1.0, solver="quadratic")
    with pytest.raises(ValueError, match="max_spikes"):
        EventLIF(max_spikes=0)


# --- Yin-Yang ---------------------------------------------------------------------------------

def test_yinyang_generator_properties():
    data = yinyang(3000, seed=42)
    x, y = data.inputs[:, 0], data.inputs[:, 1]
    assert data.inputs.shape == (3000, 4) and data.labels.shape == (3000,)
    assert np.all(np.hypot(x - 0.5, y - 0.5) <= 0.5)                   # inside the disc
    np.testing.assert_allclose(data.inputs[:, 2], 1 - x)
    np.testing.assert_allclose(data.inputs[:, 3], 1 - y)
    fractions = np.bincount(data.labels, minlength=3) / 3000
    assert np.all(np.abs(fractions - 1 / 3) < 0.03), fractions          # balanced classes
    assert np.array_equal(yinyang_class(x, y), data.labels)
    again = yinyang(3000, seed=42)
    assert np.array_equal(again.inputs, data.inputs) and np.array_equal(again.labels, data.labels)
    assert not np.array_equal(yinyang(3000, seed=41).inputs, data.inputs)


def test_yinyang_classes_at_known_points():
    # The two dots, the upper half away from the right dot, the lower half away from the left dot.
    assert list(yinyang_class([0.75, 0.25, 0.5, 0.5], [0.5, 0.5, 0.9, 0.1])) == [2, 2, 1, 0]


def test_spike_time_encoding():
    times = encode_spike_times(np.array([[0.0, 1.0, 0.25, 0.5]]), t_early=0.1, t_late=2.1, bias_time=0.9)
    np.testing.assert_allclose(times, [[0.1, 2.1, 0.6, 1.1, 0.9]])


# --- discrete vs continuous -------------------------------------------------------------------

@pytest.mark.slow
def test_discrete_gradients_converge_to_the_continuous_ones():
    spec = importlib.util.spec_from_file_location("spike_time_dt", os.path.join(ROOT, "benchmarks", "spike_time_dt.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.compare([0.1, 0.01])
    (_, t_coarse, g_coarse), (_, t_fine, g_fine) = rows
    assert t_fine < t_coarse / 30 and g_fine < g_coarse / 5 and g_fine < 0.02
