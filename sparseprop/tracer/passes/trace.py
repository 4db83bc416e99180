"""Pass 1: trace the model's step once at given shapes → `Step`."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ..records import Step


def _inexact(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def trace_step(model, params, state, x) -> Step:
    """The whole step (new state leaves, then output leaves) as one jaxpr, with the user's leaf
    names: a method's cuts apply to state update and output alike."""
    p_named, p_def = jax.tree_util.tree_flatten_with_path(params)
    s_named, s_def = jax.tree_util.tree_flatten_with_path(state)
    p = [jnp.asarray(v) for _, v in p_named]
    s = [jnp.asarray(v) for _, v in s_named]
    xs, x_def = jax.tree_util.tree_flatten(x)
    y_def = []

    def flat(p, s, xs):
        new_state, y = model(jax.tree_util.tree_unflatten(p_def, p), jax.tree_util.tree_unflatten(s_def, s),
                             jax.tree_util.tree_unflatten(x_def, xs))
        y_leaves, tree = jax.tree_util.tree_flatten(y)
        y_def.append(tree)
        return jax.tree_util.tree_leaves(new_state) + y_leaves

    closed = jax.make_jaxpr(flat)(p, s, xs)
    return Step(
        model=model, jaxpr=closed.jaxpr, consts=tuple(closed.consts),
        p_def=p_def, s_def=s_def, x_def=x_def, y_def=y_def[0],
        param_names=tuple("params" + jax.tree_util.keystr(k) for k, _ in p_named),
        state_names=tuple("state" + jax.tree_util.keystr(k) for k, _ in s_named),
        p_avals=tuple(jax.ShapeDtypeStruct(v.shape, v.dtype) for v in p),
        s_avals=tuple(jax.ShapeDtypeStruct(v.shape, v.dtype) for v in s),
        x_avals=tuple(jax.ShapeDtypeStruct(jnp.shape(v), jnp.result_type(v)) for v in xs),
        diff_states=tuple(i for i, v in enumerate(s) if _inexact(v)))
