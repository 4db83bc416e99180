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
    hand = loop_body_bytes(ref.hand_written_fn(network, problem["consts"], "neuron_batch", "dot"), args,
                           unit_bytes=unit)
    return eprop["passes"], hand["passes"]


def test_recurrent_lif_moves_the_bytes_of_the_hand_written_program():
    """One filtered presynaptic trace per input and one product per weight and step (the
    new-state signal form): 0.96 U per step here, as the hand program."""
    eprop, hand = _passes("lif")
    assert eprop <= 1.05 * hand, (eprop, hand)


@pytest.mark.parametrize("network", ["alif", "alif_beta", "lif2"])
def test_per_synapse_networks_move_no_more_bytes_than_the_hand_written_program(network):
    """Against the hand program in its best layout (neurons, then batch, then presynaptic: the
    batch sum of the gradient needs no transpose). The generated program stores batch-first
    and forms the batch sum as one fusion over per-example slices, so it needs no transpose
    either; a batch-first dot would add one copy of ē per weight (+2 U on ALIF), and four
    carried arrays per ALIF weight instead of three another 2 U or more."""
    eprop, hand = _passes(network)
    assert eprop <= hand, (eprop, hand)
