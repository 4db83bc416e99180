"""Emit: the online step of a `Plan` as a JAX function (traced once under jit, no Python in the loop).

With s_t = f(s_{t-1}, x_t; θ) and M_t = ds_t/dθ (the traces):

    M_t = ∂f/∂s · M_{t-1} + ∂f/∂θ
    dl_t/dθ = λ_t · M_{t-1} + ∂l_t/∂θ,   λ_t = ∂l_t/∂s_{t-1}

One step evaluates the Jacobian blocks of the update from a few compressed JVP probes (and
reverse rows where cheaper), updates every block in its storage kind (storage.py), and takes
the learning signal from one local reverse pass through the same step.
"""
from __future__ import annotations

from typing import Dict, Hashable, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax._src.interpreters import partial_eval as pe
from jax.extend import core as jcore

from . import jacobian as jac
from .errors import TracerError, source_line
from .interpreter import bind, evaluate
from .jaxpr_util import all_equations, live_part
from .passes.cuts import cut_output
from .records import Plan
from .seeds import enumerated_shape, probes
from .structure import identity_map
from .sparse import post_indices
from .storage import PerEdge, ReadoutFiltered, StepValues


def zero_traces(plan: Plan):
    return tuple(b.zeros() for b in plan.blocks)


def _probe_tangents(plan: Plan):
    """Batched tangents for the JVP program's inputs and the synapse probes."""
    st = plan.structure
    batched = {}
    for entry in plan.probes.entries:
        shape, dtype = st.input_shapes[entry.key], st.input_dtypes[entry.key]
        block = jnp.asarray(probes(shape, entry.compressed, np.dtype(dtype)))
        full = jnp.zeros((plan.probes.count,) + shape, dtype)
        batched[entry.key] = full.at[entry.offset: entry.offset + entry.count].set(block)
    return batched


def jacobian_blocks(plan: Plan, p, s, xs):
    """Evaluate one step: new state, the structured Jacobian blocks of the update, and the
    captured synapse / readout operands."""
    st = plan.structure
    jx = plan.jvp.closed
    S = plan.step.diff_states
    s_avals = plan.step.s_avals
    batched = _probe_tangents(plan)
    # a synapse's, readout's or sparse synapse's result is replaced by its probe
    swapped = {syn.path: syn.key for syn in st.synapses}
    swapped.update({pr.path: pr.key for pr in st.projections})
    swapped.update({e.path: e.key for e in st.edges})
    # operands read on the way: (path, operand, capture key): the presynaptic u, the readout
    # matrix W, a sparse synapse's indices and presynaptic factors
    reads = [(syn.path, 1 - syn.param_side, syn.key) for syn in st.synapses]
    reads += [(pr.path, 1 - pr.side, pr.key) for pr in st.projections]
    reads += [(path, k, (e.key, name)) for e in st.edges for path, k, name in e.captures]
    captured_keys = [key for _, _, key in reads]
    reads_at = {}
    for path, k, key in reads:
        reads_at.setdefault(path, []).append((k, key))
    # in a chain row every source's new tangent is its probe alone (one of them 1, the others 0;
    # what one source passes to another within the step is held fixed: D[z←b] is a partial), so
    # the chained leaf's tangent there is its coefficient D[z←b]; other rows run as written
    probed = {entry.key for entry in plan.probes.entries}
    injected = {path: key for key, path in st.chain_paths.items() if key in probed}
    chain_row = np.zeros(plan.probes.count, np.float32)
    for entry in plan.probes.entries:
        if entry.key.kind == "chain":
            chain_row[entry.offset: entry.offset + entry.count] = 1

    def run(tangents, in_chain_row=None):
        captured = {}

        def override(eqn, invals, path):
            for k, key in reads_at.get(path, ()):
                captured[key] = invals[k]
            if path in injected:
                out = bind(eqn, invals)[0]
                if in_chain_row is not None:
                    out = out * (1 - in_chain_row).astype(out.dtype)
                return [out + tangents[injected[path]]]
            key = swapped.get(path)
            if key is None:
                return bind(eqn, invals)
            if key in tangents:
                return [tangents[key]]
            aval = eqn.outvars[0].aval
            return [jnp.zeros(aval.shape, aval.dtype)]   # reaches no traced state
        overrides = {path: (lambda eqn, invals, path=path: override(eqn, invals, path))
                     for path in set(swapped) | set(reads_at) | set(injected)}
        dp = [tangents.get(("param", j), jnp.zeros(v.shape, v.dtype)) for j, v in enumerate(plan.step.p_avals)]
        ds = [tangents.get(("state", i), jnp.zeros(s_avals[i].shape, s_avals[i].dtype)) for i in S]
        outs = evaluate(jx.jaxpr, jx.consts, list(p) + list(s) + list(xs) + dp + ds, overrides)
        n = len(S)
        return outs[:n] + outs[2 * n:], outs[n: 2 * n], [captured[key] for key in captured_keys]

    if plan.probes.count:
        new_s, tangents, us = jax.vmap(run, in_axes=(0, 0), out_axes=(None, 0, None))(batched, jnp.asarray(chain_row))
    else:   # every block comes from reverse rows
        new_s, _, us = run({})
    us = dict(zip(captured_keys, us))
    for e in st.edges:
        us[(e.key, "post")], us[(e.key, "g")] = e.post(us), e.presynaptic(us)
    blocks: Dict[Tuple[int, Hashable], jac.StructJac] = {}
    traced = {b.state for b in plan.blocks if not b.derived}
    for entry in plan.probes.entries:
        in_shape = st.input_shapes[entry.key]
        enum = enumerated_shape(in_shape, entry.compressed)
        for pos, a in enumerate(S):
            if entry.key.kind == "chain":
                m = identity_map(len(in_shape)) if entry.key.index in st.chains.get(a, ()) else None
            else:   # probes are compressed for traced states only
                m = st.jmap[a].get(entry.key) if a in traced else None
            if m is None:
                continue
            t = tangents[pos][entry.offset: entry.offset + entry.count]
            t = t.reshape(enum + tuple(s_avals[a].shape))
            t = jnp.moveaxis(t, tuple(range(len(enum))), tuple(range(t.ndim - len(enum), t.ndim)))
            spec = tuple(m[k] if k in entry.compressed else None for k in range(len(in_shape)))
            blocks[(a, entry.key)] = jac.respec(jac.StructJac(t, spec, in_shape), m)
    if plan.probes.reverse_states:
        blocks.update(_reverse_rows(plan, run, batched))
    order = list(S) + [i for i in range(len(s)) if i not in S]   # diff leaves, then the others
    full_s = list(s)
    for i, v in zip(order, new_s):
        full_s[i] = v
    return full_s, blocks, us


def _reverse_rows(plan: Plan, run, batched):
    """Blocks of the reverse states from the transpose of the (linear) tangent map."""
    st = plan.structure
    S = plan.step.diff_states
    s_avals = plan.step.s_avals
    example = {key: v[0] for key, v in batched.items()}
    for key in sorted({k for a in plan.probes.reverse_states for k in st.jmap[a]} - set(example), key=str):
        example[key] = jnp.zeros(st.input_shapes[key], st.input_dtypes[key])
    transpose = jax.linear_transpose(lambda t: run(t)[1], example)
    blocks = {}
    for a in plan.probes.reverse_states:
        shape = tuple(s_avals[a].shape)
        n = int(np.prod(shape, dtype=np.int64))
        eye = jnp.eye(n, dtype=s_avals[a].dtype).reshape((n,) + shape)

        def row(ct, a=a):
            cts = [jnp.zeros(s_avals[b].shape, s_avals[b].dtype) for b in S]
            cts[S.index(a)] = ct
            return transpose(cts)[0]
        rows = jax.vmap(row)(eye)
        for key, m in st.jmap[a].items():
            in_shape = st.input_shapes[key]
            full = rows[key].reshape(shape + in_shape)
            blocks[(a, key)] = jac.respec(jac.StructJac(full, (None,) * len(in_shape), in_shape), m)
    return blocks


def update_traces(plan: Plan, J, us, traces):
    """M_t = ∂f/∂s · M_{t-1} + ∂f/∂θ, block by block, each in its storage kind."""
    values = StepValues(J, us, expand(plan, traces, us), [])
    carried = []
    for blk, T in zip(plan.blocks, traces):
        carried.append(blk.update(plan, values, T))
        values.new.append(blk.expand(plan, values.new, carried[-1], us))
    return tuple(carried)


def expand(plan: Plan, traces, us):
    """Every block's value from what it carries (a recomputed block carries coefficients);
    `us` holds each sparse synapse's post indices under `(edge key, "post")` (`edge_posts`)."""
    values = []
    for blk, T in zip(plan.blocks, traces):
        values.append(blk.expand(plan, values, T, us))
    return tuple(values)


def advance(plan: Plan, p, s, xs, traces):
    """New state and new traces of one example (no loss involved)."""
    new_s, J, us = jacobian_blocks(plan, p, s, xs)
    return new_s, update_traces(plan, J, us, traces)


def projection_weights(plan: Plan, p) -> Dict[Hashable, tuple]:
    """The fixed operands of every readout projection — its matrix W, then the factors of the
    per-neuron gains applied before it (`Projection.prefix`) — computed from the parameters alone."""
    projections = plan.structure.projections
    if not projections:
        return {}
    jx = plan.jvp.closed.jaxpr
    operands = [pr.fixed_operands() for pr in projections]
    wanted = [w for ws in operands for w in ws if isinstance(w, jcore.Var)]
    program, used = pe.dce_jaxpr(jx.replace(outvars=wanted), [True] * len(wanted))
    args = [v for v, u in zip(list(p) + [None] * (len(jx.invars) - len(p)), used) if u]
    values = iter(evaluate(program, plan.jvp.closed.consts, args, {}))
    return {pr.key: tuple(w.val if isinstance(w, jcore.Literal) else next(values) for w in ws)
            for pr, ws in zip(projections, operands)}


def signal_context(plan: Plan, p, s) -> Dict[Hashable, object]:
    """What the learning signal needs besides the traces: each readout projection's matrix W and
    each sparse synapse's post indices, computed from parameters and state alone."""
    context = projection_weights(plan, p) if any(isinstance(b, ReadoutFiltered) for b in plan.blocks) else {}
    context.update({key: post for (key, _), post in edge_posts(plan, p, s).items()})
    return context


def edge_posts(plan: Plan, p, s) -> Dict[Hashable, object]:
    """`{(edge key, "post"): post indices}` of every sparse synapse with a per-edge block, computed
    from parameters and state alone (one example's state)."""
    edges = sorted({blk.edge for blk in plan.blocks if isinstance(blk, PerEdge)})
    return {(e.key, "post"): post_indices(e, plan.jvp.closed, len(plan.step.p_avals), len(plan.step.s_avals), p, s)
            for e in (plan.structure.edges[i] for i in edges)}


def contract(plan: Plan, signals, traces, p, s, batched: bool = False):
    """Σ_a signal_a · M[a, p] for every parameter p: the learning signal meets the traces.

    **Arguments:**

    - `signals`: one array per differentiable state leaf (a cotangent, d loss / d state), or None.
    - `traces`: the trace blocks.
    - `p`, `s`: the parameter and state leaves (a readout block W · ē needs the current W, a
      per-edge block the post indices); `s` carries the batch axis with `batched`.
    - `batched`: signals and traces carry a leading batch axis, summed over (one contraction).

    **Returns:**

    One gradient array per parameter leaf.
    """
    S = plan.step.diff_states
    grads = [jnp.zeros(a.shape, a.dtype) for a in plan.step.p_avals]
    if batched and any(isinstance(b, PerEdge) for b in plan.blocks):
        s = [v[0] for v in s]     # indices are read from the state, not per example
    context = signal_context(plan, p, s)
    # a derived block's signal λ_z meets its sources as λ_z ⊙ D[z←b] (storage.Derived)
    moved = {}
    for blk, T in zip(plan.blocks, traces):
        if blk.derived and signals[S.index(blk.state)] is not None:
            for bi, extra in blk.signals_to_sources(plan, signals[S.index(blk.state)], T, batched):
                moved[bi] = extra if bi not in moved else moved[bi] + extra
    for bi, (blk, T) in enumerate(zip(plan.blocks, traces)):
        sig = signals[S.index(blk.state)] if not blk.derived else None
        if bi in moved:
            sig = moved[bi] if sig is None else sig + moved[bi]
        if sig is None:
            continue
        g = blk.contract(plan, sig, T, context, batched)
        grads[blk.param] = grads[blk.param] + g.astype(grads[blk.param].dtype)
    return grads


def reset_traces(plan: Plan, traces, restart):
    """Traces with the entries of the parameter entries flagged in `restart` set to zero.

    **Arguments:**

    - `traces`: the trace blocks (optionally with leading batch axes).
    - `restart`: one boolean array per parameter leaf (its shape) or None (nothing restarts).

    **Returns:**

    The new traces.
    """
    out = []
    for blk, T in zip(plan.blocks, traces):
        where = restart[blk.param]
        if where is None:
            out.append(T)
            continue
        keep = 1 - jnp.asarray(where, T.dtype).reshape(plan.step.p_avals[blk.param].shape)
        out.append(T * blk.keep_mask(plan, keep))
    return tuple(out)


def output_from_new_state(plan: Plan, p, s_new, s_prev, xs):
    """The model's output with its new-state values taken from `s_new` (passes/signal.py)."""
    step = plan.step
    position = plan.signal.state_out_position

    def substitute(eqn, invals):
        outs = bind(eqn, invals)
        return [s_new[position[v]] if v in position else o for v, o in zip(eqn.outvars, outs)]
    overrides = {(i,): substitute for i, eqn in enumerate(step.jaxpr.eqns)
                 if any(v in position for v in eqn.outvars)}
    outs = evaluate(step.jaxpr, step.consts, list(p) + list(s_prev) + list(xs), overrides)
    return jax.tree_util.tree_unflatten(step.y_def, outs[len(s_prev):])


def step(plan: Plan, p, s, traces, xs, loss, batched: bool = False):
    """One online step; `loss(y, i)` is the loss of output y (of example i in a batch).

    With `batched`, state, traces and inputs carry a leading batch axis, the loss is summed
    over it, and the gradient is summed over the batch inside the step (one contraction per
    parameter, as BPTT does). The learning signal meets the traces in the form the plan chose
    (`SignalForm`).

    **Returns:** (new state leaves, new traces, loss, output, gradient leaves).
    """
    S = plan.step.diff_states
    if batched:
        new_s, new_traces = jax.vmap(lambda s_, x_, t_: advance(plan, p, s_, x_, t_))(s, xs, traces)
    else:
        new_s, new_traces = advance(plan, p, s, xs, traces)
    via_new = plan.signal.via_new_state
    base = new_s if via_new else s

    def output(p, s_arg, s_prev, xs_):
        if via_new:
            return output_from_new_state(plan, p, s_arg, jax.lax.stop_gradient(s_prev), xs_)
        return cut_output(plan.step, plan.cuts if plan.cuts.cut_output else None, p, s_arg, xs_)

    def local(p, sd):
        full = list(base)
        for i, v in zip(S, sd):
            full[i] = v
        if not batched:
            y = output(p, full, s, xs)
            return loss(y, None), y
        ys = jax.vmap(lambda a, b, c: output(p, a, b, c))(full, list(s), list(xs))
        index = jnp.arange(jax.tree_util.tree_leaves((s, xs))[0].shape[0])   # the batch (x may be empty)
        return jnp.sum(jax.vmap(lambda y, i: loss(y, i))(ys, index)), ys

    try:
        value, vjp_fn, y = jax.vjp(local, list(p), [base[i] for i in S], has_aux=True)
        direct, lam = vjp_fn(jnp.ones_like(value))
    except ValueError as e:
        error = _reverse_mode_error(e, plan)
        if error is e:
            raise
        raise error from e
    # structurally zero signals skip their contractions (XLA keeps a product with zeros)
    lam = [lam_a if a in plan.signal.signalled else None for a, lam_a in zip(S, lam)]
    signal_traces = new_traces if via_new else traces
    grads = [g + c for g, c in zip(direct, contract(plan, lam, signal_traces, p, s, batched))]
    return list(new_s), new_traces, value, y, grads


def _reverse_mode_error(e, plan: Plan) -> Exception:
    """A TracerError naming the while_loop that the output's local reverse pass met, or `e`."""
    if "while_loop" not in str(e):
        return e
    step_ = plan.step

    def output(p, s, xs):
        return jax.tree_util.tree_leaves(step_.call_model(p, s, xs)[1])
    # only the part of the step that the output needs
    jaxpr, _, _ = live_part(jax.make_jaxpr(output)(step_.p_avals, step_.s_avals, step_.x_avals))
    lines = sorted({source_line(q) for q in all_equations(jaxpr) if q.primitive.name == "while"})
    return TracerError(
        f"the step's output depends on a lax.while_loop (at {', '.join(lines) or 'an unknown line'}), "
        f"and the learning signal dl/ds is taken in reverse mode, which cannot differentiate a "
        f"while_loop (JAX: {e}). Keep the loop in the state update only (the output may read the "
        f"new state, not the loop's result directly), or use lax.fori_loop with static bounds "
        f"or lax.scan.")
