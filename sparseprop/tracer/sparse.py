"""Sparse synapses: a parameter whose entries are the synapses that exist.

Synapse e connects presynaptic value g[e] (u[pre[e]], times a mask entry) to neuron post[e]:

    I[i] = Σ_{e : post[e] = i} w[e] · g[e],   dI[i] / dw[e] = δ(i, post[e]) · g[e]

so when the state's Jacobians are per neuron, the trace of synapse e lives at neuron post[e]
only: one number per synapse (nnz), e_t[e] = D_t[post[e]] e_{t-1}[e] + ψ_t[post[e]] g_t[e],
and the gradient is Σ_i signal[i] e[i, e] = signal[post[e]] · e[e] (Bellec et al. 2018's deep
rewiring trains such networks; nnz instead of n·m per example).

Three ways users write them, each recognised here on the step's JVP program:

- an edge list: `jax.ops.segment_sum(w * u[pre], post, n)` or `zeros(n).at[post].add(w * u[pre])`
  (a scatter-add of a parameter vector times a tangent-free value); duplicate edges are summed;
- `jax.experimental.sparse.BCOO` weights: `W @ u` with `W.data` the parameter;
- a dense weight times a constant 0/1 mask, `(W * mask) @ u`: traces at the mask's nonzeros only,
  the gradient returned dense with zeros off the mask.

Each found synapse stands for a tracked input of the structural pass (its result I is swapped
for a probe, as a dense synapse's is), and the planner stores the blocks it feeds per edge
(`storage.PerEdge`) where every Jacobian on the way is per neuron; otherwise a dense block.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax._src.interpreters import partial_eval as pe
from jax.extend import core as jcore

from .errors import TracerError, source_line
from .interpreter import evaluate
from .jaxpr_util import sub_jaxpr
from .registry import lookup
from .records import InputKey

EDGE_LIST, BCOO, MASKED = "edge list", "BCOO", "masked dense"


@dataclass(frozen=True, eq=False)
class EdgeSynapse:
    """One sparse synapse found in the JVP program.

    - `key`: `("edge", k)`, the tracked input standing for I; `path`: the equation computing the
      tangent of I (swapped for the probe); `param`: the flat parameter leaf; `form`: how the
      user wrote it; `out_shape`: I's shape (n,); `nnz`: the number of synapses; `source`: the
      user's line.
    - `captures`: `(path, operand, name)`: values read from the step's equations (the indices,
      the presynaptic values).
    - `index_var`: the JVP program's variable holding the post indices (None: `rows` are static).
    - `rows`, `cols`, `mask`: a masked dense weight's nonzeros and mask values (static).
    """
    key: InputKey
    path: Tuple[int, ...]
    param: int
    form: str
    out_shape: Tuple[int, ...]
    nnz: int
    source: str
    captures: Tuple[Tuple[Tuple[int, ...], int, str], ...]
    index_var: object = None
    index_sizes: Tuple[int, ...] = ()     # the range of each index column
    rows: Optional[np.ndarray] = None
    cols: Optional[np.ndarray] = None
    mask: Optional[np.ndarray] = None

    def post(self, captured: Dict) -> jnp.ndarray:
        """The neuron of every synapse, shape (nnz,)."""
        if self.form == MASKED:
            return jnp.asarray(self.rows)
        if self.form == BCOO:
            return captured[(self.key, "indices")][:, 0]
        return captured[(self.key, "indices")].reshape(-1)

    def presynaptic(self, captured: Dict) -> jnp.ndarray:
        """g[e]: what synapse e multiplies its weight by this step, shape (nnz,)."""
        if self.form == MASKED:
            u = captured[(self.key, "u")]
            return u[self.cols] * jnp.asarray(self.mask, u.dtype)
        if self.form == BCOO:
            indices = captured[(self.key, "indices")]
            return captured[(self.key, "u")][indices[:, 1]]
        factors = [v for (k, name), v in captured.items() if k == self.key and name.startswith("g")]
        g = factors[0]
        for f in factors[1:]:
            g = g * f
        return g

    def gradient(self, per_edge, p_shape, batched: bool = False):
        """A per-synapse gradient (nnz,) in the parameter's layout (dense W: zeros off the mask)."""
        if self.form != MASKED:
            return per_edge.reshape(p_shape)
        return jnp.zeros(p_shape, per_edge.dtype).at[self.rows, self.cols].add(per_edge)

    def jacobian(self, post, g, p_shape) -> jnp.ndarray:
        """dI / dw as a dense array of shape out_shape + p_shape (for blocks not stored per edge)."""
        n = self.out_shape[0]
        if self.form == MASKED:
            return jnp.zeros((n,) + tuple(p_shape), g.dtype).at[post, self.rows, self.cols].add(g)
        return jnp.zeros((n, self.nnz), g.dtype).at[post, jnp.arange(self.nnz)].add(g, mode="drop")

    def describe(self) -> str:
        return f"{self.form} of {self.nnz} synapses onto {self.out_shape[0]} neurons"


def post_indices(edge: EdgeSynapse, closed, n_params: int, n_states: int, p, s):
    """The post indices computed from parameters and state alone (for a signal met outside a step)."""
    if edge.index_var is None:
        return jnp.asarray(edge.rows)
    jx = closed.jaxpr
    program, used = pe.dce_jaxpr(jx.replace(outvars=[edge.index_var]), [True])
    args = list(p) + list(s) + [None] * (len(jx.invars) - n_params - n_states)
    (indices,) = evaluate(program, closed.consts, [a for a, u in zip(args, used) if u], {})
    return indices[:, 0] if edge.form == BCOO else indices.reshape(-1)


def find_edge_synapses(closed, n_params: int, n_states: int, n_inputs: int) -> Tuple[EdgeSynapse, ...]:
    """Every sparse synapse of the JVP program `closed` ((p, s, xs, dp, ds) -> ...), at any depth
    of nested calls.

    **Raises:**

    `TracerError` for constant indices out of range (naming the line).
    """
    jx = closed.jaxpr
    n_in = n_params + n_states + n_inputs
    raw = {v: j for j, v in enumerate(jx.invars[n_in: n_in + n_params])}
    tangent = set(jx.invars[n_in:])
    consts = dict(zip(jx.constvars, closed.consts))
    index_ok = set(jx.invars[: n_params + n_states]) | set(jx.constvars)   # computable without x
    found: List[EdgeSynapse] = []
    _walk(jx, (), raw, tangent, consts, index_ok, {}, found)
    return tuple(found)


def _walk(jaxpr, path, raw, tangent, consts, index_ok, producers, found):
    producers = dict(producers)
    for i, eqn in enumerate(jaxpr.eqns):
        here = path + (i,)
        ins = eqn.invars
        is_tangent = [isinstance(v, jcore.Var) and v in tangent for v in ins]
        sub, _ = sub_jaxpr(eqn)
        if lookup(eqn).kind == "call" and sub is not None:
            inner_raw = {iv: raw[ov] for iv, ov in zip(sub.invars, ins) if isinstance(ov, jcore.Var) and ov in raw}
            inner_tangent = {iv for iv, t in zip(sub.invars, is_tangent) if t}
            inner_ok = {iv for iv, ov in zip(sub.invars, ins) if isinstance(ov, jcore.Literal) or ov in index_ok}
            inner_consts = {iv: consts[ov] for iv, ov in zip(sub.invars, ins) if isinstance(ov, jcore.Var) and ov in consts}
            _walk(sub, here, inner_raw, inner_tangent, inner_consts, inner_ok, {}, found)
        else:
            edge = _match(eqn, here, raw, is_tangent, consts, index_ok, producers, len(found))
            if edge is not None:
                found.append(edge)
        if any(is_tangent):
            tangent |= set(eqn.outvars)
        elif all(isinstance(v, jcore.Literal) or v in index_ok for v in ins):
            index_ok |= set(eqn.outvars)
        for v in eqn.outvars:
            producers[v] = (here, eqn)


def _scaled_weight(var, raw, producers):
    """`(param, factors)` when `var` is a raw parameter tangent times tangent-free per-edge factors
    (`w * u[pre]`, `sign * theta * u[pre]`, casts between): `factors` lists the (path, operand) of
    each factor; else None."""
    factors = []
    while not (isinstance(var, jcore.Var) and var in raw):
        if not isinstance(var, jcore.Var) or var not in producers:
            return None
        path, eqn = producers[var]
        if eqn.primitive.name == "convert_element_type":
            var = eqn.invars[0]
            continue
        if eqn.primitive.name != "mul":
            return None
        a, b = eqn.invars
        a_tangent, b_tangent = _is_tangent_product(a, raw, producers), _is_tangent_product(b, raw, producers)
        if a_tangent == b_tangent or any(not isinstance(v, jcore.Var) or v.aval.shape != var.aval.shape for v in (a, b)):
            return None
        factors.append((path, 1 if a_tangent else 0))
        var = a if a_tangent else b
    return raw[var], factors


def _is_tangent_product(var, raw, producers) -> bool:
    """Whether `var` is (a chain of products and casts of) a raw parameter tangent."""
    while isinstance(var, jcore.Var):
        if var in raw:
            return True
        if var not in producers or producers[var][1].primitive.name not in ("mul", "convert_element_type"):
            return False
        var = producers[var][1].invars[0] if producers[var][1].primitive.name == "convert_element_type" else \
            next((v for v in producers[var][1].invars if _is_tangent_product(v, raw, producers)), None)
    return False


def _match(eqn, here, raw, is_tangent, consts, index_ok, producers, k) -> Optional[EdgeSynapse]:
    name = eqn.primitive.name
    key = InputKey("edge", k)
    out_shape = tuple(eqn.outvars[0].aval.shape)
    if name == "scatter-add" and is_tangent == [False, False, True] and len(out_shape) == 1:
        dn = eqn.params["dimension_numbers"]
        upd = eqn.invars[2]
        if (dn.update_window_dims or tuple(dn.inserted_window_dims) != (0,)
                or tuple(dn.scatter_dims_to_operand_dims) != (0,) or upd not in producers):
            return None
        if len(upd.aval.shape) != 1:
            return None
        found = _scaled_weight(upd, raw, producers)
        if found is None:
            return None
        param, factors = found
        indices = eqn.invars[1]
        captures = ((here, 1, "indices"),) + tuple((path, k, f"g{i}") for i, (path, k) in enumerate(factors))
        return EdgeSynapse(key, here, param, EDGE_LIST, out_shape, int(upd.aval.shape[0]), source_line(eqn),
                           captures, index_var=indices if indices in index_ok else None, index_sizes=out_shape)
    if name == "bcoo_dot_general" and is_tangent == [True, False, False]:
        data, indices, u = eqn.invars
        (contract, batch) = eqn.params["dimension_numbers"]
        shape = tuple(eqn.params["lhs_spinfo"].shape)
        if (data in raw and len(shape) == 2 and len(u.aval.shape) == 1 and tuple(contract[0]) == (1,)
                and tuple(contract[1]) == (0,) and not batch[0] and len(data.aval.shape) == 1):
            return EdgeSynapse(key, here, raw[data], BCOO, out_shape, int(data.aval.shape[0]), source_line(eqn),
                               ((here, 1, "indices"), (here, 2, "u")),
                               index_var=indices if indices in index_ok else None, index_sizes=shape)
        return None
    if name == "dot_general" and len(out_shape) == 1:
        (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
        lhs, u = eqn.invars
        if not (is_tangent == [True, False] and tuple(lc) == (1,) and tuple(rc) == (0,) and not lb
                and len(lhs.aval.shape) == 2 and len(u.aval.shape) == 1 and lhs in producers):
            return None
        _, mul = producers[lhs]
        if mul.primitive.name != "mul":
            return None
        for side in (0, 1):
            w, m = mul.invars[side], mul.invars[1 - side]
            value = m.val if isinstance(m, jcore.Literal) else consts.get(m)
            if isinstance(w, jcore.Var) and w in raw and value is not None and np.shape(value) == lhs.aval.shape:
                mask = np.asarray(value)
                rows, cols = np.nonzero(mask)
                return EdgeSynapse(key, here, raw[w], MASKED, out_shape, int(rows.size), source_line(eqn),
                                   ((here, 1, "u"),), rows=rows, cols=cols, mask=mask[rows, cols])
    return None


def check_constant_indices(edge: EdgeSynapse, closed) -> None:
    """Constant indices must lie in range (JAX drops out-of-range synapses without a word).

    **Raises:**

    `TracerError` naming the synapse's line and the first offending indices.
    """
    if edge.index_var is None:
        return
    jx = closed.jaxpr
    program, used = pe.dce_jaxpr(jx.replace(outvars=[edge.index_var]), [True])
    if any(used):      # carried in the state: checked by nobody before the step runs
        return
    with jax.ensure_compile_time_eval():     # the program may be built inside a jit trace
        (value,) = evaluate(program, closed.consts, [], {})
    value = np.asarray(value).reshape(edge.nnz, -1)
    sizes = edge.index_sizes
    bad = (value < 0) | (value >= np.asarray(sizes)[: value.shape[1]])
    if np.any(bad):
        raise TracerError(
            f"the sparse synapses ({edge.form}) at {edge.source} have indices out of range "
            f"({value[bad][:5].tolist()} for sizes {tuple(sizes)}); JAX would drop those synapses "
            f"silently. Keep every pre and post index in range.")


__all__ = ["EdgeSynapse", "find_edge_synapses", "post_indices", "check_constant_indices", "EDGE_LIST", "BCOO", "MASKED"]
