"""Small helpers over jaxprs shared by the structural pass and the interpreter."""
from __future__ import annotations

from jax._src.interpreters import partial_eval as pe
from jax.extend import core as jcore


def sub_jaxpr(eqn):
    """`(jaxpr, consts)` of an equation with a `jaxpr` / `call_jaxpr` parameter (a call, a
    custom-derivative call, a scan), or `(None, ())`. Which of them the walker follows as a
    call is said in registry.py."""
    p = eqn.params
    j = p.get("jaxpr", p.get("call_jaxpr"))
    if j is None:
        return None, ()
    if isinstance(j, jcore.ClosedJaxpr):
        return j.jaxpr, j.consts
    return j, ()


def live_part(closed: jcore.ClosedJaxpr):
    """Drop equations that no output needs; returns (jaxpr, consts, mask of used invars)."""
    jaxpr, used = pe.dce_jaxpr(closed.jaxpr, [True] * len(closed.jaxpr.outvars))
    return jaxpr, closed.consts, used


def live_program(closed: jcore.ClosedJaxpr) -> jcore.ClosedJaxpr:
    """`closed` without the equations that no output needs; every input is kept."""
    jaxpr, _ = pe.dce_jaxpr(closed.jaxpr, [True] * len(closed.jaxpr.outvars), instantiate=True)
    return jcore.ClosedJaxpr(jaxpr, closed.consts)


def equation_at(jaxpr, path):
    """The equation at `path` (indices through nested calls)."""
    eqn = None
    for i in path:
        if eqn is not None:
            jaxpr, _ = sub_jaxpr(eqn)
        eqn = jaxpr.eqns[i]
    return eqn


def all_equations(jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn
        sub, _ = sub_jaxpr(eqn)
        if sub is not None:
            yield from all_equations(sub)
