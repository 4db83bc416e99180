"""A network in NIR (the Neuromorphic Intermediate Representation), trained online here, and back.

The network is built with the `nir` package, as snnTorch, norse, spyx, lava-dl, sinabs or
rockpool would export it: input -> Affine -> current-based LIF (with a recurrent Linear) ->
Linear -> leaky integrator -> output, in continuous time (time constants in seconds).
`sparseprop.nir.load` turns it into a step function (forward Euler, dt = 1 ms); the
online learner trains its weights on a target trace with exact gradients, checked
against BPTT first; `sparseprop.nir.save` writes the trained graph to a .nir file, and
loading that file again gives the same outputs, bit for bit.

Run:  python examples/nir_roundtrip.py      (about 20 s on 2 CPU cores)
Writes out/nir_roundtrip.nir and out/nir_gradients.png (--out to choose the folder).
"""
import argparse
import os

import jax
import jax.numpy as jnp
import nir
import numpy as np

import sparseprop as sp
import sparseprop.nir
from sparseprop import plotting

N_IN, N_HIDDEN, N_OUT, T, DT = 4, 32, 2, 200, 1e-3


def build_graph(rng):
    """The network as a NIR graph (what another library would export)."""
    return nir.NIRGraph(nodes={
        "input": nir.Input(np.array([N_IN])),
        "fc_in": nir.Affine(rng.normal(size=(N_HIDDEN, N_IN)) * 1.5, np.full(N_HIDDEN, 0.3)),
        "lif": nir.CubaLIF(tau_syn=np.full(N_HIDDEN, 5e-3), tau_mem=np.full(N_HIDDEN, 1e-2),
                           r=np.full(N_HIDDEN, 2.0), v_leak=np.zeros(N_HIDDEN), v_threshold=np.ones(N_HIDDEN)),
        "rec": nir.Linear(rng.normal(size=(N_HIDDEN, N_HIDDEN)) * 0.1),
        "fc_out": nir.Linear(rng.normal(size=(N_OUT, N_HIDDEN)) * 0.3),
        "readout": nir.LI(tau=np.full(N_OUT, 2e-2), r=np.ones(N_OUT), v_leak=np.zeros(N_OUT)),
        "output": nir.Output(np.array([N_OUT]))},
        edges=[("input", "fc_in"), ("fc_in", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "fc_out"),
               ("fc_out", "readout"), ("readout", "output")])


def loss_fn(y, target):
    return jnp.sum((y - target) ** 2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "out"),
                        help="folder for the .nir file and the figure (default: out/ at the repository root)")
    parser.add_argument("--steps", type=int, default=40, help="training passes over the sequence")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    graph = build_graph(rng)
    model, params, state0 = sparseprop.nir.load(graph, dt=DT)
    # Only the synaptic weights learn; time constants and thresholds stay as exported.
    trainable = {"fc_in", "rec", "fc_out"}

    t = np.arange(T) * DT
    xs = jnp.asarray((rng.uniform(size=(T, N_IN)) < 0.3).astype(float))      # input spikes
    targets = jnp.asarray(np.stack([np.sin(2 * np.pi * 10 * t), np.cos(2 * np.pi * 5 * t)], axis=1) * 0.5)

    learner = sp.online_grad(model, loss_fn, method="exact")
    carry = learner.init(params, state0, xs[0])
    _, total = learner.run(params, carry, xs, targets)
    _, reference = sp.bptt_grad(model, loss_fn)(params, state0, xs, targets)
    # one normalisation, the figure's: the largest entry difference over the largest BPTT entry
    online_flat, bptt_flat = (jnp.concatenate([jnp.ravel(g) for g in jax.tree_util.tree_leaves(tree)])
                              for tree in (total.grads, reference))
    err = float(jnp.max(jnp.abs(online_flat - bptt_flat)) / jnp.max(jnp.abs(bptt_flat)))
    print(f"loaded {len(graph.nodes)} NIR nodes; online exact gradient vs BPTT: "
          f"max|online - BPTT| / max|BPTT| = {err:.1e} (over all gradient entries, as in the figure)")

    @sp.jit
    def train_pass(params):
        carry = learner.init(params, state0, xs[0])
        _, total = learner.run(params, carry, xs, targets)
        new = {k: (jax.tree_util.tree_map(lambda p, g: p - 2e-3 * g, v, total.grads[k]) if k in trainable else v)
               for k, v in params.items()}
        return new, total.loss
    first = None
    for i in range(args.steps):
        params, loss = train_pass(params)
        first = float(loss) if first is None else first
        if i % 10 == 0 or i == args.steps - 1:
            print(f"pass {i:3d}: loss {float(loss):.3f}")
    print(f"loss {first:.3f} -> {float(loss):.3f}")

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "nir_roundtrip.nir")
    sparseprop.nir.save(graph, params, path)
    model2, params2, state2 = sparseprop.nir.load(path, dt=DT)

    def outputs(model, params, state):
        return jax.lax.scan(lambda s, x: model(params, s, x), state, xs)[1]
    same = bool(jnp.array_equal(outputs(model, params, state0), outputs(model2, params2, state2)))
    print(f"wrote {os.path.normpath(path)}; reloaded graph gives the same outputs: {same}")

    ax = plotting.gradient_agreement(total.grads, reference, title="NIR network: online exact vs BPTT")
    print(f"wrote {os.path.normpath(plotting.save(ax, os.path.join(args.out, 'nir_gradients.png')))}")
    if not same:
        raise SystemExit("the reloaded NIR graph does not reproduce the trained model")


if __name__ == "__main__":
    main()
