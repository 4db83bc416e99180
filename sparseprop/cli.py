"""The `sparseprop` command line: a demo, a gradient check for your own model, the benchmarks.

    sparseprop demo                                  # the quickstart: LIF learns a target online
    sparseprop check mymodels:make_alif              # exact / e-prop / OSTL vs BPTT in float64, a table
    sparseprop explain mymodels:make_alif            # the traces the tracer derived, dropped terms
    sparseprop bench memory --quick                  # memory sweep (sparseprop.bench)

`check` and `explain` take `MODULE:FACTORY`. `MODULE` is an importable module name
(searched from the current directory too) or a path to a `.py` file; `FACTORY` is a
function of no required arguments returning `(model, loss_fn, params, state0, xs, targets)`
with `xs` and `targets` time-major (leading axis T) for ONE example.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import os
import sys
import textwrap
from pathlib import Path
from typing import Callable, List, Optional, Sequence

#: The tolerance of `check`: a method that claims exactness must match BPTT to this
#: relative error in float64.
EXACT_TOLERANCE = 1e-9


class CLIError(Exception):
    """A user-facing error: printed as one clear message, exit code 2."""


# ----------------------------------------------------------------------------------------
# Loading a user's factory
# ----------------------------------------------------------------------------------------

def load_factory(spec: str) -> Callable:
    """Import `MODULE:FACTORY` and return the factory.

    **Arguments:**

    - `spec`: `"package.module:function"` or `"path/to/file.py:function"`.

    **Returns:**

    The callable. Raises `CLIError` with a message saying what to write instead when the
    string is malformed, the module cannot be imported or has no such callable.
    """
    if spec.count(":") != 1 or not all(spec.split(":")):
        # a Windows drive letter is the only legitimate extra colon; not supported here
        raise CLIError(f"expected MODULE:FACTORY (e.g. 'mymodels:make_lif' or 'models.py:make_lif'), "
                       f"got {spec!r}")
    module_name, attr = spec.split(":")
    if module_name.endswith(".py") or os.sep in module_name:
        path = Path(module_name)
        if not path.is_file():
            raise CLIError(f"no such file {str(path)!r} (from {spec!r})")
        # A path-loaded module gets a private name so that it never shadows an installed one.
        mod_spec = importlib.util.spec_from_file_location(f"_sparseprop_user_{path.stem}", path)
        module = importlib.util.module_from_spec(mod_spec)
        sys.path.insert(0, str(path.parent.resolve()))   # let the file import its neighbours
        try:
            mod_spec.loader.exec_module(module)
        except Exception as e:
            raise CLIError(f"importing {str(path)!r} failed: {type(e).__name__}: {e}") from e
    else:
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())   # as `python -m` does: modules next to you import
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and module_name.startswith(e.name):
                raise CLIError(f"cannot import module {module_name!r}: not found on sys.path "
                               f"(run from its directory, or pass a file path: 'path/to/{module_name}.py:{attr}')"
                               ) from e
            raise CLIError(f"importing {module_name!r} failed: {type(e).__name__}: {e}") from e
        except Exception as e:
            raise CLIError(f"importing {module_name!r} failed: {type(e).__name__}: {e}") from e
    factory = getattr(module, attr, None)
    if factory is None:
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise CLIError(f"module {module_name!r} has no attribute {attr!r}; callables there: "
                       f"{', '.join(public) or '(none)'}")
    if not callable(factory):
        raise CLIError(f"{spec!r} is a {type(factory).__name__}, not a callable factory")
    return factory


def call_factory(factory: Callable, spec: str, T: Optional[int] = None) -> tuple:
    """Call a factory and validate what it returns.

    **Arguments:**

    - `factory`: from `load_factory`; `spec`: its name, for messages.
    - `T`: the number of time steps wanted. Passed as `factory(T=T)` when the factory takes
      a `T` argument; otherwise `xs` and `targets` are cut to their first `T` steps.

    **Returns:**

    `(model, loss_fn, params, state0, xs, targets)`.
    """
    import jax
    try:
        takes_T = "T" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        takes_T = False
    try:
        result = factory(T=T) if (T is not None and takes_T) else factory()
    except Exception as e:
        raise CLIError(f"{spec} raised {type(e).__name__}: {e}") from e
    if not isinstance(result, (tuple, list)) or len(result) != 6:
        got = f"a {type(result).__name__} of length {len(result)}" if isinstance(result, (tuple, list)) \
            else f"a {type(result).__name__}"
        raise CLIError(f"{spec} must return (model, loss_fn, params, state0, xs, targets); got {got}")
    model, loss_fn, params, state0, xs, targets = result
    if not callable(model) or not callable(loss_fn):
        raise CLIError(f"{spec}: the first two returned values must be the model and the loss_fn (callables)")
    lengths = {int(jax.numpy.shape(v)[0]) for v in jax.tree_util.tree_leaves((xs, targets)) if jax.numpy.ndim(v)}
    if len(lengths) != 1:
        raise CLIError(f"{spec}: xs and targets must share a leading time axis; found lengths {sorted(lengths)}")
    if T is not None and not takes_T:
        if T > lengths.pop():
            raise CLIError(f"--T {T} is longer than the sequence the factory returned")
        xs, targets = jax.tree_util.tree_map(lambda v: v[:T], (xs, targets))
    return model, loss_fn, params, state0, xs, targets


def _to_float64(tree):
    """Cast floating leaves to float64 (integers and booleans are kept)."""
    import jax
    import jax.numpy as jnp

    def cast(v):
        v = jnp.asarray(v)
        return v.astype(jnp.float64) if jnp.issubdtype(v.dtype, jnp.floating) else v
    return jax.tree_util.tree_map(cast, tree)


def _progress(iterable, desc: str, enabled: bool = True):
    """A tqdm bar on stderr (compiles take seconds); plain iteration without tqdm."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is an optional dependency
        return iterable
    # disable=None: tqdm turns itself off when stderr is not a terminal (CI logs, pipes)
    return tqdm(iterable, desc=desc, disable=None if enabled else True, leave=False, file=sys.stderr)


# ----------------------------------------------------------------------------------------
# check
# ----------------------------------------------------------------------------------------

def check_model(model, loss_fn, params, state0, xs, targets, methods: Sequence[str] = ("exact", "eprop", "ostl"),
                progress: bool = True) -> dict:
    """Run each method and BPTT over one sequence in float64 and compare the gradients.

    Enables `jax_enable_x64` and casts floating inputs to float64 first, so that a
    disagreement above 1e-9 is a wrong gradient, not rounding. A method (or BPTT) that
    raises does not stop the check: its row records the error and the others still run.

    **Arguments:**

    - `model`, `loss_fn`, `params`, `state0`, `xs`, `targets`: as for `sparseprop.bptt_grad`
      (one example, `xs`/`targets` time-major, leaves `(T, ...)`).
    - `methods`: names for `sparseprop.online_grad(method=...)`.
    - `progress`: show a progress bar.

    **Returns:**

    A dict with `bptt_loss`, `bptt_error` (None, or the error BPTT raised), `param_names`,
    `ref_norms` (per-parameter max |BPTT grad|), `silent` (the parameters whose BPTT gradient
    is zero: nothing to compare, usually because no neuron spiked) and `rows`: one dict per
    method with `method`, `error` (None, or `"TypeName: message"`), `is_exact`, `rel_err` (per
    parameter), `max_rel_err`, `cosine`, `loss_err`, `trace_bytes`, `explanation`, `ok`.
    """
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np

    from .api import bptt_grad, online_grad

    params, state0, xs, targets = _to_float64((params, state0, xs, targets))
    x0 = jax.tree_util.tree_map(lambda v: v[0], xs)
    named = jax.tree_util.tree_flatten_with_path(params)[0]
    names = ["params" + jax.tree_util.keystr(path) for path, _ in named]

    tasks = ["bptt"] + list(methods)
    results, errors = {}, {}
    for task in _progress(tasks, "check", progress):
        try:
            if task == "bptt":
                loss, grads = jax.jit(bptt_grad(model, loss_fn))(params, state0, xs, targets)
                results[task] = (float(loss), [np.asarray(g) for g in jax.tree_util.tree_leaves(grads)])
                continue
            learner = online_grad(model, loss_fn, method=task)
            report = learner.explain(params, state0, x0, print_report=False)
            carry = learner.init(params, state0, x0)
            _, total = jax.jit(learner.run)(params, carry, xs, targets)
            results[task] = (float(total.loss), [np.asarray(g) for g in jax.tree_util.tree_leaves(total.grads)],
                             learner.is_exact(params, state0, x0), report)
        except Exception as e:   # one failing method must not hide the others' rows
            errors[task] = f"{type(e).__name__}: {e}"

    ref_loss, ref = results.get("bptt", (float("nan"), None))
    ref_norms = [float(np.max(np.abs(g))) if g.size else 0.0 for g in ref] if ref is not None else []
    ref_flat = np.concatenate([g.ravel() for g in ref]) if ref else np.zeros(0)
    rows = []
    for task in methods:
        if task in errors:
            rows.append(dict(method=task, error=errors[task], is_exact=None, rel_err=[None] * len(names),
                             max_rel_err=None, cosine=None, loss_err=None, trace_bytes=None, explanation=None,
                             ok=False))
            continue
        loss, grads, exact, report = results[task]
        if ref is None:
            rows.append(dict(method=task, error=None, is_exact=bool(exact), rel_err=[None] * len(names),
                             max_rel_err=None, cosine=None, loss_err=None, trace_bytes=report.trace_bytes,
                             explanation=report, ok=False))
            continue
        rel = []
        for g, r, norm in zip(grads, ref, ref_norms):
            diff = float(np.max(np.abs(g - r))) if g.size else 0.0
            # relative to the leaf's largest BPTT entry; an all-zero reference leaf compares absolutely
            rel.append(diff / norm if norm > 0 else diff)
        flat = np.concatenate([g.ravel() for g in grads]) if grads else np.zeros(0)
        denom = float(np.linalg.norm(flat) * np.linalg.norm(ref_flat))
        cos = float(flat @ ref_flat / denom) if denom > 0 else float("nan")
        worst = max(rel, default=0.0)
        loss_err = abs(loss - ref_loss) / max(abs(ref_loss), 1e-300)
        ok = not exact or (worst <= EXACT_TOLERANCE and loss_err <= EXACT_TOLERANCE)
        rows.append(dict(method=task, error=None, is_exact=bool(exact), rel_err=rel, max_rel_err=worst, cosine=cos,
                         loss_err=loss_err, trace_bytes=report.trace_bytes, explanation=report, ok=ok))
    silent = [n for n, norm in zip(names, ref_norms) if norm == 0]
    return dict(bptt_loss=ref_loss, bptt_error=errors.get("bptt"), param_names=names, ref_norms=ref_norms,
                silent=silent, rows=rows, T=int(jax.tree_util.tree_leaves(xs)[0].shape[0]))


#: Exit codes of `sparseprop check`.
EXIT_PASS, EXIT_MISMATCH, EXIT_USAGE, EXIT_MODEL_ERROR, EXIT_INCONCLUSIVE = 0, 1, 2, 3, 4


def check_verdict(result: dict) -> int:
    """The exit code of `sparseprop check` for a `check_model` result.

    **Arguments:**

    - `result`: from `check_model`.

    **Returns:**

    `1` if a method that claims exactness differs from BPTT (the most serious), else `3` if
    BPTT or a method raised, else `4` if some parameter's BPTT gradient is zero (nothing was
    really compared: did any neuron spike?), else `0`.
    """
    rows = result["rows"]
    if any(r["error"] is None and r["is_exact"] and r["max_rel_err"] is not None and not r["ok"] for r in rows):
        return EXIT_MISMATCH
    if result["bptt_error"] or any(r["error"] for r in rows):
        return EXIT_MODEL_ERROR
    if result["silent"]:
        return EXIT_INCONCLUSIVE
    return EXIT_PASS


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def _table(header: List[str], rows: List[List[str]]) -> str:
    from tabulate import tabulate
    return tabulate(rows, headers=header, tablefmt="simple", disable_numparse=True)


def _num(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_check(result: dict) -> str:
    """The report printed by `sparseprop check`.

    **Arguments:**

    - `result`: from `check_model`.

    **Returns:**

    The text: a summary table per method (a method that raised is a row marked ERROR, its
    message below), a per-parameter error table with a note on parameters whose BPTT
    gradient is zero, each method's dropped terms, and the verdict (PASS, FAIL, ERROR or
    INCONCLUSIVE, as `check_verdict`).
    """
    rows = result["rows"]
    if result["bptt_error"]:
        out = [f"float64, T={result['T']} steps, BPTT failed: nothing to compare against", ""]
    else:
        out = [f"float64, T={result['T']} steps, BPTT loss {result['bptt_loss']:.6g}", ""]
    summary = []
    for r in rows:
        if r["error"]:
            verdict = "ERROR"
        elif r["max_rel_err"] is None:
            verdict = "not compared"
        elif result["silent"] and len(result["silent"]) == len(result["param_names"]):
            verdict = "nothing compared"      # every BPTT gradient is zero: agreement proves nothing
        else:
            verdict = ("OK" if r["ok"] else "MISMATCH") if r["is_exact"] else "approximate"
        exact = "-" if r["is_exact"] is None else ("yes" if r["is_exact"] else "no")
        memory = "-" if r["trace_bytes"] is None else _fmt_bytes(r["trace_bytes"])
        dropped = "-" if r["explanation"] is None else str(len(r["explanation"].dropped))
        summary.append([r["method"], exact, _num(r["max_rel_err"], ".2e"), _num(r["cosine"], ".9f"), memory,
                        dropped, verdict])
    out.append(_table(["method", "is_exact", "max rel err", "cosine to BPTT", "trace memory/example",
                       "dropped terms", "verdict"], summary))
    if not result["bptt_error"]:
        out.append("")
        per_param = []
        notes = ["note"] if result["silent"] else []    # the column only when there is something to say
        for i, name in enumerate(result["param_names"]):
            note = ["BPTT gradient is zero: check that neurons spike" if name in result["silent"] else ""]
            per_param.append([name, f"{result['ref_norms'][i]:.3e}"] + [_num(r["rel_err"][i], ".2e") for r in rows]
                             + (note if notes else []))
        out.append("relative error per parameter (max |online - BPTT| / max |BPTT|):")
        out.append(_table(["parameter", "max|BPTT grad|"] + [r["method"] for r in rows] + notes, per_param))
    for r in rows:
        if r["explanation"] is not None and r["explanation"].dropped:
            out.append("")
            out.append(f"dropped by {r['method']!r} (paths from the previous state through these operations):")
            for d in r["explanation"].dropped:
                out.append(f"  {d.primitive} at {d.source}  [mixes {', '.join(d.states)}]")
    failures = ([("BPTT", result["bptt_error"])] if result["bptt_error"] else []) + [
        (r["method"], r["error"]) for r in rows if r["error"]]
    if failures:
        out.append("")
        out.append("errors:")
        for who, message in failures:
            out.append(textwrap.indent(f"{who}: {message}", "  "))
    code = check_verdict(result)
    out.append("")
    if code == EXIT_MISMATCH:
        bad = [r["method"] for r in rows if r["error"] is None and r["is_exact"] and not r["ok"]]
        out.append(f"FAIL: {', '.join(bad)} claim(s) exactness but differ from BPTT by more than "
                   f"{EXACT_TOLERANCE:g} (relative). Please report this with your model.")
    elif code == EXIT_MODEL_ERROR:
        who = ", ".join(w for w, _ in failures)
        out.append(f"ERROR: {who} raised on this model (messages above); rows without ERROR were still "
                   f"compared. This is an error of the model or the tracer, not a gradient mismatch.")
    elif code == EXIT_INCONCLUSIVE:
        out.append(f"INCONCLUSIVE: the BPTT gradient of {', '.join(result['silent'])} is zero, so the check "
                   f"compares nothing there. Usually no neuron spiked: raise the input rate or weights, lower "
                   f"the threshold, or use a longer sequence (--T).")
    else:
        out.append(f"PASS: every method that claims exactness matches BPTT to {EXACT_TOLERANCE:g}.")
    return "\n".join(out)


# ----------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------

def _methods(text: str) -> List[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    if not methods:
        raise CLIError("--methods needs at least one method, e.g. --methods exact,eprop")
    return methods


def cmd_check(args) -> int:
    """`sparseprop check`: print the comparison table; the exit code is `check_verdict`'s.

    **Arguments:**

    - `args`: the parsed command line (`build_parser`).

    **Returns:**

    The exit code.
    """
    import jax
    jax.config.update("jax_enable_x64", True)   # before the factory builds its arrays
    factory = load_factory(args.factory)
    model, loss_fn, params, state0, xs, targets = call_factory(factory, args.factory, args.T)
    result = check_model(model, loss_fn, params, state0, xs, targets, _methods(args.methods),
                         progress=not args.no_progress)
    print(format_check(result))
    return check_verdict(result)


def cmd_explain(args) -> int:
    """`sparseprop explain`: print `learner.explain()` for each method.

    **Arguments:**

    - `args`: the parsed command line (`build_parser`).

    **Returns:**

    The exit code.
    """
    import jax
    jax.config.update("jax_enable_x64", True)
    from .api import online_grad
    factory = load_factory(args.factory)
    model, loss_fn, params, state0, xs, targets = call_factory(factory, args.factory)
    params, state0, xs = _to_float64((params, state0, xs))
    x0 = jax.tree_util.tree_map(lambda v: v[0], xs)
    for i, method in enumerate(_methods(args.methods)):
        if i:
            print()
        online_grad(model, loss_fn, method=method).explain(params, state0, x0)
    return 0


def _quickstart_path() -> Path:
    return Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"


def cmd_demo(args) -> int:
    """`sparseprop demo`: run examples/quickstart.py, or a built-in copy when installed without it.

    **Arguments:**

    - `args`: the parsed command line (`build_parser`).

    **Returns:**

    The exit code.
    """
    path = _quickstart_path()
    if path.is_file():
        spec = importlib.util.spec_from_file_location("_sparseprop_quickstart", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print(f"running {path}\n")
        module.main()
        return 0
    # An installed (non-editable) copy has no examples/: a minimal version of the quickstart.
    print("examples/quickstart.py not found (installed without the repository); running a short demo\n")
    _builtin_demo()
    return 0


def _builtin_demo():
    import jax
    import jax.numpy as jnp

    from . import online_grad, bptt_grad, spike

    def lif(params, state, x):
        v = params["alpha"] * state["v"] + params["w"] @ x - state["z"]
        z = spike(v - 1.0)
        out = 0.8 * state["out"] + params["w_out"] @ z
        return {"v": v, "z": z, "out": out}, out

    def loss_fn(y, target):
        return jnp.mean((y - target) ** 2)

    k = jax.random.split(jax.random.PRNGKey(0), 3)
    n_in, n, T = 20, 64, 100
    params = {"alpha": jnp.full(n, 0.9), "w": jax.random.normal(k[0], (n, n_in)) * 0.5,
              "w_out": jax.random.normal(k[1], (2, n)) * 0.1}
    state0 = {"v": jnp.zeros(n), "z": jnp.zeros(n), "out": jnp.zeros(2)}
    xs = (jax.random.uniform(k[2], (T, n_in)) < 0.2).astype(jnp.float32)
    t = jnp.arange(T)[:, None]
    targets = jnp.concatenate([jnp.sin(t / 8.0), jnp.cos(t / 13.0)], axis=1)
    learner = online_grad(lif, loss_fn)
    _, total = jax.jit(learner.run)(params, learner.init(params, state0, xs[0]), xs, targets)
    _, ref = jax.jit(bptt_grad(lif, loss_fn))(params, state0, xs, targets)
    err = max(float(jnp.max(jnp.abs(total.grads[p] - ref[p])) / jnp.max(jnp.abs(ref[p]))) for p in params)
    print(f"online vs BPTT: max relative gradient error {err:.2e} (float32)")

    # Online learning as in the quickstart: an SGD update after every time step, the
    # stream's steps scanned inside one jitted pass.
    @jax.jit
    def learn_pass(params, carry):
        def body(c, inputs):
            params, carry = c
            carry, out = learner.step(params, carry, *inputs)
            params = jax.tree_util.tree_map(lambda p, g: p - 0.002 * g, params, out.grads)
            params["alpha"] = jnp.clip(params["alpha"], 0.5, 0.99)   # keep the leak a leak
            return (params, carry), out.loss
        (params, carry), losses = jax.lax.scan(body, (params, carry), (xs, targets))
        return params, carry, jnp.mean(losses)
    carry = learner.init(params, state0, xs[0])
    for epoch in _progress(range(20), "demo"):
        params, carry, loss = learn_pass(params, carry)
        print(f"pass {epoch}: mean loss {float(loss):.4f}")


def cmd_bench(args) -> int:
    """`sparseprop bench memory|speed`: run a sweep of `sparseprop.bench`, write CSV and PNG.

    **Arguments:**

    - `args`: the parsed command line (`build_parser`).

    **Returns:**

    The exit code.
    """
    from . import bench   # light: matplotlib and tqdm are imported only when used

    missing = bench.missing_extras()
    if missing:
        # Check before the sweep, which would otherwise run for minutes and then fail at the figure.
        print(f"sparseprop bench needs {' and '.join(missing)} (the bench extra): "
              f"pip install -e \".[bench]\"  (from a checkout), or pip install {' '.join(missing)}",
              file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    csv_path = os.path.join(args.out, f"{args.kind}.csv")
    png_path = os.path.join(args.out, f"{args.kind}.png")
    models = args.models.split(",") if args.models else list(bench.MODELS)
    methods = args.methods.split(",") if args.methods else list(bench.METHODS)
    if args.kind == "memory":
        steps, widths = ((100, 400, 1600), (32,)) if args.quick else (bench.DEFAULT_T, bench.DEFAULT_N)
        rows = bench.memory_sweep(models, methods, steps, widths, csv_path=csv_path, png_path=png_path)
        print(f"\n{bench.machine_label()}\ncompiled temp bytes, T={max(steps)} / T={min(steps)}:")
        for r in bench.memory_growth(rows):
            print(f"  {r['model']:14s} {r['method']:20s} n={r['n']:5d}  {r['temp_small_MiB']:10.3f} -> "
                  f"{r['temp_large_MiB']:10.3f} MiB  ratio {r['ratio']:8.2f}")
    else:
        widths, steps = ((16, 64), 50) if args.quick else ((32,) + tuple(bench.DEFAULT_N), 200)
        rows = bench.speed_sweep(models, methods, widths, steps, csv_path=csv_path, png_path=png_path)
        print(f"\n{bench.machine_label()}\nms per step (T={steps}), ratio to BPTT measured side by side:")
        for r in rows:
            print(f"  {r['model']:14s} {r['method']:20s} n={r['n']:5d} {r['ms_per_step']:9.4f} ms "
                  f"x{r['ratio_vs_bptt']:7.2f}  rel err {r['rel_err_vs_bptt']:8.1e}")
    print(f"wrote {csv_path} and {png_path}")
    return 0


# ----------------------------------------------------------------------------------------
# Parser
# ----------------------------------------------------------------------------------------

FACTORY_HELP = textwrap.dedent("""\
    A factory is a function of no required arguments returning
    (model, loss_fn, params, state0, xs, targets) for ONE example, xs and targets time-major:

        # mymodels.py
        import jax, jax.numpy as jnp, sparseprop as sp

        def make_lif(T=50):
            def lif(params, state, x):
                v = params["alpha"] * state["v"] + params["w"] @ x - state["z"]
                z = sp.spike(v - 1.0)
                return {"v": v, "z": z}, params["w_out"] @ z
            loss_fn = lambda y, t: jnp.sum((y - t) ** 2)
            k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
            params = {"alpha": jnp.full(8, 0.9), "w": jax.random.normal(k1, (8, 5)),
                      "w_out": jax.random.normal(k2, (2, 8))}
            state0 = {"v": jnp.zeros(8), "z": jnp.zeros(8)}
            xs = jax.random.bernoulli(k3, 0.3, (T, 5)).astype(float)
            return lif, loss_fn, params, state0, xs, jnp.zeros((T, 2))

    MODULE is an importable module (the current directory is searched) or a path to a .py
    file. If the factory takes an argument named T, --T is passed to it; otherwise the
    sequences are cut to their first T steps.""")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `sparseprop` command (subcommands demo, check, explain, bench).

    **Returns:**

    An `argparse.ArgumentParser`.
    """
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="sparseprop", formatter_class=raw,
        description="Exact online gradients for neuron models written as JAX step functions.",
        epilog=textwrap.dedent("""\
            examples:
              sparseprop demo                              # a LIF layer learns a target online
              sparseprop check mymodels:make_alif          # is the online gradient equal to BPTT?
              sparseprop check models.py:make_net --T 200 --methods exact
              sparseprop explain mymodels:make_alif        # the traces, their memory, dropped terms
              sparseprop bench memory --quick              # memory vs sequence length, CSV + PNG

            run 'sparseprop COMMAND --help' for each command."""))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", formatter_class=raw, help="run the quickstart (LIF layer learning online)",
                       description="Run examples/quickstart.py: the online gradient of a LIF layer is "
                                   "compared with BPTT, then the layer learns a target online.",
                       epilog="example:\n  sparseprop demo")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "check", formatter_class=raw, help="compare exact / e-prop online gradients with BPTT (float64)",
        description=textwrap.dedent("""\
            Load your model from a factory, run each online method and BPTT over one sequence in
            float64, and print: whether the method claims exactness, the max relative error against
            BPTT (per parameter and overall), the cosine to BPTT, trace memory per example, and the
            terms a method drops (from explain()). Run it before trusting a new neuron model.

            Exit codes: 0 PASS; 1 FAIL, a method that claims exactness differs from BPTT by more
            than 1e-9; 2 the factory cannot be loaded or raised; 3 ERROR, BPTT or a method raised
            on the model (its row says ERROR, the message follows the table; the other rows
            still run); 4 INCONCLUSIVE, a parameter's BPTT gradient is zero (did any neuron spike?).

            """) + FACTORY_HELP,
        epilog="examples:\n  sparseprop check mymodels:make_lif\n"
               "  sparseprop check path/to/models.py:make_alif --T 100 --methods exact,eprop")
    p.add_argument("factory", metavar="MODULE:FACTORY")
    p.add_argument("--T", type=int, default=None, help="number of time steps (default: the factory's)")
    p.add_argument("--methods", default="exact,eprop,ostl", help="comma-separated methods among exact, eprop, "
                   "ostl, snap1 (default: exact,eprop,ostl)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "explain", formatter_class=raw, help="print the traces the tracer derived and what each method drops",
        description="Print learner.explain() for your model under each method: per parameter, each trace "
                    "block's kind, shape, bytes and update rule, and the dropped terms with source lines.\n\n"
                    + FACTORY_HELP,
        epilog="example:\n  sparseprop explain mymodels:make_alif --methods eprop")
    p.add_argument("factory", metavar="MODULE:FACTORY")
    p.add_argument("--methods", default="exact,eprop,ostl", help="comma-separated methods among exact, eprop, "
                   "ostl, snap1 (default: exact,eprop,ostl)")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser(
        "bench", formatter_class=raw, help="memory or speed sweep against BPTT (sparseprop.bench)",
        description="Run the benchmark sweeps of sparseprop.bench and write a CSV and a PNG.\n\n"
                    "  memory: compiled temporary memory vs sequence length T for each method\n"
                    "  speed:  time per step vs layer width n, all methods timed side by side\n\n"
                    "The full sweeps take long (minutes to hours on a laptop CPU); --quick takes about a minute.",
        epilog="examples:\n  sparseprop bench memory --quick\n"
               "  sparseprop bench speed --models lif_perneuron --methods bptt,online_exact --out results/")
    p.add_argument("kind", choices=("memory", "speed"))
    p.add_argument("--quick", action="store_true", help="a small sweep (a smoke test)")
    p.add_argument("--models", default=None, help="comma-separated model names (default: all)")
    p.add_argument("--methods", default=None, help="comma-separated method names (default: all)")
    p.add_argument("--out", default="sparseprop-bench", help="output directory (default: ./sparseprop-bench)")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the `sparseprop` console script.

    **Arguments:**

    - `argv`: the arguments (default: `sys.argv[1:]`).

    **Returns:**

    The exit code: 0 on success, 1 if `check` found an exactness failure, 2 on a usage error
    (a factory that cannot be loaded or raises), 3 if the model raised under BPTT or a method,
    4 if `check` compared nothing for some parameter (its BPTT gradient is zero).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except CLIError as e:
        print(f"sparseprop {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
