"""`sparseprop.jit`: the same gradients as `jax.jit`, fewer bytes moved per step on CPU."""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparseprop as sp
from sparseprop.bench.hlo import hlo_loop_bytes

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import eprop_reference as ref  # noqa: E402


def test_options_are_for_the_cpu_backend_only():
    assert sp.compiler_options("cpu") == sp.compiling.CPU_OPTIONS
    assert sp.compiler_options("gpu") == {} and sp.compiler_options("tpu") == {}
    sp.compiler_options("cpu")["x"] = 1          # a copy: the module's options stay as they are
    assert "x" not in sp.compiling.CPU_OPTIONS


@pytest.mark.slow
@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the options measured are XLA:CPU's")
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_alif_eprop_same_gradients_and_no_trace_copies(dtype):
    """Recurrent ALIF e-prop (ε^v read by two updates): the default copy insertion copies it
    every step; with the options the loop body has no copy and moves fewer bytes."""
    n, m, batch = 32, 16, 4
    problem = ref.make_problem("alif", n=n, m=m, k=3, batch=batch, steps=5, dtype=dtype)
    args = (problem["params"], problem["states0"], problem["xs"], problem["targets"])
    fn = ref.sparseprop_fn(problem["model"], "eprop")
    plain, tuned = jax.jit(fn), sp.jit(fn)
    loss0, grads0 = plain(*args)
    loss1, grads1 = tuned(*args)
    tol = 1e-12 if dtype == jnp.float64 else 1e-5
    np.testing.assert_allclose(loss1, loss0, rtol=tol)
    for a, b in zip(jax.tree_util.tree_leaves(grads1), jax.tree_util.tree_leaves(grads0)):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * float(jnp.max(jnp.abs(b))))
    unit = batch * n * (n + m) * jnp.dtype(dtype).itemsize
    before = hlo_loop_bytes(plain.lower(*args).compile().as_text(), unit)
    after = hlo_loop_bytes(tuned.lower(*args).compile().as_text(), unit)
    assert before["by_opcode"].get("copy", 0) >= unit, before["by_opcode"]      # the trace copies
    assert after["by_opcode"].get("copy", 0) < unit / 4, after["by_opcode"]
    assert after["passes"] <= before["passes"] - 1.5, (before["passes"], after["passes"])
    # options given to sparseprop.jit win over its own
    off = sp.jit(fn, compiler_options={"xla_cpu_copy_insertion_use_region_analysis": False})
    assert hlo_loop_bytes(off.lower(*args).compile().as_text(), unit)["by_opcode"].get("copy", 0) >= unit
