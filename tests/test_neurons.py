"""Every neuron of the catalogue: exact online gradient == BPTT (tests/reference.py), float64."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparseprop as sp
from sparseprop import neurons
from sparseprop.surrogates import Exponential

from reference import bptt, max_relative_error, mse

N_IN, N, N_OUT, T = 3, 5, 2, 40   # every matrix gets its own shape
TOL = 1e-9

# name -> (model, input gain that makes it spike, spiking?)
CASES = {
    "lif": (neurons.LIF(), 2.0, True),
    "lif_recurrent": (neurons.LIF(recurrent=True), 1.0, True),
    "current_lif": (neurons.CurrentLIF(), 1.0, True),
    "alif": (neurons.ALIF(), 2.0, True),
    "alif_recurrent_exponential": (neurons.ALIF(recurrent=True, surrogate=Exponential(0.5)), 2.0, True),
    "izhikevich": (neurons.Izhikevich(), 8.0, True),
    "adex": (neurons.AdEx(), 6.0, True),
    "resonate_and_fire": (neurons.ResonateAndFire(), 1.0, True),
    "leaky_integrator": (neurons.LeakyIntegrator(), 1.0, False),
    "diagonal_lru": (neurons.DiagonalLRU(), 1.0, False),
    "gru": (neurons.GRUCell(), 1.0, False),
}


def problem(seed, model, gain, n_out=N):
    """Parameters, initial state, inputs and targets, each from its own key."""
    k_params, k_x, k_t = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = model.init_params(k_params, N_IN, N)
    xs = gain * jax.random.uniform(k_x, (T, N_IN))
    targets = jax.random.normal(k_t, (T, n_out))
    return params, model.init_state(N), xs, targets


def online_vs_bptt(model, params, state0, xs, targets):
    learner = sp.online_grad(model, mse, method="exact")
    _, total = learner.run(params, learner.init(params, state0), xs, targets)
    loss, grads, ys = bptt(model, mse, params, state0, xs, targets)
    assert jnp.allclose(total.loss, loss, rtol=1e-12)
    assert jnp.array_equal(total.outputs, ys)
    return max_relative_error(total.grads, grads), ys, grads


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_exact_online_equals_bptt(name):
    model, gain, spiking = CASES[name]
    params, state0, xs, targets = problem(list(CASES).index(name) + 11, model, gain)
    err, ys, grads = online_vs_bptt(model, params, state0, xs, targets)
    print(f"{name}: max rel err {err:.2e}")
    assert err <= TOL
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree_util.tree_leaves(grads)), \
        "every parameter must get a gradient"
    if spiking:
        ys = np.asarray(ys)
        assert set(np.unique(ys)) <= {0.0, 1.0}
        assert 0 < ys.sum() < ys.size, "some neurons must spike, not all of them all the time"


@pytest.mark.slow
def test_sequential_spiking_layer_with_readout():
    net = neurons.Sequential((neurons.ALIF(), neurons.CurrentLIF(reset="multiplicative"),
                              neurons.LeakyIntegrator()))
    sizes = (N_IN, N, N + 2, N_OUT)
    k_params, k_x, k_t = jax.random.split(jax.random.PRNGKey(7), 3)
    params, state0 = net.init_params(k_params, sizes), net.init_state(sizes)
    xs = 2.0 * jax.random.uniform(k_x, (T, N_IN))
    targets = jax.random.normal(k_t, (T, N_OUT))
    err, _, _ = online_vs_bptt(net, params, state0, xs, targets)
    assert err <= TOL
    inputs = xs   # the hidden layers spike, layer by layer
    for layer, p, s in zip(net.layers[:-1], params, state0):
        _, inputs = jax.lax.scan(lambda s, x: layer(p, s, x), s, inputs)
        assert 0 < float(inputs.sum()) < inputs.size


def test_sizes_are_checked():
    with pytest.raises(ValueError, match="sizes"):
        neurons.Sequential((neurons.LIF(),)).init_params(jax.random.PRNGKey(0), (3,))
    with pytest.raises(ValueError, match="reset"):
        neurons.LIF(reset="soft")


def test_params_default_to_jax_float():
    params = neurons.LIF().init_params(jax.random.PRNGKey(0), N_IN, N)
    assert all(p.dtype == jnp.float64 for p in params.values())
    assert neurons.LIF().init_state(N)["v"].dtype == jnp.float64


def test_explain_runs_on_every_neuron():
    pytest.importorskip("sparseprop.explain")
    for name, (model, gain, _) in CASES.items():
        params, state0, xs, _ = problem(0, model, gain)
        report = sp.online_grad(model, mse).explain(params, state0, xs[0], print_report=False)
        assert str(report)
