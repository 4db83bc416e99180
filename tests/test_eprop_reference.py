"""The hand-written batched e-prop programs of benchmarks/ equal sparseprop's `method="eprop"`.

They are the peers of the e-prop speed benchmark, so they must compute the same gradient:
checked in float64 against `online_grad(model, loss, method="eprop").run_batch` on small
networks that spike, to 1e-9 relative.
"""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from reference import max_relative_error

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCH)
import eprop_reference as ref  # noqa: E402


def _spike_rate(problem):
    model = jax.vmap(problem["model"], in_axes=(None, 0, 0))
    z_index = 1 if len(problem["states0"]) == 2 else 2

    def body(s, x):
        s, _ = model(problem["params"], s, x)
        return s, jnp.mean(s[z_index])
    return float(jnp.mean(jax.lax.scan(body, problem["states0"], problem["xs"])[1]))


@pytest.fixture(scope="module", params=["lif", "alif"])
def eprop_problem(request):
    """A small float64 problem that spikes, with sparseprop's e-prop loss and gradient."""
    network = request.param
    problem = ref.make_problem(network, n=12, m=7, k=3, batch=4, steps=40, dtype=jnp.float64)
    rate = _spike_rate(problem)
    assert 0.02 < rate < 0.8, rate
    args = (problem["params"], problem["states0"], problem["xs"], problem["targets"])
    loss, grads = jax.jit(ref.sparseprop_fn(problem["model"], "eprop"))(*args)
    return network, problem, args, loss, grads


@pytest.mark.slow
@pytest.mark.parametrize("layout,batch_sum", [(layout, "dot") for layout in ref.LAYOUTS] + [("batch_first", "reduce")])
def test_hand_written_equals_sparseprop_eprop(eprop_problem, layout, batch_sum):
    network, problem, args, loss, grads = eprop_problem
    if network == "lif" and (layout, batch_sum) != ("neuron_first", "dot"):
        pytest.skip("the LIF program has factorised traces: no layout to choose")
    hand_loss, hand = jax.jit(ref.hand_written_fn(network, problem["consts"], layout, batch_sum))(*args)
    assert abs(float(hand_loss - loss)) <= 1e-12 * abs(float(loss))
    assert max_relative_error(hand, grads) <= 1e-9


@pytest.mark.slow
def test_eprop_is_not_bptt_on_these_problems(eprop_problem):
    """The comparison above can fail: e-prop differs from the full gradient here."""
    network, problem, args, loss, grads = eprop_problem
    _, full = jax.jit(ref.bptt_fn(problem["model"]))(*args)
    assert max_relative_error(grads, full) > 1e-3


def test_unknown_layout_and_network_are_refused():
    with pytest.raises(ValueError, match="layout must be one of"):
        ref.hand_alif_fn(jnp.ones(3), 0.8, layout="rows")
    with pytest.raises(ValueError, match="batch_sum must be"):
        ref.hand_alif_fn(jnp.ones(3), 0.8, batch_sum="scan")
    with pytest.raises(ValueError, match="network must be one of"):
        ref.make_problem("gru", 4, 3, 2, 1, 5)


@pytest.mark.slow
def test_speed_benchmark_quick_mode(tmp_path):
    out = subprocess.run([sys.executable, os.path.join(BENCH, "eprop_speed.py"), "--quick",
                          "--out", str(tmp_path), "--docs", str(tmp_path / "table.md")],
                         capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert out.returncode == 0, out.stderr[-3000:]
    for name in ("eprop_speed.csv", "eprop_shd.csv", "eprop_speed.png", "table.md"):
        assert (tmp_path / name).stat().st_size > 0, name
