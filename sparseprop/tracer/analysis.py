"""The structural pass: walk a jaxpr and propagate dependency maps.

Two uses share this walker:
- on the JVP program of a step, to prove the sparsity of the state Jacobian and of
  each parameter's direct effect (`mode="jacobian"`), and to find *synapses*:
  `dot_general`s where a parameter's tangent meets a tangent-free operand;
- on the step itself, to find the operations that mix neurons of the previous state
  (`mode="mixing"`), which approximate methods cut.

What the walker knows about each primitive comes from registry.py. Sub-programs of control
flow (cond branches, scan and while bodies) and the JVP rules of custom-derivative calls are
walked by the same walker, so what it notes there reaches the same `Analysis.notes`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Hashable, List, Optional, Tuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core as jcore

from . import convolution
from .errors import UNKNOWN_SOURCE, TracerError, source_line
from .interpreter import custom_function_name, forward, jvp_rule_name
from .jaxpr_util import sub_jaxpr
from .linearity import affine_equation
from .registry import CONSERVATIVE, PrimitiveInfo, lookup
from .structure import Deps, identity_map, lost_matches, merge_deps
from .uniformity import constant_like, uniform_keys


Path = Tuple[int, ...]

# The leading axis of every state leaf indexes neurons; further axes (state variables,
# compartments, delay taps) belong to one neuron.
NEURON_AXIS = 0


@dataclass
class Synapse:
    """`I = dot_general(W, u)` (or `(u, W)`): the parameter W enters through a matrix product;
    or `I = conv_general_dilated(u, W)`: a kernel shared over space (convolution.py)."""
    path: Path
    key: Hashable            # ("synapse", k): the tracked input standing for I
    param: Hashable          # ("param", j)
    perm: Tuple[int, ...]    # operand axis a is parameter axis perm[a]
    param_side: int          # 0 if W is the lhs, 1 if the rhs
    dimension_numbers: tuple
    out_shape: Tuple[int, ...]
    source: str
    primitive: str = lax.dot_general_p.name   # or convolution.PRIMITIVE: a kernel shared over space
    params: Optional[dict] = None     # the convolution's parameters (convolution.py)


@dataclass
class Mixing:
    """An equation that mixes neurons (the leading axis) of the previous state through `operand`.

    `recurrent`: it lies on a cycle of the step's state graph (the new state of a population
    depends through it on that population's previous state); `reaches_state`: its result
    reaches some new state leaf (False for a readout that only feeds the output). Both are
    set by the caller of `analyse` through `classify`.
    """
    path: Path
    primitive: str
    operand: int
    states: Tuple[Hashable, ...]
    source: str
    recurrent: bool = True
    reaches_state: bool = True


@dataclass
class Note:
    path: Path
    primitive: str
    source: str
    what: str
    lost: Dict[Hashable, Tuple[int, ...]] = field(default_factory=dict)   # input key -> axes no longer matched


@dataclass
class Analysis:
    outputs: List[Deps]
    uniform: List[FrozenSet[Hashable]] = field(default_factory=list)   # per output (jacobian mode)
    synapses: List[Synapse] = field(default_factory=list)
    mixing: List[Mixing] = field(default_factory=list)
    notes: List[Note] = field(default_factory=list)


@dataclass(frozen=True)
class MixTag:
    """A tracked pseudo-input standing for the result of the mixing equation at `path`."""
    path: Path


def _single(v) -> bool:
    """One entry (rank 0, or every axis of size 1): equal at every index once broadcast."""
    return all(d == 1 for d in getattr(v.aval, "shape", ()))


@dataclass(frozen=True)
class _Context:
    """What a structural rule may ask of the walker about the equation at `here`
    (see rules.py): its operands' index facts, and nested walks of its sub-programs."""
    walker: "_Walker"
    here: Path
    facts: List
    source: str

    def walk(self, jaxpr, in_deps: List[Deps], branch: Path = ()) -> List[Deps]:
        return self.walker.walk_nested(jaxpr, in_deps, self.here + branch, self.source)

    def derivative(self, eqn):
        return self.walker.derivative(eqn, self.source)


class _Walker:
    def __init__(self, mode: str, cut=lambda mixing: False, classify=lambda mixing: None, projections=None,
                 neuron_axes=None):
        self.mode = mode
        self.neuron_axes = neuron_axes or {}
        self.projections = projections or {}
        self.cut = cut
        self.classify = classify
        self.call_site = None
        self.nested = False      # inside a branch, a loop body or a custom JVP: no synapse, no mixing
        self.derivative_jaxprs: Dict = {}
        self.key_shapes: Dict[Hashable, Tuple[int, ...]] = {}   # tracked input -> its shape
        self.result = Analysis(outputs=[])
        self.last_uniform: List = []
        self._note_at: Dict = {}

    def source(self, eqn) -> str:
        """The user's line for `eqn`; inside library calls (jnp.sort is a jit) and nested
        programs, the call site's when `eqn` has none of its own."""
        line = source_line(eqn)
        return self.call_site if line == UNKNOWN_SOURCE and self.call_site else line

    def note(self, note: Note):
        """Record `note` once: a loop body is walked to a fixed point, a mixing candidate once
        per operand; the lost axes of repeated notes are merged."""
        key = (note.path, note.primitive, note.what)
        if key not in self._note_at:
            self._note_at[key] = len(self.result.notes)
            self.result.notes.append(note)
            return
        k = self._note_at[key]
        old = self.result.notes[k]
        lost = dict(old.lost)
        for q, axes in note.lost.items():
            lost[q] = tuple(sorted(set(lost.get(q, ())) | set(axes)))
        self.result.notes[k] = Note(old.path, old.primitive, old.source, old.what, lost)

    def walk_nested(self, jaxpr, in_deps: List[Deps], path: Path, call_site: str) -> List[Deps]:
        """Output dependencies of a sub-program (a branch, a loop body, a custom JVP) walked
        like the program around it, its notes included, but recording no synapse or mixing."""
        saved = (self.nested, self.call_site, self.last_uniform)
        self.nested, self.call_site = True, call_site
        try:
            return self.walk(jaxpr, in_deps, path, {})
        finally:
            self.nested, self.call_site, self.last_uniform = saved

    def derivative(self, eqn, source: str):
        """`(closed JVP jaxpr, differentiable input indices)` of a custom-derivative call,
        traced once per equation (the mixing pass asks once per operand)."""
        if id(eqn) not in self.derivative_jaxprs:
            # eqn kept alive: its id stays unique
            self.derivative_jaxprs[id(eqn)] = (eqn, _derivative_jaxpr(eqn, source))
        return self.derivative_jaxprs[id(eqn)][1]

    def walk(self, jaxpr, in_deps: List[Deps], path: Path, raw: Dict, in_uniform=None, in_const=None,
             in_facts=None):
        """Propagate dependencies (and uniformity, see uniformity.py; index facts, see
        indices.py) through `jaxpr`.

        Returns the output `Deps`; the outputs' uniform sets are left in `self.last_uniform`.
        """
        env: Dict = {}
        uni: Dict = {}
        const: Dict = {}
        facts: Dict = {}
        for k, v in enumerate(jaxpr.invars):
            env[v] = in_deps[k]
            uni[v] = in_uniform[k] if in_uniform else frozenset(in_deps[k])
            const[v] = in_const[k] if in_const else _single(v)
            if in_facts and in_facts[k] is not None:
                facts[v] = in_facts[k]

        def read(v):
            return {} if isinstance(v, jcore.Literal) else env.get(v, {})

        def read_uni(v):
            return frozenset() if isinstance(v, jcore.Literal) else uni.get(v, frozenset())

        for i, eqn in enumerate(jaxpr.eqns):
            here = path + (i,)
            info = lookup(eqn)
            ins = [read(v) for v in eqn.invars]
            ins_const = [isinstance(v, jcore.Literal) or const.get(v, _single(v)) for v in eqn.invars]
            ins_uni = [read_uni(v) for v in eqn.invars]
            ctx = _Context(self, here, [None if isinstance(v, jcore.Literal) else facts.get(v) for v in eqn.invars],
                           self.source(eqn))
            if info.kind == "custom_derivative":
                ctx.derivative(eqn)      # checks the user's rule wherever it is called
            outs_uni = None
            if not any(ins):
                outs = [{} for _ in eqn.outvars]
                for v, f in zip(eqn.outvars, info.index_fact(eqn, ctx.facts) if info.index_fact else []):
                    if f is not None:
                        facts[v] = f
            elif info.kind == "call" and sub_jaxpr(eqn)[0] is not None:
                outs, outs_uni = self._call(eqn, ins, ctx, raw, ins_uni, ins_const)
            elif here in self.projections and not self.nested:
                key = self.projections[here]
                self.key_shapes[key] = tuple(eqn.outvars[0].aval.shape)
                outs = [{key: identity_map(len(eqn.outvars[0].aval.shape))}]
                outs_uni = [frozenset([key])]
            elif (self.mode == "jacobian" and info.synapse and not self.nested
                  and self._synapse(eqn, ins, here, raw)):
                key = self.result.synapses[-1].key
                outs = [{key: identity_map(len(eqn.outvars[0].aval.shape))}]
                outs_uni = [frozenset([key])]
            else:
                outs = self._leaf(eqn, info, ins, ctx)
            if outs_uni is None:
                outs_uni = uniform_keys(eqn, ins, ins_uni, ins_const)
            out_const = (not any(ins)) and constant_like(eqn, ins_const)
            if eqn.primitive is lax.transpose_p and eqn.invars[0] in raw:
                key, perm = raw[eqn.invars[0]]
                raw = dict(raw)
                raw[eqn.outvars[0]] = (key, tuple(perm[p] for p in eqn.params["permutation"]))
            for v, d, u in zip(eqn.outvars, outs, outs_uni):
                d = self._sized(d, v)
                env[v] = d
                uni[v] = u & frozenset(d)
                const[v] = out_const
        self.last_uniform = [read_uni(v) for v in jaxpr.outvars]
        return [read(v) for v in jaxpr.outvars]

    def _call(self, eqn, ins, ctx: _Context, raw, ins_uni, ins_const):
        """A call (jit, checkpoint) walked in place: synapses and mixing inside it count."""
        sub, _ = sub_jaxpr(eqn)
        inner_raw = {iv: raw[ov] for iv, ov in zip(sub.invars, eqn.invars)
                     if not isinstance(ov, jcore.Literal) and ov in raw}
        outer_site, self.call_site = self.call_site, ctx.source
        outs = self.walk(sub, ins, ctx.here, inner_raw, ins_uni, ins_const, ctx.facts)
        self.call_site = outer_site
        return outs, self.last_uniform

    def _sized(self, deps: Deps, v) -> Deps:
        """Keep a match only where the input and `v` have the same size along it (every rule
        does so; this holds the invariant for rules that forget, see structure.py)."""
        shape = getattr(v.aval, "shape", ())
        out = {}
        for key, m in deps.items():
            ks = self.key_shapes.get(key)
            out[key] = m if ks is None else tuple(
                j if j is None or ks[k] == shape[j] else None for k, j in enumerate(m))
        return out

    def _leaf(self, eqn, info: PrimitiveInfo, ins, ctx: _Context):
        structure = info.structure or CONSERVATIVE
        if not info.known:
            self.note(Note(ctx.here, info.name, ctx.source, "no structural rule: treated as mixing every entry"))
        if self.mode == "jacobian" and info.index_map:
            self._note_lost_structure(eqn, structure, ins, ctx)
        if self.mode != "mixing" or self.nested:
            return structure(eqn, ins, ctx)
        ins = list(ins)
        mixes = False
        for k, d in enumerate(ins):
            if not d:
                continue
            alone = [d if j == k else {} for j in range(len(ins))]
            lost = lost_matches(d, merge_deps(*structure(eqn, alone, ctx)))
            # only neuron axes count: mixing compartments or delay taps of one neuron (the
            # other axes of a state leaf, passes/neurons.py) stays within the neuron
            lost = {key: axes for key, axes in lost.items()
                    if set(axes) & self.neuron_axes.get(key, {NEURON_AXIS})}
            if lost:
                mixes = True
                mix = Mixing(ctx.here, info.name, k, tuple(sorted(lost, key=str)), ctx.source)
                self.classify(mix)
                self.result.mixing.append(mix)
                if self.cut(mix):
                    # what follows sees the model with this operand cut (tags of earlier
                    # mixing results pass on: they record reachability, not derivatives)
                    ins[k] = {key: m for key, m in d.items() if isinstance(key, MixTag)}
        outs = structure(eqn, ins, ctx)
        if mixes:
            # tag the result, so the outputs it reaches can be read off the final dependencies
            outs = [{**d, MixTag(ctx.here): ()} for d in outs]
        return outs

    def _note_lost_structure(self, eqn, structure, ins, ctx: _Context):
        """A layout operation that moves entries (an offset, a size change, a merge of axes,
        a permutation) loses their matches: say so, since the traces through it are denser
        than the model needs."""
        lost = {}
        for k, d in enumerate(ins):
            if d:
                alone = [d if j == k else {} for j in range(len(ins))]
                for key, axes in lost_matches(d, merge_deps(*structure(eqn, alone, ctx))).items():
                    lost[key] = tuple(sorted(set(lost.get(key, ())) | set(axes)))
        if lost:
            self.note(Note(ctx.here, eqn.primitive.name, ctx.source,
                           "moves entries (an offset, a size change, a merge of axes or a "
                           "permutation), so the tracer no longer matches them one to one: "
                           "the traces through it are stored dense along", lost))

    def _synapse(self, eqn, ins, here, raw) -> bool:
        if eqn.primitive.name == convolution.PRIMITIVE:
            found = convolution.is_conv_synapse(eqn, ins, raw)
            if found is None:
                return False
            k = len(self.result.synapses)
            self.result.synapses.append(Synapse(
                path=here, key=("synapse", k), param=found[0], perm=found[1], param_side=1,
                dimension_numbers=eqn.params["dimension_numbers"],
                out_shape=tuple(eqn.outvars[0].aval.shape), source=self.source(eqn),
                primitive=convolution.PRIMITIVE, params=dict(eqn.params)))
            return True
        for side in (0, 1):
            w = eqn.invars[side]
            if isinstance(w, jcore.Literal) or w not in raw or ins[1 - side]:
                continue
            key, perm = raw[w]
            if set(ins[side]) != {key}:
                continue
            k = len(self.result.synapses)
            self.result.synapses.append(Synapse(
                path=here, key=("synapse", k), param=key, perm=perm, param_side=side,
                dimension_numbers=eqn.params["dimension_numbers"],
                out_shape=tuple(eqn.outvars[0].aval.shape), source=self.source(eqn)))
            self.key_shapes[("synapse", k)] = tuple(eqn.outvars[0].aval.shape)
            return True
        return False


def _derivative_jaxpr(eqn, source: str):
    """`(closed jaxpr, diff)`: the JVP of a custom-derivative call as a program of the
    primals and then the tangents of the differentiable inputs `diff`.

    **Raises:**

    `TracerError` if the user's JVP rule is not linear in the tangents (a custom_vjp's
    backward rule is checked when the interpreter transposes it).
    """
    avals = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in eqn.invars]
    diff = [i for i, a in enumerate(avals) if jnp.issubdtype(a.dtype, jnp.inexact)]

    def tangents_out(primals, tangents):
        def f(*diff_args):
            args = list(primals)
            for i, a in zip(diff, diff_args):
                args[i] = a
            return forward(eqn, args)
        return jax.jvp(f, [primals[i] for i in diff], list(tangents))[1]

    closed = jax.make_jaxpr(tangents_out)(avals, [avals[i] for i in diff])
    if lookup(eqn).forward is None:
        _check_linear_in_tangent(eqn, closed.jaxpr, len(avals), source)
    return closed, diff


def _check_linear_in_tangent(eqn, jaxpr, n_primals: int, source: str):
    """Forward mode pushes every tangent (each probe column) through a custom JVP rule:
    a term without the tangent, or a non-linear use of it, is added to every column and
    silently wrong, so such a rule is refused."""
    found = affine_equation(jaxpr, [k >= n_primals for k in range(len(jaxpr.invars))])
    if found is None:
        return
    rule = jvp_rule_name(eqn)
    how = (f"its `{found.primitive.name}` adds a term that does not scale with the tangent, or uses "
           f"the tangent non-linearly" if hasattr(found, "primitive")
           else "it returns a tangent that does not depend on the input tangent")
    raise TracerError(
        f"the custom_jvp function {custom_function_name(eqn)}, called at {source}, has a JVP rule"
        f"{' ' + rule if rule else ''} that is not linear in the tangent ({how}). Forward mode pushes "
        f"every tangent through this rule, so it must return a tangent linear in the input tangents: "
        f"`s(u) * du` with s computed from the primal inputs only, and no term without du (not "
        f"`du * s(u) + c`, not a constant such as `jnp.ones_like(u)`, not `du * du`). Rewrite the "
        f"rule that way (or use sparseprop.spike / sparseprop.surrogates); reverse mode (jax.grad, "
        f"sparseprop.bptt_grad) drops a term without du silently, so the two would disagree.")


def analyse(jaxpr, in_deps: List[Deps], mode: str, raw: Optional[Dict] = None,
            cut=lambda mixing: False, classify=lambda mixing: None,
            projections: Optional[Dict[Path, Hashable]] = None,
            neuron_axes: Optional[Dict[Hashable, FrozenSet[int]]] = None) -> Analysis:
    """Walk `jaxpr` (open) with `in_deps` for its invars.

    **Arguments:**

    - `jaxpr`: a `jax.extend.core.Jaxpr`.
    - `in_deps`: one `Deps` per invar (empty for untracked inputs).
    - `mode`: `"jacobian"` (record synapses) or `"mixing"` (record mixing equations).
    - `raw`: invars that are raw parameter tangents, `{var: (param key, identity perm)}`.
    - `cut`: in mixing mode, whether a method cuts a found `Mixing` (the walk then goes
      on as if that operand carried no gradient, so later mixing is judged on the cut model).
    - `classify`: in mixing mode, called on each found `Mixing` before `cut` (to set its
      `recurrent` / `reaches_state` flags). The output dependencies then also carry a
      `MixTag(path)` key for every mixing equation whose result reaches that output.
    - `projections`: equations (by path) whose result stands for a tracked input of its own
      (`{path: key}`): a readout of a new state leaf whose trace is kept filtered (program.py).
    - `neuron_axes`: in mixing mode, the axes of each tracked input that index neurons
      (`{key: axes}`, passes/neurons.py); an input missing here has its leading axis.

    **Returns:**

    An `Analysis` with the output dependencies and what was recorded.
    """
    if mode not in ("jacobian", "mixing"):
        raise ValueError(f"mode must be 'jacobian' or 'mixing', not {mode!r}")
    walker = _Walker(mode, cut, classify, projections, neuron_axes)
    for v, deps in zip(jaxpr.invars, in_deps):
        for key, m in deps.items():
            if m == identity_map(len(v.aval.shape)):
                walker.key_shapes[key] = tuple(v.aval.shape)
    walker.result.outputs = walker.walk(jaxpr, list(in_deps), (), dict(raw or {}))
    walker.result.uniform = walker.last_uniform
    return walker.result


__all__ = ["analyse", "Analysis", "Synapse", "Mixing", "MixTag", "Note"]
