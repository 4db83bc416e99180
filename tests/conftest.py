import jax

# Gradient comparisons are made in float64, so that exact methods can be held to a relative error of 1e-9.
jax.config.update("jax_enable_x64", True)
