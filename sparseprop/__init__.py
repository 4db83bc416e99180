"""sparseprop: exact online gradients for neuron models written as plain JAX step functions."""
from .api import Carry, OnlineLearner, RunTotal, StepOutput, bptt_grad, online_grad
from .surrogates import spike
from .tracer.errors import TracerError

__all__ = ["online_grad", "bptt_grad", "spike", "OnlineLearner", "Carry", "StepOutput", "RunTotal",
           "TracerError"]
__version__ = "0.1.0"
