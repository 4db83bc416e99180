"""A NIR graph as one sparseprop step function, and trained parameters back into a NIR graph."""
from __future__ import annotations

import os
from collections import defaultdict

import jax.numpy as jnp
import numpy as np

from .nodes import PARAMETERS, build


def _nir():
    try:
        import nir
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            "sparseprop.nir needs the `nir` package: pip install -e \".[nir]\" (or pip install nir)") from e
    return nir


def _flatten(graph, nir, prefix=""):
    """A graph's nodes and edges with every nested `NIRGraph` node inlined (snnTorch exports a
    recurrent layer, RLeaky or RSynaptic, as a subgraph).

    Inner nodes are named `sub.node`; an edge into (out of) a subgraph goes to its Input
    (comes from its Output) node, named either by the subgraph alone (which then must have
    one) or by `sub.input_name`. An endpoint may also name a port (`lif.output`), which is
    dropped. The inner Input and Output nodes stay, as pass-through nodes.

    **Returns:** `(nodes, edges, inputs, outputs)`: flat name -> node, edges between flat
    names, and this graph's own Input and Output names.
    """
    nodes, edges, subgraphs = {}, [], {}
    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            sub_nodes, sub_edges, sub_in, sub_out = _flatten(node, nir, f"{prefix}{name}.")
            nodes.update(sub_nodes)
            edges += sub_edges
            subgraphs[name] = {"target": sub_in, "source": sub_out}
        else:
            nodes[prefix + name] = node

    def resolve(end, side):
        if end in subgraphs:
            ends = subgraphs[end][side]
            if len(ends) != 1:
                raise ValueError(f"NIR edge endpoint {end!r} names a subgraph with {len(ends)} "
                                 f"{'Input' if side == 'target' else 'Output'} nodes: name one ({', '.join(ends)})")
            return ends[0]
        if prefix + end in nodes:
            return prefix + end
        head = end.rsplit(".", 1)[0]           # a port: "lif.output", "affine.input"
        if head in subgraphs or prefix + head in nodes:
            return resolve(head, side)
        raise ValueError(f"NIR edge endpoint {end!r} names no node of the graph "
                         f"(nodes: {', '.join(list(graph.nodes))})")
    edges += [(resolve(a, "source"), resolve(b, "target")) for a, b in graph.edges]
    inputs = [prefix + n for n, node in graph.nodes.items() if isinstance(node, nir.Input)]
    outputs = [prefix + n for n, node in graph.nodes.items() if isinstance(node, nir.Output)]
    return nodes, edges, inputs, outputs


def _schedule(nodes, edges, inputs):
    """Evaluation order within a step and the back edges (read from the previous step).

    A depth-first search from the inputs marks as back edges the edges that close a cycle
    (a recurrent connection); without them the graph is acyclic and Kahn's algorithm orders it.
    """
    succ = defaultdict(list)
    for a, b in edges:
        succ[a].append(b)
    back, colour = set(), {}

    def visit(n):
        colour[n] = 1
        for m in succ[n]:
            if colour.get(m) == 1:
                back.add((n, m))
            elif m not in colour:
                visit(m)
        colour[n] = 2
    for n in list(inputs) + list(nodes):
        if n not in colour:
            visit(n)
    forward = [e for e in edges if e not in back]
    indegree = {n: 0 for n in nodes}
    for _, b in forward:
        indegree[b] += 1
    ready = [n for n in nodes if indegree[n] == 0]
    order = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for a, b in forward:
            if a == n:
                indegree[b] -= 1
                if indegree[b] == 0:
                    ready.append(b)
    return order, back


def load(graph, dt: float | None = None, dtype=None, surrogate=None):
    """Turn a NIR graph into a sparseprop step function, its parameters and its initial state.

    Each node's ODE is advanced by one forward-Euler step of length `dt` per call, in NIR's
    semantics (Pedersen et al., Nature Communications 2024): see `sparseprop.nir.nodes` for
    every node type. Within a step the graph is evaluated in topological order, the values on
    edges into one node are summed, and an edge that closes a cycle (a recurrent connection)
    carries its source's output of the previous step.

    **Arguments:**

    - `graph`: a `nir.NIRGraph`, or the path of a `.nir` file (read with `nir.read`).
    - `dt`: the time step, in the unit of the graph's time constants and delays. None: the
      graph's `metadata["dt"]` (which `sparseprop.nir.export` writes); a graph without it
      needs an explicit `dt`.
    - `dtype`: float dtype of parameters and state; default: JAX's default float
      (float64 under `jax_enable_x64`, else float32).
    - `surrogate`: a `sparseprop.surrogates.Surrogate` used by every threshold (default
      `FastSigmoid(10)`, as `sparseprop.spike`).

    **Returns:**

    `(model, params, state0)`: `model(params, state, x) -> (new_state, y)` for one example
    (no batch axis); `x` has the shape of the graph's input node (a dict by input name when
    the graph has several), `y` that of its output node (a dict when several).
    `params[node][field]` holds every floating-point field of the trainable nodes (weights,
    biases, time constants, thresholds: see `sparseprop.nir.nodes.PARAMETERS`);
    `state0[node]` holds membrane potentials (`v`, starting at `v_leak`), synaptic currents
    (`i`, at 0), delay lines (`line`) and, for a node feeding a recurrent edge, its last
    output (`out`, at 0).

    **Raises:**

    `ModuleNotFoundError` without the `nir` package; `NotImplementedError` for an
    unsupported node type; `ValueError` for a malformed graph, a non-positive `dt`, or no
    `dt` given for a graph whose metadata has none. Nested subgraphs are flattened: their
    nodes are named `sub.node` in `params` and `state0`.
    """
    nir = _nir()
    if isinstance(graph, (str, os.PathLike)):
        graph = nir.read(graph)
    if dt is None:
        dt = (graph.metadata or {}).get("dt")
        if dt is None:
            raise ValueError("load needs the time step: pass dt=... in the unit of the graph's time constants "
                             "(e.g. dt=1e-3 for time constants in seconds and 1 ms steps); this graph's "
                             "metadata has no 'dt' to default to")
    dt = float(np.asarray(dt))
    if not dt > 0:
        raise ValueError(f"dt must be a positive time step, got {dt}")
    dtype = jnp.zeros(()).dtype if dtype is None else jnp.dtype(dtype)
    names, edges, inputs, outputs = _flatten(graph, nir)
    if not inputs or not outputs:
        raise ValueError("a NIR graph needs at least one Input and one Output node")
    nodes = {n: build(n, node, float(dt), dtype, surrogate) for n, node in names.items()}
    order, back = _schedule(names, edges, inputs)
    incoming = {n: [(a, (a, n) in back) for a, b in edges if b == n] for n in names}

    params = {n: {f: jnp.asarray(np.asarray(getattr(names[n], f), float), dtype) for f in PARAMETERS[node.kind]}
              for n, node in nodes.items() if PARAMETERS[node.kind]}
    state0 = {n: dict(node.state0) for n, node in nodes.items() if node.state0}
    for a, _ in back:
        if nodes[a].output_shape is None:
            raise ValueError(f"node {a!r} feeds a recurrent edge but its output shape is unknown; "
                             f"build the graph with type checking (NIRGraph(..., type_check=True))")
        state0.setdefault(a, {})["out"] = jnp.zeros(nodes[a].output_shape, dtype)
    feeds_back = {a for a, _ in back}

    def model(params, state, x):
        values, new_state = {}, {}
        for n in order:
            if n in inputs:
                value = x[n] if len(inputs) > 1 else x
            else:
                parts = [state[a]["out"] if is_back else values[a] for a, is_back in incoming[n]]
                if not parts:
                    raise ValueError(f"NIR node {n!r} has no incoming edge")
                value = parts[0]
                for part in parts[1:]:
                    value = value + part
            own = {k: v for k, v in state.get(n, {}).items() if k != "out"}
            own, values[n] = nodes[n].step(params.get(n, {}), own, value)
            if n in feeds_back:
                own = {**own, "out": values[n]}
            if own:
                new_state[n] = own
        y = {n: values[n] for n in outputs} if len(outputs) > 1 else values[outputs[0]]
        return new_state, y

    model.__doc__ = f"Step function of a NIR graph with nodes {', '.join(order)} (forward Euler, dt={dt})."
    return model, params, state0


def to_nir(model, params, *, sizes=None, dt: float | None = None):
    """A NIR graph of a trained model: a loaded graph with its `params` written back, or a
    `neurons.Sequential` exported (`sparseprop.nir.export`).

    **Arguments:**

    - `model`: the `nir.NIRGraph` the model was loaded from (it gives the structure), or a
      `sparseprop.neurons.Sequential`.
    - `params`: parameters as returned by `load` (possibly trained): `params[node][field]`
      (a nested subgraph's node as `"sub.node"`); or the Sequential's parameters.
    - `sizes`, `dt`: for a Sequential only, as for `export`.

    **Returns:**

    A new `nir.NIRGraph`. For a graph: the same nodes, edges and metadata, each parameter
    field replaced by the trained value (as a float NumPy array of the original shape).

    **Raises:**

    `ValueError` if `params` names a node or field the graph lacks, or changes a shape;
    for a Sequential, `TypeError` without `sizes` and `dt`, and as `export`.
    """
    nir = _nir()
    if not isinstance(model, nir.NIRGraph):
        from .export import export
        if sizes is None or dt is None:
            raise TypeError("to_nir of a Sequential needs sizes=... (as for init_params) and dt=... (the time step)")
        return export(model, params, sizes, dt)
    return _write_params(nir, model, params)


def _write_params(nir, graph, params):
    nodes = dict(graph.nodes)
    nested = defaultdict(dict)
    for name, fields in params.items():
        if name not in nodes:
            head, _, rest = name.partition(".")
            if rest and isinstance(nodes.get(head), nir.NIRGraph):
                nested[head][rest] = fields
                continue
            raise ValueError(f"params has node {name!r}, which the graph lacks (nodes: {', '.join(nodes)})")
        data = nodes[name].to_dict()
        for f, value in fields.items():
            if f not in data:
                raise ValueError(f"params[{name!r}] has field {f!r}, which a {data['type']} node lacks")
            old, new = np.asarray(data[f]), np.asarray(value, dtype=float)
            if old.shape != new.shape:
                raise ValueError(f"params[{name!r}][{f!r}] has shape {new.shape}; the graph's is {old.shape}")
            data[f] = new
        nodes[name] = type(nodes[name]).from_dict(data)
    for head, sub_params in nested.items():
        nodes[head] = _write_params(nir, nodes[head], sub_params)
    # The structure is the caller's graph unchanged; shape inference is not re-run, so graphs
    # whose convolution or pooling shapes were left open (type_check=False) round-trip too.
    return nir.NIRGraph(nodes=nodes, edges=list(graph.edges), metadata=dict(graph.metadata or {}),
                        type_check=False)


def save(model, params, path, *, sizes=None, dt: float | None = None) -> None:
    """Write the trained model as a NIR file: `nir.write(path, to_nir(model, params, ...))`.

    **Arguments:**

    - `model`: the `nir.NIRGraph` the model was loaded from, or a `neurons.Sequential`.
    - `params`: the (trained) parameters.
    - `path`: the file to write (conventionally `*.nir`, HDF5).
    - `sizes`, `dt`: for a Sequential, as for `export`.

    **Raises:**

    As `to_nir`.
    """
    _nir().write(path, to_nir(model, params, sizes=sizes, dt=dt))
