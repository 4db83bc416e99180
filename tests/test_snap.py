"""method="snap1" equals RTRL with each trace masked to its one-step pattern (Menick et al. 2020)."""
import jax
import jax.numpy as jnp
import pytest

import sparseprop as sp
from models import alif, diagonal_lru, global_inhibition, inputs, lif_subtract, recurrent_lif, two_layer
from reference import bptt, cosine, dense_rtrl, max_relative_error, mse


def one_step_pattern(f, flat_p, flat_s, xs):
    """Entries of d s_t / d θ non-zero for some random state and input within one step.

    Spikes are 0/1, so a presynaptic spike is 0 half the time: 24 wide random draws find
    every structural entry.
    """
    keys = jax.random.split(jax.random.PRNGKey(7), 48)
    return sum(jnp.abs(jax.jacfwd(lambda fp: f(fp, 3 * jax.random.normal(k1, flat_s.shape),
                                                3 * jax.random.normal(k2, xs[0].shape))[0])(flat_p))
               for k1, k2 in zip(keys[:24], keys[24:])) > 0


@pytest.mark.slow
@pytest.mark.parametrize("build", [recurrent_lif, global_inhibition, two_layer, alif],
                         ids=lambda b: b.__name__)
def test_snap1_equals_masked_rtrl(build):
    case = build()
    xs, targets = inputs(case, T=15)
    learner = sp.online_grad(case.model, mse, method="snap1")
    _, total = learner.run(case.params, learner.init(case.params, case.state0), xs, targets)
    oracle = dense_rtrl(case.model, mse, case.params, case.state0, xs, targets, one_step_pattern)
    _, full, _ = bptt(case.model, mse, case.params, case.state0, xs, targets)
    assert max_relative_error(total.grads, oracle) <= 1e-9
    # the exactness it reports is the truth: exact iff it equals BPTT
    exact = max_relative_error(total.grads, full) <= 1e-9
    assert learner.is_exact(case.params, case.state0, xs[0]) == exact
    assert exact == (case.name == "two_layer")   # feed-forward coupling is reached in one step
    print(f"{case.name}: snap1 cosine to BPTT {cosine(total.grads, full):.4f}")


@pytest.mark.slow
@pytest.mark.parametrize("build", [lif_subtract, diagonal_lru], ids=lambda b: b.__name__)
def test_snap1_is_exact_when_one_step_reaches_everything(build):
    case = build()
    xs, targets = inputs(case, T=15)
    learner = sp.online_grad(case.model, mse, method="snap1")
    _, total = learner.run(case.params, learner.init(case.params, case.state0), xs, targets)
    _, grads, _ = bptt(case.model, mse, case.params, case.state0, xs, targets)
    assert learner.is_exact(case.params, case.state0, xs[0])
    assert max_relative_error(total.grads, grads) <= 1e-9
