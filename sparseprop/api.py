"""The user's entry points: `online_grad` (the online learner) and `bptt_grad` (the reference)."""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from .tracer.methods import get_method
from .tracer.program import OnlineProgram
from .validate import check_loss, check_model_output, check_params, check_real


class Carry(NamedTuple):
    """What an online learner carries from one step to the next.

    - `state`: the model state (the user's pytree).
    - `traces`: the eligibility traces, one array per (state leaf, parameter leaf) block,
      or `None` before the first step when `init` was given no example input.
    """
    state: Any
    traces: Any


class StepOutput(NamedTuple):
    """`loss` and `output` of this step; `grads`: this step's d loss_t / d params (history included)."""
    loss: Any
    output: Any
    grads: Any


class RunTotal(NamedTuple):
    """Totals of `run`: summed `loss` and `grads`, and the stacked `outputs`."""
    loss: Any
    grads: Any
    outputs: Any


class OnlineLearner:
    """An online gradient learner for one model; build it with `sparseprop.online_grad`."""

    def __init__(self, model: Callable, loss_fn: Optional[Callable], method="exact"):
        self.model = model
        self.loss_fn = loss_fn
        self.method = get_method(method)
        self._programs = {}

    # -- structure ---------------------------------------------------------
    def program(self, params, state, x) -> OnlineProgram:
        """The traced structure for these shapes (built once per distinct set of shapes)."""
        key = jax.tree_util.tree_structure((params, state, x)), tuple(
            (np.shape(v), jnp.result_type(v)) for v in jax.tree_util.tree_leaves((params, state, x)))
        prog = self._programs.get(key)
        if prog is None:
            check_params(params)
            check_real(params, state)
            check_model_output(self.model, params, state, x)
            prog = OnlineProgram(self.model, self.method, params, state, x)
            self._programs[key] = prog
        return prog

    # -- the online API ----------------------------------------------------
    def init(self, params, state0, x=None) -> Carry:
        """Start a stream from `state0`.

        **Arguments:**

        - `params`: the model parameters (a pytree of float arrays).
        - `state0`: the initial model state; it does not depend on `params`, so every trace starts at zero.
        - `x`: an example input of one step. Needed to fix the traces' shapes now (for
          `lax.scan` over `step`); without it they are created by the first `step`.

        **Returns:**

        A `Carry(state, traces)`.
        """
        if x is None:
            return Carry(state0, None)
        return Carry(state0, self.program(params, state0, x).zero_traces())

    def step(self, params, carry: Carry, x, target) -> tuple:
        """Advance one time step and return this step's gradient.

        **Arguments:**

        - `params`: the parameters (may change between steps, as in online learning).
        - `carry`: from `init` or the previous `step`.
        - `x`, `target`: this step's input and target (`target` is passed to `loss_fn`).

        **Returns:**

        `(carry, StepOutput(loss, output, grads))`; `grads` is a pytree like `params`.
        """
        self._need_loss("step")

        def loss(y, i=None):
            value = self.loss_fn(y, target)
            check_loss(value)
            return value
        return self._advance(params, carry, x, loss)

    def signal_step(self, params, carry: Carry, x, output_signal) -> tuple:
        """Advance one step with an external learning signal on the output instead of a loss.

        The gradient is that of `<output_signal, y>`: pass the true d loss / d y and you get
        the loss's gradient; pass a reward-weighted or random-feedback signal for
        three-factor and feedback-alignment rules. Works without a `loss_fn`.

        **Arguments:**

        - `params`, `carry`, `x`: as for `step`.
        - `output_signal`: a pytree like the model's output `y` (a cotangent).

        **Returns:**

        `(carry, StepOutput(loss=<signal, y>, output=y, grads))`.
        """
        def loss(y, i=None):
            pairs = zip(jax.tree_util.tree_leaves(y), jax.tree_util.tree_leaves(output_signal))
            return sum(jnp.vdot(a, jax.lax.stop_gradient(b)) for a, b in pairs)
        return self._advance(params, carry, x, loss)

    def apply_signal(self, params, carry: Carry, state_signal):
        """Parameter updates from a per-neuron modulatory signal and the current eligibility traces.

        Returns Σ_a signal_a · d state_a / d params, with the traces of `carry` (the state
        after the last step): the three-factor rule Δθ = L ⊙ e. Leaves of `state_signal`
        that are None get no signal.

        **Arguments:**

        - `params`: the parameters (for their shapes).
        - `carry`: a carry whose traces have been built (after at least one step, or `init` with `x`).
        - `state_signal`: a pytree like the state (e.g. a learning signal per neuron).

        **Returns:**

        A pytree like `params`.
        """
        if carry.traces is None:
            raise ValueError("carry has no traces yet: call init(params, state0, x) or take a step first")
        prog = self._any_program(params, carry)
        leaves = jax.tree_util.tree_flatten(state_signal, is_leaf=lambda v: v is None)[0]
        if len(leaves) != len(prog.s_avals):
            raise ValueError(f"state_signal must have the state's structure ({len(prog.s_avals)} leaves); "
                             f"got {len(leaves)}")
        signals = [None if leaves[i] is None else jnp.asarray(leaves[i]) for i in prog.diff_states]
        grads = prog.contract(signals, carry.traces, jax.tree_util.tree_leaves(params))
        return jax.tree_util.tree_unflatten(prog.p_def, grads)

    def eligibility(self, params, carry: Carry):
        """The eligibility traces, named: `{(state leaf, parameter leaf): (kind, array)}`.

        **Arguments:**

        - `params`, `carry`: as for `apply_signal`.

        **Returns:**

        A dict; a "synaptic eligibility" array e[i, ..., l] has the state leaf's shape
        followed by the parameter's presynaptic axes (see `explain()`).
        """
        from .explain import block_kind
        prog = self._any_program(params, carry)
        return {(prog.state_names[b.state], prog.param_names[b.param]):
                (block_kind(b.spec, len(prog.p_avals[b.param].shape), b.via), T)
                for b, T in zip(prog.blocks, carry.traces)}

    def _any_program(self, params, carry):
        for prog in self._programs.values():
            shapes = [np.shape(v) for v in jax.tree_util.tree_leaves(carry.traces)]
            if shapes == [b.shape for b in prog.blocks]:
                return prog
        raise ValueError("no traced program matches this carry: take a step with these params first")

    def _advance(self, params, carry: Carry, x, loss, batched=False):
        first = (lambda tree: jax.tree_util.tree_map(lambda v: v[0], tree)) if batched else (lambda t: t)
        prog = self.program(params, first(carry.state), first(x))
        traces = carry.traces
        if traces is None:
            traces = prog.zero_traces()
            if batched:
                batch = jax.tree_util.tree_leaves(x)[0].shape[0]
                traces = tuple(jnp.broadcast_to(t, (batch,) + t.shape) for t in traces)
        p = jax.tree_util.tree_leaves(params)
        s = jax.tree_util.tree_leaves(carry.state)
        xs = jax.tree_util.tree_leaves(x)

        new_s, new_traces, value, y, grads = prog.step(p, s, traces, xs, loss, batched)
        new_state = jax.tree_util.tree_unflatten(prog.s_def, new_s)
        grads = jax.tree_util.tree_unflatten(prog.p_def, grads)
        return Carry(new_state, new_traces), StepOutput(value, y, grads)

    def step_batch(self, params, carry: Carry, x, target) -> tuple:
        """`step` for a batch (leading axis of state, traces, `x`, `target`), gradients summed.

        Equal to summing `jax.vmap(step, in_axes=(None, 0, 0, 0))` over the batch, but
        the sum over examples is folded into one contraction per parameter (as in BPTT),
        which is much faster than forming per-example gradients.

        **Arguments:**

        - `params`: shared parameters; `carry`: from `init_batch` or the previous call.
        - `x`, `target`: this step's batch of inputs and targets.

        **Returns:**

        `(carry, StepOutput(loss summed over the batch, outputs, grads summed over the batch))`.
        """
        self._need_loss("step_batch")

        def loss(y, i):
            value = self.loss_fn(y, jax.tree_util.tree_map(lambda t: t[i], target))
            check_loss(value)
            return value
        return self._advance(params, carry, x, loss, batched=True)

    def init_batch(self, params, states0, x=None) -> Carry:
        """`init` for a batch of initial states (leading axis); `x`: a batch of example inputs."""
        if x is None:
            return Carry(states0, None)
        return jax.vmap(lambda s, xx: self.init(params, s, xx))(states0, x)

    def run_batch(self, params, carry: Carry, xs, targets, time_major: bool = False) -> tuple:
        """`run` for a batch: `xs` and `targets` are (batch, time, ...); gradients summed over both.

        **Arguments:**

        - `params`, `carry`: as for `run`, the carry from `init_batch`.
        - `xs`, `targets`: (batch, time, ...) leaves, or (time, batch, ...) with `time_major`.

        **Returns:**

        `(carry, RunTotal(loss, grads, outputs))`, outputs laid out like `xs`.
        """
        swap = (lambda tree: tree) if time_major else (
            lambda tree: jax.tree_util.tree_map(lambda v: jnp.swapaxes(v, 0, 1), tree))
        carry, total = self._scan(params, carry, swap(xs), swap(targets), self.step_batch)
        return carry, RunTotal(total.loss, total.grads, swap(total.outputs))

    def run(self, params, carry: Carry, xs, targets) -> tuple:
        """Scan `step` over the leading time axis of `xs` and `targets`.

        **Arguments:**

        - `params`: the parameters (held fixed during the run).
        - `carry`: from `init` or an earlier `run` (runs chain: two chunks equal one run).
        - `xs`, `targets`: pytrees whose leaves have a leading time axis.

        **Returns:**

        `(carry, RunTotal(loss, grads, outputs))` with summed loss and gradients.
        """
        return self._scan(params, carry, xs, targets, self.step)

    def _scan(self, params, carry, xs, targets, step):
        if carry.traces is None:   # fix the traces' shapes before the scan
            x0 = jax.tree_util.tree_map(lambda v: v[0], xs)
            t0 = jax.tree_util.tree_map(lambda v: v[0], targets)
            shapes = jax.eval_shape(lambda: step(params, carry, x0, t0)[0].traces)
            carry = Carry(carry.state, jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), shapes))
        zero = jax.tree_util.tree_map(jnp.zeros_like, params)

        def body(acc, inputs):
            c, loss, grads = acc
            x, target = inputs
            c, out = step(params, c, x, target)
            grads = jax.tree_util.tree_map(jnp.add, grads, out.grads)
            return (c, loss + out.loss, grads), out.output

        loss0 = jnp.zeros((), jnp.result_type(*jax.tree_util.tree_leaves(params)))
        (carry, loss, grads), outputs = jax.lax.scan(body, (carry, loss0, zero), (xs, targets))
        return carry, RunTotal(loss, grads, outputs)

    # -- reports -------------------------------------------------------------
    def explain(self, params, state0, x0, print_report: bool = True):
        """What the tracer derived for this model: per parameter, each trace block's kind,
        shape, bytes and update rule, and every term the method drops with its source line.

        **Arguments:**

        - `params`, `state0`, `x0`: example parameters, state and one step's input.
        - `print_report`: also print the report.

        **Returns:**

        An `Explanation` (its `str` is the printed report).
        """
        from .explain import explain
        report = explain(self.program(params, state0, x0))
        if print_report:
            print(report)
        return report

    def is_exact(self, params, state0, x0) -> bool:
        """Whether this learner's gradient equals BPTT for this model (no term dropped)."""
        prog = self.program(params, state0, x0)
        return self.method.exact or not (prog.cuts or prog.truncated)

    def _need_loss(self, what):
        if self.loss_fn is None:
            raise ValueError(f"learner.{what} needs a loss_fn; without one, use the learning-signal "
                             f"API: learner.signal_step, learner.apply_signal, learner.eligibility")


def online_grad(model: Callable, loss_fn: Optional[Callable] = None, method="exact") -> OnlineLearner:
    """An online learner that returns, at every step, the gradient of that step's loss.

    **Arguments:**

    - `model`: `model(params, state, x) -> (new_state, y)` for one example (no batch axis).
    - `loss_fn`: `loss_fn(y, target) -> scalar`; the sequence loss is the sum over steps.
      May be None for three-factor learning with external signals.
    - `method`: `"exact"` (RTRL, Williams & Zipser 1989: equals BPTT), `"eprop"` (e-prop,
      Bellec et al. 2020: recurrent neuron-mixing paths cut in the whole step), `"ostl"`
      (every mixing path cut from the traces, learning signal through the true step; after
      Bohnstingl et al. 2022), `"snap1"` (SnAp-1, Menick et al. 2020), or a
      `sparseprop.tracer.methods.Method`. What a method drops is reported by `explain()`.

    **Returns:**

    An `OnlineLearner` with `init`, `step`, `run`, `explain` and `is_exact`, and for
    external learning signals `signal_step`, `apply_signal` and `eligibility`.
    """
    return OnlineLearner(model, loss_fn, method)


def bptt_grad(model: Callable, loss_fn: Callable) -> Callable:
    """The reference: backpropagation through time over a `lax.scan` of the model.

    **Arguments:**

    - `model`, `loss_fn`: as for `online_grad`.

    **Returns:**

    `f(params, state0, xs, targets) -> (loss, grads)`, the summed loss and its gradient.
    """
    def total_loss(params, state0, xs, targets):
        def body(state, inputs):
            x, target = inputs
            state, y = model(params, state, x)
            return state, loss_fn(y, target)
        _, losses = jax.lax.scan(body, state0, (xs, targets))
        return jnp.sum(losses)

    def f(params, state0, xs, targets):
        check_params(params)
        return jax.value_and_grad(total_loss)(params, state0, xs, targets)
    return f
