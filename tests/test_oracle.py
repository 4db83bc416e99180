"""A dense-RTRL oracle (jacfwd of the whole step) at tiny sizes agrees with the sparse program."""
import pytest

import sparseprop as sp
from models import alif, global_inhibition, inputs, izhikevich, recurrent_lif
from reference import dense_rtrl, max_relative_error, mse


@pytest.mark.slow
@pytest.mark.parametrize("build", [alif, izhikevich, recurrent_lif, global_inhibition], ids=lambda b: b.__name__)
def test_sparse_program_equals_dense_rtrl(build):
    case = build(n=4, m=3, o=2) if build is not izhikevich else build(n=3, m=2, o=2)
    xs, targets = inputs(case, T=12)
    learner = sp.online_grad(case.model, mse)
    _, total = learner.run(case.params, learner.init(case.params, case.state0), xs, targets)
    oracle = dense_rtrl(case.model, mse, case.params, case.state0, xs, targets)
    assert max_relative_error(total.grads, oracle) <= 1e-9
