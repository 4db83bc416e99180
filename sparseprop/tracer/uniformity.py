"""Which Jacobian blocks are the same for every neuron (a shared leak, a detached reset).

A primal value is *constant-like* when it is equal at every index: a value with one
entry (rank 0 or every axis of size 1), a broadcast of one, or an elementwise function
of such values. A tangent is *uniform* in an input when it equals c · (that input's
tangent) with c constant-like: the
diagonal Jacobian block is a scalar times the identity. When every block feeding a
synaptic trace is uniform, the trace e[i, l] does not depend on i and is stored as
ū[l] (a factorised trace, O(m) instead of O(n·m)). Which primitive is in which
uniformity class is said in registry.py; a primitive in none is treated as non-uniform,
which is always safe.
"""
from __future__ import annotations

from typing import FrozenSet, Hashable, List, Sequence

from .registry import lookup


def constant_like(eqn, operands_const: Sequence[bool]) -> bool:
    """Whether the (single) output of a primal equation is equal at every index."""
    if all(all(d == 1 for d in getattr(v.aval, "shape", ())) for v in eqn.outvars):   # one entry
        return True
    return lookup(eqn).constant_like and all(operands_const)


def uniform_keys(eqn, deps: Sequence[dict], uniform: Sequence[FrozenSet[Hashable]],
                 const: Sequence[bool]) -> List[FrozenSet[Hashable]]:
    """Uniform inputs of each output of a tangent equation (`deps`: each operand's dependencies),
    by the primitive's uniformity class (registry.py)."""
    kind = lookup(eqn).uniformity
    none = [frozenset() for _ in eqn.outvars]
    tangent_ops = [i for i, d in enumerate(deps) if d]
    if kind == "pass" and tangent_ops == [0]:
        return [uniform[0]]
    if kind == "sum":
        # a sum is uniform in q when every term that carries q carries it uniformly
        keys = set().union(*[deps[i] for i in tangent_ops])
        return [frozenset(k for k in keys if all(k in uniform[i] for i in tangent_ops if k in deps[i]))]
    if kind == "scale" and len(tangent_ops) == 1:
        other = 1 - tangent_ops[0]
        return [uniform[tangent_ops[0]]] if const[other] else none
    if kind == "quotient" and tangent_ops == [0]:
        return [uniform[0]] if const[1] else none
    if kind == "select" and const[0] and 0 not in tangent_ops:
        # every case must be a uniform tangent (a zero case is a non-tangent literal: not uniform)
        if len(tangent_ops) == len(eqn.invars) - 1:
            keys = set().union(*[deps[i] for i in tangent_ops])
            return [frozenset(k for k in keys if all(k in uniform[i] and k in deps[i] for i in tangent_ops))]
    return none
