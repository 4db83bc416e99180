"""Time per step of jitted functions measured side by side, and how far two gradients differ.

Timing is round-robin over the compared functions (each round runs every function once), so
load on a shared machine hits all of them alike; pytest-benchmark and asv time one function
at a time, which is why this stays hand-written."""
from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable, Dict, Sequence

import jax
import numpy as np


def time_per_step(fns: Dict[str, Callable], args: Sequence, steps: int, repeats: int = 5,
                  ) -> Dict[str, dict]:
    """Time several jitted functions side by side: warm-up, then `repeats` rounds, each round
    running every function once (round-robin, so machine noise hits all of them alike).

    **Arguments:**

    - `fns`: name -> function of `args`.
    - `args`: the arguments (real arrays).
    - `steps`: T, to turn seconds per call into ms per step.
    - `repeats`: timed rounds (>= 5 recommended); the median is reported.

    **Returns:**

    name -> `{"ms_per_step", "ms_per_step_min", "result"}` (`result`: the function's output).
    """
    return time_compiled({name: jax.jit(f).lower(*args).compile() for name, f in fns.items()}, args, steps, repeats)


def time_compiled(compiled: Dict[str, Callable], args: Sequence, steps: int, repeats: int = 5) -> Dict[str, dict]:
    """`time_per_step` for programs already compiled (`jax.jit(f).lower(*args).compile()`).

    **Arguments:**

    - `compiled`: name -> compiled program of `args`; `args`, `steps`, `repeats`: as for
      `time_per_step`.

    **Returns:**

    As `time_per_step`.
    """
    results = {name: jax.block_until_ready(c(*args)) for name, c in compiled.items()}   # warm-up
    times = {name: [] for name in compiled}
    for _ in range(repeats):
        for name, c in compiled.items():
            t0 = time.perf_counter()
            jax.block_until_ready(c(*args))
            times[name].append(time.perf_counter() - t0)
    return {name: {"ms_per_step": statistics.median(ts) / steps * 1e3,
                   "ms_per_step_min": min(ts) / steps * 1e3, "result": results[name]}
            for name, ts in times.items()}


def _common(grads, reference):
    """Restrict two dict gradients to their common keys (braintrace learns only weights)."""
    if isinstance(grads, dict) and isinstance(reference, dict) and grads.keys() != reference.keys():
        keys = sorted(set(grads) & set(reference))
        return {k: grads[k] for k in keys}, {k: reference[k] for k in keys}
    return grads, reference


def relative_error(grads, reference) -> float:
    """max over leaves of max|g - ref| / max|ref| (a leaf with zero reference uses scale 1).

    **Arguments:**

    - `grads`, `reference`: pytrees of the same structure (dicts: compared on common keys).

    **Returns:** a float.
    """
    grads, reference = _common(grads, reference)
    errs = [0.0]
    for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(reference)):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        scale = float(np.max(np.abs(b))) if b.size else 0.0
        errs.append(float(np.max(np.abs(a - b))) / (scale if scale > 0 else 1.0) if b.size else 0.0)
    return max(errs)


def cosine(grads, reference) -> float:
    """Cosine between two gradient pytrees (flattened).

    **Arguments:** `grads`, `reference`: pytrees of the same structure.

    **Returns:** a float (1.0 when parallel).
    """
    grads, reference = _common(grads, reference)
    a = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree_util.tree_leaves(grads)])
    b = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree_util.tree_leaves(reference)])
    den = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / den) if den > 0 else float("nan")


def machine_label() -> str:
    """One line naming the machine: cpu count, platform, jax version and backend device.

    **Arguments:** none.

    **Returns:** a string.
    """
    dev = jax.devices()[0]
    return (f"{os.cpu_count()} CPU cores ({platform.machine()}, {platform.system()}), "
            f"jax {jax.__version__} backend={jax.default_backend()} device={dev.device_kind}")
