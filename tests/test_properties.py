"""Property test: random per-neuron models built from the covered primitives are exact online."""
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, given, settings
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
    assert max_relative_error(total.grads, grads) <= 1e-9
    # per-neuron models get no dense block (the structure was proved, not assumed)
    prog = learner.program(params, state0, xs[0])
    assert all(not b.spec or any(s is not None for s in b.spec) for b in prog.blocks)
