"""Control flow and unusual primitives inside a step: exact (dense where unproved), and reported."""
import warnings

import jax
import jax.numpy as jnp
import pytest

import sparseprop as sp
from reference import bptt, dense_rtrl, max_relative_error, mse


def _params(n=5, m=3, seed=21):
    """Parameters, inputs and targets for n neurons and m inputs."""
    k = jax.random.split(jax.random.PRNGKey(seed), 3)
    return ({"w": jax.random.normal(k[0], (n, m)) * 2.0, "alpha": jnp.linspace(0.8, 0.9, n),
             "w_out": jax.random.normal(k[1], (2, n))},
            jax.random.uniform(k[2], (20, m), maxval=1.5), jnp.zeros((20, 2)))


def with_cond(p, s, x):
    v, z = s
    drive = jax.lax.cond(jnp.sum(x) > 2.0, lambda a: 1.5 * a, lambda a: a - 0.1, p["w"] @ x)
    v = p["alpha"] * v + drive - z
    z = sp.spike(v - 1.0)
    return (v, z), p["w_out"] @ z


def with_fori_loop(p, s, x):
    v, z = s
    v = jax.lax.fori_loop(0, 2, lambda i, v: p["alpha"] * v + 0.5 * p["w"] @ x, v) - z
    z = sp.spike(v - 1.0)
    return (v, z), p["w_out"] @ z


def with_inner_scan(p, s, x):
    v, z = s

    def substep(v, _):
        v = p["alpha"] * v + 0.5 * p["w"] @ x
        return v, None
    v, _ = jax.lax.scan(substep, v, None, length=3)
    v = v - z
    z = sp.spike(v - 1.0)
    return (v, z), p["w_out"] @ z


def with_while_loop(p, s, x):
    v, z = s

    def body(carry):
        i, v = carry
        return i + 1, p["alpha"] * v + 0.5 * p["w"] @ x
    _, v = jax.lax.while_loop(lambda c: c[0] < 2, body, (0, v))
    v = v - z
    z = sp.spike(v - 1.0)
    return (v, z), p["w_out"] @ z


def with_sort(p, s, x):
    v, z = s
    v = p["alpha"] * v + p["w"] @ x - z + 0.1 * jnp.sort(v)   # sort mixes neurons
    z = sp.spike(v - 1.0)
    return (v, z), p["w_out"] @ z


def _spikes(model, params, state0, xs):
    """How many spikes (the state's z) a run of the model emits: the tests need some."""
    zs = jax.lax.scan(lambda s, x: (model(params, s, x)[0],) * 2, state0, xs)[1][1]
    return int(jnp.sum(zs))


@pytest.mark.slow
@pytest.mark.parametrize("model", [with_cond, with_fori_loop, with_inner_scan, with_sort],
                         ids=lambda f: f.__name__)
def test_control_flow_is_exact(model):
    params, xs, targets = _params()
    state0 = (jnp.zeros(5), jnp.zeros(5))
    assert _spikes(model, params, state0, xs) > 0
    learner = sp.online_grad(model, mse)
    _, total = learner.run(params, learner.init(params, state0), xs, targets)
    _, grads, ys = bptt(model, mse, params, state0, xs, targets)
    assert max_relative_error(total.grads, grads) <= 1e-9


@pytest.mark.slow
def test_while_loop_is_exact_where_bptt_cannot_go():
    """Reverse mode cannot differentiate a while_loop; the online learner is forward mode.

    Checked against forward-mode dense RTRL (jacfwd everywhere)."""
    params, xs, targets = _params(n=4, m=3)
    state0 = (jnp.zeros(4), jnp.zeros(4))
    assert _spikes(with_while_loop, params, state0, xs) > 0
    with pytest.raises(ValueError, match="Reverse-mode differentiation does not work"):
        bptt(with_while_loop, mse, params, state0, xs, targets)
    learner = sp.online_grad(with_while_loop, mse)
    _, total = learner.run(params, learner.init(params, state0), xs, targets)
    oracle = dense_rtrl(with_while_loop, mse, params, state0, xs, targets, local_grad=jax.jacfwd)
    assert max_relative_error(total.grads, oracle) <= 1e-9


@pytest.mark.parametrize("model", [with_cond, with_fori_loop, with_inner_scan],
                         ids=lambda f: f.__name__)
def test_per_neuron_loops_and_branches_keep_per_neuron_traces_and_eprop_is_exact(model):
    """The loop's body structure is followed to a fixed point: nothing is mixed, nothing cut."""
    params, xs, targets = _params()
    state0 = (jnp.zeros(5), jnp.zeros(5))
    learner = sp.online_grad(model, mse, method="eprop")
    report = learner.explain(params, state0, xs[0], print_report=False)
    assert report.exact and not report.dropped
    assert all(b.kind != "dense" for b in report.blocks)
    _, total = learner.run(params, learner.init(params, state0), xs, targets)
    _, grads, _ = bptt(model, mse, params, state0, xs, targets)
    assert max_relative_error(total.grads, grads) <= 1e-9


def test_unproved_structure_is_reported_with_the_primitive_and_line():
    params, xs, _ = _params()
    report = sp.online_grad(with_sort, mse).explain(params, (jnp.zeros(5), jnp.zeros(5)), xs[0],
                                                   print_report=False)
    assert any("sort at" in note and "test_control_flow.py" in note for note in report.notes)
    assert report.exact


def test_large_dense_trace_warns_and_suggests_eprop(monkeypatch):
    from sparseprop.tracer.passes import blocks
    monkeypatch.setattr(blocks, "DENSE_WARNING_BYTES", 500)   # the dense blocks here: 800 B
    params, xs, _ = _params()
    with pytest.warns(UserWarning, match=r"dense trace blocks of .* MiB.*method='eprop'"):
        sp.online_grad(with_sort, mse).program(params, (jnp.zeros(5), jnp.zeros(5)), xs[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # per-neuron models never warn
        sp.online_grad(with_cond, mse).program(params, (jnp.zeros(5), jnp.zeros(5)), xs[0])


@pytest.mark.slow
def test_while_loop_with_an_integer_leaf_passed_through():
    """An integer leaf that passes through the step unchanged does not hide that the output reads
    the new state only: the learning signal needs no reverse pass through the while_loop."""
    def model(p, s, x):
        (v, z), y = with_while_loop(p, (s["v"], s["z"]), x)
        return {"v": v, "z": z, "k": s["k"]}, y
    params, xs, targets = _params(n=4, m=3)
    state0 = {"v": jnp.zeros(4), "z": jnp.zeros(4), "k": jnp.array(3, jnp.int32)}
    assert _spikes(with_while_loop, params, (jnp.zeros(4), jnp.zeros(4)), xs) > 0
    learner = sp.online_grad(model, mse)
    _, total = learner.run(params, learner.init(params, state0), xs, targets)
    oracle = dense_rtrl(model, mse, params, state0, xs, targets, local_grad=jax.jacfwd)
    assert max_relative_error(total.grads, oracle) <= 1e-9
