"""A dense-RTRL oracle (jacfwd of the whole step) at tiny sizes agrees with the sparse program."""
import jax
import jax.numpy as jnp
import pytest
from jax.flatten_util import ravel_pytree

import sparseprop as sp
from models import alif, global_inhibition, inputs, izhikevich, recurrent_lif
from reference import max_relative_error, mse


def dense_rtrl(model, loss_fn, params, state0, xs, targets):
    """Plain RTRL: M_t = J_s M_{t-1} + J_θ with full Jacobians from jacfwd; grads = Σ λ_t M_{t-1} + direct."""
    flat_p, unravel_p = ravel_pytree(params)
    flat_s, unravel_s = ravel_pytree(state0)

    def f(fp, fs, x):
        new, y = model(unravel_p(fp), unravel_s(fs), x)
        return ravel_pytree(new)[0], y

    M = jnp.zeros((flat_s.size, flat_p.size))
    s, total = flat_s, jnp.zeros_like(flat_p)
    for x, t in zip(xs, targets):
        loss = lambda fp, fs: loss_fn(f(fp, fs, x)[1], t)
        direct, lam = jax.grad(loss, argnums=(0, 1))(flat_p, s)
        total = total + direct + lam @ M
        J_s = jax.jacfwd(lambda fs: f(flat_p, fs, x)[0])(s)
        J_p = jax.jacfwd(lambda fp: f(fp, s, x)[0])(flat_p)
        M = J_s @ M + J_p
        s = f(flat_p, s, x)[0]
    return unravel_p(total)


@pytest.mark.parametrize("build", [alif, izhikevich, recurrent_lif, global_inhibition], ids=lambda b: b.__name__)
def test_sparse_program_equals_dense_rtrl(build):
    case = build(n=4, m=3, o=2) if build is not izhikevich else build(n=3, m=2, o=2)
    xs, targets = inputs(case, T=12)
    learner = sp.online_grad(case.model, mse)
    _, total = learner.run(case.params, learner.init(case.params, case.state0), xs, targets)
    oracle = dense_rtrl(case.model, mse, case.params, case.state0, xs, targets)
    assert max_relative_error(total.grads, oracle) <= 1e-9
