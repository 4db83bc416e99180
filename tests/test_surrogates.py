"""Surrogate catalogue: exact 0/1 forward, hand-computed derivatives, FGI == custom_jvp (BPTT and online)."""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparseprop as sp
from sparseprop import neurons, surrogates as S

from reference import bptt, max_relative_error, mse

INJECTIONS = S.INJECTIONS

# (surrogate, x, g'(x)) worked out by hand from each docstring formula
HAND_VALUES = [
    (S.FastSigmoid(10.0), 0.1, 0.25),                      # 1/(1+1)^2
    (S.FastSigmoid(10.0), -0.3, 0.0625),                   # 1/(1+3)^2
    (S.Sigmoid(4.0), 0.0, 1.0),                            # 4 · 1/2 · 1/2
    (S.Sigmoid(4.0), math.log(3.0) / 4.0, 0.75),           # σ = 3/4: 4 · 3/4 · 1/4
    (S.Arctan(2.0), 0.0, 1.0),                             # α/2
    (S.Arctan(2.0), 1.0 / math.pi, 0.5),                   # 1 / (1 + 1)
    (S.Triangle(1.0), 0.25, 0.75),
    (S.Triangle(2.0), -1.0, 0.25),                         # (1 - 1/2) / 2
    (S.Triangle(1.0), 1.5, 0.0),
    (S.Exponential(0.5), 0.0, 2.0),
    (S.Exponential(0.5), 0.5, 0.7357588823428847),         # 2 e^-1
    (S.Gaussian(0.5), 0.0, 0.7978845608028654),            # 1 / (0.5 √(2π))
    (S.Gaussian(0.5), -0.5, 0.48394144903828673),          # e^-1/2 / (0.5 √(2π))
    (S.Rectangular(1.0), 0.4, 1.0),
    (S.Rectangular(1.0), -0.6, 0.0),
    (S.Rectangular(0.5), 0.2, 2.0),
    (S.Triangle(1.0, scale=0.3), 0.0, 0.3),                # Bellec's dampened pseudo-derivative
]


def with_injection(surrogate, injection):
    return dataclasses.replace(surrogate, injection=injection)


@pytest.mark.parametrize("injection", INJECTIONS)
@pytest.mark.parametrize("surrogate,x,expected", HAND_VALUES)
def test_derivative_matches_hand_value(surrogate, x, expected, injection):
    s = with_injection(surrogate, injection)
    assert float(jax.grad(s)(jnp.float64(x))) == pytest.approx(expected, rel=1e-14, abs=1e-300)
    assert float(s.grad(x)) == pytest.approx(expected, rel=1e-14, abs=1e-300)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("injection", INJECTIONS)
@pytest.mark.parametrize("name", list(S.CATALOGUE))
def test_forward_is_exactly_heaviside(name, injection, dtype):
    # many values, with exact zeros and values a few ulps around zero
    x = jnp.concatenate([jax.random.normal(jax.random.PRNGKey(1), (1000,), dtype) * 3,
                         jnp.array([0.0, -0.0, 1e-30, -1e-30, 1e-7, -1e-7], dtype)])
    s = S.CATALOGUE[name](injection=injection)
    y, g = jax.jvp(s, (x,), (jnp.ones_like(x),))
    assert y.dtype == dtype
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x > 0, dtype))
    np.testing.assert_allclose(np.asarray(g), np.asarray(s.grad(x)), rtol=1e-6 if dtype == jnp.float32 else 1e-15)


def test_width_is_traceable_and_gets_no_gradient():
    for injection in INJECTIONS:
        grad_at = jax.jit(lambda slope, x: jax.grad(S.FastSigmoid(slope, injection=injection))(x))
        assert float(grad_at(10.0, 0.1)) == pytest.approx(0.25, rel=1e-14)
        assert float(grad_at(30.0, 0.1)) == pytest.approx(1.0 / 16.0, rel=1e-14)
        d_width = jax.grad(lambda w: jnp.sum(S.Gaussian(w, injection=injection)(jnp.linspace(-1, 1, 7))))(0.5)
        assert float(d_width) == 0.0


def test_spike_default_and_errors():
    assert float(jax.grad(sp.spike)(0.1)) == pytest.approx(0.25, rel=1e-14)   # fast sigmoid, slope 10
    assert float(sp.spike(0.0)) == 0.0 and float(sp.spike(1e-12)) == 1.0
    assert float(jax.grad(lambda v: sp.spike(v, S.Exponential(0.5)))(0.0)) == 2.0
    with pytest.raises(TypeError, match="FastSigmoid"):
        sp.spike(0.1, 10.0)
    with pytest.raises(ValueError, match="injection"):
        S.Gaussian(injection="straight_through")


# -- FGI vs custom_jvp through a whole network, BPTT and online exact -----------------------

N_IN, N, N_OUT, T = 4, 6, 3, 30


def network_problem(surrogate):
    net = neurons.Sequential((neurons.LIF(surrogate=surrogate), neurons.LeakyIntegrator()))
    sizes = (N_IN, N, N_OUT)
    k_params, k_x, k_t = jax.random.split(jax.random.PRNGKey(23), 3)
    xs = 1.5 * jax.random.uniform(k_x, (T, N_IN))
    return net, net.init_params(k_params, sizes), net.init_state(sizes), xs, jax.random.normal(k_t, (T, N_OUT))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(S.CATALOGUE))
def test_fgi_and_custom_jvp_agree_bptt_and_online(name):
    results = {}
    for injection in INJECTIONS:
        net, params, state0, xs, targets = network_problem(S.CATALOGUE[name](injection=injection))
        _, bptt_grads, _ = bptt(net, mse, params, state0, xs, targets)
        learner = sp.online_grad(net, mse, method="exact")
        _, total = learner.run(params, learner.init(params, state0), xs, targets)
        online_err = max_relative_error(total.grads, bptt_grads)
        print(f"{name} {injection}: online vs BPTT {online_err:.2e}")
        assert online_err <= 1e-9
        results[injection] = bptt_grads, total.grads
    (bptt_jvp, online_jvp), (bptt_fgi, online_fgi) = results["custom_jvp"], results["fgi"]
    # the same derivative, multiplied in the same order: identical gradients
    assert max_relative_error(bptt_fgi, bptt_jvp) <= 1e-15
    assert max_relative_error(online_fgi, online_jvp) <= 1e-15
    # the hidden layer spikes, and the surrogate reaches the weights
    _, z = jax.lax.scan(lambda s, x: net.layers[0](params[0], s, x), state0[0], xs)
    assert 0 < float(z.sum()) < z.size
    assert float(jnp.max(jnp.abs(bptt_jvp[0]["w_in"]))) > 0
