"""A stream that is killed resumes from its checkpoint and ends with the uninterrupted run's params, bit for bit."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparseprop as sp
from sparseprop import checkpoint

HERE = Path(__file__).parent


def _run(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, str(HERE / "resumable_stream.py"), *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_killed_stream_resumes_bit_for_bit(tmp_path):
    import resumable_stream
    ckpt, out = tmp_path / "stream.eqx", tmp_path / "final.npz"
    killed = _run("kill", ckpt, out, 12)            # dies after step 12; last checkpoint after step 10
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert ckpt.is_file() and not list(tmp_path.glob("*.tmp"))
    resumed = _run("resume", ckpt, out)
    assert resumed.returncode == 0, resumed.stderr
    uninterrupted = jax.tree_util.tree_leaves(resumable_stream.run_stream())
    with np.load(out) as saved:
        got = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    assert len(got) == len(uninterrupted)
    for a, b in zip(got, uninterrupted):
        assert np.array_equal(a, np.asarray(b)), "resumed params differ from the uninterrupted run"
    assert not np.array_equal(got[0], np.asarray(resumable_stream.setup()[0][0][0]["alpha"]))  # it learned


def test_load_refuses_a_checkpoint_of_another_model(tmp_path):
    path = tmp_path / "c.eqx"
    checkpoint.save(path, {"w": jnp.ones((3, 2)), "b": jnp.zeros(3)})
    with pytest.raises(ValueError, match=r"key='w'.*\(4, 2\) in `like` to \(3, 2\) on disk"):
        checkpoint.load(path, {"w": jnp.ones((4, 2)), "b": jnp.zeros(3)})
    with pytest.raises(ValueError, match=r"key='w'.*changed dtype from int32 in `like` to float\d+ on disk"):
        checkpoint.load(path, {"w": jnp.ones((3, 2), jnp.int32), "b": jnp.zeros(3)})
    with pytest.raises(ValueError, match="more arrays than `like`"):
        checkpoint.load(path, {"b": jnp.zeros(3)})
    with pytest.raises(ValueError, match="fewer arrays than `like`"):
        checkpoint.load(path, {"w": jnp.ones((3, 2)), "b": jnp.zeros(3), "c": jnp.zeros(1)})


def test_a_carry_round_trips_with_its_trace_layout(tmp_path):
    def model(p, s, x):
        v = p["alpha"] * s + p["w"] @ x
        return v, v
    params = {"alpha": jnp.full(3, 0.9), "w": jnp.ones((3, 2))}
    learner = sp.online_grad(model, lambda y, t: jnp.sum((y - t) ** 2))
    carry = learner.init(params, jnp.zeros(3), jnp.ones(2))
    carry, _ = learner.step(params, carry, jnp.ones(2), jnp.zeros(3))
    checkpoint.save(tmp_path / "c.eqx", carry)
    back = checkpoint.load(tmp_path / "c.eqx", learner.init(params, jnp.zeros(3), jnp.ones(2)))
    assert isinstance(back.traces, sp.Traces) and back.traces.tag == carry.traces.tag
    for a, b in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(carry)):
        assert np.array_equal(a, b)
    learner.step(params, back, jnp.ones(2), jnp.zeros(3))      # accepted by the learner
