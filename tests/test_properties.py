"""Property test: random per-neuron models built from the covered primitives are exact online."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import sparseprop as sp
from reference import bptt, max_relative_error, mse

sg = jax.lax.stop_gradient

UNARY = {
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "exp": lambda a: jnp.exp(jnp.clip(a, -3.0, 3.0)),
    "log1p_abs": lambda a: jnp.log1p(jnp.abs(a)),
    "sqrt": lambda a: jnp.sqrt(a * a + 1.0),
    "rsqrt": lambda a: jax.lax.rsqrt(a * a + 1.0),
    "square": lambda a: a ** 2,
    "neg": lambda a: -a,
    "sign_mul": lambda a: jnp.sign(a) * a,
    "stop_gradient": sg,
    "spike": lambda a: sp.spike(a - 0.3),
    "where": lambda a: jnp.where(a > 0.2, a, 0.5 * a),
    "clip": lambda a: jnp.clip(a, -0.5, 0.8),
    "pow": lambda a: jnp.power(jnp.abs(a) + 1.0, 1.5),
    "float32_roundtrip": lambda a: a.astype(jnp.float32).astype(a.dtype) * 0 + a,
    "jit": jax.jit(lambda a: 2.0 * a - 1.0),
}
BINARY = {
    "add": jnp.add, "sub": jnp.subtract, "mul": jnp.multiply,
    "max": jnp.maximum, "min": jnp.minimum,
    "div": lambda a, b: a / (1.0 + b * b),
}


def expressions(depth):
    leaf = st.sampled_from(["s0", "s1", "syn", "alpha", "scalar", "x_local"])
    if depth == 0:
        return leaf
    sub = expressions(depth - 1)
    return st.one_of(
        leaf,
        st.tuples(st.sampled_from(sorted(UNARY)), sub),
        st.tuples(st.sampled_from(sorted(BINARY)), sub, sub),
    )


def evaluate(expr, env):
    if isinstance(expr, str):
        return env[expr]
    if len(expr) == 2:
        return UNARY[expr[0]](evaluate(expr[1], env))
    return BINARY[expr[0]](evaluate(expr[1], env), evaluate(expr[2], env))


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(e0=expressions(3), e1=expressions(3), n=st.integers(2, 5), m=st.integers(1, 4),
       seed=st.integers(0, 10_000))
def test_random_per_neuron_models_are_exact(e0, e1, n, m, seed):
    def model(p, s, x):
        env = {"s0": s[0], "s1": s[1], "syn": p["w"] @ x, "alpha": p["alpha"], "scalar": p["c"],
               "x_local": jnp.broadcast_to(x[0], (n,))}
        s0 = p["decay"] * s[0] + 0.5 * jnp.tanh(evaluate(e0, env))
        s1 = 0.7 * s[1] + 0.5 * jnp.tanh(evaluate(e1, env))
        return (s0, s1), p["w_out"] @ (s0 + s1)
    k = jax.random.split(jax.random.PRNGKey(seed), 5)
    params = {"w": jax.random.normal(k[0], (n, m)), "alpha": jax.random.normal(k[1], (n,)),
              "c": jnp.array(0.3), "decay": jnp.linspace(0.5, 0.9, n),
              "w_out": jax.random.normal(k[2], (2, n))}
    state0 = (jnp.zeros(n), jnp.zeros(n))
    xs = jax.random.normal(k[3], (8, m))
    targets = jax.random.normal(k[4], (8, 2))
    learner = sp.online_grad(model, mse)
    _, total = learner.run(params, learner.init(params, state0), xs, targets)
    _, grads, _ = bptt(model, mse, params, state0, xs, targets)
    assert np.isfinite(float(total.loss))
    # drawn expressions may cancel (sigmoid(syn) - sigmoid(syn)): such a leaf's true gradient is 0
    assert max_relative_error(total.grads, grads, floor=1e-6) <= 1e-9
    # per-neuron models get no dense block (the structure was proved, not assumed)
    prog = learner.plan(params, state0, xs[0])
    assert all(not b.spec or any(s is not None for s in b.spec) for b in prog.blocks)


# ------------------------------------------------------------------------------------------
# Models as users of other libraries write them: broadcast parameters, low-precision casts,
# state sliced / padded / split / joined, per-neuron gathers, jax.checkpoint, custom_vjp
# surrogates with residuals, several state leaves of different shapes. Each drawn model is
# exact (vs BPTT) or raises sparseprop's TracerError, and the error only where it must.
DRAWN = {"models": 0, "raised": 0}

LOW_PRECISION = {"float64": None, "bfloat16_matmul": jnp.bfloat16, "float16_matmul": jnp.float16,
                 "bfloat16_roundtrip": jnp.bfloat16, "float32_roundtrip": jnp.float32}


def _surrogate(affine):
    @jax.custom_vjp
    def heaviside(u):
        return (u > 0).astype(u.dtype)

    def fwd(u):
        s = jax.nn.sigmoid(4.0 * u)
        return heaviside(u), (u, s)          # residuals: a tuple

    def bwd(res, g):
        u, s = res
        return (g * 4.0 * s * (1.0 - s) + (0.01 if affine else 0.0) * jnp.ones_like(u),)
    heaviside.defvjp(fwd, bwd)
    return heaviside


def _layout(kind, v, j):
    if kind == "slice":
        return v[:j]
    if kind == "pad":
        return jnp.pad(v, (j, 1))
    if kind == "split":
        return jnp.split(v, [j])[1]
    if kind == "concat":
        return jnp.concatenate([v, v[:j]])
    if kind == "packed_halves":       # a (2n,) vector unpacked by slicing
        both = jnp.concatenate([v, 2.0 * v])
        return both[:v.shape[0]] - 0.5 * both[v.shape[0]:]
    return None


@st.composite
def user_models(draw):
    n = draw(st.integers(2, 5))
    k = draw(st.integers(1, 3))
    return dict(
        n=n, m=draw(st.integers(1, 3)), k=k, j=draw(st.integers(1, n - 1)), D=draw(st.integers(2, 4)),
        leak_v=draw(st.sampled_from([(), (1,), (n,)])),
        leak_c=draw(st.sampled_from([(), (1,), (k,), (1, k), (n, 1), (1, 1), (n, k)])),
        precision=draw(st.sampled_from(list(LOW_PRECISION))),     # float64 first
        layout=draw(st.sampled_from(["none", "slice", "pad", "split", "concat", "packed_halves"])),
        gather=draw(st.sampled_from(["none", "take_along_axis", "arange", "one_hot"])),
        write=draw(st.sampled_from(["shift", "arange_scatter"])),
        checkpoint=draw(st.sampled_from(["none", "step", "compartments"])),
        # the affine rule must raise; draw it less often so most models are checked for exactness
        surrogate=draw(st.sampled_from(["spike", "custom_vjp", "spike", "custom_vjp", "custom_vjp_affine"])),
        seed=draw(st.integers(0, 10_000)))


def _build(c):
    n, m, k, j, D = c["n"], c["m"], c["k"], c["j"], c["D"]
    low = LOW_PRECISION[c["precision"]]
    spike = sp.spike if c["surrogate"] == "spike" else _surrogate(c["surrogate"] == "custom_vjp_affine")
    delays = jnp.arange(n) % D

    def read(buf):
        if c["gather"] == "take_along_axis":
            return jnp.take_along_axis(buf, delays[:, None], axis=1)[:, 0]
        if c["gather"] == "arange":
            return buf[jnp.arange(n), delays]
        return jnp.sum(buf * jax.nn.one_hot(delays, D, dtype=buf.dtype), axis=1)

    def compartments(cs, v, leak):
        return leak * cs + 0.3 * v[:, None]

    def model(p, s, x):
        v = s["v"]
        z = spike(v - 1.0)
        if c["precision"].endswith("matmul"):
            drive = (p["w"].astype(low) @ x.astype(low)).astype(v.dtype)
        else:
            drive = p["w"] @ x
        if c["precision"].endswith("roundtrip"):
            v = v.astype(low).astype(s["v"].dtype)
        v = p["leak_v"] * v + drive - sg(z) + 0.1 * s["c"][:, 0]
        if c["gather"] != "none":
            v = v + 0.5 * read(s["buf"])
        comp = jax.checkpoint(compartments) if c["checkpoint"] == "compartments" else compartments
        new = {"v": v, "c": comp(s["c"], v, p["leak_c"])}
        y = spike(v - 1.0) + 0.1 * new["c"][:, -1]
        if c["layout"] != "none":
            new["aux"] = 0.8 * s["aux"] + _layout(c["layout"], v, j)
            y = y + 0.05 * jnp.sum(new["aux"])
        if c["gather"] != "none":
            if c["write"] == "shift":
                new["buf"] = jnp.concatenate([drive[:, None], 0.9 * s["buf"][:, :-1]], axis=1)
            else:     # each neuron writes its own slot
                new["buf"] = (0.9 * s["buf"]).at[jnp.arange(n), (delays + 1) % D].set(drive)
        return new, y

    key = jax.random.split(jax.random.PRNGKey(c["seed"]), 3)
    size = lambda shape: int(np.prod(shape, dtype=np.int64))   # noqa: E731
    params = {"w": jax.random.normal(key[0], (n, m)) * 2.0,
              "leak_v": jnp.linspace(0.7, 0.9, size(c["leak_v"])).reshape(c["leak_v"]),
              "leak_c": jnp.linspace(0.5, 0.8, size(c["leak_c"])).reshape(c["leak_c"])}
    state0 = {"v": jnp.zeros(n), "c": jnp.zeros((n, k))}
    if c["layout"] != "none":
        state0["aux"] = jnp.zeros(_layout(c["layout"], jnp.zeros(n), j).shape)
    if c["gather"] != "none":
        state0["buf"] = jnp.zeros((n, D))
    T = 8
    xs = jax.random.uniform(key[1], (T, m), maxval=1.5)
    targets = jax.random.uniform(key[2], (T, n))
    return (jax.checkpoint(model) if c["checkpoint"] == "step" else model), params, state0, xs, targets


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(c=user_models())
def test_models_as_users_write_them_are_exact_or_raise_tracer_error(c):
    DRAWN["models"] += 1
    for kind in ("precision", "layout", "gather", "write", "checkpoint", "surrogate", "leak_v", "leak_c"):
        event(f"{kind}={c[kind]}")
    model, params, state0, xs, targets = _build(c)
    learner = sp.online_grad(model, mse)
    try:
        _, total = learner.run(params, learner.init(params, state0), xs, targets)
    except sp.TracerError as e:
        # the only model outside forward mode here: a backward rule affine in the cotangent
        assert c["surrogate"] == "custom_vjp_affine", e
        assert "not linear in the cotangent" in str(e)
        DRAWN["raised"] += 1
        event("raised TracerError")
        return
    event("exact vs BPTT")
    assert c["surrogate"] != "custom_vjp_affine", "an affine backward rule was transposed silently"
    _, grads, _ = bptt(model, mse, params, state0, xs, targets)
    low = LOW_PRECISION[c["precision"]]
    # low precision: both sides round at every step, at most ~eps each (see test_never_silent)
    tol = 1e-9 if low is None else xs.shape[0] * float(jnp.finfo(low).eps)
    assert max_relative_error(total.grads, grads) <= tol
    assert float(jnp.max(jnp.abs(total.grads["w"]))) > 0
    assert learner.is_exact(params, state0, xs[0])
