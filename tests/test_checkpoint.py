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
    assert ckpt.is_file()          # a temporary file may be left; the next save or load removes it
    resumed = _run("resume", ckpt, out)
    assert resumed.returncode == 0, resumed.stderr
    assert not list(tmp_path.glob("*.tmp"))
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


def test_save_creates_missing_folders(tmp_path):
    path = tmp_path / "runs" / "seed0" / "c.eqx"
    checkpoint.save(path, {"w": jnp.arange(3.0)})
    assert np.array_equal(checkpoint.load(path, {"w": jnp.zeros(3)})["w"], jnp.arange(3.0))


def test_a_killed_saves_temporary_file_is_removed_by_the_next_save_or_load(tmp_path):
    path = tmp_path / "c.eqx"
    checkpoint.save(path, {"w": jnp.ones(2)})
    other = tmp_path / "other.eqx.abc123.tmp"            # another checkpoint's: left alone
    for stale in (tmp_path / "c.eqx.k3j_x9.tmp", other):
        stale.write_bytes(b"half a checkpoint")
    checkpoint.load(path, {"w": jnp.zeros(2)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.eqx", "other.eqx.abc123.tmp"]
    (tmp_path / "c.eqx.q1w2e3.tmp").write_bytes(b"half a checkpoint")
    checkpoint.save(path, {"w": jnp.zeros(2)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.eqx", "other.eqx.abc123.tmp"]


def test_typed_prng_keys_round_trip(tmp_path):
    key = jax.random.key(7)
    keys = jax.random.split(jax.random.key(3, impl="rbg"), 4)
    tree = {"key": key, "keys": keys, "w": jnp.ones(2), "step": 5}
    checkpoint.save(tmp_path / "k.eqx", tree)
    like = {"key": jax.random.key(0), "keys": jax.random.split(jax.random.key(0, impl="rbg"), 4),
            "w": jnp.zeros(2), "step": 0}
    back = checkpoint.load(tmp_path / "k.eqx", like)
    assert jax.random.key_impl(back["key"]) == jax.random.key_impl(key)
    assert jax.random.key_impl(back["keys"]) == jax.random.key_impl(keys)
    assert np.array_equal(jax.random.key_data(back["key"]), jax.random.key_data(key))
    assert np.array_equal(jax.random.key_data(back["keys"]), jax.random.key_data(keys))
    assert np.array_equal(jax.random.normal(back["keys"][2], (3,)), jax.random.normal(keys[2], (3,)))
    assert back["step"] == 5 and np.array_equal(back["w"], jnp.ones(2))
    shapes = jax.tree_util.tree_map(lambda v: jax.ShapeDtypeStruct(jnp.shape(v), v.dtype)
                                    if isinstance(v, jax.Array) else v, like)
    again = checkpoint.load(tmp_path / "k.eqx", shapes)
    assert np.array_equal(jax.random.key_data(again["keys"]), jax.random.key_data(keys))


def test_a_carry_holding_a_typed_key_resumes_the_same_noise(tmp_path):
    def model(p, s, x):                       # a noisy neuron: its PRNG key is part of the state
        v, key = s
        key, sub = jax.random.split(key)
        v = 0.9 * v + p["w"] @ x + 0.1 * jax.random.normal(sub, v.shape)
        return (v, key), v
    params = {"w": jnp.ones((3, 2))}
    learner = sp.online_grad(model, lambda y, t: jnp.sum((y - t) ** 2))
    fresh = lambda: learner.init(params, (jnp.zeros(3), jax.random.key(1)), jnp.ones(2))  # noqa: E731
    carry, _ = learner.step(params, fresh(), jnp.ones(2), jnp.zeros(3))
    checkpoint.save(tmp_path / "noisy.eqx", carry)
    back = checkpoint.load(tmp_path / "noisy.eqx", fresh())
    _, resumed = learner.step(params, back, jnp.ones(2), jnp.zeros(3))
    _, straight = learner.step(params, carry, jnp.ones(2), jnp.zeros(3))
    assert np.array_equal(resumed.output, straight.output) and np.array_equal(resumed.grads["w"], straight.grads["w"])
