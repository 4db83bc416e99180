"""Intra-step chains: a new state leaf that is a per-neuron function of other new state leaves
(z_t = H(v_t − β a_t)) has its trace recomputed from theirs and per-neuron coefficients, not
carried. Every gradient is checked against BPTT (jax.grad of a lax.scan) in float64."""
import jax
import jax.numpy as jnp
import pytest

import sparseprop as sp
from sparseprop.tracer.storage import Derived
from reference import assert_matches_bptt, bptt, max_relative_error, mse

N, M, K, T = 6, 4, 3, 14
sg = jax.lax.stop_gradient


def _params(key=0):
    k = jax.random.split(jax.random.PRNGKey(key), 4)
    return {"w_in": 1.4 * jax.random.normal(k[0], (N, M)), "w_rec": 0.5 * jax.random.normal(k[1], (N, N)),
            "w_out": jax.random.normal(k[2], (K, N)), "alpha": jnp.linspace(0.8, 0.95, N)}


def _data(key=1):
    k = jax.random.split(jax.random.PRNGKey(key), 2)
    return (jax.random.uniform(k[0], (T, M)) < 0.5).astype(jnp.float64) * 1.5, jax.random.normal(k[1], (T, K))


def alif(p, s, x, beta=jnp.linspace(1.0, 2.0, N), detach=True):
    """Recurrent ALIF (per-neuron leak and adaptation strength), leaky readout kept in the state."""
    v, a, z, y = s
    reset = sg(z) if detach else z
    a = 0.9 * a + z
    v = p["alpha"] * v + p["w_in"] @ x + p["w_rec"] @ z - reset
    z = sp.spike(v - 1.0 - beta * a)
    y = 0.8 * y + p["w_out"] @ z
    return (v, a, z, y), y


def alif_twin(p, s, x, cut_readout=False):
    """e-prop's twin: the recurrent input's previous spikes carry no gradient (OSTL's state update
    also cuts the readout, a feed-forward mixing into the state)."""
    v, a, z, y = s
    a = 0.9 * a + z
    v = p["alpha"] * v + p["w_in"] @ x + p["w_rec"] @ sg(z) - sg(z)
    z = sp.spike(v - 1.0 - jnp.linspace(1.0, 2.0, N) * a)
    y = 0.8 * y + p["w_out"] @ (sg(z) if cut_readout else z)
    return (v, a, z, y), y


def ostl_twin(p, s, x):
    """OSTL's definition: BPTT of the cut state update with the true output."""
    return alif_twin(p, s, x, cut_readout=True)[0], alif(p, s, x)[1]


def _state0():
    return (jnp.zeros(N), jnp.zeros(N), jnp.zeros(N), jnp.zeros(K))


def _spikes(ys, states):
    return jnp.sum(states[2])


def _derived(learner, params, x):
    plan = learner.plan(params, _state0(), x)
    return plan, [b for b in plan.blocks if isinstance(b, Derived)]


@pytest.mark.parametrize("method, twin", [("exact", None), ("eprop", alif_twin), ("ostl", ostl_twin)])
def test_spike_of_this_steps_potential_is_recomputed_and_equals_bptt(method, twin):
    params = _params()
    xs, targets = _data()
    learner, *_ = assert_matches_bptt(alif, mse, params, _state0(), xs, targets, spikes=_spikes,
                                      method=method, twin=twin)
    plan, derived = _derived(learner, params, xs[0])
    assert {(plan.state_names[b.state], plan.param_names[b.param]) for b in derived} >= {
        ("state[2]", "params['w_in']")}
    for b in derived:
        assert b.sources == (0, 1) and b.shape == (2, N)       # D[z←v], D[z←a]: two (n,) arrays


def test_a_source_read_by_another_source_is_held_fixed_in_the_coefficients():
    """v's reset reads this step's threshold (from the new a): the coefficient D[z←a] is the
    partial ∂z/∂a_t with v_t held fixed, not the total derivative through v_t."""
    def model(p, s, x):
        v, a, z = s
        a = 0.95 * a + z
        thr = 0.6 + 1.8 * a
        v = p["alpha"] * v + p["w_in"] @ x - sg(z) * thr
        z = sp.spike((v - thr) / thr)
        return (v, a, z), p["w_out"] @ z
    params = _params(13)
    xs, targets = _data(14)
    s0 = (jnp.zeros(N),) * 3
    learner, *_ = assert_matches_bptt(model, mse, params, s0, xs, targets,
                                      spikes=lambda ys, states: jnp.sum(states[2]))
    assert [b for b in learner.plan(params, s0, xs[0]).blocks if b.derived]


def test_a_differentiated_reset_keeps_the_chain_and_equals_bptt():
    params = _params(3)
    xs, targets = _data(4)
    model = lambda p, s, x: alif(p, s, x, detach=False)  # noqa: E731
    learner, *_ = assert_matches_bptt(model, mse, params, _state0(), xs, targets, spikes=_spikes)
    assert _derived(learner, params, xs[0])[1]


@pytest.mark.slow
def test_batched_run_and_jit_equal_bptt():
    params = _params(5)
    xs, targets = _data(6)
    xb = jnp.stack([xs, xs[::-1], 0.5 * xs])
    tb = jnp.stack([targets, -targets, targets[::-1]])
    learner = sp.online_grad(alif, mse, method="exact")
    s0 = jax.tree_util.tree_map(lambda a: jnp.stack([a] * 3), _state0())
    carry = learner.init_batch(params, s0, xb[:, 0])
    _, total = jax.jit(learner.run_batch)(params, carry, xb, tb)
    grads = [bptt(alif, mse, params, _state0(), xb[i], tb[i])[1] for i in range(3)]
    summed = jax.tree_util.tree_map(lambda *g: sum(g), *grads)
    assert max_relative_error(total.grads, summed) <= 1e-9


@pytest.mark.slow
@pytest.mark.parametrize("batch", [5, 65])
def test_batch_sums_on_both_sides_of_the_slice_limit_equal_bptt(batch):
    """The gradient's batch sum is a sum of per-example slices up to 64 examples and one
    contraction above (storage.PerEntry); both equal the summed per-example BPTT gradients."""
    from sparseprop.tracer.storage import _SLICED_BATCH_MAX
    assert 5 <= _SLICED_BATCH_MAX < 65
    params = _params(9)
    xs, targets = _data(10)
    scale = jnp.linspace(0.5, 1.5, batch)[:, None, None]
    xb, tb = scale * xs, scale[::-1] * targets
    learner = sp.online_grad(alif, mse, method="exact")
    s0 = jax.tree_util.tree_map(lambda a: jnp.stack([a] * batch), _state0())
    _, total = learner.run_batch(params, learner.init_batch(params, s0, xb[:, 0]), xb, tb)
    grads = jax.vmap(lambda x, t: bptt(alif, mse, params, _state0(), x, t)[1])(xb, tb)
    assert max_relative_error(total.grads, jax.tree_util.tree_map(lambda g: jnp.sum(g, 0), grads)) <= 1e-9


def test_a_leaf_mixing_its_sources_is_not_a_chain():
    """softmax couples the neurons of v: z's trace is carried as it is, still exact."""
    def model(p, s, x):
        v, z = s
        v = p["alpha"] * v + p["w_in"] @ x - sg(z)
        z = jax.nn.softmax(v)
        return (v, z), p["w_out"] @ z
    params = _params(7)
    xs, targets = _data(8)
    learner, *_ = assert_matches_bptt(model, mse, params, (jnp.zeros(N), jnp.zeros(N)), xs, targets, spikes=None)
    assert not [b for b in learner.plan(params, (jnp.zeros(N), jnp.zeros(N)), xs[0]).blocks if b.derived]


def test_a_leaf_with_a_term_of_its_own_is_not_a_chain():
    """z = H(v) + W_z x reads a synapse besides v: not a function of the new states alone."""
    def model(p, s, x):
        v, z = s
        v = p["alpha"] * v + p["w_in"] @ x - sg(z)
        z = sp.spike(v - 1.0) + 0.1 * jnp.tanh(p["w_in"] @ x)
        return (v, z), p["w_out"] @ z
    params = _params(9)
    xs, targets = _data(10)
    s0 = (jnp.zeros(N), jnp.zeros(N))
    learner, *_ = assert_matches_bptt(model, mse, params, s0, xs, targets,
                                      spikes=lambda ys, st: jnp.sum(st[1] > 0.5))
    assert not [b for b in learner.plan(params, s0, xs[0]).blocks if b.derived]


@pytest.mark.slow
def test_restart_across_a_derived_block():
    """Restarting a synapse's traces also restarts the recomputed block (it holds no entry)."""
    params = _params(11)
    xs, targets = _data(12)
    learner = sp.online_grad(alif, mse, method="exact")
    carry = learner.init(params, _state0(), xs[0])
    carry, _ = learner.run(params, carry, xs[:7], targets[:7])
    restart = jax.tree_util.tree_map(lambda p: jnp.ones(p.shape, bool), params)
    carry = learner.reset_traces(params, carry, restart)
    _, total = learner.run(params, carry, xs[7:], targets[7:])
    # BPTT of the second stretch alone, from the state reached after the first
    state = _state0()
    for x in xs[:7]:
        state = alif(params, state, x)[0]
    _, grads, _ = bptt(alif, mse, params, state, xs[7:], targets[7:])
    assert max_relative_error(total.grads, grads) <= 1e-9


def test_explain_names_the_recomputed_block_and_its_coefficients():
    params = _params()
    xs, _ = _data()
    report = sp.online_grad(alif, mse, method="eprop").explain(params, _state0(), xs[0], print_report=False)
    block = next(b for b in report.blocks if b.state == "state[2]" and b.param == "params['w_rec']")
    assert block.kind.startswith("recomputed") and block.nbytes == 2 * N * 8
    assert "D[state[2]←state[0]] ⊙ e[state[0],params['w_rec']]" in block.rule


def test_eligibility_gives_a_recomputed_block_its_value():
    params = _params(15)
    xs, targets = _data(16)
    learner = sp.online_grad(alif, mse, method="eprop")
    carry, _ = learner.run(params, learner.init(params, _state0(), xs[0]), xs[:5], targets[:5])
    elig = learner.eligibility(params, carry)
    kind, e_z = elig[("state[2]", "params['w_in']")]
    assert kind.startswith("recomputed") and e_z.shape == (N, M)
    # e_z = D[z←v] ⊙ e_v + D[z←a] ⊙ e_a with the coefficients the carry holds
    plan = learner.plan(params, _state0(), xs[0])
    coeff = carry.traces[plan.block_index[(2, plan.param_names.index("params['w_in']"))]]
    e_v, e_a = elig[("state[0]", "params['w_in']")][1], elig[("state[1]", "params['w_in']")][1]
    assert jnp.allclose(e_z, coeff[0][:, None] * e_v + coeff[1][:, None] * e_a, rtol=1e-12, atol=0)
    assert float(jnp.max(jnp.abs(e_z))) > 0
