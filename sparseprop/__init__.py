"""sparseprop: exact online gradients for neuron models written as plain JAX step functions."""
from . import adali, data, neurons, spike_time, surrogates
from .api import Carry, OnlineLearner, RunTotal, StepOutput, Traces, Trajectory, bptt_grad, online_grad, simulate
from .surrogates import spike
from .tracer.errors import TracerError
from .tracer.methods import METHODS, Method

__all__ = ["online_grad", "bptt_grad", "simulate", "spike", "OnlineLearner", "Carry", "StepOutput", "RunTotal",
           "Trajectory", "Traces", "TracerError", "Method", "METHODS", "neurons", "surrogates", "adali", "spike_time", "data"]
__version__ = "0.1.0"
