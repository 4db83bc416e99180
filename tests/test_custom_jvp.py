"""custom_jvp rules must be linear in the tangent: forward mode pushes every tangent (each
probe column) through the user's rule, so a term without the tangent would be added to every
column, while reverse mode (BPTT) drops it. Such rules raise a TracerError naming the function
and its line; linear rules stay exact (compared with jax.grad of a lax.scan unroll)."""
import jax
import jax.numpy as jnp
import pytest

import sparseprop as sp
from reference import assert_matches_bptt, bptt, max_relative_error, mse

sg = jax.lax.stop_gradient


def _lif(jvp_rule):
    """A recurrent LIF layer whose spike is a custom_jvp with the JVP `jvp_rule(u, du)`."""
    @jax.custom_jvp
    def spike(u):
        return (u > 0).astype(u.dtype)

    @spike.defjvp
    def spike_jvp(primals, tangents):
        (u,), (du,) = primals, tangents
        return spike(u), jvp_rule(u, du)

    def model(p, s, x):
        v, z = s
        v = p["alpha"] * v + p["w"] @ x + p["r"] @ z - sg(z)
        z = spike(v - 1.0)
        return (v, z), p["w_out"] @ z
    return model


def _case(n=5, m=3, T=20):
    k = jax.random.split(jax.random.PRNGKey(7), 4)
    params = {"w": jax.random.normal(k[0], (n, m)) * 2.0, "alpha": jnp.linspace(0.8, 0.95, n),
              "r": jax.random.normal(k[1], (n, n)) * 0.3, "w_out": jax.random.normal(k[2], (2, n))}
    xs = jax.random.uniform(k[3], (T, m), maxval=1.5)
    return params, (jnp.zeros(n), jnp.zeros(n)), xs, jnp.zeros((T, 2))


def _spikes(model, params, state0, xs) -> int:
    zs = jax.lax.scan(lambda s, x: (model(params, s, x)[0],) * 2, state0, xs)[1][1]
    return int(jnp.sum(zs))


NOT_LINEAR = {
    "affine": lambda u, du: du * jnp.exp(-u * u) + 0.05 * jnp.tanh(u),
    "constant": lambda u, du: jnp.ones_like(u),
    "quadratic": lambda u, du: du * du * jnp.exp(-u * u),
    "clipped": lambda u, du: jnp.clip(du, -1.0, 1.0) * jnp.exp(-u * u),
}
MESSAGE = (r"custom_jvp function 'spike' \(defined at .*test_custom_jvp.py:\d+\), called at "
           r".*test_custom_jvp.py:\d+ \(_lif.<locals>.model\), has a JVP rule 'spike_jvp' \(defined at "
           r".*test_custom_jvp.py:\d+\) that is not linear in the tangent.*s\(u\) \* du")


@pytest.mark.parametrize("name", sorted(NOT_LINEAR))
def test_rule_not_linear_in_the_tangent_raises_on_step_run_and_explain(name):
    params, state0, xs, targets = _case()
    model = _lif(NOT_LINEAR[name])
    assert _spikes(model, params, state0, xs) > 0
    for call in ("step", "run", "explain", "is_exact"):
        learner = sp.online_grad(model, mse)    # a fresh learner: nothing traced yet
        with pytest.raises(sp.TracerError, match=MESSAGE):
            if call == "step":
                learner.step(params, learner.init(params, state0), xs[0], targets[0])
            elif call == "run":
                learner.run(params, learner.init(params, state0), xs, targets)
            elif call == "explain":
                learner.explain(params, state0, xs[0], print_report=False)
            else:
                learner.is_exact(params, state0, xs[0])


def test_bptt_grad_ignores_the_forward_check():
    """sparseprop.bptt_grad is reverse mode only: it still runs on such a rule (as jax.grad does)."""
    params, state0, xs, targets = _case()
    model = _lif(NOT_LINEAR["affine"])
    loss, grads = sp.bptt_grad(model, mse)(params, state0, xs, targets)
    ref_loss, ref_grads, _ = bptt(model, mse, params, state0, xs, targets)
    assert abs(float(loss - ref_loss)) <= 1e-12 * max(1.0, abs(float(ref_loss)))
    assert max_relative_error(grads, ref_grads) <= 1e-12
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(grads)) > 0


LINEAR = {
    "fast_sigmoid": lambda u, du: du * 1.0 / (1.0 + jnp.abs(u)) ** 2,
    "primal_window": lambda u, du: du * jnp.where(jnp.abs(u) < 0.5, 1.0, 0.0),
    "primal_scale": lambda u, du: jax.nn.sigmoid(4.0 * u) * (1.0 - jax.nn.sigmoid(4.0 * u)) * du,
    "masked_tangent": lambda u, du: jnp.where(u > -0.5, du, 0.0) / (1.0 + u * u),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LINEAR))
def test_rules_linear_in_the_tangent_are_exact(name):
    params, state0, xs, targets = _case()
    model = _lif(LINEAR[name])
    learner, _, _, _ = assert_matches_bptt(model, mse, params, state0, xs, targets, init_x=False,
                                           spikes=lambda ys, states: _spikes(model, params, state0, xs))
    assert learner.is_exact(params, state0, xs[0])


@pytest.mark.slow
@pytest.mark.parametrize("surrogate", [None, sp.surrogates.FastSigmoid(), sp.surrogates.Triangle(),
                                       sp.surrogates.Rectangular()], ids=lambda s: type(s).__name__)
def test_library_surrogates_are_exact(surrogate):
    params, state0, xs, targets = _case()

    def model(p, s, x):
        v, z = s
        v = p["alpha"] * v + p["w"] @ x + p["r"] @ z - sg(z)
        z = sp.spike(v - 1.0, surrogate)
        return (v, z), p["w_out"] @ z
    assert_matches_bptt(model, mse, params, state0, xs, targets, init_x=False,
                        spikes=lambda ys, states: _spikes(model, params, state0, xs))


def test_the_affine_rule_really_disagrees_with_bptt():
    """Why the check exists: forward mode adds the tangent-free term to every tangent, reverse
    mode drops it, so the two derivatives of the same loss disagree."""
    params, state0, xs, targets = _case()
    model = _lif(NOT_LINEAR["affine"])

    def loss(w):
        def body(s, inp):
            s, y = model({**params, "w": w}, s, inp[0])
            return s, mse(y, inp[1])
        return jnp.sum(jax.lax.scan(body, state0, (xs, targets))[1])
    direction = jnp.ones_like(params["w"])
    forward = float(jax.jvp(loss, (params["w"],), (direction,))[1])
    reverse = float(jnp.sum(jax.grad(loss)(params["w"]) * direction))
    assert abs(forward - reverse) > 1e-3 * abs(reverse)
