"""Bad input gives a clear error, never a silently wrong gradient."""
import jax
import jax.numpy as jnp
import pytest

import sparseprop as sp
from models import lif_subtract
from reference import mse


def _setup():
    case = lif_subtract()
    x = jnp.ones(case.n_in)
    t = jnp.zeros(case.n_out)
    return case, x, t


def test_model_returning_wrong_structure():
    case, x, t = _setup()
    learner = sp.online_grad(lambda p, s, x: case.model(p, s, x)[0], mse)
    with pytest.raises(TypeError, match=r"must return a pair \(new_state, y\)"):
        learner.step(case.params, learner.init(case.params, case.state0), x, t)


def test_model_changing_the_state_structure():
    case, x, t = _setup()

    def model(p, s, x):
        new, y = case.model(p, s, x)
        return {"v": new["v"]}, y
    learner = sp.online_grad(model, mse)
    with pytest.raises(TypeError, match="same structure"):
        learner.step(case.params, learner.init(case.params, case.state0), x, t)


def test_state_with_wrong_shape():
    case, x, t = _setup()
    state = {"v": jnp.zeros(3), "z": jnp.zeros(case.state0["z"].shape)}
    learner = sp.online_grad(case.model, mse)
    with pytest.raises(Exception, match=r"state \(\['v'\]: float64\[3\]"):
        learner.step(case.params, learner.init(case.params, state), x, t)


def test_x_with_wrong_shape():
    case, x, t = _setup()
    learner = sp.online_grad(case.model, mse)
    with pytest.raises(Exception, match=r"the model failed on .* x \(<root>: float64\[9\]\)"):
        learner.step(case.params, learner.init(case.params, case.state0), jnp.ones(9), t)


def test_integer_params():
    case, x, t = _setup()
    params = dict(case.params, w=jnp.ones(case.params["w"].shape, jnp.int32))
    learner = sp.online_grad(case.model, mse)
    with pytest.raises(TypeError, match=r"parameter \['w'\] has dtype int32"):
        learner.step(params, learner.init(params, case.state0), x, t)
    with pytest.raises(TypeError, match="floating-point parameters only"):
        sp.bptt_grad(case.model, mse)(params, case.state0, x[None], t[None])


def test_loss_that_is_not_scalar():
    case, x, t = _setup()
    learner = sp.online_grad(case.model, lambda y, t: (y - t) ** 2)
    with pytest.raises(ValueError, match="loss_fn must return a scalar"):
        learner.step(case.params, learner.init(case.params, case.state0), x, t)


def test_primitive_without_forward_derivative_names_it_and_the_line():
    case, x, t = _setup()

    @jax.custom_vjp
    def opaque(v):
        return jnp.tanh(v)

    def fwd(v):
        return jnp.tanh(v), v

    def bwd(v, ct):          # not linear in ct: it cannot be transposed into a JVP
        return (ct * ct * (1 - jnp.tanh(v) ** 2),)
    opaque.defvjp(fwd, bwd)

    def model(p, s, x):
        v = 0.9 * s + opaque(p["w"] @ x)
        return v, v
    params = {"w": case.params["w"]}
    learner = sp.online_grad(model, mse)
    with pytest.raises(sp.TracerError, match=r"'opaque'.*test_errors.py:\d+"):
        learner.step(params, learner.init(params, jnp.zeros(7)), x, jnp.zeros(7))


def test_primitive_without_forward_rule_names_it_and_the_line():
    import numpy as np

    def model(p, s, x):
        v = 0.9 * s + p["w"] @ x
        v = jax.pure_callback(np.tanh, jax.ShapeDtypeStruct(v.shape, v.dtype), v)
        return v, v
    params = {"w": jnp.ones((3, 2))}
    learner = sp.online_grad(model, mse)
    with pytest.raises(sp.TracerError, match=r"primitive 'pure_callback' \(at .*test_errors.py:\d+.*custom_jvp"):
        learner.step(params, learner.init(params, jnp.zeros(3)), jnp.ones(2), jnp.zeros(3))


def test_complex_state_is_refused_with_a_way_out():
    """A non-holomorphic complex step (|z|) would make a complex trace wrong: refuse, don't guess."""
    def model(p, z, x):
        z = jnp.exp(1j * p["omega"]) * 0.9 * z + p["w"] @ x - 0.1 * z * jnp.abs(z)
        return z, jnp.abs(z)
    params = {"omega": jnp.linspace(0.1, 1.0, 3), "w": jnp.ones((3, 2))}
    learner = sp.online_grad(model, mse)
    with pytest.raises(TypeError, match=r"state leaf <root> is complex.*two float leaves"):
        learner.step(params, learner.init(params, jnp.zeros(3, jnp.complex128)), jnp.ones(2), jnp.zeros(3))
