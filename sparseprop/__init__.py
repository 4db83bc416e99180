"""sparseprop: exact online gradients for neuron models written as plain JAX step functions."""
from . import adali, data, event_lif, neurons, spike_time, surrogates
from .api import Carry, OnlineLearner, RunTotal, StepOutput, bptt_grad, online_grad
from .surrogates import spike
from .tracer.errors import TracerError
from .tracer.methods import METHODS, Method

__all__ = ["online_grad", "bptt_grad", "spike", "OnlineLearner", "Carry", "StepOutput", "RunTotal",
           "TracerError", "Method", "METHODS", "neurons", "surrogates", "adali", "spike_time", "event_lif", "data"]
__version__ = "0.1.0"
