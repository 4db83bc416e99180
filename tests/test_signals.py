"""Three-factor learning: external learning signals meet the eligibility traces."""
import jax
import jax.numpy as jnp
import pytest

import sparseprop as sp
from models import alif, inputs, recurrent_lif
from reference import bptt, max_relative_error, mse


@pytest.mark.slow
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


@pytest.mark.slow
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


def _catalogue_alif():
    from sparseprop import neurons
    net = neurons.ALIF()
    k1, k2 = jax.random.split(jax.random.PRNGKey(7))
    params = net.init_params(k1, 4, 6)
    xs = jax.random.bernoulli(k2, 0.5, (10, 4)).astype(float) * 2.0
    return net, params, net.init_state(6), xs


@pytest.mark.slow
def test_apply_signal_must_match_the_state_structure():
    """On an ALIF state {a, v}, {"v": sig, "z": 0} used to be applied to `a` (only leaf counts were compared)."""
    net, params, state0, xs = _catalogue_alif()
    learner = sp.online_grad(net, None)
    carry = learner.init(params, state0, xs[0])
    for x in xs:
        carry, _ = learner.signal_step(params, carry, x, jnp.ones(6))
    sig = jnp.linspace(-1.0, 1.0, 6)
    with pytest.raises(ValueError, match=r"it has \['z'\], which the state has not; it lacks \['a'\]"):
        learner.apply_signal(params, carry, {"v": sig, "z": 0.0})
    with pytest.raises(ValueError, match=r"it lacks \['a'\]"):
        learner.apply_signal(params, carry, {"v": sig})
    with pytest.raises(ValueError, match=r"state_signal\['v'\] has shape \[5\]"):
        learner.apply_signal(params, carry, {"v": jnp.ones(5), "a": None})
    # None means no signal on that leaf: the same as a zero signal
    only_v = learner.apply_signal(params, carry, {"v": sig, "a": None})
    zero_a = learner.apply_signal(params, carry, {"v": sig, "a": jnp.zeros(6)})
    assert max_relative_error(only_v, zero_a) == 0.0
    e = learner.eligibility(params, carry)[("state['v']", "params['w_in']")][1]
    assert max_relative_error(only_v["w_in"], jnp.einsum("i,il->il", sig, e)) <= 1e-12
    assert float(jnp.max(jnp.abs(only_v["w_in"]))) > 0


@pytest.mark.slow
def test_apply_signal_takes_none_for_a_whole_layer():
    from sparseprop import neurons
    net = neurons.Sequential((neurons.LIF(), neurons.LeakyIntegrator()))
    params = net.init_params(jax.random.PRNGKey(3), (4, 6, 2))
    state0 = net.init_state((4, 6, 2))
    learner = sp.online_grad(net, None)
    carry = learner.init(params, state0, jnp.ones(4))
    carry, _ = learner.signal_step(params, carry, jnp.ones(4) * 2.0, jnp.ones(2))
    grads = learner.apply_signal(params, carry, (None, {"v": jnp.ones(2)}))
    full = learner.apply_signal(params, carry, ({"v": jnp.zeros(6)}, {"v": jnp.ones(2)}))
    assert max_relative_error(grads, full) == 0.0


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_signal_fn_of_this_steps_output_runs_the_step_once(jit):
    """signal_fn(y): the learning signal computed from this step's own output equals the loss gradient."""
    case = alif()
    xs, targets = inputs(case, T=10)
    with_loss = sp.online_grad(case.model, mse)
    without = sp.online_grad(case.model, None)
    c1 = with_loss.init(case.params, case.state0, xs[0])
    c2 = without.init(case.params, case.state0, xs[0])
    calls = []

    def step(params, carry, x, t):
        def signal_fn(y):
            calls.append(1)
            return jax.grad(mse)(y, t)
        return without.signal_step(params, carry, x, signal_fn)
    step = jax.jit(step) if jit else step
    for x, t in zip(xs, targets):
        c1, out = with_loss.step(case.params, c1, x, t)
        c2, out2 = step(case.params, c2, x, t)
        assert max_relative_error(out2.grads, out.grads) <= 1e-12
    assert len(calls) == (1 if jit else len(xs))      # one trace of the signal per step, not two


def test_apply_signal_on_a_batch_is_vmapped():
    net, params, state0, xs = _catalogue_alif()
    learner = sp.online_grad(net, None)
    carry = learner.init_batch(params, state0, xs[0], batch_size=3)
    step = jax.vmap(learner.signal_step, in_axes=(None, 0, 0, None))
    carry, _ = step(params, carry, jnp.stack([xs[0], xs[1], xs[2]]), jnp.ones(6))
    signal = {"v": jnp.ones((3, 6)), "a": None}
    with pytest.raises(ValueError, match=r"vmap it"):
        learner.apply_signal(params, carry, signal)
    per_example = jax.vmap(learner.apply_signal, in_axes=(None, 0, 0))(params, carry, signal)
    assert per_example["w_in"].shape == (3,) + params["w_in"].shape
