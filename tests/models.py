"""Neuron models as users of snnTorch, norse, brainstate and the papers would write them in JAX.

Each builder returns a `Case`: the model, its params and initial state, the input
width, and (for models with neuron-mixing paths) `cut_model`, the same model with
`stop_gradient` on exactly the paths that e-prop drops, written out by hand. Every
matrix has its own shape and every array its own PRNG key.
"""
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

import sparseprop as sp

sg = jax.lax.stop_gradient


class Case(NamedTuple):
    name: str
    model: Callable
    params: dict
    state0: object
    n_in: int
    n_out: int
    spikes: Optional[Callable]   # state -> the spikes it implies (None: not a spiking model)
    ostl_model: Optional[Callable] = None   # BPTT twin of method="ostl"; None: ostl == exact
    eprop_model: Optional[Callable] = None  # BPTT twin of method="eprop"; None: eprop == exact


def _keys(seed, k):
    return jax.random.split(jax.random.PRNGKey(seed), k)


def _fast_sigmoid(x):
    return 1.0 / (1.0 + 10.0 * jnp.abs(x)) ** 2


def fgi_spike(x):
    """Forward gradient injection (Otte 2024): Heaviside forward, fast-sigmoid derivative."""
    m = x * sg(_fast_sigmoid(x))
    return (m - sg(m)) + sg((x > 0).astype(x.dtype))


def with_output_copy(cut_step, step):
    """BPTT twin of a cut method: new state from the cut step, output from the true step."""
    def model(params, state, x):
        new_state, _ = cut_step(params, state, x)
        _, y = step(params, state, x)
        return new_state, y
    return model


def twins(step, recurrent=True):
    """(ostl twin, eprop twin) of a model whose `step(p, s, x, cut)` wraps its mixing operands in `cut`.

    ostl cuts every mixing path into the new state from the traces only (output from the true
    step). eprop cuts the recurrent ones in the whole step; with `recurrent=False` every
    wrapped operand is feed-forward, nothing is cut and eprop is exact (twin None).
    """
    cut_step = lambda p, s, x: step(p, s, x, sg)
    return with_output_copy(cut_step, step), (cut_step if recurrent else None)


# ----------------------------------------------------------------- per-neuron models
def lif_subtract(n=7, m=4, o=3, seed=0):
    """snnTorch Leaky with reset by subtraction, reset path differentiated."""
    k = _keys(seed, 3)

    def model(p, s, x):
        v = p["beta"] * s["v"] + p["w"] @ x - s["z"] * p["threshold"]
        z = sp.spike(v - p["threshold"])
        return {"v": v, "z": z}, p["w_out"] @ z
    params = {"beta": jnp.linspace(0.75, 0.95, n), "threshold": jnp.array(1.0),
              "w": jax.random.normal(k[0], (n, m)) * 1.5, "w_out": jax.random.normal(k[1], (o, n))}
    return Case("lif_subtract", model, params, {"v": jnp.zeros(n), "z": jnp.zeros(n)}, m, o, lambda s: s["z"])


def lif_multiplicative_detached(n=6, m=5, o=2, seed=1):
    """norse-style LIF: v ← v·(1 − sg(z)) reset to zero, detached; current-based synapse."""
    k = _keys(seed, 3)

    def model(p, s, x):
        v, i = s
        i = p["decay_i"] * i + p["w"] @ x
        v = p["decay_v"] * v + (1 - p["decay_v"]) * i
        z = sp.spike(v - 0.5)
        v = v * (1 - sg(z))
        return (v, i), p["w_out"] @ z
    params = {"decay_v": jnp.full(n, 0.85), "decay_i": jnp.linspace(0.6, 0.8, n),
              "w": jax.random.normal(k[0], (n, m)) * 2.0, "w_out": jax.random.normal(k[1], (o, n))}
    return Case("lif_multiplicative_detached", model, params, (jnp.zeros(n), jnp.zeros(n)), m, o,
                lambda s: s[0] == 0.0)


def alif(n=8, m=3, o=2, seed=2):
    """Bellec et al. 2020 adaptive LIF with learnable per-neuron time constants."""
    k = _keys(seed, 3)

    def model(p, s, x):
        v, a, z = s
        alpha = jnp.exp(-1.0 / p["tau_m"])
        rho = jnp.exp(-1.0 / p["tau_a"])
        a = rho * a + z
        thr = 0.6 + 1.8 * a
        v = alpha * v + p["w"] @ x - sg(z) * thr
        z = sp.spike((v - thr) / thr)
        return (v, a, z), p["w_out"] @ z
    params = {"tau_m": jnp.linspace(8.0, 20.0, n), "tau_a": jnp.linspace(30.0, 60.0, n),
              "w": jax.random.normal(k[0], (n, m)) * 2.0, "w_out": jax.random.normal(k[1], (o, n))}
    return Case("alif", model, params, (jnp.zeros(n),) * 3, m, o, lambda s: s[2])


def izhikevich(n=5, m=4, o=2, seed=3):
    """Izhikevich with a where-reset and clip (brainstate style, forward Euler)."""
    k = _keys(seed, 3)

    def model(p, s, x):
        v, u = s
        current = p["w"] @ x
        v = v + 0.5 * (0.04 * v ** 2 + 5.0 * v + 140.0 - u + current)
        v = jnp.clip(v, -90.0, 35.0)
        u = u + p["a"] * (p["b"] * v - u)
        z = sp.spike((v - 30.0) / 10.0)
        v = jnp.where(v >= 30.0, p["c"], v)
        u = jnp.where(z > 0, u + p["d"], u)
        return (v, u), p["w_out"] @ z
    params = {"a": jnp.full(n, 0.02), "b": jnp.linspace(0.18, 0.25, n), "c": jnp.full(n, -65.0),
              "d": jnp.full(n, 8.0), "w": jax.random.uniform(k[0], (n, m)) * 20.0,
              "w_out": jax.random.normal(k[1], (o, n))}
    return Case("izhikevich", model, params, (jnp.full(n, -65.0), jnp.full(n, -13.0)), m, o,
                lambda s: s[0] == -65.0)


def diagonal_lru(n=6, m=3, o=2, seed=4):
    """Diagonal linear recurrent unit with learnable per-unit decay and a nonlinear readout."""
    k = _keys(seed, 3)

    def model(p, h, x):
        lam = jax.nn.sigmoid(p["nu"])
        h = lam * h + p["b"] @ x
        return h, p["c"] @ jnp.tanh(h) + p["d"]
    params = {"nu": jnp.linspace(0.5, 3.0, n), "b": jax.random.normal(k[0], (n, m)),
              "c": jax.random.normal(k[1], (o, n)), "d": jnp.zeros(o)}
    return Case("diagonal_lru", model, params, jnp.zeros(n), m, o, None)


def leaky_readout(n=6, m=4, o=3, seed=5):
    """LIF layer feeding a leaky integrator readout whose own state is the output.

    The readout's state depends on the layer's previous state through `w_out @ z`: a
    feed-forward coupling, so exact mode keeps a dense (readout × w) block.
    """
    k = _keys(seed, 3)

    def step(p, s, x, cut=lambda a: a):
        v, z, out = s
        v = 0.9 * v + p["w"] @ x - z
        z = sp.spike(v - 1.0)
        out = p["kappa"] * out + p["w_out"] @ cut(z) + p["b_out"]
        return (v, z, out), out
    params = {"w": jax.random.normal(k[0], (n, m)) * 2.0, "w_out": jax.random.normal(k[1], (o, n)),
              "kappa": jnp.linspace(0.7, 0.9, o), "b_out": jnp.zeros(o)}
    return Case("leaky_readout", step, params, (jnp.zeros(n), jnp.zeros(n), jnp.zeros(o)), m, o, lambda s: s[1],
                *twins(step, recurrent=False))


def fgi_lif(n=7, m=3, o=2, seed=6):
    """LIF whose spike is written with stop_gradient arithmetic only (forward gradient injection)."""
    k = _keys(seed, 2)

    def model(p, s, x):
        v, z = s
        v = 0.9 * v + p["w"] @ x - z
        z = fgi_spike(v - 1.0)
        return (v, z), p["w_out"] @ z
    params = {"w": jax.random.normal(k[0], (n, m)) * 2.0, "w_out": jax.random.normal(k[1], (o, n))}
    return Case("fgi_lif", model, params, (jnp.zeros(n), jnp.zeros(n)), m, o, lambda s: s[1])


def nested_jit_lif(n=6, m=4, o=2, seed=7):
    """A LIF layer function under its own jax.jit, with a float32→float64 cast inside."""
    k = _keys(seed, 2)

    @jax.jit
    def layer(w, v, z, x):
        v = 0.85 * v + w @ x - z
        return v, sp.spike(v - 1.0)

    def model(p, s, x):
        v, z = layer(p["w"], s[0], s[1], x)
        return (v, z), p["w_out"] @ z.astype(jnp.float32).astype(v.dtype)
    params = {"w": jax.random.normal(k[0], (n, m)) * 2.0, "w_out": jax.random.normal(k[1], (o, n))}
    return Case("nested_jit_lif", model, params, (jnp.zeros(n), jnp.zeros(n)), m, o, lambda s: s[1])


def autodiff_inside(n=5, m=3, o=2, seed=8):
    """A step whose dynamics come from jax.grad of an energy (autodiff inside the step)."""
    k = _keys(seed, 2)

    def energy(v, drive):
        return jnp.sum(0.5 * v ** 2 - drive * v + 0.1 * v ** 4)

    def model(p, v, x):
        v = v - 0.1 * jax.grad(energy)(v, p["w"] @ x)
        return v, p["w_out"] @ jnp.tanh(v)
    params = {"w": jax.random.normal(k[0], (n, m)), "w_out": jax.random.normal(k[1], (o, n))}
    return Case("autodiff_inside", model, params, jnp.zeros(n), m, o, None)


PER_NEURON = [lif_subtract, lif_multiplicative_detached, alif, izhikevich, diagonal_lru, fgi_lif,
              nested_jit_lif, autodiff_inside]


# ----------------------------------------------------------------- mixing models
def recurrent_lif(n=6, m=4, o=2, seed=10):
    """LIF with a recurrent matrix on the previous spikes (V @ z_prev)."""
    k = _keys(seed, 3)

    def step(p, s, x, cut=lambda a: a):
        v, z = s
        v = 0.9 * v + p["w"] @ x + p["v_rec"] @ cut(z) - sg(z)
        z = sp.spike(v - 1.0)
        return (v, z), p["w_out"] @ z
    params = {"w": jax.random.normal(k[0], (n, m)) * 1.5, "v_rec": jax.random.normal(k[1], (n, n)) * 0.5,
              "w_out": jax.random.normal(k[2], (o, n))}
    return Case("recurrent_lif", step, params, (jnp.zeros(n), jnp.zeros(n)), m, o, lambda s: s[1],
                *twins(step))


def recurrent_alif(n=6, m=3, o=2, seed=11):
    """Recurrent ALIF (Bellec et al. 2020, the e-prop paper's LSNN)."""
    k = _keys(seed, 3)

    def step(p, s, x, cut=lambda a: a):
        v, a, z = s
        a = 0.95 * a + z
        thr = 1.0 + 1.5 * a
        v = p["alpha"] * v + p["w"] @ x + p["v_rec"] @ cut(z) - sg(z) * thr
        z = sp.spike((v - thr) / thr)
        return (v, a, z), p["w_out"] @ z
    params = {"alpha": jnp.linspace(0.8, 0.95, n), "w": jax.random.normal(k[0], (n, m)) * 2.0,
              "v_rec": jax.random.normal(k[1], (n, n)) * 0.4, "w_out": jax.random.normal(k[2], (o, n))}
    return Case("recurrent_alif", step, params, (jnp.zeros(n),) * 3, m, o, lambda s: s[2],
                *twins(step))


def global_inhibition(n=7, m=4, o=2, seed=12):
    """LIF with inhibition by the layer's mean activity and max potential (reductions)."""
    k = _keys(seed, 2)

    def step(p, s, x, cut=lambda a: a):
        v, z = s
        inhibition = p["g"] * jnp.mean(cut(z)) + 0.05 * jnp.max(cut(v))
        v = 0.9 * v + p["w"] @ x - inhibition - sg(z)
        z = sp.spike(v - 1.0)
        return (v, z), p["w_out"] @ z
    params = {"w": jax.random.normal(k[0], (n, m)) * 2.0, "g": jnp.array(0.5),
              "w_out": jax.random.normal(k[1], (o, n))}
    return Case("global_inhibition", step, params, (jnp.zeros(n), jnp.zeros(n)), m, o, lambda s: s[1],
                *twins(step))


def softmax_normalised(n=5, m=3, o=2, seed=13):
    """Rate units normalised across the layer (softmax of the previous state, a layer norm)."""
    k = _keys(seed, 2)

    def step(p, s, x, cut=lambda a: a):
        shifted = jnp.exp(s - jnp.max(cut(s)))
        attention = shifted / jnp.sum(cut(shifted))      # softmax across the layer
        normed = (s - jnp.mean(cut(s))) / jnp.sqrt(jnp.var(cut(s)) + 1e-3)
        new = p["decay"] * s + p["w"] @ x + 0.3 * attention + 0.1 * normed
        return new, p["w_out"] @ jnp.tanh(new)
    params = {"decay": jnp.linspace(0.5, 0.9, n), "w": jax.random.normal(k[0], (n, m)),
              "w_out": jax.random.normal(k[1], (o, n))}
    return Case("softmax_normalised", step, params, jnp.zeros(n), m, o, None,
                *twins(step))


def two_layer(n1=6, n2=4, m=3, o=2, seed=14):
    """Two LIF layers in one step (layer 2 consumes layer 1's spikes of the same step)."""
    k = _keys(seed, 3)

    def step(p, s, x, cut=lambda a: a):
        v1, z1, v2, z2 = s
        v1 = 0.9 * v1 + p["w1"] @ x - sg(z1)
        z1 = sp.spike(v1 - 1.0)
        v2 = 0.85 * v2 + p["w2"] @ cut(z1) - sg(z2)
        z2 = sp.spike(v2 - 1.0)
        return (v1, z1, v2, z2), p["w_out"] @ z2
    params = {"w1": jax.random.normal(k[0], (n1, m)) * 2.0, "w2": jax.random.normal(k[1], (n2, n1)) * 1.5,
              "w_out": jax.random.normal(k[2], (o, n2))}
    return Case("two_layer", step, params, (jnp.zeros(n1), jnp.zeros(n1), jnp.zeros(n2), jnp.zeros(n2)),
                m, o, lambda s: jnp.concatenate([s[1], s[3]]), *twins(step, recurrent=False))


def gru(n=5, m=3, o=2, seed=15):
    """A GRU cell (gates mix the previous hidden state through matrices)."""
    k = _keys(seed, 7)

    def step(p, h, x, cut=lambda a: a):
        r = jax.nn.sigmoid(p["wr"] @ x + p["ur"] @ cut(h) + p["br"])
        u = jax.nn.sigmoid(p["wz"] @ x + p["uz"] @ cut(h))
        cand = jnp.tanh(p["wh"] @ x + p["uh"] @ cut(r * h))
        h = (1 - u) * h + u * cand
        return h, p["wo"] @ h
    shapes = {"wr": (n, m), "ur": (n, n), "br": (n,), "wz": (n, m), "uz": (n, n), "wh": (n, m), "uh": (n, n)}
    params = {name: jax.random.normal(kk, shp) for kk, (name, shp) in zip(k, shapes.items())}
    params["wo"] = jax.random.normal(jax.random.PRNGKey(seed + 100), (o, n))
    return Case("gru", step, params, jnp.zeros(n), m, o, None,
                *twins(step))


def lstm(n=4, m=3, o=2, seed=16):
    """An LSTM cell with (h, c) state."""
    k = _keys(seed, 3)

    def step(p, s, x, cut=lambda a: a):
        h, c = s
        gates = p["wx"] @ x + p["wh"] @ cut(h) + p["b"]
        i, f, g, q = jnp.split(gates, 4)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(q) * jnp.tanh(c)
        return (h, c), p["wo"] @ h
    params = {"wx": jax.random.normal(k[0], (4 * n, m)), "wh": jax.random.normal(k[1], (4 * n, n)) * 0.5,
              "b": jnp.zeros(4 * n), "wo": jax.random.normal(k[2], (o, n))}
    return Case("lstm", step, params, (jnp.zeros(n), jnp.zeros(n)), m, o, None,
                *twins(step))


MIXING = [leaky_readout, recurrent_lif, recurrent_alif, global_inhibition, softmax_normalised, two_layer, gru, lstm]
ALL = PER_NEURON + MIXING


def count_spikes(case: Case, xs) -> int:
    """Spikes over a run of the model on `xs` (for the 'neurons really spike' assertion)."""
    def body(s, x):
        s, _ = case.model(case.params, s, x)
        return s, case.spikes(s)
    return int(jnp.sum(jax.lax.scan(body, case.state0, xs)[1]))


def inputs(case: Case, T=30, seed=99, batch=None):
    """Inputs strong enough to make neurons spike, and targets."""
    k = _keys(seed, 2)
    lead = (T,) if batch is None else (batch, T)
    xs = jax.random.uniform(k[0], lead + (case.n_in,), minval=0.0, maxval=1.5)
    targets = jax.random.normal(k[1], lead + (case.n_out,))
    return xs, targets
