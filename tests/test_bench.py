"""The benchmark harness (sparseprop.bench) at tiny sizes: row fields, constant online memory
in T against growing BPTT memory, and exactness of the exact methods in float64."""
import subprocess
import sys

import jax.numpy as jnp
import pytest

from sparseprop import bench

ONLINE = ("online_exact", "online_eprop")


def test_memory_rows_and_constant_online_memory():
    rows = bench.memory_sweep(["lif_shared"], ["bptt", "bptt_checkpoint", *ONLINE], steps=(100, 2000),
                              widths=(8,), inputs=6, batch=2, progress=False, verbose=False)
    for r in rows:
        for field in ("model", "method", "n", "m", "batch", "T", "dtype", "temp_bytes", "machine"):
            assert field in r, (field, r)
        assert "error" not in r, r
    temp = {(r["method"], r["T"]): r["temp_bytes"] for r in rows}
    for me in ONLINE:
        assert temp[(me, 2000)] <= 1.1 * temp[(me, 100)], (me, temp)
    assert temp[("bptt", 2000)] > 5 * temp[("bptt", 100)], temp
    growth = {r["method"]: r["ratio"] for r in bench.memory_growth(rows)}
    assert growth["bptt"] > growth["bptt_checkpoint"] > growth["online_exact"]


def test_speed_rows():
    rows = bench.speed_sweep(["lif_perneuron"], ["bptt", "online_exact"], widths=(8,), steps=20, inputs=6,
                             batch=2, repeats=5, progress=False, verbose=False)
    assert {r["method"] for r in rows} == {"bptt", "online_exact"}
    for r in rows:
        for field in ("ms_per_step", "ratio_vs_bptt", "rel_err_vs_bptt", "cosine_vs_bptt", "temp_bytes",
                      "machine"):
            assert field in r, (field, r)
        assert r["ms_per_step"] > 0
        assert r["rel_err_vs_bptt"] < 1e-4   # float32


@pytest.mark.slow
@pytest.mark.parametrize("model", ["lif_shared", "alif"])
def test_exact_methods_match_bptt_float64(model):
    rows = bench.accuracy_check([model], ["bptt", "bptt_checkpoint", "online_exact", "dense_rtrl"],
                                n=6, m=5, batch=2, steps=30)
    assert rows and all(r["spikes"] > 0 for r in rows)
    for r in rows:
        assert r["exact_expected"]
        assert r["rel_err_vs_bptt"] <= 1e-9, r


def test_checkpoint_chunk():
    assert bench.checkpoint_chunk_size(1600) == 40
    assert bench.checkpoint_chunk_size(25600) == 160
    assert 1600 % bench.checkpoint_chunk_size(1600) == 0


def test_problem_is_float32_and_abstract():
    params, s0, xs, ts = bench.make_problem("alif", 8, 6, 2, 10000, jnp.float32, abstract=True)
    assert xs.shape == (10000, 2, 6) and ts.shape == (10000, 2, 8)
    assert params["w"].dtype == jnp.float32 and s0["a"].shape == (2, 8)


def test_bench_command_names_the_extra_before_running_when_matplotlib_is_missing():
    code = ("import sys; sys.modules['matplotlib'] = None; from sparseprop.cli import main; "
            "sys.exit(main(['bench', 'memory', '--quick', '--out', sys.argv[1]]))")
    out = subprocess.run([sys.executable, "-c", code, "unused-out"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out
    assert "matplotlib" in out.stderr and 'pip install -e ".[bench]"' in out.stderr, out.stderr
    assert "memory" not in out.stdout      # nothing was swept


def test_hand_written_reference_programs_match_bptt():
    """benchmarks/hand_written.py: the hand-derived online gradients equal its BPTT (float64)."""
    import os
    import jax
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
    try:
        import hand_written
    finally:
        sys.path.pop(0)
    n, m, b, t = 6, 5, 2, 40
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    params = {"w": jax.random.normal(k1, (n, m)) * 1.5, "alpha": jnp.asarray(0.9),
              "alpha_vec": jnp.linspace(0.8, 0.95, n)}
    xs = (jax.random.uniform(k2, (t, b, m)) < 0.4).astype(jnp.float64)
    ts = (jax.random.uniform(k3, (t, b, n)) < 0.2).astype(jnp.float64)
    progs = hand_written.reference_programs(n, b)
    assert float(progs["forward"](params, xs)) > 5          # the layer spikes
    ref = progs["bptt"](params, xs, ts)["w"]
    assert bench.relative_error(progs["online_factorised"](params, xs, ts), ref) <= 1e-9
    ref_pn = progs["bptt"](dict(params, alpha=params["alpha_vec"]), xs, ts)["w"]
    assert bench.relative_error(progs["online_eligibility"](params, xs, ts), ref_pn) <= 1e-9
