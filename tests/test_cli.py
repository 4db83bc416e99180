"""`sparseprop` command line: check / explain on factories written to tmp_path, error messages."""
import os
import subprocess
import sys
import textwrap

import pytest

from sparseprop import cli

LIF_FACTORY = textwrap.dedent("""\
    import jax, jax.numpy as jnp
    import sparseprop as sp

    def make_lif(T=40):
        def lif(params, state, x):
            v = params["alpha"] * state["v"] + params["w"] @ x - state["z"]
            z = sp.spike(v - 1.0)
            return {"v": v, "z": z}, params["w_out"] @ z
        loss_fn = lambda y, t: jnp.sum((y - t) ** 2)
        k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
        params = {"alpha": jnp.full(6, 0.9, jnp.float32), "w": jax.random.normal(k1, (6, 4), jnp.float32),
                  "w_out": jax.random.normal(k2, (3, 6), jnp.float32)}
        state0 = {"v": jnp.zeros(6, jnp.float32), "z": jnp.zeros(6, jnp.float32)}
        xs = jax.random.bernoulli(k3, 0.4, (T, 4)).astype(jnp.float32)
        return lif, loss_fn, params, state0, xs, jnp.zeros((T, 3), jnp.float32)

    def not_a_tuple():
        return 3

    def make_silent(T=20):               # no input: no neuron ever spikes, every BPTT gradient is zero
        model, loss_fn, params, state0, xs, targets = make_lif(T)
        return model, loss_fn, params, state0, jnp.zeros_like(xs), targets + 1.0

    def make_broken():
        raise RuntimeError("the data file is missing")

    @jax.custom_vjp
    def clipped_surrogate(v):
        return (v > 0).astype(v.dtype)

    def _fwd(v):
        return clipped_surrogate(v), v

    def _bwd(v, g):                      # not linear in g: no forward-mode program exists
        return (jnp.clip(g, -1.0, 1.0) / (1.0 + jnp.abs(v)) ** 2,)
    clipped_surrogate.defvjp(_fwd, _bwd)

    def make_untraceable(T=20):
        model, loss_fn, params, state0, xs, targets = make_lif(T)
        def lif(params, state, x):
            v = params["alpha"] * state["v"] + params["w"] @ x - state["z"]
            z = clipped_surrogate(v - 1.0)
            return {"v": v, "z": z}, params["w_out"] @ z
        return lif, loss_fn, params, state0, xs, targets
    """)

RECURRENT_FACTORY = textwrap.dedent("""\
    import jax, jax.numpy as jnp
    from sparseprop import neurons

    def make_alif():
        net = neurons.Sequential((neurons.ALIF(recurrent=True), neurons.LeakyIntegrator()))
        sizes = (5, 9, 2)
        k1, k2, k3 = jax.random.split(jax.random.PRNGKey(1), 3)
        params = net.init_params(k1, sizes)
        xs = jax.random.bernoulli(k2, 0.4, (50, 5)).astype(float) * 2.0
        targets = jax.random.normal(k3, (50, 2))
        return net, lambda y, t: 0.5 * jnp.sum((y - t) ** 2), params, net.init_state(sizes), xs, targets
    """)


@pytest.fixture
def factories(tmp_path, monkeypatch):
    # unique module names: sys.modules caches imports across tests
    (tmp_path / "cli_lif_models.py").write_text(LIF_FACTORY)
    (tmp_path / "cli_rec_models.py").write_text(RECURRENT_FACTORY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.mark.slow
def test_check_exact_model_prints_table_and_passes(factories, capsys):
    code = cli.main(["check", "cli_lif_models:make_lif", "--T", "30", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "T=30 steps" in out
    header = next(line for line in out.splitlines() if line.startswith("method"))
    for column in ("is_exact", "max rel err", "cosine to BPTT", "trace memory/example", "dropped terms"):
        assert column in header
    exact_row = next(line for line in out.splitlines() if line.startswith("exact "))
    assert " yes " in exact_row and "OK" in exact_row
    assert float(exact_row.split()[2]) <= 1e-9
    for name in ("params['alpha']", "params['w']", "params['w_out']"):
        assert name in out
    assert "PASS" in out


@pytest.mark.slow
def test_check_recurrent_model_shows_eprop_dropped_terms(factories, capsys):
    # by file path this time
    code = cli.main(["check", str(factories / "cli_rec_models.py") + ":make_alif", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out                                # e-prop is approximate, not wrong
    eprop_row = next(line for line in out.splitlines() if line.startswith("eprop "))
    assert " no " in eprop_row and "approximate" in eprop_row
    assert "dropped by 'eprop'" in out
    assert "dot_general at" in out and "neurons.py" in out
    assert "dropped by 'exact'" not in out


def test_check_exit_code_1_when_an_exact_method_disagrees(factories, capsys, monkeypatch):
    real = cli.check_model

    def broken(*args, **kwargs):
        result = real(*args, **kwargs)
        result["rows"][0].update(max_rel_err=1e-3, ok=False)   # as if the tracer were wrong
        return result
    monkeypatch.setattr(cli, "check_model", broken)
    assert cli.main(["check", "cli_lif_models:make_lif", "--methods", "exact", "--no-progress"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_explain_prints_each_method(factories, capsys):
    assert cli.main(["explain", "cli_rec_models:make_alif", "--methods", "exact,eprop"]) == 0
    out = capsys.readouterr().out
    assert "method='exact': exact (equals BPTT)" in out
    assert "method='eprop': APPROXIMATE" in out


@pytest.mark.parametrize("spec, message", [
    ("no_colon_here", "expected MODULE:FACTORY"),
    ("a:b:c", "expected MODULE:FACTORY"),
    (":make_lif", "expected MODULE:FACTORY"),
    ("cli_no_such_module:make", "cannot import module 'cli_no_such_module'"),
    ("missing_file.py:make", "no such file"),
    ("cli_lif_models:make_gru", "has no attribute 'make_gru'; callables there: clipped_surrogate, make_broken"),
    ("cli_lif_models:not_a_tuple", "must return (model, loss_fn, params, state0, xs, targets)"),
])
def test_bad_factory_strings_give_a_clear_error(factories, capsys, spec, message):
    assert cli.main(["check", spec]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sparseprop check: error:")
    assert message in err


def test_help_explains_every_command():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-m", "sparseprop.cli", "--help"], capture_output=True, text=True,
                         env=env, timeout=60).stdout
    for command in ("demo", "check", "explain", "bench"):
        assert command in out
    assert "sparseprop check mymodels:make_alif" in out
    check_help = subprocess.run([sys.executable, "-m", "sparseprop.cli", "check", "--help"],
                                capture_output=True, text=True, env=env, timeout=60).stdout
    assert "Exit codes: 0 PASS; 1 FAIL" in check_help and "def make_lif" in check_help


@pytest.mark.slow
def test_bench_memory_quick_delegates_to_sparseprop_bench(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out_dir = tmp_path / "bench"
    code = cli.main(["bench", "memory", "--quick", "--models", "lif_shared", "--methods", "bptt,online_exact",
                     "--out", str(out_dir)])
    assert code == 0
    assert (out_dir / "memory.csv").is_file() and (out_dir / "memory.png").is_file()
    out = capsys.readouterr().out
    assert "online_exact" in out and "ratio" in out


def test_check_flags_a_silent_model_and_does_not_pass(factories, capsys):
    code = cli.main(["check", "cli_lif_models:make_silent", "--no-progress"])
    out = capsys.readouterr().out
    assert code == cli.EXIT_INCONCLUSIVE == 4, out
    assert "BPTT gradient is zero: check that neurons spike" in out
    assert "INCONCLUSIVE" in out and "PASS" not in out


def test_check_model_that_fails_to_trace_has_its_own_exit_code(factories, capsys):
    code = cli.main(["check", "cli_lif_models:make_untraceable", "--no-progress"])
    captured = capsys.readouterr()
    assert code == cli.EXIT_MODEL_ERROR == 3, captured.out
    rows = [line for line in captured.out.splitlines() if line.startswith(("exact ", "eprop "))]
    assert len(rows) == 2 and all(line.rstrip().endswith("ERROR") for line in rows)
    assert "errors:" in captured.out and "TracerError" in captured.out
    assert "not a gradient mismatch" in captured.out
    assert "Traceback" not in captured.out + captured.err


def test_check_keeps_going_when_one_method_raises(factories, capsys, monkeypatch):
    import sparseprop.api
    real = sparseprop.api.online_grad

    def eprop_breaks(model, loss_fn, method="exact", **kw):
        if method == "eprop":
            raise IndexError("an internal error of the eprop method")
        return real(model, loss_fn, method, **kw)
    monkeypatch.setattr(sparseprop.api, "online_grad", eprop_breaks)
    code = cli.main(["check", "cli_lif_models:make_lif", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 3, out
    exact_row = next(line for line in out.splitlines() if line.startswith("exact "))
    eprop_row = next(line for line in out.splitlines() if line.startswith("eprop "))
    assert "OK" in exact_row and float(exact_row.split()[2]) <= 1e-9
    assert "ERROR" in eprop_row
    assert "eprop: IndexError: an internal error of the eprop method" in out
    assert "params['w_out']" in out                    # the per-parameter table is still printed


def test_check_factory_that_raises_is_a_usage_error(factories, capsys):
    assert cli.main(["check", "cli_lif_models:make_broken"]) == 2
    err = capsys.readouterr().err
    assert "make_broken raised RuntimeError: the data file is missing" in err
