"""Memory of a gradient computation: XLA's compiled temporary bytes (a compile only, no
allocation) and the peak resident memory of a real run in a fresh child process."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from typing import Callable, Dict, Optional

import jax
import jax.numpy as jnp

from .peers import make_grad_fn
from .problems import make_problem


def _abstract(tree):
    return jax.tree_util.tree_map(
        lambda a: a if isinstance(a, jax.ShapeDtypeStruct) else jax.ShapeDtypeStruct(a.shape, a.dtype), tree)


def temp_bytes(grad_fn: Callable, *args) -> Dict[str, int]:
    """Compile `grad_fn` for `args` (arrays or ShapeDtypeStructs) and read XLA's memory analysis.

    **Arguments:**

    - `grad_fn`: the function to jit.
    - `args`: its arguments; only shapes and dtypes are used.

    **Returns:**

    `{"temp_bytes", "argument_bytes", "output_bytes", "compile_s"}`.
    """
    t0 = time.perf_counter()
    compiled = jax.jit(grad_fn).lower(*_abstract(args)).compile()
    ma = compiled.memory_analysis()
    return {"temp_bytes": int(ma.temp_size_in_bytes), "argument_bytes": int(ma.argument_size_in_bytes),
            "output_bytes": int(ma.output_size_in_bytes), "compile_s": time.perf_counter() - t0}


def _vm_hwm_bytes() -> Optional[int]:
    """Linux: the peak RSS (VmHWM) of this process since the last reset, in bytes."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    """Linux: reset VmHWM to the current RSS (write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def child_point(spec: dict) -> dict:
    """Run in a child process: build one problem, compile and run one method once.

    The peak of the run alone is read by resetting Linux's VmHWM after data and compile
    (getrusage maxrss is monotone, so data generation would otherwise hide the run)."""
    kib = 1024  # Linux: ru_maxrss in KiB
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    dtype = jnp.dtype(spec.get("dtype", "float32"))
    args = make_problem(spec["model"], spec["n"], spec["m"], spec["batch"], spec["steps"], dtype)
    jax.block_until_ready(args)
    after_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    compiled = jax.jit(make_grad_fn(spec["method"], spec["model"])).lower(*args).compile()
    after_compile = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    reset = _reset_hwm()
    before_run = _vm_hwm_bytes() if reset else None
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    run_s = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    row = {"rss_import_bytes": base * kib, "rss_after_data_bytes": after_data * kib,
           "rss_after_compile_bytes": after_compile * kib, "rss_peak_bytes": peak * kib, "rss_run_s": run_s}
    if reset and before_run is not None:
        row["rss_before_run_bytes"] = before_run
        row["rss_run_peak_bytes"] = _vm_hwm_bytes()
    return row


def peak_rss(model: str, method: str, n: int, m: int, batch: int, steps: int, dtype: str = "float32",
             timeout: float = 600.0) -> dict:
    """Peak resident memory of a real run of one point, in a fresh child process.

    The child imports jax, builds the problem (inputs are O(T·B·m): see `rss_after_data_bytes`),
    compiles and runs the gradient once, and reports its own `getrusage` maxrss at each stage.
    `rss_run_delta_bytes` is what the run itself added: on Linux the peak (VmHWM) is reset
    after data and compile and read after the run; elsewhere peak − after-compile maxrss
    (a lower bound: maxrss is monotone, and generating the inputs may peak higher).

    **Arguments:**

    - `model`, `method`: keys of `MODELS` and `METHODS`.
    - `n`, `m`, `batch`, `steps`, `dtype`: the point.
    - `timeout`: seconds before the child is abandoned (the row then has `rss_error`).

    **Returns:**

    A dict of `rss_*` fields (bytes), or `{"rss_error": message}`.
    """
    spec = dict(model=model, method=method, n=n, m=m, batch=batch, steps=steps, dtype=dtype)
    code = ("import json,sys; from sparseprop.bench.memory import child_point; "
            "print('@@' + json.dumps(child_point(json.loads(sys.argv[1]))))")
    env = dict(os.environ)
    env.setdefault("JAX_PLATFORMS", "cpu") if jax.default_backend() == "cpu" else None
    try:
        out = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True,
                             text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"rss_error": f"timeout after {timeout:.0f} s"}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("@@")]
    if out.returncode != 0 or not lines:
        return {"rss_error": (out.stderr.strip().splitlines() or ["exit %d" % out.returncode])[-1][:200]}
    row = json.loads(lines[-1][2:])
    if "rss_run_peak_bytes" in row:   # VmHWM reset before the run: what the run itself added
        row["rss_run_delta_bytes"] = row["rss_run_peak_bytes"] - row["rss_before_run_bytes"]
    else:                              # maxrss is monotone: a lower bound (0 when data dominated)
        row["rss_run_delta_bytes"] = row["rss_peak_bytes"] - row["rss_after_compile_bytes"]
    return row
