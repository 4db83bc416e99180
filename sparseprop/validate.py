"""Checks on the user's input that turn silent mistakes into clear errors."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def describe_leaves(named) -> str:
    """`path: dtype[shape], ...` for `[(key path, leaf)]`, for messages."""
    return ", ".join(f"{jax.tree_util.keystr(k) or '<root>'}: {leaf_text(v)}" for k, v in named)


def _describe(tree) -> str:
    return describe_leaves(jax.tree_util.tree_flatten_with_path(tree)[0])


def check_params(params) -> None:
    """Every parameter leaf must be a floating-point array: only those can be differentiated."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    if not leaves:
        raise ValueError("params has no array leaves: there is nothing to learn")
    for path, v in leaves:
        dtype = jnp.result_type(v)
        if not jnp.issubdtype(dtype, jnp.inexact) and isinstance(v, (bool, int, np.integer, np.bool_)):
            # a Python number in params is a setting (a count, a flag) that became a leaf
            name = jax.tree_util.keystr(path) or "<root>"
            field = name.rsplit(".", 1)[-1] if isinstance(path[-1], jax.tree_util.GetAttrKey) else "n"
            raise TypeError(
                f"parameter {name} is the Python {type(v).__name__} {v!r} (dtype {dtype.name}); sparseprop "
                f"differentiates floating-point parameters only. A setting such as a count or a flag is "
                f"no parameter: in an equinox Module, mark the field static, "
                f"`{field}: {type(v).__name__} = eqx.field(static=True, default={v!r})`; elsewhere close over "
                f"it in the model (functools.partial). If it is meant to be learned, give it as a float "
                f"array (jnp.asarray({v!r}, jnp.float32)).")
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise TypeError(
                f"parameter {jax.tree_util.keystr(path) or '<root>'} has dtype {dtype.name}; "
                f"sparseprop differentiates floating-point parameters only. Cast it "
                f"(e.g. jnp.asarray(w, jnp.float32)), or, if it is a constant, close over it "
                f"in the model (functools.partial) instead of passing it in params.")


def check_real(params, state) -> None:
    """Complex parameters or state are refused: a trace stores the tangent map as a complex
    matrix, which is only right for C-linear (holomorphic) steps; |z| or conj(z) are not."""
    for what, tree in (("parameter", params), ("state leaf", state)):
        for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]:
            if jnp.issubdtype(jnp.result_type(v), jnp.complexfloating):
                raise TypeError(
                    f"{what} {jax.tree_util.keystr(path) or '<root>'} is complex "
                    f"({jnp.result_type(v).name}); sparseprop's online methods need real state and "
                    f"parameters (a complex trace is only right for holomorphic steps). Keep the real "
                    f"and imaginary parts as two float leaves; sparseprop.bptt_grad handles complex.")


def check_model_output(model, params, state, x) -> None:
    """`model(params, state, x)` must return `(new_state, y)` with new_state shaped like state."""
    try:
        out = jax.eval_shape(model, params, state, x)
    except Exception as e:
        raise _retyped(e, f"the model failed on params ({_describe(params)}), state ({_describe(state)}) "
                          f"and x ({_describe(x)}): {type(e).__name__}: {e}") from e
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError(f"the model must return a pair (new_state, y); it returned "
                        f"{type(out).__name__} {jax.tree_util.tree_structure(out)}")
    new_state = out[0]
    s_tree, n_tree = jax.tree_util.tree_structure(state), jax.tree_util.tree_structure(new_state)
    if s_tree != n_tree:
        raise TypeError(f"the model's new state has structure {n_tree}, but the state passed in has "
                        f"{s_tree}; a step must return a state of the same structure")
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(state)[0], jax.tree_util.tree_leaves(new_state)):
        if np.shape(a) != b.shape or jnp.result_type(a) != b.dtype:
            raise TypeError(f"state leaf {jax.tree_util.keystr(path)} comes in as "
                            f"{jnp.result_type(a).name}{list(np.shape(a))} but the model returns "
                            f"{b.dtype.name}{list(b.shape)}; the state must keep its shapes and dtypes "
                            f"(check the initial state, e.g. its dtype under jax_enable_x64)")


def _retyped(e: Exception, message: str) -> Exception:
    """`message` as an error of `e`'s type (a TypeError for shapes stays one) when it allows."""
    try:
        return type(e)(message)
    except Exception:
        return ValueError(message)


def check_loss(loss) -> None:
    """A loss must be a scalar: a vector would be summed silently by one method and refused by another."""
    if jnp.shape(loss) != ():
        raise ValueError(f"loss_fn must return a scalar; it returned shape {jnp.shape(loss)}. "
                         f"Reduce it, e.g. with jnp.sum or jnp.mean.")


def call_loss(loss_fn, y, target):
    """`loss_fn(y, target)`, checked to be a scalar; an error inside `loss_fn` (a target of the
    wrong shape) is raised again naming the output's and the target's shapes and dtypes."""
    try:
        value = loss_fn(y, target)
    except Exception as e:
        raise _retyped(e, f"loss_fn failed on the model's output y ({_describe(y)}) and the target "
                          f"({_describe(target)}): {type(e).__name__}: {e}. A step's target must fit "
                          f"one step's output (for run, targets are time-major: (T, ...) leaves)") from e
    check_loss(value)
    return value


# ---------------------------------------------------------------------------- carries
def leaf_text(v) -> str:
    """`dtype[shape]` of one array leaf, for messages."""
    return f"{jnp.result_type(v).name}{list(np.shape(v))}"


def check_carry(carry, carry_type, what: str = "carry") -> None:
    """`carry` must be a `Carry` (from `learner.init` or a previous step), not None or another object."""
    if carry is None:
        raise TypeError(f"{what} is None: start a stream with carry = learner.init(params, state0, x0) "
                        f"(or learner.init_batch for a batch) and pass the carry each step returns")
    if not isinstance(carry, carry_type):
        raise TypeError(f"{what} must be the Carry returned by learner.init or by the previous step; got a "
                        f"{type(carry).__name__}. If you hold a model state, start a stream from it with "
                        f"learner.init(params, state, x0)")


def check_traces(traces, blocks, block_names, tag, batch_shape=()) -> None:
    """The carry's traces must be the ones this learner's program makes: same method, count, shapes, dtypes.

    **Arguments:**

    - `traces`: `carry.traces`; `blocks`: the program's trace blocks (with `shape`, `dtype`);
      `block_names`: one name per block, for messages; `tag`: the program's layout tag.
    - `batch_shape`: the leading batch axes the traces carry (`step_batch`).

    **Raises:**

    `ValueError` naming the first block that does not fit.
    """
    advice = ("A carry belongs to one learner (one model, method and set of shapes): build it with this "
              "learner's init(params, state0, x0), or keep using the learner that built it.")
    other = getattr(traces, "tag", None)
    if other is not None and other[0] != tag[0]:
        raise ValueError(f"this carry's traces were built by a learner with method={other[0]!r}; this learner "
                         f"uses method={tag[0]!r}, whose traces mean something else. {advice}")
    leaves = list(traces) if isinstance(traces, (tuple, list)) else None
    if leaves is None or len(leaves) != len(blocks):
        got = f"{len(leaves)} trace arrays" if leaves is not None else f"a {type(traces).__name__}"
        raise ValueError(f"the carry holds {got}; this learner's program (method={tag[0]!r}) has "
                         f"{len(blocks)} trace blocks. {advice}")
    for name, blk, T in zip(block_names, blocks, leaves):
        want = tuple(batch_shape) + tuple(blk.shape)
        if tuple(np.shape(T)) != want or jnp.result_type(T) != jnp.dtype(blk.dtype):
            raise ValueError(f"the carry's trace for {name} is {leaf_text(T)}, but this learner's program "
                             f"(method={tag[0]!r}) stores it as {jnp.dtype(blk.dtype).name}{list(want)}. "
                             f"{advice}")
    if other is not None and other != tag:
        raise ValueError(f"this carry's traces have the shapes of this learner's program but a different "
                         f"layout (built by another learner or model). {advice}")


# ---------------------------------------------------------------------------- learning signals
def match_state_signal(state_signal, state) -> list:
    """Align a per-state learning signal with the state's leaves.

    `state_signal` must have the state's pytree structure, except that `None` may stand for
    a leaf or a whole subtree that gets no signal. Each array must broadcast to its leaf's shape.

    **Arguments:**

    - `state_signal`: the signal pytree; `state`: the model state (or its shapes).

    **Returns:**

    One entry per state leaf: an array of the leaf's shape, or None.

    **Raises:**

    `ValueError` naming the keys that do not match, or the leaf whose shape does not fit.
    """
    is_none = lambda v: v is None  # noqa: E731
    signal_def = jax.tree_util.tree_structure(state_signal, is_leaf=is_none)
    try:
        subtrees = signal_def.flatten_up_to(state)
    except (ValueError, TypeError) as e:
        raise ValueError(_signal_mismatch(state_signal, state)) from e
    out = []
    sig_named = jax.tree_util.tree_flatten_with_path(state_signal, is_leaf=is_none)[0]
    for (path, sig), sub in zip(sig_named, subtrees):
        sub_leaves = jax.tree_util.tree_leaves(sub)
        if sig is None:
            out.extend([None] * len(sub_leaves))
            continue
        if not (len(sub_leaves) == 1 and sub_leaves[0] is sub):
            raise ValueError(f"state_signal{jax.tree_util.keystr(path)} is one array, but the state has a "
                             f"subtree there ({jax.tree_util.tree_structure(sub)}); give one array per leaf, "
                             f"or None for no signal")
        sig = jnp.asarray(sig)
        try:
            out.append(jnp.broadcast_to(sig, np.shape(sub)))
        except ValueError as e:
            raise ValueError(f"state_signal{jax.tree_util.keystr(path)} has shape {list(sig.shape)}, which does "
                             f"not fit the state leaf of shape {list(np.shape(sub))}") from e
    return out


def _signal_mismatch(state_signal, state) -> str:
    is_none = lambda v: v is None  # noqa: E731
    sig_paths = [k for k, _ in jax.tree_util.tree_flatten_with_path(state_signal, is_leaf=is_none)[0]]
    state_named = jax.tree_util.tree_flatten_with_path(state)[0]
    state_paths = [k for k, _ in state_named]
    covers = lambda prefix, path: tuple(path[:len(prefix)]) == tuple(prefix)  # noqa: E731
    extra = [k for k in sig_paths if not any(covers(k, p) or covers(p, k) for p in state_paths)]
    missing = [p for p in state_paths if not any(covers(k, p) or covers(p, k) for k in sig_paths)]
    text = ", ".join(f"{jax.tree_util.keystr(k) or '<root>'}: {leaf_text(v)}" for k, v in state_named)
    parts = []
    if extra:
        parts.append("it has " + ", ".join(jax.tree_util.keystr(k) or "<root>" for k in extra)
                     + ", which the state has not")
    if missing:
        parts.append("it lacks " + ", ".join(jax.tree_util.keystr(k) or "<root>" for k in missing))
    if not parts:
        parts.append(f"its structure is {jax.tree_util.tree_structure(state_signal, is_leaf=is_none)}")
    return (f"state_signal does not have the state's structure: {'; '.join(parts)}. The state's leaves: "
            f"{text}. Give one array per state leaf (shaped like it), or None for a leaf or subtree "
            f"without signal.")


# ---------------------------------------------------------------------------- non-finite values
def check_finite(named_trees, when: str, index=None) -> None:
    """Add a `jax.experimental.checkify` check that every float leaf is finite (no NaN, no inf).

    Eagerly a failed check raises at once; under `jax.jit` / `lax.scan` the caller wraps the
    function in `checkify.checkify` and calls `err.throw()`.

    **Arguments:**

    - `named_trees`: `[(name, pytree)]`, names for the message (e.g. `"the input x"`).
    - `when`: where in the step (e.g. `"entering the step"`).
    - `index`: the step's index in a `run` (a traced int), or None.
    """
    from jax.experimental import checkify
    for name, tree in named_trees:
        for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]:
            if v is None or not jnp.issubdtype(jnp.result_type(v), jnp.inexact):
                continue
            label = (name + jax.tree_util.keystr(path)).replace("{", "{{").replace("}", "}}")
            message = f"sparseprop: {label} has a NaN or inf {when}"
            if index is None:
                checkify.check(jnp.all(jnp.isfinite(v)), message)
            else:
                checkify.check(jnp.all(jnp.isfinite(v)), message + " (step {index} of the run)", index=index)
