"""Everything the tracer knows about a JAX primitive, in one frozen record per primitive.

Adding a primitive is one entry in this file: an elementwise primitive is one name in a
`defelementwise(...)` call, a layout operation one `deflayout(rule, ...)` with its
structural rule from rules.py. The walker (analysis.py), the uniformity pass
(uniformity.py), the linearity check (linearity.py) and the interpreter (interpreter.py)
read these records through `lookup`; none keeps a table of its own.

Entries are keyed by the primitive objects the installed JAX exports (`jax.lax.*_p`,
`jax.extend.core.primitives`); primitives it does not export are named, and every name is
checked at import against the primitives of the installed JAX: a misspelt or retired name
raises `RegistryError` instead of being kept silently. `OTHER_JAX_NAMES` lists the names
that only other JAX versions use (the jit primitive was `pjit`, the remat primitive
`checkpoint`, ...): they are skipped where absent. A primitive with no entry gets the
sound fallback: every output depends densely on every input, and the walker notes it.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import jax
import numpy as np
import jax.numpy as jnp
from jax import lax
from jax.extend.core import Primitive
from jax.extend.core import primitives as xp

from . import indices, rules

# Uniformity classes (uniformity.py): how a tangent equation keeps "c · (an input's tangent)"
# with c equal at every index.
UNIFORMITY = ("pass",       # one operand, passed on (neg, reshape, broadcast)
              "sum",        # add, sub: uniform where every term carrying the input is
              "scale",      # mul: by a constant-like operand
              "quotient",   # div: a tangent numerator over a constant-like denominator
              "select",     # select_n with a constant-like predicate
              "none")       # anything else: never uniform (always safe)

# Linearity classes (linearity.py): how an equation treats operands linear in a tangent.
LINEARITY = ("bilinear",         # mul, dot_general, conv: linear in each operand, the other scales
             "quotient",         # div: linear in the numerator, the denominator scales
             "zero_preserving",  # a linear map of its first operand: a zero stays zero
             "sum",              # add, sub: linear when every float term is
             "nonlinear",        # sin, exp, max, ...: never linear in an operand
             "other")            # anything else: linear when every float operand is linear or zero

KINDS = ("leaf",               # a structural rule of its own
         "call",               # a sub-program walked (and rewritten) equation by equation
         "custom_derivative",  # a primal with a user-chosen derivative: read from the derivative
         "branch",             # cond: one of several sub-programs
         "loop")               # scan, while: a body to a fixed point

# Names that other JAX versions give primitives known here (or primitives that they lack);
# skipped where the installed JAX has no such primitive. Any other unknown name is an error.
OTHER_JAX_NAMES = frozenset({
    "pjit",                   # the jit primitive before it was renamed `jit`
    "checkpoint",             # the remat primitive before it was renamed `remat2`
    "custom_vjp_call_jaxpr",  # custom_vjp calls in jaxprs before `custom_vjp_call`
    "ragged_dot",             # before `ragged_dot_general`
    "split", "stack", "unstack", "tile",   # layout primitives newer than the oldest JAX supported
})


class RegistryError(LookupError):
    """A registry entry names no primitive of the installed JAX, or names one twice."""


@dataclass(frozen=True)
class Structure:
    """A structural rule (rules.py) and how to call it.

    - `rule`: `rule(eqn, in_deps)` returning each output's `Deps`; with `reads_facts`,
      `rule(eqn, in_deps, facts)` (facts: indices.py, per operand); with `nested`,
      `rule(eqn, in_deps, ctx)` (it walks sub-programs, see rules.py).
    Leaf rules give non-float outputs no dependencies (they carry no derivative).
    """
    rule: Callable
    reads_facts: bool = False
    nested: bool = False

    def __call__(self, eqn, in_deps, ctx):
        if self.nested:
            return self.rule(eqn, in_deps, ctx)
        if not any(in_deps):
            return [{} for _ in eqn.outvars]
        outs = self.rule(eqn, in_deps, ctx.facts) if self.reads_facts else self.rule(eqn, in_deps)
        return [d if jnp.issubdtype(v.aval.dtype, jnp.inexact) else {} for d, v in zip(outs, eqn.outvars)]


CONSERVATIVE = Structure(rules.conservative_rule)


@dataclass(frozen=True)
class PrimitiveInfo:
    """What the tracer knows about one primitive.

    - `primitive`: the JAX primitive.
    - `structure`: its structural rule; None: unknown, `CONSERVATIVE` applies and the
      walker notes it.
    - `index_fact`: `f(eqn, facts)`, facts of its outputs from its operands' (indices.py).
    - `uniformity`: one of `UNIFORMITY`.
    - `constant_like`: its output is equal at every index when every operand is.
    - `linearity`: one of `LINEARITY`.
    - `index_map`: a layout operation that moves entries (an offset, a size change, a merge
      of axes): a match it loses is lost structure, which the walker notes.
    - `kind`: one of `KINDS`.
    - `synapse`: a product where a parameter can meet a tangent-free operand (analysis.py).
    - `forward`: `f(eqn, invals)` evaluating it in a form that `jax.jvp` can differentiate,
      or None (bind it as it is).
    - `apply`: `f(eqn, invals)` evaluating it in a form that every transformation (jvp and
      transpose) can follow, or None (bind it as it is).
    """
    primitive: object
    structure: Optional[Structure] = None
    index_fact: Optional[Callable] = None
    uniformity: str = "none"
    constant_like: bool = False
    linearity: str = "other"
    index_map: bool = False
    kind: str = "leaf"
    synapse: bool = False
    forward: Optional[Callable] = None
    apply: Optional[Callable] = None

    @property
    def name(self) -> str:
        return self.primitive.name

    @property
    def known(self) -> bool:
        """Whether the tracer has a rule for it (else it is treated as mixing every entry)."""
        return self.structure is not None


def installed_primitives() -> Dict[str, List[object]]:
    """The primitives of the installed JAX.

    **Returns:**

    `{name: [primitive, ...]}` for every primitive object that a loaded `jax` module holds
    (a name may in principle belong to more than one object).
    """
    found: Dict[str, List[object]] = {}
    for module_name, module in list(sys.modules.items()):
        if module is None or not (module_name == "jax" or module_name.startswith("jax.")):
            continue
        for value in list(vars(module).values()):
            if isinstance(value, Primitive) and value not in found.setdefault(value.name, []):
                found[value.name].append(value)
    return found


_INSTALLED = installed_primitives()
_TABLE: Dict[object, PrimitiveInfo] = {}


def _resolve(spec) -> List[object]:
    """The primitive objects for `spec`: a primitive, or the name of one (checked)."""
    if isinstance(spec, Primitive):
        return [spec]
    if spec in _INSTALLED:
        return list(_INSTALLED[spec])
    if spec in OTHER_JAX_NAMES:
        return []
    raise RegistryError(f"{spec!r} is not a primitive of the installed JAX {jax.__version__}")


def register(*prims, **fields) -> None:
    """Add one record per primitive; the `def*` helpers below call this with their family's fields.

    **Arguments:**

    - `prims`: JAX primitives (`jax.lax.exp_p`), or names of primitives the installed JAX has
      but does not export (a name in `OTHER_JAX_NAMES` is skipped where absent).
    - `fields`: fields of `PrimitiveInfo` other than `primitive`.

    **Raises:**

    `RegistryError` for a name no primitive of the installed JAX has, or a primitive
    registered before (nothing is added then).
    """
    found = [p for spec in prims for p in _resolve(spec)]
    for p in found:
        if p in _TABLE or found.count(p) > 1:
            raise RegistryError(f"primitive {p.name!r} registered twice")
    for p in found:
        _TABLE[p] = PrimitiveInfo(primitive=p, **fields)


def defelementwise(*prims, **fields) -> None:
    """Elementwise primitives: output index α reads operand index α (rank-0 operands broadcast).
    Non-linear in their operands unless `linearity` says otherwise."""
    fields = {"linearity": "nonlinear", **fields}
    register(*prims, structure=Structure(rules.elementwise_rule), constant_like=True, **fields)


def defzero(*prims, **fields) -> None:
    """Primitives whose outputs have zero derivative everywhere (piecewise constant, or cut)."""
    register(*prims, structure=Structure(rules.zero_rule), **fields)


def defrule(rule, *prims, reads_facts=False, **fields) -> None:
    """Primitives with their own structural rule from rules.py."""
    register(*prims, structure=Structure(rule, reads_facts=reads_facts), **fields)


def deflayout(rule, *prims, **fields) -> None:
    """Layout operations that move entries (`index_map`): what they lose is noted."""
    defrule(rule, *prims, index_map=True, **fields)


def defreduction(*prims, **fields) -> None:
    """Reductions over `axes`: the kept axes stay matched."""
    defrule(rules.reduction_rule, *prims, **fields)


def defcall(*prims) -> None:
    """Calls whose sub-program the walker and the interpreter follow equation by equation."""
    register(*prims, kind="call")


def defcontrol(structure, kind, *prims) -> None:
    """Branches and loops, with their structure over the sub-programs (rules.py)."""
    register(*prims, structure=Structure(structure, nested=True), kind=kind)


def defcustom(*prims, forward=None) -> None:
    """Custom-derivative calls: structure from the user's derivative, rewritten only whole."""
    register(*prims, structure=Structure(rules.custom_derivative_structure, nested=True),
             kind="custom_derivative", forward=forward)


def lookup(x) -> PrimitiveInfo:
    """The record of an equation's primitive (or of a primitive, or of a primitive's name).

    **Arguments:**

    - `x`: a jaxpr equation, a JAX primitive or a primitive name.

    **Returns:**

    Its `PrimitiveInfo`; for a primitive without an entry, a record with no structural rule
    (`known` is False: the conservative rule applies).

    **Raises:**

    `RegistryError` for a name that no primitive of the installed JAX has.
    """
    if isinstance(x, str):
        prims = _resolve(x)
        if not prims:
            raise RegistryError(f"{x!r} is not a primitive of the installed JAX {jax.__version__}")
        x = prims[0]
    prim = getattr(x, "primitive", x)
    info = _TABLE.get(prim)
    return info if info is not None else PrimitiveInfo(primitive=prim)


def entries() -> List[PrimitiveInfo]:
    """Every record, in registration order."""
    return list(_TABLE.values())


def _forward_custom_vjp(eqn, invals):
    """A custom_vjp call made forward-differentiable (interpreter.forward_custom_vjp, imported
    here when called: the interpreter reads this registry)."""
    from .interpreter import forward_custom_vjp
    return forward_custom_vjp(eqn, invals)


# ----------------------------------------------------------------------------- elementwise
defelementwise(
    lax.abs_p, lax.acos_p, lax.acosh_p, lax.asin_p, lax.asinh_p, lax.atan_p, lax.atan2_p, lax.atanh_p,
    lax.cbrt_p, lax.clamp_p, lax.cos_p, lax.cosh_p, lax.digamma_p, lax.erf_p, lax.erf_inv_p, lax.erfc_p,
    lax.exp_p, lax.exp2_p, lax.expm1_p, lax.integer_pow_p, lax.lgamma_p, lax.log_p, lax.log1p_p,
    lax.logistic_p, lax.max_p, lax.min_p, lax.nextafter_p, lax.pow_p, lax.rem_p, lax.rsqrt_p, lax.sin_p,
    lax.sinh_p, lax.sqrt_p, lax.square_p, lax.tan_p, lax.tanh_p)
defelementwise(lax.bessel_i0e_p)
defelementwise(lax.conj_p, lax.imag_p, lax.real_p, lax.complex_p, linearity="other")
defelementwise(lax.neg_p, lax.reduce_precision_p, uniformity="pass", linearity="zero_preserving")
defelementwise(lax.convert_element_type_p, lax.copy_p, uniformity="pass", linearity="zero_preserving",
               index_fact=indices.same_fact)
defelementwise(lax.add_p, lax.sub_p, xp.add_jaxvals_p, uniformity="sum", linearity="sum")
defelementwise(lax.mul_p, uniformity="scale", linearity="bilinear")
defelementwise(lax.div_p, uniformity="quotient", linearity="quotient")
defelementwise(lax.select_n_p, uniformity="select", linearity="other", index_fact=indices.select_fact)
defrule(rules.barrier_rule, lax.optimization_barrier_p, constant_like=True)

# ----------------------------------------------------------------------- zero derivative
defzero(lax.stop_gradient_p, lax.sign_p, lax.floor_p, lax.ceil_p, lax.round_p, lax.is_finite_p,
        lax.argmax_p, lax.argmin_p, xp.random_bits_p, xp.random_seed_p, "random_wrap", "random_unwrap",
        lax.eq_p, lax.ne_p, lax.le_p, lax.gt_p, lax.ge_p, lax.and_p, lax.or_p, lax.not_p, lax.xor_p,
        lax.shift_left_p, lax.shift_right_logical_p, lax.shift_right_arithmetic_p, lax.population_count_p,
        lax.clz_p)
defzero(lax.iota_p, index_fact=indices.iota_fact)
defzero(lax.lt_p, index_fact=indices.negative_index_fact)

# ------------------------------------------------------------------- reductions, scans
defreduction(lax.reduce_sum_p, linearity="zero_preserving")
defreduction(lax.reduce_max_p, lax.reduce_min_p, lax.reduce_prod_p, lax.reduce_and_p, lax.reduce_or_p,
             lax.reduce_xor_p)
defrule(rules.cumulative_rule, lax.cumsum_p, lax.cumprod_p, lax.cummax_p, lax.cummin_p, lax.cumlogsumexp_p)
def _apply_reduce_window(eqn, invals):
    """A generic `reduce_window` whose reducer is one add / max / min, applied through
    `lax.reduce_window` so that it becomes the monoid primitive (which reverse mode transposes;
    the generic primitive has no transpose)."""
    reducer = eqn.params["jaxpr"]
    body = getattr(reducer, "jaxpr", reducer)
    monoid = {"add": lax.add, "max": lax.max, "min": lax.min}.get(
        body.eqns[0].primitive.name if len(body.eqns) == 1 else None)
    if monoid is None or len(invals) != 2:
        return None
    p = eqn.params
    init = eqn.invars[1]
    if hasattr(init, "val"):        # a literal: lax.reduce_window sees a constant and picks the monoid
        return [lax.reduce_window(invals[0], init.val, monoid, p["window_dimensions"], p["window_strides"],
                                  p["padding"], p["base_dilation"], p["window_dilation"])]
    if any(tuple(pad) != (0, 0) for pad in p["padding"]) or any(d != 1 for d in p["base_dilation"]):
        return None                 # padded entries would hold the (traced) init value
    identity = {lax.add: 0, lax.max: -np.inf, lax.min: np.inf}[monoid]
    reduced = lax.reduce_window(invals[0], np.asarray(identity, invals[0].dtype), monoid, p["window_dimensions"],
                                p["window_strides"], p["padding"], p["base_dilation"], p["window_dilation"])
    return [monoid(reduced, invals[1].astype(reduced.dtype))]


defrule(rules.window_rule, lax.reduce_window_sum_p, lax.reduce_window_max_p, lax.reduce_window_min_p)
defrule(rules.window_rule, lax.reduce_window_p, apply=_apply_reduce_window)
defrule(rules.select_and_gather_add_rule, lax.select_and_gather_add_p)

# ----------------------------------------------------------------------------- layout
defrule(rules.broadcast_in_dim_rule, lax.broadcast_in_dim_p, uniformity="pass", constant_like=True,
        linearity="zero_preserving", index_fact=indices.broadcast_fact)
defrule(rules.squeeze_rule, lax.squeeze_p, uniformity="pass", linearity="zero_preserving")
defrule(rules.transpose_rule, lax.transpose_p, linearity="zero_preserving")
defrule(rules.stack_rule, "stack")
defrule(rules.unstack_rule, "unstack")
deflayout(rules.reshape_rule, lax.reshape_p, uniformity="pass", linearity="zero_preserving")
deflayout(rules.slice_rule, lax.slice_p, linearity="zero_preserving")
deflayout(rules.reversing_rule, lax.rev_p, linearity="zero_preserving")
deflayout(rules.reversing_rule, "tile")
deflayout(rules.pad_rule, lax.pad_p)
deflayout(rules.concatenate_rule, lax.concatenate_p, index_fact=indices.concatenate_fact)
deflayout(rules.split_rule, "split")
deflayout(rules.dynamic_slice_rule, lax.dynamic_slice_p)
deflayout(rules.dynamic_update_slice_rule, lax.dynamic_update_slice_p)
deflayout(rules.gather_rule, lax.gather_p, reads_facts=True)
deflayout(rules.scatter_rule, lax.scatter_p, lax.scatter_add_p, lax.scatter_mul_p, reads_facts=True)

# --------------------------------------------------------------------------- products
defrule(rules.dot_general_rule, lax.dot_general_p, synapse=True, linearity="bilinear")
defrule(rules.conv_rule, lax.conv_general_dilated_p, synapse=True, linearity="bilinear")
register("ragged_dot_general", "ragged_dot", linearity="bilinear")   # no structural rule yet

# ------------------------------------------------------- calls, control flow, custom rules
defcall(xp.closed_call_p, "jit", "pjit", "remat2", "checkpoint")
defcontrol(rules.cond_structure, "branch", lax.cond_p)
defcontrol(rules.scan_structure, "loop", lax.scan_p)
defcontrol(rules.while_structure, "loop", lax.while_p)
defcustom(xp.custom_jvp_call_p)
defcustom(xp.custom_vjp_call_p, "custom_vjp_call_jaxpr", forward=_forward_custom_vjp)


__all__ = ["PrimitiveInfo", "Structure", "RegistryError", "lookup", "entries", "register", "defelementwise",
           "defzero", "defrule", "deflayout", "defreduction", "defcall", "defcontrol", "defcustom",
           "installed_primitives", "CONSERVATIVE", "OTHER_JAX_NAMES"]
