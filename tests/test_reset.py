"""Reset differentiated (EXODUS) vs detached (SLAYER): each exact online vs BPTT of the same model."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparseprop as sp
from sparseprop import neurons
from sparseprop.surrogates import Exponential

from reference import bptt, max_relative_error, mse

N_IN, N, T = 3, 5, 40
TOL = 1e-9
SLOPE = 10.0   # the default fast sigmoid, written out by hand below


def fast_sigmoid_grad(x):
    return 1.0 / (1.0 + SLOPE * np.abs(x)) ** 2


def problem(model, seed, gain=2.0):
    k_params, k_x, k_t = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = model.init_params(k_params, N_IN, N)
    xs = gain * jax.random.uniform(k_x, (T, N_IN))
    return params, model.init_state(N), xs, jax.random.normal(k_t, (T, N))


def online_and_bptt(model, params, state0, xs, targets):
    learner = sp.online_grad(model, mse, method="exact")
    _, total = learner.run(params, learner.init(params, state0), xs, targets)
    _, grads, ys = bptt(model, mse, params, state0, xs, targets)
    return total.grads, grads, np.asarray(ys)


MODELS = [(cls, reset, detach) for cls in (neurons.LIF,) for reset in neurons.RESETS for detach in (False, True)]
MODELS += [(neurons.ALIF, "subtract", True), (neurons.CurrentLIF, "multiplicative", True)]


@pytest.mark.slow
@pytest.mark.parametrize("cls,reset,detach", MODELS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_reset_choice_is_exact_online(cls, reset, detach):
    model = cls(reset=reset, detach_reset=detach)
    params, state0, xs, targets = problem(model, seed=31 + MODELS.index((cls, reset, detach)))
    online, reference, ys = online_and_bptt(model, params, state0, xs, targets)
    err = max_relative_error(online, reference)
    print(f"{cls.__name__} reset={reset} detach={detach}: {err:.2e}")
    assert err <= TOL
    assert 0 < ys.sum() < ys.size


def test_resonate_and_fire_detached_reset_is_exact_online():
    model = neurons.ResonateAndFire(detach_reset=True)
    online, reference, ys = online_and_bptt(model, *problem(model, seed=5, gain=1.0))
    assert max_relative_error(online, reference) <= TOL
    assert 0 < ys.sum() < ys.size


@pytest.mark.parametrize("reset", neurons.RESETS)
def test_detaching_changes_the_gradient_only_where_the_reset_is_differentiable(reset):
    grads = {}
    for detach in (False, True):
        model = neurons.LIF(reset=reset, detach_reset=detach)
        params, state0, xs, targets = problem(model, seed=3)
        grads[detach] = bptt(model, mse, params, state0, xs, targets)[1]
    difference = max_relative_error(grads[True], grads[False])
    if reset == "zero":      # `where` carries no derivative through the spike either way
        assert difference == 0.0
    else:
        assert difference > 1e-2


@pytest.mark.parametrize("detach", [False, True])
def test_membrane_jacobian_is_exodus_formula(detach):
    """dv_t/dv_{t-1} = α(1 − θ·H'(v_{t-1} − θ)) differentiated (EXODUS), α detached (SLAYER)."""
    model = neurons.LIF(reset="subtract", detach_reset=detach, threshold=1.3)
    params = model.init_params(jax.random.PRNGKey(0), N_IN, N)
    v_prev = jnp.array([0.2, 1.25, 1.3, 1.4, 2.9])
    jac = jax.jacfwd(lambda v: model(params, {"v": v}, jnp.ones(N_IN))[0]["v"])(v_prev)
    alpha = np.asarray(params["alpha"])
    reset_term = 0.0 if detach else 1.3 * fast_sigmoid_grad(np.asarray(v_prev) - 1.3)
    np.testing.assert_allclose(np.asarray(jac), np.diag(alpha * (1.0 - reset_term)), rtol=1e-14, atol=0)


@pytest.mark.parametrize("detach", [False, True])
def test_hand_written_exodus_eligibility_equals_bptt(detach):
    """The EXODUS forward eligibility, written by hand in numpy, gives BPTT's input-weight gradient:
    e_t = α(1 − θ·H'(v_{t−1} − θ))·e_{t−1} + x_t (detached: α·e_{t−1} + x_t),
    dL/dW[i] = Σ_t dl_t/dz_t[i] · H'(v_t[i] − θ) · e_t[i]."""
    model = neurons.LIF(reset="subtract", detach_reset=detach)
    params, state0, xs, targets = problem(model, seed=17)
    _, reference, ys = online_and_bptt(model, params, state0, xs, targets)
    assert 0 < ys.sum() < ys.size
    alpha, w = np.asarray(params["alpha"]), np.asarray(params["w_in"])
    v, e, grad = np.zeros(N), np.zeros((N, N_IN)), np.zeros((N, N_IN))
    for x, target in zip(np.asarray(xs), np.asarray(targets)):
        z_prev = (v > 1.0).astype(float)
        decay = alpha if detach else alpha * (1.0 - fast_sigmoid_grad(v - 1.0))
        e = decay[:, None] * e + x[None, :]
        v = alpha * (v - z_prev) + w @ x
        z = (v > 1.0).astype(float)
        grad += (2.0 * (z - target) * fast_sigmoid_grad(v - 1.0))[:, None] * e
    np.testing.assert_allclose(grad, np.asarray(reference["w_in"]), rtol=1e-11,
                               atol=1e-12 * np.abs(grad).max())


def test_exodus_setting_exponential_surrogate_is_exact():
    """EXODUS's defaults: reset by subtraction, differentiated, single-exponential surrogate of width 0.5."""
    model = neurons.LIF(reset="subtract", surrogate=Exponential(0.5), recurrent=True)
    online, reference, ys = online_and_bptt(model, *problem(model, seed=9, gain=1.5))
    assert max_relative_error(online, reference) <= TOL
    assert 0 < ys.sum() < ys.size
