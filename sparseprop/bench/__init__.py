"""Benchmarks: memory and speed of online gradients against BPTT, checkpointed BPTT, dense
RTRL and braintrace, on four LIF-family neuron models.

Every method is turned into one jitted function `grad_fn(params, states0, xs, targets)`
returning the loss gradient summed over a batch (`states0` has a leading batch axis B,
`xs` and `targets` are time-major, `(T, B, ...)`). Per point we measure

- `temp_bytes`: XLA's compiled temporary buffer size (`memory_analysis()`), from a
  compile only (abstract inputs, nothing allocated), cheap even for T = 25600;
- `ms_per_step`: median wall time of >= 5 runs after warm-up, divided by T;
- `rel_err`: max-over-leaves relative error of the gradient against BPTT;
- `rss_*`: peak resident memory (`getrusage` maxrss) of a child process running one point.

Timings on a shared machine are noisy: compare methods measured side by side in one
run (the sweeps interleave repeats round-robin), never numbers from different runs.

One module per job:

- `problems`: the models, the method names and random spike problems;
- `peers`: the gradient function of every method (BPTT, checkpointing, online, dense RTRL, braintrace);
- `timing`: side-by-side timing and gradient error measures;
- `memory`: compiled temp bytes and peak RSS of a child process;
- `sweeps`: `memory_sweep`, `speed_sweep`, `accuracy_check`;
- `report`: CSV and figures;
- `hlo`: bytes a compiled time loop moves per step (from the optimised HLO) and the
  streaming bandwidth, for a bandwidth floor on the time per step.

The scripts in `benchmarks/` and `sparseprop bench` wrap the sweeps; the figures and the
progress bar need the bench extra (`pip install -e ".[bench]"`: matplotlib, tqdm, braintrace).
"""
from __future__ import annotations

import importlib.util

from .hlo import loop_body_bytes, streaming_bandwidth
from .memory import peak_rss, temp_bytes
from .peers import braintrace_available, checkpoint_chunk_size, make_grad_fn
from .problems import METHODS, MODELS, ModelSpec, exact_expected, make_problem, mse_loss
from .report import plot_memory, plot_speed, write_csv
from .sweeps import DEFAULT_N, DEFAULT_T, accuracy_check, memory_growth, memory_sweep, speed_sweep
from .timing import cosine, machine_label, relative_error, time_per_step

__all__ = ["MODELS", "METHODS", "ModelSpec", "make_problem", "make_grad_fn", "mse_loss", "exact_expected",
           "checkpoint_chunk_size", "temp_bytes", "time_per_step", "relative_error", "cosine", "peak_rss",
           "memory_sweep", "memory_growth", "speed_sweep", "accuracy_check", "machine_label",
           "braintrace_available", "write_csv", "plot_memory", "plot_speed", "DEFAULT_T", "DEFAULT_N",
           "missing_extras", "loop_body_bytes", "streaming_bandwidth"]

#: What `sparseprop bench` needs beyond the core install (braintrace is optional: its methods are skipped).
REQUIRED = ("matplotlib", "tqdm")


def missing_extras(modules=REQUIRED) -> list:
    """The modules of the bench extra that are not installed (checked without importing them).

    **Arguments:**

    - `modules`: module names to look for (default: matplotlib and tqdm).

    **Returns:**

    A list of the missing names, empty when all are present; install them with
    `pip install -e ".[bench]"`.
    """
    def absent(name):
        try:
            return importlib.util.find_spec(name) is None
        except ValueError:        # a module blocked by sys.modules[name] = None
            return True
    return [m for m in modules if absent(m)]
