"""Feedback alignment for online learning: a readout whose backward path uses fixed random weights.

Random e-prop (Bellec et al. 2020, "A solution to the learning dilemma for recurrent
networks of spiking neurons", Nat. Commun. 11:3625) replaces the learning signal
`L_j = Σ_k W_out[k, j] (y_k − y*_k)` by `Σ_k B[k, j] (y_k − y*_k)` with a fixed random
`B`, following feedback alignment (Lillicrap et al. 2016). Written as an operation of the
model, the same rule serves every method: the online learner (forward mode) and BPTT
(reverse mode) both differentiate the readout through `B`, so `bptt_grad` of the model is
the reference of its online gradient.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_jvp
def feedback_matmul(w, z, feedback):
    """`w @ z` whose derivative with respect to `z` goes through `feedback` instead of `w`.

    The derivative with respect to `w` is the true one (`dw @ z`); `feedback` gets none.
    Used as the readout of a recurrent network with `method="eprop"`, the online gradient is
    random e-prop (Bellec et al. 2020); with `feedback = w` it is e-prop itself.

    **Arguments:**

    - `w`: readout weights, shape `(k, n)`, float.
    - `z`: presynaptic activity, shape `(n,)` (or `(n, ...)`), same dtype.
    - `feedback`: fixed feedback weights, the shape of `w` (close over it, or keep it out of
      the trained parameters: its gradient is zero).

    **Returns:**

    `w @ z`, shape `(k,)` (or `(k, ...)`).

    **Raises:**

    `ValueError` if `feedback` and `w` differ in shape.
    """
    if jnp.shape(feedback) != jnp.shape(w):
        raise ValueError(f"feedback must have the readout weights' shape {jnp.shape(w)}; "
                         f"got {jnp.shape(feedback)}")
    return w @ z


@feedback_matmul.defjvp
def _feedback_matmul_jvp(primals, tangents):
    w, z, feedback = primals
    dw, dz, _ = tangents
    return w @ z, dw @ z + feedback @ dz


__all__ = ["feedback_matmul"]
