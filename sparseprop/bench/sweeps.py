"""The sweeps: memory vs sequence length, time per step vs width, float64 exactness; each a
list of row dicts, optionally written as CSV and PNG."""
from __future__ import annotations

from typing import List, Optional, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from .memory import peak_rss, temp_bytes
from .peers import _BRAINTRACE_MODELS, braintrace_available, make_grad_fn
from .problems import METHODS, MODELS, exact_expected, make_problem
from .report import plot_memory, plot_speed, write_csv
from .timing import cosine, machine_label, relative_error, time_per_step


def _skip_reason(model: str, method: str, n: int, real_run: bool, dense_max_n: int,
                 exact_recurrent_max_n: int) -> Optional[str]:
    if method.startswith("braintrace_"):
        why = braintrace_available()
        if why:
            return why
        if not _braintrace_supports(method, model):
            return f"{method} cannot express {model}"
    if method == "dense_rtrl" and n > dense_max_n:
        return f"dense RTRL only for n <= {dense_max_n}"
    if method == "online_exact" and model == "lif_recurrent" and real_run and n > exact_recurrent_max_n:
        return f"exact recurrent (dense trace) only run for n <= {exact_recurrent_max_n}"
    return None


def _braintrace_supports(method: str, model: str) -> bool:
    return model in _BRAINTRACE_MODELS


def _progress(total: int, desc: str, enabled: bool = True):
    try:
        from tqdm.auto import tqdm
        return tqdm(total=total, desc=desc, disable=not enabled, leave=True)
    except ImportError:  # pragma: no cover
        class _Null:
            def update(self, *_): pass
            def set_postfix_str(self, *_): pass
            def close(self): pass
        return _Null()


DEFAULT_T = (100, 400, 1600, 6400, 25600)


DEFAULT_N = (128, 512, 2048)


def _print_skipped(skipped) -> None:
    for (mo, me, why), ns in skipped.items():
        print(f"skipped {me} on {mo} (n={sorted(set(ns))}): {why}")


def memory_sweep(models: Sequence[str] = tuple(MODELS), methods: Sequence[str] = METHODS,
                 steps: Sequence[int] = DEFAULT_T, widths: Sequence[int] = DEFAULT_N,
                 inputs: int = 256, batch: int = 16, dtype=jnp.float32,
                 rss_points: Sequence[tuple] = (), dense_max_n: int = 128,
                 csv_path: Optional[str] = None, png_path: Optional[str] = None,
                 progress: bool = True, verbose: bool = True) -> List[dict]:
    """Compiled temp bytes of every (model, method, n, T), plus peak RSS of real runs.

    Temp bytes come from compiling with abstract inputs (nothing allocated), so large T is
    cheap. Real runs (peak RSS, one child process each) only for `rss_points`.

    **Arguments:**

    - `models`, `methods`: which to sweep (unavailable methods are skipped with a message).
    - `steps`: sequence lengths T; `widths`: layer widths n; `inputs`: m; `batch`: B.
    - `dtype`: float dtype.
    - `rss_points`: `(model, method, n, T)` tuples to also run for real in a child process.
    - `dense_max_n`: largest n for dense RTRL.
    - `csv_path`, `png_path`: where to write the rows and the figure (skipped if `None`).
    - `progress`: show a tqdm bar; `verbose`: print skip messages.

    **Returns:**

    A list of row dicts: `model, method, n, m, batch, T, dtype, temp_bytes, argument_bytes,
    output_bytes, compile_s, machine` and, for RSS points, the `rss_*` fields.
    """
    machine = machine_label()
    points = [(mo, me, n, t) for mo in models for me in methods for n in widths for t in steps]
    rows, skipped = [], {}
    bar = _progress(len(points) + len(rss_points), "memory", progress)
    for mo, me, n, t in points:
        bar.update(1)
        why = _skip_reason(mo, me, n, False, dense_max_n, 0)
        if why:
            skipped.setdefault((mo, me, why), []).append(n)
            continue
        bar.set_postfix_str(f"{mo} {me} n={n} T={t}")
        args = make_problem(mo, n, inputs, batch, t, dtype, abstract=True)
        row = dict(model=mo, method=me, n=n, m=inputs, batch=batch, T=t, dtype=jnp.dtype(dtype).name)
        try:
            row.update(temp_bytes(make_grad_fn(me, mo), *args))
        except Exception as e:  # report and keep sweeping
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
        row["machine"] = machine
        rows.append(row)
    for mo, me, n, t in rss_points:
        bar.update(1)
        bar.set_postfix_str(f"RSS {mo} {me} n={n} T={t}")
        row = next((r for r in rows if (r["model"], r["method"], r["n"], r["T"]) == (mo, me, n, t)), None)
        if row is None:
            row = dict(model=mo, method=me, n=n, m=inputs, batch=batch, T=t, dtype=jnp.dtype(dtype).name,
                       machine=machine)
            rows.append(row)
        row.update(peak_rss(mo, me, n, inputs, batch, t, jnp.dtype(dtype).name))
    bar.close()
    if verbose:
        _print_skipped(skipped)
    if csv_path:
        write_csv(rows, csv_path)
    if png_path:
        plot_memory(rows, png_path, machine, inputs, batch)
    return rows


def memory_growth(rows: List[dict]) -> List[dict]:
    """Per (model, method, n): temp bytes at the largest T over the smallest T.

    **Arguments:** `rows` from `memory_sweep`.

    **Returns:** rows `model, method, n, T_small, T_large, temp_small_MiB, temp_large_MiB, ratio`.
    """
    out, groups = [], {}
    for r in rows:
        if r.get("temp_bytes") not in (None, ""):
            groups.setdefault((r["model"], r["method"], r["n"]), []).append(r)
    for (mo, me, n), rs in groups.items():
        lo, hi = min(rs, key=lambda r: r["T"]), max(rs, key=lambda r: r["T"])
        out.append(dict(model=mo, method=me, n=n, T_small=lo["T"], T_large=hi["T"],
                        temp_small_MiB=lo["temp_bytes"] / 2 ** 20, temp_large_MiB=hi["temp_bytes"] / 2 ** 20,
                        ratio=hi["temp_bytes"] / max(lo["temp_bytes"], 1)))
    return out


def speed_sweep(models: Sequence[str] = tuple(MODELS), methods: Sequence[str] = METHODS,
                widths: Sequence[int] = (32,) + DEFAULT_N, steps: int = 200, inputs: int = 256,
                batch: int = 16, repeats: int = 5, dtype=jnp.float32, dense_max_n: int = 32,
                exact_recurrent_max_n: int = 32, csv_path: Optional[str] = None,
                png_path: Optional[str] = None, progress: bool = True, verbose: bool = True) -> List[dict]:
    """Time per step of every method, side by side per (model, n), and its error vs BPTT.

    For each (model, n) all methods are compiled, warmed up and then timed round-robin
    (`time_per_step`), so their ratios are measured under the same machine load.

    **Arguments:**

    - `models`, `methods`: which to time (BPTT is always run: it is the reference).
    - `widths`: layer widths n; `steps`: T of each timed run; `inputs`: m; `batch`: B.
    - `repeats`: timed rounds (median reported).
    - `dtype`: float dtype.
    - `dense_max_n`, `exact_recurrent_max_n`: largest n run for dense RTRL and for exact
      online learning of the recurrent model (both keep dense traces).
    - `csv_path`, `png_path`: outputs (skipped if `None`); `progress`, `verbose`: as usual.

    **Returns:**

    Rows `model, method, n, m, batch, T, dtype, ms_per_step, ms_per_step_min, ratio_vs_bptt,
    rel_err_vs_bptt, cosine_vs_bptt, temp_bytes, machine`.
    """
    machine = machine_label()
    rows, skipped = [], {}
    bar = _progress(len(models) * len(widths), "speed", progress)
    for mo in models:
        for n in widths:
            bar.set_postfix_str(f"{mo} n={n}")
            args = make_problem(mo, n, inputs, batch, steps, dtype)
            fns = {}
            for me in dict.fromkeys(("bptt",) + tuple(methods)):
                why = _skip_reason(mo, me, n, True, dense_max_n, exact_recurrent_max_n)
                if why:
                    skipped.setdefault((mo, me, why), []).append(n)
                    continue
                fns[me] = make_grad_fn(me, mo)
            timed = time_per_step(fns, args, steps, repeats)
            ref = timed["bptt"]
            for me, res in timed.items():
                mem = jax.jit(fns[me]).lower(*args).compile().memory_analysis()
                rows.append(dict(model=mo, method=me, n=n, m=inputs, batch=batch, T=steps,
                                 dtype=jnp.dtype(dtype).name, ms_per_step=res["ms_per_step"],
                                 ms_per_step_min=res["ms_per_step_min"],
                                 ratio_vs_bptt=res["ms_per_step"] / ref["ms_per_step"],
                                 rel_err_vs_bptt=relative_error(res["result"], ref["result"]),
                                 cosine_vs_bptt=cosine(res["result"], ref["result"]),
                                 temp_bytes=int(mem.temp_size_in_bytes), machine=machine))
            bar.update(1)
    bar.close()
    if verbose:
        _print_skipped(skipped)
    if csv_path:
        write_csv(rows, csv_path)
    if png_path:
        plot_speed(rows, png_path, machine, inputs, batch, steps)
    return rows


def accuracy_check(models: Sequence[str] = tuple(MODELS), methods: Sequence[str] = METHODS,
                   n: int = 12, m: int = 10, batch: int = 3, steps: int = 60, seed: int = 1,
                   input_rate: float = 0.3, csv_path: Optional[str] = None) -> List[dict]:
    """Gradient error of every method against BPTT in float64 at a tiny size.

    Runs under `jax.enable_x64(True)`. Exact methods should reach <= 1e-9; e-prop is
    exact where no path mixes neurons and approximate on the recurrent model (its cosine to
    BPTT is reported). Checks that neurons actually spike.

    **Arguments:**

    - `models`, `methods`: which to check.
    - `n`, `m`, `batch`, `steps`: the (tiny) size; `seed`: PRNG seed.
    - `input_rate`: input spike rate (high enough that neurons spike).
    - `csv_path`: where to write rows (skipped if `None`).

    **Returns:**

    Rows `model, method, n, m, batch, T, rel_err_vs_bptt, cosine_vs_bptt, spikes, exact_expected`
    (braintrace rows compare the weights only).
    """
    rows = []
    with jax.enable_x64(True):
        for mo in models:
            args = make_problem(mo, n, m, batch, steps, jnp.float64, seed=seed, input_rate=input_rate)
            spec = MODELS[mo]

            def count(params, states0, xs):
                def body(s, x):
                    s, y = jax.vmap(spec.step, in_axes=(None, 0, 0))(params, s, x)
                    return s, jnp.sum(y)
                return jnp.sum(lax.scan(body, states0, xs)[1])
            spikes = int(jax.jit(count)(*args[:3]))
            ref = jax.jit(make_grad_fn("bptt", mo))(*args)
            for me in methods:
                if me == "bptt":
                    continue
                why = _skip_reason(mo, me, n, True, 10 ** 9, 10 ** 9)
                if why:
                    continue
                g = jax.jit(make_grad_fn(me, mo))(*args)
                exact = exact_expected(mo, me)
                rows.append(dict(model=mo, method=me, n=n, m=m, batch=batch, T=steps,
                                 rel_err_vs_bptt=relative_error(g, ref), cosine_vs_bptt=cosine(g, ref),
                                 spikes=spikes, exact_expected=exact))
    if csv_path:
        write_csv(rows, csv_path)
    return rows
