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
from typing import Dict, Hashable, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore
from jax._src.interpreters import partial_eval as pe

from . import convolution
from . import jacobian as jac
from .analysis import NEURON_AXIS, Analysis, Mixing, MixTag, Synapse, analyse
from .errors import TracerError, source_line
from .interpreter import FORWARD_DIFFERENTIABLE, bind, evaluate, forward
from .jaxpr_util import all_equations, equation_at, live_part, live_program
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
    via: Hashable = None       # a readout's block kept as W · ē: the key of its `Projection`
    window: Optional[int] = None   # factorised convolution: ū is the filtered input of this synapse

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass
class Projection:
    """A readout `y ← c·y + W · s_b` of new state leaf b through a fixed matrix W.

    With c and the readout's coefficient scalars, M[y, p] = W · ē[b, p] for every parameter p
    that reaches b, where ē_t = c ē_{t-1} + M_t[b, p] is b's trace filtered by the readout
    (the κ-filtered eligibility of e-prop, Bellec et al. 2020): one trace like b's instead of
    one per readout unit. W is taken at its current value (constant while parameters are).
    """
    path: Tuple[int, ...]      # the dot_general in the JVP program (top level)
    key: Hashable              # ("projection", k): the tracked input standing for W · ds_b
    source: int                # b: flat index of the state leaf read out
    side: int                  # operand position of ds_b in the dot_general
    eqn: object

    def apply(self, w, t):
        """W · t for a tangent (or trace slice) `t` shaped like state b."""
        return bind(self.eqn, [w, t] if self.side == 1 else [t, w])[0]


class OnlineProgram:
    """The compiled structure of one model at one set of shapes (built once, then jitted)."""

    def __init__(self, model, method: Method, params, state, x, keep_all_traces: bool = False):
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
        self.projections = self._find_projections(len(p))
        while True:     # a readout that cannot be kept filtered is analysed as a plain operation
            self._analyse_jacobian()
            rejected = self._plan()
            if not rejected:
                break
            self.projections = [pr for pr in self.projections if pr.key not in rejected]
        self._plan_output(p, s, xs)
        self._prune(keep_all_traces)

    # ---------------------------------------------------------------- tracing
    def call_model(self, p_leaves, s_leaves, x_leaves):
        params = jax.tree_util.tree_unflatten(self.p_def, p_leaves)
        state = jax.tree_util.tree_unflatten(self.s_def, s_leaves)
        x = jax.tree_util.tree_unflatten(self.x_def, x_leaves)
        return self.model(params, state, x)

    def _trace_model(self, p, s, xs):
        def flat(p, s, xs):
            new_state, y = self.call_model(p, s, xs)
            y_leaves, self.y_def = jax.tree_util.tree_flatten(y)
            return jax.tree_util.tree_leaves(new_state) + y_leaves

        # The whole step, state update and output: a method's cuts apply to both alike.
        closed = jax.make_jaxpr(flat)(p, s, xs)
        self.model_jaxpr, self.model_consts = closed.jaxpr, closed.consts
        in_deps = [{} for _ in p] + [
            {("state", i): identity_map(len(s[i].shape))} if i in self.diff_states else {}
            for i in range(len(s))] + [{} for _ in xs]
        # Classify every mixing equation: the state graph comes from the model as written;
        # cutting every mixing operand finds them all (a cut never reveals a new one).
        uncut = analyse(self.model_jaxpr, in_deps, mode="mixing").outputs
        graph = uncut[:len(s)]
        found = analyse(self.model_jaxpr, in_deps, mode="mixing", cut=lambda mix: True)
        flags = _mixing_flags(found, graph)
        for mix in found.mixing:
            _set_flags(mix, flags)
        self.mixing_found = found.mixing     # every mixing equation, for explain()
        self.mixing_analysis = analyse(self.model_jaxpr, in_deps, mode="mixing", cut=self.method.cut,
                                       classify=lambda mix: _set_flags(mix, flags))
        # previous state leaves the output depends on, through the step the learning signal takes
        outputs = (self.mixing_analysis.outputs if self.method.cut_output else uncut)[len(s):]
        self.output_reads_previous = {key[1] for d in outputs for key in d
                                      if isinstance(key, tuple) and key[0] == "state"}
        self.cuts = [m for m in self.mixing_analysis.mixing if self.method.cut(m)]

    def _evaluate_cut(self, p, s, xs, forward_differentiable):
        overrides = {c.path: _stop_gradient_operand(c.operand) for c in self.cuts}
        return evaluate(self.model_jaxpr, self.model_consts, list(p) + list(s) + list(xs), overrides,
                        FORWARD_DIFFERENTIABLE if forward_differentiable else None)

    def state_fn(self, p, s, xs):
        """The model's state update with the method's cuts applied (stop_gradient)."""
        return self._evaluate_cut(p, s, xs, True)[:len(s)]

    def cut_output(self, p, s, xs):
        """The model's output with the method's cuts applied (the step the learning signal goes through)."""
        outs = self._evaluate_cut(p, s, xs, False)[len(s):]
        return jax.tree_util.tree_unflatten(self.y_def, outs)

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
            raise TracerError(_explain_jvp_failure(e, self.model_jaxpr)) from e
        self.jvp_jaxpr = live_program(self.jvp_jaxpr)
        jx = self.jvp_jaxpr.jaxpr
        n_in = len(p) + len(s) + len(xs)
        dp_vars = jx.invars[n_in: n_in + len(p)]
        in_deps = [{} for _ in range(n_in)]
        in_deps += [{("param", j): identity_map(len(p[j].shape))} for j in range(len(p))]
        in_deps += [{("state", i): identity_map(len(s[i].shape))} for i in ds_idx]
        self._jvp_in_deps = in_deps
        self._jvp_raw = {v: (("param", j), identity_map(len(p[j].shape))) for j, v in enumerate(dp_vars)}

    def _analyse_jacobian(self):
        """The structural pass over the JVP program (with the current readout projections)."""
        self.jacobian_analysis: Analysis = analyse(
            self.jvp_jaxpr.jaxpr, self._jvp_in_deps, mode="jacobian", raw=self._jvp_raw,
            projections={pr.path: pr.key for pr in self.projections})
        n_out = len(self.diff_states)
        self.tangent_deps = self.jacobian_analysis.outputs[n_out: 2 * n_out]
        self._synapse_out_dtype = {syn.key[1]: self._synapse_eqn_dtype(syn)
                                   for syn in self.jacobian_analysis.synapses}

    def _projection(self, key) -> "Projection":
        return next(pr for pr in self.projections if pr.key == key)

    def _find_projections(self, n_params) -> List["Projection"]:
        """Readouts of a new state leaf through a fixed matrix: `dot_general(W, ds_b)` at the top
        level of the JVP program, with W computed from parameters alone and the product mixing
        b's neuron axis. Such a readout's trace can be kept as a filtered copy of b's trace
        (`Projection`)."""
        jx = self.jvp_jaxpr.jaxpr
        S = self.diff_states
        n = len(S)
        tangent_of = {v: S[pos] for pos, v in enumerate(jx.outvars[n: 2 * n]) if isinstance(v, jcore.Var)}
        param_only = set(jx.invars[:n_params]) | set(jx.constvars)
        for eqn in jx.eqns:
            if all(isinstance(v, jcore.Literal) or v in param_only for v in eqn.invars):
                param_only |= set(eqn.outvars)
        found = []
        for i, eqn in enumerate(jx.eqns):
            if eqn.primitive.name != "dot_general":
                continue
            for side in (0, 1):
                t, w = eqn.invars[side], eqn.invars[1 - side]
                contracting = eqn.params["dimension_numbers"][0][side]
                if (isinstance(t, jcore.Var) and t in tangent_of and NEURON_AXIS in contracting
                        and (isinstance(w, jcore.Literal) or w in param_only)):
                    found.append(Projection((i,), ("projection", len(found)), tangent_of[t], side, eqn))
                    break
        return found

    # ---------------------------------------------------------------- planning
    def _input_shape(self, key):
        kind, k = key
        if kind == "param":
            return tuple(self.p_avals[k].shape)
        if kind == "state":
            return tuple(self.s_avals[k].shape)
        if kind == "projection":
            return tuple(self._projection(key).eqn.outvars[0].aval.shape)
        return self.jacobian_analysis.synapses[k].out_shape

    def _synapse_param_map(self, syn: Synapse) -> AxisMap:
        """Map of the synapse output I on its parameter W: kept axes matched, contracted free."""
        if syn.primitive == convolution.PRIMITIVE:
            return convolution.param_map(syn.params, syn.perm, len(self._input_shape(syn.param)))
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
        rejected = self._plan_projections()
        if rejected:
            return rejected
        self._plan_probes()
        dense = sum(b.nbytes for b in self.blocks if all(s is None for s in b.spec) and len(b.spec))
        if dense > DENSE_WARNING_BYTES:
            warnings.warn(
                f"sparseprop: exact online learning needs dense trace blocks of {dense / 2**20:.1f} MiB "
                f"per example (a matrix or reduction couples neurons of the previous state); "
                f"method='eprop' keeps traces per neuron. See learner.explain().", stacklevel=4)
        return set()

    def _plan_projections(self):
        """Keep each readout projection as filtered traces (`Projection`) where that is exact;
        returns the keys of those that are not (they are then analysed as plain operations).

        Exact when the readout y is the only state the projection reaches, its Jacobians on
        itself and on the projection are scalars times the identity (uniformity.py), nothing
        else brings a parameter of b's traces into y, and no other state reads y; chosen when
        b's traces are smaller than y's dense blocks would be.
        """
        S = self.diff_states
        uniform = {a: self.jacobian_analysis.uniform[len(S) + pos] for pos, a in enumerate(S)}
        rejected = set()
        for pr in self.projections:
            targets = [a for a in S if pr.key in self.jmap[a]]
            b = pr.source
            params = [pj for (bb, pj) in self.block_index if bb == b]
            if not targets:
                continue
            y = targets[0]
            ok = (len(targets) == 1 and not self.method.one_step_pattern
                  and self.jmap[y][pr.key] == identity_map(len(self._input_shape(pr.key)))
                  and pr.key in uniform[y]
                  and (("state", y) not in self.jmap[y] or ("state", y) in uniform[y])
                  and not any((y, pj) in self.block_index for pj in params)
                  and not any(self.blocks[self.block_index[(b, pj)]].window is not None for pj in params)
                  and not any(("state", y) in self.jmap[a] for a in S if a != y)
                  # worth it only where ē is smaller than the readout's own (dense) blocks
                  and sum(self.blocks[self.block_index[(b, pj)]].nbytes for pj in params)
                  <= sum(np.prod(self.s_avals[y].shape + self.p_avals[pj].shape, dtype=np.int64)
                         * np.dtype(self.blocks[self.block_index[(b, pj)]].dtype).itemsize for pj in params))
            if not ok:
                rejected.add(pr.key)
                continue
            for pj in params:
                src = self.blocks[self.block_index[(b, pj)]]
                self.block_index[(y, pj)] = len(self.blocks)
                self.blocks.append(TraceBlock(y, pj, src.spec, src.shape, src.dtype, src.factorised, pr.key))
        return rejected

    def _probe_plan(self, reverse):
        """Forward probes for every input that a new state with traces, outside `reverse`, depends on."""
        S = [a for a in self._traced_states() if a not in reverse]
        inputs = sorted({key for a in S for key in self.jmap[a]}, key=str)
        plan, offset = [], 0   # (key, compressed axes, offset, count)
        for key in inputs:
            shape = self._input_shape(key)
            comp = compressed_axes([self.jmap[a][key] for a in S if key in self.jmap[a]], len(shape))
            count = int(np.prod(enumerated_shape(shape, comp), dtype=np.int64))
            plan.append((key, comp, offset, count))
            offset += count
        return plan, offset

    def _traced_states(self):
        return sorted({b.state for b in self.blocks})

    def _plan_probes(self):
        """Choose how each Jacobian block is measured: forward probes (one per enumerated
        input index, compressed along proved diagonals) or, for new-state leaves with a
        dense block, reverse rows (one per entry of that leaf: cheap for a small readout
        fed by a wide layer)."""
        size = {a: int(np.prod(self.s_avals[a].shape, dtype=np.int64)) for a in self.diff_states}
        dense = [a for a in self._traced_states()
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
        self._factorise_convolutions(uniform)

    def _factorise_convolutions(self, uniform):
        """Store a convolution kernel's trace block as the filtered input ū (convolution.py).

        Holds when the kernel enters through one convolution synapse, the block's sources
        are that synapse and other such blocks, every Jacobian feeding it is a scalar times
        the identity, and the state is the convolution's output up to size-1 axes.
        """
        an = self.jacobian_analysis
        ok = {}
        for blk in self.blocks:
            a, pj = blk.state, blk.param
            syns = [k for k, syn in enumerate(an.synapses) if syn.param == ("param", pj)]
            if blk.factorised or len(syns) != 1 or an.synapses[syns[0]].primitive != convolution.PRIMITIVE:
                continue
            syn = an.synapses[syns[0]]
            deps = self.jmap[a]
            if ("param", pj) in deps or not all(key in uniform[a] for key in deps if key == syn.key or (
                    key[0] == "state" and (key[1], pj) in self.block_index)):
                continue
            if convolution.state_spec(syn.out_shape, self.s_avals[a].shape) is None:
                continue
            ok[(a, pj)] = syns[0]
        changed = True
        while changed:   # a factorised block may only be fed by factorised blocks
            changed = False
            for (a, pj) in list(ok):
                if not all((key[1], pj) in ok for key in self.jmap[a]
                           if key[0] == "state" and (key[1], pj) in self.block_index):
                    del ok[(a, pj)]
                    changed = True
        for blk in self.blocks:
            k = ok.get((blk.state, blk.param))
            if k is not None:
                syn = an.synapses[k]
                blk.factorised, blk.window = True, k
                blk.shape = tuple(equation_at(self.jvp_jaxpr.jaxpr, syn.path).invars[0].aval.shape)

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
            # a synapse's or readout's result is replaced by its probe; the fixed operand
            # (the presynaptic u, the readout matrix W) is captured
            swapped = [(syn.path, syn.key, 1 - syn.param_side) for syn in an.synapses]
            swapped += [(pr.path, pr.key, 1 - pr.side) for pr in self.projections]
            for path, key, keep in swapped:
                def take(eqn, invals, key=key, keep=keep):
                    captured[key] = invals[keep]
                    if key in tangents:
                        return [tangents[key]]
                    aval = eqn.outvars[0].aval
                    return [jnp.zeros(aval.shape, aval.dtype)]   # reaches no traced state
                overrides[path] = take
            dp = [tangents.get(("param", j), jnp.zeros(v.shape, v.dtype)) for j, v in enumerate(self.p_avals)]
            ds = [tangents.get(("state", i), jnp.zeros(self.s_avals[i].shape, self.s_avals[i].dtype))
                  for i in S]
            outs = evaluate(jx.jaxpr, jx.consts, list(p) + list(s) + list(xs) + dp + ds, overrides)
            n = len(S)
            return outs[:n] + outs[2 * n:], outs[n: 2 * n], [captured[key] for key in captured_keys]

        captured_keys = [syn.key for syn in an.synapses] + [pr.key for pr in self.projections]
        if self.n_probes:
            new_s, tangents, us = jax.vmap(run, in_axes=(0,), out_axes=(None, 0, None))(batched)
        else:   # every block comes from reverse rows
            new_s, _, us = run({})
        us = dict(zip(captured_keys, us))
        blocks: Dict[Tuple[int, Hashable], jac.StructJac] = {}
        traced = set(self._traced_states())
        for key, comp, offset, count in self.probe_plan:
            in_shape = self._input_shape(key)
            enum = enumerated_shape(in_shape, comp)
            for pos, a in enumerate(S):
                m = self.jmap[a].get(key)
                if m is None or a not in traced:    # probes are compressed for traced states only
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
        if key[0] == "projection":
            return self._projection(key).eqn.outvars[0].aval.dtype
        return self._synapse_out_dtype[key[1]]

    def _synapse_eqn_dtype(self, syn: Synapse):
        eqn = equation_at(self.jvp_jaxpr.jaxpr, syn.path)
        return eqn.outvars[0].aval.dtype

    def synapse_block(self, psi: jac.StructJac, u, syn: Synapse) -> jac.StructJac:
        """d state / d W from ψ = d state / d I and the presynaptic operand u of I = W·u."""
        if syn.primitive == convolution.PRIMITIVE:
            return convolution.synapse_block(psi, u, syn.params, syn.perm, self._input_shape(syn.param))
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

    def contract(self, signals, traces, p, batched: bool = False):
        """Σ_a signal_a · M[a, p] for every parameter p: the learning signal meets the traces.

        **Arguments:**

        - `signals`: one array per differentiable state leaf (a cotangent, d loss / d state), or None.
        - `traces`: the trace blocks.
        - `p`: the parameter leaves (a readout block W · ē needs the current W).
        - `batched`: signals and traces carry a leading batch axis, summed over (one contraction).

        **Returns:**

        One gradient array per parameter leaf.
        """
        S = self.diff_states
        grads = [jnp.zeros(a.shape, a.dtype) for a in self.p_avals]
        weights = self.projection_weights(p) if any(b.via for b in self.blocks) else {}
        for blk, T in zip(self.blocks, traces):
            sig = signals[S.index(blk.state)]
            if sig is None:
                continue
            a = blk.state
            if blk.window is not None:
                syn = self.jacobian_analysis.synapses[blk.window]
                g = convolution.kernel_gradient(sig, T, syn.params, syn.perm, self.p_avals[blk.param].shape,
                                                syn.out_shape, batched)
                grads[blk.param] = grads[blk.param] + g.astype(grads[blk.param].dtype)
                continue
            if blk.via is not None:    # λ_y · (W · ē) = (Wᵀ λ_y) · ē: the signal moves back to b
                pr = self._projection(blk.via)
                a = pr.source
                zero = jnp.zeros(self.s_avals[a].shape, self.s_avals[a].dtype)
                back = lambda lam, pr=pr, zero=zero: jax.vjp(
                    lambda t: pr.apply(weights[pr.key], t), zero)[1](lam)[0]
                sig = jax.vmap(back)(sig) if batched else back(sig)
            fresh = jac.Labels()
            p_labels = [fresh() for _ in self.p_avals[blk.param].shape]
            a_labels = [fresh() for _ in self.s_avals[a].shape]
            for k, j in enumerate(blk.spec):
                if j is not None:
                    a_labels[j] = p_labels[k]
            t_labels = ([] if blk.factorised else list(a_labels)) + [
                p_labels[k] for k, j in enumerate(blk.spec) if j is None]
            batch = [fresh()] if batched else []
            g = jac.einsum([sig, T], [batch + a_labels, batch + t_labels], p_labels)
            grads[blk.param] = grads[blk.param] + g.astype(grads[blk.param].dtype)
        return grads

    def projection_weights(self, p) -> Dict[Hashable, object]:
        """The fixed matrix W of every readout projection, computed from the parameters alone."""
        if not self.projections:
            return {}
        jx = self.jvp_jaxpr.jaxpr
        ws = [pr.eqn.invars[1 - pr.side] for pr in self.projections]
        wanted = [w for w in ws if isinstance(w, jcore.Var)]
        program, used = pe.dce_jaxpr(jx.replace(outvars=wanted), [True] * len(wanted))
        args = [v for v, u in zip(list(p) + [None] * (len(jx.invars) - len(p)), used) if u]
        values = iter(evaluate(program, self.jvp_jaxpr.consts, args, {}))
        return {pr.key: (w.val if isinstance(w, jcore.Literal) else next(values))
                for pr, w in zip(self.projections, ws)}

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
            if blk.via is not None:
                # ē_t = c ē_{t-1} + c' M_t[b, p]: b's block comes earlier, so it is already new
                source = new_traces[self.block_index[(self._projection(blk.via).source, pj)]]
                total = _scalar(J[(a, blk.via)].array) * source
                if (a, ("state", a)) in J:
                    total = total + _scalar(J[(a, ("state", a))].array) * T
                new_traces.append(total.astype(blk.dtype))
                continue
            parts = []
            state_terms = [(k, v) for (aa, k), v in J.items() if aa == a and k[0] == "state"]
            synapses = [syn for syn in an.synapses if syn.param == ("param", pj) and (a, syn.key) in J]
            if blk.window is not None:
                # every Jacobian here is c·I: ū_t = Σ c · ū_{t-1} + c_ψ · u (the filtered input)
                total = self._scaled_previous(blk, state_terms, traces)
                for syn in synapses:
                    total = total + _scalar(J[(a, syn.key)].array) * us[syn.key]
                new_traces.append(total.astype(blk.dtype))
                continue
            if blk.factorised:
                # every Jacobian here is c·I: multiply the stored ū by the scalar c
                total = self._scaled_previous(blk, state_terms, traces)
                for syn in synapses:
                    psi = J[(a, syn.key)]
                    ones = jac.StructJac(jnp.ones_like(psi.array), psi.spec, psi.in_shape)
                    row = self.synapse_block(ones, us[syn.key], syn)
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
                parts.append(self.synapse_block(J[(a, syn.key)], us[syn.key], syn))
            total = jac.add(parts, blk.spec)
            new_traces.append(jnp.zeros(blk.shape, blk.dtype) if total is None
                              else total.array.astype(blk.dtype))
        return tuple(new_traces)

    def _scaled_previous(self, blk, state_terms, traces):
        """Σ_b c_b · ū[b, p]_{t-1} for a factorised block whose Jacobians are c_b · I."""
        total = jnp.zeros(blk.shape, blk.dtype)
        for key, Jab in state_terms:
            bi = self.block_index.get((key[1], blk.param))
            if bi is not None:
                total = total + _scalar(Jab.array) * traces[bi]
        return total

    def _full_block(self, i, T) -> jac.StructJac:
        blk = self.blocks[i]
        assert blk.via is None, "a readout's filtered trace is read by no other state (_plan_projections)"
        p_shape = self.p_avals[blk.param].shape
        if blk.window is not None:
            syn = self.jacobian_analysis.synapses[blk.window]
            full = convolution.expand(T, syn.params, syn.perm, p_shape, syn.out_shape,
                                      self.s_avals[blk.state].shape)
            return jac.respec(full, blk.spec)
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
            if self.cuts and self.method.cut_output:
                return self.cut_output(p, s_arg, xs_)
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
        # structurally zero signals skip their contractions (XLA keeps a product with zeros)
        lam = [lam_a if a in self.signalled else None for a, lam_a in zip(S, lam)]
        signal_traces = new_traces if via_new else traces
        grads = [g + c for g, c in zip(direct, self.contract(lam, signal_traces, p, batched))]
        return list(new_s), new_traces, value, y, grads

    # ------------------------------------------------------- output through the new state
    def _plan_output(self, p, s, xs):
        """Decide `output_via_state`: y reaches the previous state and the traced parameters
        only through the new state's values (proved on the model's jaxpr, top level)."""
        self.output_via_state = False
        if self.truncated or (self.cuts and not self.method.cut_output):
            # both forms are equal only when traces and learning signal follow one and the
            # same step; these methods keep λ_t = ∂l_t/∂s_{t-1} (their documented semantics)
            return
        jx = self.model_jaxpr
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
        self.state_out_position = {v: i for i, v in enumerate(state_out)}
        self.output_via_state = True
        # the new state values the output reads (it reads them as values: no further back)
        needed = {v for v in jx.outvars[n_s:] if isinstance(v, jcore.Var)}
        for eqn in reversed(jx.eqns):
            if any(v in needed and v not in cut for v in eqn.outvars):
                needed |= {v for v in eqn.invars if isinstance(v, jcore.Var)}
        self.output_reads_new = {i for i, v in enumerate(state_out) if v in needed}

    def _needed_blocks(self, signalled):
        """Blocks the learning signal meets (states in `signalled`) and those their updates read."""
        need = {key for key in self.block_index if key[0] in signalled}
        stack = list(need)
        while stack:
            a, pj = stack.pop()
            blk = self.blocks[self.block_index[(a, pj)]]
            reads = [key[1] for key in self.jmap[a] if key[0] == "state"]
            if blk.via is not None:
                reads.append(self._projection(blk.via).source)
            for b in reads:
                if (b, pj) in self.block_index and (b, pj) not in need:
                    need.add((b, pj))
                    stack.append((b, pj))
        return need

    def _prune(self, keep_all: bool):
        """Carry only the trace blocks a loss can need, in the cheaper of the two learning-signal forms.

        With λ_t = ∂l_t/∂s_{t-1}, the signal meets the blocks of the previous state leaves the
        output depends on; with the new-state form, those of the new state leaves it reads.
        Blocks that neither the signal nor the update of a needed block reads are dropped
        (e.g. the spikes' trace of a LIF whose output reads the potential's previous value
        only). `keep_all` (a learner without a loss: external signals may meet any leaf)
        keeps every block.
        """
        self.pruned: List[Tuple[int, int]] = []
        need = self._needed_blocks(self.output_reads_previous)
        if self.output_via_state:
            need_new = self._needed_blocks(self.output_reads_new)
            size = lambda keys: sum(self.blocks[self.block_index[k]].nbytes for k in keys)   # noqa: E731
            if size(need) < size(need_new):
                self.output_via_state = False     # the previous-state form carries less
            else:
                need = need_new
        # the state leaves a loss's learning signal can reach (the others' signal is zero)
        self.signalled = self.output_reads_new if self.output_via_state else self.output_reads_previous
        if keep_all:
            return
        self.pruned = sorted(k for k in self.block_index if k not in need)
        if not self.pruned:
            return
        self.blocks = [b for b in self.blocks if (b.state, b.param) in need]
        self.block_index = {(b.state, b.param): i for i, b in enumerate(self.blocks)}
        self._plan_probes()

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


def _mixing_flags(found: Analysis, graph: List[Dict]) -> Dict[Tuple, Tuple[bool, bool]]:
    """`(recurrent, reaches_state)` of every mixing equation in `found`, by path and operand.

    `graph[a]` holds the dependencies of new state leaf a: an edge b → a for each previous
    state leaf b in it. A mixing equation whose operand carries previous state b and whose
    result reaches new state a lies on a recurrent path when a == b or a reaches b in that
    graph (a cycle through the equation).
    """
    edges = {a: {key[1] for key in d if isinstance(key, tuple) and key[0] == "state"} for a, d in enumerate(graph)}
    # reach[b]: the leaves whose value depends, some steps later, on leaf b's value now
    reach = {b: {a for a in edges if b in edges[a]} for b in edges}
    changed = True
    while changed:
        changed = False
        for b in reach:
            more = set().union(set(), *(reach[c] for c in reach[b])) - reach[b]
            if more:
                reach[b] |= more
                changed = True
    flags = {}
    for mix in found.mixing:
        reached = {a for a, d in enumerate(found.outputs[:len(graph)]) if MixTag(mix.path) in d}
        olds = {key[1] for key in mix.states}
        recurrent = any(a == b or b in reach[a] for a in reached for b in olds)
        flags[(mix.path, mix.operand)] = (recurrent, bool(reached))
    return flags


def _set_flags(mix: Mixing, flags) -> None:
    # a mixing equation unseen in the uncut pass cannot arise from cutting: stay conservative
    mix.recurrent, mix.reaches_state = flags.get((mix.path, mix.operand), (True, True))


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
