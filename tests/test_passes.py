"""Unit tests of the tracer's passes: each returns a frozen record that the next one reads."""
import dataclasses

import jax
import jax.numpy as jnp
import pytest

import sparseprop as sp
from sparseprop.tracer import storage
from sparseprop.tracer.methods import EPROP, EXACT, SNAP1, Method
from sparseprop.tracer.passes import build
from sparseprop.tracer.passes.blocks import plan_blocks
from sparseprop.tracer.passes.cuts import apply_cuts
from sparseprop.tracer.passes.jvp import trace_jvp
from sparseprop.tracer.passes.mixing import classify_mixing
from sparseprop.tracer.passes.neurons import find_neuron_axes
from sparseprop.tracer.passes.signal import plan_signal
from sparseprop.tracer.passes.structure import analyse_structure
from sparseprop.tracer.passes.trace import trace_step
from reference import assert_matches_bptt, mse

N, M, O = 5, 3, 2


def recurrent_lif(p, s, x):
    v = p["alpha"] * s["v"] + p["w"] @ x + p["w_rec"] @ s["z"] - s["z"]
    z = sp.spike(v - 1.0)
    return {"v": v, "z": z, "k": s["k"] + 1}, p["w_out"] @ z


def shared_leak_lif(p, s, x):
    v = 0.9 * s["v"] + p["w"] @ x - jax.lax.stop_gradient(s["z"])
    z = sp.spike(v - 1.0)
    return {"v": v, "z": z}, p["w_out"] @ s["v"]


def _params(seed=0):
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    return {"alpha": jnp.linspace(0.8, 0.95, N), "w": jax.random.normal(k[0], (N, M)),
            "w_rec": 0.3 * jax.random.normal(k[1], (N, N)), "w_out": jax.random.normal(k[2], (O, N))}


def _state():
    return {"v": jnp.zeros(N), "z": jnp.zeros(N), "k": jnp.zeros((), jnp.int32)}


def _passes(model, params, state, method):
    step = trace_step(model, params, state, jnp.zeros(M))
    graph = classify_mixing(step, find_neuron_axes(step))
    cuts = apply_cuts(step, graph, method)
    jvp = trace_jvp(step, cuts)
    structure = analyse_structure(step, jvp, ())
    return step, graph, cuts, jvp, structure


def test_trace_step_names_leaves_and_skips_integer_state():
    step = trace_step(recurrent_lif, _params(), _state(), jnp.zeros(M))
    assert step.param_names == ("params['alpha']", "params['w']", "params['w_out']", "params['w_rec']")
    assert step.state_names == ("state['k']", "state['v']", "state['z']")
    assert step.diff_states == (1, 2)          # the int32 counter has no derivative
    with pytest.raises(dataclasses.FrozenInstanceError):
        step.diff_states = ()


def test_mixing_is_classified_on_the_state_graph():
    step, graph, cuts_exact, _, _ = _passes(recurrent_lif, _params(), _state(), EXACT)
    kinds = sorted((m.primitive, m.recurrent, m.reaches_state) for m in graph.found)
    # w_rec @ z feeds v (recurrent); w_out @ z reaches the output only
    assert kinds == [("dot_general", False, False), ("dot_general", True, True)]
    assert cuts_exact.cuts == ()
    cuts_eprop = apply_cuts(step, graph, EPROP)
    assert [m.recurrent for m in cuts_eprop.cuts] == [True]


def test_storage_kinds_follow_the_proved_structure():
    step, _, _, _, structure = _passes(recurrent_lif, _params(), _state(), EXACT)
    blocks, truncated, rejected = plan_blocks(step, EXACT, structure)
    kinds = {(step.state_names[b.state], step.param_names[b.param]): type(b) for b in blocks}
    # recurrence couples neurons: every trace of v is dense under exact
    assert kinds[("state['v']", "params['alpha']")] is storage.Dense
    assert kinds[("state['v']", "params['w']")] is storage.Dense
    assert truncated == () and rejected == {}
    step, _, _, _, structure = _passes(recurrent_lif, _params(), _state(), EPROP)
    blocks, _, _ = plan_blocks(step, EPROP, structure)
    kinds = {(step.state_names[b.state], step.param_names[b.param]): type(b) for b in blocks}
    assert kinds[("state['v']", "params['alpha']")] is storage.Diagonal   # the cut keeps it per neuron
    assert kinds[("state['v']", "params['w']")] is storage.Synaptic
    assert kinds[("state['v']", "params['w_rec']")] is storage.Synaptic


def test_shared_leak_is_factorised_and_snap1_truncates():
    params = {k: v for k, v in _params().items() if k in ("w", "w_out")}
    state = {"v": jnp.zeros(N), "z": jnp.zeros(N)}
    step, _, _, _, structure = _passes(shared_leak_lif, params, state, EXACT)
    blocks, _, _ = plan_blocks(step, EXACT, structure)
    (w_block,) = [b for b in blocks if step.param_names[b.param] == "params['w']" and b.state == 0]
    assert isinstance(w_block, storage.Factorised) and w_block.shape == (M,)
    step, _, _, _, structure = _passes(recurrent_lif, _params(), _state(), SNAP1)
    _, truncated, _ = plan_blocks(step, SNAP1, structure)
    assert (1, step.param_names.index("params['w']")) in truncated


def test_signal_form_and_pruning():
    params = {k: v for k, v in _params().items() if k in ("w", "w_out")}
    state = {"v": jnp.zeros(N), "z": jnp.zeros(N)}
    step, _, cuts, _, structure = _passes(shared_leak_lif, params, state, EXACT)
    blocks, truncated, _ = plan_blocks(step, EXACT, structure)
    form, kept, pruned = plan_signal(step, EXACT, cuts, structure, blocks, truncated, keep_all=False)
    # the output reads the previous v only: z's traces are never met by the loss's signal
    assert not form.via_new_state and form.signalled == frozenset({0})
    assert all(b.state == 0 for b in kept) and all(a == 1 for a, _ in pruned)
    _, kept_all, pruned_none = plan_signal(step, EXACT, cuts, structure, blocks, truncated, keep_all=True)
    assert len(kept_all) == len(blocks) and pruned_none == ()


def test_passes_do_not_change_their_inputs():
    step, _, _, _, structure = _passes(recurrent_lif, _params(), _state(), EXACT)
    jmap_before = {a: dict(d) for a, d in structure.jmap.items()}
    first = plan_blocks(step, EXACT, structure)[0]
    second = plan_blocks(step, EXACT, structure)[0]
    assert [b.layout() for b in first] == [b.layout() for b in second]
    assert structure.jmap == jmap_before


def test_plan_reports_bytes_moved_per_step():
    plan = build(recurrent_lif, EPROP, _params(), _state(), jnp.zeros(M))
    report = sp.online_grad(recurrent_lif, mse, "eprop").explain(_params(), _state(), jnp.zeros(M),
                                                                 print_report=False)
    assert report.bytes_per_step == sum(plan.bytes_per_step.values()) > 2 * plan.trace_bytes - 1
    assert "bytes moved per step" in str(report)


@pytest.mark.slow
def test_a_new_method_is_one_object():
    """A method defined outside the library (cut every mixing operand, in the whole step) equals
    BPTT of the model with stop_gradient on those operands, written by hand."""
    cut_all = Method("cut_all", False, "every neuron-mixing operand cut in the whole step",
                     cut=lambda mixing: mixing.reaches_state, cut_output=True)

    def twin(p, s, x):
        sg = jax.lax.stop_gradient
        v = p["alpha"] * s["v"] + p["w"] @ x + p["w_rec"] @ sg(s["z"]) - s["z"]
        z = sp.spike(v - 1.0)
        return {"v": v, "z": z, "k": s["k"] + 1}, p["w_out"] @ z
    xs = jax.random.uniform(jax.random.PRNGKey(3), (25, M), maxval=1.6)
    targets = jax.random.normal(jax.random.PRNGKey(4), (25, O))
    assert_matches_bptt(recurrent_lif, mse, _params(), _state(), xs, targets, method=cut_all, twin=twin,
                        spikes=lambda ys, states: jnp.sum(states["z"]))
