"""Layers for Sequential (sparseprop.layers): online exact gradients equal BPTT (float64, on
inputs where every spiking layer spikes), the convolution's kernel trace is factorised behind
a shared leak, and a recording gives every layer's spikes and potentials."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparseprop as sp
from sparseprop import layers, neurons
from reference import bptt, max_relative_error, mse

T = 12
IN = (2, 6, 8)     # (C, H, W): a different size along every axis


def conv_net(pool=layers.AvgPool2d(2), leak="shared", n_out=3):
    """conv 2->3 into Leaky neurons, pool, flatten, a LIF readout layer."""
    return neurons.Sequential((layers.Conv2d(2, 3, 3, gain=3.0), layers.Leaky(leak=leak, init_leak=0.8), pool,
                               layers.Flatten(), neurons.LIF(reset="zero"))), (IN, n_out)


def _data(seed, x_shape, n_out, rate=0.5):
    k = jax.random.split(jax.random.PRNGKey(seed), 3)
    xs = (jax.random.uniform(k[0], (T,) + tuple(x_shape)) < rate).astype(jnp.float64)
    return k[2], xs, jax.random.normal(k[1], (T, n_out))


def _exact(net, params, s0, xs, targets, loss=mse):
    learner = sp.online_grad(net, loss)
    _, total = learner.run(params, learner.init(params, s0, xs[0]), xs, targets)
    ref_loss, grads, _ = bptt(net, loss, params, s0, xs, targets)
    assert max_relative_error(total.grads, grads) <= 1e-9
    assert abs(float(total.loss) - float(ref_loss)) <= 1e-9 * abs(float(ref_loss))
    return learner, total


def _spiking_layers_spike(net, params, s0, xs):
    rec = sp.simulate(dataclasses.replace(net, record=True), params, s0, xs).outputs
    for k, layer in enumerate(net.layers):
        if hasattr(layer, "spike"):
            z = np.asarray(rec.spikes[k])
            assert 0 < z.sum() < z.size, f"layer {k} ({type(layer).__name__}) must spike, not always"
    return rec


def _block(learner, params, s0, x0, state, param):
    prog = learner.plan(params, s0, x0)
    return next(b for b in prog.blocks
                if prog.state_names[b.state] == state and prog.param_names[b.param] == param)


@pytest.mark.slow
@pytest.mark.parametrize("pool", [layers.AvgPool2d(2), layers.MaxPool2d(2)], ids=["avg", "max"])
def test_conv_pool_flatten_lif_readout_equals_bptt_with_a_factorised_kernel_trace(pool):
    net, sizes = conv_net(pool)
    key, xs, targets = _data(4, IN, 3)
    params, s0 = net.init_params(key, sizes), net.init_state(sizes)
    _spiking_layers_spike(net, params, s0, xs)
    learner, _ = _exact(net, params, s0, xs, targets)
    kernel = _block(learner, params, s0, xs[0], "state[1]['v']", "params[0]['weight']")
    assert kernel.factorised and kernel.shape == (1,) + IN      # the filtered input, not per neuron × tap
    bias = _block(learner, params, s0, xs[0], "state[1]['v']", "params[0]['bias']")
    assert not bias.factorised


@pytest.mark.slow
def test_per_channel_leak_gives_per_neuron_kernel_traces():
    net, sizes = conv_net(leak="channel")
    key, xs, targets = _data(3, IN, 3)
    params, s0 = net.init_params(key, sizes), net.init_state(sizes)
    assert params[1]["alpha"].shape == (3, 1, 1)
    _spiking_layers_spike(net, params, s0, xs)
    learner, _ = _exact(net, params, s0, xs, targets)
    kernel = _block(learner, params, s0, xs[0], "state[1]['v']", "params[0]['weight']")
    assert not kernel.factorised and kernel.shape == (3, 6, 8, 2, 3, 3)


@pytest.mark.slow
def test_two_conv_layers_linear_and_dropout_equal_bptt():
    net = neurons.Sequential((
        layers.Conv2d(2, 3, 3, gain=3.0), layers.Leaky(init_leak=0.8), layers.Dropout(0.3), layers.AvgPool2d(2),
        layers.Conv2d(3, 4, 2, padding="VALID", gain=4.0), layers.Leaky(leak="neuron"), layers.Flatten(),
        layers.Linear(24, 3, gain=3.0), layers.Leaky(leak="neuron", reset="multiplicative", detach_reset=False)))
    assert [s[1] for s in net.shapes(IN)][4] == (4, 2, 3)
    key, xs, targets = _data(3, IN, 3)
    params = net.init_params(key, IN)
    s0 = net.init_state(IN, key=jax.random.PRNGKey(9))
    mask = np.asarray(s0[2]["mask"])
    assert set(np.unique(mask)) == {0.0, 1.0 / 0.7}               # dropped and rescaled kept units
    _spiking_layers_spike(net, params, s0, xs)
    _exact(net, params, s0, xs, targets)
    # the mask is carried unchanged (one mask per sequence) and no mask means no dropout
    final = sp.simulate(net, params, s0, xs).state
    np.testing.assert_array_equal(np.asarray(final[2]["mask"]), mask)
    assert np.all(np.asarray(net.init_state(IN)[2]["mask"]) == 1.0)


@pytest.mark.slow
def test_conv1d_and_batched_states():
    net = neurons.Sequential((layers.Conv1d(3, 4, 3, stride=2, padding=1, gain=3.0), layers.Leaky(),
                              layers.Flatten(), neurons.LeakyIntegrator()))
    sizes = ((3, 9), 2)
    assert net.shapes(sizes)[0][1] == (4, 5)
    key, xs, targets = _data(4, (3, 9), 2)
    params, s0 = net.init_params(key, sizes), net.init_state(sizes)
    _spiking_layers_spike(net, params, s0, xs)
    _exact(net, params, s0, xs, targets)
    batched = net.init_state(sizes, batch=3)
    assert batched[1]["v"].shape == (3, 4, 5) and batched[3]["v"].shape == (3, 2)


def test_catalogue_only_sizes_are_unchanged():
    net = neurons.Sequential((neurons.LIF(), neurons.DiagonalLRU(n_out=2), neurons.LeakyIntegrator()))
    shapes = net.shapes((3, 5, 4, 6))
    assert [s[1] for s in shapes] == [(5,), (2,), (6,)]           # the LRU's n_out feeds the next layer
    params = net.init_params(jax.random.PRNGKey(0), (3, 5, 4, 6))
    assert params[2]["w_in"].shape == (6, 2)


def test_recording_gives_every_layer_spikes_and_potentials():
    net, sizes = conv_net()
    key, xs, targets = _data(5, IN, 3)
    params, s0 = net.init_params(key, sizes), net.init_state(sizes)
    rec = _spiking_layers_spike(net, params, s0, xs)
    states = sp.simulate(net, params, s0, xs).states
    assert rec.spikes[1].shape == (T,) + (3, 6, 8) and rec.spikes[4].shape == (T, 3)
    assert rec.potentials[0] is None and rec.potentials[2] is None
    for k in (1, 4):     # spikes are the threshold crossings of the recorded potentials
        np.testing.assert_array_equal(np.asarray(rec.potentials[k]), np.asarray(states[k]["v"]))
        np.testing.assert_array_equal(np.asarray(rec.spikes[k]),
                                      (np.asarray(rec.potentials[k]) > net.thresholds[k]).astype(float))
    np.testing.assert_array_equal(np.asarray(rec.output), np.asarray(rec.spikes[-1]))
    # the learner's outputs carry the recording too; a loss reads its output
    recorded = dataclasses.replace(net, record=True)
    learner = sp.online_grad(recorded, lambda y, t: mse(y.output, t))
    _, total = learner.run(params, learner.init(params, s0, xs[0]), xs, targets)
    np.testing.assert_array_equal(np.asarray(total.outputs.spikes[1]), np.asarray(rec.spikes[1]))
    _, plain = _exact(net, params, s0, xs, targets)
    assert max_relative_error(total.grads, plain.grads) <= 1e-12


def test_clear_errors():
    with pytest.raises(ValueError, match="Flatten"):
        neurons.Sequential((layers.Conv2d(2, 3, 3), neurons.LIF())).init_params(jax.random.PRNGKey(0), (IN, 4))
    with pytest.raises(ValueError, match="Flatten"):
        layers.Linear(4, 2).output_shape((2, 2))
    with pytest.raises(ValueError, match="input channels"):
        layers.Conv2d(3, 4, 3).output_shape(IN)
    with pytest.raises(ValueError, match="sizes"):
        neurons.Sequential((layers.Flatten(), neurons.LIF())).init_params(jax.random.PRNGKey(0), (IN,))
    with pytest.raises(ValueError, match="leak"):
        layers.Leaky(leak="layer")
    with pytest.raises(ValueError, match="recurrent"):
        layers.Leaky(recurrent=True)
    with pytest.raises(ValueError, match="rate"):
        layers.Dropout(1.0)
    with pytest.raises(ValueError, match="groups"):
        layers.Conv2d(3, 4, 3, groups=2)
