"""Models from other SNN libraries: NIR graphs in, trained NIR graphs out.

snnTorch, norse, spyx, lava-dl, sinabs and rockpool export networks as NIR graphs (the
Neuromorphic Intermediate Representation; Pedersen et al., Nature Communications 2024).
`load` turns one into a sparseprop step function, so it trains online here; `save` /
`to_nir` write the trained parameters back. Needs the `nir` extra (`pip install -e ".[nir]"`).

- `graph`: `load`, `to_nir`, `save`.
- `nodes`: the forward-Euler step of each node type and which fields are trainable.
"""
from .graph import load, save, to_nir
from .nodes import PARAMETERS, SUPPORTED

__all__ = ["load", "save", "to_nir", "PARAMETERS", "SUPPORTED"]
