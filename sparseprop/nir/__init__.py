"""Models from other SNN libraries: NIR graphs in, trained NIR graphs out.

snnTorch, norse, spyx, lava-dl, sinabs and rockpool export networks as NIR graphs (the
Neuromorphic Intermediate Representation; Pedersen et al., Nature Communications 2024).
`load` turns one into a sparseprop step function, so it trains online here; `save` /
`to_nir` write the trained parameters back; `export` writes a `neurons.Sequential` built
here as a NIR graph. Needs the `nir` extra (`pip install -e ".[nir]"`).

- `graph`: `load` (nested subgraphs flattened), `to_nir`, `save`.
- `export`: a `neurons.Sequential` as a NIR graph.
- `nodes`: the forward-Euler step of each node type and which fields are trainable.
"""
from .export import export
from .graph import load, save, to_nir
from .nodes import PARAMETERS, SUPPORTED

__all__ = ["load", "save", "to_nir", "export", "PARAMETERS", "SUPPORTED"]
