"""The primitive registry and the rules it names: every entry is a primitive of the installed
JAX, misspelt names fail loudly, and the structural, index-fact, uniformity and linearity rules
do what they say on small programs."""
import ast
import pathlib

import jax
import jax.numpy as jnp
import pytest
from jax import lax

import sparseprop as sp
from reference import bptt, max_relative_error, mse
from sparseprop.tracer import indices, registry, rules
from sparseprop.tracer.analysis import analyse
from sparseprop.tracer.jaxpr_util import all_equations
from sparseprop.tracer.linearity import affine_equation
from sparseprop.tracer.structure import identity_map

TRACER = pathlib.Path(sp.__file__).parent / "tracer"


# ------------------------------------------------------------------------- the registry
def test_every_entry_is_a_primitive_of_the_installed_jax():
    installed = registry.installed_primitives()
    assert len(registry.entries()) > 100
    for info in registry.entries():
        assert info.primitive in installed.get(info.name, []), info.name
        assert info.uniformity in registry.UNIFORMITY and info.linearity in registry.LINEARITY
        assert info.kind in registry.KINDS


@pytest.mark.parametrize("name", ["copy_p", "expand_dims", "reduce_logsumexp", "scatter_add", "scatter_mul",
                                  "brodcast_in_dim"])
def test_a_name_no_primitive_has_fails_loudly(name):
    assert name not in registry.installed_primitives()
    with pytest.raises(registry.RegistryError, match=repr(name)):
        registry.register(name, structure=registry.CONSERVATIVE)
    with pytest.raises(registry.RegistryError, match=repr(name)):
        registry.lookup(name)


def test_a_primitive_registered_twice_fails_loudly():
    with pytest.raises(registry.RegistryError, match="'sin' registered twice"):
        registry.defelementwise(lax.sin_p)
    with pytest.raises(registry.RegistryError, match="'sin' registered twice"):
        registry.defelementwise(lax.sort_p, lax.sin_p)
    assert not registry.lookup(lax.sort_p).known     # nothing was added


def test_names_of_other_jax_versions_are_registered_where_this_jax_has_them():
    installed = registry.installed_primitives()
    names = {info.name for info in registry.entries()}
    for name in registry.OTHER_JAX_NAMES:
        assert (name in names) == (name in installed), name


def test_control_flow_calls_and_custom_derivatives_are_entries():
    for prim, kind in [(lax.cond_p, "branch"), (lax.scan_p, "loop"), (lax.while_p, "loop"),
                       ("jit", "call"), ("closed_call", "call"), ("remat2", "call"),
                       ("custom_jvp_call", "custom_derivative"), ("custom_vjp_call", "custom_derivative")]:
        assert registry.lookup(prim).kind == kind
    assert registry.lookup("custom_vjp_call").forward is not None
    assert registry.lookup("custom_jvp_call").forward is None
    assert registry.lookup(lax.dot_general_p).synapse and registry.lookup(lax.conv_general_dilated_p).synapse


def test_equations_find_their_entries():
    """The primitive of every equation of these programs is the registered object."""
    @jax.custom_jvp
    def f(x):
        return jnp.sin(x)
    f.defjvp(lambda p, t: (f(p[0]), jnp.cos(p[0]) * t[0]))

    def program(x):
        y = jax.checkpoint(lambda a: jnp.tanh(a) * 2.0)(x)
        y = lax.cond(jnp.sum(y) > 0, jnp.sin, jnp.cos, y)
        y = lax.scan(lambda c, a: (c + a, c), 0.0, y)[1]
        return jax.jit(f)(y) @ jnp.ones((4, 4))
    names = {info.name: info.primitive for info in registry.entries()}
    seen = set()
    for eqn in all_equations(jax.make_jaxpr(program)(jnp.ones(4)).jaxpr):
        assert eqn.primitive.name in names, eqn.primitive.name
        assert registry.lookup(eqn).primitive is eqn.primitive
        seen.add(eqn.primitive.name)
    assert {"remat2", "cond", "scan", "jit", "custom_jvp_call", "dot_general"} <= seen


def test_unknown_primitive_gets_the_conservative_rule():
    info = registry.lookup(lax.sort_p)
    assert not info.known and info.structure is None and info.kind == "leaf"


def test_no_other_tracer_module_names_primitives():
    """Adding a primitive is one entry in registry.py: the modules that read it keep no names."""
    names = {info.name for info in registry.entries()} | {"sort"}
    for module in ("rules", "analysis", "uniformity", "linearity", "indices", "interpreter", "jaxpr_util",
                   "convolution"):
        tree = ast.parse((TRACER / f"{module}.py").read_text())
        literals = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        assert not literals & names, (module, literals & names)


# ------------------------------------------------------------------- structural rules
def _maps(f, *args, track=0):
    """Map of each output of `f(*args)` on tracked argument `track` (None: no dependency),
    and the analysis."""
    jaxpr = jax.make_jaxpr(f)(*args).jaxpr
    deps = [{"x": identity_map(jnp.ndim(a))} if k == track else {} for k, a in enumerate(args)]
    result = analyse(jaxpr, deps, mode="jacobian")
    return [d.get("x") for d in result.outputs], result


X3, X23, X45 = jnp.arange(3.0), jnp.ones((2, 3)), jnp.ones((4, 5))
IDX = jnp.array([0, 2, 1, 4])
CASES = {
    "elementwise": (lambda x, y: jnp.sin(x) * 2.0 + y, (X3, X3), 0, (0,)),
    "broadcast": (lambda x: jnp.broadcast_to(x, (2, 3)), (X3,), 0, (1,)),
    "broadcast of size 1": (lambda x: jnp.broadcast_to(x, (3,)), (jnp.ones(1),), 0, (None,)),
    "reshape keeping an axis": (lambda x: x.reshape(3, 1), (X3,), 0, (0,)),
    "reshape merging axes": (lambda x: x.reshape(6), (X23,), 0, (None, None)),
    "transpose": (lambda x: x.T, (X23,), 0, (1, 0)),
    "dot_general, weights": (lambda w, v: w @ v, (X23, X3), 0, (0, None)),
    "dot_general, input": (lambda w, v: w @ v, (X23, X3), 1, (None,)),
    "gather with an iota index": (lambda x, i: x[jnp.arange(4), i], (X45, IDX), 0, (0, None)),
    "gather without": (lambda x, i: x[i, i], (X45, IDX), 0, (None, None)),
    "scatter with an iota index": (lambda u, x, i: x.at[jnp.arange(4), i].add(u), (jnp.ones(4), X45, IDX), 0,
                                   (0,)),
    "scatter without": (lambda u, x, i: x.at[i, i].add(u), (jnp.ones(4), X45, IDX), 0, (None,)),
    "slice keeping an axis": (lambda x: x[:, 1:3], (X45,), 0, (0, None)),
    "slice with an offset": (lambda x: x[1:], (X3,), 0, (None,)),
    "pad": (lambda x: jnp.pad(x, ((0, 0), (1, 1))), (X45,), 0, (0, None)),
    "reduction": (lambda x: jnp.sum(x, axis=1), (X45,), 0, (0, None)),
    "cumulative": (lambda x: jnp.cumsum(x, axis=1), (X45,), 0, (0, None)),
    "zero derivative": (lambda x: jnp.floor(x), (X3,), 0, None),
    "unknown: sort": (lambda x: jnp.sort(x), (X3,), 0, (None,)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_structure_rules(name):
    f, args, track, expected = CASES[name]
    (out,), result = _maps(f, *args, track=track)
    assert out == expected
    assert any("no structural rule" in n.what for n in result.notes) == name.startswith("unknown")


def test_optimization_barrier_passes_each_operand_to_its_output():
    outs, _ = _maps(lambda x, y: lax.optimization_barrier((x, 2.0 * y)), X3, X3)
    assert outs == [(0,), None]


def test_control_flow_structure():
    (out,), _ = _maps(lambda x: lax.cond(x[0] > 0, jnp.sin, lambda a: a[::-1], x), X3)
    assert out == (None,)      # one branch reverses: the branches' maps merge
    (out,), _ = _maps(lambda x: lax.scan(lambda c, a: (0.5 * c + a, None), x, jnp.ones((3, 3)))[0], X3)
    assert out == (0,)
    (out,), _ = _maps(lambda x: lax.scan(lambda c, a: (jnp.roll(c, 1), None), x, None, length=2)[0], X3)
    assert out == (None,)


def test_rules_give_integer_outputs_no_dependencies():
    (out,), _ = _maps(lambda x: jnp.argmax(x) + jnp.round(x).astype(jnp.int32), X3)
    assert out is None


# ------------------------------------------------------------------------- index facts
def _eqn(f, *args, primitive):
    return next(e for e in all_equations(jax.make_jaxpr(f)(*args).jaxpr) if e.primitive is primitive)


def test_index_facts():
    iota = _eqn(lambda: lax.broadcasted_iota(jnp.int32, (2, 3), 1), primitive=lax.iota_p)
    assert registry.lookup(iota).index_fact(iota, []) == [("all", 1)]
    b = _eqn(lambda i: lax.broadcast_in_dim(i, (4, 3), (1,)), jnp.arange(3), primitive=lax.broadcast_in_dim_p)
    assert registry.lookup(b).index_fact(b, [("all", 0)]) == [("all", 1)]
    b1 = _eqn(lambda i: lax.broadcast_in_dim(i, (4, 3), (0,)), jnp.arange(1), primitive=lax.broadcast_in_dim_p)
    assert registry.lookup(b1).index_fact(b1, [("all", 0)]) == [None]
    lt = _eqn(lambda i: i < 0, jnp.arange(3), primitive=lax.lt_p)
    assert registry.lookup(lt).index_fact(lt, [("all", 0), None]) == [("false",)]
    assert registry.lookup(lt).index_fact(lt, [None, None]) == [None]
    sel = _eqn(lambda p, a, b: lax.select_n(p, a, b), jnp.zeros(3, bool), jnp.arange(3), jnp.arange(3),
               primitive=lax.select_n_p)
    assert registry.lookup(sel).index_fact(sel, [("false",), ("all", 0), None]) == [("all", 0)]
    cat = _eqn(lambda a, b: jnp.concatenate([a, b], axis=1), jnp.zeros((4, 1), int), jnp.zeros((4, 1), int),
               primitive=lax.concatenate_p)
    assert registry.lookup(cat).index_fact(cat, [("all", 0), None]) == [(0, None)]
    assert indices.columns(("all", 0), (4, 2)) == (0, 0)


# -------------------------------------------------------------------------- uniformity
UNIFORM = {
    "scaled by a scalar": (lambda t, c: c * t, True),
    "scaled by a vector": (lambda t, c: jnp.arange(3.0) * t, False),
    "divided by a scalar": (lambda t, c: t / c, True),
    "negated, reshaped": (lambda t, c: (-t).reshape(3, 1).reshape(3), True),
    "sum of uniform terms": (lambda t, c: c * t - 2.0 * t, True),
    "select with a scalar predicate": (lambda t, c: jnp.where(c > 0, t, c * t), True),
    "select with a vector predicate": (lambda t, c: jnp.where(jnp.arange(3) > 0, t, c * t), False),
    "non-linear": (lambda t, c: jnp.sin(t), False),
}


@pytest.mark.parametrize("name", sorted(UNIFORM))
def test_uniformity(name):
    f, expected = UNIFORM[name]
    _, result = _maps(f, X3, jnp.float64(0.7))
    assert result.uniform == [frozenset({"x"}) if expected else frozenset()]


# -------------------------------------------------------------------------- linearity
RULES_IN_G = {
    "scaled": (lambda u, g: g * jnp.exp(-u * u), True),
    "fast sigmoid": (lambda u, g: g / (1.0 + jnp.abs(u)) ** 2, True),
    "window": (lambda u, g: jnp.where(jnp.abs(u) < 0.5, g, 0.0), True),
    "matrix": (lambda u, g: jnp.outer(u, u) @ g, True),
    "jitted": (lambda u, g: jax.jit(lambda a, b: a * b)(g, jnp.tanh(u)), True),
    "affine": (lambda u, g: g * jnp.exp(-u * u) + 0.05 * jnp.tanh(u), False),
    "constant": (lambda u, g: jnp.ones_like(u), False),
    "windowed constant": (lambda u, g: jnp.where(jnp.abs(u) < 0.5, g, 0.1), False),
    "quadratic": (lambda u, g: g * g, False),
    "non-linear": (lambda u, g: jnp.sin(g), False),
    "divided by g": (lambda u, g: u / g, False),
}


@pytest.mark.parametrize("name", sorted(RULES_IN_G))
def test_linearity_classifier(name):
    f, linear = RULES_IN_G[name]
    jaxpr = jax.make_jaxpr(f)(X3, X3).jaxpr
    assert (affine_equation(jaxpr, [False, True]) is None) == linear


# ------------------------------------------------------------------ a new primitive
def test_bessel_i0e_is_per_neuron_and_exact():
    """An elementwise primitive added with one name in registry.py."""
    assert registry.lookup(lax.bessel_i0e_p).structure.rule is rules.elementwise_rule

    def model(p, h, x):
        h = p["a"] * h + lax.bessel_i0e(p["w"] @ x + h)
        return h, p["o"] @ h
    k = jax.random.split(jax.random.PRNGKey(3), 3)
    params = {"a": jnp.linspace(0.3, 0.6, 5), "w": jax.random.normal(k[0], (5, 3)),
              "o": jax.random.normal(k[1], (2, 5))}
    xs, targets = jax.random.normal(k[2], (15, 3)), jnp.zeros((15, 2))
    learner = sp.online_grad(model, mse)
    report = learner.explain(params, jnp.zeros(5), xs[0], print_report=False)
    assert not report.notes and all(b.kind != "dense" for b in report.blocks)
    _, total = learner.run(params, learner.init(params, jnp.zeros(5)), xs, targets)
    _, grads, _ = bptt(model, mse, params, jnp.zeros(5), xs, targets)
    assert max_relative_error(total.grads, grads) <= 1e-9
