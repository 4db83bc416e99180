"""No axis is assumed to index neurons: the neuron axes of a state leaf are those its synapses
index, and e-prop cuts only operations that mix neurons. Delay taps stored first, stacked
compartments, a batch axis written into the model and complex arithmetic are per-neuron
dynamics, which every method keeps (float64, against jax.grad of a lax.scan)."""
import jax
import jax.numpy as jnp
import pytest

import sparseprop as sp
from reference import assert_matches_bptt, mse

N, M, O, K = 6, 4, 2, 3
sg = jax.lax.stop_gradient


def _keys(seed, k):
    return jax.random.split(jax.random.PRNGKey(seed), k)


def _inputs(T=30, seed=3, shape=(M,)):
    k = _keys(seed, 2)
    return jax.random.uniform(k[0], (T,) + shape, maxval=1.6), jax.random.normal(k[1], (T, O))


def _spiking(ys, states):
    return jnp.sum(states["z"])


def delay_lag_first(cut=lambda z: z, recurrent=True):
    """Synaptic delay line stored lag-first, buf (K+1, n): this step's input enters at the top,
    the oldest tap drives the neuron; a recurrent matrix mixes neurons (axis 1)."""
    def model(p, s, x):
        incoming = p["w"] @ x + (p["w_rec"] @ cut(s["z"]) if recurrent else 0.0)
        buf = jnp.concatenate([incoming[None], s["buf"][:-1]], axis=0)
        v = p["alpha"] * s["v"] + buf[-1] - sg(s["z"])
        z = sp.spike(v - 1.0)
        return {"buf": buf, "v": v, "z": z}, p["w_out"] @ z
    return model


def _delay_case():
    k = _keys(0, 3)
    params = {"alpha": jnp.linspace(0.8, 0.95, N), "w": 2.0 * jax.random.normal(k[0], (N, M)),
              "w_rec": 0.5 * jax.random.normal(k[1], (N, N)), "w_out": jax.random.normal(k[2], (O, N))}
    state = {"buf": jnp.zeros((K + 1, N)), "v": jnp.zeros(N), "z": jnp.zeros(N)}
    return params, state


@pytest.mark.slow
def test_lag_first_delay_line_eprop_cuts_only_the_recurrent_matrix():
    params, state = _delay_case()
    xs, ts = _inputs()
    learner, _, _, _ = assert_matches_bptt(delay_lag_first(), mse, params, state, xs, ts, method="eprop",
                                           twin=delay_lag_first(sg), spikes=_spiking)
    report = learner.explain(params, state, xs[0], print_report=False)
    assert [m.primitive for m in report.mixing if m.kind == "recurrent"] == ["dot_general"]


def test_lag_first_delay_line_without_recurrence_is_not_cut():
    params, state = _delay_case()
    params = {k: v for k, v in params.items() if k != "w_rec"}
    model = delay_lag_first(recurrent=False)
    xs, ts = _inputs()
    learner, _, _, _ = assert_matches_bptt(model, mse, params, state, xs, ts, method="eprop", spikes=_spiking)
    assert learner.is_exact(params, state, xs[0])


def stacked_alif(p, s, x):
    """State of two compartments stacked as (2, n): potential and adaptation."""
    v, a = s["va"][0], s["va"][1]
    a = 0.9 * a + s["z"]
    v = p["alpha"] * v + p["w"] @ x - sg(s["z"])
    z = sp.spike(v - 1.0 - 0.3 * a)
    return {"va": jnp.stack([v, a]), "z": z}, p["w_out"] @ z


def test_stacked_compartments_are_one_neuron():
    k = _keys(1, 2)
    params = {"alpha": jnp.linspace(0.8, 0.95, N), "w": 2.0 * jax.random.normal(k[0], (N, M)),
              "w_out": jax.random.normal(k[1], (O, N))}
    state = {"va": jnp.zeros((2, N)), "z": jnp.zeros(N)}
    xs, ts = _inputs()
    learner, _, _, _ = assert_matches_bptt(stacked_alif, mse, params, state, xs, ts, method="eprop",
                                           spikes=_spiking)
    report = learner.explain(params, state, xs[0], print_report=False)
    assert report.exact and not report.dropped
    assert all(b.kind != "dense" for b in report.blocks)


B = 3


def batch_first_rlif(cut=lambda z: z):
    """snnTorch's way: the batch axis first, mem (B, n), x @ W.T, a recurrent spk @ V.T."""
    def model(p, s, x):
        mem = p["beta"] * s["mem"] + x @ p["W"].T + cut(s["z"]) @ p["V"].T - sg(s["z"])
        z = sp.spike(mem - 1.0)
        return {"mem": mem, "z": z}, jnp.sum(z @ p["W_out"].T, axis=0)
    return model


def test_batch_axis_in_the_model_is_not_a_neuron_axis():
    k = _keys(2, 3)
    params = {"beta": jnp.linspace(0.8, 0.95, N), "W": 2.0 * jax.random.normal(k[0], (N, M)),
              "V": 0.5 * jax.random.normal(k[1], (N, N)), "W_out": jax.random.normal(k[2], (O, N))}
    state = {"mem": jnp.zeros((B, N)), "z": jnp.zeros((B, N))}
    xs, ts = _inputs(shape=(B, M))
    learner, _, _, _ = assert_matches_bptt(batch_first_rlif(), mse, params, state, xs, ts, method="eprop",
                                           twin=batch_first_rlif(sg), spikes=_spiking)
    report = learner.explain(params, state, xs[0], print_report=False)
    assert not report.exact and [m.kind for m in report.mixing].count("recurrent") == 1
    plan = learner.plan(params, state, xs[0])
    assert plan.graph.neuron_axes[0] == frozenset({1})


def complex_lru(p, s, x):
    """A diagonal linear recurrent unit with complex state kept as real and imaginary leaves
    (Zucchet et al.'s online LRU): λ = exp(-exp(ν) + iθ), h ← λ h + B x."""
    lam = jnp.exp(jax.lax.complex(-jnp.exp(p["nu"]), p["theta"]))
    h = jax.lax.complex(s["re"], s["im"])
    h = lam * h + jax.lax.complex(p["B_re"] @ x, p["B_im"] @ x)
    y = p["C"] @ jnp.real(h) + p["D"] @ jnp.imag(h)
    return {"re": jnp.real(h), "im": jnp.imag(h)}, y


@pytest.mark.parametrize("method", ["exact", "eprop"])
def test_complex_diagonal_state_is_per_neuron(method):
    k = _keys(4, 4)
    params = {"nu": jnp.linspace(-1.5, -0.5, N), "theta": jnp.linspace(0.1, 1.0, N),
              "B_re": jax.random.normal(k[0], (N, M)), "B_im": jax.random.normal(k[1], (N, M)),
              "C": jax.random.normal(k[2], (O, N)), "D": jax.random.normal(k[3], (O, N))}
    state = {"re": jnp.zeros(N), "im": jnp.zeros(N)}
    xs, ts = _inputs()
    learner, _, _, _ = assert_matches_bptt(complex_lru, mse, params, state, xs, ts, method=method, spikes=None)
    report = learner.explain(params, state, xs[0], print_report=False)
    assert report.exact and all(b.kind != "dense" for b in report.blocks) and not report.notes
