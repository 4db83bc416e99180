"""Test-side references, written independently of the library: BPTT by jax.grad of a lax.scan."""
import jax
import jax.numpy as jnp
import numpy as np


def bptt(model, loss_fn, params, state0, xs, targets):
    """(summed loss, grads, outputs) by reverse-mode through a lax.scan unroll."""
    def total(params):
        def body(state, inp):
            x, t = inp
            state, y = model(params, state, x)
            return state, (loss_fn(y, t), y)
        _, (losses, ys) = jax.lax.scan(body, state0, (xs, targets))
        return jnp.sum(losses), ys
    (loss, ys), grads = jax.value_and_grad(total, has_aux=True)(params)
    return loss, grads, ys


def dense_rtrl(model, loss_fn, params, state0, xs, targets, pattern=None, local_grad=jax.grad):
    """Plain RTRL with full Jacobians (jacfwd): M_t = J_s M_{t-1} + J_θ, grads = Σ λ_t M_{t-1} + direct.

    With `pattern(f, flat_params, flat_state, xs)` (a boolean |s|×|θ| mask), every trace is
    masked after each step: M_t = P ⊙ (J_s M_{t-1} + J_θ), the SnAp recursion.
    `local_grad=jax.jacfwd` makes the whole oracle forward-mode (for while loops, which
    reverse mode cannot differentiate).
    """
    from jax.flatten_util import ravel_pytree
    flat_p, unravel_p = ravel_pytree(params)
    flat_s, unravel_s = ravel_pytree(state0)

    def f(fp, fs, x):
        new, y = model(unravel_p(fp), unravel_s(fs), x)
        return ravel_pytree(new)[0], y

    mask = None if pattern is None else pattern(f, flat_p, flat_s, xs)
    M = jnp.zeros((flat_s.size, flat_p.size))
    s, total = flat_s, jnp.zeros_like(flat_p)
    for x, t in zip(xs, targets):
        direct, lam = local_grad(lambda fp, fs: loss_fn(f(fp, fs, x)[1], t), argnums=(0, 1))(flat_p, s)
        total = total + direct + lam @ M
        J_s = jax.jacfwd(lambda fs: f(flat_p, fs, x)[0])(s)
        J_p = jax.jacfwd(lambda fp: f(fp, s, x)[0])(flat_p)
        M = J_s @ M + J_p
        if mask is not None:
            M = jnp.where(mask, M, 0.0)
        s = f(flat_p, s, x)[0]
    return unravel_p(total)


def max_relative_error(a, b, floor: float = 0.0) -> float:
    """max over leaves of max|a - b| / max|b| (b is the reference).

    `floor`: a leaf's scale is at least `floor` times the largest |b| of any leaf. A leaf whose
    true gradient is zero (a model that cancels, `f(u) - f(u)`) gets a reference of pure rounding
    noise (~1e-17), against which an exact 0 would be "100 % off"; random models pass a floor."""
    leaves = list(zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
    overall = max(float(jnp.max(jnp.abs(y))) for _, y in leaves) if leaves else 0.0
    errs = []
    for x, y in leaves:
        scale = max(float(jnp.max(jnp.abs(y))), floor * overall)
        errs.append(float(jnp.max(jnp.abs(x - y))) / (scale if scale > 0 else 1.0))
    return max(errs)


def cosine(a, b) -> float:
    va = jnp.concatenate([jnp.ravel(x) for x in jax.tree_util.tree_leaves(a)])
    vb = jnp.concatenate([jnp.ravel(x) for x in jax.tree_util.tree_leaves(b)])
    return float(va @ vb / (jnp.linalg.norm(va) * jnp.linalg.norm(vb)))


def spike_count(outputs_or_states) -> int:
    return int(np.sum(np.asarray(outputs_or_states) > 0.5))


def mse(y, t):
    return jnp.sum((y - t) ** 2)


def states_over(model, params, state0, xs):
    """The state after every step of a plain lax.scan run (for spike checks)."""
    def body(s, x):
        s, _ = model(params, s, x)
        return s, s
    return jax.lax.scan(body, state0, xs)[1]


def assert_matches_bptt(model, loss_fn, params, state0, xs, targets, *, spikes, method="exact", twin=None,
                        tol=1e-9, loss_tol=1e-12, init_x=True, jit=False):
    """Run `online_grad(model, loss_fn, method)` over a sequence and compare its summed gradient and
    loss with BPTT (jax.grad of a lax.scan unroll) of `twin` (default: the model itself): max
    relative gradient error <= `tol`, relative loss error <= `loss_tol`.

    `spikes(outputs, states) -> number` must be positive: the inputs make neurons spike, so the
    surrogate paths are exercised (pass `spikes=None` only for models without spikes). Every
    gradient leaf keeps its parameter's shape and dtype. Returns `(learner, total, bptt grads,
    bptt outputs)`.
    """
    import sparseprop as sp
    learner = sp.online_grad(model, loss_fn, method=method)
    x0 = jax.tree_util.tree_map(lambda a: a[0], xs) if xs is not None else None
    carry = learner.init(params, state0, x0) if init_x else learner.init(params, state0)
    run = jax.jit(learner.run) if jit else learner.run
    _, total = run(params, carry, xs, targets)
    loss, grads, ys = bptt(twin or model, loss_fn, params, state0, xs, targets)
    if spikes is not None:
        assert float(spikes(ys, states_over(model, params, state0, xs))) > 0, \
            "no neuron spiked: this test would test nothing"
    for g, p in zip(jax.tree_util.tree_leaves(total.grads), jax.tree_util.tree_leaves(params)):
        assert g.shape == jnp.shape(p) and g.dtype == jnp.result_type(p)
    assert max_relative_error(total.grads, grads) <= tol
    assert abs(float(total.loss) - float(loss)) <= loss_tol * abs(float(loss))
    return learner, total, grads, ys
