"""The examples that can run in a test: examples/shd.py on a tiny generated SHD file, the
NIR round trip in a short version, examples/conv_digits.py and examples/yinyang.py in their
--quick modes.

digits_online.py and streaming.py take tens of seconds and are run by hand (they write their
figures to out/; `--out docs/img` regenerates the docs' figures); they are not run here.
"""
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHD_EXAMPLE = os.path.join(ROOT, "examples", "shd.py")
CONV_DIGITS_EXAMPLE = os.path.join(ROOT, "examples", "conv_digits.py")
YINYANG_EXAMPLE = os.path.join(ROOT, "examples", "yinyang.py")


def write_tiny_shd(path, n_samples=10, seed=0):
    """An SHD-layout file: each class fires its own band of channels at random times."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        times = f.create_dataset("spikes/times", (n_samples,), dtype=h5py.vlen_dtype(np.float16))
        units = f.create_dataset("spikes/units", (n_samples,), dtype=h5py.vlen_dtype(np.uint16))
        labels = rng.integers(0, 20, n_samples)
        for i, label in enumerate(labels):
            n = rng.integers(20, 60)
            t = np.sort(rng.uniform(0.0, 0.25, n))
            times[i] = t.astype(np.float16)
            units[i] = (35 * label + rng.integers(0, 35, n)).astype(np.uint16)
        f.create_dataset("labels", data=labels.astype(np.uint16))
    return path


def run_example(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, SHD_EXAMPLE, *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)


@pytest.mark.slow
def test_shd_example_trains_on_a_tiny_file(tmp_path):
    path = write_tiny_shd(tmp_path / "shd_train.h5")
    result = run_example("--path", str(path), "--max-samples", "8", "--epochs", "1",
                         "--num-steps", "20", "--dt", "0.0125", "--hidden", "16", "--batch-size", "4")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "7 training and 1 evaluation samples" in result.stdout
    assert "epoch 1: train loss" in result.stdout


def test_shd_example_missing_file_exits_2_with_the_message(tmp_path):
    missing = tmp_path / "shd_train.h5"
    result = run_example("--path", str(missing), "--max-samples", "8", "--epochs", "1")
    assert result.returncode == 2
    assert "SHD file not found" in result.stderr and str(missing) in result.stderr
    assert "zenkelab.org/datasets" in result.stderr and "shd_test.h5" in result.stderr
    assert "spikes/times" in result.stderr and "labels" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_nir_roundtrip_example_reloads_the_trained_graph(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "nir_roundtrip.py"), "--steps", "2",
                             "--out", str(tmp_path)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reloaded graph gives the same outputs: True" in result.stdout
    assert (tmp_path / "nir_roundtrip.nir").exists() and (tmp_path / "nir_gradients.png").exists()


@pytest.mark.slow
def test_conv_digits_example_quick(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, CONV_DIGITS_EXAMPLE, "--quick", "--out", str(tmp_path)],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "test accuracy" in result.stdout and "trace memory" in result.stdout
    assert "factorised convolution" in result.stdout
    assert (tmp_path / "conv_digits_events.png").exists() and (tmp_path / "conv_digits_kernels.png").exists()


@pytest.mark.slow
def test_yinyang_example_quick_run_writes_its_figure(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, YINYANG_EXAMPLE, "--quick", "--out", str(tmp_path)],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "forward-propagated gradient vs reverse-mode autodiff" in result.stdout
    assert "epoch 2: train loss" in result.stdout and "test accuracy" in result.stdout
    assert (tmp_path / "yinyang.png").is_file()


@pytest.mark.slow
def test_rewiring_example_keeps_the_synapse_count_and_learns(tmp_path):
    """examples/rewiring.py: online e-prop with deep rewiring; per-edge traces, constant synapse
    count, loss lower after a few epochs than in the first."""
    script = os.path.join(ROOT, "examples", "rewiring.py")
    result = subprocess.run([sys.executable, script, "--epochs", "6", "--out", str(tmp_path)], capture_output=True,
                            text=True, timeout=600, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "per-edge eligibility" in result.stdout
    assert result.stdout.count("synapses 640 (constant)") == 6
    first, last = _first_last(result.stdout)
    assert last < 0.7 * first
    assert (tmp_path / "rewiring.png").exists()


def _first_last(stdout):
    line = next(line for line in stdout.splitlines() if line.startswith("loss:"))
    parts = line.replace(",", "").split()
    return float(parts[3]), float(parts[6])
