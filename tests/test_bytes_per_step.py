"""The structural part of the speed targets, pinned without timing anything: which per-synapse
arrays the generated e-prop carries (from the plan, as `explain()` reports them) and how many
bytes one step of the compiled loop moves (from XLA's optimised HLO), side by side with the
hand-written Bellec e-prop programs of benchmarks/ (float32, as benchmarked)."""
import os
import sys

import jax.numpy as jnp
import pytest

from sparseprop.bench.hlo import loop_body_bytes

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import eprop_reference as ref  # noqa: E402

N, M, K, B = 64, 32, 4, 8


def _problem(network):
    return ref.make_problem(network, n=N, m=M, k=K, batch=B, steps=4, dtype=jnp.float32)


def _plan(problem):
    import jax
    import sparseprop as sp
    one = lambda tree: jax.tree_util.tree_map(lambda v: v[0], tree)   # noqa: E731
    learner = sp.online_grad(problem["model"], ref.mse, method="eprop")
    return learner.plan(problem["params"], one(problem["states0"]), problem["xs"][0, 0])


def _per_synapse(plan):
    """(state, parameter, kind) of every carried block with one entry per synapse."""
    return sorted((plan.state_names[b.state], plan.param_names[b.param], type(b).__name__) for b in plan.blocks
                  if b.nbytes >= 4 * N * M)


def test_alif_carries_three_arrays_per_weight_as_the_paper_does():
    """ε^v, ε^a and the κ-filtered ē per weight (Bellec et al. 2020); the spike's trace
    e_t = ψ_t (ε^v − β ε^a) is recomputed from per-neuron coefficients, not carried."""
    plan = _plan(_problem("alif"))
    carried = _per_synapse(plan)
    for w in ("params['w_in']", "params['w_rec']"):
        assert [c for s, p, c in carried if p == w] == ["Synaptic", "Synaptic", "ReadoutFiltered"], carried
    per_weight = {w: 4 * N * pre for w, pre in (("params['w_in']", M), ("params['w_rec']", N))}
    moved = plan.bytes_per_step
    for w, size in per_weight.items():
        j = plan.param_names.index(w)
        # read and written once each, the filtered one also read by the signal
        assert sum(v for (a, p), v in moved.items() if p == j and v >= 2 * size) == (2 + 2 + 3) * size


def test_recurrent_lif_carries_no_per_synapse_array():
    """Shared leak, detached reset: one filtered presynaptic trace per input (factorised)."""
    assert _per_synapse(_plan(_problem("lif"))) == []


def _passes(network):
    problem = _problem(network)
    args = (problem["params"], problem["states0"], problem["xs"], problem["targets"])
    unit = B * N * (N + M) * 4
    eprop = loop_body_bytes(ref.sparseprop_fn(problem["model"], "eprop"), args, unit_bytes=unit)
    hand = loop_body_bytes(ref.hand_written_fn(network, problem["consts"], *(
        ("neuron_batch", "dot") if network == "alif" else ())), args, unit_bytes=unit)
    return eprop["passes"], hand["passes"]


def test_recurrent_lif_moves_the_bytes_of_the_hand_written_program():
    """One filtered presynaptic trace per input and one product per weight and step (the
    new-state signal form): 0.96 U per step here, as the hand program."""
    eprop, hand = _passes("lif")
    assert eprop <= 1.05 * hand, (eprop, hand)


def test_alif_moves_the_hand_written_bytes_plus_the_batch_sums_transpose():
    """Per step: the hand program (neuron-batch layout) 13.1 U, the generated one 15.3 U here —
    the difference is the copy XLA makes of ē (batch-first) to put the neurons first for each
    weight's batch-sum dot. Four carried arrays per weight instead of three, or another copy of
    each, would add 2 U or more (the first generated program moved 21 U)."""
    eprop, hand = _passes("alif")
    assert eprop <= hand + 2.5, (eprop, hand)
