"""method="exact" equals BPTT (jax.grad of a lax.scan) to 1e-9 relative, in float64."""
import jax.numpy as jnp
import numpy as np
import pytest

import sparseprop as sp
from models import ALL, MIXING, PER_NEURON, count_spikes, inputs
from reference import assert_matches_bptt

TOL = 1e-9


def loss_fn(y, t):
    return jnp.sum((y - t) ** 2)


@pytest.mark.slow
@pytest.mark.parametrize("build", ALL, ids=lambda b: b.__name__)
def test_exact_equals_bptt(build):
    case = build()
    xs, targets = inputs(case, T=30)
    spikes = None if case.spikes is None else (lambda ys, states: count_spikes(case, xs))
    _, total, _, ys = assert_matches_bptt(case.model, loss_fn, case.params, case.state0, xs, targets,
                                          spikes=spikes, tol=TOL, jit=True)
    np.testing.assert_allclose(total.outputs, ys, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("build", PER_NEURON, ids=lambda b: b.__name__)
def test_per_neuron_models_need_no_dense_trace(build):
    """For per-neuron models, every trace block is diagonal or synaptic, never dense."""
    case = build()
    xs, _ = inputs(case, T=2)
    prog = sp.online_grad(case.model, loss_fn).plan(case.params, case.state0, xs[0])
    for blk in prog.blocks:
        p_shape = prog.p_avals[blk.param].shape
        assert len(p_shape) == 0 or any(s is not None for s in blk.spec), (
            prog.state_names[blk.state], prog.param_names[blk.param], blk.spec)


@pytest.mark.parametrize("build", MIXING, ids=lambda b: b.__name__)
def test_mixing_models_are_exact_through_dense_blocks(build):
    case = build()
    xs, _ = inputs(case, T=2)
    prog = sp.online_grad(case.model, loss_fn).plan(case.params, case.state0, xs[0])
    assert any(all(s is None for s in blk.spec) and blk.spec for blk in prog.blocks)
