"""method="eprop" is the e-prop of Bellec et al. (2020), checked against a hand-written program.

The reference below is written from the paper's equations ("A solution to the learning
dilemma for recurrent networks of spiking neurons", Nat. Commun. 11:3625, Methods), in
numpy, with no part of sparseprop: eligibility vectors ε^v, ε^a per synapse, the
pseudo-derivative at the step's own potential, eligibility traces e = ψ (ε^v − β ε^a),
κ-filtered traces ē for a leaky readout, and the learning signal W_outᵀ (y − y*)
(or B (y − y*) for random e-prop).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparseprop as sp
from reference import bptt, cosine, max_relative_error, mse

THR, BETA, RHO, DAMP = 1.0, 1.7, 0.96, 0.3
sg = jax.lax.stop_gradient
SPIKE = sp.surrogates.Triangle(scale=DAMP)    # ψ = 0.3 · max(0, 1 − |u|), u = (v − A) / v_th


def network(beta, leaky_readout, feedback=None):
    """Recurrent ALIF (beta > 0) or LIF (beta = 0), reset by subtraction with z detached,
    readout y_t = κ y_{t-1} + W_out z_t + b (κ = 0: plain readout)."""
    def model(p, s, x):
        v, a, z, y = s
        a = RHO * a + z
        threshold = THR + beta * a
        v = p["alpha"] * v + p["w_in"] @ x + p["w_rec"] @ z - sg(z) * THR
        z = SPIKE((v - threshold) / THR)
        readout = p["w_out"] @ z if feedback is None else sp.feedback_matmul(p["w_out"], z, feedback)
        y = (p["kappa"] * y if leaky_readout else 0.0) + readout + p["b_out"]
        return (v, a, z, y), y
    return model


def hand_written_eprop(p, xs, targets, beta, leaky_readout, feedback=None):
    """Bellec et al.'s e-prop, step by step (float64 numpy). Returns the gradient dict."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    n, m = p["w_in"].shape
    k = p["w_out"].shape[0]
    alpha = np.broadcast_to(p["alpha"], (n,))
    kappa = np.broadcast_to(p["kappa"], (k,)) if leaky_readout else np.zeros(k)
    B = p["w_out"] if feedback is None else np.asarray(feedback)
    v, a, z, y = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(k)
    # eligibility vectors (per synapse j,i) for w_in, w_rec, and (per neuron) the leak
    ev = {"w_in": np.zeros((n, m)), "w_rec": np.zeros((n, n)), "alpha": np.zeros(n)}
    ea = {name: np.zeros_like(e) for name, e in ev.items()}
    e_prev = {name: np.zeros_like(e) for name, e in ev.items()}
    ebar = {name: np.zeros((k,) + e.shape) for name, e in ev.items()}      # one per readout unit
    zbar, bbar, dy_dkappa = np.zeros((k, n)), np.zeros(k), np.zeros(k)
    grads = {name: np.zeros_like(val) for name, val in p.items()}
    grads["alpha"], grads["kappa"] = np.zeros(n), np.zeros(k)   # per unit; a shared one sums them
    for x, target in zip(np.asarray(xs), np.asarray(targets)):
        pre = {"w_in": x, "w_rec": z, "alpha": v}          # presynaptic factor of each parameter
        for name in ev:
            ea[name] = RHO * ea[name] + e_prev[name]      # a_t = ρ a_{t-1} + z_{t-1}
            decay = alpha[:, None] if ev[name].ndim == 2 else alpha
            ev[name] = decay * ev[name] + pre[name]       # v_t = α v_{t-1} + W x̂_t
        a = RHO * a + z
        threshold = THR + beta * a
        v = alpha * v + p["w_in"] @ x + p["w_rec"] @ z - z * THR
        u = (v - threshold) / THR
        z = (u > 0).astype(np.float64)
        psi = DAMP / THR * np.maximum(0.0, 1.0 - np.abs(u))         # at this step's own potential
        dy_dkappa = kappa * dy_dkappa + y                   # y_t = κ y_{t-1} + ...: d/dκ
        y = kappa * y + p["w_out"] @ z + p["b_out"]
        err = y - target
        for name in ev:
            shaped = psi[:, None] if ev[name].ndim == 2 else psi
            e = shaped * (ev[name] - beta * ea[name])       # e_t = ψ_t (ε^v_t − β ε^a_t)
            e_prev[name] = e
            kap = kappa.reshape((k,) + (1,) * e.ndim)
            ebar[name] = kap * ebar[name] + e[None]          # κ-filtered, one per readout unit
            signal = (B * err[:, None])                      # (k, n): B[k, j] (y_k − y*_k)
            grads[name] += np.einsum("kj,kj...->j...", signal, ebar[name])
        zbar = kappa[:, None] * zbar + z[None]
        bbar = kappa * bbar + 1.0
        grads["w_out"] += err[:, None] * zbar
        grads["b_out"] += err * bbar
        grads["kappa"] += err * dy_dkappa if leaky_readout else 0.0
    for name in ("alpha", "kappa"):
        if p[name].ndim == 0:
            grads[name] = grads[name].sum()
    return grads


def setup(n=9, m=5, k=3, shared_leak=False, shared_kappa=False, seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), 6)
    w_rec = jax.random.normal(keys[1], (n, n)) * 0.6
    params = {"alpha": jnp.array(0.9) if shared_leak else jnp.linspace(0.82, 0.95, n),
              "w_in": jax.random.normal(keys[0], (n, m)) * 1.4,
              "w_rec": w_rec * (1.0 - jnp.eye(n)),            # no self-connections (as in the paper)
              "w_out": jax.random.normal(keys[2], (k, n)),
              "kappa": jnp.array(0.8) if shared_kappa else jnp.linspace(0.7, 0.9, k), "b_out": 0.1 * jax.random.normal(keys[5], (k,))}
    T = 40
    xs = (jax.random.uniform(keys[3], (T, m)) < 0.35).astype(jnp.float64) * 1.5
    targets = jax.random.normal(keys[4], (T, k))
    state0 = (jnp.zeros(n), jnp.zeros(n), jnp.zeros(n), jnp.zeros(k))
    return params, state0, xs, targets


CASES = {
    "recurrent ALIF + leaky readout, per-neuron leak": dict(beta=BETA, leaky_readout=True, shared_leak=False),
    "recurrent LIF + plain readout, per-neuron leak": dict(beta=0.0, leaky_readout=False, shared_leak=False),
    "recurrent LIF + plain readout, shared leak": dict(beta=0.0, leaky_readout=False, shared_leak=True),
    "recurrent ALIF + leaky readout, shared leak and readout leak": dict(beta=BETA, leaky_readout=True,
                                                                         shared_leak=True, shared_kappa=True),
}


def _spikes(model, params, state0, xs):
    def body(s, x):
        s, _ = model(params, s, x)
        return s, jnp.sum(s[2])
    return float(jnp.sum(jax.lax.scan(body, state0, xs)[1]))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_eprop_equals_hand_written_bellec(name):
    opts = CASES[name]
    params, state0, xs, targets = setup(shared_leak=opts["shared_leak"], shared_kappa=opts.get("shared_kappa", False))
    model = network(opts["beta"], opts["leaky_readout"])
    assert _spikes(model, params, state0, xs) > 20
    learner = sp.online_grad(model, mse, method="eprop")
    _, total = jax.jit(learner.run)(params, learner.init(params, state0, xs[0]), xs, targets)
    reference = hand_written_eprop(params, xs, targets, opts["beta"], opts["leaky_readout"])
    # the tests' mse is Σ_k (y − y*)²; the hand-written program uses E = ½ Σ_k (y − y*)²
    reference = {key: val * 2 for key, val in reference.items()}
    assert max_relative_error(total.grads, reference) <= 1e-9
    # and it is BPTT of the model with the recurrent matrix cut in the whole step
    cut = network_cut(opts["beta"], opts["leaky_readout"])
    _, twin_grads, _ = bptt(cut, mse, params, state0, xs, targets)
    assert max_relative_error(total.grads, twin_grads) <= 1e-9
    _, full, _ = bptt(model, mse, params, state0, xs, targets)
    print(f"{name}: e-prop cosine to BPTT {cosine(total.grads, full):.4f}")


def network_cut(beta, leaky_readout):
    """The stop-gradient twin: the recurrent matrix sees sg(z) in the whole step."""
    def model(p, s, x):
        v, a, z, y = s
        a = RHO * a + z
        threshold = THR + beta * a
        v = p["alpha"] * v + p["w_in"] @ x + p["w_rec"] @ sg(z) - sg(z) * THR
        z = SPIKE((v - threshold) / THR)
        y = (p["kappa"] * y if leaky_readout else 0.0) + p["w_out"] @ z + p["b_out"]
        return (v, a, z, y), y
    return model


@pytest.mark.slow
def test_random_feedback_eprop_equals_hand_written():
    params, state0, xs, targets = setup(seed=3)
    feedback = jax.random.normal(jax.random.PRNGKey(42), params["w_out"].shape)
    model = network(BETA, True, feedback=feedback)
    assert _spikes(model, params, state0, xs) > 20
    learner = sp.online_grad(model, mse, method="eprop")
    _, total = learner.run(params, learner.init(params, state0, xs[0]), xs, targets)
    reference = {key: val * 2 for key, val in
                 hand_written_eprop(params, xs, targets, BETA, True, feedback=feedback).items()}
    assert max_relative_error(total.grads, reference) <= 1e-9
    # the feedback really replaces W_outᵀ: e-prop proper gives another gradient
    proper = hand_written_eprop(params, xs, targets, BETA, True)
    assert max_relative_error(total.grads["w_in"], proper["w_in"] * 2) > 1e-3


def test_shared_readout_leak_keeps_one_filtered_eligibility():
    """With one κ, the readout's traces are W_out · ē (Bellec's κ-filtered eligibility), not one
    block per readout unit: per synapse, ε^v, ε^a and ē, as in the paper; e = ψ (ε^v − β ε^a) is
    recomputed from two per-neuron coefficients (ψ and −ψβ) of each step."""
    n, m, k = 16, 7, 5
    params, state0, xs, _ = setup(n=n, m=m, k=k, shared_kappa=True)
    learner = sp.online_grad(network(BETA, True), mse, method="eprop")
    report = learner.explain(params, state0, xs[0], print_report=False)
    per_synapse = 3 * n * (n + m) * 8
    # leak traces (ε^v, ε^a, e, ē per neuron), w_out's (one κ-filtered z̄), kappa's and b_out's,
    # and the coefficients of e for w_in and w_rec
    per_neuron = 4 * n * 8 + n * 8 + 2 * k * 8 + 2 * 2 * n * 8
    assert report.trace_bytes == per_synapse + per_neuron
    assert any(b.kind == "readout-filtered eligibility" for b in report.blocks)
    # per-unit κ: one filtered eligibility per readout unit, stored as full readout blocks
    per_unit = dict(params, kappa=jnp.linspace(0.7, 0.9, k))
    assert learner.explain(per_unit, state0, xs[0], print_report=False).trace_bytes > report.trace_bytes


def test_feedback_matmul_checks_shapes():
    with pytest.raises(ValueError, match="feedback must have the readout weights' shape"):
        sp.feedback_matmul(jnp.ones((2, 3)), jnp.ones(3), jnp.ones((3, 2)))
