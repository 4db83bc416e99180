"""Readout filtering in general: any linear filter downstream of per-synapse eligibilities (a leaky
readout, then a second leaky integrator or a synaptic current) with coefficients that are one
number for every unit keeps one filtered eligibility per filter state, whatever the dynamics
upstream; per-unit coefficients are reported with their cost. Gradients against BPTT, float64."""
import jax
import jax.numpy as jnp
import pytest

import sparseprop as sp
from sparseprop.tracer.storage import ReadoutFiltered
from reference import assert_matches_bptt, mse

N, M, K, T = 7, 4, 3, 15
sg = jax.lax.stop_gradient
BETA = jnp.linspace(1.0, 2.0, N)


def _params(key=0):
    k = jax.random.split(jax.random.PRNGKey(key), 3)
    return {"w_in": 1.5 * jax.random.normal(k[0], (N, M)), "w_rec": 0.4 * jax.random.normal(k[1], (N, N)),
            "w_out": jax.random.normal(k[2], (K, N))}


def _data(key=1):
    k = jax.random.split(jax.random.PRNGKey(key), 2)
    return (jax.random.uniform(k[0], (T, M)) < 0.5).astype(jnp.float64) * 1.5, jax.random.normal(k[1], (T, K))


def two_filters(kappa2=0.7, cut=lambda z: z):
    """ALIF (per-neuron β, shared leak), readout y1 = κ y1 + W z, then y2 = κ2 y2 + y1 read out."""
    def model(p, s, x):
        v, a, z, y1, y2 = s
        a = 0.9 * a + z
        v = 0.85 * v + p["w_in"] @ x + p["w_rec"] @ cut(z) - sg(z)
        z = sp.spike(v - 1.0 - BETA * a)
        y1 = 0.8 * y1 + p["w_out"] @ z
        y2 = kappa2 * y2 + y1
        return (v, a, z, y1, y2), y2
    return model


def _state0():
    return (jnp.zeros(N),) * 3 + (jnp.zeros(K),) * 2


def _filtered(learner, params, x):
    plan = learner.plan(params, _state0(), x)
    return {(plan.state_names[b.state], plan.param_names[b.param]) for b in plan.blocks
            if isinstance(b, ReadoutFiltered)}


@pytest.mark.parametrize("method", [pytest.param("exact", marks=pytest.mark.slow), "eprop"])
def test_a_second_leaky_integrator_after_the_readout_is_filtered_too(method):
    params = _params()
    xs, targets = _data()
    twin = two_filters(cut=sg) if method == "eprop" else None
    learner, *_ = assert_matches_bptt(two_filters(), mse, params, _state0(), xs, targets, method=method, twin=twin,
                                      spikes=lambda ys, states: jnp.sum(states[2]))
    if method == "eprop":       # exact keeps dense traces of the recurrent weights anyway
        assert {("state[3]", "params['w_in']"), ("state[4]", "params['w_in']"),
                ("state[3]", "params['w_rec']"), ("state[4]", "params['w_rec']")} <= _filtered(learner, params,
                                                                                               xs[0])


@pytest.mark.slow
def test_per_unit_coefficients_are_reported_with_their_cost_and_stay_exact():
    params = _params(2)
    xs, targets = _data(3)
    model = two_filters(kappa2=jnp.linspace(0.6, 0.9, K), cut=sg)
    learner, *_ = assert_matches_bptt(model, mse, params, _state0(), xs, targets, method="eprop",
                                      spikes=lambda ys, states: jnp.sum(states[2]))
    report = learner.explain(params, _state0(), xs[0], print_report=False)
    note = next(n for n in report.notes if n.startswith("readout at"))
    assert "state[3], state[4]" in note and "bytes per example" in note and "not one number for every unit" in note
    assert not _filtered(learner, params, xs[0])


def gain_readout(gain):
    """A fixed per-neuron gain between the spikes and the readout: W · (g ⊙ z)."""
    def model(p, s, x):
        v, a, z, y = s
        a = 0.9 * a + z
        v = 0.85 * v + p["w_in"] @ x + p["w_rec"] @ sg(z) - sg(z)
        z = sp.spike(v - 1.0 - BETA * a)
        y = 0.8 * y + p["w_out"] @ (gain(p) * z)
        return (v, a, z, y), y
    return model


def test_a_fixed_per_neuron_gain_before_the_readout_keeps_it_filtered():
    params = _params(4)
    xs, targets = _data(5)
    s0 = (jnp.zeros(N),) * 3 + (jnp.zeros(K),)
    model = gain_readout(lambda p: jnp.linspace(0.5, 1.5, N))
    learner, *_ = assert_matches_bptt(model, mse, params, s0, xs, targets, method="eprop",
                                      spikes=lambda ys, states: jnp.sum(states[2]))
    plan = learner.plan(params, s0, xs[0])
    assert [b for b in plan.blocks if isinstance(b, ReadoutFiltered) and plan.param_names[b.param] == "params['w_rec']"]


@pytest.mark.slow
def test_a_trained_gain_is_no_fixed_matrix():
    params = dict(_params(6), gain=jnp.linspace(0.5, 1.5, N))
    xs, targets = _data(7)
    s0 = (jnp.zeros(N),) * 3 + (jnp.zeros(K),)
    learner, *_ = assert_matches_bptt(gain_readout(lambda p: p["gain"]), mse, params, s0, xs, targets,
                                      method="eprop", spikes=lambda ys, states: jnp.sum(states[2]))
    assert not [b for b in learner.plan(params, s0, xs[0]).blocks if isinstance(b, ReadoutFiltered)]


def two_layers(detach=True):
    """Two feed-forward LIF layers (shared leak): layer 2 is a leaky filter of W_hid z1, and its
    spike z2 a per-neuron function of it."""
    def model(p, s, x):
        v1, z1, v2, z2 = s
        v1 = 0.9 * v1 + p["w_in"] @ x - sg(z1)
        z1 = sp.spike(v1 - 1.0)
        v2 = 0.8 * v2 + p["w_hid"] @ z1 - (sg(z2) if detach else z2)
        z2 = sp.spike(v2 - 1.0)
        return (v1, z1, v2, z2), p["w_out"] @ z2
    return model


@pytest.mark.parametrize("detach", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_a_second_layer_filters_the_first_layers_eligibility(detach):
    """M[v2, w_in] = W_hid · q with q ← α q + M[z1, w_in], one (n, m) array per example, not
    (n, n, m); with a differentiated reset, z2 feeds v2 back and the blocks stay dense."""
    k = jax.random.split(jax.random.PRNGKey(8), 3)
    params = {"w_in": 1.6 * jax.random.normal(k[0], (N, M)), "w_hid": 1.2 * jax.random.normal(k[1], (N, N)),
              "w_out": jax.random.normal(k[2], (K, N))}
    xs, targets = _data(9)
    s0 = (jnp.zeros(N),) * 4
    for method in ("exact", "eprop"):
        learner, *_ = assert_matches_bptt(two_layers(detach), mse, params, s0, xs, targets, method=method,
                                          spikes=lambda ys, states: jnp.sum(states[3]))
    plan = learner.plan(params, s0, xs[0])
    shapes = {(plan.state_names[b.state], type(b).__name__): b.shape for b in plan.blocks
              if plan.param_names[b.param] == "params['w_in']"}
    if detach:
        assert shapes[("state[2]", "ReadoutFiltered")] == (N, M)
        assert max(int(jnp.prod(jnp.array(s))) for s in shapes.values()) == N * M
    else:
        assert ("state[2]", "Dense") in shapes
