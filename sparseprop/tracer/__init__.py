"""The tracer: structural analysis of a step's jaxpr and emission of its online program.

- `structure.py`: dependency maps (which axes of a variable match which of an input).
- `rules.py`: one structural rule per primitive family (the place to add a primitive).
- `convolution.py`: convolutions with a parameter kernel as synapses with weight sharing.
- `indices.py`: index facts (an `arange` along the neuron axis makes a gather per-neuron).
- `analysis.py`: walks jaxprs (through jit, checkpoint, custom_jvp/vjp, cond, scan, while)
  applying the rules; finds synapses and classifies neuron-mixing operations (recurrent,
  feed-forward, output only).
- `uniformity.py`: which Jacobian blocks are a scalar times the identity (factorised traces).
- `linearity.py`: whether a custom_vjp backward rule is linear in the cotangent.
- `jaxpr_util.py`: small helpers over jaxprs.
- `interpreter.py`: evaluates a jaxpr with equations replaced (probes, cuts).
- `seeds.py`: compressed JVP probes.
- `jacobian.py`: structured Jacobian blocks and their einsum algebra.
- `methods.py`: exact, e-prop, OSTL-style, SnAp-1 as sets of cut paths or truncations.
- `program.py`: puts it together into the online step (trace blocks, readout-filtered
  eligibilities, the learning signal).
"""
