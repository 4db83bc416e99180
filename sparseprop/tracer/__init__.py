"""The tracer: structural analysis of a step's jaxpr and emission of its online program.

- `structure.py`: dependency maps (which axes of a variable match which of an input).
- `rules.py`: one structural rule per primitive family (the place to add a primitive).
- `analysis.py`: walks jaxprs (through jit, custom_jvp/vjp, cond, scan, while) applying the rules.
- `uniformity.py`: which Jacobian blocks are a scalar times the identity (factorised traces).
- `jaxpr_util.py`: small helpers over jaxprs.
- `interpreter.py`: evaluates a jaxpr with equations replaced (probes, cuts).
- `seeds.py`: compressed JVP probes.
- `jacobian.py`: structured Jacobian blocks and their einsum algebra.
- `methods.py`: exact, e-prop, SnAp-1 as sets of cut paths or truncations.
- `program.py`: puts it together into the online step.
"""
