"""sparseprop.data: spike encoders and the SHD HDF5 loader (on small files made here)."""
import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparseprop.data import (SHDNotFoundError, batches, bin_events, delta_encode, latency_encode, rate_encode,
                             read_shd)
from sparseprop.data import shd


# ------------------------------------------------------------------ encoders
def test_rate_encode_shape_and_time_axis():
    values = jnp.linspace(0, 1, 12).reshape(3, 4)
    s = rate_encode(jax.random.PRNGKey(0), values, 7)
    assert s.shape == (7, 3, 4) and s.dtype == jnp.float32
    s1 = rate_encode(jax.random.PRNGKey(0), values, 7, time_axis=1)
    assert s1.shape == (3, 7, 4)
    np.testing.assert_array_equal(s1, jnp.moveaxis(s, 0, 1))


def test_rate_encode_rates_match_probabilities():
    values = jnp.array([0.0, 0.1, 0.5, 1.0, 1.7, -0.3])   # the last two are clipped
    s = rate_encode(jax.random.PRNGKey(1), values, 20000, max_prob=0.8)
    assert set(np.unique(np.asarray(s))) <= {0.0, 1.0}
    rate = np.asarray(s.mean(0))
    expected = np.array([0.0, 0.08, 0.4, 0.8, 0.8, 0.0])
    np.testing.assert_allclose(rate, expected, atol=0.015)
    assert rate[0] == 0.0 and rate[-1] == 0.0      # silent inputs never fire


def test_rate_encode_poisson_counts():
    s = rate_encode(jax.random.PRNGKey(2), jnp.array([0.5, 1.0]), 20000, max_prob=2.0, method="poisson")
    counts = np.asarray(s)
    assert counts.max() > 1                       # several events per step are possible
    np.testing.assert_allclose(counts.mean(0), [1.0, 2.0], rtol=0.03)
    np.testing.assert_allclose(counts.var(0), [1.0, 2.0], rtol=0.08)   # Poisson: var == mean


def test_rate_encode_determinism_with_keys():
    values = np.full((5, 8), 0.5)                 # numpy input works too
    a = rate_encode(jax.random.PRNGKey(3), values, 10)
    b = rate_encode(jax.random.PRNGKey(3), values, 10)
    c = rate_encode(jax.random.PRNGKey(4), values, 10)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    jitted = jax.jit(rate_encode, static_argnums=2)(jax.random.PRNGKey(3), values, 10)
    np.testing.assert_array_equal(a, jitted)


def test_rate_encode_rejects_bad_arguments():
    with pytest.raises(ValueError, match="poisson"):
        rate_encode(jax.random.PRNGKey(0), jnp.ones(3), 4, max_prob=1.5)
    with pytest.raises(ValueError, match="unknown rate coding"):
        rate_encode(jax.random.PRNGKey(0), jnp.ones(3), 4, method="gauss")


def test_latency_encode_linear_hand_checked():
    s = np.asarray(latency_encode(jnp.array([1.0, 0.5, 0.25, 0.0]), 5))
    assert s.shape == (5, 4)
    # 1 -> step 0; 0.5 -> round(0.5 * 4) = 2; 0.25 -> round(0.75 * 4) = 3; 0 never fires.
    assert np.argwhere(s).tolist() == [[0, 0], [2, 1], [3, 2]]


def test_latency_encode_log_and_threshold():
    tau = 3.0
    values = jnp.array([1.0, 0.5, 0.2, 0.001])
    s = np.asarray(latency_encode(values, 8, method="log", tau=tau))
    # steps round(3 ln 1) = 0, round(3 ln 2) = 2, round(3 ln 5) = 5; 3 ln 1000 = 20.7 is past the end.
    assert np.argwhere(s).tolist() == [[0, 0], [2, 1], [5, 2]]
    s = np.asarray(latency_encode(values, 8, threshold=0.3))
    assert s[:, 2:].sum() == 0 and s[:, :2].sum() == 2   # at most one spike each, below threshold none
    s = latency_encode(jnp.ones((2, 3)), 4, time_axis=2)
    assert s.shape == (2, 3, 4)


# ------------------------------------------------------------------ SHD
def write_shd(path, samples, labels, times_dtype=np.float32):
    """An HDF5 file in the SHD layout; `samples` is a list of (times, units)."""
    with h5py.File(path, "w") as f:
        g = f.create_group("spikes")
        t = g.create_dataset("times", (len(samples),), dtype=h5py.vlen_dtype(times_dtype))
        u = g.create_dataset("units", (len(samples),), dtype=h5py.vlen_dtype(np.uint16))
        for i, (times, units) in enumerate(samples):
            t[i] = np.asarray(times, times_dtype)
            u[i] = np.asarray(units, np.uint16)
        f.create_dataset("labels", data=np.asarray(labels, np.uint16))
    return path


SAMPLES = [
    ([0.0005, 0.0031, 0.0032, 0.0125], [0, 5, 5, 699]),     # frames 0, 3, 3, 12 at dt = 1 ms
    ([0.0019, 0.0051], [10, 11]),                            # frames 1, 5
    ([], []),                                                 # an empty sample
]


def test_read_shd(tmp_path):
    path = write_shd(tmp_path / "toy.h5", SAMPLES, [3, 19, 0])
    ev = read_shd(path)
    assert ev.num_units == 700
    assert ev.labels.tolist() == [3, 19, 0]
    np.testing.assert_allclose(ev.times[0], SAMPLES[0][0], rtol=1e-6)
    assert ev.units[1].tolist() == [10, 11] and ev.times[2].size == 0
    ev = read_shd(path, max_samples=2)
    assert len(ev.times) == 2 and ev.labels.tolist() == [3, 19]


def test_bin_events_hand_checked():
    times, units = SAMPLES[0]
    frames = bin_events(times, units, dt=0.001, num_steps=14)
    assert frames.shape == (14, 700)
    expected = np.zeros((14, 700), np.float32)
    expected[0, 0] = 1
    expected[3, 5] = 2                            # two events in one frame and channel are counted
    expected[12, 699] = 1
    np.testing.assert_array_equal(frames, expected)
    np.testing.assert_array_equal(bin_events(times, units, dt=0.001, num_steps=14, binary=True),
                                  np.minimum(expected, 1))
    # truncation: the event at 12.5 ms falls outside 10 frames
    assert bin_events(times, units, dt=0.001, num_steps=10).sum() == 3


def test_bin_events_downsample():
    times, units = SAMPLES[0]
    frames = bin_events(times, units, dt=0.002, num_steps=7, downsample=4)
    assert frames.shape == (7, 175)
    # frames floor(t / 2 ms): 0, 1, 1, 6; channels u // 4: 0, 1, 1, 174
    assert np.argwhere(frames).tolist() == [[0, 0], [1, 1], [6, 174]]
    assert frames[1, 1] == 2
    assert bin_events([0.0], [699], dt=0.01, num_steps=1, downsample=3).shape == (1, 234)   # ceil(700 / 3)


def test_batches_padding_labels_and_lengths(tmp_path):
    ev = read_shd(write_shd(tmp_path / "toy.h5", SAMPLES, [3, 19, 0]))
    out = list(batches(ev, 2, dt=0.001))
    assert len(out) == 2
    first, last = out
    # the batch is padded to its longest sample: 13 frames for the event at 12.5 ms
    assert first.inputs.shape == (2, 13, 700) and first.inputs.dtype == np.float32
    assert first.labels.tolist() == [3, 19] and first.lengths.tolist() == [13, 6]
    assert first.valid.tolist() == [True, True]
    assert first.inputs[1, 6:].sum() == 0 and first.inputs[1, 1, 10] == 1 and first.inputs[1, 5, 11] == 1
    np.testing.assert_array_equal(first.inputs[0], bin_events(*SAMPLES[0], dt=0.001, num_steps=13))
    # the last batch is padded to full size with invalid rows
    assert last.inputs.shape == (2, 1, 700) and last.inputs.sum() == 0
    assert last.valid.tolist() == [True, False] and last.labels.tolist() == [0, 0]
    assert last.lengths.tolist() == [0, 0]
    # fixed num_steps: one shape for every batch (for jit), lengths clipped
    fixed = list(batches(ev, 2, dt=0.001, num_steps=8, downsample=10))
    assert {b.inputs.shape for b in fixed} == {(2, 8, 70)}
    assert fixed[0].lengths.tolist() == [8, 6]
    assert len(list(batches(ev, 2, dt=0.001, drop_last=True))) == 1


def test_batches_shuffle_is_a_seeded_permutation(tmp_path):
    samples = [([0.001 * i], [i]) for i in range(10)]
    ev = read_shd(write_shd(tmp_path / "ten.h5", samples, list(range(10))))
    def labels(seed):
        return np.concatenate([b.labels[b.valid] for b in batches(ev, 3, dt=0.01, shuffle=True, seed=seed)])
    a, b, c = labels(0), labels(0), labels(1)
    assert sorted(a.tolist()) == list(range(10))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # each row's frames belong to its label: sample i fires channel i
    for batch in batches(ev, 3, dt=0.01, num_steps=2, shuffle=True):
        for x, y, ok in zip(batch.inputs, batch.labels, batch.valid):
            if ok:
                assert np.argwhere(x).tolist() == [[0, y]]


def test_float16_times_as_in_the_real_files(tmp_path):
    ev = read_shd(write_shd(tmp_path / "h.h5", SAMPLES[:1], [1], times_dtype=np.float16))
    assert ev.times[0].dtype == np.float64
    np.testing.assert_array_equal(np.argwhere(bin_events(ev.times[0], ev.units[0], dt=0.001, num_steps=14)),
                                  [[0, 0], [3, 5], [12, 699]])


def test_missing_file_message(tmp_path):
    with pytest.raises(SHDNotFoundError) as info:
        read_shd(tmp_path / "shd_train.h5")
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "shd_train.h5" in msg and "zenkelab.org/datasets" in msg and "shd_test.h5" in msg
    assert "spikes/times" in msg and "spikes/units" in msg and "labels" in msg


def test_wrong_layout_message(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("labels", data=np.zeros(2, np.uint16))
    with pytest.raises(ValueError, match="lacks spikes/times, spikes/units"):
        read_shd(path)


def test_mismatched_times_and_units(tmp_path):
    path = write_shd(tmp_path / "bad.h5", [([0.1, 0.2], [1])], [0])
    with pytest.raises(ValueError, match="2 spike times but 1 units"):
        read_shd(path)


def test_h5py_is_imported_lazily():
    import subprocess, sys
    code = ("import sys; import sparseprop.data; "
            "assert 'h5py' not in sys.modules, 'sparseprop.data imports h5py at import time'")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert shd._import_h5py() is h5py


def test_bin_events_agrees_with_tonic():
    """Our binning (numpy, no extra dependency) against tonic's published ToFrame, when installed."""
    F = pytest.importorskip("tonic.functional")
    rng = np.random.default_rng(3)
    t = np.sort(rng.uniform(0.0, 0.5, 400))
    u = rng.integers(0, 700, 400)
    events = np.zeros(400, dtype=[("t", float), ("x", int), ("p", int)])
    events["t"], events["x"] = t, u
    frames = F.to_frame_numpy(events, (700, 1, 1), time_window=0.01, start_time=0.0, end_time=0.4)
    ours = bin_events(t, u, dt=0.01, num_steps=40, num_units=700)
    assert ours.sum() > 200
    np.testing.assert_array_equal(ours, frames.reshape(40, 700))


def test_delta_encode_follows_the_signal_by_threshold_steps():
    signal = np.array([0.0, 0.05, 0.12, 0.5, 0.5, 0.5, 0.2, 0.21])
    events = np.asarray(delta_encode(signal, 0.1))
    np.testing.assert_array_equal(events, [0, 0, 1, 1, 1, 1, -1, 0])
    # the reference never ends more than one threshold (plus the pending steps) from the signal
    reference = np.cumsum(events) * 0.1
    assert abs(reference[-1] - signal[-1]) < 0.1 + 1e-9
    two = np.asarray(delta_encode(np.stack([signal, -signal], axis=1), 0.1, off_spikes=False))
    assert two.shape == (8, 2, 2)
    np.testing.assert_array_equal(two[:, 0, 0] - two[:, 1, 0], events)   # ON minus OFF
    np.testing.assert_array_equal(two[:, 0, 1] - two[:, 1, 1], -events)
    batch_major = np.asarray(delta_encode(np.stack([signal, signal]), 0.1, time_axis=1))
    np.testing.assert_array_equal(batch_major[1], events)
    with pytest.raises(ValueError, match="threshold"):
        delta_encode(signal, 0.0)
