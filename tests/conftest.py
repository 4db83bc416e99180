import jax

# Gradient comparisons are made in float64 (DESIGN §4).
jax.config.update("jax_enable_x64", True)
