"""The user's entry points: `online_grad` (the online learner), `bptt_grad` (the reference)
and `simulate` (the forward pass alone).

Shapes: a model is written for one example and one time step. Sequences are time-major:
every leaf of `xs` and `targets` has a leading time axis `T` (`(T, ...)`); batched calls put
a batch axis `B` before it (`run_batch`: `(B, T, ...)`, or `(T, B, ...)` with `time_major`).
Gradients have the dtypes of the parameters.

Sources: real-time recurrent learning (RTRL), Williams & Zipser, "A learning algorithm for
continually running fully recurrent neural networks", Neural Computation 1989; e-prop,
Bellec et al., "A solution to the learning dilemma for recurrent networks of spiking
neurons", Nature Communications 2020.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from .tracer.methods import get_method
from .tracer.program import OnlineProgram
from .tracer.records import Plan
from .validate import (call_loss, check_carry, check_finite, check_model_output, check_params, check_real,
                       check_traces, describe_leaves, leaf_text, match_state_signal)


class Carry(NamedTuple):
    """What an online learner carries from one step to the next (a pytree: it jits, scans,
    vmaps and serialises).

    - `state`: the model state (the user's pytree; with a batch axis first for `step_batch`).
    - `traces`: the eligibility traces (`Traces`, a tuple with one array per (state leaf,
      parameter leaf) block, see `learner.eligibility`), or `None` before the first step when
      `init` was given no example input.
    """
    state: Any
    traces: Any


@jax.tree_util.register_pytree_node_class
class Traces(tuple):
    """The trace arrays of a carry, tagged (as static pytree data) with the layout of the
    program that made them, so that a carry handed to another learner is refused instead of
    silently misread. Behaves as a tuple of arrays."""

    def __new__(cls, arrays, tag=None):
        self = super().__new__(cls, arrays)
        self.tag = tag
        return self

    def tree_flatten(self):
        return tuple(self), self.tag

    @classmethod
    def tree_unflatten(cls, tag, arrays):
        return cls(arrays, tag)

    def __repr__(self):
        return f"Traces({tuple.__repr__(self)})"


class Trajectory(NamedTuple):
    """What `simulate` returns.

    - `state`: the state after the last step (the model's state pytree).
    - `states`: the state after every step, leaves `(T, ...)`; None with `keep_states=False`.
    - `outputs`: the output of every step, leaves `(T, ...)`.
    """
    state: Any
    states: Any
    outputs: Any


class StepOutput(NamedTuple):
    """One step's result: `loss` (a scalar), `output` (the model's `y`) and `grads`, this step's
    d loss_t / d params with the whole history included (a pytree like `params`, same dtypes)."""
    loss: Any
    output: Any
    grads: Any


class RunTotal(NamedTuple):
    """Totals of `run`: `loss` and `grads` summed over the steps (grads in the params' dtypes),
    and `outputs`, every step's output stacked along a leading time axis `(T, ...)`."""
    loss: Any
    grads: Any
    outputs: Any


class OnlineLearner:
    """An online gradient learner for one model; build it with `sparseprop.online_grad`.

    A learner is stateless apart from a cache of traced programs (one per set of shapes and
    dtypes): everything that changes along a stream lives in the `Carry` it returns, so its
    methods jit, scan and vmap.
    """

    def __init__(self, model: Callable, loss_fn: Optional[Callable], method="exact", check_finite: bool = False):
        self.model = model
        self.loss_fn = loss_fn
        self.method = get_method(method)
        self.check_finite = bool(check_finite)
        self._programs = {}

    def __repr__(self):
        cuts = _METHOD_CUTS.get(self.method.name, self.method.description.split(":")[0])
        loss = "None (learning signals only)" if self.loss_fn is None else _name(self.loss_fn)
        finite = ", check_finite=True" if self.check_finite else ""
        return (f"OnlineLearner(model={_name(self.model)}, method={self.method.name!r}: {cuts}, "
                f"loss_fn={loss}{finite})")

    # -- structure ---------------------------------------------------------
    def program(self, params, state, x) -> OnlineProgram:
        """The traced structure for these shapes (built once per distinct set of shapes).

        **Raises:**

        `TypeError` / `ValueError` for parameters, states or model outputs that break the
        contract, and `sparseprop.TracerError` for an operation the tracer cannot turn into
        a correct online program.
        """
        key = jax.tree_util.tree_structure((params, state, x)), tuple(
            (np.shape(v), jnp.result_type(v)) for v in jax.tree_util.tree_leaves((params, state, x)))
        prog = self._programs.get(key)
        if prog is None:
            check_params(params)
            check_real(params, state)
            check_model_output(self.model, params, state, x)
            # without a loss, an external signal may meet any state leaf: keep every trace
            prog = OnlineProgram(self.model, self.method, params, state, x,
                                 keep_all_traces=self.loss_fn is None)
            self._programs[key] = prog
        return prog

    def plan(self, params, state, x) -> Plan:
        """What the tracer derived for these shapes: the frozen `Plan` (trace blocks and their
        storage kinds, cuts, probes, the learning-signal form, bytes moved per step), which
        `explain()` reports.

        **Raises:**

        As `program`.
        """
        return self.program(params, state, x).plan

    def _traces(self, prog, arrays) -> Traces:
        return Traces(tuple(arrays), prog.plan.layout_tag)

    # -- the online API ----------------------------------------------------
    def init(self, params, state0, x=None) -> Carry:
        """Start a stream from `state0`.

        The carry holds copies of `state0`'s arrays, never the arrays themselves, so a step
        jitted with `donate_argnums=1` leaves the caller's `state0` usable for the next stream.

        **Arguments:**

        - `params`: the model parameters (a pytree of float arrays).
        - `state0`: the initial model state (one example, no batch axis); it does not depend on
          `params`, so every trace starts at zero.
        - `x`: an example input of one step (only its shapes and dtypes are used). Needed to fix
          the traces' shapes now (for `lax.scan` over `step`); without it they are created by
          the first `step`.

        **Returns:**

        A `Carry(state, traces)`.

        **Raises:**

        As `program` when `x` is given (the model is traced now).
        """
        state0 = _copy(state0)
        if x is None:
            return Carry(state0, None)
        prog = self.program(params, state0, x)
        return Carry(state0, self._traces(prog, prog.zero_traces()))

    def init_batch(self, params, states0, x=None, batch_size: Optional[int] = None) -> Carry:
        """`init` for a batch: the carry of `step_batch` / `run_batch`.

        **Arguments:**

        - `params`: as for `init`.
        - `states0`: initial states with a leading batch axis `(B, ...)`; or, with `batch_size`,
          ONE example's state, copied to every example.
        - `x`: an example input: a batch `(B, ...)`, or one example's input with `batch_size`.
        - `batch_size`: the batch size `B` when `states0` (and `x`) are unbatched.

        **Returns:**

        A `Carry` whose state and traces have a leading batch axis.

        **Raises:**

        `ValueError` for a `batch_size` below 1, or with `batch_size`, an `x` that is a batch
        where one example's input is expected; as `program` when `x` is given.
        """
        if batch_size is not None:
            B = int(batch_size)
            if B < 1:
                raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
            if x is not None:
                self._one_example_input(params, states0, x, B)
            states0 = jax.tree_util.tree_map(lambda v: jnp.broadcast_to(v, (B,) + jnp.shape(v)), states0)
            if x is not None:
                x = jax.tree_util.tree_map(lambda v: jnp.broadcast_to(v, (B,) + jnp.shape(v)), x)
        states0 = _copy(states0)
        if x is None:
            return Carry(states0, None)
        return jax.vmap(lambda s, xx: self.init(params, s, xx))(states0, x)

    def _one_example_input(self, params, state0, x, B):
        """With `batch_size`, `init_batch` copies one example's `x`: trace the model on it now, and
        when it fails on an `x` that is a batch (works on `x[0]`), say so instead of the model's error."""
        try:
            self.program(params, state0, x)
        except (TypeError, ValueError) as e:
            leaves = jax.tree_util.tree_leaves(x)
            if leaves and all(np.ndim(v) >= 1 and np.shape(v)[0] == B for v in leaves):
                try:
                    self.program(params, state0, jax.tree_util.tree_map(lambda v: v[0], x))
                except (TypeError, ValueError):
                    raise e from None
                raise ValueError(
                    f"init_batch(..., x, batch_size={B}) got an x with a leading batch axis of {B} "
                    f"({', '.join(leaf_text(v) for v in leaves)}): with batch_size, x is ONE "
                    f"example's input (it is copied to every example). Pass x[0], or drop batch_size "
                    f"and pass batched states0 and x.") from None
            raise

    def step(self, params, carry: Carry, x, target) -> tuple:
        """Advance one time step and return this step's gradient.

        **Arguments:**

        - `params`: the parameters (may change between steps, as in online learning).
        - `carry`: from `init` or the previous `step`.
        - `x`, `target`: this step's input (one example, no time axis; None for a network
          without input) and target (passed to `loss_fn`).

        **Returns:**

        `(carry, StepOutput(loss, output, grads))`; `grads` is a pytree like `params` (same dtypes).

        **Raises:**

        `ValueError` without a `loss_fn`; `TypeError` / `ValueError` for a carry that is None,
        not a `Carry`, or built by another learner, method or set of shapes; as `program`
        for a model the tracer cannot handle; an error inside `loss_fn` (e.g. a target of the
        wrong shape) is raised again naming the output's and the target's shapes. With
        `check_finite`, a checkify error naming the first non-finite quantity (see
        `online_grad`).
        """
        self._need_loss("step")
        return self._loss_step(params, carry, x, target, batched=False)

    def _loss_step(self, params, carry, x, target, batched, index=None):
        if self.check_finite:
            check_finite([("the target", target)], "entering the step", index)
        if batched:
            check_carry(carry, Carry)
            self._batch_size(params, carry, [("x", x, 0), ("target", target, 0)], _first(x))
            def loss(y, i):
                return call_loss(self.loss_fn, y, jax.tree_util.tree_map(lambda t: t[i], target))
        else:
            def loss(y, i=None):
                return call_loss(self.loss_fn, y, target)
        return self._advance(params, carry, x, loss, batched, index)

    def signal_step(self, params, carry: Carry, x, output_signal) -> tuple:
        """Advance one step with an external learning signal on the output instead of a loss.

        The gradient is that of `<output_signal, y>`: pass the true d loss / d y and you get
        the loss's gradient; pass a reward-weighted or random-feedback signal for
        three-factor and feedback-alignment rules. Works without a `loss_fn`.

        When the signal depends on this step's output (REINFORCE, an environment's feedback,
        an error computed from y), pass a function `signal_fn(y) -> output_signal`: it is
        called on this step's output (held constant, no gradient flows through it) and the
        step runs once.

        **Arguments:**

        - `params`, `carry`, `x`: as for `step`.
        - `output_signal`: a pytree like the model's output `y` (a cotangent, e.g. float32
          `(n_out,)` for a readout of `n_out` units), or a function `y -> such a pytree`.

        **Returns:**

        `(carry, StepOutput(loss=<signal, y>, output=y, grads))`.

        **Raises:**

        As `step` (no `loss_fn` needed).
        """
        signal_fn = output_signal if callable(output_signal) else None

        def loss(y, i=None):
            signal = signal_fn(jax.lax.stop_gradient(y)) if signal_fn is not None else output_signal
            if self.check_finite:
                check_finite([("the output signal", signal)], "in this step")
            pairs = zip(jax.tree_util.tree_leaves(y), jax.tree_util.tree_leaves(signal))
            return sum(jnp.vdot(a, jax.lax.stop_gradient(b)) for a, b in pairs)
        return self._advance(params, carry, x, loss)

    def apply_signal(self, params, carry: Carry, state_signal):
        """Parameter updates from a per-neuron modulatory signal and the current eligibility traces.

        Returns Σ_a signal_a · d state_a / d params, with the traces of `carry` (the state
        after the last step): the three-factor rule Δθ = L ⊙ e.

        **Arguments:**

        - `params`: the parameters (for their shapes).
        - `carry`: a carry whose traces have been built (after at least one step, or `init` with `x`).
        - `state_signal`: a pytree with the state's structure: one array per state leaf,
          shaped like it (or broadcastable to it, e.g. a scalar reward), or `None` for a
          leaf or a whole subtree that gets no signal.

        **Returns:**

        A pytree like `params`.

        **Raises:**

        `ValueError` when `state_signal` does not have the state's structure (naming the keys
        that differ) or a leaf's shape does not fit, or the carry has no traces yet.
        """
        check_carry(carry, Carry)
        if carry.traces is None:
            raise ValueError("carry has no traces yet: call init(params, state0, x) or take a step first")
        prog = self._any_program(params, carry)
        names = prog.plan.block_names
        try:
            check_traces(carry.traces, prog.plan.blocks, names, prog.plan.layout_tag)
        except ValueError as e:
            raise ValueError(f"{e} For a batched carry (init_batch), vmap it: "
                             f"jax.vmap(learner.apply_signal, in_axes=(None, 0, 0)).") from None
        signals = match_state_signal(state_signal, carry.state)
        dropped = sorted({prog.plan.state_names[a] for a, _ in prog.plan.pruned if signals[a] is not None})
        if dropped:
            raise ValueError(f"this learner does not carry the traces of {', '.join(dropped)}: its loss "
                             f"never reads them. For three-factor rules, build it without a loss "
                             f"(online_grad(model, None, ...)), which keeps every trace.")
        grads = prog.contract([signals[i] for i in prog.plan.step.diff_states], tuple(carry.traces),
                             jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(carry.state))
        return jax.tree_util.tree_unflatten(prog.plan.step.p_def, grads)

    def reset_traces(self, params, carry: Carry, restart) -> Carry:
        """Restart the eligibility traces of some parameter entries at zero (e.g. synapses that
        deep rewiring, Bellec et al. 2018, removed and drew anew: a new synapse has no history).

        **Arguments:**

        - `params`: the parameters (for the program's shapes).
        - `carry`: a carry of this learner (from `init`, `init_batch` or a step).
        - `restart`: a pytree with the structure of `params` whose leaves are boolean arrays of
          the parameter's shape (True: that entry's traces restart) or None (none restarts).

        **Returns:**

        The carry with those traces set to zero; the state is unchanged.

        **Raises:**

        `ValueError` when the carry has no traces, `restart` does not have the parameters'
        structure or shapes, or a trace shares one entry between entries that `restart`
        separates (a factorised trace).
        """
        check_carry(carry, Carry)
        if carry.traces is None:
            raise ValueError("carry has no traces yet: call init(params, state0, x) or take a step first")
        prog = self._any_program(params, carry)
        try:
            leaves = jax.tree_util.tree_structure(params).flatten_up_to(restart)
        except (ValueError, TypeError) as e:
            raise ValueError(f"restart must have the structure of params (a boolean array or None per "
                             f"parameter leaf): {e}") from None
        for name, where, aval in zip(prog.plan.param_names, leaves, prog.plan.p_avals):
            if where is not None and np.shape(where) != tuple(aval.shape):
                raise ValueError(f"restart for {name} has shape {np.shape(where)}; the parameter has "
                                 f"shape {tuple(aval.shape)}")
        from .tracer.emit import reset_traces
        traces = reset_traces(prog.plan, tuple(carry.traces), leaves)
        return carry._replace(traces=self._traces(prog, traces))

    def eligibility(self, params, carry: Carry):
        """The eligibility traces, named: `{(state leaf, parameter leaf): (kind, array)}`.

        **Arguments:**

        - `params`, `carry`: as for `apply_signal`.

        **Returns:**

        A dict; a "synaptic eligibility" array e[i, ..., l] has the state leaf's shape
        followed by the parameter's presynaptic axes (see `explain()`). A block recomputed from
        others (an intra-step chain: its coefficients are what the carry holds) is given as
        its value, except behind a filtered readout, where it is the carried coefficients.

        **Raises:**

        `ValueError` when no program of this learner matches the carry.
        """
        from .tracer.emit import edge_posts, expand
        check_carry(carry, Carry)
        prog = self._any_program(params, carry)
        blocks, traces = prog.plan.blocks, tuple(carry.traces)
        batched = any(np.ndim(T) > len(b.shape) for b, T in zip(blocks, traces))
        states = jax.tree_util.tree_leaves(carry.state)
        us = edge_posts(prog.plan, jax.tree_util.tree_leaves(params), [v[0] for v in states] if batched else states)
        values = jax.vmap(lambda t: expand(prog.plan, t, us))(traces) if batched else expand(prog.plan, traces, us)
        return {(prog.plan.state_names[b.state], prog.plan.param_names[b.param]): (b.kind, T if v is None else v)
                for b, T, v in zip(blocks, traces, values)}

    def simulate(self, params, state0, xs, keep_states: bool = True) -> "Trajectory":
        """The model's forward pass over a sequence, without gradients or traces (for evaluation).

        Same as `sparseprop.simulate(learner.model, params, state0, xs, keep_states)`.
        """
        return simulate(self.model, params, state0, xs, keep_states)

    def _any_program(self, params, carry):
        tag = getattr(carry.traces, "tag", None)
        shapes = [np.shape(v) for v in carry.traces]
        for prog in self._programs.values():
            if (tag is not None and tag == prog.plan.layout_tag) or (
                    tag is None and shapes == [tuple(b.shape) for b in prog.plan.blocks]):
                return prog
        raise ValueError("no traced program of this learner matches this carry: take a step with these "
                         "params first, or use the carry of this learner (a carry belongs to the learner, "
                         "method and shapes that built it)")

    def _batch_size(self, params, carry, checks=(), x_one=None, layout="(B, ...)") -> int:
        """The batch size `B` of a batched carry, checked against the batch axis of the inputs.

        **Arguments:**

        - `checks`: `[(name, pytree, batch axis)]`, e.g. `[("xs", xs, 0), ("targets", targets, 0)]`.
        - `x_one`: one example's input of one step, to recognise a carry made by `init`.
        - `layout`: the leaves' layout, for messages.

        **Raises:**

        `ValueError` for a carry made by `init` (one example), and naming the leaf whose batch
        axis differs from the carry's batch size.
        """
        state = jax.tree_util.tree_flatten_with_path(carry.state)[0]
        sizes = {np.shape(v)[0] if np.ndim(v) else None for _, v in state}
        uniform = len(sizes) == 1 and None not in sizes
        B = next(iter(sizes)) if uniform else None
        bad = [(name + jax.tree_util.keystr(path), np.shape(v)) for name, tree, axis in checks
               for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]
               if np.ndim(v) <= axis or np.shape(v)[axis] != B]
        if uniform and not bad:
            return B
        if self._one_example_carry(params, carry, x_one):
            raise ValueError(
                f"this carry was made by init (one example): its state has no batch axis "
                f"({describe_leaves(state)}). The batched methods (step_batch, run_batch) need "
                f"the carry of init_batch: learner.init_batch(params, states0, x0) with (B, ...) "
                f"states, or learner.init_batch(params, state0, x0, batch_size=B) from one "
                f"example's state.")
        if not uniform:
            raise ValueError(f"a batched carry's state leaves all have a leading batch axis of one size; "
                             f"this carry's state has {describe_leaves(state)}: build it with init_batch")
        raise ValueError(
            f"the carry holds a batch of B={B} examples (init_batch), but "
            + ", ".join(f"{name} has shape {list(shape)}" for name, shape in bad)
            + f": the batched methods take leaves {layout} with B={B}. For one example, use the "
              f"unbatched methods (step, run) with a carry from init.")

    def _one_example_carry(self, params, carry, x_one) -> bool:
        """Whether the model runs on this carry's state with one example's input (a carry of `init`)."""
        try:
            prog = self.program(params, carry.state, x_one)
            if carry.traces is not None:
                check_traces(carry.traces, prog.plan.blocks, prog.plan.block_names, prog.plan.layout_tag)
        except Exception:
            return False
        return True

    def _advance(self, params, carry: Carry, x, loss, batched=False, index=None):
        check_carry(carry, Carry)
        batch_shape = ()
        if batched:
            batch_shape = (self._batch_size(params, carry),)    # x and target: checked by _loss_step
        first = _first if batched else (lambda tree: tree)
        prog = self.program(params, first(carry.state), first(x))
        traces = carry.traces
        if traces is None:
            traces = prog.zero_traces()
            if batched:
                traces = tuple(jnp.broadcast_to(t, batch_shape + t.shape) for t in traces)
        else:
            names = prog.plan.block_names
            check_traces(traces, prog.plan.blocks, names, prog.plan.layout_tag, batch_shape)
        if self.check_finite:
            # the carried traces are not checked again: the step that made them did
            check_finite([("the input x", x), ("params", params), ("the carried state", carry.state)],
                         "entering the step", index)
        p = jax.tree_util.tree_leaves(params)
        s = jax.tree_util.tree_leaves(carry.state)
        xs = jax.tree_util.tree_leaves(x)

        new_s, new_traces, value, y, grads = prog.step(p, s, tuple(traces), xs, loss, batched)
        new_state = jax.tree_util.tree_unflatten(prog.plan.step.s_def, new_s)
        grads = jax.tree_util.tree_unflatten(prog.plan.step.p_def, grads)
        if self.check_finite:
            check_finite([("the loss", value), ("the output", y), ("the new state", new_state),
                          ("the new traces", tuple(new_traces)), ("the gradient", grads)],
                         "after the step", index)
        return Carry(new_state, self._traces(prog, new_traces)), StepOutput(value, y, grads)

    def step_batch(self, params, carry: Carry, x, target) -> tuple:
        """`step` for a batch (leading axis of state, traces, `x`, `target`), gradients summed.

        Equal to summing `jax.vmap(step, in_axes=(None, 0, 0, 0))` over the batch, but
        the sum over examples is folded into one contraction per parameter (as in BPTT),
        which is much faster than forming per-example gradients.

        **Arguments:**

        - `params`: shared parameters; `carry`: from `init_batch` or the previous call.
        - `x`, `target`: this step's batch of inputs and targets, leaves `(B, ...)` (`x` may
          be None for a network without input).

        **Returns:**

        `(carry, StepOutput(loss summed over the batch, outputs (B, ...), grads summed over the batch))`.

        **Raises:**

        As `step`; also `ValueError` for a carry made by `init` (one example: use
        `init_batch`) and naming `x` or `target` when a leaf's batch axis differs from the
        carry's batch size.
        """
        self._need_loss("step_batch")
        return self._loss_step(params, carry, x, target, batched=True)

    def run_batch(self, params, carry: Carry, xs, targets, time_major: bool = False,
                  keep_outputs: bool = True) -> tuple:
        """`run` for a batch: `xs` and `targets` are (batch, time, ...); gradients summed over both.

        **Arguments:**

        - `params`, `carry`: as for `run`, the carry from `init_batch`.
        - `xs`, `targets`: `(B, T, ...)` leaves, or `(T, B, ...)` with `time_major`; `xs` may
          be None for a network without input (then `targets` gives `T`).
        - `keep_outputs`: as for `run`.

        **Returns:**

        `(carry, RunTotal(loss, grads, outputs))`, outputs laid out like `xs` (None without
        `keep_outputs`).

        **Raises:**

        As `run`; also `ValueError` for a carry made by `init` (one example) and naming the
        argument (`xs` or `targets`) whose batch axis differs from the carry's batch size.
        """
        self._need_loss("run_batch")
        layout = "(T, B, ...)" if time_major else "(B, T, ...)"
        check_carry(carry, Carry)
        axis = 1 if time_major else 0
        one = jax.tree_util.tree_map(lambda v: v[(0, 0)] if np.ndim(v) >= 2 else v, xs)
        self._batch_size(params, carry, [("xs", xs, axis), ("targets", targets, axis)], one, layout)
        T = _sequence_length(xs, targets, 1 - axis, layout)
        swap = (lambda tree: tree) if time_major else (
            lambda tree: jax.tree_util.tree_map(lambda v: jnp.swapaxes(v, 0, 1), tree))
        carry, total = self._scan(params, carry, swap(xs), swap(targets), T, True, keep_outputs)
        return carry, RunTotal(total.loss, total.grads, swap(total.outputs))

    def run(self, params, carry: Carry, xs, targets, keep_outputs: bool = True) -> tuple:
        """Scan `step` over the leading time axis of `xs` and `targets`.

        The loss and the gradients are summed in the dtypes of the per-step loss and of the
        parameters: a float64 target with float32 parameters, or a float32 loss of bfloat16
        parameters, just works (gradients come back in the parameters' dtypes). Both sums
        are carried through the scan, so memory does not grow with `T` beyond the outputs
        (and not at all without `keep_outputs`).

        **Arguments:**

        - `params`: the parameters (held fixed during the run).
        - `carry`: from `init` or an earlier `run` (runs chain: two chunks equal one run).
        - `xs`, `targets`: pytrees whose leaves are time-major, `(T, ...)`. `xs` may be None
          for a network without input (a pattern generator): `T` is then the targets'.
        - `keep_outputs`: return every step's output; with False, `outputs` is None and
          nothing is stacked over time (long streams).

        **Returns:**

        `(carry, RunTotal(loss, grads, outputs))` with summed loss and gradients and the
        outputs stacked `(T, ...)`.

        **Raises:**

        As `step`; `ValueError` naming `xs` / `targets` and their lengths when their leaves
        disagree on `T` (or lack a time axis), or when neither has a leaf to give `T`. With
        `check_finite`, the message names the step index within the run (an eager call
        raises it; a jitted one is checkified as for `step`).
        """
        self._need_loss("run")
        T = _sequence_length(xs, targets, 0, "(T, ...)")
        return self._scan(params, carry, xs, targets, T, False, keep_outputs)

    def _scan(self, params, carry, xs, targets, T, batched, keep_outputs):
        check_carry(carry, Carry)
        step = lambda p, c, x, t, index=None: self._loss_step(p, c, x, t, batched, index)  # noqa: E731

        one = _first if batched else (lambda tree: tree)     # one example (of the batch)
        x0, t0 = _first(xs), _first(targets)                 # the first step
        if carry.traces is None:   # fix the traces' shapes before the scan
            prog = self.program(params, one(carry.state), one(x0))
            batch_shape = (self._batch_size(params, carry),) if batched else ()
            carry = Carry(carry.state, self._traces(prog, [
                jnp.broadcast_to(t, batch_shape + t.shape) for t in prog.zero_traces()]))
        # the loss is summed in its own dtype: that of loss_fn on one step's output
        y0 = jax.eval_shape(self.model, params, one(carry.state), one(x0))[1]
        loss_dtype = jax.eval_shape(lambda y, t: call_loss(self.loss_fn, y, t), y0, one(t0)).dtype

        def scan(carry):
            zero = jax.tree_util.tree_map(jnp.zeros_like, params)

            def body(acc, inputs):
                c, grads, loss = acc
                i, x, target = inputs
                c, out = step(params, c, x, target, i if self.check_finite else None)
                # accumulate in the parameters' dtypes whatever the loss's dtype (bf16 params, f64 targets)
                grads = jax.tree_util.tree_map(lambda g, d: g + d.astype(g.dtype), grads, out.grads)
                # the loss is summed in the carry, in its own dtype: nothing per step is stacked
                return (c, grads, loss + out.loss), (out.output if keep_outputs else None)

            init = (carry, zero, jnp.zeros((), loss_dtype))
            (carry, grads, loss), outputs = jax.lax.scan(body, init, (jnp.arange(T), xs, targets))
            return carry, RunTotal(loss, grads, outputs)

        if not self.check_finite:
            return scan(carry)
        # the per-step checks sit inside a scan: functionalize them here, so that an eager run
        # raises at once and an outer checkify (a jitted run) receives them
        from jax.experimental import checkify
        error, result = checkify.checkify(scan, errors=checkify.user_checks)(carry)
        checkify.check_error(error)
        return result

    # -- reports -------------------------------------------------------------
    def explain(self, params, state0, x0, print_report: bool = True):
        """What the tracer derived for this model: per parameter, each trace block's kind,
        shape, bytes and update rule, and every term the method drops with its source line.

        **Arguments:**

        - `params`, `state0`, `x0`: example parameters, state and one step's input.
        - `print_report`: also print the report.

        **Returns:**

        An `Explanation` (its `str` is the printed report).

        **Raises:**

        As `program`.
        """
        from .explain import explain
        report = explain(self.plan(params, state0, x0))
        if print_report:
            print(report)
        return report

    def is_exact(self, params, state0, x0) -> bool:
        """Whether this learner's gradient equals BPTT for this model (no term dropped).

        **Raises:**

        As `program`.
        """
        return self.plan(params, state0, x0).exact

    def _need_loss(self, what):
        if self.loss_fn is None:
            raise ValueError(f"learner.{what} needs a loss_fn; without one, use the learning-signal "
                             f"API: learner.signal_step, learner.apply_signal, learner.eligibility")


# what each built-in method drops, in words, for the learner's repr
_METHOD_CUTS = {
    "exact": "cuts nothing (RTRL, equals BPTT)",
    "eprop": "cuts the recurrent neuron-mixing paths in the whole step (e-prop)",
    "ostl": "cuts every neuron-mixing path from the traces, learning signal through the true step (OSTL)",
    "snap1": "keeps each trace only where a parameter acts within one step (SnAp-1)",
}


def _name(fn) -> str:
    """A callable's readable name: its qualified name, a partial's function, or its repr."""
    inner = getattr(fn, "func", None)          # functools.partial
    if inner is not None and callable(inner):
        return f"partial({_name(inner)})"
    qual = getattr(fn, "__qualname__", None) or getattr(type(fn), "__qualname__", None)
    return qual if qual is not None else repr(fn)


def _sequence_length(xs, targets, time_axis: int, layout: str) -> int:
    """The number of steps `T` of a run: the length of the time axis of every leaf of `xs` and
    `targets` (`xs` may be None: a network without input).

    **Raises:**

    `ValueError` naming the leaves that lack the axis or disagree on `T`, with their shapes,
    or when neither `xs` nor `targets` has a leaf.
    """
    named = [(name + jax.tree_util.keystr(path), np.shape(v)) for name, tree in (("xs", xs), ("targets", targets))
             for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]]
    if not named:
        raise ValueError("neither xs nor targets has an array leaf, so nothing gives the number of steps T: "
                         f"pass targets with leaves {layout} (xs may be None for a network without input)")
    short = [(name, shape) for name, shape in named if len(shape) <= time_axis]
    if short:
        raise ValueError(f"{', '.join(f'{n} has shape {list(s)}' for n, s in short)}: leaves of xs and targets "
                         f"are {layout}, with the time axis T at axis {time_axis}")
    lengths = {shape[time_axis] for _, shape in named}
    if len(lengths) > 1:
        raise ValueError(f"xs and targets disagree on the number of steps T (axis {time_axis} of {layout}): "
                         + ", ".join(f"{n} has T={s[time_axis]} (shape {list(s)})" for n, s in named)
                         + ". Give every leaf of both the same length.")
    return lengths.pop()


def _first(tree):
    """The first example (or step) of every leaf."""
    return jax.tree_util.tree_map(lambda v: v[0] if np.ndim(v) else v, tree)


def _copy(tree):
    """Fresh buffers for every array leaf: a carry must never alias the caller's arrays (donation)."""
    return jax.tree_util.tree_map(lambda v: jnp.array(v, copy=True), tree)


def online_grad(model: Callable, loss_fn: Optional[Callable] = None, method="exact",
                check_finite: bool = False) -> OnlineLearner:
    """An online learner that returns, at every step, the gradient of that step's loss.

    `method="exact"` is real-time recurrent learning (RTRL; Williams & Zipser 1989) with
    the traces stored in the sparse form the tracer proves; `method="eprop"` is e-prop
    (Bellec et al. 2020): the paths that mix neurons of a recurrent layer are cut in the
    whole step, state update and output alike (reported by `explain()`); `method="snap1"`
    is SnAp-1 (Menick et al. 2020).

    **Arguments:**

    - `model`: `model(params, state, x) -> (new_state, y)` for one example and one time step
      (no batch or time axis); `params` and `state` are pytrees of float arrays (any float
      dtype), `new_state` keeps the state's structure, shapes and dtypes.
    - `loss_fn`: `loss_fn(y, target) -> scalar`; the sequence loss is the sum over steps.
      May be None for three-factor learning with external signals.
    - `method`: `"exact"` (RTRL, Williams & Zipser 1989: equals BPTT), `"eprop"` (e-prop,
      Bellec et al. 2020: recurrent neuron-mixing paths cut in the whole step), `"ostl"`
      (every mixing path cut from the traces, learning signal through the true step; after
      Bohnstingl et al. 2022), `"snap1"` (SnAp-1, Menick et al. 2020), or a
      `sparseprop.tracer.methods.Method`. What a method drops is reported by `explain()`.
    - `check_finite`: check at every step that the input, target, parameters and carried
      state, and what the step produces (state, traces, loss, output, gradient) are
      finite, with `jax.experimental.checkify`: a NaN or inf raises at the step it enters,
      naming the quantity (and the step index within `run`). Eager calls (`step`, `run`,
      `run_batch`) raise at once; a jitted one must be checkified: `err, (carry, out) = jax.jit(checkify.checkify(
      learner.step))(params, carry, x, target); err.throw()`. Off by default: a NaN then
      propagates into the state and traces and every later gradient, silently.

    **Returns:**

    An `OnlineLearner` with `init`, `step`, `run`, their batched forms, `simulate`, `explain`
    and `is_exact`, and for external learning signals `signal_step`, `apply_signal` and
    `eligibility`.

    **Raises:**

    `ValueError` for an unknown method name. Errors in the model itself are raised when it is
    first traced (`init` with an example input, or the first `step`).
    """
    return OnlineLearner(model, loss_fn, method, check_finite)


def bptt_grad(model: Callable, loss_fn: Callable) -> Callable:
    """The reference: backpropagation through time over a `lax.scan` of the model.

    **Arguments:**

    - `model`, `loss_fn`: as for `online_grad`.

    **Returns:**

    `f(params, state0, xs, targets) -> (loss, grads)`, the summed loss and its gradient, with
    `xs` and `targets` time-major (leaves `(T, ...)`, one example). Memory grows with `T`.

    **Raises:**

    `TypeError` for non-float parameters; `ValueError` when `loss_fn` does not return a
    scalar (as `online_grad`: a vector loss is refused, never summed silently); an error
    inside `loss_fn` names the output's and the target's shapes.
    """
    def total_loss(params, state0, xs, targets):
        def body(state, inputs):
            x, target = inputs
            state, y = model(params, state, x)
            return state, call_loss(loss_fn, y, target)
        _, losses = jax.lax.scan(body, state0, (xs, targets))
        return jnp.sum(losses)

    def f(params, state0, xs, targets):
        check_params(params)
        return jax.value_and_grad(total_loss)(params, state0, xs, targets)
    return f


def simulate(model: Callable, params, state0, xs, keep_states: bool = True) -> Trajectory:
    """Run the model forward over a sequence: states and outputs, no gradients, no traces.

    For evaluation and for looking at what a network does (spikes, membrane potentials);
    it is a `lax.scan` of the model, so it jits (`jax.jit(sparseprop.simulate,
    static_argnums=(0, 4))`) and vmaps over a batch (`jax.vmap(lambda s, x: simulate(model,
    params, s, x))`).

    **Arguments:**

    - `model`: `model(params, state, x) -> (new_state, y)`, as for `online_grad`.
    - `params`, `state0`: the parameters and the initial state (one example).
    - `xs`: the inputs, time-major: leaves `(T, ...)`.
    - `keep_states`: also return the state after every step (memory `T ×` the state).

    **Returns:**

    A `Trajectory(state, states, outputs)`: the final state, the stacked states (leaves
    `(T, ...)`, or None without `keep_states`) and the stacked outputs `(T, ...)`, in the
    model's dtypes.

    **Raises:**

    `ValueError` when `xs` has no leaves or its leaves disagree on `T`.
    """
    leaves = jax.tree_util.tree_leaves(xs)
    lengths = {np.shape(v)[0] if np.ndim(v) else None for v in leaves}
    if not leaves or len(lengths) != 1 or None in lengths:
        raise ValueError(f"xs must be time-major, every leaf (T, ...) with one T; got leaf shapes "
                         f"{[list(np.shape(v)) for v in leaves]}")

    def body(state, x):
        state, y = model(params, state, x)
        return state, ((state if keep_states else None), y)
    final, (states, outputs) = jax.lax.scan(body, state0, xs)
    return Trajectory(final, states, outputs)
