"""Deep rewiring while learning online: a sparse recurrent network trained with e-prop.

A recurrent LIF network with a fixed number of synapses (an edge list carried in the state) learns
to generate a target pattern from frozen input spike trains, one gradient step after every time
step (e-prop, Bellec et al. 2020). Deep R (Bellec et al. 2018, "Deep rewiring: training very
sparse deep networks"): each recurrent synapse has a fixed sign s and a strength θ, w = s·θ; a
synapse whose strength crosses zero is removed and a new one, between a random pair of neurons
with a random sign, takes its slot at strength zero; its eligibility traces restart at zero
(`learner.reset_traces`). The number of synapses stays constant; the traces are one number per
synapse (`explain()` says "per-edge eligibility").

Prints the loss falling and the synapses rewired per epoch; writes out/rewiring.png.
Usage: python examples/rewiring.py [--epochs 30] [--out DIR]
"""
import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np

import sparseprop as sp

N_IN, N, N_OUT, T = 30, 80, 2, 120
N_SYN = 640                      # 10 % of the N·N possible recurrent synapses
LR, NOISE = 3e-4, 3e-5
sg = jax.lax.stop_gradient


def model(p, s, x):
    """Recurrent LIF, detached reset; recurrent synapses from the edge list (pre, post) in the state."""
    w_rec = s["sign"] * p["theta"]
    i = p["w_in"] @ x + jax.ops.segment_sum(w_rec * s["z"][s["pre"]], s["post"], num_segments=N)
    v = 0.9 * s["v"] + i - sg(s["z"])
    z = sp.spike(v - 1.0)
    y = 0.9 * s["y"] + p["w_out"] @ z
    return {**s, "v": v, "z": z, "y": y}, y


def loss_fn(y, target):
    return jnp.mean((y - target) ** 2)


def initial(seed=0):
    rng = np.random.default_rng(seed)
    k = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = {"w_in": jax.random.normal(k[0], (N, N_IN)) * 0.4,
              "theta": jnp.asarray(rng.uniform(0.0, 0.2, N_SYN), jnp.float32),
              "w_out": jax.random.normal(k[1], (N_OUT, N)) * 0.02}
    state = {"v": jnp.zeros(N), "z": jnp.zeros(N), "y": jnp.zeros(N_OUT),
             "pre": jnp.asarray(rng.integers(0, N, N_SYN), jnp.int32),
             "post": jnp.asarray(rng.integers(0, N, N_SYN), jnp.int32),
             "sign": jnp.asarray(rng.choice([-1, 1], N_SYN), jnp.int32)}
    xs = (jax.random.uniform(k[2], (T, N_IN)) < 0.15).astype(jnp.float32)
    t = jnp.arange(T)[:, None] / T
    targets = jnp.concatenate([jnp.sin(2 * jnp.pi * 2 * t), 0.5 * jnp.cos(2 * jnp.pi * 3 * t)], axis=1)
    return params, state, xs, targets


def rewire(params, carry, learner, rng):
    """Remove synapses whose strength crossed zero; draw the same number anew (Deep R)."""
    dead = np.asarray(params["theta"] < 0)
    count = int(dead.sum())
    if count == 0:
        return params, carry, 0
    state = dict(carry.state)
    for name, draw in (("pre", lambda: rng.integers(0, N, count)), ("post", lambda: rng.integers(0, N, count)),
                       ("sign", lambda: rng.choice([-1, 1], count))):
        values = np.asarray(state[name]).copy()
        values[dead] = draw()
        state[name] = jnp.asarray(values, jnp.int32)
    params = {**params, "theta": jnp.where(dead, 0.0, params["theta"])}
    carry = carry._replace(state=state)
    restart = {"w_in": None, "theta": jnp.asarray(dead), "w_out": None}
    return params, learner.reset_traces(params, carry, restart), count


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "out"))
    args = parser.parse_args(argv)
    params, state0, xs, targets = initial()
    learner = sp.online_grad(model, loss_fn, method="eprop")
    report = learner.explain(params, state0, xs[0], print_report=False)
    kinds = sorted({b.kind for b in report.blocks if b.param == "params['theta']"})
    print(f"traces of the {N_SYN} recurrent synapses: {kinds}; {report.trace_bytes} bytes in all")

    @sp.jit
    def learn_step(params, carry, x, target, key):
        carry, out = learner.step(params, carry, x, target)
        noise = NOISE * jax.random.normal(key, params["theta"].shape)
        params = jax.tree_util.tree_map(lambda p, g: p - LR * g, params, out.grads)
        params["theta"] = params["theta"] + noise
        return params, carry, out.loss

    rng = np.random.default_rng(1)
    key = jax.random.PRNGKey(2)
    carry = learner.init(params, state0, xs[0])
    history, rewired = [], []
    for epoch in range(args.epochs):
        losses, moved = [], 0
        # each epoch replays the stream from rest, with the wiring it has reached
        wiring = {name: carry.state[name] for name in ("pre", "post", "sign")}
        carry = learner.init(params, {**state0, **wiring}, xs[0])
        for x, target in zip(xs, targets):
            key, sub = jax.random.split(key)
            params, carry, loss = learn_step(params, carry, x, target, sub)
            params, carry, count = rewire(params, carry, learner, rng)
            losses.append(float(loss))
            moved += count
        history.append(float(np.mean(losses)))
        rewired.append(moved)
        print(f"epoch {epoch + 1:3d}: mean loss {history[-1]:.4f}, synapses rewired {moved:4d}, "
              f"synapses {N_SYN} (constant)")
    assert int(carry.state["pre"].size) == N_SYN
    print(f"loss: first epoch {history[0]:.4f}, last epoch {history[-1]:.4f}")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return history
    os.makedirs(args.out, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(np.arange(1, len(history) + 1), history, "o-", label="mean loss per epoch")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean squared error")
    twin = ax.twinx()
    twin.bar(np.arange(1, len(rewired) + 1), rewired, alpha=0.3, color="C1", label="synapses rewired")
    twin.set_ylabel("synapses rewired per epoch")
    ax.set_zorder(twin.get_zorder() + 1)      # the loss curve in front of the bars
    ax.patch.set_visible(False)
    lines = ax.get_legend_handles_labels()
    bars = twin.get_legend_handles_labels()
    ax.legend(lines[0] + bars[0], lines[1] + bars[1], loc="upper right", fontsize=8)
    ax.set_title(f"online e-prop with deep rewiring: {N} neurons, {N_SYN} synapses", fontsize=9)
    fig.tight_layout()
    path = os.path.join(args.out, "rewiring.png")
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")
    return history


if __name__ == "__main__":
    main()
