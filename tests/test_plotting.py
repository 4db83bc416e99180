"""sparseprop.plotting draws with the Agg backend: what is on each Axes, and the error without matplotlib."""
import subprocess
import sys

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sparseprop import plotting  # noqa: E402


def test_spike_raster_marks_every_spike(tmp_path):
    spikes = np.zeros((20, 4))
    spikes[[1, 5, 5, 19], [0, 1, 3, 2]] = 1
    ax = plotting.spike_raster(spikes, dt=1e-3, title="raster")
    offsets = ax.collections[0].get_offsets()
    assert len(offsets) == 4
    np.testing.assert_allclose(sorted(map(tuple, offsets)), sorted([(1e-3, 0), (5e-3, 1), (5e-3, 3), (19e-3, 2)]))
    assert ax.get_xlabel() == "time (s)"
    path = plotting.save(ax, tmp_path / "raster.png")
    assert (tmp_path / "raster.png").stat().st_size > 1000 and path.endswith("raster.png")
    with pytest.raises(ValueError, match=r"\(T, n\)"):
        plotting.spike_raster(np.zeros((2, 3, 4)))


def test_membrane_traces_label_the_threshold():
    v = np.cumsum(np.full((30, 3), 0.1), axis=0) % 1.2
    ax = plotting.membrane_traces(v, threshold=1.0, spikes=v > 1.0)
    labels = ax.get_legend_handles_labels()[1]
    assert "threshold" in labels and labels.count("threshold") == 1
    assert [l for l in labels if l.startswith("neuron")] == ["neuron 0", "neuron 1", "neuron 2"]
    plt.close("all")


def test_gradient_agreement_reports_error_and_cosine():
    bptt = {"w": np.array([[1.0, -2.0], [0.5, 4.0]]), "b": np.array([0.25])}
    online = {"w": bptt["w"] + 4e-3, "b": bptt["b"]}
    ax = plotting.gradient_agreement(online, bptt)
    text = ax.get_legend_handles_labels()[1][1]
    assert "1.0e-03" in text and "cosine" in text
    with pytest.raises(ValueError, match="size"):
        plotting.gradient_agreement({"w": np.ones(3)}, {"w": np.ones(4)})
    plt.close("all")


def test_memory_vs_length_draws_mib():
    ax = plotting.memory_vs_length([100, 1000], {"bptt": [2 ** 20, 10 * 2 ** 20], "online_exact": [2 ** 21, 2 ** 21]})
    ys = {l.get_label(): l.get_ydata() for l in ax.get_lines()}
    np.testing.assert_allclose(ys["bptt"], [1.0, 10.0])
    assert "MiB" in ax.get_ylabel()
    plt.close("all")


def test_without_matplotlib_the_error_names_the_extra():
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from sparseprop import plotting\n"
            "try:\n    plotting.spike_raster([[0, 1]])\n"
            "except ModuleNotFoundError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert 'pip install -e ".[plot]"' in out.stdout, out


@pytest.mark.slow
def test_recording_draws_every_layer_of_a_recorded_sequential(tmp_path):
    import jax
    import sparseprop as sp
    from sparseprop import layers, neurons
    net = neurons.Sequential((layers.Conv2d(1, 2, 3, gain=4.0), layers.Leaky(), layers.Flatten(),
                              neurons.LIF(threshold=0.5)), record=True)
    sizes = ((1, 5, 5), 4)
    params, s0 = net.init_params(jax.random.PRNGKey(0), sizes), net.init_state(sizes)
    xs = jax.random.uniform(jax.random.PRNGKey(1), (25, 1, 5, 5))
    rec = sp.simulate(net, params, s0, xs).outputs
    fig = plotting.recording(rec, thresholds=net.thresholds)
    axes = fig.axes
    assert len(axes) == 4                                  # two layers with potentials, raster + traces each
    assert axes[0].get_title() == "layer 1: output" and axes[2].get_title() == "layer 3: output"
    n_spikes = int(np.sum(np.asarray(rec.spikes[1]) > 0))
    assert n_spikes > 0 and len(axes[0].collections[0].get_offsets()) == n_spikes   # flattened (T, 2·5·5)
    threshold_lines = [l for l in axes[3].get_lines() if l.get_label() == "threshold"]
    assert threshold_lines and threshold_lines[0].get_ydata()[0] == 0.5
    plotting.save(fig, tmp_path / "recording.png")
    with pytest.raises(ValueError, match="record=True"):
        plotting.recording(np.zeros((3, 2)))
