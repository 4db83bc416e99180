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


# ------------------------------------------------------------------ carries that do not fit
def test_step_without_a_carry_says_to_call_init():
    case, x, t = _setup()
    learner = sp.online_grad(case.model, mse)
    with pytest.raises(TypeError, match=r"carry is None: start a stream with carry = learner.init"):
        learner.step(case.params, None, x, t)
    with pytest.raises(TypeError, match=r"must be the Carry .* got a dict"):
        learner.step(case.params, case.state0, x, t)           # the state instead of the carry
    carry = learner.init(case.params, case.state0, x)
    with pytest.raises(TypeError, match=r"got a tuple"):
        learner.run(case.params, tuple(carry), x[None], t[None])


def test_carry_of_another_method_is_refused():
    from models import recurrent_lif
    case = recurrent_lif()
    x, t = jnp.ones(case.n_in), jnp.zeros(case.n_out)
    exact, eprop = sp.online_grad(case.model, mse), sp.online_grad(case.model, mse, method="eprop")
    carry = eprop.init(case.params, case.state0, x)
    with pytest.raises(ValueError, match=r"built by a learner with method='eprop'; this learner uses method='exact'"):
        exact.step(case.params, carry, x, t)
    with pytest.raises(ValueError, match=r"method='eprop'"):
        jax.jit(exact.step)(case.params, carry, x, t)


def test_carry_of_other_shapes_names_the_trace():
    """Same state shapes, other parameter shapes: the traces do not fit and the error says which."""
    case, x, t = _setup()
    small = lif_subtract(m=3)
    learner = sp.online_grad(case.model, mse)
    carry = learner.init(small.params, small.state0, jnp.ones(3))           # built for w (7, 3)
    with pytest.raises(ValueError, match=r"trace for dstate\['v'\]/dparams\['w'\] is float64\[7, 3\].*"
                                         r"float64\[7, 4\].*init\(params, state0, x0\)"):
        learner.step(case.params, carry, x, t)
    hand_made = sp.Carry(case.state0, (jnp.zeros(3),))                       # a plain tuple of arrays
    with pytest.raises(ValueError, match=r"holds 1 trace arrays"):
        learner.step(case.params, hand_made, x, t)


# ------------------------------------------------------------------ NaN and inf in a stream
def _nan_stream():
    case, _, _ = _setup()
    from models import inputs
    xs, targets = inputs(case, T=8)
    return case, xs, targets


def test_nan_by_default_poisons_the_stream_silently():
    case, xs, targets = _nan_stream()
    learner = sp.online_grad(case.model, mse)
    carry = learner.init(case.params, case.state0, xs[0])
    carry, _ = learner.step(case.params, carry, xs[0].at[1].set(jnp.nan), targets[0])
    for x, t in zip(xs[1:], targets[1:]):
        carry, out = learner.step(case.params, carry, x, t)
    assert bool(jnp.all(jnp.isnan(out.grads["w"])))           # what check_finite is for


def test_check_finite_names_the_quantity_eagerly_and_under_jit():
    from jax.experimental import checkify
    case, xs, targets = _nan_stream()
    learner = sp.online_grad(case.model, mse, check_finite=True)
    carry = learner.init(case.params, case.state0, xs[0])
    carry, out = learner.step(case.params, carry, xs[0], targets[0])        # finite: no error
    with pytest.raises(Exception, match=r"the input x has a NaN or inf entering the step"):
        learner.step(case.params, carry, xs[1].at[0].set(jnp.inf), targets[1])
    checked = jax.jit(checkify.checkify(learner.step))
    err, _ = checked(case.params, carry, xs[1], targets[1])
    err.throw()                                                              # no error
    bad = dict(case.params, beta=case.params["beta"].at[2].set(jnp.nan))
    err, _ = checked(bad, carry, xs[1], targets[1])
    with pytest.raises(Exception, match=r"params\['beta'\] has a NaN or inf entering the step"):
        err.throw()
    err, _ = checked(case.params, carry, xs[1], targets[1].at[0].set(jnp.nan))
    with pytest.raises(Exception, match=r"the target has a NaN or inf"):
        err.throw()


def test_check_finite_in_run_gives_the_step_index():
    from jax.experimental import checkify
    case, xs, targets = _nan_stream()
    learner = sp.online_grad(case.model, mse, check_finite=True)
    carry = learner.init(case.params, case.state0, xs[0])
    err, _ = jax.jit(checkify.checkify(learner.run))(case.params, carry, xs.at[5, 0].set(jnp.nan), targets)
    with pytest.raises(Exception, match=r"the input x has a NaN or inf entering the step \(step 5 of the run\)"):
        err.throw()


def test_check_finite_catches_a_nan_made_inside_the_step():
    def model(p, s, x):
        v = 0.9 * s + jnp.log(p["w"] @ x)          # log of a negative current: NaN from finite inputs
        return v, v
    params = {"w": jnp.array([[1.0, 0.0], [0.0, -1.0]])}
    learner = sp.online_grad(model, mse, check_finite=True)
    with pytest.raises(Exception, match=r"the loss has a NaN or inf after the step"):
        learner.step(params, learner.init(params, jnp.zeros(2)), jnp.ones(2), jnp.zeros(2))


def test_check_finite_names_a_bad_learning_signal():
    case, xs, _ = _nan_stream()
    learner = sp.online_grad(case.model, None, check_finite=True)
    carry = learner.init(case.params, case.state0, xs[0])
    with pytest.raises(Exception, match=r"the output signal has a NaN or inf"):
        learner.signal_step(case.params, carry, xs[0], lambda y: y * jnp.nan)


def test_a_carry_of_init_in_step_batch_says_use_init_batch():
    case, x, t = _setup()
    learner = sp.online_grad(case.model, mse)
    carry = learner.init(case.params, case.state0, x)
    with pytest.raises(ValueError, match=r"this carry was made by init \(one example\).*init_batch"):
        learner.step_batch(case.params, carry, jnp.ones((3, case.n_in)), jnp.zeros((3, case.n_out)))


def test_sequences_of_different_lengths_name_xs_and_targets():
    case, _, _ = _setup()
    learner = sp.online_grad(case.model, mse)
    xs, targets = jnp.ones((20, case.n_in)), jnp.zeros((20, case.n_out))
    carry = learner.init(case.params, case.state0, xs[0])
    with pytest.raises(ValueError, match=r"xs has T=20 \(shape \[20, 4\]\), targets has T=19 \(shape \[19, 3\]\)"):
        learner.run(case.params, carry, xs, targets[:19])
    batch = learner.init_batch(case.params, case.state0, xs[0], batch_size=2)
    with pytest.raises(ValueError, match=r"batch of B=2 examples.*xs has shape \[20, 4\].*\(B, T, \.\.\.\) with B=2"):
        learner.run_batch(case.params, batch, xs, jnp.zeros((2, 20, case.n_out)))
    with pytest.raises(ValueError, match=r"made by init \(one example\)"):
        learner.run_batch(case.params, carry, jnp.ones((2, 20, case.n_in)), jnp.zeros((2, 20, case.n_out)))
    with pytest.raises(ValueError, match="neither xs nor targets has an array leaf"):
        learner.run(case.params, carry, None, None)


def test_a_target_of_the_wrong_shape_names_both_shapes():
    case, x, _ = _setup()
    learner = sp.online_grad(case.model, mse)
    with pytest.raises(TypeError, match=r"loss_fn failed on the model's output y \(<root>: float64\[3\]\) and "
                                        r"the target \(<root>: float64\[5\]\)"):
        learner.step(case.params, learner.init(case.params, case.state0, x), x, jnp.zeros(5))


def test_init_batch_with_a_batch_size_and_a_batched_x_says_x_is_one_example():
    case, x, _ = _setup()
    learner = sp.online_grad(case.model, mse)
    with pytest.raises(ValueError, match=r"with batch_size, x is ONE example's input.*Pass x\[0\]"):
        learner.init_batch(case.params, case.state0, jnp.ones((3, case.n_in)), batch_size=3)
    carry = learner.init_batch(case.params, case.state0, x, batch_size=3)       # one example's x: fine
    assert carry.state["v"].shape == (3,) + case.state0["v"].shape


def test_bptt_grad_refuses_a_vector_loss_like_online_grad():
    case, x, t = _setup()
    vector = lambda y, t: (y - t) ** 2  # noqa: E731
    with pytest.raises(ValueError, match="loss_fn must return a scalar"):
        sp.bptt_grad(case.model, vector)(case.params, case.state0, x[None], t[None])


def test_an_int_field_of_an_equinox_module_says_mark_it_static():
    import equinox as eqx

    class Params(eqx.Module):
        w: jax.Array
        n_sub: int = 2

    def model(p, s, x):
        for _ in range(p.n_sub):
            s = 0.9 * s + p.w @ x
        return s, s
    params = Params(jnp.ones((3, 2)))
    learner = sp.online_grad(model, mse)
    with pytest.raises(TypeError, match=r"\.n_sub is the Python int 2.*`n_sub: int = eqx\.field\(static=True, "
                                        r"default=2\)`"):
        learner.step(params, learner.init(params, jnp.zeros(3)), jnp.ones(2), jnp.zeros(3))
