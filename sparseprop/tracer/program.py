"""Build the online program of a step function: traces, their update rules, the gradient.

With s_t = f(s_{t-1}, x_t; θ) and M_t = ds_t/dθ (the trace):

    M_t = ∂f/∂s · M_{t-1} + ∂f/∂θ
    dl_t/dθ = λ_t · M_{t-1} + ∂l_t/∂θ,   λ_t = ∂l_t/∂s_{t-1}

`OnlineProgram` proves the structure of ∂f/∂s and ∂f/∂θ on the JVP program of the step
(`analysis.py`), stores each trace block M[a, p] (state leaf a, parameter leaf p) in
the most compressed form that the proof allows (`jacobian.py`), computes the Jacobian
blocks of one step from a few compressed JVP probes (`seeds.py`), and takes λ_t and the
direct term from one local reverse pass of the same step.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Dict, Hashable, List, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from . import jacobian as jac
from .analysis import Analysis, Synapse, analyse
from .errors import TracerError, source_line
from .interpreter import FORWARD_DIFFERENTIABLE, bind, evaluate, forward
from .jaxpr_util import all_equations, equation_at, live_part
from .methods import Method
from .seeds import compressed_axes, enumerated_shape, probes
from .structure import AxisMap, compose_maps, identity_map, merge_maps

DENSE_WARNING_BYTES = 64 * 2**20


def _inexact(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


@dataclass
class TraceBlock:
    state: int                 # index into the flat state leaves
    param: int                 # index into the flat parameter leaves
    spec: AxisMap              # parameter axis -> state axis it is matched to, or None
    shape: Tuple[int, ...]
    dtype: object
    factorised: bool = False   # stored without the neuron axes: e[i, l] = ū[l] for every i

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


class OnlineProgram:
    """The compiled structure of one model at one set of shapes (built once, then jitted)."""

    def __init__(self, model, method: Method, params, state, x):
        self.model, self.method = model, method
        p_named, self.p_def = jax.tree_util.tree_flatten_with_path(params)
        s_named, self.s_def = jax.tree_util.tree_flatten_with_path(state)
        self.param_names = ["params" + jax.tree_util.keystr(k) for k, _ in p_named]
        self.state_names = ["state" + jax.tree_util.keystr(k) for k, _ in s_named]
        p = [jnp.asarray(v) for _, v in p_named]
        s = [jnp.asarray(v) for _, v in s_named]
        xs, self.x_def = jax.tree_util.tree_flatten(x)
        self.x_avals = [jax.ShapeDtypeStruct(jnp.shape(v), jnp.result_type(v)) for v in xs]
        self.p_avals = [jax.ShapeDtypeStruct(v.shape, v.dtype) for v in p]
        self.s_avals = [jax.ShapeDtypeStruct(v.shape, v.dtype) for v in s]
        self.diff_states = [i for i, v in enumerate(s) if _inexact(v)]
        self._trace_model(p, s, xs)
        self._trace_jvp(p, s, xs)
        self._plan()
        self._plan_output(p, s, xs)

    # ---------------------------------------------------------------- tracing
    def call_model(self, p_leaves, s_leaves, x_leaves):
        params = jax.tree_util.tree_unflatten(self.p_def, p_leaves)
        state = jax.tree_util.tree_unflatten(self.s_def, s_leaves)
        x = jax.tree_util.tree_unflatten(self.x_def, x_leaves)
        return self.model(params, state, x)

    def _trace_model(self, p, s, xs):
        def state_only(p, s, xs):
            new_state, _ = self.call_model(p, s, xs)
            return jax.tree_util.tree_leaves(new_state)

        # Only the part that computes the new state: the output's mixing (a readout) is not cut.
        self.state_jaxpr, self.state_consts, self.state_inputs_used = live_part(
            jax.make_jaxpr(state_only)(p, s, xs))
        in_deps = [{} for _ in p] + [
            {("state", i): identity_map(len(s[i].shape))} if i in self.diff_states else {}
            for i in range(len(s))] + [{} for _ in xs]
        in_deps = [d for d, used in zip(in_deps, self.state_inputs_used) if used]
        self.mixing_analysis = analyse(self.state_jaxpr, in_deps, mode="mixing", cut=self.method.cut)
        self.cuts = [m for m in self.mixing_analysis.mixing if self.method.cut(m)]

    def state_fn(self, p, s, xs):
        """The model's state update with the method's cuts applied (stop_gradient)."""
        overrides = {c.path: _stop_gradient_operand(c.operand) for c in self.cuts}
        args = [a for a, used in zip(list(p) + list(s) + list(xs), self.state_inputs_used) if used]
        return evaluate(self.state_jaxpr, self.state_consts, args, overrides, FORWARD_DIFFERENTIABLE)

    def _trace_jvp(self, p, s, xs):
        ds_idx = self.diff_states

        fixed_idx = [i for i in range(len(s)) if i not in ds_idx]

        def jvp_program(p, s, xs, dp, ds):
            def f(p, sd):
                full = list(s)
                for i, v in zip(ds_idx, sd):
                    full[i] = v
                new = self.state_fn(p, full, xs)
                return [new[i] for i in ds_idx]
            primal, tangent = jax.jvp(f, (p, [s[i] for i in ds_idx]), (dp, ds))
            # state leaves without a derivative (integer counters) still advance
            new = self.state_fn(p, s, xs) if fixed_idx else []
            return primal, tangent, [new[i] for i in fixed_idx]

        try:
            self.jvp_jaxpr = jax.make_jaxpr(jvp_program)(p, s, xs, p, [s[i] for i in ds_idx])
        except TracerError:
            raise
        except Exception as e:    # the model traced fine above, so this is about its derivative
            raise TracerError(_explain_jvp_failure(e, self.state_jaxpr)) from e
        jx = self.jvp_jaxpr.jaxpr
        n_in = len(p) + len(s) + len(xs)
        dp_vars = jx.invars[n_in: n_in + len(p)]
        in_deps = [{} for _ in range(n_in)]
        in_deps += [{("param", j): identity_map(len(p[j].shape))} for j in range(len(p))]
        in_deps += [{("state", i): identity_map(len(s[i].shape))} for i in ds_idx]
        raw = {v: (("param", j), identity_map(len(p[j].shape))) for j, v in enumerate(dp_vars)}
        self.jacobian_analysis: Analysis = analyse(jx, in_deps, mode="jacobian", raw=raw)
        n_out = len(ds_idx)
        self.tangent_deps = self.jacobian_analysis.outputs[n_out: 2 * n_out]
        self._synapse_out_dtype = {syn.key[1]: self._synapse_eqn_dtype(syn)
                                   for syn in self.jacobian_analysis.synapses}

    # ---------------------------------------------------------------- planning
    def _input_shape(self, key):
        kind, k = key
        if kind == "param":
            return tuple(self.p_avals[k].shape)
        if kind == "state":
            return tuple(self.s_avals[k].shape)
        return self.jacobian_analysis.synapses[k].out_shape

    def _synapse_param_map(self, syn: Synapse) -> AxisMap:
        """Map of the synapse output I on its parameter W: kept axes matched, contracted free."""
        (lc, rc), (lb, rb) = syn.dimension_numbers
        ndims = len(self._input_shape(syn.param))
        contract, batch = (lc, lb) if syn.param_side == 0 else (rc, rb)
        free = [a for a in range(ndims) if a not in contract and a not in batch]
        # output axes: batch, then the lhs's free axes, then the rhs's
        other_free = len(syn.out_shape) - len(batch) - len(free) if syn.param_side == 1 else 0
        out = [None] * ndims
        for pos, a in enumerate(batch):
            out[syn.perm[a]] = pos
        for pos, a in enumerate(free):
            out[syn.perm[a]] = len(batch) + other_free + pos
        return tuple(out)

    def _plan(self):
        an = self.jacobian_analysis
        S = self.diff_states
        # dependency maps of each new-state leaf (by flat state index) on each tracked input
        self.jmap: Dict[int, Dict[Hashable, AxisMap]] = {a: dict(d) for a, d in zip(S, self.tangent_deps)}
        # direct maps of states on parameters (through synapses or other uses)
        direct: Dict[Tuple[int, int], AxisMap] = {}
        for a in S:
            for key, m in self.jmap[a].items():
                if key[0] == "param":
                    direct[(a, key[1])] = merge_maps(direct.get((a, key[1])), m)
                elif key[0] == "synapse":
                    syn = an.synapses[key[1]]
                    pm = compose_maps(m, self._synapse_param_map(syn))
                    direct[(a, syn.param[1])] = merge_maps(direct.get((a, syn.param[1])), pm)
        # fixed point: total(a, p) = direct ∪ ⋃_b J[a←b] ∘ total(b, p)
        total = self._fixed_point(direct)
        # SnAp-1 keeps the one-step pattern; what the fixed point adds is truncated (and reported)
        self.truncated = []
        if self.method.one_step_pattern:
            self.truncated = sorted(k for k, m in total.items() if direct.get(k) != m)
            total = direct
        self.blocks: List[TraceBlock] = []
        for (a, pj), spec in sorted(total.items()):
            shape = jac.stored_shape(self.s_avals[a].shape, spec, self.p_avals[pj].shape)
            dtype = jnp.result_type(self.s_avals[a].dtype, self.p_avals[pj].dtype)
            self.blocks.append(TraceBlock(a, pj, spec, shape, dtype))
        self.block_index = {(b.state, b.param): i for i, b in enumerate(self.blocks)}
        self._factorise()
        self._plan_probes()
        dense = sum(b.nbytes for b in self.blocks if all(s is None for s in b.spec) and len(b.spec))
        if dense > DENSE_WARNING_BYTES:
            warnings.warn(
                f"sparseprop: exact online learning needs dense trace blocks of {dense / 2**20:.1f} MiB "
                f"per example (a matrix or reduction couples neurons of the previous state); "
                f"method='eprop' keeps traces per neuron. See learner.explain().", stacklevel=4)

    def _probe_plan(self, reverse):
        """Forward probes for every input that a new state outside `reverse` depends on."""
        S = [a for a in self.diff_states if a not in reverse]
        inputs = sorted({key for a in S for key in self.jmap[a]}, key=str)
        plan, offset = [], 0   # (key, compressed axes, offset, count)
        for key in inputs:
            shape = self._input_shape(key)
            comp = compressed_axes([self.jmap[a][key] for a in S if key in self.jmap[a]], len(shape))
            count = int(np.prod(enumerated_shape(shape, comp), dtype=np.int64))
            plan.append((key, comp, offset, count))
            offset += count
        return plan, offset

    def _plan_probes(self):
        """Choose how each Jacobian block is measured: forward probes (one per enumerated
        input index, compressed along proved diagonals) or, for new-state leaves with a
        dense block, reverse rows (one per entry of that leaf: cheap for a small readout
        fed by a wide layer)."""
        size = {a: int(np.prod(self.s_avals[a].shape, dtype=np.int64)) for a in self.diff_states}
        dense = [a for a in self.diff_states
                 if any(m and all(x is None for x in m) for m in self.jmap[a].values())]
        self.reverse_states = []
        best = self._probe_plan(())[1]
        for a in sorted(dense, key=size.get):
            trial = self.reverse_states + [a]
            cost = self._probe_plan(trial)[1] + sum(size[r] for r in trial)
            if cost < best:
                self.reverse_states, best = trial, cost
        self.probe_plan, self.n_probes = self._probe_plan(self.reverse_states)

    def _fixed_point(self, direct):
        """The trace structure: total(a, p) = direct ∪ ⋃_b J[a←b] ∘ total(b, p), to a fixed point."""
        S = self.diff_states
        total = dict(direct)
        changed = True
        while changed:
            changed = False
            for a in S:
                for key, m in self.jmap[a].items():
                    if key[0] != "state":
                        continue
                    b = key[1]
                    for (bb, pj), tm in list(total.items()):
                        if bb != b:
                            continue
                        new = merge_maps(total.get((a, pj)), compose_maps(m, tm))
                        if new != total.get((a, pj)):
                            total[(a, pj)] = new
                            changed = True
        return total

    def _factorise(self):
        """Store a trace block as ū[l] when it provably does not depend on the neuron index.

        Holds when the block's only sources are synapses and other such blocks, through
        Jacobian blocks that are a scalar times the identity (uniformity.py), and every
        axis of the state is matched to the parameter (so nothing else indexes it).
        """
        S = self.diff_states
        n_out = len(S)
        uniform = {a: self.jacobian_analysis.uniform[n_out + pos] for pos, a in enumerate(S)}
        ok = {}
        for blk in self.blocks:
            a, pj = blk.state, blk.param
            a_ndim = len(self.s_avals[a].shape)
            matched = sorted(x for x in blk.spec if x is not None)
            deps = self.jmap[a]
            ok[(a, pj)] = (
                matched == list(range(a_ndim)) and any(x is None for x in blk.spec)
                and ("param", pj) not in deps
                and all(key in uniform[a] for key in deps
                        if key[0] == "synapse" and self.jacobian_analysis.synapses[key[1]].param == ("param", pj))
                and all(key in uniform[a] for key in deps
                        if key[0] == "state" and (key[1], pj) in self.block_index))
        changed = True
        while changed:   # a factorised block may only be fed by factorised blocks
            changed = False
            for (a, pj), good in list(ok.items()):
                if good and not all(ok.get((key[1], pj), True) for key in self.jmap[a] if key[0] == "state"):
                    ok[(a, pj)] = False
                    changed = True
        for blk in self.blocks:
            if ok[(blk.state, blk.param)]:
                blk.factorised = True
                blk.shape = jac.free_shape(blk.spec, self.p_avals[blk.param].shape)

    # ---------------------------------------------------------------- run time
    def zero_traces(self):
        return tuple(jnp.zeros(b.shape, b.dtype) for b in self.blocks)

    def _probe_tangents(self):
        """Batched tangents for the JVP program's inputs and the synapse probes."""
        batched = {}
        for key, comp, offset, count in self.probe_plan:
            shape, dtype = self._input_shape(key), self._input_dtype(key)
            block = jnp.asarray(probes(shape, comp, np.dtype(dtype)))
            full = jnp.zeros((self.n_probes,) + shape, dtype)
            batched[key] = full.at[offset: offset + count].set(block)
        return batched

    def jacobian_blocks(self, p, s, xs):
        """Evaluate one step: new state and the structured Jacobian blocks of the update."""
        an = self.jacobian_analysis
        jx = self.jvp_jaxpr
        S = self.diff_states
        batched = self._probe_tangents()

        def run(tangents):
            captured = {}
            overrides = {}
            for syn in an.synapses:
                def take(eqn, invals, syn=syn):
                    captured[syn.key[1]] = invals[1 - syn.param_side]
                    if syn.key in tangents:
                        return [tangents[syn.key]]
                    aval = eqn.outvars[0].aval
                    return [jnp.zeros(aval.shape, aval.dtype)]   # reaches no new state
                overrides[syn.path] = take
            dp = [tangents.get(("param", j), jnp.zeros(v.shape, v.dtype)) for j, v in enumerate(self.p_avals)]
            ds = [tangents.get(("state", i), jnp.zeros(self.s_avals[i].shape, self.s_avals[i].dtype))
                  for i in S]
            outs = evaluate(jx.jaxpr, jx.consts, list(p) + list(s) + list(xs) + dp + ds, overrides)
            n = len(S)
            return outs[:n] + outs[2 * n:], outs[n: 2 * n], [captured[k] for k in range(len(an.synapses))]

        if self.n_probes:
            new_s, tangents, us = jax.vmap(run, in_axes=(0,), out_axes=(None, 0, None))(batched)
        else:   # every block comes from reverse rows
            new_s, _, us = run({})
        blocks: Dict[Tuple[int, Hashable], jac.StructJac] = {}
        for key, comp, offset, count in self.probe_plan:
            in_shape = self._input_shape(key)
            enum = enumerated_shape(in_shape, comp)
            for pos, a in enumerate(S):
                m = self.jmap[a].get(key)
                if m is None:
                    continue
                t = tangents[pos][offset: offset + count]
                t = t.reshape(enum + tuple(self.s_avals[a].shape))
                t = jnp.moveaxis(t, tuple(range(len(enum))), tuple(range(t.ndim - len(enum), t.ndim)))
                spec = tuple(m[k] if k in comp else None for k in range(len(in_shape)))
                blocks[(a, key)] = jac.respec(jac.StructJac(t, spec, in_shape), m)
        if self.reverse_states:
            blocks.update(self._reverse_rows(run, batched))
        order = S + [i for i in range(len(s)) if i not in S]   # diff leaves, then the others
        full_s = list(s)
        for i, v in zip(order, new_s):
            full_s[i] = v
        return full_s, blocks, us

    def _reverse_rows(self, run, batched):
        """Blocks of the `reverse_states` from the transpose of the (linear) tangent map."""
        S = self.diff_states
        example = {key: v[0] for key, v in batched.items()}
        for key in sorted({k for a in self.reverse_states for k in self.jmap[a]} - set(example), key=str):
            example[key] = jnp.zeros(self._input_shape(key), self._input_dtype(key))
        transpose = jax.linear_transpose(lambda t: run(t)[1], example)
        blocks = {}
        for a in self.reverse_states:
            shape = tuple(self.s_avals[a].shape)
            n = int(np.prod(shape, dtype=np.int64))
            eye = jnp.eye(n, dtype=self.s_avals[a].dtype).reshape((n,) + shape)

            def row(ct, a=a):
                cts = [jnp.zeros(self.s_avals[b].shape, self.s_avals[b].dtype) for b in S]
                cts[S.index(a)] = ct
                return transpose(cts)[0]
            rows = jax.vmap(row)(eye)
            for key, m in self.jmap[a].items():
                in_shape = self._input_shape(key)
                full = rows[key].reshape(shape + in_shape)
                blocks[(a, key)] = jac.respec(jac.StructJac(full, (None,) * len(in_shape), in_shape), m)
        return blocks

    def _input_dtype(self, key):
        if key[0] == "param":
            return self.p_avals[key[1]].dtype
        if key[0] == "state":
            return self.s_avals[key[1]].dtype
        return self._synapse_out_dtype[key[1]]

    def _synapse_eqn_dtype(self, syn: Synapse):
        eqn = equation_at(self.jvp_jaxpr.jaxpr, syn.path)
        return eqn.outvars[0].aval.dtype

    def synapse_block(self, psi: jac.StructJac, u, syn: Synapse) -> jac.StructJac:
        """d state / d W from ψ = d state / d I and the presynaptic operand u of I = W·u."""
        (lc, rc), (lb, rb) = syn.dimension_numbers
        p_shape = self._input_shape(syn.param)
        fresh = jac.Labels()
        p_labels = [fresh() for _ in p_shape]
        w_ndim = len(p_shape)
        u_ndim = u.ndim
        w_contract, u_contract = (lc, rc) if syn.param_side == 0 else (rc, lc)
        w_batch, u_batch = (lb, rb) if syn.param_side == 0 else (rb, lb)
        op_label = [p_labels[syn.perm[a]] for a in range(w_ndim)]    # labels of W's operand axes
        u_labels = [None] * u_ndim
        for wa, ua in zip(w_contract, u_contract):
            u_labels[ua] = op_label[wa]
        for wa, ua in zip(w_batch, u_batch):
            u_labels[ua] = op_label[wa]
        for ua in range(u_ndim):
            if u_labels[ua] is None:
                u_labels[ua] = fresh()
        w_free = [op_label[a] for a in range(w_ndim) if a not in w_contract and a not in w_batch]
        u_free = [u_labels[a] for a in range(u_ndim) if a not in u_contract and a not in u_batch]
        batch = [op_label[a] for a in w_batch]
        i_labels = batch + (w_free + u_free if syn.param_side == 0 else u_free + w_free)
        s_out, s_free = jac.stored_labels(psi.out_ndim, psi.spec, i_labels, fresh)
        spec = tuple(s_out.index(l) if l in s_out else None for l in p_labels)
        out = s_out + [l for l, sp in zip(p_labels, spec) if sp is None]
        array = jac.einsum([psi.array, u], [s_out + s_free, u_labels], out)
        return jac.StructJac(array, spec, p_shape)

    def contract(self, signals, traces, batched: bool = False):
        """Σ_a signal_a · M[a, p] for every parameter p: the learning signal meets the traces.

        **Arguments:**

        - `signals`: one array per differentiable state leaf (a cotangent, d loss / d state), or None.
        - `traces`: the trace blocks.
        - `batched`: signals and traces carry a leading batch axis, summed over (one contraction).

        **Returns:**

        One gradient array per parameter leaf.
        """
        S = self.diff_states
        grads = [jnp.zeros(a.shape, a.dtype) for a in self.p_avals]
        for blk, T in zip(self.blocks, traces):
            sig = signals[S.index(blk.state)]
            if sig is None:
                continue
            fresh = jac.Labels()
            p_labels = [fresh() for _ in self.p_avals[blk.param].shape]
            a_labels = [fresh() for _ in self.s_avals[blk.state].shape]
            for k, j in enumerate(blk.spec):
                if j is not None:
                    a_labels[j] = p_labels[k]
            t_labels = ([] if blk.factorised else list(a_labels)) + [
                p_labels[k] for k, j in enumerate(blk.spec) if j is None]
            batch = [fresh()] if batched else []
            g = jac.einsum([sig, T], [batch + a_labels, batch + t_labels], p_labels)
            grads[blk.param] = grads[blk.param] + g.astype(grads[blk.param].dtype)
        return grads

    def advance(self, p, s, xs, traces):
        """New state and new traces of one example (no loss involved)."""
        new_s, J, us = self.jacobian_blocks(p, s, xs)
        return new_s, self.update_traces(J, us, traces)

    def update_traces(self, J, us, traces):
        """M_t = ∂f/∂s · M_{t-1} + ∂f/∂θ, block by block, in each block's stored form."""
        an = self.jacobian_analysis
        new_traces = []
        for blk, T in zip(self.blocks, traces):
            a, pj = blk.state, blk.param
            parts = []
            state_terms = [(k, v) for (aa, k), v in J.items() if aa == a and k[0] == "state"]
            synapses = [syn for syn in an.synapses if syn.param == ("param", pj) and (a, syn.key) in J]
            if blk.factorised:
                # every Jacobian here is c·I: multiply the stored ū by the scalar c
                total = jnp.zeros(blk.shape, blk.dtype)
                for key, Jab in state_terms:
                    bi = self.block_index.get((key[1], pj))
                    if bi is not None:
                        total = total + _scalar(Jab.array) * traces[bi]
                for syn in synapses:
                    psi = J[(a, syn.key)]
                    ones = jac.StructJac(jnp.ones_like(psi.array), psi.spec, psi.in_shape)
                    row = self.synapse_block(ones, us[syn.key[1]], syn)
                    row = jac.respec(row, blk.spec).array[(0,) * len(self.s_avals[a].shape)]
                    total = total + _scalar(psi.array) * row
                new_traces.append(total.astype(blk.dtype))
                continue
            for key, Jab in state_terms:
                bi = self.block_index.get((key[1], pj))
                if bi is not None:
                    prev = self._full_block(bi, traces[bi])
                    parts.append(jac.compose(Jab, prev, blk.spec))
            if (a, ("param", pj)) in J:
                parts.append(J[(a, ("param", pj))])
            for syn in synapses:
                parts.append(self.synapse_block(J[(a, syn.key)], us[syn.key[1]], syn))
            total = jac.add(parts, blk.spec)
            new_traces.append(jnp.zeros(blk.shape, blk.dtype) if total is None
                              else total.array.astype(blk.dtype))
        return tuple(new_traces)

    def _full_block(self, i, T) -> jac.StructJac:
        blk = self.blocks[i]
        p_shape = self.p_avals[blk.param].shape
        if blk.factorised:
            a_shape = tuple(self.s_avals[blk.state].shape)
            T = jnp.broadcast_to(T, a_shape + T.shape)
        return jac.StructJac(T, blk.spec, p_shape)

    def step(self, p, s, traces, xs, loss, batched: bool = False):
        """One online step; `loss(y, i)` is the loss of output y (of example i in a batch).

        With `batched`, state, traces and inputs carry a leading batch axis, the loss is
        summed over it, and the gradient is summed over the batch inside the step (one
        contraction per parameter, as BPTT does).

        The learning signal meets the traces in one of two equal ways: λ_t = ∂l_t/∂s_{t-1}
        with the previous traces plus the step's direct term (always valid), or, when the
        output provably depends on the previous state and the traced parameters only
        through the new state (`output_via_state`), ∂l_t/∂s_t with the new traces, which
        saves the direct term's contraction.

        **Returns:** (new state leaves, new traces, loss, output, gradient leaves).
        """
        S = self.diff_states
        if batched:
            new_s, new_traces = jax.vmap(self.advance, in_axes=(None, 0, 0, 0))(p, s, xs, traces)
        else:
            new_s, new_traces = self.advance(p, s, xs, traces)
        via_new = self.output_via_state
        base = new_s if via_new else s

        def output(p, s_arg, s_prev, xs_):
            if via_new:
                return self.output_from_new_state(p, s_arg, jax.lax.stop_gradient(s_prev), xs_)
            return self.call_model(p, s_arg, xs_)[1]

        def local(p, sd):
            full = list(base)
            for i, v in zip(S, sd):
                full[i] = v
            if not batched:
                y = output(p, full, s, xs)
                return loss(y, None), y
            ys = jax.vmap(lambda a, b, c: output(p, a, b, c))(full, list(s), list(xs))
            index = jnp.arange(xs[0].shape[0])
            return jnp.sum(jax.vmap(lambda y, i: loss(y, i))(ys, index)), ys

        try:
            value, vjp_fn, y = jax.vjp(local, list(p), [base[i] for i in S], has_aux=True)
            direct, lam = vjp_fn(jnp.ones_like(value))
        except ValueError as e:
            error = _reverse_mode_error(e, self)
            if error is e:
                raise
            raise error from e
        signal_traces = new_traces if via_new else traces
        grads = [g + c for g, c in zip(direct, self.contract(lam, signal_traces, batched))]
        return list(new_s), new_traces, value, y, grads

    # ------------------------------------------------------- output through the new state
    def _plan_output(self, p, s, xs):
        """Decide `output_via_state`: y reaches the previous state and the traced parameters
        only through the new state's values (proved on the model's jaxpr, top level)."""
        self.output_via_state = False
        if self.cuts or self.truncated:
            # both forms are equal only for the exact recursion; approximations keep the
            # exact one-step learning signal λ_t = ∂l_t/∂s_{t-1} (the documented semantics)
            return

        def flat(p, s, xs):
            new_state, y = self.call_model(p, s, xs)
            y_leaves, self.y_def = jax.tree_util.tree_flatten(y)
            return jax.tree_util.tree_leaves(new_state) + y_leaves
        closed = jax.make_jaxpr(flat)(p, s, xs)
        jx = closed.jaxpr
        n_s = len(s)
        state_out = jx.outvars[:n_s]
        if any(not isinstance(v, jcore.Var) or v in jx.invars for v in state_out) or \
                len(set(state_out)) != n_s:
            return
        traced = {b.param for b in self.blocks}
        tainted = {v for j, v in enumerate(jx.invars[:len(p)]) if j in traced}
        tainted |= {jx.invars[len(p) + i] for i in self.diff_states}
        cut = set(state_out)
        for eqn in jx.eqns:
            if any(isinstance(v, jcore.Var) and v in tainted for v in eqn.invars):
                tainted |= {v for v in eqn.outvars if v not in cut}
        if any(isinstance(v, jcore.Var) and v in tainted for v in jx.outvars[n_s:]):
            return
        self.model_jaxpr, self.model_consts = jx, closed.consts
        self.state_out_position = {v: i for i, v in enumerate(state_out)}
        self.output_via_state = True

    def output_from_new_state(self, p, s_new, s_prev, xs):
        """The model's output with its new-state values taken from `s_new` (see `_plan_output`)."""
        position = self.state_out_position

        def substitute(eqn, invals):
            outs = bind(eqn, invals)
            return [s_new[position[v]] if v in position else o for v, o in zip(eqn.outvars, outs)]
        overrides = {(i,): substitute for i, eqn in enumerate(self.model_jaxpr.eqns)
                     if any(v in position for v in eqn.outvars)}
        outs = evaluate(self.model_jaxpr, self.model_consts, list(p) + list(s_prev) + list(xs), overrides)
        return jax.tree_util.tree_unflatten(self.y_def, outs[len(s_prev):])


def _scalar(x):
    """The common value of an array proved to be equal at every index."""
    return x.reshape(-1)[0]


def _stop_gradient_operand(k):
    def override(eqn, invals):
        invals = list(invals)
        invals[k] = jax.lax.stop_gradient(invals[k])
        return forward(eqn, invals)
    return override


def _reverse_mode_error(e, prog: "OnlineProgram") -> Exception:
    """A TracerError naming the while_loop that the output's local reverse pass met, or `e`."""
    if "while_loop" not in str(e):
        return e

    def output(p, s, xs):
        return jax.tree_util.tree_leaves(prog.call_model(p, s, xs)[1])
    # only the part of the step that the output needs
    jaxpr, _, _ = live_part(jax.make_jaxpr(output)(prog.p_avals, prog.s_avals, prog.x_avals))
    lines = sorted({source_line(q) for q in all_equations(jaxpr) if q.primitive.name == "while"})
    return TracerError(
        f"the step's output depends on a lax.while_loop (at {', '.join(lines) or 'an unknown line'}), "
        f"and the learning signal dl/ds is taken in reverse mode, which cannot differentiate a "
        f"while_loop (JAX: {e}). Keep the loop in the state update only (the output may read the "
        f"new state, not the loop's result directly), or use lax.fori_loop with static bounds "
        f"or lax.scan.")


def _explain_jvp_failure(e, jaxpr) -> str:
    msg = str(e)
    lowered = msg.lower()
    for eqn in all_equations(jaxpr):
        name = eqn.primitive.name
        if name in msg or name.replace("_", " ") in lowered:
            return (f"sparseprop cannot differentiate the primitive '{name}' (at {source_line(eqn)}) "
                    f"in forward mode, which every online method needs: {type(e).__name__}: {msg} "
                    f"Give that operation a derivative with jax.custom_jvp, or keep it out of the "
                    f"state update (an operation on the output only is differentiated in reverse mode).")
    return f"sparseprop cannot build the forward-mode program of this model: {type(e).__name__}: {msg}"


__all__ = ["OnlineProgram", "TraceBlock", "TracerError"]
