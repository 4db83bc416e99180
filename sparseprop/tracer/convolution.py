"""Convolutions with a parameter kernel: synapses with weight sharing.

`I = conv_general_dilated(u, K)` touches output neuron (n, o, *y) only through kernel
slice K[o] (with feature groups: through K[o] applied to the input features of o's group):

    dI[n, o, y] / dK[o', c, k] = δ(o, o') · u[n, g(o)·C_g + c, y·stride + k·dilation - pad]

so the eligibility of a state fed by I is, per output neuron, ψ times the input *patch*
at that neuron (an im2col gather, `lax.conv_general_dilated_patches`): the per-neuron
minimum, never a dense Jacobian. When the Jacobian of the state on I and on its own
past is a scalar times the identity (a shared leak, a detached reset: uniformity.py),
the eligibility of every output neuron is the patch of one *filtered input*
ū_t = c_t · ū_{t-1} + ψ_t · u_t (the shape of u), and the kernel gradient is the
correlation of the learning signal with ū: the operation BPTT's backward pass uses
for a convolution's kernel. Both forms are exact.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core as jcore

from . import jacobian as jac

PRIMITIVE = lax.conv_general_dilated_p.name   # the name synapses record (analysis.Synapse.primitive)


def is_conv_synapse(eqn, ins, raw) -> Optional[Tuple[object, Tuple[int, ...]]]:
    """`(param key, perm)` if `eqn` is a convolution whose kernel is a raw parameter tangent
    and whose input carries none; else None. Batch-grouped convolutions (which appear in
    gradients, not models) keep the generic structural rule."""
    if eqn.primitive.name != PRIMITIVE or eqn.params.get("batch_group_count", 1) != 1:
        return None
    w = eqn.invars[1]
    if isinstance(w, jcore.Literal) or w not in raw or ins[0]:
        return None
    key, perm = raw[w]
    if set(ins[1]) != {key}:
        return None
    return key, perm


def param_map(params, perm, param_ndim: int):
    """Map of the convolution's output on the kernel parameter: the kernel's output-feature
    axis is matched to the output feature axis; input features and taps are free."""
    _, rhs_spec, out_spec = params["dimension_numbers"]
    out = [None] * param_ndim
    out[perm[rhs_spec[0]]] = out_spec[1]
    return tuple(out)


def _kernel_shape(p_shape, perm) -> Tuple[int, ...]:
    """Shape of the kernel operand (operand axis a is parameter axis perm[a])."""
    return tuple(p_shape[perm[a]] for a in range(len(perm)))


def patches(params, u, kernel_shape):
    """im2col: the input patch of every output position, shape out layout with the feature
    axis replaced by (groups, C_g, *taps) (taps in the kernel's axis order)."""
    lhs_spec, rhs_spec, out_spec = params["dimension_numbers"]
    spatial = sorted(rhs_spec[2:])
    taps = tuple(kernel_shape[a] for a in spatial)
    P = lax.conv_general_dilated_patches(
        u, taps, params["window_strides"], params["padding"], params["lhs_dilation"],
        params["rhs_dilation"], params["dimension_numbers"], precision=lax.Precision.HIGHEST)
    groups = params["feature_group_count"]
    c_in = u.shape[lhs_spec[1]]
    f = out_spec[1]
    return P.reshape(P.shape[:f] + (groups, c_in // groups) + taps + P.shape[f + 1:])


def synapse_block(psi: jac.StructJac, u, params, perm, p_shape) -> jac.StructJac:
    """d state / d K from ψ = d state / d I and the convolution's input u (one einsum with
    the patches; a broadcast product when ψ is per neuron)."""
    _, rhs_spec, out_spec = params["dimension_numbers"]
    k_shape = _kernel_shape(p_shape, perm)
    fresh = jac.Labels()
    p_labels = [fresh() for _ in p_shape]
    op_label = [p_labels[perm[a]] for a in range(len(perm))]     # labels of K's operand axes
    o_label, c_label = op_label[rhs_spec[0]], op_label[rhs_spec[1]]
    tap_labels = [op_label[a] for a in sorted(rhs_spec[2:])]
    i_labels = [fresh() for _ in range(len(out_spec))]
    i_labels[out_spec[1]] = o_label
    s_out, s_free = jac.stored_labels(psi.out_ndim, psi.spec, i_labels, fresh)
    P = patches(params, u, k_shape)
    f = out_spec[1]
    groups = params["feature_group_count"]
    if groups == 1:
        P = jnp.squeeze(P, f)
        p_labels_arr = i_labels[:f] + [c_label] + tap_labels + i_labels[f + 1:]
    else:   # output feature o reads the input features of its group o // (O / groups)
        n_out = k_shape[rhs_spec[0]]
        P = jnp.take(P, jnp.arange(n_out) // (n_out // groups), axis=f)
        p_labels_arr = i_labels[:f] + [o_label, c_label] + tap_labels + i_labels[f + 1:]
    spec = tuple(s_out.index(l) if l in s_out else None for l in p_labels)
    out = s_out + [l for l, sp in zip(p_labels, spec) if sp is None]
    operands, labels = _drop_unit_sums([psi.array, P.astype(psi.array.dtype)], [s_out + s_free, p_labels_arr], out)
    return jac.StructJac(jac.einsum(operands, labels, out), spec, p_shape)


def _drop_unit_sums(operands, labels, out):
    """Squeeze summed labels of size 1 (the batch axis of one example's convolution), so that
    the einsum stays a broadcast product instead of a contraction that transposes the trace."""
    summed = {l for ls in labels for l in ls if l not in out}
    new_ops, new_labels = [], []
    for x, ls in zip(operands, labels):
        drop = tuple(a for a, l in enumerate(ls) if l in summed and x.shape[a] == 1 and
                     all(y.shape[b] == 1 for y, ms in zip(operands, labels) for b, m in enumerate(ms) if m == l))
        new_ops.append(jnp.squeeze(x, drop) if drop else x)
        new_labels.append([l for a, l in enumerate(ls) if a not in drop])
    return new_ops, new_labels


def state_spec(out_shape: Sequence[int], state_shape: Sequence[int]) -> Optional[Tuple[Optional[int], ...]]:
    """Map of I's axes onto a state that is I without its size-1 axes (the only layout
    change a scalar-times-identity Jacobian allows here), or None if the state is not."""
    big = [i for i, n in enumerate(out_shape) if n != 1]
    state_big = [j for j, n in enumerate(state_shape) if n != 1]
    if [out_shape[i] for i in big] != [state_shape[j] for j in state_big]:
        return None
    spec = [None] * len(out_shape)
    for i, j in zip(big, state_big):
        spec[i] = j
    return tuple(spec)


def expand(u_bar, params, perm, p_shape, out_shape, state_shape) -> jac.StructJac:
    """The full eligibility (state axes, free kernel axes) of a factorised block ū."""
    spec = state_spec(out_shape, state_shape)
    free = tuple(n for n, s in zip(out_shape, spec) if s is None)
    ones = jnp.ones(tuple(state_shape) + free, u_bar.dtype)
    return synapse_block(jac.StructJac(ones, spec, out_shape), u_bar, params, perm, p_shape)


def kernel_gradient(signal, u_bar, params, perm, p_shape, out_shape, batched: bool):
    """Σ_{n,o,y} signal[n,o,y] · dI[n,o,y]/dK with the filtered input ū: the correlation of
    the learning signal with ū (the kernel gradient of BPTT's backward pass), in the
    parameter's layout. With `batched`, signal and ū carry a leading example axis, summed."""
    k_shape = _kernel_shape(p_shape, perm)
    kw = dict(window_strides=params["window_strides"], padding=params["padding"],
              lhs_dilation=params["lhs_dilation"], rhs_dilation=params["rhs_dilation"],
              dimension_numbers=params["dimension_numbers"],
              feature_group_count=params["feature_group_count"], precision=lax.Precision.HIGHEST)

    def conv(K):
        one = lambda u: lax.conv_general_dilated(u, K, **kw)
        return jax.vmap(one)(u_bar) if batched else one(u_bar)

    dtype = jnp.result_type(u_bar.dtype, signal.dtype)
    zero = jnp.zeros(k_shape, dtype)
    sig = signal.reshape(((signal.shape[0],) if batched else ()) + tuple(out_shape)).astype(dtype)
    (g,) = jax.linear_transpose(conv, zero)(sig)
    inverse = [0] * len(perm)
    for a, pa in enumerate(perm):
        inverse[pa] = a
    return jnp.transpose(g, inverse)
