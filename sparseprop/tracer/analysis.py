"""The structural pass: walk a jaxpr and propagate dependency maps.

Two uses share this walker:
- on the JVP program of a step, to prove the sparsity of the state Jacobian and of
  each parameter's direct effect (`mode="jacobian"`), and to find *synapses*:
  `dot_general`s where a parameter's tangent meets a tangent-free operand;
- on the step itself, to find the operations that mix neurons of the previous state
  (`mode="mixing"`), which approximate methods cut.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Hashable, List, Optional, Tuple

import jax
import jax.numpy as jnp
from jax.extend import core as jcore

from . import convolution
from .errors import UNKNOWN_SOURCE, source_line
from .indices import index_fact
from .jaxpr_util import CALLS, CUSTOM_DERIVATIVE, sub_jaxpr
from .rules import RULES, apply_rule
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
    primitive: str = "dot_general"   # or "conv_general_dilated": a kernel shared over space
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


def _single(v) -> bool:
    """One entry (rank 0, or every axis of size 1): equal at every index once broadcast."""
    return all(d == 1 for d in getattr(v.aval, "shape", ()))


class _Walker:
    def __init__(self, mode: str, cut=lambda mixing: False, classify=lambda mixing: None, projections=None):
        self.mode = mode
        self.projections = projections or {}
        self.cut = cut
        self.classify = classify
        self.call_site = None
        self.derivative_jaxprs: Dict = {}
        self.key_shapes: Dict[Hashable, Tuple[int, ...]] = {}   # tracked input -> its shape
        self.result = Analysis(outputs=[])

    def source(self, eqn) -> str:
        """The user's line for `eqn`; inside library calls (jnp.sort is a jit), the call site's."""
        line = source_line(eqn)
        return self.call_site if line == UNKNOWN_SOURCE and self.call_site else line

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

        def read_const(v):
            return isinstance(v, jcore.Literal) or const.get(v, _single(v))

        def read_uni(v):
            return frozenset() if isinstance(v, jcore.Literal) else uni.get(v, frozenset())

        for i, eqn in enumerate(jaxpr.eqns):
            here = path + (i,)
            ins = [read(v) for v in eqn.invars]
            ins_const = [read_const(v) for v in eqn.invars]
            ins_uni = [read_uni(v) for v in eqn.invars]
            self.facts = [None if isinstance(v, jcore.Literal) else facts.get(v) for v in eqn.invars]
            name = eqn.primitive.name
            outs_uni = None
            if not any(ins):
                outs = [{} for _ in eqn.outvars]
                for v, f in zip(eqn.outvars, index_fact(eqn, self.facts)):
                    if f is not None:
                        facts[v] = f
            elif name in CALLS and sub_jaxpr(eqn)[0] is not None:
                sub, consts = sub_jaxpr(eqn)
                inner_raw = {iv: raw[ov] for iv, ov in zip(sub.invars, eqn.invars)
                             if not isinstance(ov, jcore.Literal) and ov in raw}
                outer_site, self.call_site = self.call_site, self.source(eqn)
                outs = self.walk(sub, ins, here, inner_raw, ins_uni, ins_const, self.facts)
                self.call_site = outer_site
                outs_uni = self.last_uniform
            elif here in self.projections:
                key = self.projections[here]
                self.key_shapes[key] = tuple(eqn.outvars[0].aval.shape)
                outs = [{key: identity_map(len(eqn.outvars[0].aval.shape))}]
                outs_uni = [frozenset([key])]
            elif self.mode == "jacobian" and name in SYNAPSE_PRIMITIVES and self._synapse(eqn, ins, here, raw):
                key = self.result.synapses[-1].key
                outs = [{key: identity_map(len(eqn.outvars[0].aval.shape))}]
                outs_uni = [frozenset([key])]
            else:
                outs = self._leaf(eqn, ins, here)
            if outs_uni is None:
                outs_uni = uniform_keys(eqn, ins, ins_uni, ins_const)
            out_const = (not any(ins)) and constant_like(eqn, ins_const)
            if name == "transpose" and eqn.invars[0] in raw:
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

    def _rule_or_body(self, eqn, ins, here):
        name = eqn.primitive.name
        if name in CUSTOM_DERIVATIVE:
            return derivative_structure(eqn, ins, self.derivative_jaxprs)
        if name == "cond":
            outs = None
            for br in eqn.params["branches"]:
                o = _Walker("opaque").walk(br.jaxpr, list(ins[1:]), here, {})
                outs = o if outs is None else [merge_deps(a, b) for a, b in zip(outs, o)]
            return outs
        if name == "scan":
            return scan_structure(eqn, ins)
        if name == "while":
            return while_structure(eqn, ins)
        return apply_rule(eqn, ins, self.facts)

    def _leaf(self, eqn, ins, here):
        name = eqn.primitive.name
        if name not in RULES and name not in CUSTOM_DERIVATIVE and name not in LOOPS_AND_BRANCHES:
            self.result.notes.append(Note(here, name, self.source(eqn),
                                          "no structural rule: treated as mixing every entry"))
        if self.mode == "jacobian" and name in INDEX_MAPS:
            self._note_lost_structure(eqn, ins, here)
        if self.mode != "mixing":
            return self._rule_or_body(eqn, ins, here)
        ins = list(ins)
        mixes = False
        for k, d in enumerate(ins):
            if not d:
                continue
            alone = [d if j == k else {} for j in range(len(ins))]
            lost = lost_matches(d, merge_deps(*self._rule_or_body(eqn, alone, here)))
            # only the neuron axis counts: mixing compartments or delay taps of one
            # neuron (the other axes of a state leaf) stays within the neuron
            lost = {key: axes for key, axes in lost.items() if NEURON_AXIS in axes}
            if lost:
                mixes = True
                mix = Mixing(here, name, k, tuple(sorted(lost, key=str)), self.source(eqn))
                self.classify(mix)
                self.result.mixing.append(mix)
                if self.cut(mix):
                    # what follows sees the model with this operand cut (tags of earlier
                    # mixing results pass on: they record reachability, not derivatives)
                    ins[k] = {key: m for key, m in d.items() if isinstance(key, MixTag)}
        outs = self._rule_or_body(eqn, ins, here)
        if mixes:
            # tag the result, so the outputs it reaches can be read off the final dependencies
            outs = [{**d, MixTag(here): ()} for d in outs]
        return outs

    def _note_lost_structure(self, eqn, ins, here):
        """A layout operation that moves entries (an offset, a size change, a merge of axes,
        a permutation) loses their matches: say so, since the traces through it are denser
        than the model needs."""
        lost = {}
        for k, d in enumerate(ins):
            if d:
                alone = [d if j == k else {} for j in range(len(ins))]
                for key, axes in lost_matches(d, merge_deps(*self._rule_or_body(eqn, alone, here))).items():
                    lost[key] = tuple(sorted(set(lost.get(key, ())) | set(axes)))
        if lost:
            self.result.notes.append(Note(here, eqn.primitive.name, self.source(eqn),
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


LOOPS_AND_BRANCHES = {"cond", "scan", "while"}
SYNAPSE_PRIMITIVES = {"dot_general", convolution.PRIMITIVE}


@dataclass(frozen=True)
class MixTag:
    """A tracked pseudo-input standing for the result of the mixing equation at `path`."""
    path: Path

# Layout primitives: every entry moves somewhere, so a lost match is lost structure (not a sum).
INDEX_MAPS = {"slice", "pad", "concatenate", "split", "reshape", "gather", "scatter", "scatter-add",
              "scatter_add", "scatter-mul", "scatter_mul", "dynamic_slice", "dynamic_update_slice",
              "rev", "tile"}


def _loop_fixed_point(body, carry: List[Deps], run) -> List[Deps]:
    """Carry dependencies of a loop: iterate the body's structure until nothing changes
    (maps only lose matches, so this ends)."""
    while True:
        new = [merge_deps(c, o) for c, o in zip(carry, run(carry))]
        if new == carry:
            return carry
        carry = new


def scan_structure(eqn, ins: List[Deps]) -> List[Deps]:
    """`lax.scan` (and static `fori_loop`): consts, carry and sliced xs through the body."""
    body = eqn.params["jaxpr"].jaxpr
    nc, nk = eqn.params["num_consts"], eqn.params["num_carry"]
    consts, carry, xs = ins[:nc], list(ins[nc:nc + nk]), ins[nc + nk:]
    # a slice x[t] drops the scanned axis 0: its matches move down one axis
    sliced = [{key: tuple(None if j in (None, 0) else j - 1 for j in m) for key, m in d.items()} for d in xs]

    def run(c):
        return _Walker("opaque").walk(body, list(consts) + list(c) + sliced, (), {})[:nk]
    carry = _loop_fixed_point(body, carry, run)
    outs = _Walker("opaque").walk(body, list(consts) + list(carry) + sliced, (), {})
    # stacked outputs gain the scanned axis in front
    ys = [{key: tuple(None if j is None else j + 1 for j in m) for key, m in d.items()} for d in outs[nk:]]
    return list(carry) + ys


def while_structure(eqn, ins: List[Deps]) -> List[Deps]:
    """`lax.while_loop`: the body's carry structure to a fixed point (the predicate has no derivative)."""
    body = eqn.params["body_jaxpr"].jaxpr
    cn, bn = eqn.params["cond_nconsts"], eqn.params["body_nconsts"]
    consts, carry = ins[cn:cn + bn], list(ins[cn + bn:])

    def run(c):
        return _Walker("opaque").walk(body, list(consts) + list(c), (), {})
    return _loop_fixed_point(body, carry, run)


def derivative_structure(eqn, ins: List[Deps], cache: Optional[Dict] = None) -> List[Deps]:
    """Structure of a custom-derivative call, read from the JVP the user defined for it.

    Its primal body is no guide: a Heaviside spike has zero derivative there, while
    its surrogate derivative is what flows. `cache` keeps the traced JVP per equation
    (the mixing pass asks once per operand).
    """
    cache = {} if cache is None else cache
    if id(eqn) not in cache:
        cache[id(eqn)] = (eqn, _derivative_jaxpr(eqn))   # eqn kept alive: its id stays unique
    closed, diff = cache[id(eqn)][1]
    in_deps = [{} for _ in eqn.invars] + [ins[i] for i in diff]
    return _Walker("opaque").walk(closed.jaxpr, in_deps, (), {})


def _derivative_jaxpr(eqn):
    from .interpreter import forward
    avals = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in eqn.invars]
    diff = [i for i, a in enumerate(avals) if jnp.issubdtype(a.dtype, jnp.inexact)]

    def tangents_out(primals, tangents):
        def f(*diff_args):
            args = list(primals)
            for i, a in zip(diff, diff_args):
                args[i] = a
            return forward(eqn, args)
        return jax.jvp(f, [primals[i] for i in diff], list(tangents))[1]

    return jax.make_jaxpr(tangents_out)(avals, [avals[i] for i in diff]), diff


def analyse(jaxpr, in_deps: List[Deps], mode: str, raw: Optional[Dict] = None,
            cut=lambda mixing: False, classify=lambda mixing: None,
            projections: Optional[Dict[Path, Hashable]] = None) -> Analysis:
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

    **Returns:**

    An `Analysis` with the output dependencies and what was recorded.
    """
    walker = _Walker(mode, cut, classify, projections)
    for v, deps in zip(jaxpr.invars, in_deps):
        for key, m in deps.items():
            if m == identity_map(len(v.aval.shape)):
                walker.key_shapes[key] = tuple(v.aval.shape)
    walker.result.outputs = walker.walk(jaxpr, list(in_deps), (), dict(raw or {}))
    walker.result.uniform = walker.last_uniform
    return walker.result


__all__ = ["analyse", "Analysis", "Synapse", "Mixing", "MixTag", "Note"]
