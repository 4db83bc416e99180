"""Checks on the user's input that turn silent mistakes into clear errors."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _describe(tree) -> str:
    return ", ".join(f"{jax.tree_util.keystr(k) or '<root>'}: {jnp.result_type(v).name}{list(np.shape(v))}"
                     for k, v in jax.tree_util.tree_flatten_with_path(tree)[0])


def check_params(params) -> None:
    """Every parameter leaf must be a floating-point array: only those can be differentiated."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    if not leaves:
        raise ValueError("params has no array leaves: there is nothing to learn")
    for path, v in leaves:
        dtype = jnp.result_type(v)
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
        message = (f"the model failed on params ({_describe(params)}), state ({_describe(state)}) "
                   f"and x ({_describe(x)}): {type(e).__name__}: {e}")
        try:
            error = type(e)(message)      # keep the type (TypeError for shapes) when it allows
        except Exception:
            error = ValueError(message)
        raise error from e
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


def check_loss(loss) -> None:
    if jnp.shape(loss) != ():
        raise ValueError(f"loss_fn must return a scalar; it returned shape {jnp.shape(loss)}. "
                         f"Reduce it, e.g. with jnp.sum or jnp.mean.")
