"""Errors that name the primitive and the user's source line."""
from __future__ import annotations

from jax._src import source_info_util


UNKNOWN_SOURCE = "<unknown source>"


class TracerError(Exception):
    """The tracer met something it cannot turn into a correct online program.

    Raised when a learner first traces a model (`learner.init` with an example input, the
    first `step`, `explain`, `is_exact`), never in the middle of a stream. The message
    names the JAX primitive (or the `custom_vjp` / `custom_jvp` function), the user's
    source line (`file:line (function)`) and what to do instead: a rewrite that forward
    mode can follow (e.g. a `jax.custom_jvp` derivative instead of a backward rule that is
    not linear in the cotangent), or another method.

    sparseprop raises rather than guess: every gradient it returns is exact, or dropped by
    a method and reported by `explain()`. `sparseprop.bptt_grad` needs only reverse mode
    and still works on such models. `sparseprop check` shows a `TracerError` as an
    `ERROR` row (exit code 3).
    """


def source_line(eqn) -> str:
    """`file:line (function)` of the user's code that produced `eqn`, or '<unknown>'."""
    try:
        frame = source_info_util.user_frame(eqn.source_info.traceback)
    except Exception:  # pragma: no cover - depends on JAX internals
        frame = None
    if frame is None:
        return UNKNOWN_SOURCE
    return f"{frame.file_name}:{frame.start_line} ({frame.function_name})"
