"""Three-factor learning: external learning signals meet the eligibility traces."""
import jax
import jax.numpy as jnp
import pytest

import sparseprop as sp
from models import alif, inputs, recurrent_lif
from reference import bptt, max_relative_error, mse


@pytest.mark.parametrize("build", [alif, recurrent_lif], ids=lambda b: b.__name__)
def test_true_loss_cotangent_as_signal_reproduces_loss_gradients(build):
    case = build()
    xs, targets = inputs(case, T=15)
    with_loss = sp.online_grad(case.model, mse)
    without = sp.online_grad(case.model, None)
    c1 = with_loss.init(case.params, case.state0, xs[0])
    c2 = without.init(case.params, case.state0, xs[0])
    total = jax.tree_util.tree_map(jnp.zeros_like, case.params)
    for x, t in zip(xs, targets):
        c1, out = with_loss.step(case.params, c1, x, t)
        signal = jax.grad(mse)(out.output, t)            # dl/dy, the true learning signal
        c2, out2 = without.signal_step(case.params, c2, x, signal)
        assert max_relative_error(out2.grads, out.grads) <= 1e-12
        total = jax.tree_util.tree_map(jnp.add, total, out2.grads)
    _, grads, _ = bptt(case.model, mse, case.params, case.state0, xs, targets)
    assert max_relative_error(total, grads) <= 1e-9


def test_per_neuron_signal_on_the_traces_is_the_gradient_through_the_new_state():
    """apply_signal(L) = L · d state_t / d params: with L = dl/dv_t it is the loss gradient."""
    case = alif()
    xs, targets = inputs(case, T=12)
    n = case.state0[0].shape[0]
    target_v = jnp.linspace(-0.5, 0.5, n)

    def model(p, s, x):               # output the new membrane potential itself
        new, _ = case.model(p, s, x)
        return new, new[0]
    learner = sp.online_grad(model, mse)
    carry = learner.init(case.params, case.state0, xs[0])
    for x in xs:
        carry, out = learner.step(case.params, carry, x, target_v)
        signal = (2 * (carry.state[0] - target_v), None, None)
        from_signal = learner.apply_signal(case.params, carry, signal)
        assert max_relative_error(from_signal, out.grads) <= 1e-12


def test_eligibility_is_named_and_shaped():
    case = alif()
    xs, targets = inputs(case, T=3)
    learner = sp.online_grad(case.model, None)
    carry = learner.init(case.params, case.state0, xs[0])
    carry, _ = learner.signal_step(case.params, carry, xs[0], jnp.ones(case.n_out))
    elig = learner.eligibility(case.params, carry)
    kind, e = elig[("state[0]", "params['w']")]
    assert kind == "synaptic eligibility" and e.shape == case.params["w"].shape
    assert elig[("state[0]", "params['tau_m']")][0] == "diagonal"


def test_step_without_loss_says_what_to_use():
    case = alif()
    learner = sp.online_grad(case.model, None)
    xs, targets = inputs(case, T=2)
    with pytest.raises(ValueError, match="signal_step"):
        learner.step(case.params, learner.init(case.params, case.state0), xs[0], targets[0])
