"""One structural rule per primitive family: how dependency maps flow through an equation.

A rule takes the equation and the `Deps` of each input variable and returns the `Deps`
of each output variable. The table `RULES` maps primitive names to rules; a primitive
missing from it gets `conservative_rule` (every output depends densely on every input),
which is always sound. Primitives that carry sub-programs (jit, custom_jvp_call, cond)
are walked by `analysis.py`, not here.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Sequence

import numpy as np

from .structure import Deps, free_all, merge_deps, remap_axes

Rule = Callable[[object, Sequence[Deps]], List[Deps]]

ELEMENTWISE = {
    "abs", "acos", "acosh", "add", "add_any", "asin", "asinh", "atan", "atan2", "atanh",
    "cbrt", "clamp", "conj", "convert_element_type", "copy", "copy_p", "cos", "cosh", "digamma",
    "div", "erf", "erf_inv", "erfc", "exp", "exp2", "expm1", "imag", "integer_pow", "lgamma",
    "log", "log1p", "logistic", "max", "min", "mul", "neg", "nextafter", "pow", "real",
    "reduce_precision", "rem", "rsqrt", "select_n", "sin", "sinh", "sqrt", "square", "sub",
    "tan", "tanh", "optimization_barrier",
}

# Outputs with zero derivative everywhere (piecewise constant or explicitly cut).
ZERO_DERIVATIVE = {
    "stop_gradient", "sign", "floor", "ceil", "round", "is_finite", "iota", "argmax",
    "argmin", "random_bits", "random_seed", "random_wrap", "random_unwrap", "eq", "ne",
    "lt", "le", "gt", "ge", "and", "or", "not", "xor", "shift_left", "shift_right_logical",
    "shift_right_arithmetic", "population_count", "clz",
}

REDUCTIONS = {"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or",
              "reduce_xor", "argmax", "argmin", "reduce_logsumexp"}
CUMULATIVE = {"cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp"}


def _out_ndims(eqn):
    return [len(getattr(v.aval, "shape", ())) for v in eqn.outvars]


def conservative_rule(eqn, in_deps: Sequence[Deps]) -> List[Deps]:
    deps = free_all(merge_deps(*in_deps))
    return [dict(deps) for _ in eqn.outvars]


def zero_rule(eqn, in_deps):
    return [{} for _ in eqn.outvars]


def elementwise_rule(eqn, in_deps):
    (nd,) = _out_ndims(eqn)
    # Rank-0 operands are broadcast: their maps are all-free already (no axis to match).
    parts = [d if len(v.aval.shape) in (0, nd) else free_all(d) for d, v in zip(in_deps, eqn.invars)]
    # lax broadcasts size-1 axes of equal-rank operands: such an axis is summed in the
    # gradient (a (C, 1, 1) leak against (C, H, W)), not matched
    out_shape = eqn.outvars[0].aval.shape
    parts = [remap_axes(d, {i: i for i, n in enumerate(v.aval.shape) if n == out_shape[i]})
             if len(v.aval.shape) == nd and tuple(v.aval.shape) != tuple(out_shape) else d
             for d, v in zip(parts, eqn.invars)]
    return [merge_deps(*parts)]


def broadcast_in_dim_rule(eqn, in_deps):
    (operand,) = eqn.invars[:1]
    out_shape = eqn.params["shape"]
    dims = eqn.params["broadcast_dimensions"]
    axis_to = {i: d for i, d in enumerate(dims) if operand.aval.shape[i] == out_shape[d]}
    return [remap_axes(in_deps[0], axis_to)]


def reshape_rule(eqn, in_deps):
    in_shape = eqn.invars[0].aval.shape
    out_shape = eqn.params["new_sizes"]
    # Only size-1 axes may come and go; the other axes must keep their order and size.
    a = [i for i, s in enumerate(in_shape) if s != 1]
    b = [j for j, s in enumerate(out_shape) if s != 1]
    if eqn.params.get("dimensions") is None and [in_shape[i] for i in a] == [out_shape[j] for j in b]:
        return [remap_axes(in_deps[0], dict(zip(a, b)))]
    if eqn.params.get("dimensions") is None:
        # Split or merged axes (pooling by reshape: (C, H, W) -> (C, H/2, 2, W/2, 2)): an axis
        # that is alone in its group of equal products keeps its match; the group's others mix.
        return [remap_axes(in_deps[0], _reshape_unchanged_axes(in_shape, out_shape))]
    return [free_all(in_deps[0])]


def _reshape_unchanged_axes(in_shape, out_shape):
    """{input axis: output axis} for axes a row-major reshape leaves intact."""
    a = [i for i, s in enumerate(in_shape) if s != 1]
    b = [j for j, s in enumerate(out_shape) if s != 1]
    axis_to, i, j = {}, 0, 0
    while i < len(a) and j < len(b):
        gi, gj = [a[i]], [b[j]]
        pi, pj = in_shape[a[i]], out_shape[b[j]]
        while pi != pj:
            if pi < pj:
                i += 1
                gi.append(a[i])
                pi *= in_shape[a[i]]
            else:
                j += 1
                gj.append(b[j])
                pj *= out_shape[b[j]]
        if len(gi) == 1 and len(gj) == 1:
            axis_to[gi[0]] = gj[0]
        i, j = i + 1, j + 1
    return axis_to


def squeeze_rule(eqn, in_deps):
    dropped = set(d % len(eqn.invars[0].aval.shape) for d in eqn.params["dimensions"])
    kept = [i for i in range(len(eqn.invars[0].aval.shape)) if i not in dropped]
    return [remap_axes(in_deps[0], {i: j for j, i in enumerate(kept)})]


def expand_dims_rule(eqn, in_deps):
    nd = _out_ndims(eqn)[0]
    new = set(d % nd for d in eqn.params["dimensions"])
    kept = [j for j in range(nd) if j not in new]
    return [remap_axes(in_deps[0], dict(enumerate(kept)))]


def transpose_rule(eqn, in_deps):
    perm = eqn.params["permutation"]
    return [remap_axes(in_deps[0], {p: j for j, p in enumerate(perm)})]


def reduction_rule(eqn, in_deps):
    axes = set(eqn.params["axes"])
    kept = [i for i in range(len(eqn.invars[0].aval.shape)) if i not in axes]
    out = remap_axes(in_deps[0], {i: j for j, i in enumerate(kept)})
    return [out for _ in eqn.outvars]


def cumulative_rule(eqn, in_deps):
    nd = len(eqn.invars[0].aval.shape)
    axis = eqn.params["axis"] % nd
    return [remap_axes(in_deps[0], {i: i for i in range(nd) if i != axis})]


def dot_general_rule(eqn, in_deps):
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lhs, rhs = eqn.invars
    lfree = [i for i in range(len(lhs.aval.shape)) if i not in lc and i not in lb]
    rfree = [i for i in range(len(rhs.aval.shape)) if i not in rc and i not in rb]
    nb = len(lb)
    lmap = {a: k for k, a in enumerate(lb)}
    lmap.update({a: nb + k for k, a in enumerate(lfree)})
    rmap = {a: k for k, a in enumerate(rb)}
    rmap.update({a: nb + len(lfree) + k for k, a in enumerate(rfree)})
    return [merge_deps(remap_axes(in_deps[0], lmap), remap_axes(in_deps[1], rmap))]


def concatenate_rule(eqn, in_deps):
    # Operands after the first are shifted along `dimension`: no index identity there.
    dim = eqn.params["dimension"]
    nd = _out_ndims(eqn)[0]
    keep = {i: i for i in range(nd) if i != dim}
    first = remap_axes(in_deps[0], {i: i for i in range(nd)})
    rest = [remap_axes(d, keep) for d in in_deps[1:]]
    return [merge_deps(first, *rest)]


def stack_rule(eqn, in_deps):
    # A new axis in front of position `axis`; the k-th operand sits at index k along it.
    axis = eqn.params["axis"]
    nd = len(eqn.invars[0].aval.shape)
    shift = {i: (i if i < axis else i + 1) for i in range(nd)}
    return [merge_deps(*[remap_axes(d, shift) for d in in_deps])]


def unstack_rule(eqn, in_deps):
    # Output k is operand[..., k, ...] along `axis`: that axis goes, the others move down.
    axis = eqn.params["axis"]
    nd = len(eqn.invars[0].aval.shape)
    down = {i: (i if i < axis else i - 1) for i in range(nd) if i != axis}
    return [remap_axes(in_deps[0], down) for _ in eqn.outvars]


def reversing_rule(eqn, in_deps):
    # rev / tile: indices along the touched axes no longer line up with the input's.
    touched = set(eqn.params.get("dimensions", ())) | {
        i for i, r in enumerate(eqn.params.get("reps", ())) if r != 1}
    nd = len(eqn.invars[0].aval.shape)
    return [remap_axes(in_deps[0], {i: i for i in range(nd) if i not in touched})]


def scatter_rule(eqn, in_deps):
    """`x.at[idx].set/add/mul(u)`: the output keeps the operand's indices; an update's window
    axis lines up with the operand axis it covers unless that axis is indexed (an offset)."""
    dn = eqn.params["dimension_numbers"]
    if getattr(dn, "operand_batching_dims", ()):
        return conservative_rule(eqn, in_deps)
    nd = len(eqn.invars[0].aval.shape)
    window_dims = [d for d in range(nd) if d not in dn.inserted_window_dims]
    to_operand = {u: window_dims[k] for k, u in enumerate(dn.update_window_dims)
                  if window_dims[k] not in dn.scatter_dims_to_operand_dims}
    operand = remap_axes(in_deps[0], {i: i for i in range(nd)})
    return [merge_deps(operand, remap_axes(in_deps[2], to_operand))]


def gather_rule(eqn, in_deps):
    """`x[idx]`: an output offset axis lines up with the operand axis it slices unless that
    axis is indexed (then the start is an offset)."""
    dn = eqn.params["dimension_numbers"]
    if getattr(dn, "operand_batching_dims", ()):
        return conservative_rule(eqn, in_deps)
    nd = len(eqn.invars[0].aval.shape)
    kept = [d for d in range(nd) if d not in dn.collapsed_slice_dims]
    to_out = {kept[k]: o for k, o in enumerate(dn.offset_dims) if kept[k] not in dn.start_index_map}
    return [remap_axes(in_deps[0], to_out)]


def dynamic_slice_rule(eqn, in_deps):
    # A start index is clamped so the slice fits: a full-size axis always starts at 0.
    shape = eqn.invars[0].aval.shape
    sizes = eqn.params["slice_sizes"]
    return [remap_axes(in_deps[0], {i: i for i, (n, k) in enumerate(zip(shape, sizes)) if n == k})]


def dynamic_update_slice_rule(eqn, in_deps):
    shape, update = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
    operand = remap_axes(in_deps[0], {i: i for i in range(len(shape))})
    aligned = {i: i for i, (n, k) in enumerate(zip(shape, update)) if n == k}
    return [merge_deps(operand, remap_axes(in_deps[1], aligned))]


def slice_rule(eqn, in_deps):
    starts = eqn.params["start_indices"]
    strides = eqn.params.get("strides") or (1,) * len(starts)
    keep = {i: i for i, (s, st) in enumerate(zip(starts, strides)) if s == 0 and st == 1}
    return [remap_axes(in_deps[0], keep)]


def pad_rule(eqn, in_deps):
    cfg = eqn.params["padding_config"]
    keep = {i: i for i, (lo, hi, interior) in enumerate(cfg) if lo == 0 and interior == 0}
    return [merge_deps(remap_axes(in_deps[0], keep), free_all(in_deps[1]))]


def conv_rule(eqn, in_deps):
    """`conv_general_dilated(lhs, rhs)`: output (n, o, *spatial) reads lhs[n] over a window of
    every (grouped) input feature, and kernel slice rhs[o]. The lhs batch axis is matched to
    the output batch axis (unless batch groups fold it into features); the kernel's
    output-feature axis is matched to the output feature axis (with feature or batch groups
    too: output feature o always uses kernel slice o). Features and space are mixed."""
    lhs_spec, rhs_spec, out_spec = eqn.params["dimension_numbers"]
    lhs, rhs = eqn.invars[:2]
    out_shape = eqn.outvars[0].aval.shape
    lhs_to = {}
    if eqn.params.get("batch_group_count", 1) == 1 and lhs.aval.shape[lhs_spec[0]] == out_shape[out_spec[0]]:
        lhs_to[lhs_spec[0]] = out_spec[0]
    rhs_to = {rhs_spec[0]: out_spec[1]} if rhs.aval.shape[rhs_spec[0]] == out_shape[out_spec[1]] else {}
    return [merge_deps(remap_axes(in_deps[0], lhs_to), remap_axes(in_deps[1], rhs_to))]


def _window_kept_axes(eqn):
    """Axes a window operation leaves alone: window 1, stride 1, no padding or dilation."""
    p = eqn.params
    nd = len(eqn.invars[0].aval.shape)
    padding = p.get("padding") or ((0, 0),) * nd
    base = p.get("base_dilation") or (1,) * nd
    return {i: i for i in range(nd) if p["window_dimensions"][i] == 1 and p["window_strides"][i] == 1
            and tuple(padding[i]) == (0, 0) and base[i] == 1}


def window_rule(eqn, in_deps):
    """Pooling (`reduce_window_sum/max/min`, generic `reduce_window`): axes with a window of
    one (the channel axis) stay matched; pooled axes are mixed. Operands of a generic
    reduce_window are combined by its reducer; its init values are broadcast."""
    keep = _window_kept_axes(eqn)
    n = len(eqn.outvars)
    operands = [remap_axes(d, keep) for d in in_deps[:n]]
    inits = [free_all(d) for d in in_deps[n:]]
    out = merge_deps(*operands, *inits)
    return [dict(out) for _ in eqn.outvars]


def select_and_gather_add_rule(eqn, in_deps):
    """The JVP of max/min pooling: the tangent at each window's selected entry. The operand
    only selects (piecewise constant): it carries no derivative."""
    return [remap_axes(in_deps[0], _window_kept_axes(eqn))]


def split_rule(eqn, in_deps):
    axis = eqn.params["axis"]
    nd = len(eqn.invars[0].aval.shape)
    outs = []
    for k in range(len(eqn.outvars)):
        keep = {i: i for i in range(nd) if k == 0 or i != axis}
        outs.append(remap_axes(in_deps[0], keep))
    return outs


RULES: Dict[str, Rule] = {}
RULES.update({name: elementwise_rule for name in ELEMENTWISE})
RULES.update({name: zero_rule for name in ZERO_DERIVATIVE})
RULES.update({name: reduction_rule for name in REDUCTIONS - {"argmax", "argmin"}})
RULES.update({name: cumulative_rule for name in CUMULATIVE})
RULES.update({
    "broadcast_in_dim": broadcast_in_dim_rule,
    "reshape": reshape_rule,
    "squeeze": squeeze_rule,
    "expand_dims": expand_dims_rule,
    "transpose": transpose_rule,
    "dot_general": dot_general_rule,
    "concatenate": concatenate_rule,
    "stack": stack_rule,
    "scatter": scatter_rule,
    "scatter-add": scatter_rule,
    "scatter_add": scatter_rule,
    "scatter-mul": scatter_rule,
    "scatter_mul": scatter_rule,
    "gather": gather_rule,
    "dynamic_slice": dynamic_slice_rule,
    "dynamic_update_slice": dynamic_update_slice_rule,
    "unstack": unstack_rule,
    "rev": reversing_rule,
    "tile": reversing_rule,
    "slice": slice_rule,
    "pad": pad_rule,
    "split": split_rule,
    "conv_general_dilated": conv_rule,
    "reduce_window_sum": window_rule,
    "reduce_window_max": window_rule,
    "reduce_window_min": window_rule,
    "reduce_window": window_rule,
    "select_and_gather_add": select_and_gather_add_rule,
})


def apply_rule(eqn, in_deps: Sequence[Deps]) -> List[Deps]:
    """Output dependencies of `eqn`; outputs that are not floating point carry none."""
    if not any(in_deps):
        return [{} for _ in eqn.outvars]
    outs = RULES.get(eqn.primitive.name, conservative_rule)(eqn, in_deps)
    return [d if np.issubdtype(v.aval.dtype, np.inexact) else {} for d, v in zip(outs, eqn.outvars)]
