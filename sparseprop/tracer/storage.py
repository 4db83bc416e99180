"""Storage kinds of a trace block M[a, p] = d state_a / d param_p: one type each.

Each kind knows its stored shape, how to start (`zeros`), how one step updates it
(`update`: M_t = ∂f/∂s · M_{t-1} + ∂f/∂θ in its stored form), how the learning signal meets it
(`contract`: Σ signal · M), how to expand it for another block's update (`full`) and how to say
its rule in words (`rule`). The planner (`passes/blocks.py`) chooses the kind from the proved
structure; `emit.py` only calls these methods.

- `Diagonal`, `SharedParameter`, `Synaptic`, `Dense`: the block as a `jacobian.StructJac`
  (state axes, then the parameter axes not matched to a state axis); they differ in what the
  spec proves, hence in size.
- `Factorised`: e[i, l] = ū[l] for every neuron i (a shared leak, a detached reset).
- `ConvolutionWindow`: a convolution kernel's trace kept as the filtered input ū (convolution.py).
- `ReadoutFiltered`: a readout's block kept as W · ē, ē the readout-filtered copy of the trace
  of the state it reads (Bellec et al. 2020's κ-filtered eligibility).
- `PerEdge`: a sparse synapse's block, one entry per synapse that exists (sparse.py).
- `Derived`: a block recomputed from other blocks and per-neuron coefficients (an intra-step
  chain: a spike of this step's potential), so it is not carried; `DerivedPerEdge` the same
  for blocks stored per edge.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Dict, List, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp

from . import convolution
from . import jacobian as jac
from .analysis import Synapse
from .errors import source_line
from .records import InputKey, nbytes
from .structure import AxisMap, is_diagonal


class StepValues(NamedTuple):
    """What one step measured, for the blocks' updates: Jacobian blocks `J[(a, input key)]`,
    the captured synapse / readout operands `us[key]`, previous traces and those updated so far."""
    J: Dict
    us: Dict
    previous: Tuple
    new: List


#: largest batch whose contraction is a sum of per-example slices: the program grows by B terms
#: per block, so larger batches take the dot (at B = 128 the slices still ran 0.82-0.88x its time)
_SLICED_BATCH_MAX = 64


@dataclass(frozen=True)
class Storage:
    state: int                 # flat state leaf a
    param: int                 # flat parameter leaf p
    spec: AxisMap              # parameter axis -> the state axis it is matched to, or None
    shape: Tuple[int, ...]     # stored shape (one example)
    dtype: object

    kind: ClassVar[str] = ""
    factorised: ClassVar[bool] = False
    derived: ClassVar[bool] = False      # carries coefficients, not the block (`Derived`)
    expandable: ClassVar[bool] = True    # `full` gives the whole block (a readout's filtered trace: no)

    @property
    def nbytes(self) -> int:
        return nbytes(self.shape, self.dtype)

    def layout(self) -> tuple:
        return type(self).__name__, self.state, self.param, self.spec, tuple(self.shape)

    def zeros(self):
        return jnp.zeros(self.shape, self.dtype)

    def expand(self, plan, blocks: List, T, us: Dict):
        """The block's value from what it carries (`T`); `blocks` holds the values of the blocks
        before it in the plan, `us` the step's captured operands (a sparse synapse's post
        indices under `(edge key, "post")`). Only a recomputed block (`Derived`,
        `DerivedPerEdge`) carries something else than its value."""
        return T

    # -- shared pieces of the update
    def _synapses(self, plan, values: StepValues) -> List[Synapse]:
        return [syn for syn in plan.structure.synapses
                if syn.param == ("param", self.param) and (self.state, syn.key) in values.J]

    def _edges(self, plan, values: StepValues):
        return [e for e in plan.structure.edges if e.param == self.param and (self.state, e.key) in values.J]

    def _previous_terms(self, plan, values: StepValues):
        """(J[a ← b], previous block index of (b, p)) for every previous state b with a trace for p."""
        index = plan.block_index
        return [(J, index[(key[1], self.param)]) for (a, key), J in values.J.items()
                if a == self.state and key[0] == "state" and (key[1], self.param) in index]

    def read_by(self, plan, values: StepValues, J: jac.StructJac, T, spec) -> jac.StructJac:
        """J · (this block) stored with `spec`: a block of another state that reads this one."""
        return jac.compose(J, self.full(plan, T), spec)

    def _scaled_previous(self, plan, values: StepValues):
        """Σ_b c_b · ū[b, p]_{t-1} where every Jacobian is c_b · I (uniformity.py)."""
        total = jnp.zeros(self.shape, self.dtype)
        for J, bi in self._previous_terms(plan, values):
            total = total + _scalar(J.array) * values.previous[bi]
        return total

    def keep_mask(self, plan, keep):
        """A 0/1 array that zeroes the stored entries of the parameter entries where `keep` is 0
        (`keep` has the parameter's shape), broadcastable against the stored block.

        **Raises:**

        `ValueError` where the storage shares one entry between parameter entries that `keep`
        separates (a factorised or filtered-input trace).
        """
        fresh = jac.Labels()
        p_labels = [fresh() for _ in plan.p_avals[self.param].shape]
        a_labels = [fresh() for _ in plan.s_avals[self.state].shape]
        for k, j in enumerate(self.spec):
            if j is not None:
                a_labels[j] = p_labels[k]
        stored = (list(a_labels) if not self.factorised else []) + [p_labels[k] for k, j in enumerate(self.spec)
                                                                   if j is None]
        if self.factorised and any(j is not None for j in self.spec):
            matched = tuple(k for k, j in enumerate(self.spec) if j is not None)
            if not bool(jnp.all(keep == jnp.min(keep, axis=matched, keepdims=True))):
                raise ValueError(
                    f"the trace d{plan.state_names[self.state]}/d{plan.param_names[self.param]} is stored "
                    f"factorised (one entry shared by every neuron), so single synapses cannot restart; "
                    f"reset whole columns, or use a per-neuron leak")
            keep = jnp.min(keep, axis=matched)
            return keep
        return jac.einsum([jnp.ones(self.shape, keep.dtype), keep], [stored, p_labels], stored)

    def rule(self, plan) -> str:
        """The update rule in words, with the user's names."""
        sn, pn = plan.state_names, plan.param_names
        a, p = self.state, self.param
        terms = []
        for key, m in sorted(plan.structure.jmap[a].items(), key=str):
            if key.kind == "state" and (key.index, p) in plan.block_index:
                op, name = ("⊙", "D") if is_diagonal(m) else ("·", "J")
                terms.append(f"{name}[{sn[a]}←{sn[key.index]}] {op} e[{sn[key.index]},{pn[p]}]")
            elif key == ("param", p):
                terms.append(f"∂{sn[a]}/∂{pn[p]}")
            elif key.kind == "synapse":
                syn = plan.synapses[key.index]
                if syn.param == ("param", p):
                    terms.append(f"ψ[{sn[a]}] ⊗ u  (u: the other operand of {pn[p]} at {syn.source})")
            elif key.kind == "edge":
                e = plan.structure.edge(key)
                if e.param == p:
                    terms.append(f"ψ[{sn[a]}] · dI/d{pn[p]}  (I: the {e.describe()} at {e.source})")
        return f"e[{sn[a]},{pn[p]}] ← " + (" + ".join(terms) if terms else "0")

    # -- the learning signal meets the block: Σ_a signal · e, as one einsum
    def _contract_labels(self, plan, signal, T, batched: bool, state_axes: bool):
        p_shape = plan.p_avals[self.param].shape
        fresh = jac.Labels()
        p_labels = [fresh() for _ in p_shape]
        a_labels = [fresh() for _ in plan.s_avals[self.state].shape]
        for k, j in enumerate(self.spec):
            if j is not None:
                a_labels[j] = p_labels[k]
        t_labels = (list(a_labels) if state_axes else []) + [p_labels[k] for k, j in enumerate(self.spec)
                                                             if j is None]
        size = signal.shape[0] if batched else 0
        if batched and state_axes and size <= _SLICED_BATCH_MAX and set(p_labels) >= set(a_labels) | set(t_labels):
            # Σ_b signal[b] ⊙ T[b] as a sum of B slices: one elementwise fusion that reads T once.
            # A batch-first dot makes XLA transpose T (one more pass) and ran 2-3x slower at B = 16;
            # jnp.sum over the batch axis lowers to the same dot.
            return sum(jac.einsum([signal[b], T[b]], [a_labels, t_labels], p_labels) for b in range(size))
        batch = [fresh()] if batched else []
        return jac.einsum([signal, T], [batch + a_labels, batch + t_labels], p_labels)


class PerEntry(Storage):
    """The block as a `StructJac`: state axes, then the parameter axes not matched to one."""

    def update(self, plan, values: StepValues, T):
        p_shape = plan.p_avals[self.param].shape
        parts = [plan.blocks[bi].read_by(plan, values, J, values.previous[bi], self.spec)
                 for J, bi in self._previous_terms(plan, values)]
        direct = values.J.get((self.state, ("param", self.param)))
        if direct is not None:
            parts.append(direct)
        for syn in self._synapses(plan, values):
            parts.append(synapse_block(values.J[(self.state, syn.key)], values.us[syn.key], syn, p_shape))
        for e in self._edges(plan, values):     # a sparse synapse in a block not stored per edge
            dense = e.jacobian(values.us[(e.key, "post")], values.us[(e.key, "g")], p_shape)
            parts.append(jac.compose(values.J[(self.state, e.key)],
                                     jac.StructJac(dense, (None,) * len(p_shape), p_shape), self.spec))
        total = jac.add(parts, self.spec)
        return self.zeros() if total is None else total.array.astype(self.dtype)

    def contract(self, plan, signal, T, context, batched: bool):
        return self._contract_labels(plan, signal, T, batched, state_axes=True)

    def full(self, plan, T) -> jac.StructJac:
        return jac.StructJac(T, self.spec, plan.p_avals[self.param].shape)


class Diagonal(PerEntry):
    kind = "diagonal"


class SharedParameter(PerEntry):
    kind = "per-neuron (shared parameter)"


class Synaptic(PerEntry):
    kind = "synaptic eligibility"


class Dense(PerEntry):
    kind = "dense"


class _Recomputed:
    """What a block recomputed from its sources' blocks shares (an intra-step chain,
    passes/chains.py): it carries the coefficients D[z←b]_t = ∂z_t/∂b_t, one array of z's
    shape per source b (`shape` is theirs), its value Σ_b D[z←b] ⊙ M[b, p] is formed where it
    is read (`expand`), and the learning signal λ_z meets it as λ_z ⊙ D[z←b] added to b's."""
    derived = True

    def layout(self) -> tuple:
        return super().layout() + (self.sources,)

    def update(self, plan, values: StepValues, T):
        return jnp.stack([values.J[(self.state, InputKey("chain", b))].array for b in self.sources]).astype(self.dtype)

    def _source_blocks(self, plan):
        """`(k, block index of (b, p))` for the k-th source b that depends on this parameter."""
        return [(k, plan.block_index[(b, self.param)]) for k, b in enumerate(self.sources)
                if (b, self.param) in plan.block_index]

    def signals_to_sources(self, plan, signal, T, batched: bool):
        """`[(block index of (b, p), λ_z ⊙ D[z←b])]`: where the signal of this block goes."""
        return [(bi, signal * (T[:, k] if batched else T[k])) for k, bi in self._source_blocks(plan)]

    def contract(self, plan, signal, T, context, batched: bool):
        raise AssertionError("a recomputed block's signal is met by its sources' (emit.contract)")

    def keep_mask(self, plan, keep):
        return jnp.ones((), keep.dtype)      # it holds no parameter entry: its sources restart

    def _terms(self, plan, at: str = "") -> str:
        """Σ_b D[z←b] ⊙ e[b, p] in words (`at`: an index written after each source's block)."""
        sn, z, p = plan.state_names, plan.state_names[self.state], plan.param_names[self.param]
        return " + ".join(f"D[{z}←{sn[self.sources[k]]}] ⊙ e[{sn[self.sources[k]]},{p}]{at}"
                          for k, _ in self._source_blocks(plan))

    def _coefficients(self, plan) -> str:
        sn = plan.state_names
        return f"D: ∂{sn[self.state]}/∂{', '.join(sn[b] for b in self.sources)} of the same step, carried"


@dataclass(frozen=True)
class Derived(_Recomputed, PerEntry):
    """M[z, p] = Σ_b D[z←b] ⊙ M[b, p] where z's new value is a per-neuron function of the new
    state leaves b; the block itself (`full_shape`) is recomputed where it is read."""
    sources: Tuple[int, ...] = ()      # the state leaves b
    full_shape: Tuple[int, ...] = ()

    kind = "recomputed from the traces of the states it is a function of (per-neuron coefficients carried)"

    def materialised(self, p_shape) -> PerEntry:
        """The block as a plain per-entry block (what a readout filters)."""
        return per_entry(self.state, self.param, self.spec, self.full_shape, self.dtype, p_shape)

    def expand(self, plan, blocks: List, T, us: Dict):
        sources = self._source_blocks(plan)
        if not all(plan.blocks[bi].expandable for _, bi in sources):
            return None     # a filtered source: read by no state, met by the signal only (passes/blocks.py)
        total = None
        for k, bi in sources:
            source = jac.respec(plan.blocks[bi].full(plan, blocks[bi]), self.spec).array
            term = _per_neuron(T[k], source.ndim) * source
            total = term if total is None else total + term
        return total.astype(self.dtype)

    def rule(self, plan) -> str:
        return (f"e[{plan.state_names[self.state]},{plan.param_names[self.param]}] = {self._terms(plan)}  "
                f"({self._coefficients(plan)}; the block of shape {self.full_shape} is recomputed where it is read)")


def _per_neuron(d, ndim):
    """A coefficient of the state's shape, broadcast over a block's trailing parameter axes."""
    return d.reshape(d.shape + (1,) * (ndim - d.ndim))


def per_entry(state, param, spec, shape, dtype, p_shape) -> PerEntry:
    """The `PerEntry` kind that names what `spec` proves about a block of this parameter."""
    size = 1
    for n in p_shape:
        size *= n
    if len(p_shape) == 0 or size == 1:       # one entry, broadcast: shared by every neuron
        cls = SharedParameter
    elif is_diagonal(spec):
        cls = Diagonal
    elif any(s is not None for s in spec):
        cls = Synaptic
    else:
        cls = Dense
    return cls(state, param, spec, tuple(shape), dtype)


class Factorised(Storage):
    """e[i, l] = ū[l] for every neuron i: stored without the state axes (O(m) for O(n·m))."""
    kind = "factorised synaptic eligibility (one ū shared by every neuron)"
    factorised = True

    def update(self, plan, values: StepValues, T):
        # every Jacobian here is c·I: multiply the stored ū by the scalar c
        total = self._scaled_previous(plan, values)
        p_shape = plan.p_avals[self.param].shape
        origin = (0,) * len(plan.s_avals[self.state].shape)
        for syn in self._synapses(plan, values):
            psi = values.J[(self.state, syn.key)]
            ones = jac.StructJac(jnp.ones_like(psi.array), psi.spec, psi.in_shape)
            row = jac.respec(synapse_block(ones, values.us[syn.key], syn, p_shape), self.spec).array[origin]
            total = total + _scalar(psi.array) * row
        return total.astype(self.dtype)

    def contract(self, plan, signal, T, context, batched: bool):
        return self._contract_labels(plan, signal, T, batched, state_axes=False)

    def full(self, plan, T) -> jac.StructJac:
        a_shape = tuple(plan.s_avals[self.state].shape)
        return jac.StructJac(jnp.broadcast_to(T, a_shape + T.shape), self.spec, plan.p_avals[self.param].shape)


@dataclass(frozen=True)
class ConvolutionWindow(Storage):
    """A kernel's trace kept as the filtered input ū of its convolution (convolution.py)."""
    window: int = 0            # the synapse (convolution) whose input is filtered

    kind = "factorised convolution (filtered input ū; kernel gradient by one correlation)"
    factorised = True

    def layout(self) -> tuple:
        return super().layout() + (self.window,)

    def update(self, plan, values: StepValues, T):
        # every Jacobian here is c·I: ū_t = Σ c · ū_{t-1} + c_ψ · u
        total = self._scaled_previous(plan, values)
        for syn in self._synapses(plan, values):
            total = total + _scalar(values.J[(self.state, syn.key)].array) * values.us[syn.key]
        return total.astype(self.dtype)

    def keep_mask(self, plan, keep):
        if not bool(jnp.all(keep == 1)):
            raise ValueError(f"the kernel trace d{plan.state_names[self.state]}/d{plan.param_names[self.param]} "
                             f"is stored as one filtered input shared by every kernel entry: it cannot "
                             f"restart for single entries")
        return jnp.ones((), keep.dtype)

    def contract(self, plan, signal, T, context, batched: bool):
        syn = plan.synapses[self.window]
        return convolution.kernel_gradient(signal, T, syn.params, syn.perm, plan.p_avals[self.param].shape,
                                           syn.out_shape, batched)

    def full(self, plan, T) -> jac.StructJac:
        syn = plan.synapses[self.window]
        full = convolution.expand(T, syn.params, syn.perm, plan.p_avals[self.param].shape, syn.out_shape,
                                  plan.s_avals[self.state].shape)
        return jac.respec(full, self.spec)


@dataclass(frozen=True)
class ReadoutFiltered(Storage):
    """M[y, p] = W · ē with ē_t = c' M_t[b, p] + Σ_{y'} c ē[y']_{t-1}, ē shaped as b's block
    (`source`); y' runs over y itself and the filters before it that it reads."""
    via: Optional[InputKey] = None      # the readout projection's key
    source: Optional[Storage] = None    # the block M[b, p] of the state read out

    kind = "readout-filtered eligibility"
    expandable = False

    def layout(self) -> tuple:
        return super().layout() + (tuple(self.via), self.source.layout())

    def update(self, plan, values: StepValues, T):
        # b's block comes earlier in the plan, so its new value is already there
        source = values.new[plan.block_index[(self.source.state, self.param)]]
        total = _scalar(values.J[(self.state, self.via)].array) * source
        # the previous filtered eligibilities of the states y reads: itself, and in a chain of
        # filters the one before it (all of them filter the same readout: passes/blocks.py)
        for J, bi in self._previous_terms(plan, values):
            total = total + _scalar(J.array) * values.previous[bi]
        return total.astype(self.dtype)

    def contract(self, plan, signal, T, context, batched: bool):
        # λ_y · (W · ē) = (Wᵀ λ_y) · ē: the signal moves back to b, then meets ē as b's block
        pr = plan.structure.projection(self.via)
        b = pr.source
        zero = jnp.zeros(plan.s_avals[b].shape, plan.s_avals[b].dtype)

        def back(lam):
            return jax.vjp(lambda t: pr.apply(context[pr.key], t), zero)[1](lam)[0]
        signal = jax.vmap(back)(signal) if batched else back(signal)
        return self.source.contract(plan, signal, T, context, batched)

    def full(self, plan, T):
        raise AssertionError("a readout's filtered trace is read by no other state (passes/blocks.py)")

    def keep_mask(self, plan, keep):
        return self.source.keep_mask(plan, keep)

    def rule(self, plan) -> str:
        sn, pn = plan.state_names, plan.param_names
        pr = plan.structure.projection(self.via)
        b, p = sn[pr.source], pn[self.param]
        return (f"e[{sn[self.state]},{p}] = W · ē,  ē ← c ⊙ ē + c' ⊙ e[{b},{p}]  (W: the readout matrix "
                f"of {b} at {source_line(pr.eqn)}, at its current value; ē has the shape of e[{b},{p}])")


@dataclass(frozen=True)
class PerEdge(Storage):
    """A sparse synapse's block stored at the synapses that exist: e[e] = M[post[e], e] (sparse.py).

    Every Jacobian feeding it is per neuron, so e_t[e] = D_t[post[e]] e_{t-1}[e] + ψ_t[post[e]] g_t[e].
    """
    edge: int = 0              # the sparse synapse (structure.edges)
    one_step: bool = False     # SnAp-1: a coupling J[a←b] between neurons keeps only its diagonal

    kind = "per-edge eligibility (one entry per existing synapse)"

    def layout(self) -> tuple:
        return super().layout() + (self.edge,)

    def update(self, plan, values: StepValues, T):
        e = plan.structure.edges[self.edge]
        post = values.us[(e.key, "post")]
        total = jnp.zeros(self.shape, self.dtype)
        for J, bi in self._previous_terms(plan, values):
            if all(j is None for j in J.spec):
                # SnAp-1 (one_step): (J · e)[post[s], s] = J[post[s], post[s]] e[s]; the entries
                # J puts elsewhere are outside the one-step pattern, which SnAp-1 drops
                assert self.one_step, "a coupled block is stored per edge only under a one-step method"
                d = J.array.at[post, post].get(mode="fill", fill_value=0)
            else:
                d = _at(J.array, post)
            total = total + d * values.previous[bi]
        psi = values.J.get((self.state, e.key))
        if psi is not None:
            total = total + _at(psi.array, post) * values.us[(e.key, "g")]
        return total.astype(self.dtype)

    def contract(self, plan, signal, T, context, batched: bool):
        e = plan.structure.edges[self.edge]
        post = context[e.key]
        per_edge = jnp.sum(_at(signal, post, axis=1) * T, axis=0) if batched else _at(signal, post) * T
        return e.gradient(per_edge, plan.p_avals[self.param].shape)

    def read_by(self, plan, values: StepValues, J: jac.StructJac, T, spec) -> jac.StructJac:
        # (J · e)[α, s] = J[α, post[s]] e[s]: a gather along the neuron axis, never an (n, nnz) array
        e = plan.structure.edges[self.edge]
        p_shape = plan.p_avals[self.param].shape
        dense_j = jac.respec(J, (None,) * len(J.in_shape)).array
        per_edge = _at(dense_j, values.us[(e.key, "post")], axis=-1) * T
        if e.form == "masked dense":
            lead = per_edge.shape[:-1]
            per_edge = jnp.zeros(lead + tuple(p_shape), per_edge.dtype).at[..., e.rows, e.cols].add(per_edge)
        return jac.respec(jac.StructJac(per_edge, (None,) * len(p_shape), p_shape), spec)

    def full(self, plan, T):
        raise AssertionError("a per-edge block is read through read_by (a gather), never expanded")

    def keep_mask(self, plan, keep):
        e = plan.structure.edges[self.edge]
        return keep[e.rows, e.cols] if e.form == "masked dense" else keep.reshape(-1)

    def rule(self, plan) -> str:
        e = plan.structure.edges[self.edge]
        sn, pn = plan.state_names, plan.param_names
        return (f"e[{sn[self.state]},{pn[self.param]}][s] ← D[post[s]] ⊙ e[s] + ψ[post[s]] · g[s]  "
                f"(s: one of the {e.nnz} synapses of the {e.form} at {e.source}; g: its presynaptic value)")


@dataclass(frozen=True)
class DerivedPerEdge(_Recomputed, PerEdge):
    """`Derived` at the synapses that exist: `e[z, p][s] = Σ_b D[z←b][post[s]] e[b, p][s]`, every
    source b stored per edge of the same sparse synapse."""
    sources: Tuple[int, ...] = ()      # the state leaves b
    full_shape: Tuple[int, ...] = ()

    kind = "recomputed per edge from the traces of the states it is a function of (per-neuron coefficients carried)"

    def materialised(self, p_shape) -> PerEdge:
        """The block as a plain per-edge block (what a readout filters)."""
        return PerEdge(self.state, self.param, self.spec, self.full_shape, self.dtype, edge=self.edge)

    def expand(self, plan, blocks: List, T, us: Dict):
        post = us[(plan.structure.edges[self.edge].key, "post")]
        total = None
        for k, bi in self._source_blocks(plan):
            term = _at(T[k], post) * blocks[bi]
            total = term if total is None else total + term
        return total.astype(self.dtype)

    def rule(self, plan) -> str:
        e = plan.structure.edges[self.edge]
        return (f"e[{plan.state_names[self.state]},{plan.param_names[self.param]}][s] = {self._terms(plan, '[s]')}"
                f"  (D at post[s], s: one of the {e.nnz} synapses of the {e.form} at {e.source}; "
                f"{self._coefficients(plan)})")


def _at(x, post, axis=0):
    """x at each synapse's neuron; a synapse JAX drops (index out of range) reads zero."""
    return jnp.take(x, post, axis=axis, mode="fill", fill_value=0)


def synapse_block(psi: jac.StructJac, u, syn: Synapse, p_shape) -> jac.StructJac:
    """d state / d W from ψ = d state / d I and the presynaptic operand u of I = W·u."""
    if syn.primitive == convolution.PRIMITIVE:
        return convolution.synapse_block(psi, u, syn.params, syn.perm, p_shape)
    (lc, rc), (lb, rb) = syn.dimension_numbers
    fresh = jac.Labels()
    p_labels = [fresh() for _ in p_shape]
    w_ndim = len(p_shape)
    w_contract, u_contract = (lc, rc) if syn.param_side == 0 else (rc, lc)
    w_batch, u_batch = (lb, rb) if syn.param_side == 0 else (rb, lb)
    op_label = [p_labels[syn.perm[a]] for a in range(w_ndim)]    # labels of W's operand axes
    u_labels = [None] * u.ndim
    for wa, ua in list(zip(w_contract, u_contract)) + list(zip(w_batch, u_batch)):
        u_labels[ua] = op_label[wa]
    u_labels = [lab if lab is not None else fresh() for lab in u_labels]
    w_free = [op_label[a] for a in range(w_ndim) if a not in w_contract and a not in w_batch]
    u_free = [u_labels[a] for a in range(u.ndim) if a not in u_contract and a not in u_batch]
    batch = [op_label[a] for a in w_batch]
    i_labels = batch + (w_free + u_free if syn.param_side == 0 else u_free + w_free)
    s_out, s_free = jac.stored_labels(psi.out_ndim, psi.spec, i_labels, fresh)
    spec = tuple(s_out.index(lab) if lab in s_out else None for lab in p_labels)
    out = s_out + [lab for lab, sp in zip(p_labels, spec) if sp is None]
    return jac.StructJac(jac.einsum([psi.array, u], [s_out + s_free, u_labels], out), spec, p_shape)


def _scalar(x):
    """The common value of an array proved to be equal at every index."""
    return x.reshape(-1)[0]


__all__ = ["Storage", "PerEntry", "Diagonal", "SharedParameter", "Synaptic", "Dense", "Derived", "Factorised",
           "ConvolutionWindow", "ReadoutFiltered", "PerEdge", "DerivedPerEdge", "per_entry", "synapse_block",
           "StepValues"]
