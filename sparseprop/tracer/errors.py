"""Errors that name the primitive and the user's source line."""
from __future__ import annotations

from jax._src import source_info_util


UNKNOWN_SOURCE = "<unknown source>"


class TracerError(Exception):
    """The tracer met something it cannot turn into a correct online program."""


def source_line(eqn) -> str:
    """`file:line (function)` of the user's code that produced `eqn`, or '<unknown>'."""
    try:
        frame = source_info_util.user_frame(eqn.source_info.traceback)
    except Exception:  # pragma: no cover - depends on JAX internals
        frame = None
    if frame is None:
        return UNKNOWN_SOURCE
    return f"{frame.file_name}:{frame.start_line} ({frame.function_name})"
