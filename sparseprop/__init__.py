"""sparseprop: exact online gradients for neuron models written as plain JAX step functions."""
from . import adali, data, event_lif, neurons, spike_time, surrogates
from .feedback import feedback_matmul
from .api import Carry, OnlineLearner, RunTotal, StepOutput, Traces, Trajectory, bptt_grad, online_grad, simulate
from .surrogates import spike
from .tracer.errors import TracerError
from .tracer.methods import METHODS, Method

__all__ = ["online_grad", "bptt_grad", "simulate", "spike", "OnlineLearner", "Carry", "StepOutput", "RunTotal",
           "Trajectory", "Traces", "TracerError", "feedback_matmul", "Method", "METHODS", "neurons", "surrogates", "adali", "spike_time", "event_lif", "data"]
__version__ = "0.1.0"


def __getattr__(name):
    # optional parts whose dependencies are extras: imported on first use
    if name in ("nir", "plotting"):
        import importlib
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'sparseprop' has no attribute {name!r}")

