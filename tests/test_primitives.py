"""Activation functions from jax.nn and jax.scipy (many are custom_jvp or jitted helpers)
stay per-neuron and exact inside a recurrent step."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparseprop as sp
from reference import bptt, max_relative_error, mse

ACTIVATIONS = {
    "relu": jax.nn.relu, "softplus": jax.nn.softplus, "gelu": jax.nn.gelu, "silu": jax.nn.silu,
    "elu": jax.nn.elu, "leaky_relu": jax.nn.leaky_relu, "log_sigmoid": jax.nn.log_sigmoid,
    "hard_tanh": jax.nn.hard_tanh, "relu6": jax.nn.relu6, "celu": jax.nn.celu, "selu": jax.nn.selu,
    "logaddexp": lambda a: jnp.logaddexp(a, 0.3), "erf": jax.scipy.special.erf,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_is_per_neuron_and_exact(name):
    f = ACTIVATIONS[name]

    def model(p, h, x):
        h = p["a"] * h + f(p["w"] @ x + h)
        return h, p["o"] @ h
    k = jax.random.split(jax.random.PRNGKey(len(name)), 3)
    params = {"a": jnp.linspace(0.3, 0.6, 5), "w": jax.random.normal(k[0], (5, 3)),
              "o": jax.random.normal(k[1], (2, 5))}
    xs = jax.random.normal(k[2], (15, 3))
    targets = jnp.zeros((15, 2))
    learner = sp.online_grad(model, mse)
    _, total = learner.run(params, learner.init(params, jnp.zeros(5)), xs, targets)
    _, grads, _ = bptt(model, mse, params, jnp.zeros(5), xs, targets)
    assert max_relative_error(total.grads, grads) <= 1e-9
    report = learner.explain(params, jnp.zeros(5), xs[0], print_report=False)
    assert not report.notes and all(b.kind != "dense" for b in report.blocks)


@pytest.mark.slow
@pytest.mark.parametrize("monoid,init", [(jax.lax.add, 0.0), (jax.lax.max, -jnp.inf)], ids=["sum", "max"])
def test_reduce_window_with_an_array_init_value_equals_bptt(monoid, init):
    """`lax.reduce_window` with a jnp init value stays the generic primitive in a traced jaxpr,
    which reverse mode cannot transpose (jax.grad of a scan of this model fails); the tracer
    applies it as the monoid it is. The reference is the same model with a numpy init value."""
    from reference import assert_matches_bptt

    def step(p, s, x, init_value):
        v = p["alpha"] * s["v"] + p["w"] * x - jax.lax.stop_gradient(s["z"])
        z = sp.spike(v - 1.0)
        pooled = jax.lax.reduce_window(z * v, init_value, monoid, (1, 2, 2), (1, 2, 2), "VALID")
        return {"v": v, "z": z}, jnp.sum(pooled, axis=(1, 2))

    def model(p, s, x):
        return step(p, s, x, jnp.asarray(init, x.dtype))

    def twin(p, s, x):
        return step(p, s, x, np.asarray(init, x.dtype))
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    params = {"alpha": jnp.linspace(0.8, 0.9, 2).reshape(2, 1, 1), "w": 1.5 + jax.random.normal(k[0], (2, 4, 4))}
    state = {"v": jnp.zeros((2, 4, 4)), "z": jnp.zeros((2, 4, 4))}
    xs = jax.random.uniform(k[1], (12, 2, 4, 4))
    ts = jax.random.normal(k[2], (12, 2))
    assert_matches_bptt(model, lambda y, t: jnp.sum((y - t) ** 2), params, state, xs, ts, twin=twin,
                        spikes=lambda ys, states: jnp.sum(twin_states(twin, params, state, xs)["z"]))


def twin_states(model, params, state, xs):
    return jax.lax.scan(lambda s, x: (model(params, s, x)[0],) * 2, state, xs)[1]
