"""The learner's contract: step/run agree, chunks chain, jit/vmap/scan work, pytrees of all kinds."""
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import sparseprop as sp
from models import alif, inputs, lif_subtract, recurrent_lif
from reference import bptt, max_relative_error, mse


def test_sum_of_step_grads_equals_run_grads():
    case = alif()
    xs, targets = inputs(case, T=20)
    learner = sp.online_grad(case.model, mse)
    carry = learner.init(case.params, case.state0)
    step = jax.jit(learner.step)
    acc = jax.tree_util.tree_map(jnp.zeros_like, case.params)
    losses = []
    for x, t in zip(xs, targets):
        carry, out = step(case.params, carry, x, t)
        acc = jax.tree_util.tree_map(jnp.add, acc, out.grads)
        losses.append(out.loss)
    _, total = learner.run(case.params, learner.init(case.params, case.state0), xs, targets)
    assert max_relative_error(acc, total.grads) <= 1e-12
    np.testing.assert_allclose(sum(losses), total.loss, rtol=1e-12)


def test_two_chunked_runs_equal_one_run():
    case = recurrent_lif()
    xs, targets = inputs(case, T=24)
    learner = sp.online_grad(case.model, mse)
    c0 = learner.init(case.params, case.state0, xs[0])
    _, whole = learner.run(case.params, c0, xs, targets)
    c1, first = learner.run(case.params, c0, xs[:10], targets[:10])
    _, second = learner.run(case.params, c1, xs[10:], targets[10:])
    chunked = jax.tree_util.tree_map(jnp.add, first.grads, second.grads)
    assert max_relative_error(chunked, whole.grads) <= 1e-12


def test_vmapped_step_equals_batched_bptt():
    case = lif_subtract()
    B, T = 3, 15
    xs, targets = inputs(case, T=T, batch=B)
    learner = sp.online_grad(case.model, mse)
    states = jax.tree_util.tree_map(lambda s: jnp.broadcast_to(s, (B,) + s.shape), case.state0)
    carry = jax.vmap(lambda s, x: learner.init(case.params, s, x))(states, xs[:, 0])
    vstep = jax.jit(jax.vmap(learner.step, in_axes=(None, 0, 0, 0)))

    def scan_body(carry, inp):
        carry, out = vstep(case.params, carry, *inp)
        return carry, out.grads
    _, grads = jax.lax.scan(scan_body, carry, (jnp.swapaxes(xs, 0, 1), jnp.swapaxes(targets, 0, 1)))
    online = jax.tree_util.tree_map(lambda g: g.sum(axis=(0, 1)), grads)
    ref = jax.tree_util.tree_map(lambda *g: sum(g), *[
        bptt(case.model, mse, case.params, case.state0, xs[b], targets[b])[1] for b in range(B)])
    assert max_relative_error(online, ref) <= 1e-9


class LIFParams(NamedTuple):
    w: jax.Array
    tau: jax.Array


class Readout(eqx.Module):
    w_out: jax.Array


class Net(eqx.Module):
    lif: LIFParams
    readout: Readout
    name: str = eqx.field(static=True, default="net")


def test_namedtuple_and_equinox_params():
    k = jax.random.split(jax.random.PRNGKey(5), 3)
    params = Net(LIFParams(jax.random.normal(k[0], (5, 3)) * 2, jnp.linspace(5.0, 15.0, 5)),
                 Readout(jax.random.normal(k[1], (2, 5))))

    def model(p, s, x):
        v = jnp.exp(-1 / p.lif.tau) * s[0] + p.lif.w @ x - s[1]
        z = sp.spike(v - 1.0)
        return (v, z), p.readout.w_out @ z
    state0 = (jnp.zeros(5), jnp.zeros(5))
    xs = jax.random.uniform(k[2], (20, 3), maxval=1.5)
    targets = jnp.ones((20, 2))
    learner = sp.online_grad(model, mse)
    _, total = learner.run(params, learner.init(params, state0), xs, targets)
    _, grads, _ = bptt(model, mse, params, state0, xs, targets)
    assert isinstance(total.grads, Net)
    assert max_relative_error(total.grads, grads) <= 1e-9


def test_params_changing_between_steps_is_online_learning():
    """Updating params every step: the gradient uses the traces of the past params (RTRL semantics)."""
    case = lif_subtract()
    xs, targets = inputs(case, T=10)
    learner = sp.online_grad(case.model, mse)
    carry = learner.init(case.params, case.state0)
    params = case.params
    for x, t in zip(xs, targets):
        carry, out = learner.step(params, carry, x, t)
        params = jax.tree_util.tree_map(lambda p, g: p - 1e-3 * g, params, out.grads)
        assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(out.grads))
    assert max_relative_error(params, case.params) > 0
