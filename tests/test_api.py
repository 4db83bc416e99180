"""The learner's contract: step/run agree, chunks chain, jit/vmap/scan work, pytrees of all kinds."""
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparseprop as sp
from models import alif, inputs, lif_subtract, recurrent_lif
from reference import bptt, max_relative_error, mse


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


def test_donating_the_carry_leaves_state0_usable_for_the_next_stream():
    """The documented recipe jit(step, donate_argnums=1): init must not alias the caller's arrays
    (alif's state0 is one zeros buffer three times: donating it would fail or delete it)."""
    case = alif()
    xs, targets = inputs(case, T=6)
    learner = sp.online_grad(case.model, mse)
    step = jax.jit(learner.step, donate_argnums=1)
    finals = []
    for _ in range(2):                               # two sequences from the same state0
        carry = learner.init(case.params, case.state0, xs[0])
        for x, t in zip(xs, targets):
            carry, out = step(case.params, carry, x, t)
        finals.append(out.grads)
    assert not any(leaf.is_deleted() for leaf in jax.tree_util.tree_leaves(case.state0))
    assert max_relative_error(finals[0], finals[1]) == 0.0


@pytest.mark.slow
def test_init_batch_from_one_state_and_a_batch_size():
    case = lif_subtract()
    B, T = 3, 8
    xs, targets = inputs(case, T=T, batch=B)
    learner = sp.online_grad(case.model, mse)
    stacked = jax.tree_util.tree_map(lambda s: jnp.stack([s] * B), case.state0)
    by_size = learner.init_batch(case.params, case.state0, xs[0, 0], batch_size=B)
    by_stack = learner.init_batch(case.params, stacked, xs[:, 0])
    assert jax.tree_util.tree_structure(by_size) == jax.tree_util.tree_structure(by_stack)
    for a, b in zip(jax.tree_util.tree_leaves(by_size), jax.tree_util.tree_leaves(by_stack)):
        assert a.shape == b.shape and bool(jnp.all(a == b))
    _, total = learner.run_batch(case.params, by_size, xs, targets)
    ref = jax.tree_util.tree_map(lambda *g: sum(g), *[
        bptt(case.model, mse, case.params, case.state0, xs[b], targets[b])[1] for b in range(B)])
    assert max_relative_error(total.grads, ref) <= 1e-9
    assert learner.init_batch(case.params, case.state0, batch_size=B).state["v"].shape == (B, 7)


def test_simulate_is_the_forward_pass_of_run():
    case = recurrent_lif()
    xs, targets = inputs(case, T=12)
    learner = sp.online_grad(case.model, mse)
    traj = sp.simulate(case.model, case.params, case.state0, xs)
    state, outputs = case.state0, []
    for x in xs:                                      # the same steps, by hand
        state, y = case.model(case.params, state, x)
        outputs.append(y)
    np.testing.assert_allclose(traj.outputs, jnp.stack(outputs), rtol=1e-12)   # scan vs eager: rounding
    for a, b in zip(jax.tree_util.tree_leaves(traj.state), jax.tree_util.tree_leaves(state)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    assert all(s.shape[0] == 12 for s in jax.tree_util.tree_leaves(traj.states))
    _, total = learner.run(case.params, learner.init(case.params, case.state0, xs[0]), xs, targets)
    np.testing.assert_allclose(total.outputs, traj.outputs, rtol=1e-12)
    lean = jax.jit(learner.simulate, static_argnums=3)(case.params, case.state0, xs, False)
    assert lean.states is None
    np.testing.assert_allclose(lean.outputs, traj.outputs, rtol=1e-12)


def test_run_with_float64_targets_and_float32_params():
    """The loss is float64, the params float32: the sums keep each its own dtype (no scan carry error)."""
    case = lif_subtract()
    xs, targets = inputs(case, T=10)
    f32 = lambda tree: jax.tree_util.tree_map(lambda v: v.astype(jnp.float32), tree)  # noqa: E731
    params, state0, xs32 = f32(case.params), f32(case.state0), f32(xs)
    learner = sp.online_grad(case.model, mse)
    _, total = learner.run(params, learner.init(params, state0, xs32[0]), xs32, targets)
    assert total.loss.dtype == jnp.float64
    assert all(g.dtype == jnp.float32 for g in jax.tree_util.tree_leaves(total.grads))
    _, ref, _ = bptt(case.model, mse, params, state0, xs32, targets)
    assert max_relative_error(total.grads, ref) <= 1e-4      # float32 rounding


def test_run_with_bfloat16_params_and_a_float32_loss():
    bf16 = jnp.bfloat16

    def model(p, s, x):
        v = p["alpha"] * s["v"] + p["w"] @ x
        return {"v": v}, p["w_out"] @ v
    k = jax.random.split(jax.random.PRNGKey(3), 3)
    params = {"alpha": jnp.full(4, 0.9, bf16), "w": jax.random.normal(k[0], (4, 3), bf16),
              "w_out": jax.random.normal(k[1], (2, 4), bf16)}
    state0 = {"v": jnp.zeros(4, bf16)}
    xs = jax.random.normal(k[2], (6, 3), bf16)
    targets = jnp.ones((6, 2), jnp.float32)
    loss_fn = lambda y, t: jnp.sum((y.astype(jnp.float32) - t) ** 2)  # noqa: E731
    learner = sp.online_grad(model, loss_fn)
    _, total = learner.run(params, learner.init(params, state0, xs[0]), xs, targets)
    assert total.loss.dtype == jnp.float32
    assert all(g.dtype == bf16 for g in jax.tree_util.tree_leaves(total.grads))
    loss, _ = sp.bptt_grad(model, loss_fn)(params, state0, xs, targets)
    np.testing.assert_allclose(float(total.loss), float(loss), rtol=1e-6)


@pytest.mark.slow
def test_catalogue_init_state_with_a_batch():
    from sparseprop import neurons
    net = neurons.Sequential((neurons.ALIF(), neurons.Izhikevich(), neurons.LeakyIntegrator()))
    sizes = (3, 5, 4, 2)
    one, batch = net.init_state(sizes), net.init_state(sizes, batch=6)
    for a, b in zip(jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(batch)):
        assert b.shape == (6,) + a.shape
        np.testing.assert_array_equal(b, jnp.broadcast_to(a, b.shape))
    small = neurons.Sequential((neurons.LIF(), neurons.LeakyIntegrator()))
    params = small.init_params(jax.random.PRNGKey(0), (3, 5, 2))
    learner = sp.online_grad(small, mse)
    carry = learner.init_batch(params, small.init_state((3, 5, 2), batch=6), jnp.ones((6, 3)))
    carry, out = learner.step_batch(params, carry, jnp.ones((6, 3)), jnp.zeros((6, 2)))
    assert out.output.shape == (6, 2)


def _pattern_generator(n=8, o=2, seed=21):
    """An autonomous recurrent LIF network (no input, a FORCE-like pattern generator): a
    learned bias drives it, recurrence shapes the pattern, a leaky readout reads it."""
    k = jax.random.split(jax.random.PRNGKey(seed), 3)

    def model(p, s, x):
        assert x is None
        v, z, r = s
        v = 0.9 * v + p["b"] + p["v_rec"] @ z - jax.lax.stop_gradient(z)
        z = sp.spike(v - 1.0)
        r = 0.8 * r + p["w_out"] @ z
        return (v, z, r), r
    params = {"b": jnp.linspace(0.15, 0.4, n), "v_rec": jax.random.normal(k[0], (n, n)) * 0.4,
              "w_out": jax.random.normal(k[1], (o, n))}
    state0 = (jax.random.uniform(k[2], (n,)), jnp.zeros(n), jnp.zeros(o))
    return model, params, state0


@pytest.mark.slow
def test_a_network_without_input_runs_with_xs_none():
    model, params, state0 = _pattern_generator()
    T = 40
    targets = jnp.sin(jnp.arange(T)[:, None] * jnp.array([0.3, 0.5]))
    learner = sp.online_grad(model, mse, method="exact")
    carry, total = learner.run(params, learner.init(params, state0), None, targets)
    loss, ref = sp.bptt_grad(model, mse)(params, state0, None, targets)
    assert max_relative_error(total.grads, ref) <= 1e-9
    np.testing.assert_allclose(total.loss, loss, rtol=1e-12)
    assert total.outputs.shape == (T, 2)
    # step by step, x=None, from the same start
    c, acc = learner.init(params, state0), jax.tree_util.tree_map(jnp.zeros_like, params)
    n_spikes = 0
    for t in targets:
        c, out = learner.step(params, c, None, t)
        acc = jax.tree_util.tree_map(jnp.add, acc, out.grads)
        n_spikes += int(jnp.sum(c.state[1]))
    assert n_spikes > 20, "the network must spike for the comparison to mean anything"
    assert max_relative_error(acc, ref) <= 1e-9
    # a batch of streams from different states, xs=None: targets give T and B
    B = 3
    states = jax.tree_util.tree_map(lambda *v: jnp.stack(v), *[
        (state0[0] * (b + 1) / B, state0[1], state0[2]) for b in range(B)])
    batch_targets = jnp.stack([targets, -targets, 0.5 * targets])
    _, batched = learner.run_batch(params, learner.init_batch(params, states), None, batch_targets)
    refs = [sp.bptt_grad(model, mse)(params, jax.tree_util.tree_map(lambda v: v[b], states), None,
                                      batch_targets[b])[1] for b in range(B)]
    assert max_relative_error(batched.grads, jax.tree_util.tree_map(lambda *g: sum(g), *refs)) <= 1e-9
    assert batched.outputs.shape == (B, T, 2)


@pytest.mark.slow
def test_check_finite_works_in_an_eager_run_and_run_batch():
    case = lif_subtract()
    xs, targets = inputs(case, T=12)
    learner = sp.online_grad(case.model, mse, check_finite=True)
    plain = sp.online_grad(case.model, mse)
    _, checked = learner.run(case.params, learner.init(case.params, case.state0), xs, targets)
    _, unchecked = plain.run(case.params, plain.init(case.params, case.state0), xs, targets)
    assert max_relative_error(checked.grads, unchecked.grads) == 0.0      # finite: same result, no error
    with pytest.raises(Exception, match=r"the input x has a NaN or inf entering the step \(step 5 of the run\)"):
        learner.run(case.params, learner.init(case.params, case.state0), xs.at[5, 1].set(jnp.nan), targets)
    B = 2
    bxs, btargets = inputs(case, T=12, batch=B)
    carry = learner.init_batch(case.params, case.state0, batch_size=B)
    _, total = learner.run_batch(case.params, carry, bxs, btargets)
    _, ref = plain.run_batch(case.params, plain.init_batch(case.params, case.state0, batch_size=B), bxs, btargets)
    assert max_relative_error(total.grads, ref.grads) == 0.0
    with pytest.raises(Exception, match=r"the target has a NaN or inf entering the step \(step 7 of the run\)"):
        learner.run_batch(case.params, carry, bxs, btargets.at[1, 7, 0].set(jnp.inf))


def test_run_memory_does_not_grow_with_the_number_of_steps():
    n, m, f32 = 128, 16, jnp.float32

    def model(p, s, x):
        v = p["beta"] * s["v"] + p["w"] @ x - s["z"]
        z = sp.spike(v - 1.0)
        return {"v": v, "z": z}, p["w_out"] @ z
    params = {"beta": jnp.full(n, 0.9, f32), "w": jnp.ones((n, m), f32), "w_out": jnp.ones((2, n), f32)}
    learner = sp.online_grad(model, lambda y, t: jnp.sum((y - t) ** 2))
    carry = learner.init(params, {"v": jnp.zeros(n, f32), "z": jnp.zeros(n, f32)}, jnp.zeros(m, f32))

    def temp_bytes(T, keep_outputs):
        run = jax.jit(lambda p, c, xs, ts: learner.run(p, c, xs, ts, keep_outputs=keep_outputs))
        compiled = run.lower(params, carry, jnp.zeros((T, m), f32), jnp.zeros((T, 2), f32)).compile()
        return compiled.memory_analysis().temp_size_in_bytes
    assert temp_bytes(200, False) == temp_bytes(3200, False)
    assert temp_bytes(200, True) == temp_bytes(3200, True)     # outputs are returned, not temporaries
    _, total = learner.run(params, carry, jnp.ones((5, m), f32), jnp.zeros((5, 2), f32), keep_outputs=False)
    assert total.outputs is None


def test_a_learner_reads_well():
    case = lif_subtract()
    text = repr(sp.online_grad(case.model, mse, method="eprop"))
    assert text.startswith("OnlineLearner(model=lif_subtract.<locals>.model, method='eprop'")
    assert "cuts the recurrent neuron-mixing paths in the whole step" in text and "loss_fn=mse" in text
    assert "cuts nothing" in repr(sp.online_grad(case.model, mse))
    assert "loss_fn=None" in repr(sp.online_grad(case.model))


def test_optional_submodules_load_on_first_use():
    import os
    import subprocess
    import sys
    code = ("import sys, sparseprop as sp; "
            "before = [m for m in ('checkpoint', 'parallel', 'nir', 'plotting') if 'sparseprop.' + m in sys.modules]; "
            "assert not before, before; "
            "assert callable(sp.checkpoint.save) and callable(sp.parallel.data_parallel_run); "
            "assert 'checkpoint' in dir(sp)")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
