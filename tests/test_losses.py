"""Losses of spiking outputs (sparseprop.losses): each online gradient equals jax.grad of the
same sequence loss written directly on a lax.scan unroll of the network without the
readout layer (count = Σ_t z_t, first spike time by a cumulative product, max over time),
float64, on inputs where the output neurons spike. And the metrics."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparseprop as sp
from sparseprop import layers, losses, metrics, neurons
from reference import max_relative_error

T, N_IN, N_H, N_CLS = 25, 4, 6, 3
SIZES = (N_IN, N_H, N_CLS)
LABEL = 2


def spiking_net(*readout):
    return neurons.Sequential((neurons.LIF(), neurons.LIF()) + tuple(readout))


def _problem(seed=24):
    net = spiking_net()
    k = jax.random.split(jax.random.PRNGKey(seed), 2)
    params = net.init_params(k[0], SIZES)
    xs = 1.5 * jax.random.uniform(k[1], (T, N_IN))
    return net, params, xs


def _unrolled_outputs(net, params, xs):
    """The network's outputs (T, n) by lax.scan: the reference's forward pass."""
    return jax.lax.scan(lambda s, x: net(params, s, x), net.init_state(SIZES), xs)[1]


def _online(net, loss, params, xs, targets):
    learner = sp.online_grad(net, loss)
    s0 = net.init_state(SIZES)
    _, total = learner.run(params, learner.init(params, s0, xs[0]), xs, targets)
    return total


def _check(readout, loss, targets, sequence_loss, seed=24):
    """Online gradient of `loss` on `net + readout` == jax.grad of `sequence_loss(outputs)`."""
    net, params, xs = _problem(seed)
    outputs = _unrolled_outputs(net, params, xs)
    z = np.asarray(outputs)
    assert np.all(0 < z.sum(axis=0)) and np.all(z.sum(axis=0) < T), "every output neuron must spike, not always"
    ref_loss, ref_grads = jax.value_and_grad(lambda p: sequence_loss(_unrolled_outputs(net, p, xs)))(params)
    readout_net = spiking_net(*readout)
    total = _online(readout_net, loss, params + ({},) * len(readout), xs, targets)
    assert abs(float(total.loss) - float(ref_loss)) <= 1e-10 * abs(float(ref_loss))
    assert max_relative_error(total.grads[:2], ref_grads) <= 1e-9
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree_util.tree_leaves(ref_grads))
    return total


def _ce(logits, label):
    return -jax.nn.log_softmax(logits)[label]


@pytest.mark.slow
def test_rate_cross_entropy_is_a_sum_over_steps():
    labels = jnp.full((T,), LABEL)
    _check((), losses.rate_cross_entropy, labels, lambda zs: jnp.sum(jax.vmap(_ce, (0, None))(zs, LABEL)))


def test_count_cross_entropy_reads_the_count_at_the_last_step():
    total = _check((layers.SpikeCount(),), losses.count_cross_entropy, losses.at_last_step(LABEL, T),
                   lambda zs: _ce(jnp.sum(zs, axis=0), LABEL))
    assert np.all(np.diff(np.asarray(total.outputs), axis=0) >= 0)      # a running count


def test_count_mse_with_snntorch_targets():
    target = losses.count_targets(LABEL, N_CLS, T)
    np.testing.assert_allclose(np.asarray(target), [0.2 * T, 0.2 * T, 0.8 * T])
    _check((layers.SpikeCount(),), losses.count_mse, losses.at_last_step(target, T),
           lambda zs: jnp.sum((jnp.sum(zs, axis=0) - target) ** 2))


def _first_times(zs):
    """Σ_t Π_{τ≤t} (1 − z_τ): the first spike's index, T if silent (the reference formula)."""
    return jnp.sum(jnp.cumprod(1.0 - zs, axis=0), axis=0)


@pytest.mark.slow
def test_first_spike_time_losses():
    net, params, xs = _problem()
    zs = np.asarray(_unrolled_outputs(net, params, xs))
    times = np.asarray(_first_times(jnp.asarray(zs)))
    np.testing.assert_array_equal(times, np.asarray(metrics.first_spike_times(zs)))
    _check((layers.FirstSpikeTime(),), losses.first_spike_cross_entropy, losses.at_last_step(LABEL, T),
           lambda zs: _ce(-_first_times(zs), LABEL))
    target = jnp.array([8.0, 6.0, 2.0])
    _check((layers.FirstSpikeTime(),), losses.first_spike_mse, losses.at_last_step(target, T),
           lambda zs: jnp.sum((_first_times(zs) - target) ** 2))


def readout_net(*readout):
    return neurons.Sequential((neurons.LIF(), neurons.LeakyIntegrator()) + tuple(readout))


def _check_membrane(readout, loss, targets, sequence_loss):
    net = readout_net()
    k = jax.random.split(jax.random.PRNGKey(3), 2)
    params = net.init_params(k[0], SIZES)
    xs = 1.5 * jax.random.uniform(k[1], (T, N_IN))
    s0 = net.init_state(SIZES)
    hidden = sp.simulate(net, params, s0, xs).states[0]["v"]
    assert 0 < int(jnp.sum(hidden > 1.0)) < hidden.size, "the hidden layer must spike"
    vs = lambda p: sp.simulate(net, p, s0, xs).outputs     # noqa: E731
    ref_loss, ref_grads = jax.value_and_grad(lambda p: sequence_loss(vs(p)))(params)
    learner = sp.online_grad(readout_net(*readout), loss)
    p = params + ({},) * len(readout)
    s = readout_net(*readout).init_state(SIZES)
    _, total = learner.run(p, learner.init(p, s, xs[0]), xs, targets)
    assert abs(float(total.loss) - float(ref_loss)) <= 1e-10 * abs(float(ref_loss))
    assert max_relative_error(total.grads[:2], ref_grads) <= 1e-9


def test_membrane_mse_and_cross_entropy_every_step():
    targets = jnp.sin(jnp.arange(T * N_CLS).reshape(T, N_CLS))
    _check_membrane((), losses.membrane_mse, targets, lambda vs: jnp.sum((vs - targets) ** 2))
    _check_membrane((), losses.membrane_cross_entropy, jnp.full((T,), 1),
                    lambda vs: jnp.sum(jax.vmap(_ce, (0, None))(vs, 1)))


def test_max_membrane_cross_entropy():
    _check_membrane((layers.MaxOverTime(),), losses.membrane_cross_entropy, losses.at_last_step(1, T),
                    lambda vs: _ce(jnp.max(vs, axis=0), 1))


def test_on_output_reads_a_recording():
    net, params, xs = _problem()
    labels = jnp.full((T,), LABEL)
    plain = _online(net, losses.rate_cross_entropy, params, xs, labels)
    recorded = neurons.Sequential(net.layers, record=True)
    total = _online(recorded, losses.on_output(losses.rate_cross_entropy), params, xs, labels)
    assert max_relative_error(total.grads, plain.grads) <= 1e-12


def test_accuracy_by_rate_and_by_first_spike():
    spikes = np.zeros((6, 2, 3))                  # (T, B, classes)
    spikes[[0, 2, 3, 4], 0, 1] = 1                # example 0: class 1 fires most, but late ...
    spikes[0, 0, 1] = 0
    spikes[1, 0, 2] = 1                           # ... class 2 fires first
    spikes[[1, 2], 1, 0] = 1                      # example 1: classes 0 and 2 fire first at t=1,
    spikes[1, 1, 2] = 1                           # class 0 fires more: it wins the tie
    labels = np.array([1, 0])
    np.testing.assert_array_equal(np.asarray(metrics.predict_rate(spikes)), [1, 0])
    np.testing.assert_array_equal(np.asarray(metrics.predict_first_spike(spikes)), [2, 0])
    assert float(metrics.accuracy_rate(spikes, labels)) == 1.0
    assert float(metrics.accuracy_first_spike(spikes, labels)) == 0.5
    batch_major = np.moveaxis(spikes, 0, 1)
    assert float(metrics.accuracy_first_spike(batch_major, labels, time_axis=1)) == 0.5
    np.testing.assert_array_equal(np.asarray(metrics.first_spike_times(spikes))[0], [6, 2, 1])

