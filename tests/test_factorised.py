"""Factorised traces (e[i, l] = ū[l], O(m)) are used exactly when provable, and stay exact."""
import jax
import jax.numpy as jnp
import pytest

import sparseprop as sp
from reference import bptt, max_relative_error, mse

sg = jax.lax.stop_gradient


def shared_leak_lif(p, v, x):
    """The model of benchmarks/hand_written.py: shared leak, detached reset by subtraction."""
    z_prev = sg(sp.spike(v - 1.0))
    v = p["alpha"] * v + p["w"] @ x - z_prev
    return v, sp.spike(v - 1.0)


def per_neuron_leak_lif(p, v, x):
    z_prev = sg(sp.spike(v - 1.0))
    v = p["alpha_vec"] * v + p["w"] @ x - z_prev
    return v, sp.spike(v - 1.0)


def differentiated_reset_lif(p, v, x):
    z_prev = sp.spike(v - 1.0)          # the reset's derivative depends on each neuron's v
    v = p["alpha"] * v + p["w"] @ x - z_prev
    return v, sp.spike(v - 1.0)


def _case(n=6, m=4):
    k = jax.random.split(jax.random.PRNGKey(3), 3)
    params = {"w": jax.random.normal(k[0], (n, m)) * 1.5, "alpha": jnp.array(0.9),
              "alpha_vec": jnp.linspace(0.8, 0.95, n)}
    xs = jax.random.uniform(k[1], (25, m), maxval=1.5)
    targets = (jax.random.uniform(k[2], (25, n)) < 0.3).astype(xs.dtype)
    return params, jnp.zeros(n), xs, targets


@pytest.mark.slow
@pytest.mark.parametrize("model,factorised", [(shared_leak_lif, True), (per_neuron_leak_lif, False),
                                              (differentiated_reset_lif, False)],
                         ids=["shared_leak", "per_neuron_leak", "differentiated_reset"])
def test_factorised_only_when_provable_and_always_exact(model, factorised):
    params, v0, xs, targets = _case()
    learner = sp.online_grad(model, mse)
    prog = learner.plan(params, v0, xs[0])
    w_block = next(b for b in prog.blocks if prog.param_names[b.param] == "params['w']")
    assert w_block.factorised is factorised
    assert w_block.shape == ((4,) if factorised else (6, 4))
    _, total = learner.run(params, learner.init(params, v0), xs, targets)
    _, grads, ys = bptt(model, mse, params, v0, xs, targets)
    assert float(jnp.sum(ys)) > 0, "no spikes"
    assert max_relative_error(total.grads, grads) <= 1e-9


@pytest.mark.slow
@pytest.mark.parametrize("model", [shared_leak_lif, per_neuron_leak_lif])
def test_batched_run_equals_sum_of_per_example_bptt(model):
    params, v0, xs, targets = _case()
    B = 3
    xs_b = jnp.stack([xs * (1 + 0.2 * b) for b in range(B)])
    t_b = jnp.stack([jnp.roll(targets, b, axis=0) for b in range(B)])
    v0_b = jnp.zeros((B,) + v0.shape)
    learner = sp.online_grad(model, mse)
    carry = learner.init_batch(params, v0_b, xs_b[:, 0])
    _, total = jax.jit(learner.run_batch)(params, carry, xs_b, t_b)
    ref = [bptt(model, mse, params, v0, xs_b[b], t_b[b]) for b in range(B)]
    ref_grads = jax.tree_util.tree_map(lambda *g: sum(g), *[r[1] for r in ref])
    assert max_relative_error(total.grads, ref_grads) <= 1e-9
    assert abs(float(total.loss) - sum(float(r[0]) for r in ref)) <= 1e-9 * abs(float(total.loss))
    assert total.outputs.shape == (B,) + ref[0][2].shape
