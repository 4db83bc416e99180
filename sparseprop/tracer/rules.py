"""The structural rules: how dependency maps flow through an equation, one rule per family.

A rule takes the equation and the `Deps` of each input variable and returns the `Deps`
of each output variable; rules of gather and scatter also read the index facts of their
integer operands (indices.py). registry.py says which primitive has which rule; a
primitive it does not know gets `conservative_rule` (every output depends densely on
every input), which is always sound. Calls (jit, checkpoint) are walked by analysis.py.

The rules of control flow and custom derivatives (`cond_structure`, `scan_structure`,
`while_structure`, `custom_derivative_structure`) walk sub-programs: they take a third
argument, the walker's context, with `ctx.walk(jaxpr, in_deps, branch)` (the output `Deps`
of a nested program, whose notes go to the same analysis) and `ctx.derivative(eqn)` (the
traced JVP of a custom-derivative call and the indices of its differentiable inputs).
"""
from __future__ import annotations

from typing import Callable, List, Sequence

from .indices import batch_axes, columns
from .structure import Deps, free_all, merge_deps, remap_axes

Rule = Callable[[object, Sequence[Deps]], List[Deps]]

def _out_ndims(eqn):
    return [len(getattr(v.aval, "shape", ())) for v in eqn.outvars]


def _move(eqn, deps, axis_to, operand=0, out=0):
    """`remap_axes` for operand `operand` into output `out`, keeping a match only where the
    two axes have the same size (a size-1 axis broadcast, a slice, a pad or a concatenation
    changes the index range: that is no identity, see structure.py)."""
    in_shape = eqn.invars[operand].aval.shape
    out_shape = eqn.outvars[out].aval.shape
    return remap_axes(deps, {i: j for i, j in axis_to.items() if in_shape[i] == out_shape[j]})


def conservative_rule(eqn, in_deps: Sequence[Deps]) -> List[Deps]:
    deps = free_all(merge_deps(*in_deps))
    return [dict(deps) for _ in eqn.outvars]


def zero_rule(eqn, in_deps):
    return [{} for _ in eqn.outvars]


def elementwise_rule(eqn, in_deps):
    (nd,) = _out_ndims(eqn)
    # Rank-0 operands are broadcast: their maps are all-free already (no axis to match).
    parts = [_move(eqn, d, {i: i for i in range(nd)}, k) if len(v.aval.shape) == nd else free_all(d)
             for k, (d, v) in enumerate(zip(in_deps, eqn.invars))]
    return [merge_deps(*parts)]


def broadcast_in_dim_rule(eqn, in_deps):
    (operand,) = eqn.invars[:1]
    out_shape = eqn.params["shape"]
    dims = eqn.params["broadcast_dimensions"]
    axis_to = {i: d for i, d in enumerate(dims) if operand.aval.shape[i] == out_shape[d]}
    return [_move(eqn, in_deps[0], axis_to)]


def reshape_rule(eqn, in_deps):
    in_shape = eqn.invars[0].aval.shape
    out_shape = eqn.params["new_sizes"]
    # Size-1 axes may come and go while the others keep their order and size.
    a = [i for i, s in enumerate(in_shape) if s != 1]
    b = [j for j, s in enumerate(out_shape) if s != 1]
    if eqn.params.get("dimensions") is not None:
        return [free_all(in_deps[0])]
    if [in_shape[i] for i in a] == [out_shape[j] for j in b]:
        return [_move(eqn, in_deps[0], dict(zip(a, b)))]
    # Row-major order: leading axes shared by both shapes keep their index (only the axes
    # after them are merged or split), and so do shared trailing axes.
    keep = {}
    for i in range(min(len(in_shape), len(out_shape))):
        if in_shape[i] != out_shape[i]:
            break
        keep[i] = i
    for k in range(1, min(len(in_shape), len(out_shape)) + 1):
        i, j = len(in_shape) - k, len(out_shape) - k
        if in_shape[i] != out_shape[j] or i in keep or j in keep.values():
            break
        keep[i] = j
    return [_move(eqn, in_deps[0], keep)]


def squeeze_rule(eqn, in_deps):
    dropped = set(d % len(eqn.invars[0].aval.shape) for d in eqn.params["dimensions"])
    kept = [i for i in range(len(eqn.invars[0].aval.shape)) if i not in dropped]
    return [_move(eqn, in_deps[0], {i: j for j, i in enumerate(kept)})]


def transpose_rule(eqn, in_deps):
    perm = eqn.params["permutation"]
    return [_move(eqn, in_deps[0], {p: j for j, p in enumerate(perm)})]


def reduction_rule(eqn, in_deps):
    axes = set(eqn.params["axes"])
    kept = [i for i in range(len(eqn.invars[0].aval.shape)) if i not in axes]
    out = _move(eqn, in_deps[0], {i: j for j, i in enumerate(kept)})
    return [out for _ in eqn.outvars]


def cumulative_rule(eqn, in_deps):
    nd = len(eqn.invars[0].aval.shape)
    axis = eqn.params["axis"] % nd
    return [_move(eqn, in_deps[0], {i: i for i in range(nd) if i != axis})]


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
    return [merge_deps(_move(eqn, in_deps[0], lmap), _move(eqn, in_deps[1], rmap, 1))]


def concatenate_rule(eqn, in_deps):
    # Operands after the first are shifted along `dimension`: no index identity there.
    dim = eqn.params["dimension"]
    nd = _out_ndims(eqn)[0]
    keep = {i: i for i in range(nd) if i != dim}
    first = _move(eqn, in_deps[0], {i: i for i in range(nd)})
    rest = [_move(eqn, d, keep, k) for k, d in enumerate(in_deps) if k > 0]
    return [merge_deps(first, *rest)]


def stack_rule(eqn, in_deps):
    # A new axis in front of position `axis`; the k-th operand sits at index k along it.
    axis = eqn.params["axis"]
    nd = len(eqn.invars[0].aval.shape)
    shift = {i: (i if i < axis else i + 1) for i in range(nd)}
    return [merge_deps(*[_move(eqn, d, shift, k) for k, d in enumerate(in_deps)])]


def unstack_rule(eqn, in_deps):
    # Output k is operand[..., k, ...] along `axis`: that axis goes, the others move down.
    axis = eqn.params["axis"]
    nd = len(eqn.invars[0].aval.shape)
    down = {i: (i if i < axis else i - 1) for i in range(nd) if i != axis}
    return [_move(eqn, in_deps[0], down, 0, k) for k in range(len(eqn.outvars))]


def reversing_rule(eqn, in_deps):
    # rev / tile: indices along the touched axes no longer line up with the input's.
    touched = set(eqn.params.get("dimensions", ())) | {
        i for i, r in enumerate(eqn.params.get("reps", ())) if r != 1}
    nd = len(eqn.invars[0].aval.shape)
    return [_move(eqn, in_deps[0], {i: i for i in range(nd) if i not in touched})]


def _diagonal_lookups(indices_shape, index_map, batching, fact) -> dict:
    """Operand axes that a gather/scatter reads one-to-one along a lookup axis of its indices:
    `{operand axis: indices axis}` for batching dimensions and for index components that
    are an iota along an indices axis (`x[jnp.arange(n), idx]`, see indices.py)."""
    operand_batch, indices_batch = batching
    pairs = dict(zip(operand_batch, indices_batch))
    cols = columns(fact, indices_shape)
    if cols is not None:
        for c, a in enumerate(cols):
            if a is not None and c < len(index_map):
                pairs.setdefault(index_map[c], a)
    return pairs


def _lookups(eqn, index_map, operand_batch, indices_batch, facts):
    """(lookup axes of the indices, `{operand axis: indices axis}` read one-to-one) of a gather
    or scatter, whose indices are its second operand."""
    indices_shape = eqn.invars[1].aval.shape
    batch = batch_axes(len(indices_shape), len(indices_shape) - 1)
    pairs = _diagonal_lookups(indices_shape, index_map, (operand_batch, tuple(indices_batch)),
                              (facts or [None, None])[1])
    return batch, pairs


def scatter_rule(eqn, in_deps, facts=None):
    """`x.at[idx].set/add/mul(u)`: the output keeps the operand's indices; an update's window
    axis lines up with the operand axis it covers unless that axis is indexed (an offset);
    an update's lookup axis lines up with an operand axis it indexes one-to-one (batching
    dimensions, or an iota index component)."""
    dn = eqn.params["dimension_numbers"]
    nd = len(eqn.invars[0].aval.shape)
    operand_batch = tuple(getattr(dn, "operand_batching_dims", ()))
    window_dims = [d for d in range(nd) if d not in dn.inserted_window_dims and d not in operand_batch]
    to_operand = {u: window_dims[k] for k, u in enumerate(dn.update_window_dims)
                  if window_dims[k] not in dn.scatter_dims_to_operand_dims}
    n_updates = len(eqn.invars[2].aval.shape)
    lookup_axes = [u for u in range(n_updates) if u not in dn.update_window_dims]
    batch, pairs = _lookups(eqn, dn.scatter_dims_to_operand_dims, operand_batch,
                            getattr(dn, "scatter_indices_batching_dims", ()), facts)
    for o, a in pairs.items():
        if a in batch:
            to_operand[lookup_axes[batch.index(a)]] = o
    operand = _move(eqn, in_deps[0], {i: i for i in range(nd)})
    return [merge_deps(operand, _move(eqn, in_deps[2], to_operand, 2))]


def gather_rule(eqn, in_deps, facts=None):
    """`x[idx]`: an output offset axis lines up with the operand axis it slices unless that
    axis is indexed (then the start is an offset); an output lookup axis lines up with an
    operand axis indexed one-to-one along it (batching dimensions, or an iota index
    component: `x[jnp.arange(n), idx]`, `take_along_axis`)."""
    dn = eqn.params["dimension_numbers"]
    nd = len(eqn.invars[0].aval.shape)
    operand_batch = tuple(getattr(dn, "operand_batching_dims", ()))
    kept = [d for d in range(nd) if d not in dn.collapsed_slice_dims and d not in operand_batch]
    to_out = {kept[k]: o for k, o in enumerate(dn.offset_dims) if kept[k] not in dn.start_index_map}
    out_nd = len(eqn.outvars[0].aval.shape)
    lookup_axes = [o for o in range(out_nd) if o not in dn.offset_dims]
    batch, pairs = _lookups(eqn, dn.start_index_map, operand_batch,
                            getattr(dn, "start_indices_batching_dims", ()), facts)
    sizes = eqn.params["slice_sizes"]
    for o, a in pairs.items():
        if a in batch and sizes[o] == 1 and (o in dn.collapsed_slice_dims or o in operand_batch):
            to_out[o] = lookup_axes[batch.index(a)]
    return [_move(eqn, in_deps[0], to_out)]


def dynamic_slice_rule(eqn, in_deps):
    # A start index is clamped so the slice fits: a full-size axis always starts at 0.
    shape = eqn.invars[0].aval.shape
    sizes = eqn.params["slice_sizes"]
    return [_move(eqn, in_deps[0], {i: i for i, (n, k) in enumerate(zip(shape, sizes)) if n == k})]


def dynamic_update_slice_rule(eqn, in_deps):
    shape, update = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
    operand = _move(eqn, in_deps[0], {i: i for i in range(len(shape))})
    aligned = {i: i for i, (n, k) in enumerate(zip(shape, update)) if n == k}
    return [merge_deps(operand, _move(eqn, in_deps[1], aligned, 1))]


def slice_rule(eqn, in_deps):
    starts = eqn.params["start_indices"]
    strides = eqn.params.get("strides") or (1,) * len(starts)
    keep = {i: i for i, (s, st) in enumerate(zip(starts, strides)) if s == 0 and st == 1}
    return [_move(eqn, in_deps[0], keep)]


def pad_rule(eqn, in_deps):
    cfg = eqn.params["padding_config"]
    keep = {i: i for i, (lo, hi, interior) in enumerate(cfg) if lo == 0 and interior == 0}
    return [merge_deps(_move(eqn, in_deps[0], keep), free_all(in_deps[1]))]


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
        outs.append(_move(eqn, in_deps[0], keep, 0, k))
    return outs


def barrier_rule(eqn, in_deps):
    """`optimization_barrier`: output k is operand k, unchanged."""
    return [_move(eqn, d, {i: i for i in range(nd)}, k, k)
            for k, (d, nd) in enumerate(zip(in_deps, _out_ndims(eqn)))]


def cond_structure(eqn, in_deps, ctx):
    """`lax.cond` / `lax.switch`: every branch may run; the index operand has no derivative."""
    outs = None
    for b, branch in enumerate(eqn.params["branches"]):
        o = ctx.walk(branch.jaxpr, list(in_deps[1:]), (b,))
        outs = o if outs is None else [merge_deps(x, y) for x, y in zip(outs, o)]
    return outs


def _loop_fixed_point(carry: List[Deps], run) -> List[Deps]:
    """Carry dependencies of a loop: iterate the body's structure until nothing changes
    (maps only lose matches, so this ends)."""
    while True:
        new = [merge_deps(c, o) for c, o in zip(carry, run(carry))]
        if new == carry:
            return carry
        carry = new


def scan_structure(eqn, in_deps, ctx):
    """`lax.scan` (and static `fori_loop`): consts, carry and sliced xs through the body."""
    body = eqn.params["jaxpr"].jaxpr
    nc, nk = eqn.params["num_consts"], eqn.params["num_carry"]
    consts, carry, xs = in_deps[:nc], list(in_deps[nc:nc + nk]), in_deps[nc + nk:]
    # a slice x[t] drops the scanned axis 0: its matches move down one axis
    sliced = [{key: tuple(None if j in (None, 0) else j - 1 for j in m) for key, m in d.items()} for d in xs]
    carry = _loop_fixed_point(carry, lambda c: ctx.walk(body, list(consts) + list(c) + sliced)[:nk])
    outs = ctx.walk(body, list(consts) + list(carry) + sliced)
    # stacked outputs gain the scanned axis in front
    ys = [{key: tuple(None if j is None else j + 1 for j in m) for key, m in d.items()} for d in outs[nk:]]
    return list(carry) + ys


def while_structure(eqn, in_deps, ctx):
    """`lax.while_loop`: the body's carry structure to a fixed point (the predicate has no derivative)."""
    body = eqn.params["body_jaxpr"].jaxpr
    cn, bn = eqn.params["cond_nconsts"], eqn.params["body_nconsts"]
    consts, carry = in_deps[cn:cn + bn], list(in_deps[cn + bn:])
    return _loop_fixed_point(carry, lambda c: ctx.walk(body, list(consts) + list(c)))


def custom_derivative_structure(eqn, in_deps, ctx):
    """A custom-derivative call, read from the JVP the user defined for it.

    Its primal body is no guide: a Heaviside spike has zero derivative there, while its
    surrogate derivative is what flows. The JVP program takes the primals (no tangent
    dependencies) and then the tangents of the differentiable inputs.
    """
    closed, diff = ctx.derivative(eqn)
    deps = [{} for _ in eqn.invars] + [in_deps[i] for i in diff]
    return ctx.walk(closed.jaxpr, deps)
