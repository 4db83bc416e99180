"""The benchmark harness (sparseprop.bench) at tiny sizes: row fields, constant online memory
in T against growing BPTT memory, and exactness of the exact methods in float64."""
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
