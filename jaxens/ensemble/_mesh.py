"""Where the members live: a 1-D mesh over every device, with the member axis padded to fill it.

E members on D devices use ``min(D, E)`` devices; the member axis is padded to the next
multiple of that count with copies of the last member, so that every device works. Padded
members train like any other (they are copies, so they cost time, not correctness) and are
cut from everything that leaves the trainer.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MEMBER_AXIS = "members"


def members_mesh(n_members):
  """A 1-D mesh over ``min(n_devices, n_members)`` devices, and the padded member count."""
  devices = jax.devices()
  n_devices = min(len(devices), n_members)
  n_padded = -(-n_members // n_devices) * n_devices
  return Mesh(np.asarray(devices[:n_devices]), (MEMBER_AXIS,)), n_padded


def pad_members(tree, n_padded):
  """Every leaf's axis 0 padded to ``n_padded`` rows with copies of its last row."""
  def pad(leaf):
    extra = n_padded - leaf.shape[0]
    if not extra:
      return leaf
    xp = np if isinstance(leaf, np.ndarray) else jnp  # jnp for PRNG key arrays.
    return xp.concatenate([leaf, xp.repeat(leaf[-1:], extra, axis=0)])
  return jax.tree.map(pad, tree)


def unpad_members(tree, n_members):
  """The first ``n_members`` rows of every leaf (no copy when nothing was padded)."""
  return jax.tree.map(lambda leaf: leaf if leaf.shape[0] == n_members else leaf[:n_members], tree)


def shard_members(tree, mesh):
  """Places every leaf with its axis 0 split over the mesh's ``members`` axis."""
  return jax.device_put(tree, NamedSharding(mesh, PartitionSpec(MEMBER_AXIS)))


def replicate(tree, mesh):
  return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))
