"""Pass 5b: intra-step chains — new state leaves that are per-neuron functions of other new
state leaves (a spike z_t = H(v_t − β a_t) of this step's potential and adaptation).

For such a leaf z, dz_t/dθ = Σ_b D[z←b]_t ⊙ db_t/dθ with D[z←b]_t = ∂z_t/∂b_t, an array of z's
shape: z's trace need not be carried. It is recomputed from its sources' traces and the
coefficients D, which are all a step keeps (`storage.Derived`) — the hand-written e-prop of
Bellec et al. (2020) does the same when it rebuilds e_{t−1} = ψ_{t−1}(ε^v − β ε^a) instead of
storing it.

Proved on the JVP program: with the equation producing each other leaf's new tangent standing
for a tracked input of its own (`InputKey("chain", b)`), z's new tangent depends on those
inputs, each through the identity map, and on parameters directly at most (a trained
threshold or adaptation strength β). The blocks of z for a parameter it reads directly are
carried as usual; the others are recomputed.
"""
from __future__ import annotations

from typing import Dict, FrozenSet, Set, Tuple

from jax.extend import core as jcore

from ..analysis import analyse
from ..records import InputKey, Jvp, Step
from ..structure import identity_map


def find_chains(step: Step, jvp: Jvp, projections: Dict, swapped: Set
                ) -> Tuple[Dict[int, Tuple[int, ...]], Dict[int, FrozenSet[int]], Dict]:
    """`projections`: the equations standing for tracked inputs in the structural analysis;
    `swapped`: every equation whose result the emitted step replaces (no probe goes there).

    **Returns:** `(chains, direct, paths)`: `chains[z]` the state leaves z's new value is a
    per-neuron function of (nothing else differentiable reaches it but parameters),
    `direct[z]` the parameters z reads directly, `paths[InputKey("chain", b)]` the top-level
    equation producing b's new tangent (where a probe of b's tangent is injected)."""
    jx = jvp.closed.jaxpr
    S = step.diff_states
    tangents = jx.outvars[len(S): 2 * len(S)]
    producer = {v: i for i, eqn in enumerate(jx.eqns) for v in eqn.outvars}
    paths = {}
    for a, v in zip(S, tangents):
        eqn_index = producer.get(v) if isinstance(v, jcore.Var) else None
        if (eqn_index is not None and len(jx.eqns[eqn_index].outvars) == 1 and tangents.count(v) == 1
                and (eqn_index,) not in swapped):
            paths[InputKey("chain", a)] = (eqn_index,)
    chains, direct = {}, {}
    for z, v in zip(S, tangents):
        sources = {key.index for key in paths if key.index != z and paths[key][0] in _cone(jx, producer, v)}
        if not sources:
            continue
        probed = {path: key for key, path in paths.items() if key.index in sources}
        analysis = analyse(jx, list(jvp.in_deps), mode="jacobian", raw=jvp.raw,
                           projections={**projections, **probed})
        deps = analysis.outputs[len(S) + S.index(z)]
        shape = tuple(step.s_avals[z].shape)
        links = {key: m for key, m in deps.items() if key[0] != "param"}
        if links and all(key[0] == "chain" and tuple(step.s_avals[key[1]].shape) == shape
                         and m == identity_map(len(shape)) for key, m in links.items()):
            chains[z] = tuple(sorted(key[1] for key in links))
            direct[z] = frozenset(key[1] for key in deps if key[0] == "param")
    used = {b for sources in chains.values() for b in sources}
    return chains, direct, {key: path for key, path in paths.items() if key.index in used}


def _cone(jx, producer, var) -> Set[int]:
    """Top-level equations that `var` depends on."""
    seen, stack = set(), [var]
    while stack:
        v = stack.pop()
        i = producer.get(v) if isinstance(v, jcore.Var) else None
        if i is None or i in seen:
            continue
        seen.add(i)
        stack.extend(jx.eqns[i].invars)
    return seen
