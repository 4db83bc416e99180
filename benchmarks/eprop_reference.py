"""Hand-written batched e-prop (Bellec et al. 2020) in JAX: the peer of sparseprop's `method="eprop"`.

Bellec, Scherr, Subramoney, Hajek, Salaj, Legenstein & Maass, "A solution to the learning
dilemma for recurrent networks of spiking neurons", Nat. Commun. 11:3625 (2020), Methods.

Four networks, each written twice: once as a plain JAX step function (what a sparseprop user
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
- `alif_beta`: recurrent ALIF with one shared leak α and a per-neuron adaptation strength β_j,
  leaky readout with shared κ. With α shared, ε^v[j, i] = x̄[i] is factorised per presynaptic
  input again; ε^a and ē stay per synapse (two arrays per weight).
- `lif2`: two LIF layers without recurrence (input -> n -> n -> plain readout), one shared leak,
  detached resets. Nothing recurrent to cut, so e-prop is the exact gradient here: the
  second layer's weights use the α-filtered first-layer spikes (factorised), the first
  layer's weights one per-synapse trace q[j, i] = Σ_s α^{t-s} ψ¹_s[j] x̄_s[i] (the
  sensitivity of layer 2's potentials, up to the factor w_hid[l, j]).

Both use the pseudo-derivative ψ_t = 0.3 · max(0, 1 − |u_t|) / v_th at the step's own
potential u_t = (v_t − threshold_t) / v_th and the learning signal L_t = W_outᵀ ∂E_t/∂y_t,
with E_t = Σ_k (y_t,k − y*_t,k)² per example. Every function returns `(loss, grads)` with
the loss and the gradient of `params = {w_in, w_rec, w_out, b_out}` (`lif2`: `w_hid`, the
layer-1 -> layer-2 weights, in place of `w_rec`) summed over batch and
time; inputs are time-major: `xs` (T, B, m), `targets` (T, B, k), `states0` batched.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

import sparseprop as sp

THR, BETA, RHO, DAMP = 1.0, 1.7, 0.96, 0.3
SPIKE = sp.surrogates.Triangle(scale=DAMP)     # H(u), derivative 0.3 · max(0, 1 − |u|)
sg = jax.lax.stop_gradient

NETWORKS = ("lif", "alif", "alif_beta", "lif2")
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


def alif_model(alpha, kappa, beta=BETA):
    """Recurrent ALIF with leak `alpha` (per neuron (n,) or one shared scalar), adaptation
    strength `beta` (a scalar or per neuron), detached reset, and a leaky readout with shared
    `kappa` kept in the state. State `(v, a, z, y)`; output y (k,)."""
    def model(p, s, x):
        v, a, z, y = s
        a = RHO * a + z
        v = alpha * v + p["w_in"] @ x + p["w_rec"] @ z - sg(z) * THR
        z = SPIKE((v - THR - beta * a) / THR)
        y = kappa * y + p["w_out"] @ z + p["b_out"]
        return (v, a, z, y), y
    return model


def lif2_model(alpha):
    """Two LIF layers without recurrence, shared leak `alpha`, detached resets, plain readout:
    x -> layer 1 (`w_in`) -> layer 2 (`w_hid`, layer 1's spikes of the same step) -> y.
    State `(v1, z1, v2, z2)`, each (n,); output y (k,)."""
    def model(p, s, x):
        v1, z1, v2, z2 = s
        v1 = alpha * v1 + p["w_in"] @ x - sg(z1) * THR
        z1 = SPIKE((v1 - THR) / THR)
        v2 = alpha * v2 + p["w_hid"] @ z1 - sg(z2) * THR
        z2 = SPIKE((v2 - THR) / THR)
        return (v1, z1, v2, z2), p["w_out"] @ z2 + p["b_out"]
    return model


def make_problem(network: str, n: int, m: int, k: int, batch: int, steps: int, dtype=jnp.float32,
                 seed: int = 0, rate: float = 0.1, w_in_scale: float = 1.5):
    """A random problem whose neurons spike (input Bernoulli spikes at `rate`).

    **Arguments:**

    - `network`: one of `NETWORKS`.
    - `n`, `m`, `k`: hidden neurons, inputs, readout units; `batch`, `steps`: B and T.
    - `dtype`: float dtype of everything.

    **Returns:**

    `dict(model, consts, params, states0, xs, targets)`: `consts` = `{"alpha", "kappa"}` (and
    `"beta"` for `alif_beta`) for the hand-written programs, `states0` a batched state (all
    zeros), `xs` (T, B, m) and `targets` (T, B, k) time-major.

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
    elif network == "alif":
        consts = {"alpha": jnp.linspace(0.82, 0.95, n, dtype=dtype), "kappa": jnp.asarray(0.8, dtype)}
        model = alif_model(consts["alpha"], consts["kappa"])
        states0 = (zeros(n), zeros(n), zeros(n), zeros(k))
    elif network == "alif_beta":
        consts = {"alpha": jnp.asarray(0.9, dtype), "beta": jnp.linspace(0.5, 2.0, n, dtype=dtype),
                  "kappa": jnp.asarray(0.8, dtype)}
        model = alif_model(consts["alpha"], consts["kappa"], consts["beta"])
        states0 = (zeros(n), zeros(n), zeros(n), zeros(k))
    else:
        # layer 2 is driven by layer 1's spikes (rate about `rate`) instead of a recurrent matrix
        params["w_hid"] = jax.random.normal(keys[1], (n, n), dtype) * (w_in_scale / jnp.sqrt(n * rate / 1.75))
        del params["w_rec"]
        consts = {"alpha": jnp.asarray(0.9, dtype), "kappa": None}
        model = lif2_model(consts["alpha"])
        states0 = (zeros(n),) * 4
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


class _Layout:
    """Per-synapse arrays (one value per example b, neuron j, presynaptic input i) stored with
    the axes in the order of `layout` (see `LAYOUTS`), and the batch sum of the gradient."""

    def __init__(self, layout: str, batch_sum: str):
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}; got {layout!r}")
        if batch_sum not in ("dot", "reduce"):
            raise ValueError(f"batch_sum must be 'dot' or 'reduce'; got {batch_sum!r}")
        self.axes = {"neuron_first": "jib", "neuron_batch": "jbi", "batch_first": "bji"}[layout]
        self.batch_sum = batch_sum

    def put(self, array, have: str):
        """Broadcast a (B, n) (`have="bj"`) or (B, pre) (`"bi"`) array into the layout."""
        kept = "".join(c for c in self.axes if c in have)
        missing = next(c for c in "jib" if c not in have)
        return jnp.expand_dims(jnp.einsum(f"{have}->{kept}", array), self.axes.index(missing))

    def neuron(self, values):
        """A per-neuron (n,) array (or one shared scalar) broadcast into the layout."""
        values = jnp.asarray(values)
        if values.ndim == 0:
            return values
        return jnp.expand_dims(values, tuple(i for i, c in enumerate(self.axes) if c != "j"))

    def zeros(self, batch: int, n: int, pre: int, dtype):
        return jnp.zeros(tuple({"j": n, "i": pre, "b": batch}[c] for c in self.axes), dtype)

    def reduce_batch(self, L, ebar):
        """Σ_b L[b, j] ē[b, j, i], an (n, pre) gradient."""
        if self.batch_sum == "dot":
            return jnp.einsum(f"{self.axes},bj->ji", ebar, L)
        return jnp.sum(ebar * self.put(L, "bj"), axis=self.axes.index("b"))   # every layout has j before i


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
    lay = _Layout(layout, batch_sum)
    a_ = lay.neuron(alpha)

    def traces(psi_prev, psi, pre, ev, ea, eb):
        ea = RHO * ea + lay.put(psi_prev, "bj") * (ev - BETA * ea)
        ev = a_ * ev + lay.put(pre, "bi")
        eb = kappa * eb + lay.put(psi, "bj") * (ev - BETA * ea)
        return ev, ea, eb
    return _hand_adaptive(lay, alpha, BETA, kappa, traces, per_synapse_ev=True)


def hand_alif_beta_fn(alpha, beta, kappa, layout: str = "neuron_batch", batch_sum: str = "dot"):
    """Hand-written e-prop for `alif_model(alpha, kappa, beta)` with a shared α: factorised ε^v, per-synapse ε^a, ē.

    With one shared α, ε^v_t[j, i] = x̄_t[i] = α x̄_{t-1}[i] + pre_t[i] (one (B, pre) array per
    weight); ε^a_t = ρ ε^a_{t-1} + ψ_{t-1}[j] (x̄_{t-1}[i] − β_j ε^a_{t-1}) and
    ē_t = κ ē_{t-1} + ψ_t[j] (x̄_t[i] − β_j ε^a_t) stay per synapse: two arrays per weight.

    **Arguments:**

    - `alpha`: the shared leak (scalar); `beta`: (n,) adaptation strengths; `kappa`: the
      shared readout leak.
    - `layout`, `batch_sum`: as for `hand_alif_fn`.

    **Raises:**

    `ValueError` for an unknown layout or batch_sum.
    """
    lay = _Layout(layout, batch_sum)
    b_ = lay.neuron(beta)

    def traces(psi_prev, psi, pre, xbar, ea, eb):
        ea = RHO * ea + lay.put(psi_prev, "bj") * (lay.put(xbar, "bi") - b_ * ea)
        xbar = alpha * xbar + pre
        eb = kappa * eb + lay.put(psi, "bj") * (lay.put(xbar, "bi") - b_ * ea)
        return xbar, ea, eb
    return _hand_adaptive(lay, alpha, beta, kappa, traces, per_synapse_ev=False)


def _hand_adaptive(lay: _Layout, alpha, beta, kappa, traces, per_synapse_ev: bool):
    """The e-prop program shared by the two ALIF networks (leaky readout with shared `kappa`).

    `traces(psi_prev, psi, pre, ev, ea, eb) -> (ev, ea, eb)` updates one weight's eligibility
    (ev per synapse, or per presynaptic input when `per_synapse_ev` is False)."""
    def run(params, states0, xs, targets):
        w_in, w_rec, w_out, b_out = params["w_in"], params["w_rec"], params["w_out"], params["b_out"]
        v0, a0, z0, y0 = states0
        B, n = v0.shape
        m = xs.shape[-1]
        dtype = v0.dtype

        def body(c, inp):
            v, a, z, y, psi_prev, trace, zbar, bbar, g, loss = c
            x, target = inp
            # forward step
            a = RHO * a + z
            v = alpha * v + x @ w_in.T + z @ w_rec.T - z * THR
            z_new, psi = _spike(v, THR + beta * a)
            y = kappa * y + z_new @ w_out.T + b_out
            err = 2.0 * (y - target)
            L = err @ w_out                                   # learning signal (B, n)
            # eligibility: one fused elementwise pass per weight, then the batch sum
            new_trace, g = dict(trace), dict(g)
            for name, pre in (("w_in", x), ("w_rec", z)):
                new_trace[name] = traces(psi_prev, psi, pre, *trace[name])
                g[name] = g[name] + lay.reduce_batch(L, new_trace[name][2])
            # leaky readout: ∂y/∂W_out[k, j] = κ-filtered z_j, ∂y/∂b = κ-filtered 1
            zbar = kappa * zbar + z_new
            bbar = kappa * bbar + 1.0
            g["w_out"] = g["w_out"] + err.T @ zbar
            g["b_out"] = g["b_out"] + bbar * jnp.sum(err, 0)
            loss = loss + jnp.sum((y - target) ** 2)
            return (v, a, z_new, y, psi, new_trace, zbar, bbar, g, loss), None

        def zeros(pre):
            ev = lay.zeros(B, n, pre, dtype) if per_synapse_ev else jnp.zeros((B, pre), dtype)
            return ev, lay.zeros(B, n, pre, dtype), lay.zeros(B, n, pre, dtype)
        trace = {"w_in": zeros(m), "w_rec": zeros(n)}
        zero = jax.tree_util.tree_map(jnp.zeros_like, params)
        c0 = (v0, a0, z0, y0, jnp.zeros_like(v0), trace, jnp.zeros_like(z0), jnp.zeros((), dtype),
              zero, jnp.zeros((), dtype))
        c, _ = jax.lax.scan(body, c0, (xs, targets))
        return c[9], c[8]
    return run


def hand_lif2_fn(alpha, layout: str = "neuron_batch", batch_sum: str = "dot"):
    """Hand-written forward-mode gradient (= e-prop = BPTT) for `lif2_model(alpha)`.

    Layer 2 (w_hid): ∂v²_t[l]/∂w_hid[l, j] = z̄¹_t[j], the α-filtered layer-1 spikes (factorised).
    Layer 1 (w_in): ∂v²_t[l]/∂w_in[j, i] = w_hid[l, j] q_t[j, i] with one per-synapse trace
    q_t = α q_{t-1} + ψ¹_t[j] x̄_t[i] (x̄ the α-filtered input; both layers share α), so
    ∇w_in += Σ_b (δ²_t w_hid)[b, j] q_t[b, j, i] with δ²_t = (W_outᵀ ∂E_t/∂y_t) ψ²_t.

    **Arguments:**

    - `alpha`: the shared leak (scalar).
    - `layout`, `batch_sum`: how q is stored and summed over the batch, as for `hand_alif_fn`.

    **Raises:**

    `ValueError` for an unknown layout or batch_sum.
    """
    lay = _Layout(layout, batch_sum)

    def run(params, states0, xs, targets):
        w_in, w_hid, w_out, b_out = params["w_in"], params["w_hid"], params["w_out"], params["b_out"]
        v10, z10, v20, z20 = states0
        B, n = v10.shape

        def body(c, inp):
            v1, z1, v2, z2, xbar, z1bar, q, g, loss = c
            x, target = inp
            xbar = alpha * xbar + x
            v1 = alpha * v1 + x @ w_in.T - z1 * THR
            z1, psi1 = _spike(v1, THR)
            z1bar = alpha * z1bar + z1
            v2 = alpha * v2 + z1 @ w_hid.T - z2 * THR
            z2, psi2 = _spike(v2, THR)
            q = alpha * q + lay.put(psi1, "bj") * lay.put(xbar, "bi")
            y = z2 @ w_out.T + b_out
            err = 2.0 * (y - target)
            delta2 = (err @ w_out) * psi2                    # ∂E_t/∂v²_t
            g = {"w_in": g["w_in"] + lay.reduce_batch(delta2 @ w_hid, q), "w_hid": g["w_hid"] + delta2.T @ z1bar,
                 "w_out": g["w_out"] + err.T @ z2, "b_out": g["b_out"] + jnp.sum(err, 0)}
            return (v1, z1, v2, z2, xbar, z1bar, q, g, loss + jnp.sum((y - target) ** 2)), None

        zero = jax.tree_util.tree_map(jnp.zeros_like, params)
        c0 = (v10, z10, v20, z20, jnp.zeros_like(xs[0]), jnp.zeros_like(z10),
              lay.zeros(B, n, xs.shape[-1], v10.dtype), zero, jnp.zeros((), v10.dtype))
        c, _ = jax.lax.scan(body, c0, (xs, targets))
        return c[8], c[7]
    return run


def hand_written_fn(network: str, consts: dict, layout: str = "neuron_first", batch_sum: str = "dot"):
    """The hand-written e-prop program of `network` (`consts` from `make_problem`); `layout` and
    `batch_sum` are ignored for `lif` (no per-synapse arrays)."""
    if network == "lif":
        return hand_lif_fn(consts["alpha"])
    if network == "alif":
        return hand_alif_fn(consts["alpha"], consts["kappa"], layout, batch_sum)
    if network == "alif_beta":
        return hand_alif_beta_fn(consts["alpha"], consts["beta"], consts["kappa"], layout, batch_sum)
    return hand_lif2_fn(consts["alpha"], layout, batch_sum)
