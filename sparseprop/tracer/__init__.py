"""The tracer: structural analysis of a step's jaxpr and emission of its online program.

- `structure.py`: dependency maps (which axes of a variable match which of an input).
- `rules.py`: one structural rule per primitive family.
- `analysis.py`: walks jaxprs (through jit, custom_jvp/vjp, cond) applying the rules.
- `interpreter.py`: evaluates a jaxpr with equations replaced (probes, cuts).
- `seeds.py`: compressed JVP probes.
- `jacobian.py`: structured Jacobian blocks and their einsum algebra.
- `methods.py`: exact, e-prop and other methods as sets of cut paths.
- `program.py`: puts it together into the online step.
"""
