"""NIR graphs built with the `nir` package: forward pass against hand-written Euler dynamics,
online gradients against BPTT of the loaded model, and the round trip back to NIR."""
import jax
import jax.numpy as jnp
import nir
import numpy as np
import pytest

import sparseprop as sp
import sparseprop.nir as spnir
from reference import bptt, max_relative_error, mse

DT = 1e-3


def _run(model, params, state, xs):
    ys = []
    for x in xs:
        state, y = model(params, state, x)
        ys.append(y)
    return state, np.stack([np.asarray(y) for y in ys])


def feedforward(rng, n_in=3, n_h=6, n_out=2):
    return nir.NIRGraph(nodes={
        "input": nir.Input(np.array([n_in])),
        "fc1": nir.Affine(rng.normal(size=(n_h, n_in)) * 2.0, rng.normal(size=n_h) * 0.1),
        "lif": nir.LIF(tau=rng.uniform(5e-3, 2e-2, n_h), r=rng.uniform(0.5, 1.5, n_h),
                       v_leak=rng.normal(size=n_h) * 0.1, v_threshold=np.ones(n_h),
                       v_reset=np.full(n_h, -0.2)),
        "fc2": nir.Linear(rng.normal(size=(n_out, n_h))),
        "li": nir.LI(tau=np.full(n_out, 2e-2), r=np.ones(n_out), v_leak=np.zeros(n_out)),
        "output": nir.Output(np.array([n_out]))},
        edges=[("input", "fc1"), ("fc1", "lif"), ("lif", "fc2"), ("fc2", "li"), ("li", "output")])


def test_forward_matches_hand_written_euler_dynamics():
    rng = np.random.default_rng(0)
    g = feedforward(rng)
    model, params, state0 = spnir.load(g, dt=DT)
    xs = rng.uniform(0.0, 3.0, size=(80, 3))
    _, ys = _run(model, params, state0, xs)

    n = g.nodes
    v = n["lif"].v_leak.copy()
    u = np.zeros(2)
    expected, spikes = [], 0
    for x in xs:
        current = n["fc1"].weight @ x + n["fc1"].bias
        v = v + DT / n["lif"].tau * ((n["lif"].v_leak - v) + n["lif"].r * current)
        z = (v > n["lif"].v_threshold).astype(float)
        v = np.where(z > 0, n["lif"].v_reset, v)
        spikes += int(z.sum())
        u = u + DT / n["li"].tau * ((n["li"].v_leak - u) + n["li"].r * (n["fc2"].weight @ z))
        expected.append(u.copy())
    assert spikes > 10
    np.testing.assert_allclose(ys, np.stack(expected), rtol=1e-12, atol=1e-12)


def cuba_if_chain(k=4):
    return nir.NIRGraph(nodes={
        "input": nir.Input(np.array([k])),
        "scale": nir.Scale(np.array([1.0, 2.0, 0.5, 1.5])),
        "cuba": nir.CubaLIF(tau_syn=np.full(k, 5e-3), tau_mem=np.full(k, 1e-2), r=np.full(k, 2.0),
                            v_leak=np.zeros(k), v_threshold=np.full(k, 0.5), w_in=np.full(k, 3.0)),
        "delay": nir.Delay(np.array([0.0, 1e-3, 3e-3, 2e-3])),
        "if": nir.IF(r=np.full(k, 50.0), v_threshold=np.ones(k)),
        "thr": nir.Threshold(np.full(k, 0.5)),
        "output": nir.Output(np.array([k]))},
        edges=[("input", "scale"), ("scale", "cuba"), ("cuba", "delay"), ("delay", "if"),
               ("if", "thr"), ("thr", "output")])


def test_cuba_if_delay_scale_threshold_dynamics():
    rng = np.random.default_rng(1)
    k = 4
    g = cuba_if_chain(k)
    model, params, state0 = spnir.load(g, dt=DT)
    xs = rng.uniform(0.0, 4.0, size=(120, k))
    _, ys = _run(model, params, state0, xs)

    n = g.nodes
    i, v, w = np.zeros(k), np.zeros(k), np.zeros(k)
    history, expected = [], []
    steps = np.array([0, 1, 3, 2])
    for x in xs:
        s = n["scale"].scale * x
        i = i + DT / n["cuba"].tau_syn * (n["cuba"].w_in * s - i)
        v = v + DT / n["cuba"].tau_mem * ((n["cuba"].v_leak - v) + n["cuba"].r * i)
        z = (v > n["cuba"].v_threshold).astype(float)
        v = np.where(z > 0, 0.0, v)
        history.append(z)
        delayed = np.array([history[-1 - d][j] if len(history) > d else 0.0 for j, d in enumerate(steps)])
        w = w + DT * n["if"].r * delayed
        z2 = (w > n["if"].v_threshold).astype(float)
        w = np.where(z2 > 0, 0.0, w)
        expected.append((z2 > 0.5).astype(float))
    assert np.sum(history) > 10 and np.sum(expected) > 3
    np.testing.assert_array_equal(ys, np.stack(expected))


def recurrent(rng, n_in=3, n_h=6, n_out=2):
    return nir.NIRGraph(nodes={
        "input": nir.Input(np.array([n_in])),
        "fc1": nir.Affine(rng.normal(size=(n_h, n_in)) * 2.0, rng.normal(size=n_h) * 0.1),
        "lif": nir.CubaLIF(tau_syn=np.full(n_h, 4e-3), tau_mem=rng.uniform(8e-3, 2e-2, n_h), r=np.full(n_h, 2.0),
                           v_leak=np.zeros(n_h), v_threshold=np.ones(n_h)),
        "rec": nir.Linear(rng.normal(size=(n_h, n_h)) * 0.5),
        "fc2": nir.Linear(rng.normal(size=(n_out, n_h))),
        "li": nir.LI(tau=np.full(n_out, 2e-2), r=np.ones(n_out), v_leak=np.zeros(n_out)),
        "output": nir.Output(np.array([n_out]))},
        edges=[("input", "fc1"), ("fc1", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "fc2"),
               ("fc2", "li"), ("li", "output")])


def test_recurrent_edge_reads_the_previous_step():
    rng = np.random.default_rng(2)
    g = recurrent(rng)
    model, params, state0 = spnir.load(g, dt=DT)
    assert set(state0) == {"lif", "rec", "li"} and "out" in state0["rec"]
    xs = rng.uniform(0.0, 3.0, size=(50, 3))
    _, ys = _run(model, params, state0, xs)
    n = g.nodes
    i, v, u, z = np.zeros(6), np.zeros(6), np.zeros(2), np.zeros(6)
    expected = []
    for x in xs:
        drive = n["fc1"].weight @ x + n["fc1"].bias + n["rec"].weight @ z     # z of the previous step
        i = i + DT / n["lif"].tau_syn * (n["lif"].w_in * drive - i)
        v = v + DT / n["lif"].tau_mem * ((n["lif"].v_leak - v) + n["lif"].r * i)
        z = (v > 1.0).astype(float)
        v = np.where(z > 0, 0.0, v)
        u = u + DT / n["li"].tau * (-u + n["fc2"].weight @ z)
        expected.append(u.copy())
    np.testing.assert_allclose(ys, np.stack(expected), rtol=1e-12, atol=1e-12)


def _check_exact(g, xs, targets, min_spikes, state_key):
    model, params, state0 = spnir.load(g, dt=DT)
    loss, grads, _ = bptt(model, mse, params, state0, xs, targets)
    learner = sp.online_grad(model, mse, method="exact")
    carry = learner.init(params, state0, xs[0])
    carry, total = learner.run(params, carry, xs, targets)

    def body(s, x):
        s, _ = model(params, s, x)
        return s, s
    _, states = jax.lax.scan(body, state0, xs)
    assert int(np.sum(np.asarray(state_key(states)) > 0.5)) >= min_spikes
    assert abs(float(total.loss) - float(loss)) <= 1e-9 * abs(float(loss))
    assert max_relative_error(total.grads, grads) <= 1e-9
    return params, grads


@pytest.mark.slow
def test_online_exact_gradient_equals_bptt_on_a_recurrent_cuba_graph():
    rng = np.random.default_rng(3)
    g = recurrent(rng)
    xs = jnp.asarray(rng.uniform(0.0, 3.0, size=(60, 3)))
    targets = jnp.asarray(rng.normal(size=(60, 2)))
    _, grads = _check_exact(g, xs, targets, 10, lambda s: s["rec"]["out"] != 0)
    assert float(jnp.max(jnp.abs(grads["rec"]["weight"]))) > 0     # the recurrent path carries gradient


@pytest.mark.slow
def test_online_exact_gradient_equals_bptt_through_conv_pool_flatten_and_delay():
    rng = np.random.default_rng(4)
    c, h, w, k = 2, 6, 6, 3
    conv = nir.Conv2d(input_shape=(h, w), weight=rng.normal(size=(k, c, 3, 3)), stride=1, padding=1,
                      dilation=1, groups=1, bias=rng.normal(size=k) * 0.1)
    flat = k * 3 * 3
    g = nir.NIRGraph(nodes={
        "input": nir.Input(np.array([c, h, w])),
        "conv": conv,
        "lif": nir.LIF(tau=np.full((k, h, w), 5e-3), r=np.ones((k, h, w)), v_leak=np.zeros((k, h, w)),
                       v_threshold=np.ones((k, h, w))),
        "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        "flat": nir.Flatten(input_type={"input": np.array([k, 3, 3])}, start_dim=0, end_dim=-1),
        "delay": nir.Delay(np.full(flat, 2e-3)),
        "fc": nir.Affine(rng.normal(size=(2, flat)) * 0.5, np.zeros(2)),
        "li": nir.LI(tau=np.full(2, 1e-2), r=np.ones(2), v_leak=np.zeros(2)),
        "output": nir.Output(np.array([2]))},
        edges=[("input", "conv"), ("conv", "lif"), ("lif", "pool"), ("pool", "flat"), ("flat", "delay"),
               ("delay", "fc"), ("fc", "li"), ("li", "output")], type_check=False)
    T = 25
    xs = jnp.asarray(rng.uniform(0.0, 4.0, size=(T, c, h, w)))
    targets = jnp.asarray(rng.normal(size=(T, 2)))
    model, params, state0 = spnir.load(g, dt=DT)
    y = model(params, state0, xs[0])[1]
    assert y.shape == (2,)
    _check_exact(g, xs, targets, 20, lambda s: s["delay"]["line"])


def test_online_exact_gradient_equals_bptt_through_scale_cuba_delay_if_threshold():
    rng = np.random.default_rng(8)
    xs = jnp.asarray(rng.uniform(0.0, 4.0, size=(80, 4)))
    targets = jnp.asarray((rng.uniform(size=(80, 4)) < 0.2).astype(float))
    _, grads = _check_exact(cuba_if_chain(), xs, targets, 10, lambda s: s["delay"]["line"])
    assert float(jnp.max(jnp.abs(grads["scale"]["scale"]))) > 0     # the gradient crosses three thresholds


def test_two_inputs_and_two_outputs_are_dicts():
    g = nir.NIRGraph(nodes={
        "a": nir.Input(np.array([2])), "b": nir.Input(np.array([2])),
        "li": nir.LI(tau=np.full(2, 1e-2), r=np.ones(2), v_leak=np.zeros(2)),
        "thr": nir.Threshold(np.full(2, 0.5)),
        "y_li": nir.Output(np.array([2])), "y_thr": nir.Output(np.array([2]))},
        edges=[("a", "li"), ("b", "li"), ("li", "y_li"), ("li", "thr"), ("thr", "y_thr")])
    model, params, state0 = spnir.load(g, dt=DT)
    x = {"a": np.array([10.0, 0.0]), "b": np.array([60.0, 1.0])}
    state, y = model(params, state0, x)
    np.testing.assert_allclose(np.asarray(y["y_li"]), DT / 1e-2 * np.array([70.0, 1.0]), rtol=1e-12)
    np.testing.assert_array_equal(np.asarray(y["y_thr"]), [1.0, 0.0])


def test_avg_pool_and_conv1d_shapes():
    rng = np.random.default_rng(5)
    g = nir.NIRGraph(nodes={
        "input": nir.Input(np.array([2, 8])),
        "conv": nir.Conv1d(input_shape=8, weight=rng.normal(size=(4, 2, 3)), stride=1, padding="same",
                           dilation=1, groups=1, bias=np.zeros(4)),
        "output": nir.Output(np.array([4, 8]))},
        edges=[("input", "conv"), ("conv", "output")], type_check=False)
    model, params, state0 = spnir.load(g, dt=DT)
    x = rng.normal(size=(2, 8))
    y = np.asarray(model(params, state0, x)[1])
    w = g.nodes["conv"].weight
    xp = np.pad(x, ((0, 0), (1, 1)))
    expected = np.stack([[np.sum(w[o] * xp[:, t:t + 3]) for t in range(8)] for o in range(4)])
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)

    pool = nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))
    g2 = nir.NIRGraph(nodes={"input": nir.Input(np.array([1, 4, 4])), "pool": pool,
                             "output": nir.Output(np.array([1, 2, 2]))},
                      edges=[("input", "pool"), ("pool", "output")], type_check=False)
    model2, p2, s2 = spnir.load(g2, dt=DT)
    x2 = np.arange(16.0).reshape(1, 4, 4)
    np.testing.assert_allclose(np.asarray(model2(p2, s2, x2)[1]), x2.reshape(1, 2, 2, 2, 2).mean(axis=(2, 4)))


def test_save_and_reload_give_the_trained_model(tmp_path):
    rng = np.random.default_rng(6)
    g = feedforward(rng)
    model, params, state0 = spnir.load(g, dt=DT)
    trained = jax.tree_util.tree_map(lambda p: p * 1.1 + 0.01, params)
    path = tmp_path / "trained.nir"
    spnir.save(g, trained, path)
    model2, params2, state2 = spnir.load(path, dt=DT)
    assert jax.tree_util.tree_structure(params2) == jax.tree_util.tree_structure(trained)
    assert max_relative_error(params2, trained) == 0.0
    xs = rng.uniform(0.0, 3.0, size=(30, 3))
    # state0 starts at v_leak, which training changed: both runs start from the reloaded rest state.
    np.testing.assert_array_equal(_run(model2, params2, state2, xs)[1], _run(model, trained, state2, xs)[1])


def test_a_pooling_graph_without_shape_inference_round_trips(tmp_path):
    rng = np.random.default_rng(9)
    g = nir.NIRGraph(nodes={
        "input": nir.Input(np.array([1, 4, 4])),
        "conv": nir.Conv2d(input_shape=(4, 4), weight=rng.normal(size=(2, 1, 3, 3)), stride=1, padding="same",
                           dilation=1, groups=1, bias=np.zeros(2)),
        "pool": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        "output": nir.Output(np.array([2, 2, 2]))},
        edges=[("input", "conv"), ("conv", "pool"), ("pool", "output")], type_check=False)
    model, params, state0 = spnir.load(g, dt=DT)
    trained = jax.tree_util.tree_map(lambda p: p + 0.5, params)
    spnir.save(g, trained, tmp_path / "conv.nir")
    model2, params2, state2 = spnir.load(tmp_path / "conv.nir", dt=DT)
    x = rng.normal(size=(1, 4, 4))
    np.testing.assert_array_equal(np.asarray(model2(params2, state2, x)[1]), np.asarray(model(trained, state0, x)[1]))


def test_clear_errors():
    rng = np.random.default_rng(7)
    g = feedforward(rng)
    with pytest.raises(ValueError, match="dt"):
        spnir.load(g, dt=0.0)
    _, params, _ = spnir.load(g, dt=DT)
    with pytest.raises(ValueError, match="shape"):
        spnir.to_nir(g, {"fc2": {"weight": np.zeros((3, 3))}})
    with pytest.raises(ValueError, match="lacks"):
        spnir.to_nir(g, {"nope": params["fc2"]})
    with pytest.raises(ValueError, match="dt=") as info:      # no dt and none in the graph's metadata
        spnir.load(g)
    assert "metadata" in str(info.value)
    two_inputs = nir.NIRGraph(nodes={"input": nir.Input(np.array([3])), "sub": _two_input_subgraph(),
                                     "output": nir.Output(np.array([3]))},
                              edges=[("input", "sub"), ("sub", "output")], type_check=False)
    with pytest.raises(ValueError, match="2 Input nodes"):
        spnir.load(two_inputs, dt=DT)


def _two_input_subgraph():
    return nir.NIRGraph(nodes={"a": nir.Input(np.array([3])), "b": nir.Input(np.array([3])),
                               "out": nir.Output(np.array([3]))},
                        edges=[("a", "out"), ("b", "out")], type_check=False)


def nested_recurrent(rng):
    """`recurrent(rng)` with its recurrent CubaLIF layer as a subgraph, as snnTorch exports RLeaky."""
    flat = recurrent(rng)
    n = flat.nodes
    rnn = nir.NIRGraph(nodes={"input": nir.Input(np.array([6])), "lif": n["lif"], "w_rec": n["rec"],
                              "output": nir.Output(np.array([6]))},
                       edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")],
                       type_check=False)
    nested = nir.NIRGraph(nodes={"input": n["input"], "fc1": n["fc1"], "rnn": rnn, "fc2": n["fc2"], "li": n["li"],
                                 "output": n["output"]},
                          edges=[("input", "fc1"), ("fc1", "rnn"), ("rnn", "fc2"), ("fc2", "li"), ("li", "output")],
                          type_check=False)
    return flat, nested


def test_nested_subgraph_is_flattened(tmp_path):
    rng = np.random.default_rng(10)
    flat, nested = nested_recurrent(rng)
    model, params, state0 = spnir.load(nested, dt=DT)
    assert {"rnn.lif", "rnn.w_rec"} <= set(params) and "out" in state0["rnn.w_rec"]
    flat_model, flat_params, flat_state0 = spnir.load(flat, dt=DT)
    xs = rng.uniform(0.0, 3.0, size=(50, 3))
    ys = _run(model, params, state0, xs)[1]
    np.testing.assert_array_equal(ys, _run(flat_model, flat_params, flat_state0, xs)[1])
    spikes = sp.simulate(model, params, state0, jnp.asarray(xs)).states["rnn.w_rec"]["out"]
    assert int(jnp.sum(spikes != 0)) > 10                  # the recurrent layer spikes
    # trained parameters go back into the subgraph
    trained = jax.tree_util.tree_map(lambda p: p * 1.05, params)
    spnir.save(nested, trained, tmp_path / "nested.nir")
    reloaded = nir.read(tmp_path / "nested.nir")
    assert isinstance(reloaded.nodes["rnn"], nir.NIRGraph)
    np.testing.assert_array_equal(reloaded.nodes["rnn"].nodes["w_rec"].weight, np.asarray(trained["rnn.w_rec"]["weight"]))
    _, params2, _ = spnir.load(reloaded, dt=DT)
    assert max_relative_error(params2, trained) == 0.0


# ------------------------------------------------------------------ Sequential -> NIR -> model
from sparseprop import layers, neurons      # noqa: E402


EXPORTABLE = {
    "catalogue": (neurons.Sequential((neurons.LIF(recurrent=True), neurons.CurrentLIF(reset="zero"),
                                      neurons.CurrentLIF(recurrent=True), neurons.LIF(reset="multiplicative"),
                                      neurons.LeakyIntegrator())),
                  (3, 6, 5, 4, 5, 2), (3,), 2.0),
    "layers": (neurons.Sequential((layers.Conv2d(2, 3, 3, gain=3.0), layers.Leaky(reset="zero"), layers.AvgPool2d(2),
                                   layers.Conv2d(3, 4, 2, padding="VALID", bias=False, gain=4.0),
                                   layers.Leaky(leak="channel"), layers.Dropout(0.5), layers.Flatten(),
                                   layers.Linear(24, 5, gain=3.0), layers.Leaky(leak="neuron"),
                                   layers.Filter(0.7), layers.SpikeCount())),
               (2, 6, 8), (2, 6, 8), 1.0),
    "conv1d": (neurons.Sequential((layers.Conv1d(2, 3, 3, stride=2, padding=1, gain=3.0), layers.Leaky(),
                                   layers.Flatten(), layers.Linear(15, 2, bias=False))),
               (2, 9), (2, 9), 1.0),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPORTABLE))
def test_a_sequential_exports_to_nir_and_reloads_with_the_same_outputs(name, tmp_path):
    net, sizes, x_shape, gain = EXPORTABLE[name]
    k = jax.random.split(jax.random.PRNGKey(list(EXPORTABLE).index(name)), 2)
    params, s0 = net.init_params(k[0], sizes), net.init_state(sizes)
    xs = gain * jax.random.uniform(k[1], (40,) + x_shape)
    rec = sp.simulate(neurons.Sequential(net.layers, record=True), params, s0, xs).outputs
    for i, layer in enumerate(net.layers):
        if hasattr(layer, "spike"):
            z = np.asarray(rec.spikes[i])
            assert 0 < z.sum() < z.size, f"layer {i} must spike"
    spnir.save(net, params, tmp_path / "net.nir", sizes=sizes, dt=DT)
    graph = nir.read(tmp_path / "net.nir")
    model, params2, state2 = spnir.load(graph)                  # dt from the graph's metadata
    ys = sp.simulate(model, params2, state2, xs, keep_states=False).outputs
    np.testing.assert_allclose(np.asarray(ys), np.asarray(rec.output), rtol=1e-12, atol=1e-12)
    if name == "layers":
        assert graph.metadata["dt"] == DT and "4_reset" in graph.nodes    # subtraction as a Scale edge


def test_export_refuses_what_nir_cannot_say():
    key = jax.random.PRNGKey(0)
    for net, sizes, what in [(neurons.Sequential((neurons.ALIF(),)), (3, 4), "ALIF"),
                             (neurons.Sequential((layers.MaxPool2d(2),)), (1, 4, 4), "MaxPool2d")]:
        with pytest.raises(NotImplementedError, match=what):
            spnir.export(net, net.init_params(key, sizes), sizes, dt=DT)
    net = neurons.Sequential((neurons.LIF(),))
    with pytest.raises(TypeError, match="sizes"):
        spnir.to_nir(net, net.init_params(key, (3, 4)))
