"""Exact spike-time gradients (Lee et al. 2022): online (forward propagation) vs BPTT of the
same model vs central finite differences, float64, away from spike-count changes."""
import jax
import jax.numpy as jnp
import pytest
from jax.flatten_util import ravel_pytree

import sparseprop as sp
from sparseprop.spike_time import (NO_SPIKE, first_spike_loss, init_state, spike_time_layer,
                                   spike_time_lif)
from reference import bptt, max_relative_error, mse

FD_STEP = 1e-6
FD_TOL = 1e-6      # central FD in float64: truncation ~h², rounding ~1e-16/h


def rollout(model, params, state0, xs):
    def body(state, x):
        state, y = model(params, state, x)
        return state, y
    return jax.lax.scan(body, state0, xs)[1]


def total_loss(model, loss_fn, params, state0, xs, targets):
    def body(state, inp):
        x, t = inp
        state, y = model(params, state, x)
        return state, (loss_fn(y, t), y["z"] if isinstance(y, dict) and "z" in y else y[1])
    _, (losses, zs) = jax.lax.scan(body, state0, (xs, targets))
    return jnp.sum(losses), zs


def finite_differences(model, loss_fn, params, state0, xs, targets, h=FD_STEP):
    """Central differences of every parameter entry, asserting the spike raster is the same
    at w+h and w-h as at w (so the loss is smooth there)."""
    flat, unravel = ravel_pytree(params)
    f = jax.jit(lambda p: total_loss(model, loss_fn, unravel(p), state0, xs, targets))
    _, raster0 = f(flat)
    eye = jnp.eye(flat.size) * h
    losses, rasters = jax.jit(jax.vmap(f))(jnp.concatenate([flat + eye, flat - eye]))
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(
        lambda a, b: bool(jnp.all(a == b[None])), rasters, raster0)), "a spike appeared or vanished"
    lp, lm = losses[:flat.size], losses[flat.size:]
    return unravel((lp - lm) / (2 * h))


def online_total(model, loss_fn, params, state0, xs, targets):
    learner = sp.online_grad(model, loss_fn, method="exact")
    _, total = jax.jit(learner.run)(params, learner.init(params, state0), xs, targets)
    return total


# --- the crossing time itself ---------------------------------------------------------

def test_crossing_time_and_its_derivative_hand_computed():
    # From rest (v = 0): u = w x, s = θ / (w x). Implicit function theorem on the
    # interpolated V(τ) = τ u: ds/dw = -(∂V/∂w)/(∂V/∂τ) = -(s x)/(w x) = -s/w.
    theta, w, x = 1.0, 0.625, 2.0
    s_of = lambda w: spike_time_layer(jnp.zeros(1), jnp.array([w * x]), 0.9, theta)[2][0]
    s = float(s_of(w))
    assert s == pytest.approx(theta / (w * x), rel=1e-15)          # 0.8
    assert float(jax.grad(s_of)(w)) == pytest.approx(-s / w, rel=1e-13)
    # From v0 = 0.4 with leak 0.5: u = 0.2 + I, s = (θ - 0.4)/(u - 0.4), reset θ·0.5^(1-s).
    v_new, z, s, event = spike_time_layer(jnp.array([0.4]), jnp.array([1.7]), 0.5, theta)
    assert float(z[0]) == 1.0
    assert float(s[0]) == pytest.approx(0.6 / 1.5, rel=1e-15)
    assert float(event[0]) == pytest.approx(0.5 ** 0.6, rel=1e-15)
    assert float(v_new[0]) == pytest.approx(1.9 - 0.5 ** 0.6, rel=1e-15)
    # No spike: s = 0, event = 0, no NaN in the gradient from the guarded division.
    g = jax.grad(lambda c: jnp.sum(spike_time_layer(jnp.array([0.4]), c, 0.5, theta)[2]))(jnp.array([0.4]))
    assert float(g[0]) == 0.0


def test_spikes_are_heaviside_without_surrogate():
    params, state0, xs, _ = _layer_problem()
    g = jax.grad(lambda p: jnp.sum(rollout(spike_time_lif, p, state0, xs)["z"]))(params)
    assert float(jnp.max(jnp.abs(g["w"]))) == 0.0


# --- problems --------------------------------------------------------------------------

def _layer_problem(T=30, m=6, n=4):
    k = jax.random.split(jax.random.PRNGKey(11), 4)
    params = {"w": jax.random.uniform(k[0], (n, m), minval=0.05, maxval=0.45),
              "bias": jax.random.uniform(k[1], (n,), minval=0.0, maxval=0.05)}
    # Spikes of random amplitude: distinct inputs, so no two weight columns tie.
    xs = (jax.random.uniform(k[2], (T, m)) < 0.3) * jax.random.uniform(k[3], (T, m), minval=0.5, maxval=1.5)
    return params, init_state(n), xs.astype(jnp.float64), None


def _first_spike_targets(T, n, times):
    return {"time": jnp.broadcast_to(jnp.asarray(times, jnp.float64), (T, n)),
            "weight": (jnp.arange(T) == T - 1).astype(jnp.float64)}


@pytest.mark.slow
def test_first_spike_time_online_vs_bptt_vs_fd():
    params, state0, xs, _ = _layer_problem()
    T, n = xs.shape[0], params["w"].shape[0]
    targets = _first_spike_targets(T, n, [4.0, 9.5, 15.0, 22.0])
    ys = rollout(spike_time_lif, params, state0, xs)
    assert bool(jnp.all(ys["first"][-1] != NO_SPIKE)), "every neuron must fire"
    assert int(jnp.sum(ys["z"])) > 2 * n                                     # later spikes too
    loss_ref, g_ref, _ = bptt(spike_time_lif, first_spike_loss, params, state0, xs, targets)
    total = online_total(spike_time_lif, first_spike_loss, params, state0, xs, targets)
    assert float(total.loss) == pytest.approx(float(loss_ref), rel=1e-12)
    err_bptt = max_relative_error(total.grads, g_ref)
    g_fd = finite_differences(spike_time_lif, first_spike_loss, params, state0, xs, targets)
    err_fd = max_relative_error(total.grads, g_fd)
    print(f"first-spike loss: online vs BPTT {err_bptt:.2e}, online vs FD {err_fd:.2e}")
    assert float(jnp.max(jnp.abs(g_ref["w"]))) > 0
    assert err_bptt <= 1e-9
    assert err_fd <= FD_TOL


def _all_times_loss(y, target):
    # Every spike's time counts: a smooth function of the weights at a fixed raster.
    return jnp.sum(target * y["time"]) + 0.1 * jnp.sum(y["time"] ** 2) / 100.0


def test_all_spike_times_online_vs_bptt_vs_fd():
    params, state0, xs, _ = _layer_problem(T=20)
    T, n = xs.shape[0], params["w"].shape[0]
    targets = jax.random.normal(jax.random.PRNGKey(5), (T, n))
    ys = rollout(spike_time_lif, params, state0, xs)
    assert int(jnp.sum(ys["z"])) > 2 * n
    _, g_ref, _ = bptt(spike_time_lif, _all_times_loss, params, state0, xs, targets)
    total = online_total(spike_time_lif, _all_times_loss, params, state0, xs, targets)
    err_bptt = max_relative_error(total.grads, g_ref)
    err_fd = max_relative_error(total.grads, finite_differences(
        spike_time_lif, _all_times_loss, params, state0, xs, targets))
    print(f"all-spike-times loss: online vs BPTT {err_bptt:.2e}, online vs FD {err_fd:.2e}")
    assert err_bptt <= 1e-9
    assert err_fd <= FD_TOL


def two_layer(params, state, x, leak=0.85):
    """Layer 2 is driven by layer 1's timed spike events: dt2/dW1 = Σ ∂t2/∂t1 · dt1/dW1."""
    s1, y1 = spike_time_lif({"w": params["w1"]}, state["l1"], x, leak=leak)
    s2, y2 = spike_time_lif({"w": params["w2"]}, state["l2"], y1["event"], leak=leak)
    readout = params["w_out"] @ y2["event"]
    return {"l1": s1, "l2": s2}, {"z": (y1["z"], y2["z"]), "first": y2["first"], "readout": readout}


def _two_layer_problem(T=30, m=5, n1=6, n2=3, k=2):
    key = jax.random.split(jax.random.PRNGKey(21), 5)
    params = {"w1": jax.random.uniform(key[0], (n1, m), minval=0.1, maxval=0.6),
              "w2": jax.random.uniform(key[1], (n2, n1), minval=0.15, maxval=0.6),
              "w_out": jax.random.normal(key[2], (k, n2))}
    xs = (jax.random.uniform(key[3], (T, m)) < 0.35) * jax.random.uniform(key[4], (T, m), minval=0.6, maxval=1.4)
    state0 = {"l1": init_state(n1), "l2": init_state(n2)}
    return params, state0, xs.astype(jnp.float64)


def _two_layer_loss(y, target):
    return first_spike_loss(y, target["first"]) + 0.5 * mse(y["readout"], target["readout"])


@pytest.mark.slow
def test_two_layer_spike_times_online_vs_bptt_vs_fd():
    params, state0, xs = _two_layer_problem()
    T = xs.shape[0]
    n2, k = params["w2"].shape[0], params["w_out"].shape[0]
    targets = {"first": _first_spike_targets(T, n2, [8.0, 14.0, 20.0]),
               "readout": 0.3 * jax.random.normal(jax.random.PRNGKey(8), (T, k))}
    ys = rollout(two_layer, params, state0, xs)
    z1, z2 = ys["z"]
    assert int(jnp.sum(z1)) > 10 and int(jnp.sum(z2)) > 3, (int(jnp.sum(z1)), int(jnp.sum(z2)))
    assert bool(jnp.all(ys["first"][-1] != NO_SPIKE))
    _, g_ref, _ = bptt(two_layer, _two_layer_loss, params, state0, xs, targets)
    # The first layer learns only through spike times (no surrogate anywhere).
    assert float(jnp.max(jnp.abs(g_ref["w1"]))) > 0
    total = online_total(two_layer, _two_layer_loss, params, state0, xs, targets)
    err_bptt = max_relative_error(total.grads, g_ref)
    err_fd = max_relative_error(total.grads, finite_differences(
        two_layer, _two_layer_loss, params, state0, xs, targets))
    print(f"two-layer: online vs BPTT {err_bptt:.2e}, online vs FD {err_fd:.2e}")
    assert err_bptt <= 1e-9
    assert err_fd <= FD_TOL


def test_step_by_step_equals_run():
    params, state0, xs, _ = _layer_problem(T=15)
    n = params["w"].shape[0]
    targets = _first_spike_targets(15, n, [3.0, 5.0, 7.0, 9.0])
    learner = sp.online_grad(spike_time_lif, first_spike_loss)
    total = online_total(spike_time_lif, first_spike_loss, params, state0, xs, targets)
    carry = learner.init(params, state0, xs[0])
    step = jax.jit(learner.step)
    acc = jax.tree_util.tree_map(jnp.zeros_like, params)
    for t in range(15):
        carry, out = step(params, carry, xs[t], jax.tree_util.tree_map(lambda a: a[t], targets))
        acc = jax.tree_util.tree_map(jnp.add, acc, out.grads)
    assert max_relative_error(acc, total.grads) <= 1e-12


@pytest.mark.slow
def test_vmap_batch_equals_batched_bptt():
    params, state0, _, _ = _layer_problem()
    B, T, m = 3, 25, params["w"].shape[1]
    n = params["w"].shape[0]
    keys = jax.random.split(jax.random.PRNGKey(4), 2)
    xs = ((jax.random.uniform(keys[0], (B, T, m)) < 0.3)
          * jax.random.uniform(keys[1], (B, T, m), minval=0.5, maxval=1.5)).astype(jnp.float64)
    targets = _first_spike_targets(T, n, [3.0, 6.0, 9.0, 12.0])
    learner = sp.online_grad(spike_time_lif, first_spike_loss)
    run = lambda x: learner.run(params, learner.init(params, state0), x, targets)[1].grads
    online = jax.vmap(run)(xs)
    ref = jax.vmap(lambda x: bptt(spike_time_lif, first_spike_loss, params, state0, x, targets)[1])(xs)
    assert float(jnp.max(jnp.abs(ref["w"]))) > 0
    assert max_relative_error(online, ref) <= 1e-9
