"""The online learner's memory does not grow with the sequence length; BPTT's does."""
import jax
import pytest

import sparseprop as sp
from models import alif, inputs
from reference import mse


def _temp_bytes(f, *args):
    return jax.jit(f).lower(*args).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.slow
def test_online_temp_memory_is_constant_in_T_and_bptt_grows():
    case = alif(n=32, m=16)
    learner = sp.online_grad(case.model, mse)
    sizes = {}
    for T in (100, 2000):
        xs, targets = inputs(case, T=T)
        carry = learner.init(case.params, case.state0, xs[0])
        online = _temp_bytes(lambda p, c, x, t: learner.run(p, c, x, t)[1].grads, case.params, carry, xs, targets)
        bptt = _temp_bytes(sp.bptt_grad(case.model, mse), case.params, case.state0, xs, targets)
        sizes[T] = online, bptt
    (on100, bp100), (on2000, bp2000) = sizes[100], sizes[2000]
    print(f"temp bytes online {on100} -> {on2000}, BPTT {bp100} -> {bp2000}")
    assert abs(on2000 - on100) <= 0.1 * on100
    assert bp2000 > 5 * bp100
