"""sparseprop: exact online gradients for neuron models written as plain JAX step functions."""
from . import adali, data, event_lif, layers, losses, metrics, neurons, spike_time, surrogates
from .compiling import compiler_options, jit
from .feedback import feedback_matmul
from .api import Carry, OnlineLearner, RunTotal, StepOutput, Traces, Trajectory, bptt_grad, online_grad, simulate
from .surrogates import spike
from .tracer.errors import TracerError
from .tracer.methods import METHODS, Method

__all__ = ["online_grad", "bptt_grad", "simulate", "spike", "OnlineLearner", "Carry", "StepOutput", "RunTotal",
           "Trajectory", "Traces", "TracerError", "feedback_matmul", "jit", "compiler_options", "Method", "METHODS",
           "neurons", "layers", "losses", "metrics", "surrogates", "adali", "spike_time", "event_lif", "data"]
__version__ = "0.1.0"


# submodules imported on first use: their dependencies are extras (nir, plotting) or they are
# needed by few programs (checkpoint, parallel), so `import sparseprop` stays light
_LAZY = ("checkpoint", "nir", "parallel", "plotting")


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'sparseprop' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))

