"""Structured Jacobian blocks and their algebra, emitted as elementwise products.

`StructJac(array, spec, in_shape)` stands for the Jacobian d out / d in of an output of
shape `array.shape[:out_ndim]`. `spec[k]` is the output axis that input axis k is
matched to (entries with different indices are zero) or `None` (free). The array holds
the output axes followed by the free input axes, so a diagonal block is a vector, a
synaptic eligibility `e[i, l]` is a matrix, and a dense block is the full Jacobian.
Composition is one einsum whose labels encode the matches; with no summed label it is
a broadcast product, never a contraction.
"""
from __future__ import annotations

import string
from typing import Optional, Sequence, Tuple

import jax.numpy as jnp

_LETTERS = string.ascii_letters


class StructJac:
    __slots__ = ("array", "spec", "in_shape")

    def __init__(self, array, spec: Tuple[Optional[int], ...], in_shape: Tuple[int, ...]):
        self.array = array
        self.spec = tuple(spec)
        self.in_shape = tuple(in_shape)

    @property
    def out_ndim(self) -> int:
        return self.array.ndim - sum(s is None for s in self.spec)

    @property
    def out_shape(self):
        return self.array.shape[: self.out_ndim]


def free_shape(spec, in_shape) -> Tuple[int, ...]:
    return tuple(n for s, n in zip(spec, in_shape) if s is None)


def stored_shape(out_shape, spec, in_shape) -> Tuple[int, ...]:
    """Shape of the array that stores a block with this spec."""
    return tuple(out_shape) + free_shape(spec, in_shape)


class Labels:
    """A source of fresh single-letter einsum labels."""

    def __init__(self):
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        return _LETTERS[self.n - 1]


def stored_labels(out_ndim, spec, in_labels, fresh) -> Tuple[list, list]:
    """Labels of a stored array: output axes (matched ones carry the input's label), free inputs."""
    out = [fresh() for _ in range(out_ndim)]
    for k, j in enumerate(spec):
        if j is not None:
            out[j] = in_labels[k]
    return out, [in_labels[k] for k, j in enumerate(spec) if j is None]


def einsum(operands: Sequence, labels: Sequence[Sequence[str]], out: Sequence[str]):
    """einsum that avoids XLA contractions when nothing is summed (a broadcast product)."""
    used = set().union(*map(set, labels))
    if set(out) == used and all(len(set(l)) == len(l) for l in labels) and len(operands) == 2:
        result = None
        for x, l in zip(operands, labels):
            order = sorted(range(len(l)), key=lambda a: out.index(l[a]))
            x = jnp.transpose(x, order) if order != list(range(len(l))) else x
            present = [out.index(l[a]) for a in order]
            shape = [1] * len(out)
            for pos, size in zip(present, x.shape):
                shape[pos] = size
            x = x.reshape(shape)
            result = x if result is None else result * x
        return result   # every output label comes from an operand, so the shape is complete
    spec = ",".join("".join(l) for l in labels) + "->" + "".join(out)
    return jnp.einsum(spec, *operands)


def compose(a: StructJac, b: StructJac, spec=None) -> StructJac:
    """The chain rule `a ∘ b` for `a = d x / d y` and `b = d y / d z`, as d x / d z.

    With `spec`, the result is stored with that spec. Entries that `spec` declares zero
    (a matched axis where the product is free: a truncated trace) are never computed:
    the repeated einsum label takes only the diagonal.
    """
    fresh = Labels()
    z_labels = [fresh() for _ in b.in_shape]
    y_out, y_free = stored_labels(b.out_ndim, b.spec, z_labels, fresh)
    x_out, x_free = stored_labels(a.out_ndim, a.spec, y_out, fresh)
    natural = tuple(x_out.index(l) if l in x_out else None for l in z_labels)
    if spec is not None and tuple(spec) != natural:
        extract = {k: i for k, i in enumerate(spec) if i is not None and natural[k] is None
                   and x_out[i] not in z_labels}
        if all(natural[k] == i or k in extract for k, i in enumerate(spec) if i is not None) and \
                all(spec[k] == i for k, i in enumerate(natural) if i is not None):
            rename = {x_out[i]: z_labels[k] for k, i in extract.items()}
            x_out, x_free, y_out, y_free = ([rename.get(l, l) for l in ls] for ls in (x_out, x_free, y_out, y_free))
            out = x_out + [l for l, i in zip(z_labels, spec) if i is None]
            array = einsum([a.array, b.array], [x_out + x_free, y_out + y_free], out)
            return StructJac(array, tuple(spec), b.in_shape)
    out = x_out + [l for l, i in zip(z_labels, natural) if i is None]
    array = einsum([a.array, b.array], [x_out + x_free, y_out + y_free], out)
    result = StructJac(array, natural, b.in_shape)
    return result if spec is None else respec(result, spec)


def respec(j: StructJac, spec) -> StructJac:
    """The same block stored with another spec (expanding or extracting diagonals)."""
    spec = tuple(spec)
    if spec == j.spec:
        return j
    fresh = Labels()
    in_labels = [fresh() for _ in j.in_shape]
    src_out, src_free = stored_labels(j.out_ndim, j.spec, in_labels, fresh)
    dst_out = list(src_out)
    operands, labels = [j.array], [None]
    for k, (old, new) in enumerate(zip(j.spec, spec)):
        if old is not None and old != new:
            dst_out[old] = fresh()           # expand: add a Kronecker delta
            operands.append(jnp.eye(j.in_shape[k], dtype=j.array.dtype))
            labels.append([dst_out[old], in_labels[k]])
    for k, new in enumerate(spec):
        if new is not None and j.spec[k] != new:
            src_out[new] = in_labels[k]      # extract: a repeated label takes the diagonal
            dst_out[new] = in_labels[k]
    labels[0] = src_out + src_free
    out = dst_out + [in_labels[k] for k, s in enumerate(spec) if s is None]
    array = einsum(operands, labels, out) if len(operands) > 1 or labels[0] != out else j.array
    return StructJac(array, spec, j.in_shape)


def add(blocks: Sequence[StructJac], spec) -> Optional[StructJac]:
    blocks = [respec(b, spec) for b in blocks if b is not None]
    if not blocks:
        return None
    total = blocks[0].array
    for b in blocks[1:]:
        total = total + b.array
    return StructJac(total, spec, blocks[0].in_shape)
