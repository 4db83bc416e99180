"""Activation functions from jax.nn and jax.scipy (many are custom_jvp or jitted helpers)
stay per-neuron and exact inside a recurrent step."""
import jax
import jax.numpy as jnp
import pytest

import sparseprop as sp
from reference import bptt, max_relative_error, mse

ACTIVATIONS = {
    "relu": jax.nn.relu, "softplus": jax.nn.softplus, "gelu": jax.nn.gelu, "silu": jax.nn.silu,
    "elu": jax.nn.elu, "leaky_relu": jax.nn.leaky_relu, "log_sigmoid": jax.nn.log_sigmoid,
    "hard_tanh": jax.nn.hard_tanh, "relu6": jax.nn.relu6, "celu": jax.nn.celu, "selu": jax.nn.selu,
    "logaddexp": lambda a: jnp.logaddexp(a, 0.3), "erf": jax.scipy.special.erf,
}


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
