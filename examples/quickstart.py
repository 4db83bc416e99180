"""Quickstart: a LIF layer learns a target online, one gradient step per time step.

Prints the loss going down over a stream, and checks the online gradient of a whole
sequence against backpropagation through time (BPTT).
"""
import jax
import jax.numpy as jnp

import sparseprop as sp


def lif(params, state, x):
    """Leaky integrate-and-fire layer (reset by subtraction) with a leaky readout."""
    v = params["alpha"] * state["v"] + params["w"] @ x - state["z"]
    z = sp.spike(v - 1.0)
    out = 0.8 * state["out"] + params["w_out"] @ z
    return {"v": v, "z": z, "out": out}, out


LR = 0.002


def loss_fn(y, target):
    return jnp.mean((y - target) ** 2)


def main():
    n_in, n, n_out, T = 20, 64, 2, 100
    k = jax.random.split(jax.random.PRNGKey(0), 4)
    params = {
        "alpha": jnp.full(n, 0.9),
        "w": jax.random.normal(k[0], (n, n_in)) * 0.5,
        "w_out": jax.random.normal(k[1], (n_out, n)) * 0.1,
    }
    state0 = {"v": jnp.zeros(n), "z": jnp.zeros(n), "out": jnp.zeros(n_out)}
    xs = (jax.random.uniform(k[2], (T, n_in)) < 0.2).astype(jnp.float32)   # input spike trains
    t = jnp.arange(T)[:, None]
    targets = jnp.concatenate([jnp.sin(t / 8.0), jnp.cos(t / 13.0)], axis=1)

    learner = sp.online_grad(lif, loss_fn, method="exact")

    # 1. The online gradient of a sequence equals BPTT's.
    _, total = jax.jit(learner.run)(params, learner.init(params, state0, xs[0]), xs, targets)
    _, bptt = jax.jit(sp.bptt_grad(lif, loss_fn))(params, state0, xs, targets)
    err = max(float(jnp.max(jnp.abs(total.grads[key] - bptt[key])) / jnp.max(jnp.abs(bptt[key])))
              for key in params)
    print(f"online vs BPTT: max relative gradient error {err:.2e} (float32)")

    # 2. Learn online: one SGD update after every time step of a repeating stream.
    @sp.jit      # jax.jit with the XLA options online programs run fastest with
    def learn_step(params, carry, x, target):
        carry, out = learner.step(params, carry, x, target)
        params = jax.tree_util.tree_map(lambda p, g: p - LR * g, params, out.grads)
        params["alpha"] = jnp.clip(params["alpha"], 0.5, 0.99)   # keep the leak a leak
        return params, carry, out.loss

    carry = learner.init(params, state0, xs[0])
    for epoch in range(20):
        losses = []
        for x, target in zip(xs, targets):
            params, carry, loss = learn_step(params, carry, x, target)
            losses.append(loss)
        print(f"pass {epoch}: mean loss {float(jnp.mean(jnp.stack(losses))):.4f}")


if __name__ == "__main__":
    main()
