"""Convolutional spiking layers: kernels are synapses with weight sharing.

Every exact case equals BPTT (float64, <= 1e-9) on inputs where neurons spike, and its
kernel trace is at the per-neuron minimum (output neurons × C_in/groups × taps) or, when
the post-synaptic Jacobian is a scalar times the identity, the filtered input (the
shape of the convolution's input).
"""
import jax
import jax.numpy as jnp
import jax.scipy.signal as jss
import numpy as np
import pytest
from jax import lax

import sparseprop as sp
from models import with_output_copy
from reference import assert_matches_bptt, bptt, cosine, max_relative_error, mse

sg = lax.stop_gradient
T = 10


def conv(x, K, stride=(1, 1), padding="SAME", dn=None, **kw):
    """One example's convolution: the batch axis added and removed around lax's."""
    return lax.conv_general_dilated(x[None], K, stride, padding, dimension_numbers=dn, **kw)[0]


def lif_layer(conv_fn, leak_key="alpha", detached=True, channel_axis=0):
    """A convolutional LIF layer with a linear readout of its spikes."""
    def model(p, s, x):
        z_prev = sp.spike(s["v"] - 1.0)
        z_prev = sg(z_prev) if detached else z_prev
        v = p[leak_key] * s["v"] + conv_fn(x, p["K"]) - z_prev
        z = sp.spike(v - 1.0)
        return {"v": v}, jnp.tensordot(p["W"], z, axes=z.ndim)
    return model


def _params(key, k_shape, state_shape, n_out=3, gain=1.0, c_axis=0):
    k = jax.random.split(key, 3)
    leak_shape = [1] * len(state_shape)
    leak_shape[c_axis] = state_shape[c_axis]
    return {"K": jax.random.normal(k[0], k_shape) * gain,
            "alpha": jnp.array(0.85),
            "alpha_c": jnp.linspace(0.7, 0.95, state_shape[c_axis]).reshape(leak_shape),
            "W": jax.random.normal(k[1], (n_out,) + tuple(state_shape)) * 0.3}


def _inputs(key, x_shape, n_out=3, rate=0.4):
    k = jax.random.split(key, 2)
    xs = (jax.random.uniform(k[0], (T,) + tuple(x_shape)) < rate).astype(jnp.float64)
    ts = jax.random.normal(k[1], (T, n_out))
    return xs, ts


def _every_layer_spikes(ys, states):
    return min(int(jnp.sum(states[k] > 1.0)) for k in states if k.startswith("v"))


def _check_exact(model, params, s0, xs, ts, method="exact"):
    return assert_matches_bptt(model, mse, params, s0, xs, ts, method=method, spikes=_every_layer_spikes)[0]


def _kernel_block(learner, params, s0, x0, name="K"):
    prog = learner.plan(params, s0, x0)
    return next(b for b in prog.blocks if prog.param_names[b.param] == f"params['{name}']")


def _bytes(shape):
    return int(np.prod(shape)) * 8


# (name, input shape, kernel shape, conv keyword arguments, state shape): different sizes
# along every axis
CASES = [
    ("nchw_same", (2, 7, 6), (5, 2, 3, 3), {}, (5, 7, 6)),
    ("nchw_stride2_valid", (2, 9, 8), (4, 2, 3, 2), {"stride": (2, 2), "padding": "VALID"}, (4, 4, 4)),
    ("nchw_dilated", (3, 9, 7), (4, 3, 2, 3), {"padding": "VALID", "rhs_dilation": (2, 1)}, (4, 7, 5)),
    ("nchw_lhs_dilated", (2, 4, 5), (3, 2, 3, 3), {"padding": ((1, 1), (1, 0)), "lhs_dilation": (2, 1)}, (3, 7, 4)),
    ("nhwc", (7, 6, 2), (3, 3, 2, 5), {"dn": ("NHWC", "HWIO", "NHWC")}, (7, 6, 5)),
    ("grouped", (4, 6, 5), (6, 2, 3, 3), {"feature_group_count": 2}, (6, 6, 5)),
    ("depthwise", (3, 6, 7), (6, 1, 3, 2), {"feature_group_count": 3}, (6, 6, 7)),
]


def _case(name, x_shape, k_shape, kw, s_shape, leak):
    c_axis = len(s_shape) - 1 if kw.get("dn", ("NCHW",))[0] == "NHWC" else 0
    key = jax.random.PRNGKey(abs(hash(name)) % 1000)
    params = _params(key, k_shape, s_shape, gain=1.2, c_axis=c_axis)
    xs, ts = _inputs(jax.random.fold_in(key, 1), x_shape)
    model = lif_layer(lambda x, K: conv(x, K, **kw), leak_key=leak)
    return model, params, {"v": jnp.zeros(s_shape)}, xs, ts, c_axis


@pytest.mark.slow
@pytest.mark.parametrize("name,x_shape,k_shape,kw,s_shape", CASES, ids=[c[0] for c in CASES])
def test_per_channel_leak_conv_is_exact_at_the_per_neuron_minimum(name, x_shape, k_shape, kw, s_shape):
    model, params, s0, xs, ts, c_axis = _case(name, x_shape, k_shape, kw, s_shape, "alpha_c")
    learner = _check_exact(model, params, s0, xs, ts)
    blk = _kernel_block(learner, params, s0, xs[0])
    o_axis = 3 if name == "nhwc" else 0                           # HWIO or OIHW
    per_synapse = int(np.prod(k_shape)) // k_shape[o_axis]    # C_in/groups × taps
    assert not blk.factorised
    assert blk.nbytes == _bytes(s_shape) * per_synapse        # output neurons × (C_in/g · taps)
    assert len(learner.plan(params, s0, xs[0]).synapses) == 1


@pytest.mark.slow
@pytest.mark.parametrize("name,x_shape,k_shape,kw,s_shape", CASES, ids=[c[0] for c in CASES])
def test_shared_leak_conv_is_factorised_as_the_filtered_input(name, x_shape, k_shape, kw, s_shape):
    model, params, s0, xs, ts, _ = _case(name, x_shape, k_shape, kw, s_shape, "alpha")
    learner = _check_exact(model, params, s0, xs, ts)
    blk = _kernel_block(learner, params, s0, xs[0])
    assert blk.factorised and blk.window is not None
    assert blk.shape == (1,) + x_shape and blk.nbytes == _bytes(x_shape)
    report = learner.explain(params, s0, xs[0], print_report=False)
    assert any(b.param == "params['K']" and b.kind.startswith("factorised convolution") for b in report.blocks)


@pytest.mark.slow
def test_kernel_stored_in_another_layout_is_still_a_synapse():
    """The parameter is (C_in, kw, C_out, kh) and transposed to OIHW in the step."""
    model = lif_layer(lambda x, K: conv(x, jnp.transpose(K, (2, 0, 3, 1))), leak_key="alpha_c")
    params = _params(jax.random.PRNGKey(4), (2, 2, 5, 3), (5, 6, 7), gain=1.2)
    xs, ts = _inputs(jax.random.PRNGKey(6), (2, 6, 7))
    s0 = {"v": jnp.zeros((5, 6, 7))}
    learner = _check_exact(model, params, s0, xs, ts)
    prog = learner.plan(params, s0, xs[0])
    assert len(prog.synapses) == 1
    blk = _kernel_block(learner, params, s0, xs[0])
    assert blk.spec == (None, None, 0, None) and blk.shape == (5, 6, 7, 2, 2, 3)


@pytest.mark.slow
def test_differentiated_reset_is_per_neuron_not_factorised():
    name, x_shape, k_shape, kw, s_shape = CASES[0]
    key = jax.random.PRNGKey(5)
    params = _params(key, k_shape, s_shape, gain=1.2)
    xs, ts = _inputs(jax.random.fold_in(key, 1), x_shape)
    model = lif_layer(lambda x, K: conv(x, K, **kw), detached=False)
    s0 = {"v": jnp.zeros(s_shape)}
    learner = _check_exact(model, params, s0, xs, ts)
    blk = _kernel_block(learner, params, s0, xs[0])
    assert not blk.factorised and blk.shape == s_shape + k_shape[1:]


def test_issue_sizes_trace_bytes():
    """C_in=2, C_out=8, 6×6, 3×3 in float64: per-neuron 41 472 B (was 331 776 B), factorised 576 B."""
    model_c = lif_layer(lambda x, K: conv(x, K), leak_key="alpha_c")
    model_s = lif_layer(lambda x, K: conv(x, K), leak_key="alpha")
    params = _params(jax.random.PRNGKey(0), (8, 2, 3, 3), (8, 6, 6))
    s0, x0 = {"v": jnp.zeros((8, 6, 6))}, jnp.zeros((2, 6, 6))
    per_neuron = _kernel_block(sp.online_grad(model_c, mse), params, s0, x0)
    factorised = _kernel_block(sp.online_grad(model_s, mse), params, s0, x0)
    assert per_neuron.nbytes == 8 * 36 * 2 * 9 * 8 == 41472
    assert factorised.nbytes == 2 * 36 * 8 == 576


@pytest.mark.slow
def test_batched_factorised_conv_equals_sum_of_per_example_bptt():
    name, x_shape, k_shape, kw, s_shape = CASES[1]
    model, params, s0, xs, ts, _ = _case(name, x_shape, k_shape, kw, s_shape, "alpha")
    B = 3
    xs_b = jnp.stack([jnp.roll(xs, b, axis=0) for b in range(B)])
    t_b = jnp.stack([ts * (1 + 0.3 * b) for b in range(B)])
    learner = sp.online_grad(model, mse)
    carry = learner.init_batch(params, {"v": jnp.zeros((B,) + s_shape)}, xs_b[:, 0])
    _, total = jax.jit(learner.run_batch)(params, carry, xs_b, t_b)
    ref = [bptt(model, mse, params, s0, xs_b[b], t_b[b]) for b in range(B)]
    ref_grads = jax.tree_util.tree_map(lambda *g: sum(g), *[r[1] for r in ref])
    assert max_relative_error(total.grads, ref_grads) <= 1e-9


@pytest.mark.slow
def test_spike_state_leaf_composes_with_the_factorised_block():
    """A state leaf fed by the factorised one (non-uniformly) expands ū into patches."""
    def model(p, s, x):
        z_prev = sg(sp.spike(s["v"] - 1.0))
        v = p["alpha"] * s["v"] + conv(x, p["K"]) - z_prev
        z = sp.spike(v - 1.0)
        a = 0.8 * s["a"] + z       # a spike-count filter per neuron
        return {"v": v, "a": a}, jnp.tensordot(p["W"], a * z, axes=3)
    params = _params(jax.random.PRNGKey(2), (4, 2, 3, 3), (4, 5, 6), gain=1.3)
    xs, ts = _inputs(jax.random.PRNGKey(3), (2, 5, 6))
    s0 = {"v": jnp.zeros((4, 5, 6)), "a": jnp.zeros((4, 5, 6))}
    learner = _check_exact(model, params, s0, xs, ts)
    prog = learner.plan(params, s0, xs[0])
    kinds = {prog.state_names[b.state]: b.factorised for b in prog.blocks if prog.param_names[b.param] == "params['K']"}
    assert kinds == {"state['v']": True, "state['a']": False}


# ----------------------------------------------------------------- 1-D temporal convolutions
@pytest.mark.slow
def test_temporal_conv_1d_over_an_input_window():
    """x: (C_in, L) per step (a frame of a multichannel signal), a 1-D kernel along L."""
    model = lif_layer(lambda x, K: lax.conv_general_dilated(x[None], K, (2,), "VALID", rhs_dilation=(2,))[0],
                      leak_key="alpha_c")
    params = _params(jax.random.PRNGKey(7), (5, 3, 3), (5, 5), gain=1.5)
    xs, ts = _inputs(jax.random.PRNGKey(8), (3, 14))
    learner = _check_exact(model, params, {"v": jnp.zeros((5, 5))}, xs, ts)
    assert _kernel_block(learner, params, {"v": jnp.zeros((5, 5))}, xs[0]).shape == (5, 5, 3, 3)


def test_temporal_conv_over_a_delay_line_state():
    """A causal FIR synapse over the last L inputs, kept as a (non-learned) delay line."""
    def model(p, s, x):
        line = jnp.concatenate([s["line"][:, 1:], x[:, None]], axis=1)
        z_prev = sg(sp.spike(s["v"] - 1.0))
        v = p["alpha_c"] * s["v"] + lax.conv_general_dilated(line[None], p["K"], (1,), "VALID")[0] - z_prev
        return {"v": v, "line": line}, jnp.tensordot(p["W"], sp.spike(v - 1.0), axes=2)
    params = _params(jax.random.PRNGKey(9), (4, 3, 5), (4, 2), gain=1.5)
    xs, ts = _inputs(jax.random.PRNGKey(10), (3,), rate=0.5)
    s0 = {"v": jnp.zeros((4, 2)), "line": jnp.zeros((3, 6))}
    _check_exact(model, params, s0, xs, ts)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["same", "valid"])
def test_jnp_convolve_kernel(mode):
    """`jnp.convolve` flips its kernel (rev) before lax's convolution: exact through the rules."""
    def model(p, s, x):
        z_prev = sg(sp.spike(s["v"] - 1.0))
        v = p["alpha"] * s["v"] + jnp.convolve(x, p["K"], mode=mode) - z_prev
        return {"v": v}, p["W"] @ sp.spike(v - 1.0)
    n = 11 if mode == "same" else 7
    k = jax.random.split(jax.random.PRNGKey(11), 3)
    params = {"K": jax.random.normal(k[0], (5,)) * 1.5, "alpha": jnp.array(0.8),
              "W": jax.random.normal(k[1], (3, n))}
    xs, ts = _inputs(k[2], (11,), rate=0.5)
    learner = _check_exact(model, params, {"v": jnp.zeros(n)}, xs, ts)
    assert _kernel_block(learner, params, {"v": jnp.zeros(n)}, xs[0]).shape == (n, 5)


def test_scipy_convolve2d_kernel():
    def model(p, s, x):
        z_prev = sg(sp.spike(s["v"] - 1.0))
        v = p["alpha"] * s["v"] + jss.convolve2d(x, p["K"], mode="same") - z_prev
        return {"v": v}, jnp.tensordot(p["W"], sp.spike(v - 1.0), axes=2)
    k = jax.random.split(jax.random.PRNGKey(12), 3)
    params = {"K": jax.random.normal(k[0], (3, 2)) * 1.5, "alpha": jnp.array(0.8),
              "W": jax.random.normal(k[1], (3, 6, 5))}
    xs, ts = _inputs(k[2], (6, 5), rate=0.5)
    learner = _check_exact(model, params, {"v": jnp.zeros((6, 5))}, xs, ts)
    assert _kernel_block(learner, params, {"v": jnp.zeros((6, 5))}, xs[0]).shape == (6, 5, 3, 2)


# ------------------------------------------------------------- pooling and two conv layers
def avg_pool_window(z):
    return lax.reduce_window(z, 0.0, lax.add, (1, 2, 2), (1, 2, 2), "VALID") / 4.0


def avg_pool_reshape(z):
    c, h, w = z.shape
    return z.reshape(c, h // 2, 2, w // 2, 2).mean(axis=(2, 4))


def max_pool_window(z):
    return lax.reduce_window(z, -jnp.inf, lax.max, (1, 2, 2), (1, 2, 2), "VALID")


def two_layer(pool):
    """conv – pool – conv – readout; layer 2 reads layer 1's spikes of the same step."""
    def model(p, s, x):
        z1_prev = sg(sp.spike(s["v1"] - 1.0))
        v1 = p["alpha1"] * s["v1"] + conv(x, p["K1"]) - z1_prev
        z1 = sp.spike(v1 - 1.0)
        z2_prev = sg(sp.spike(s["v2"] - 1.0))
        v2 = p["alpha2"] * s["v2"] + conv(pool(z1), p["K2"], padding="VALID") - z2_prev
        z2 = sp.spike(v2 - 1.0)
        return {"v1": v1, "v2": v2}, jnp.tensordot(p["W"], z2, axes=3)
    return model


def _two_layer_case(seed=21):
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    params = {"K1": jax.random.normal(k[0], (3, 2, 3, 3)) * 1.4, "alpha1": jnp.array(0.8),
              "K2": jax.random.normal(k[1], (4, 3, 2, 2)) * 2.5,
              "alpha2": jnp.linspace(0.7, 0.9, 4).reshape(4, 1, 1),
              "W": jax.random.normal(k[2], (3, 4, 2, 3)) * 0.5}
    xs, ts = _inputs(k[3], (2, 6, 8), rate=0.5)
    return params, {"v1": jnp.zeros((3, 6, 8)), "v2": jnp.zeros((4, 2, 3))}, xs, ts


@pytest.mark.slow
@pytest.mark.parametrize("pool", [avg_pool_window, avg_pool_reshape, max_pool_window],
                         ids=["reduce_window_sum", "reshape_mean", "reduce_window_max"])
def test_conv_pool_conv_readout_is_exact(pool):
    params, s0, xs, ts = _two_layer_case()
    model = two_layer(pool)
    learner = _check_exact(model, params, s0, xs, ts)
    states = jax.lax.scan(lambda s, x: (model(params, s, x)[0],) * 2, s0, xs)[1]
    assert int(jnp.sum(states["v2"] > 1.0)) > 0, "layer 2 does not spike"
    prog = learner.plan(params, s0, xs[0])
    blocks = {(prog.state_names[b.state], prog.param_names[b.param]): b for b in prog.blocks}
    assert blocks[("state['v1']", "params['K1']")].factorised
    assert blocks[("state['v2']", "params['K2']")].shape == (4, 2, 3, 3, 2, 2)   # per neuron
    assert ("state['v1']", "params['K2']") not in blocks


@pytest.mark.parametrize("pool", [avg_pool_window, avg_pool_reshape, max_pool_window],
                         ids=["reduce_window_sum", "reshape_mean", "reduce_window_max"])
def test_pooling_keeps_the_channel_axis_matched(pool):
    """d pool(z)[c, y, x] / d z[c', ...] = 0 for c != c': a per-channel leak trace through a pool
    stays one number per neuron of the next layer (no channel mixing invented)."""
    def model(p, s, x):
        v = p["alpha_c"] * s["v"] + x
        return {"v": v, "u": 0.9 * s["u"] + pool(sp.spike(v - 1.0))}, jnp.sum(s["u"] ** 2)
    params = {"alpha_c": jnp.linspace(0.7, 0.9, 3).reshape(3, 1, 1)}
    s0 = {"v": jnp.zeros((3, 4, 6)), "u": jnp.zeros((3, 2, 3))}
    learner = sp.online_grad(model, lambda y, t: y)
    prog = learner.plan(params, s0, jnp.zeros((3, 4, 6)))
    (u_block,) = [b for b in prog.blocks if prog.state_names[b.state] == "state['u']"]
    assert u_block.spec == (0, None, None) and u_block.shape == (3, 2, 3, 1, 1)


# ------------------------------------------------------------------- recurrent convolutions
def recurrent_conv(stop_lateral, lateral_in_output=False):
    """A lateral (recurrent) convolution of the previous spikes: neuron mixing, local in space."""
    def model(p, s, x):
        z_prev = sp.spike(s["v"] - 1.0)
        lateral = sg(z_prev) if stop_lateral else z_prev
        lateral_current = conv(lateral, p["R"])
        v = p["alpha_c"] * s["v"] + conv(x, p["K"]) + lateral_current - sg(z_prev)
        z = sp.spike(v - 1.0)
        y = jnp.tensordot(p["W"], z, axes=3)
        return {"v": v}, y + 0.1 * jnp.sum(lateral_current) if lateral_in_output else y
    return model


def _recurrent_case():
    k = jax.random.split(jax.random.PRNGKey(31), 4)
    params = {"K": jax.random.normal(k[0], (4, 2, 3, 3)) * 1.2, "R": jax.random.normal(k[1], (4, 4, 3, 3)) * 0.4,
              "alpha_c": jnp.linspace(0.75, 0.9, 4).reshape(4, 1, 1),
              "W": jax.random.normal(k[2], (3, 4, 5, 4)) * 0.4}
    xs, ts = _inputs(k[3], (2, 5, 4), rate=0.5)
    return params, {"v": jnp.zeros((4, 5, 4))}, xs, ts


@pytest.mark.slow
def test_recurrent_conv_exact_keeps_the_mixing_dense():
    params, s0, xs, ts = _recurrent_case()
    learner = _check_exact(recurrent_conv(False), params, s0, xs, ts)
    report = learner.explain(params, s0, xs[0], print_report=False)
    kinds = {(b.param, b.state): b.kind for b in report.blocks}
    assert kinds[("params['R']", "state['v']")] == "dense"


@pytest.mark.slow
@pytest.mark.parametrize("method", ["eprop", "ostl"])
def test_recurrent_conv_cut_methods_equal_their_stop_gradient_twins(method):
    """e-prop: the lateral convolution's previous-state operand under stop_gradient in the
    whole step (state update and output); ostl: in the state update, output from the true step."""
    params, s0, xs, ts = _recurrent_case()
    model = recurrent_conv(False, lateral_in_output=True)
    learner = sp.online_grad(model, mse, method=method)
    _, total = learner.run(params, learner.init(params, s0, xs[0]), xs, ts)
    cut = recurrent_conv(True, lateral_in_output=True)
    twin_model = cut if method == "eprop" else with_output_copy(cut, model)
    _, twin, _ = bptt(twin_model, mse, params, s0, xs, ts)
    _, full, _ = bptt(model, mse, params, s0, xs, ts)
    assert max_relative_error(total.grads, twin) <= 1e-9
    assert max_relative_error(total.grads, full) > 1e-6         # the cut matters here
    report = learner.explain(params, s0, xs[0], print_report=False)
    assert any(d.primitive == "conv_general_dilated" for d in report.dropped)
    blocks = {(b.param, b.state): b for b in report.blocks}
    assert blocks[("params['R']", "state['v']")].shape == (4, 5, 4, 4, 3, 3)   # per neuron after the cut
    print(f"{method} cosine to BPTT:", cosine(total.grads, full))
