"""Hand-written batched e-prop (Bellec et al. 2020) in JAX: the peer of sparseprop's `method="eprop"`.

Bellec, Scherr, Subramoney, Hajek, Salaj, Legenstein & Maass, "A solution to the learning
dilemma for recurrent networks of spiking neurons", Nat. Commun. 11:3625 (2020), Methods.

Two networks, each written twice: once as a plain JAX step function (what a sparseprop user
writes, and what BPTT differentiates) and once as a hand-written e-prop program (jit,
`lax.scan` over time, one step per scan iteration, gradients summed over the batch inside
the step):

- `lif`: recurrent LIF, shared scalar leak α, reset by subtraction with the spike detached,
  plain readout y_t = W_out z_t + b. With a shared leak and a detached reset the eligibility
  vector ε^v[j, i] does not depend on the postsynaptic neuron j: the program keeps one
  α-filtered presynaptic trace per example, (B, m) and (B, n), and forms each weight's
  gradient with one (n, B) @ (B, pre) product per step.
- `alif`: recurrent ALIF (per-neuron leak α_j, adaptation a_t = ρ a_{t-1} + z_{t-1}, threshold
  v_th + β a_t), leaky readout y_t = κ y_{t-1} + W_out z_t + b with one shared κ. Per
  synapse: ε^v, ε^a and the κ-filtered eligibility ē (three arrays per weight), stored
  neuron-first (n, pre, B) or batch-first (B, n, pre) (`layout`).

Both use the pseudo-derivative ψ_t = 0.3 · max(0, 1 − |u_t|) / v_th at the step's own
potential u_t = (v_t − threshold_t) / v_th and the learning signal L_t = W_outᵀ ∂E_t/∂y_t,
with E_t = Σ_k (y_t,k − y*_t,k)² per example. Every function returns `(loss, grads)` with
the loss and the gradient of `params = {w_in, w_rec, w_out, b_out}` summed over batch and
time; inputs are time-major: `xs` (T, B, m), `targets` (T, B, k), `states0` batched.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

import sparseprop as sp

THR, BETA, RHO, DAMP = 1.0, 1.7, 0.96, 0.3
SPIKE = sp.surrogates.Triangle(scale=DAMP)     # H(u), derivative 0.3 · max(0, 1 − |u|)
sg = jax.lax.stop_gradient

NETWORKS = ("lif", "alif")
LAYOUTS = ("neuron_first", "neuron_batch", "batch_first")


def mse(y, target):
    """E_t = Σ_k (y_k − y*_k)² for one example."""
    return jnp.sum((y - target) ** 2)


# ---------------------------------------------------------------------------------------
# The networks as plain step functions (for sparseprop and BPTT)
# ---------------------------------------------------------------------------------------

def lif_model(alpha):
    """Recurrent LIF with a shared leak `alpha` (a scalar), detached reset, plain readout.

    State `(v, z)`, each (n,); output y (k,)."""
    def model(p, s, x):
        v, z = s
        v = alpha * v + p["w_in"] @ x + p["w_rec"] @ z - sg(z) * THR
        z = SPIKE((v - THR) / THR)
        return (v, z), p["w_out"] @ z + p["b_out"]
    return model


def alif_model(alpha, kappa):
    """Recurrent ALIF with per-neuron leak `alpha` (n,), detached reset, and a leaky readout
    with shared `kappa` kept in the state. State `(v, a, z, y)`; output y (k,)."""
    def model(p, s, x):
        v, a, z, y = s
        a = RHO * a + z
        v = alpha * v + p["w_in"] @ x + p["w_rec"] @ z - sg(z) * THR
        z = SPIKE((v - THR - BETA * a) / THR)
        y = kappa * y + p["w_out"] @ z + p["b_out"]
        return (v, a, z, y), y
    return model


def make_problem(network: str, n: int, m: int, k: int, batch: int, steps: int, dtype=jnp.float32,
                 seed: int = 0, rate: float = 0.1, w_in_scale: float = 1.5):
    """A random problem whose neurons spike (input Bernoulli spikes at `rate`).

    **Arguments:**

    - `network`: `"lif"` or `"alif"`.
    - `n`, `m`, `k`: hidden neurons, inputs, readout units; `batch`, `steps`: B and T.
    - `dtype`: float dtype of everything.

    **Returns:**

    `dict(model, consts, params, states0, xs, targets)`: `consts` = `{"alpha", "kappa"}` for the
    hand-written programs, `states0` a batched state (all zeros), `xs` (T, B, m) and
    `targets` (T, B, k) time-major.

    **Raises:**

    `ValueError` for an unknown network.
    """
    if network not in NETWORKS:
        raise ValueError(f"network must be one of {NETWORKS}; got {network!r}")
    keys = jax.random.split(jax.random.PRNGKey(seed), 5)
    w_rec = jax.random.normal(keys[1], (n, n), dtype) * (0.6 / jnp.sqrt(n / 9.0))
    params = {"w_in": jax.random.normal(keys[0], (n, m), dtype) * (w_in_scale / jnp.sqrt(m * rate / 1.75)),
              "w_rec": w_rec * (1.0 - jnp.eye(n, dtype=dtype)),        # no self-connections (as in the paper)
              "w_out": jax.random.normal(keys[2], (k, n), dtype) / jnp.sqrt(n / 9.0),
              "b_out": 0.1 * jax.random.normal(keys[3], (k,), dtype)}
    xs = (jax.random.uniform(keys[4], (steps, batch, m)) < rate).astype(dtype) * 1.5
    targets = jax.random.normal(jax.random.fold_in(keys[4], 1), (steps, batch, k), dtype)
    zeros = lambda size: jnp.zeros((batch, size), dtype)
    if network == "lif":
        consts = {"alpha": jnp.asarray(0.9, dtype), "kappa": None}
        model = lif_model(consts["alpha"])
        states0 = (zeros(n), zeros(n))
    else:
        consts = {"alpha": jnp.linspace(0.82, 0.95, n, dtype=dtype), "kappa": jnp.asarray(0.8, dtype)}
        model = alif_model(consts["alpha"], consts["kappa"])
        states0 = (zeros(n), zeros(n), zeros(n), zeros(k))
    return dict(model=model, consts=consts, params=params, states0=states0, xs=xs, targets=targets)


# ---------------------------------------------------------------------------------------
# The three gradient programs compared by the benchmark
# ---------------------------------------------------------------------------------------

def bptt_fn(model):
    """BPTT: `jax.value_and_grad` of a `lax.scan` over time of the batched model (full gradient)."""
    batched = jax.vmap(model, in_axes=(None, 0, 0))

    def total(params, states0, xs, targets):
        def body(s, inp):
            x, t = inp
            s, y = batched(params, s, x)
            return s, jnp.sum(jax.vmap(mse)(y, t))
        return jnp.sum(jax.lax.scan(body, states0, (xs, targets))[1])
    return jax.value_and_grad(total)


def sparseprop_fn(model, method: str = "eprop"):
    """sparseprop's generated program: `online_grad(model, mse, method).run_batch` (time-major)."""
    learner = sp.online_grad(model, mse, method=method)

    def run(params, states0, xs, targets):
        carry = learner.init_batch(params, states0, xs[0])
        _, total = learner.run_batch(params, carry, xs, targets, time_major=True)
        return total.loss, total.grads
    return run


def _spike(v, threshold):
    """Forward spike and pseudo-derivative ψ = ∂z/∂v at the step's own potential."""
    u = (v - threshold) / THR
    return (u > 0).astype(v.dtype), DAMP / THR * jnp.maximum(0.0, 1.0 - jnp.abs(u))


def hand_lif_fn(alpha):
    """Hand-written e-prop for `lif_model(alpha)` (shared scalar `alpha`): factorised traces.

    e_t[j, i] = ψ_t[j] · x̄_t[i] with x̄_t = α x̄_{t-1} + x_t (and z̄ for the recurrent
    weights), so Σ_b L_t[b, j] e_t[b, j, i] = ((L_t ψ_t)ᵀ x̄_t)[j, i]: one matmul per weight.
    Seven matmuls per step: three forward, one learning signal, three weight gradients.
    """
    def run(params, states0, xs, targets):
        w_in, w_rec, w_out, b_out = params["w_in"], params["w_rec"], params["w_out"], params["b_out"]
        v0, z0 = states0

        def body(c, inp):
            v, z, xbar, zbar, g, loss = c
            x, target = inp
            xbar = alpha * xbar + x                     # ε^v of w_in, per presynaptic input
            zbar = alpha * zbar + z                     # ε^v of w_rec (z_{t-1} is presynaptic)
            v = alpha * v + x @ w_in.T + z @ w_rec.T - z * THR
            z, psi = _spike(v, THR)
            y = z @ w_out.T + b_out
            err = 2.0 * (y - target)                    # ∂E_t/∂y_t
            h = (err @ w_out) * psi                     # learning signal L_t times ψ_t
            g = {"w_in": g["w_in"] + h.T @ xbar, "w_rec": g["w_rec"] + h.T @ zbar,
                 "w_out": g["w_out"] + err.T @ z, "b_out": g["b_out"] + jnp.sum(err, 0)}
            return (v, z, xbar, zbar, g, loss + jnp.sum((y - target) ** 2)), None

        zero = jax.tree_util.tree_map(jnp.zeros_like, params)
        c0 = (v0, z0, jnp.zeros_like(xs[0]), jnp.zeros_like(z0), zero, jnp.zeros((), v0.dtype))
        c, _ = jax.lax.scan(body, c0, (xs, targets))
        return c[5], c[4]
    return run


def hand_alif_fn(alpha, kappa, layout: str = "neuron_first", batch_sum: str = "dot"):
    """Hand-written e-prop for `alif_model(alpha, kappa)`: per-synapse ε^v, ε^a, ē.

    Per weight W (w_in with presynaptic x_t, w_rec with z_{t-1}), per example b and synapse (j, i):
      ε^a_t = ρ ε^a_{t-1} + e_{t-1},  ε^v_t = α_j ε^v_{t-1} + pre_t[i],
      e_t = ψ_t[j] (ε^v_t − β ε^a_t),  ē_t = κ ē_{t-1} + e_t,
      ∇W += Σ_b L_t[b, j] ē_t[b, j, i],  L_t = W_outᵀ ∂E_t/∂y_t.
    e_{t-1} is rebuilt from ψ_{t-1} and the previous ε's, so three arrays per weight are carried.

    **Arguments:**

    - `alpha`: (n,) per-neuron leak; `kappa`: the shared readout leak (scalar).
    - `layout`: how the per-synapse arrays are stored: `"neuron_first"` (n, pre, B) (the
      batch sum is a contiguous inner reduction), `"neuron_batch"` (n, B, pre) or
      `"batch_first"` (B, n, pre).
    - `batch_sum`: `"dot"` (an einsum, i.e. a batched dot) or `"reduce"` (multiply and sum).

    **Raises:**

    `ValueError` for an unknown layout or batch_sum.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}; got {layout!r}")
    if batch_sum not in ("dot", "reduce"):
        raise ValueError(f"batch_sum must be 'dot' or 'reduce'; got {batch_sum!r}")
    axes = {"neuron_first": "jib", "neuron_batch": "jbi", "batch_first": "bji"}[layout]

    def put(array, have):  # broadcast a (B, n) ("bj") or (B, pre) ("bi") array into `axes`
        return jnp.expand_dims(jnp.einsum(f"{have}->{''.join(c for c in axes if c in have)}", array),
                               axes.index(next(c for c in "jib" if c not in have)))

    a_ = jnp.expand_dims(alpha, tuple(i for i, c in enumerate(axes) if c != "j"))

    def per_syn(post):
        return put(post, "bj")

    def per_pre(pre):
        return put(pre, "bi")

    def reduce_batch(L, ebar):   # Σ_b L[b, j] ē[b, j, i]
        if batch_sum == "dot":
            return jnp.einsum(f"{axes},bj->ji", ebar, L)
        return jnp.sum(ebar * per_syn(L), axis=axes.index("b"))     # every layout has j before i

    def run(params, states0, xs, targets):
        w_in, w_rec, w_out, b_out = params["w_in"], params["w_rec"], params["w_out"], params["b_out"]
        v0, a0, z0, y0 = states0
        B, n = v0.shape
        m = xs.shape[-1]
        dtype = v0.dtype

        def zeros(pre):
            return jnp.zeros(tuple({"j": n, "i": pre, "b": B}[c] for c in axes), dtype)

        def body(c, inp):
            v, a, z, y, psi_prev, traces, zbar, bbar, g, loss = c
            x, target = inp
            # forward step
            a = RHO * a + z
            v = alpha * v + x @ w_in.T + z @ w_rec.T - z * THR
            z_new, psi = _spike(v, THR + BETA * a)
            y = kappa * y + z_new @ w_out.T + b_out
            err = 2.0 * (y - target)
            L = err @ w_out                                   # learning signal (B, n)
            # eligibility: one fused elementwise pass per weight, then the batch sum
            new_traces, g = dict(traces), dict(g)
            for name, pre in (("w_in", x), ("w_rec", z)):
                ev, ea, eb = traces[name]
                ea = RHO * ea + per_syn(psi_prev) * (ev - BETA * ea)
                ev = a_ * ev + per_pre(pre)
                eb = kappa * eb + per_syn(psi) * (ev - BETA * ea)
                new_traces[name] = (ev, ea, eb)
                g[name] = g[name] + reduce_batch(L, eb)
            # leaky readout: ∂y/∂W_out[k, j] = κ-filtered z_j, ∂y/∂b = κ-filtered 1
            zbar = kappa * zbar + z_new
            bbar = kappa * bbar + 1.0
            g["w_out"] = g["w_out"] + err.T @ zbar
            g["b_out"] = g["b_out"] + bbar * jnp.sum(err, 0)
            loss = loss + jnp.sum((y - target) ** 2)
            return (v, a, z_new, y, psi, new_traces, zbar, bbar, g, loss), None

        traces = {"w_in": (zeros(m),) * 3, "w_rec": (zeros(n),) * 3}
        zero = jax.tree_util.tree_map(jnp.zeros_like, params)
        c0 = (v0, a0, z0, y0, jnp.zeros_like(v0), traces, jnp.zeros_like(z0), jnp.zeros((), dtype),
              zero, jnp.zeros((), dtype))
        c, _ = jax.lax.scan(body, c0, (xs, targets))
        return c[9], c[8]
    return run


def hand_written_fn(network: str, consts: dict, layout: str = "neuron_first", batch_sum: str = "dot"):
    """The hand-written e-prop program of `network` (`consts` from `make_problem`)."""
    if network == "lif":
        return hand_lif_fn(consts["alpha"])
    return hand_alif_fn(consts["alpha"], consts["kappa"], layout, batch_sum)
