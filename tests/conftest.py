import jax
import pytest

# Gradient comparisons are made in float64, so that exact methods can be held to a relative error of 1e-9.
jax.config.update("jax_enable_x64", True)


@pytest.fixture(autouse=True, scope="module")
def _fresh_compilation_caches():
    """Drop compiled programs after each test module: hundreds of models are compiled in one
    run, and a long-lived process otherwise keeps every executable alive."""
    yield
    jax.clear_caches()

