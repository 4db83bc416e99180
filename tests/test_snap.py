"""method="snap1" equals RTRL with each trace masked to its one-step pattern (Menick et al. 2020)."""
import jax
import jax.numpy as jnp
import pytest
from jax.flatten_util import ravel_pytree

import sparseprop as sp
from models import alif, diagonal_lru, global_inhibition, inputs, lif_subtract, recurrent_lif, two_layer
from reference import bptt, cosine, max_relative_error, mse


def masked_rtrl(model, loss_fn, params, state0, xs, targets):
    """Dense RTRL with M_t = P ⊙ (J_s M_{t-1} + J_θ), P = where one step's J_θ can be non-zero."""
    flat_p, unravel_p = ravel_pytree(params)
    flat_s, unravel_s = ravel_pytree(state0)

    def f(fp, fs, x):
        new, y = model(unravel_p(fp), unravel_s(fs), x)
        return ravel_pytree(new)[0], y
    # The pattern: entries non-zero for some random state and input. Spikes are 0/1, so a
    # presynaptic spike is 0 half the time; 24 wide random draws find every structural entry.
    keys = jax.random.split(jax.random.PRNGKey(7), 48)
    P = sum(jnp.abs(jax.jacfwd(lambda fp: f(fp, 3 * jax.random.normal(k1, flat_s.shape),
                                             3 * jax.random.normal(k2, xs[0].shape))[0])(flat_p))
            for k1, k2 in zip(keys[:24], keys[24:])) > 0
    M = jnp.zeros((flat_s.size, flat_p.size))
    s, total = flat_s, jnp.zeros_like(flat_p)
    for x, t in zip(xs, targets):
        direct, lam = jax.grad(lambda fp, fs: loss_fn(f(fp, fs, x)[1], t), argnums=(0, 1))(flat_p, s)
        total = total + direct + lam @ M
        J_s = jax.jacfwd(lambda fs: f(flat_p, fs, x)[0])(s)
        J_p = jax.jacfwd(lambda fp: f(fp, s, x)[0])(flat_p)
        M = jnp.where(P, J_s @ M + J_p, 0.0)
        s = f(flat_p, s, x)[0]
    return unravel_p(total)


@pytest.mark.parametrize("build", [recurrent_lif, global_inhibition, two_layer, alif],
                         ids=lambda b: b.__name__)
def test_snap1_equals_masked_rtrl(build):
    case = build()
    xs, targets = inputs(case, T=15)
    learner = sp.online_grad(case.model, mse, method="snap1")
    _, total = learner.run(case.params, learner.init(case.params, case.state0), xs, targets)
    oracle = masked_rtrl(case.model, mse, case.params, case.state0, xs, targets)
    _, full, _ = bptt(case.model, mse, case.params, case.state0, xs, targets)
    assert max_relative_error(total.grads, oracle) <= 1e-9
    # the exactness it reports is the truth: exact iff it equals BPTT
    exact = max_relative_error(total.grads, full) <= 1e-9
    assert learner.is_exact(case.params, case.state0, xs[0]) == exact
    assert exact == (case.name == "two_layer")   # feed-forward coupling is reached in one step
    print(f"{case.name}: snap1 cosine to BPTT {cosine(total.grads, full):.4f}")


@pytest.mark.parametrize("build", [lif_subtract, diagonal_lru], ids=lambda b: b.__name__)
def test_snap1_is_exact_when_one_step_reaches_everything(build):
    case = build()
    xs, targets = inputs(case, T=15)
    learner = sp.online_grad(case.model, mse, method="snap1")
    _, total = learner.run(case.params, learner.init(case.params, case.state0), xs, targets)
    _, grads, _ = bptt(case.model, mse, case.params, case.state0, xs, targets)
    assert learner.is_exact(case.params, case.state0, xs[0])
    assert max_relative_error(total.grads, grads) <= 1e-9
