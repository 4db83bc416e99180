"""Data parallelism over two (forced host) devices, and over two processes joined by
jax.distributed, equals the single-device result."""
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""\
    import jax, jax.numpy as jnp
    import sparseprop as sp
    from sparseprop import neurons
    from sparseprop.parallel import (make_mesh, data_parallel_init, data_parallel_run,
                                     data_parallel_step, shard_batch)

    assert jax.device_count() == 2, jax.devices()
    assert jnp.zeros(()).dtype == jnp.float64
    net = neurons.Sequential((neurons.ALIF(recurrent=True), neurons.LeakyIntegrator()))
    sizes, B, T = (5, 7, 3), 4, 24
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    params = net.init_params(k[0], sizes)
    states0 = jax.tree_util.tree_map(lambda v: jnp.broadcast_to(v, (B,) + v.shape), net.init_state(sizes))
    xs = jax.random.bernoulli(k[1], 0.4, (B, T, 5)).astype(jnp.float64) * 2.0
    targets = jax.random.normal(k[2], (B, T, 3))
    loss_fn = lambda y, t: 0.5 * jnp.sum((y - t) ** 2)
    learner = sp.online_grad(net, loss_fn, method="exact")
    leaves = jax.tree_util.tree_leaves

    def max_rel(a, b):
        return max(float(jnp.max(jnp.abs(x - y)) / max(float(jnp.max(jnp.abs(y))), 1e-300))
                   for x, y in zip(leaves(a), leaves(b)))

    # single device: the plain vmapped run, jitted on device 0
    def single(params, states0, xs, targets):
        carry = jax.vmap(learner.init, in_axes=(None, 0, 0))(params, states0, xs[:, 0])
        carry, total = jax.vmap(learner.run, in_axes=(None, 0, 0, 0))(params, carry, xs, targets)
        return carry, jnp.sum(total.loss), jax.tree_util.tree_map(lambda g: g.sum(0), total.grads), total.outputs
    s_carry, s_loss, s_grads, s_outputs = jax.jit(single)(params, states0, xs, targets)
    # the default reduction is run_batch's: the sum over the batch
    rb_carry = learner.init_batch(params, states0, xs[:, 0])
    _, rb_total = jax.jit(learner.run_batch)(params, rb_carry, xs, targets)
    assert max_rel(rb_total.grads, s_grads) <= 1e-12

    mesh = make_mesh()
    assert mesh.devices.size == 2
    carry = data_parallel_init(learner, mesh)(params, states0, xs[:, 0])
    run = data_parallel_run(learner, mesh)
    # two chunks, the second placed by shard_batch: chunks chain like one run
    carry, first = run(params, carry, xs[:, :10], targets[:, :10])
    carry, second = run(params, carry, shard_batch(mesh, xs[:, 10:]), shard_batch(mesh, targets[:, 10:]))
    grads = jax.tree_util.tree_map(jnp.add, first.grads, second.grads)

    assert max_rel(grads, s_grads) <= 1e-12, max_rel(grads, s_grads)
    assert abs(float(first.loss + second.loss) - float(s_loss)) <= 1e-12 * abs(float(s_loss))
    assert max_rel(carry, s_carry) <= 1e-12
    outputs = jnp.concatenate([first.outputs, second.outputs], axis=1)
    assert max_rel(outputs, s_outputs) <= 1e-12

    # and BPTT agrees (the online method is exact)
    _, bptt = jax.vmap(sp.bptt_grad(net, loss_fn), in_axes=(None, 0, 0, 0))(params, states0, xs, targets)
    assert max_rel(grads, jax.tree_util.tree_map(lambda g: g.sum(0), bptt)) <= 1e-9

    # reduce="mean" divides by the batch size
    mean_carry = data_parallel_init(learner, mesh)(params, states0, xs[:, 0])
    _, mean = data_parallel_run(learner, mesh, reduce="mean")(params, mean_carry, xs, targets)
    assert max_rel(mean.grads, jax.tree_util.tree_map(lambda g: g / B, s_grads)) <= 1e-12
    assert abs(float(mean.loss) * B - float(s_loss)) <= 1e-12 * abs(float(s_loss))

    # really sharded: batch-carrying arrays split in halves over both devices, grads replicated
    for leaf in leaves(carry) + [first.outputs]:
        assert len(leaf.sharding.device_set) == 2, leaf.sharding
        shards = leaf.addressable_shards
        assert len(shards) == 2 and {s.device for s in shards} == set(jax.devices())
        assert all(s.data.shape[0] == B // 2 for s in shards), [s.data.shape for s in shards]
    for leaf in leaves(grads):
        assert len(leaf.sharding.device_set) == 2 and leaf.sharding.is_fully_replicated

    # per-step streaming variant
    carry = data_parallel_init(learner, mesh)(params, states0, xs[:, 0])
    step = data_parallel_step(learner, mesh)
    total = jax.tree_util.tree_map(jnp.zeros_like, params)
    for t in range(T):
        carry, out = step(params, carry, xs[:, t], targets[:, t])
        total = jax.tree_util.tree_map(jnp.add, total, out.grads)
    assert max_rel(total, s_grads) <= 1e-12

    # a batch that does not divide over the devices is refused clearly
    try:
        run(params, carry, xs[:3], targets[:3])
    except ValueError as e:
        assert "not a multiple of the 2 devices" in str(e), e
    else:
        raise AssertionError("odd batch accepted")
    print("PARALLEL OK")
    """)


@pytest.mark.slow
def test_data_parallel_matches_single_device_over_two_devices(tmp_path):
    script = tmp_path / "parallel_check.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_ENABLE_X64="1",
               JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PARALLEL OK" in result.stdout


WORKER = textwrap.dedent("""\
    import sys
    import jax
    pid, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    # the coordinator listens on this machine only; one CPU device per process
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid,
                               initialization_timeout=120)
    import jax.numpy as jnp
    import numpy as np
    import sparseprop as sp
    from sparseprop import neurons
    from sparseprop.parallel import batch_sharding, data_parallel_init, data_parallel_run, make_mesh, replicated

    assert jax.process_count() == 2 and len(jax.local_devices()) == 1 and jax.device_count() == 2
    net = neurons.Sequential((neurons.ALIF(recurrent=True), neurons.LeakyIntegrator()))
    sizes, B, T = (5, 7, 3), 4, 16
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    params = net.init_params(k[0], sizes)
    states0 = net.init_state(sizes, batch=B)
    xs = jax.random.bernoulli(k[1], 0.4, (B, T, 5)).astype(jnp.float64) * 2.0
    targets = jax.random.normal(k[2], (B, T, 3))
    learner = sp.online_grad(net, lambda y, t: 0.5 * jnp.sum((y - t) ** 2), method="exact")

    mesh = make_mesh()                                   # both processes' devices
    rows = slice(pid * B // 2, (pid + 1) * B // 2)       # the rows this process feeds
    local = lambda tree: jax.tree_util.tree_map(        # noqa: E731
        lambda v: jax.make_array_from_process_local_data(batch_sharding(mesh), np.asarray(v)[rows]), tree)
    everywhere = lambda tree: jax.tree_util.tree_map(   # noqa: E731
        lambda v: jax.make_array_from_process_local_data(replicated(mesh), np.asarray(v)), tree)
    params = everywhere(params)
    carry = data_parallel_init(learner, mesh)(params, local(states0), local(xs[:, 0]))
    _, total = data_parallel_run(learner, mesh)(params, carry, local(xs), local(targets))
    leaves = [np.asarray(g) for g in jax.tree_util.tree_leaves(total.grads)]
    np.savez(out, loss=np.asarray(total.loss), *leaves)
    print("WORKER OK", pid, flush=True)
    """)


@pytest.mark.slow
def test_two_processes_with_jax_distributed_give_the_one_process_gradient(tmp_path):
    """Two processes on this machine (coordinator on 127.0.0.1), one CPU device each, each
    feeding half of the batch: the gradient equals run_batch's in this one process."""
    import socket

    import jax
    import jax.numpy as jnp
    import numpy as np

    import sparseprop as sp
    from sparseprop import neurons

    with socket.socket() as s:          # a free port on the loopback interface
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, JAX_ENABLE_X64="1", JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    workers = [subprocess.Popen([sys.executable, str(script), str(pid), str(port), str(tmp_path / f"grads{pid}.npz")],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
               for pid in range(2)]
    try:
        logs = [w.communicate(timeout=300)[0] for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    for pid, (w, log) in enumerate(zip(workers, logs)):
        assert w.returncode == 0 and f"WORKER OK {pid}" in log, log

    net = neurons.Sequential((neurons.ALIF(recurrent=True), neurons.LeakyIntegrator()))
    sizes, B, T = (5, 7, 3), 4, 16
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    params = net.init_params(k[0], sizes)
    xs = jax.random.bernoulli(k[1], 0.4, (B, T, 5)).astype(jnp.float64) * 2.0
    targets = jax.random.normal(k[2], (B, T, 3))
    learner = sp.online_grad(net, lambda y, t: 0.5 * jnp.sum((y - t) ** 2), method="exact")
    carry = learner.init_batch(params, net.init_state(sizes, batch=B), xs[:, 0])
    _, total = learner.run_batch(params, carry, xs, targets)
    reference = [np.asarray(g) for g in jax.tree_util.tree_leaves(total.grads)]
    for pid in range(2):
        got = np.load(tmp_path / f"grads{pid}.npz")
        assert abs(float(got["loss"]) - float(total.loss)) <= 1e-12 * abs(float(total.loss))
        for i, ref in enumerate(reference):
            np.testing.assert_allclose(got[f"arr_{i}"], ref, rtol=1e-12, atol=1e-12 * np.max(np.abs(ref)))
