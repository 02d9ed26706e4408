"""Each member's random streams, and the order in which it sees the training data.

Member ``i`` draws everything from ``fold_in(PRNGKey(seed), i)``: its initial weights, its data
order and its dropout masks each from a sub-stream, so it trains identically alone
(``members=[i]``) or inside any ensemble.
"""

import jax

from jaxens import _permutation

# Sub-streams of a member's key; the shared data order uses the root key's last stream.
INIT, DATA, DROPOUT = 0, 1, 2
_SHARED_STREAM = _BOOTSTRAP_STREAM = 2**32 - 1


def member_key(seed, member):
  """The key of member ``member``: ``fold_in(PRNGKey(seed), member)``."""
  return jax.random.fold_in(jax.random.PRNGKey(seed), member)


def step_rng(key, step):
  """The training-mode rng (dropout, noise) of one member at one global step."""
  return jax.random.fold_in(jax.random.fold_in(key, DROPOUT), step)


def epoch_order(data_order, batch_size, key, root_key, epoch, n_train, n_steps):
  """The (n_steps, batch_size) training indices of one member for one epoch."""
  data_key = jax.random.fold_in(key, DATA)
  if data_order == "shared":
    data_key = jax.random.fold_in(root_key, _SHARED_STREAM)
  epoch_key = jax.random.fold_in(data_key, epoch)
  order = _permutation.permutation(epoch_key, n_train)
  if data_order == "bootstrap":
    # One resample per member for the whole run, reshuffled every epoch.
    resample = jax.random.randint(
        jax.random.fold_in(data_key, _BOOTSTRAP_STREAM), (n_train,), 0, n_train)
    order = resample[order]
  return order[:n_steps * batch_size].reshape(n_steps, batch_size)
