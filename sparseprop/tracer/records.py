"""The frozen records that the tracer's passes hand to one another.

trace the step (`Step`) → classify mixing on the state graph (`MixingGraph`) → apply the
method's cuts (`Cuts`) → trace the JVP of the cut step (`Jvp`) → structural analysis of the
JVP (`Structure`) → plan the traces (`Plan`: storage, probes, learning-signal form, pruning,
bytes per step) → emit the step function (`emit.py`). Each pass is a function from records to a
record (`passes/`); none changes another's output. `explain()`, `is_exact()` and the tests read
the `Plan`.

Inputs of the JVP program are named by `InputKey`s: a parameter leaf, a state leaf, a synapse's
product (`analysis.Synapse`) or a readout projection (`Projection`).
"""
from __future__ import annotations

import functools
import operator
from dataclasses import dataclass, field
from typing import Callable, Dict, FrozenSet, Hashable, NamedTuple, Tuple

import numpy as np

from .analysis import Analysis, Mixing, Synapse
from .interpreter import bind
from .structure import AxisMap


class InputKey(NamedTuple):
    """A tracked input of the JVP program: `kind` is "param", "state", "synapse", "edge" (a sparse
    synapse, sparse.py), "projection" or "chain" (a new state leaf's tangent, passes/chains.py),
    `index` the flat parameter / state leaf, or the number of the synapse / projection."""
    kind: str
    index: int


def param_key(j: int) -> InputKey:
    return InputKey("param", j)


def state_key(i: int) -> InputKey:
    return InputKey("state", i)


@dataclass(frozen=True, eq=False)
class Step:
    """Pass 1: the model's step traced once at the given shapes (flat leaves, user names)."""
    model: Callable
    jaxpr: object                    # the whole step (new state leaves, then output leaves)
    consts: Tuple
    p_def: object
    s_def: object
    x_def: object
    y_def: object
    param_names: Tuple[str, ...]
    state_names: Tuple[str, ...]
    p_avals: Tuple
    s_avals: Tuple
    x_avals: Tuple
    diff_states: Tuple[int, ...]     # state leaves with a derivative (floating point)

    def unflatten(self, p_leaves, s_leaves, x_leaves):
        from jax.tree_util import tree_unflatten
        return (tree_unflatten(self.p_def, p_leaves), tree_unflatten(self.s_def, s_leaves),
                tree_unflatten(self.x_def, x_leaves))

    def call_model(self, p_leaves, s_leaves, x_leaves):
        return self.model(*self.unflatten(p_leaves, s_leaves, x_leaves))


@dataclass(frozen=True, eq=False)
class MixingGraph:
    """Pass 2: every operation that mixes neurons of the previous state, classified on the
    state graph (recurrent / feed-forward / output only), and the uncut model's dependencies."""
    found: Tuple[Mixing, ...]
    flags: Dict[Tuple, Tuple[bool, bool]]        # (path, operand) -> (recurrent, reaches_state)
    uncut_outputs: Tuple                          # Deps of each model output (state, then y)
    in_deps: Tuple
    neuron_axes: Dict[int, FrozenSet[int]] = field(default_factory=dict)   # state leaf -> its neuron axes


@dataclass(frozen=True, eq=False)
class Cuts:
    """Pass 3: the mixing operands the method gives a stop_gradient, and what the output reads."""
    cuts: Tuple[Mixing, ...]
    analysis: Analysis                            # the cut model's mixing pass (its notes)
    output_reads_previous: FrozenSet[int]         # previous state leaves the output depends on
    cut_output: bool                              # the cuts hold for the output too


@dataclass(frozen=True, eq=False)
class Projection:
    """A readout `y ← c·y + W · s_b` of new state leaf b through a fixed matrix W (optionally after
    fixed per-neuron gains, `W · (g ⊙ s_b)`).

    With c and the readout's coefficient scalars, M[y, p] = W · ē[b, p] for every parameter p
    that reaches b, where ē_t = c ē_{t-1} + M_t[b, p] is b's trace filtered by the readout
    (the κ-filtered eligibility of e-prop, Bellec et al. 2020): one trace like b's instead of
    one per readout unit. W is taken at its current value (constant while parameters are).
    """
    path: Tuple[int, ...]      # the dot_general in the JVP program (top level)
    key: InputKey              # ("projection", k): the tracked input standing for W · ds_b
    source: int                # b: flat index of the state leaf read out
    side: int                  # operand position of ds_b in the dot_general
    eqn: object
    prefix: Tuple = ()         # (mul equation, operand position of the tangent): per-neuron gains c ⊙ ds_b

    def fixed_operands(self) -> tuple:
        """The variables of W and of each gain's factor (computed from parameters alone)."""
        return (self.eqn.invars[1 - self.side],) + tuple(eqn.invars[1 - k] for eqn, k in self.prefix)

    def apply(self, operands, t):
        """W · (c ⊙ t) for a tangent (or trace slice) `t` shaped like state b; `operands` are the
        values of `fixed_operands()`."""
        for (eqn, k), c in zip(self.prefix, operands[1:]):
            t = bind(eqn, [c, t] if k == 1 else [t, c])[0]
        w = operands[0]
        return bind(self.eqn, [w, t] if self.side == 1 else [t, w])[0]


@dataclass(frozen=True, eq=False)
class Jvp:
    """Pass 4: the JVP program of the cut step, its tracked inputs and candidate readouts."""
    closed: object                                # ClosedJaxpr: (p, s, xs, dp, ds) -> (new s, ds', other s)
    in_deps: Tuple
    raw: Dict                                     # raw parameter tangents: var -> (key, perm)
    projections: Tuple[Projection, ...]           # readouts that may be kept filtered
    edges: Tuple = ()                             # sparse synapses (sparse.EdgeSynapse)


@dataclass(frozen=True, eq=False)
class Structure:
    """Pass 5: the proved structure of one step's Jacobian."""
    jaxpr: object                                 # the JVP program analysed (open jaxpr)
    analysis: Analysis
    projections: Tuple[Projection, ...]           # readouts analysed as inputs of their own
    jmap: Dict[int, Dict[InputKey, AxisMap]]      # new state leaf -> input -> dependency map
    uniform: Dict[int, FrozenSet[Hashable]]       # new state leaf -> inputs it carries as c·I
    input_shapes: Dict[InputKey, Tuple[int, ...]]
    input_dtypes: Dict[InputKey, object]
    edges: Tuple = ()                             # sparse synapses, by key index
    chains: Dict[int, Tuple[int, ...]] = field(default_factory=dict)   # leaf -> the new leaves it is a function of
    chain_paths: Dict[InputKey, Tuple[int, ...]] = field(default_factory=dict)   # ("chain", b) -> b's tangent equation
    chain_direct: Dict[int, FrozenSet[int]] = field(default_factory=dict)   # chained leaf -> parameters it reads directly

    def edge(self, key):
        return self.edges[key[1]]

    @property
    def synapses(self) -> Tuple[Synapse, ...]:
        return tuple(self.analysis.synapses)

    def projection(self, key) -> Projection:
        return next(pr for pr in self.projections if pr.key == key)

    def state_inputs(self, a: int):
        """(b, map) for every previous state leaf b that new state leaf a depends on."""
        return [(key.index, m) for key, m in self.jmap[a].items() if key.kind == "state"]


class ProbeEntry(NamedTuple):
    key: InputKey
    compressed: Tuple[int, ...]
    offset: int
    count: int


@dataclass(frozen=True)
class Probes:
    """How each Jacobian block is measured: compressed forward probes, or reverse rows."""
    entries: Tuple[ProbeEntry, ...]
    count: int
    reverse_states: Tuple[int, ...]


@dataclass(frozen=True)
class SignalForm:
    """Where the learning signal meets the traces.

    `via_new_state`: ∂l_t/∂s_t with the new traces (the output reads the previous state and
    the traced parameters only through the new state's values), else λ_t = ∂l_t/∂s_{t-1}
    with the previous traces plus the step's direct term. `signalled`: the state leaves a
    loss's signal can reach.
    """
    via_new_state: bool
    signalled: FrozenSet[int]
    state_out_position: Dict = field(default_factory=dict)   # model outvar -> state leaf


def _delegate(path: str):
    """A read-only property that reads `path` (dotted) off the record."""
    return property(operator.attrgetter(path), doc=f"`{path}`")


@dataclass(frozen=True, eq=False)
class Plan:
    """Pass 6: the online program's plan — everything `explain()` reports and `emit.py` runs."""
    step: Step
    method: object
    graph: MixingGraph
    cuts: Cuts
    jvp: Jvp
    structure: Structure
    blocks: Tuple                                  # storage.Storage, one per carried trace block
    truncated: Tuple[Tuple[int, int], ...]         # blocks cut to their one-step pattern
    pruned: Tuple[Tuple[int, int], ...]            # blocks not carried (no signal reaches them)
    signal: SignalForm
    probes: Probes
    readout_notes: Tuple[str, ...] = ()            # readouts kept dense, why, and what it costs

    @functools.cached_property
    def block_index(self) -> Dict[Tuple[int, int], int]:
        return {(b.state, b.param): i for i, b in enumerate(self.blocks)}

    # what the tests and reports read, by its name here
    param_names = _delegate("step.param_names")
    state_names = _delegate("step.state_names")
    p_avals = _delegate("step.p_avals")
    s_avals = _delegate("step.s_avals")
    synapses = _delegate("structure.synapses")
    n_probes = _delegate("probes.count")
    reverse_states = _delegate("probes.reverse_states")

    @property
    def block_names(self) -> Tuple[str, ...]:
        return tuple(f"d{self.state_names[b.state]}/d{self.param_names[b.param]}" for b in self.blocks)

    @property
    def exact(self) -> bool:
        """Whether the gradient equals BPTT for this model (the method dropped nothing here)."""
        return self.method.exact or not (self.cuts.cuts or self.truncated)

    @property
    def trace_bytes(self) -> int:
        return sum(b.nbytes for b in self.blocks)

    @property
    def bytes_per_step(self) -> Dict[Tuple[int, int], int]:
        """Bytes of trace memory each block moves per step and example: its previous value read
        and its new value written by the update, read once more where the signal meets it."""
        signalled = self.signal.signalled
        return {(b.state, b.param): b.nbytes * (3 if b.state in signalled else 2)
                for b in self.blocks}

    @property
    def layout_tag(self) -> Tuple[str, str]:
        """What a carry's traces mean: the method and each block's layout (static pytree data)."""
        return self.method.name, repr([b.layout() for b in self.blocks])


def nbytes(shape, dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


__all__ = ["InputKey", "Step", "MixingGraph", "Cuts", "Projection", "Jvp", "Structure", "Probes",
           "ProbeEntry", "SignalForm", "Plan"]
