"""Test-wide JAX settings: implicit rank promotion is an error, so silent broadcasts fail loudly."""

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")
