"""Neuron equations as users of snnTorch, norse and brainstate write them in JAX.

Each is checked exact online vs jax.grad of a lax.scan (float64), with spiking asserted.
These were written from the libraries' documented equations, not from our catalogue.
"""
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest

import sparseprop as sp
from reference import bptt, max_relative_error, mse

sg = jax.lax.stop_gradient


def snntorch_synaptic(p, s, x):
    """snnTorch Synaptic: syn = α·syn + I; mem = β·mem + syn − reset·θ, reset = H(mem_prev − θ) (detached)."""
    syn, mem = s
    reset = sg(sp.spike(mem - p["threshold"]))
    syn = p["alpha"] * syn + p["w"] @ x
    mem = p["beta"] * mem + syn - reset * p["threshold"]
    spk = sp.spike(mem - p["threshold"])
    return (syn, mem), (spk, p["w_out"] @ spk)


def snntorch_leaky_reset_zero(p, s, x):
    """snnTorch Leaky(reset_mechanism="zero"): mem = β·mem + I, then mem·(1 − spk) with spk detached."""
    mem = p["beta"] * s + p["w"] @ x
    spk = sp.spike(mem - 1.0)
    mem = mem * (1.0 - sg(spk))
    return mem, (spk, p["w_out"] @ spk)


class NorseState(NamedTuple):
    v: jax.Array
    i: jax.Array


def norse_lif(p, s: NorseState, x):
    """norse LIFFeedForwardCell (Euler, dt=1e-3): dv = dt·τ_m⁻¹·((v_leak − v) + i); di = −dt·τ_s⁻¹·i; jump i += W x."""
    dt = 1e-3
    v = s.v + dt * p["tau_mem_inv"] * ((0.0 - s.v) + s.i)
    i = s.i - dt * p["tau_syn_inv"] * s.i
    z = sp.spike(v - 1.0)
    v = (1 - z) * v + z * 0.0                # reset, differentiated as in norse
    i = i + p["w"] @ x
    return NorseState(v, i), (z, p["w_out"] @ z)


class BrainstateLIF(eqx.Module):
    """brainstate-style LIF with a refractory countdown kept in the state as an integer."""
    tau: float = 10.0
    t_ref: int = 2

    def __call__(self, p, s, x):
        v, ref = s
        dv = (-v + p["w"] @ x * 12.0) / self.tau
        v = jnp.where(ref > 0, v, v + dv)
        spk = sp.spike(v - 1.0)
        v = jnp.where(spk > 0, 0.0, v)
        ref = jnp.where(spk > 0, self.t_ref, jnp.maximum(ref - 1, 0))
        return (v, ref), (spk, p["w_out"] @ spk)


def packed_alif(p, s, x):
    """ALIF with (v, a) packed in one (n, 2) array and PyTorch-style x @ W (W is m×n) plus a bias."""
    v, a = s[:, 0], s[:, 1]
    thr = 1.0 + 1.5 * a
    z_prev = sg(sp.spike(v - thr))
    v = 0.9 * v + x @ p["w"] + p["b"] - z_prev * thr
    a = p["rho"] * a + z_prev
    z = sp.spike(v - (1.0 + 1.5 * a))
    return jnp.stack([v, a], axis=1), (z, z @ p["w_out"].T)


def flipped_and_tiled(p, s, x):
    """Layout primitives in the state update: unstack, flip (rev), tile, stack."""
    v, a = jnp.unstack(s, axis=1)
    z_prev = sg(sp.spike(v - 1.0))
    v = 0.9 * v + p["w"] @ x - z_prev
    a = 0.8 * a + 0.01 * jnp.flip(v) + jnp.tile(p["c"], 2)
    z = sp.spike(v - 1.0)
    return jnp.stack([v, a], axis=1), (z, p["w_out"] @ (z + a))


def homeostatic_lif(p, s, x):
    """LIF whose shared threshold adapts to the layer's mean rate (a scalar state fed by a reduction)."""
    v = s["v"]
    theta = s["theta"]
    z_prev = sg(sp.spike(v - theta))
    v = 0.9 * v + p["w"] @ x["spikes"] + 0.1 * x["current"] - z_prev * theta
    z = sp.spike(v - theta)
    theta = 0.95 * theta + 0.05 * (1.0 + jnp.mean(z))
    return {"v": v, "theta": theta}, (z, p["w_out"] @ z)


def weight_normalised(p, s, x):
    """Weight normalisation per row and an einsum synapse: the parameter is transformed before the product."""
    w = p["g"][:, None] * p["w"] / jnp.linalg.norm(p["w"], axis=1, keepdims=True)
    v = 0.9 * s + jnp.einsum("ij,j->i", w, x) - sg(sp.spike(s - 1.0))
    z = sp.spike(v - 1.0)
    return v, (z, p["w_out"] @ z)


def short_term_plasticity(p, s, x):
    """A per-synapse state u[i, j] (short-term facilitation) of the weight's shape."""
    u = 0.9 * s["u"] + 0.1 * x[None, :]
    v = 0.9 * s["v"] + (p["w"] * u) @ x - sg(sp.spike(s["v"] - 1.0))
    z = sp.spike(v - 1.0)
    return {"u": u, "v": v}, (z, p["w_out"] @ z)


def passthrough_leaves(p, s, x):
    """State leaves passed through unchanged, reset to a constant, or copied; one read with a slice."""
    v = 0.9 * s["v"] + s["gain"] * (p["w"] @ x) - sg(sp.spike(s["v"] - 1.0))
    z = sp.spike(v - 1.0)
    new = {"v": v, "gain": s["gain"], "zero": jnp.zeros(3), "copy": v}
    return new, (z, p["w_out"] @ z + s["copy"][:2])


def _case(model, state0, n, m, extra, seed):
    k = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = {"w": jax.random.normal(k[0], (n, m)) * 2.0, "w_out": jax.random.normal(k[1], (2, n))}
    params.update(extra)
    xs = jax.random.uniform(k[2], (40, m), maxval=1.5)
    return model, params, state0, xs


def _packed():
    model, params, state0, xs = _case(packed_alif, jnp.zeros((6, 2)), 6, 4,
                                      {"b": jnp.full(6, 0.1), "rho": jnp.linspace(0.9, 0.97, 6)}, 35)
    params["w"] = params["w"].T        # (m, n), used as x @ W
    return model, params, state0, xs


def _homeostatic():
    model, params, state0, xs = _case(homeostatic_lif, {"v": jnp.zeros(5), "theta": jnp.array(1.0)}, 5, 3, {}, 36)
    xs = {"spikes": xs, "current": jnp.ones((xs.shape[0], 5))}
    return model, params, state0, xs


CASES = {
    "passthrough_leaves": lambda: _case(passthrough_leaves, {"v": jnp.zeros(5), "gain": jnp.full(5, 1.5),
                                                             "zero": jnp.zeros(3), "copy": jnp.zeros(5)},
                                        5, 3, {}, 40),
    "weight_normalised_einsum": lambda: _case(weight_normalised, jnp.zeros(5), 5, 3, {"g": jnp.full(5, 2.0)}, 38),
    "short_term_plasticity": lambda: _case(short_term_plasticity, {"u": jnp.zeros((5, 3)), "v": jnp.zeros(5)},
                                           5, 3, {}, 39),
    "packed_alif_pytorch_layout": _packed,
    "flipped_and_tiled": lambda: _case(flipped_and_tiled, jnp.zeros((6, 2)), 6, 4, {"c": jnp.ones(3)}, 37),
    "homeostatic_threshold": _homeostatic,
    "snntorch_synaptic": lambda: _case(snntorch_synaptic, (jnp.zeros(6), jnp.zeros(6)), 6, 4,
                                       {"alpha": jnp.full(6, 0.8), "beta": jnp.linspace(0.8, 0.95, 6),
                                        "threshold": jnp.array(1.0)}, 31),
    "snntorch_leaky_reset_zero": lambda: _case(snntorch_leaky_reset_zero, jnp.zeros(5), 5, 3,
                                               {"beta": jnp.array(0.9)}, 32),
    "norse_lif": lambda: _case(norse_lif, NorseState(jnp.zeros(7), jnp.zeros(7)), 7, 3,
                               {"tau_mem_inv": jnp.full(7, 100.0), "tau_syn_inv": jnp.linspace(150.0, 250.0, 7)},
                               33),
    "brainstate_lif_refractory": lambda: _case(BrainstateLIF(), (jnp.zeros(6), jnp.zeros(6, jnp.int32)), 6, 4,
                                               {}, 34),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_third_party_style_models_are_exact(name):
    model, params, state0, xs = CASES[name]()

    def loss(y, t):
        return mse(y[1], t)
    T = jax.tree_util.tree_leaves(xs)[0].shape[0]
    targets = jnp.zeros((T, 2))
    learner = sp.online_grad(model, loss)
    _, total = learner.run(params, learner.init(params, state0), xs, targets)
    _, grads, ys = bptt(model, loss, params, state0, xs, targets)
    assert float(jnp.sum(ys[0])) > 0, "no spikes"
    # the forward pass itself must match (an integer state leaf has to advance too)
    assert max_relative_error(total.outputs, ys) <= 1e-12
    assert max_relative_error(total.grads, grads) <= 1e-9
    x0 = jax.tree_util.tree_map(lambda a: a[0], xs)
    report = learner.explain(params, state0, x0, print_report=False)
    # the mean over the layer couples θ to every neuron; flip mixes neuron i with n-1-i
    coupled = name in ("homeostatic_threshold", "flipped_and_tiled")
    assert report.exact and (coupled or all(b.kind != "dense" for b in report.blocks))


class DelayState(NamedTuple):
    v: jax.Array
    buffer: jax.Array      # (n, delay): synaptic delay line per neuron


def dendritic_compartments(p, s, x):
    """(n, k) compartments coupled within each neuron by G (k×k); input into compartment 0."""
    drive = jnp.zeros_like(s).at[:, 0].set(p["w"] @ x)
    v = jnp.einsum("nk,kc->nc", s, p["G"]) + drive
    z = sp.spike(v[:, -1] - 1.0)
    return v - sg(z)[:, None] * v, (z, p["w_out"] @ z)


def synaptic_delay_line(p, s, x):
    """A per-neuron delay line: the current enters the buffer and arrives 4 steps later."""
    buffer = jnp.roll(s.buffer, 1, axis=1).at[:, 0].set(p["w"] @ x)
    v = 0.9 * s.v + buffer[:, -1] - sg(sp.spike(s.v - 1.0))
    z = sp.spike(v - 1.0)
    return DelayState(v, buffer), (z, p["w_out"] @ z)


def input_chosen_compartment(p, s, x):
    """Dynamic indexing: the input decides which compartment receives the current."""
    i = jnp.argmax(x)
    v = s.at[:, i].add(p["w"] @ x) * 0.9
    z = sp.spike(v[:, 0] + v[:, i] - 1.0)
    return v - sg(z)[:, None] * v, (z, p["w_out"] @ z)


def permuted_inhibition(p, s, x):
    """Each neuron inhibited by another one (a fixed permutation: neuron mixing)."""
    v = 0.9 * s + p["w"] @ x - 0.2 * s[jnp.array([1, 2, 3, 4, 0])] - sg(sp.spike(s - 1.0))
    z = sp.spike(v - 1.0)
    return v, (z, p["w_out"] @ z)


INDEXED = {   # name: (model, state0, expected number of e-prop cuts)
    "dendritic_compartments": (dendritic_compartments, jnp.zeros((5, 3)), 0),
    "synaptic_delay_line": (synaptic_delay_line, DelayState(jnp.zeros(5), jnp.zeros((5, 4))), 0),
    "input_chosen_compartment": (input_chosen_compartment, jnp.zeros((5, 3)), 0),
    "permuted_inhibition": (permuted_inhibition, jnp.zeros(5), 1),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(INDEXED))
def test_indexing_and_scatter_keep_per_neuron_structure(name):
    """`.at[].set`, roll, dynamic indices and einsum over compartments stay within a neuron:
    exact with per-neuron traces, and e-prop cuts only a genuine mixing of neurons."""
    model, state0, cuts = INDEXED[name]
    _, params, _, xs = _case(model, state0, 5, 3, {"G": jnp.array([[0.8, 0.1, 0.0], [0.15, 0.7, 0.1],
                                                                  [0.0, 0.3, 0.6]])}, 41)

    def loss(y, t):
        return mse(y[1], t)
    targets = jnp.zeros((xs.shape[0], 2))
    _, grads, ys = bptt(model, loss, params, state0, xs, targets)
    assert float(jnp.sum(ys[0])) > 0, "no spikes"
    exact = sp.online_grad(model, loss)
    _, total = exact.run(params, exact.init(params, state0), xs, targets)
    assert max_relative_error(total.grads, grads) <= 1e-9
    w_block = [b for b in exact.explain(params, state0, xs[0], print_report=False).blocks
               if b.param == "params['w']"]
    assert all(b.kind == "synaptic eligibility" for b in w_block) or cuts
    report = sp.online_grad(model, loss, "eprop").explain(params, state0, xs[0], print_report=False)
    assert len(report.dropped) == cuts
