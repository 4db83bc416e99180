"""One walker, one note sink: what the tracer cannot prove inside a cond branch, a scan or
while body is reported by `explain` as it is at the top level of the step, once, with the
user's line."""
import jax
import jax.numpy as jnp
import pytest

import sparseprop as sp
from test_control_flow import _params
from reference import bptt, max_relative_error, mse




def sort_at_top(p, s, x):
    v, z = s
    v = p["alpha"] * v + p["w"] @ x - z + 0.1 * jnp.sort(v)
    z = sp.spike(v - 1.0)
    return (v, z), p["w_out"] @ z


def sort_in_cond(p, s, x):
    v, z = s
    mixed = jax.lax.cond(jnp.sum(x) > 2.0, lambda a: 0.1 * jnp.sort(a), lambda a: 0.1 * a, v)
    v = p["alpha"] * v + p["w"] @ x - z + mixed
    z = sp.spike(v - 1.0)
    return (v, z), p["w_out"] @ z


def sort_in_scan(p, s, x):
    v, z = s
    mixed, _ = jax.lax.scan(lambda c, _: (0.5 * c + 0.1 * jnp.sort(c), None), v, None, length=3)
    v = p["alpha"] * v + p["w"] @ x - z + mixed
    z = sp.spike(v - 1.0)
    return (v, z), p["w_out"] @ z


def sort_in_while(p, s, x):
    v, z = s
    _, mixed = jax.lax.while_loop(lambda c: c[0] < 2, lambda c: (c[0] + 1, 0.5 * c[1] + 0.1 * jnp.sort(c[1])),
                                  (0, v))
    v = p["alpha"] * v + p["w"] @ x - z + mixed
    z = sp.spike(v - 1.0)
    return (v, z), p["w_out"] @ z


def _notes(model):
    params, xs, _ = _params()
    report = sp.online_grad(model, mse).explain(params, (jnp.zeros(5), jnp.zeros(5)), xs[0],
                                                print_report=False)
    for note in report.notes:
        assert "test_walker_notes.py" in note, note
    # "<primitive> at <file>:<line> (<function>): <what>": the line differs between models
    return sorted((n.split(" at ")[0], n.split("): ", 1)[1]) for n in report.notes), report


def test_top_level_sort_is_noted():
    notes, _ = _notes(sort_at_top)
    assert [p for p, _ in notes] == ["gather", "sort"]


@pytest.mark.parametrize("model", [sort_in_cond, sort_in_scan, sort_in_while], ids=lambda f: f.__name__)
def test_sort_inside_control_flow_gets_the_notes_it_gets_at_top_level(model):
    top, top_report = _notes(sort_at_top)
    nested, report = _notes(model)
    assert nested == top
    assert [b.kind for b in report.blocks] == [b.kind for b in top_report.blocks]


def test_sort_inside_cond_is_exact():
    params, xs, targets = _params()
    state0 = (jnp.zeros(5), jnp.zeros(5))
    zs = jax.lax.scan(lambda s, x: (sort_in_cond(params, s, x)[0],) * 2, state0, xs)[1][1]
    assert int(jnp.sum(zs)) > 0
    learner = sp.online_grad(sort_in_cond, mse)
    _, total = learner.run(params, learner.init(params, state0), xs, targets)
    _, grads, _ = bptt(sort_in_cond, mse, params, state0, xs, targets)
    assert max_relative_error(total.grads, grads) <= 1e-9
