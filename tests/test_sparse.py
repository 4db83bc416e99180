"""Sparse synapses (edge lists, BCOO weights, dense weights times a constant mask): traces one per
synapse that exists, gradients equal BPTT (float64, neurons spiking)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import sparse

import sparseprop as sp
from sparseprop.tracer.storage import DerivedPerEdge
from reference import assert_matches_bptt, max_relative_error, mse

N, M, O = 12, 9, 3
sg = jax.lax.stop_gradient


def _edges(seed, n_post, n_pre, density, no_self=False):
    rng = np.random.default_rng(seed)
    mask = rng.random((n_post, n_pre)) < density
    if no_self:
        np.fill_diagonal(mask, False)
    post, pre = np.nonzero(mask)
    return jnp.asarray(post), jnp.asarray(pre)


POST_IN, PRE_IN = _edges(0, N, M, 0.35)
POST_REC, PRE_REC = _edges(1, N, N, 0.25, no_self=True)


def sparse_alif(cut=lambda z: z, form="segment_sum", cut_readout=lambda z: z):
    """Recurrent ALIF with sparse input and recurrent synapses (edge lists) and a leaky readout."""
    def synapses(w, u, pre, post):
        if form == "segment_sum":
            return jax.ops.segment_sum(w * u[pre], post, num_segments=N)
        return jnp.zeros(N, u.dtype).at[post].add(w * u[pre])

    def model(p, s, x):
        a = 0.9 * s["a"] + s["z"]
        i = synapses(p["w_in"], x, PRE_IN, POST_IN) + synapses(p["w_rec"], cut(s["z"]), PRE_REC, POST_REC)
        v = p["alpha"] * s["v"] + i - sg(s["z"])
        z = sp.spike(v - 1.0 - p["beta"] * a)
        y = 0.8 * s["y"] + p["w_out"] @ cut_readout(z)
        return {"v": v, "a": a, "z": z, "y": y}, y
    return model


def _params(seed=0):
    k = jax.random.split(jax.random.PRNGKey(seed), 3)
    return {"alpha": jnp.linspace(0.8, 0.95, N), "beta": jnp.linspace(0.1, 0.4, N),
            "w_in": 2.0 * jax.random.normal(k[0], (POST_IN.size,)),
            "w_rec": 0.6 * jax.random.normal(k[1], (POST_REC.size,)),
            "w_out": jax.random.normal(k[2], (O, N))}


def _state():
    return {"v": jnp.zeros(N), "a": jnp.zeros(N), "z": jnp.zeros(N), "y": jnp.zeros(O)}


def _inputs(T=30, seed=5):
    k = jax.random.split(jax.random.PRNGKey(seed), 2)
    return jax.random.uniform(k[0], (T, M), maxval=1.5), jax.random.normal(k[1], (T, O))


def _spikes(ys, states):
    return jnp.sum(states["z"])


@pytest.mark.slow
@pytest.mark.parametrize("form", ["segment_sum", "at_add"])
def test_sparse_exact_equals_bptt(form):
    xs, ts = _inputs()
    assert_matches_bptt(sparse_alif(form=form), mse, _params(), _state(), xs, ts, spikes=_spikes)


@pytest.mark.slow
@pytest.mark.parametrize("form", ["segment_sum", "at_add"])
def test_sparse_eprop_equals_its_stop_gradient_twin_and_stores_one_trace_per_synapse(form):
    xs, ts = _inputs()
    learner, _, _, _ = assert_matches_bptt(sparse_alif(form=form), mse, _params(), _state(), xs, ts,
                                           method="eprop", twin=sparse_alif(sg, form), spikes=_spikes)
    report = learner.explain(_params(), _state(), xs[0], print_report=False)
    per_edge = {(b.state, b.param): b for b in report.blocks if b.kind.startswith("per-edge")}
    for name, nnz in (("params['w_in']", POST_IN.size), ("params['w_rec']", POST_REC.size)):
        blocks = [b for (state, param), b in per_edge.items() if param == name]
        assert blocks and all(b.shape == (nnz,) and b.nbytes == 8 * nnz for b in blocks)
    assert all(b.kind != "dense" for b in report.blocks)


def test_trace_bytes_are_proportional_to_the_number_of_synapses():
    xs, _ = _inputs(T=1)
    sizes = []
    for density in (0.1, 0.3, 0.6):
        post, pre = _edges(7, N, M, density)

        def model(p, s, x, post=post, pre=pre):
            v = 0.9 * s["v"] + jax.ops.segment_sum(p["w"] * x[pre], post, num_segments=N) - sg(s["z"])
            z = sp.spike(v - 1.0)
            return {"v": v, "z": z}, v
        plan = sp.online_grad(model, mse, "eprop").plan({"w": jnp.ones(post.size)},
                                                        {"v": jnp.zeros(N), "z": jnp.zeros(N)}, xs[0])
        (w_block,) = [b for b in plan.blocks if b.state == 0]
        sizes.append((post.size, w_block.nbytes))
    assert all(nbytes == 8 * nnz for nnz, nbytes in sizes)


def bcoo_lif(indices):
    def model(p, s, x):
        W = sparse.BCOO((p["w"], indices), shape=(N, M))
        v = p["alpha"] * s["v"] + W @ x - sg(s["z"])
        z = sp.spike(v - 1.0)
        return {"v": v, "z": z}, p["w_out"] @ z
    return model


def test_bcoo_weights_are_per_edge_and_exact():
    indices = jnp.stack([POST_IN, PRE_IN], axis=1)
    params = {"alpha": jnp.linspace(0.8, 0.95, N), "w": 2.0 * jax.random.normal(jax.random.PRNGKey(2), (POST_IN.size,)),
              "w_out": jax.random.normal(jax.random.PRNGKey(3), (O, N))}
    state = {"v": jnp.zeros(N), "z": jnp.zeros(N)}
    xs, ts = _inputs()
    learner, _, _, _ = assert_matches_bptt(bcoo_lif(indices), mse, params, state, xs, ts, spikes=_spikes)
    (w_block,) = [b for b in learner.plan(params, state, xs[0]).blocks if b.param == 1]
    assert w_block.kind.startswith("per-edge") and w_block.shape == (POST_IN.size,)


def test_masked_dense_weight_is_per_edge_with_a_dense_gradient():
    mask = jnp.asarray(np.random.default_rng(4).random((N, M)) < 0.3, jnp.float64)

    def model(p, s, x):
        v = p["alpha"] * s["v"] + (p["w"] * mask) @ x - sg(s["z"])
        z = sp.spike(v - 1.0)
        return {"v": v, "z": z}, p["w_out"] @ z
    params = {"alpha": jnp.linspace(0.8, 0.95, N), "w": 3.0 * jax.random.normal(jax.random.PRNGKey(2), (N, M)),
              "w_out": jax.random.normal(jax.random.PRNGKey(3), (O, N))}
    state = {"v": jnp.zeros(N), "z": jnp.zeros(N)}
    xs, ts = _inputs()
    learner, total, _, _ = assert_matches_bptt(model, mse, params, state, xs, ts, spikes=_spikes)
    assert float(jnp.max(jnp.abs(total.grads["w"] * (1 - mask)))) == 0.0
    # v's block per edge; the spike's recomputed from it (per-neuron coefficients), not carried
    v_block, z_block = sorted((b for b in learner.plan(params, state, xs[0]).blocks if b.param == 1), key=lambda b: b.state)
    assert (type(v_block).__name__, v_block.shape) == ("PerEdge", (int(mask.sum()),))
    assert (type(z_block).__name__, z_block.full_shape, z_block.shape) == ("DerivedPerEdge", v_block.shape, (1, N))


def test_duplicate_edges_are_summed_and_exact():
    post = jnp.concatenate([POST_IN, POST_IN[:3]])
    pre = jnp.concatenate([PRE_IN, PRE_IN[:3]])

    def model(p, s, x):
        v = p["alpha"] * s["v"] + jax.ops.segment_sum(p["w"] * x[pre], post, num_segments=N) - sg(s["z"])
        z = sp.spike(v - 1.0)
        return {"v": v, "z": z}, p["w_out"] @ z
    params = {"alpha": jnp.linspace(0.8, 0.95, N), "w": 2.0 * jax.random.normal(jax.random.PRNGKey(2), (post.size,)),
              "w_out": jax.random.normal(jax.random.PRNGKey(3), (O, N))}
    xs, ts = _inputs()
    assert_matches_bptt(model, mse, params, {"v": jnp.zeros(N), "z": jnp.zeros(N)}, xs, ts, spikes=_spikes)


def test_constant_indices_out_of_range_are_a_clear_error():
    post = POST_IN.at[0].set(N + 2)

    def model(p, s, x):
        v = 0.9 * s + jax.ops.segment_sum(p["w"] * x[PRE_IN], post, num_segments=N)
        return v, v
    learner = sp.online_grad(model, mse)
    with pytest.raises(sp.TracerError, match=r"test_sparse.py.*out of range"):
        learner.init({"w": jnp.ones(post.size)}, jnp.zeros(N), jnp.zeros(M))


# ------------------------------------------------------------------ rewiring while learning
def rewired_alif(cut=lambda z: z):
    """Sparse recurrent ALIF whose recurrent edge list is carried in the state (integers)."""
    def model(p, s, x):
        a = 0.9 * s["a"] + s["z"]
        i = jax.ops.segment_sum(p["w_in"] * x[PRE_IN], POST_IN, num_segments=N)
        i = i + jax.ops.segment_sum(p["w_rec"] * cut(s["z"])[s["pre"]], s["post"], num_segments=N)
        v = p["alpha"] * s["v"] + i - sg(s["z"])
        z = sp.spike(v - 1.0 - p["beta"] * a)
        y = 0.8 * s["y"] + p["w_out"] @ z
        return {**s, "v": v, "a": a, "z": z, "y": y}, y
    return model


@pytest.mark.slow
@pytest.mark.parametrize("method", ["exact", "eprop"])
def test_gradients_stay_equal_to_bptt_across_a_rewiring_step(method):
    """Deep rewiring (Bellec et al. 2018): between two stretches of a stream some recurrent synapses
    are moved to new (pre, post) pairs with new weights, and their traces restart at zero. Every
    surviving synapse's gradient equals BPTT through both stretches; a rewired one's equals BPTT of
    the second stretch only (its new weight did not exist before)."""
    model = rewired_alif() if method == "exact" else rewired_alif(sg)
    twin = rewired_alif()
    params = _params()
    state0 = {**_state(), "pre": PRE_REC, "post": POST_REC}
    xs, ts = _inputs(T=40)
    T1 = 20
    moved = jnp.arange(POST_REC.size) % 5 == 0
    rng = np.random.default_rng(3)
    new_pre = jnp.where(moved, jnp.asarray(rng.integers(0, N, POST_REC.size)), PRE_REC)
    new_post = jnp.where(moved, jnp.asarray(rng.integers(0, N, POST_REC.size)), POST_REC)
    new_w = jnp.where(moved, 0.5 * jnp.asarray(rng.standard_normal(POST_REC.size)), params["w_rec"])
    params2 = {**params, "w_rec": new_w}

    learner = sp.online_grad(model, mse, method=method)
    carry, first = learner.run(params, learner.init(params, state0, xs[0]), xs[:T1], ts[:T1])
    carry = carry._replace(state={**carry.state, "pre": new_pre, "post": new_post})
    restart = {k: (moved if k == "w_rec" else None) for k in params}
    carry = learner.reset_traces(params2, carry, restart)
    _, second = learner.run(params2, carry, xs[T1:], ts[T1:])

    def total(p):      # BPTT of the same stream; a rewired weight exists in the second stretch only
        p1 = {**p, "w_rec": jnp.where(moved, sg(params["w_rec"]), p["w_rec"])}
        ref_model = twin if method == "exact" else model
        def seg(p_, s, xs_, ts_):
            def body(s, inp):
                s, y = ref_model(p_, s, inp[0])
                return s, mse(y, inp[1])
            return jax.lax.scan(body, s, (xs_, ts_))
        s, l1 = seg(p1, state0, xs[:T1], ts[:T1])
        s = {**s, "pre": new_pre, "post": new_post}
        _, l2 = seg(p, s, xs[T1:], ts[T1:])
        return jnp.sum(l1) + jnp.sum(l2)
    grads = jax.grad(total)(params2)
    online = jax.tree_util.tree_map(lambda a, b: a + b, first.grads, second.grads)
    online["w_rec"] = jnp.where(moved, second.grads["w_rec"], online["w_rec"])
    zs = jax.lax.scan(lambda s, x: (model(params, s, x)[0],) * 2, state0, xs)[1]["z"]
    assert float(jnp.sum(zs)) > 0
    assert max_relative_error(online, grads) <= 1e-9
    if method == "eprop":
        kinds = {b.state: b.kind for b in learner.explain(params, state0, xs[0], print_report=False).blocks
                 if b.param == "params['w_rec']" and b.state != "state['y']"}
        assert kinds == {"state['v']": "per-edge eligibility (one entry per existing synapse)",
                         "state['a']": "per-edge eligibility (one entry per existing synapse)",
                         "state['z']": DerivedPerEdge.kind}     # the spike's: recomputed from v's and a's


def test_reset_traces_refuses_bad_input():
    learner = sp.online_grad(sparse_alif(sg), mse, "eprop")
    params, xs = _params(), _inputs(T=2)[0]
    carry = learner.init(params, _state(), xs[0])
    with pytest.raises(ValueError, match=r"restart for params\['w_in'\] has shape \(3,\)"):
        learner.reset_traces(params, carry, {**{k: None for k in params}, "w_in": jnp.zeros(3, bool)})


# ------------------------------------------- a hand-written sparse e-prop (Bellec et al. 2020)
THR, BETA, RHO, DAMP = 1.0, 1.7, 0.96, 0.3
TRIANGLE = sp.surrogates.Triangle(scale=DAMP)


def bellec_sparse_model(p, s, x):
    """Recurrent ALIF with sparse input and recurrent edge lists and a leaky readout (per-unit κ)."""
    v, a, z, y = s
    a = RHO * a + z
    i = jax.ops.segment_sum(p["w_in"] * x[PRE_IN], POST_IN, num_segments=N)
    i = i + jax.ops.segment_sum(p["w_rec"] * z[PRE_REC], POST_REC, num_segments=N)
    v = p["alpha"] * v + i - sg(z) * THR
    z = TRIANGLE((v - THR - BETA * a) / THR)
    y = p["kappa"] * y + p["w_out"] @ z
    return (v, a, z, y), y


def hand_written_sparse_eprop(p, xs, targets):
    """e-prop from the paper's equations, one eligibility per existing synapse (float64 numpy)."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    edges = {"w_in": (np.asarray(PRE_IN), np.asarray(POST_IN)), "w_rec": (np.asarray(PRE_REC), np.asarray(POST_REC))}
    alpha, kappa, w_out = p["alpha"], p["kappa"], p["w_out"]
    k = kappa.size
    v, a, z, y = np.zeros(N), np.zeros(N), np.zeros(N), np.zeros(k)
    ev = {name: np.zeros(pre.size) for name, (pre, _) in edges.items()}
    ea = {name: np.zeros(pre.size) for name, (pre, _) in edges.items()}
    e_prev = {name: np.zeros(pre.size) for name, (pre, _) in edges.items()}
    ebar = {name: np.zeros((k, pre.size)) for name, (pre, _) in edges.items()}
    grads = {name: np.zeros(pre.size) for name, (pre, _) in edges.items()}
    for x, target in zip(np.asarray(xs), np.asarray(targets)):
        presyn = {"w_in": x, "w_rec": z}
        for name, (pre, post) in edges.items():
            ea[name] = RHO * ea[name] + e_prev[name]
            ev[name] = alpha[post] * ev[name] + presyn[name][pre]
        a = RHO * a + z
        i = np.zeros(N)
        for name, (pre, post) in edges.items():
            np.add.at(i, post, p[name] * presyn[name][pre])
        v = alpha * v + i - z * THR
        u = (v - THR - BETA * a) / THR
        z = (u > 0).astype(np.float64)
        psi = DAMP / THR * np.maximum(0.0, 1.0 - np.abs(u))
        y = kappa * y + w_out @ z
        err = y - target
        for name, (pre, post) in edges.items():
            e = psi[post] * (ev[name] - BETA * ea[name])
            e_prev[name] = e
            ebar[name] = kappa[:, None] * ebar[name] + e[None]
            grads[name] += np.einsum("ks,ks->s", w_out[:, post] * err[:, None], ebar[name])
    return grads


def test_sparse_eprop_equals_hand_written_bellec():
    params = {**{k: v for k, v in _params().items() if k in ("alpha", "w_in", "w_out")},
              "w_rec": 0.6 * jax.random.normal(jax.random.PRNGKey(8), (POST_REC.size,)),
              "kappa": jnp.linspace(0.7, 0.9, O)}
    params["w_in"] = 1.6 * params["w_in"]
    state0 = (jnp.zeros(N), jnp.zeros(N), jnp.zeros(N), jnp.zeros(O))
    xs, ts = _inputs(T=40)
    learner = sp.online_grad(bellec_sparse_model, mse, method="eprop")
    _, total = jax.jit(learner.run)(params, learner.init(params, state0, xs[0]), xs, ts)
    zs = jax.lax.scan(lambda s, x: (bellec_sparse_model(params, s, x)[0],) * 2, state0, xs)[1][2]
    assert float(jnp.sum(zs)) > 20
    reference = hand_written_sparse_eprop(params, xs, ts)
    # the tests' mse is Σ_k (y − y*)²; the hand-written program uses E = ½ Σ_k (y − y*)²
    for name in ("w_in", "w_rec"):
        assert max_relative_error(total.grads[name], 2 * reference[name]) <= 1e-9
    # ε^v and ε^a per synapse, the spike's e = ψ (ε^v − β ε^a) recomputed from its two per-neuron
    # coefficients (not carried), and with a per-unit κ one ē per readout unit and synapse: the
    # paper's program's arrays; explain() says why the readout is not filtered
    report = learner.explain(params, state0, xs[0], print_report=False)
    assert any(note.startswith("readout at") and "not one number for every unit" in note for note in report.notes)
    for b in report.blocks:
        nnz = {"params['w_in']": POST_IN.size, "params['w_rec']": POST_REC.size}.get(b.param)
        if nnz is not None:
            expected = {"state[3]": ("dense", (O, nnz)), "state[2]": (DerivedPerEdge.kind, (2, N))}.get(
                b.state, ("per-edge eligibility (one entry per existing synapse)", (nnz,)))
            assert (b.kind, b.shape) == expected, b


@pytest.mark.parametrize("method", ["exact", "eprop"])
def test_signed_strengths_are_per_edge_and_equal_bptt(method):
    """Deep R writes w = s · θ with a fixed sign per synapse: the weight is the parameter times a
    tangent-free factor before it meets the presynaptic value."""
    sign = jnp.asarray(np.random.default_rng(2).choice([-1, 1], POST_REC.size), jnp.int32)

    def model(p, s, x, cut=lambda z: z):
        i = jax.ops.segment_sum(p["w_in"] * x[PRE_IN], POST_IN, num_segments=N)
        i = i + jax.ops.segment_sum((sign * p["theta"]) * cut(s["z"])[PRE_REC], POST_REC, num_segments=N)
        v = p["alpha"] * s["v"] + i - sg(s["z"])
        z = sp.spike(v - 1.0)
        return {"v": v, "z": z}, p["w_out"] @ z
    params = {k: v for k, v in _params().items() if k in ("alpha", "w_in", "w_out")}
    params["theta"] = 0.6 * jnp.abs(jax.random.normal(jax.random.PRNGKey(9), (POST_REC.size,)))
    state = {"v": jnp.zeros(N), "z": jnp.zeros(N)}
    xs, ts = _inputs()
    twin = (lambda p, s, x: model(p, s, x, sg)) if method == "eprop" else None
    learner, _, _, _ = assert_matches_bptt(model, mse, params, state, xs, ts, method=method, twin=twin,
                                           spikes=_spikes)
    if method == "eprop":
        kinds = {b.kind for b in learner.plan(params, state, xs[0]).blocks if b.param == 1}
        assert kinds == {"per-edge eligibility (one entry per existing synapse)"}


def test_a_sparse_program_can_be_built_inside_jit():
    """The first call may come from inside a jitted function (init_batch under jit): the constant
    indices are still checked at build time."""
    learner = sp.online_grad(sparse_alif(sg), mse, "eprop")
    xs, ts = _inputs(T=5)
    batch = 2
    states = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (batch,) + a.shape), _state())

    @jax.jit
    def run(params, states, xs, ts):
        carry = learner.init_batch(params, states, xs[:, 0])
        return learner.run_batch(params, carry, xs, ts)[1].loss
    assert np.isfinite(float(run(_params(), states, jnp.stack([xs] * batch), jnp.stack([ts] * batch))))


@pytest.mark.slow
def test_sparse_ostl_equals_its_twin_and_snap1_equals_masked_rtrl():
    """The other methods on sparse synapses: ostl is BPTT of the cut state update with the true
    output; snap1 is RTRL masked to the one-step pattern (dense oracle, small network)."""
    from models import with_output_copy
    from reference import dense_rtrl
    from test_snap import one_step_pattern
    xs, ts = _inputs(T=15)
    # ostl cuts every mixing path into the new state: the recurrent synapses and the readout
    assert_matches_bptt(sparse_alif(), mse, _params(), _state(), xs, ts, method="ostl",
                        twin=with_output_copy(sparse_alif(sg, cut_readout=sg), sparse_alif()), spikes=_spikes)
    learner = sp.online_grad(sparse_alif(), mse, method="snap1")
    _, total = learner.run(_params(), learner.init(_params(), _state(), xs[0]), xs, ts)
    oracle = dense_rtrl(sparse_alif(), mse, _params(), _state(), xs, ts, one_step_pattern)
    # the recurrent synapses' tangent also carries dz[pre] (exact and snap1 do not cut it), so
    # they are not found as sparse synapses and keep dense traces: test_snap1_recurrent_edge_list
    for name in ("alpha", "beta", "w_in", "w_out"):
        assert max_relative_error(total.grads[name], oracle[name]) <= 1e-9
    kinds = {b.kind for b in learner.plan(_params(), _state(), xs[0]).blocks if b.param == 2 and b.state != 2}
    assert kinds == {"per-edge eligibility (one entry per existing synapse)"}


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="a recurrent edge list's tangent is w·dz[pre] + dw·z[pre]: not a "
                   "sparse synapse for the tracer unless the recurrence is cut, so snap1 keeps its dense "
                   "(n, nnz) traces, entries SnAp-1's one-step pattern drops")
def test_snap1_recurrent_edge_list():
    from reference import dense_rtrl
    from test_snap import one_step_pattern
    xs, ts = _inputs(T=15)
    learner = sp.online_grad(sparse_alif(), mse, method="snap1")
    _, total = learner.run(_params(), learner.init(_params(), _state(), xs[0]), xs, ts)
    oracle = dense_rtrl(sparse_alif(), mse, _params(), _state(), xs, ts, one_step_pattern)
    assert max_relative_error(total.grads["w_rec"], oracle["w_rec"]) <= 1e-9


@pytest.mark.slow
def test_a_spikes_per_edge_trace_is_recomputed_and_its_value_is_the_jacobian():
    """A feed-forward sparse ALIF layer: the spike z = H(v − 1 − β a) of this step's v and a has
    its per-edge block recomputed as D[z←v][post[s]] e[v][s] + D[z←a][post[s]] e[a][s] (two
    per-edge arrays per weight carried, not three), and that value is ∂z_T[post[s]] / ∂w[s] of
    the unrolled steps."""
    def model(p, s, x):
        a = 0.9 * s["a"] + s["z"]
        v = p["alpha"] * s["v"] + jax.ops.segment_sum(p["w"] * x[PRE_IN], POST_IN, num_segments=N) - sg(s["z"])
        z = sp.spike(v - 1.0 - p["beta"] * a)
        return {"v": v, "a": a, "z": z}, p["w_out"] @ z
    params = {"alpha": jnp.linspace(0.8, 0.95, N), "beta": jnp.linspace(0.1, 0.4, N),
              "w": 2.0 * jax.random.normal(jax.random.PRNGKey(5), (POST_IN.size,)),
              "w_out": jax.random.normal(jax.random.PRNGKey(6), (O, N))}
    state = {"v": jnp.zeros(N), "a": jnp.zeros(N), "z": jnp.zeros(N)}
    xs, ts = _inputs(T=12)
    learner, _, _, _ = assert_matches_bptt(model, mse, params, state, xs, ts, spikes=_spikes)
    plan = learner.plan(params, state, xs[0])
    w = plan.param_names.index("params['w']")
    carried = sorted((type(b).__name__, b.shape) for b in plan.blocks if b.param == w)
    assert carried == [("DerivedPerEdge", (2, N))] + [("PerEdge", (POST_IN.size,))] * 2, carried

    carry, _ = learner.run(params, learner.init(params, state, xs[0]), xs, ts)
    kind, value = learner.eligibility(params, carry)[("state['z']", "params['w']")]

    def z_last(wv):
        final = jax.lax.scan(lambda s, x: (model({**params, "w": wv}, s, x)[0], None), state, xs)[0]
        return final["z"]
    expected = jax.jacfwd(z_last)(params["w"])[POST_IN, jnp.arange(POST_IN.size)]     # (N, nnz) at post[s], s
    assert kind == DerivedPerEdge.kind
    assert float(jnp.max(jnp.abs(expected))) > 0       # the surrogate is active somewhere
    assert max_relative_error(value, expected) <= 1e-12
