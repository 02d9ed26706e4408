"""Where the members live: a 1-D mesh over every device, with the member axis padded to fill it.

E members on D devices use ``min(D, E)`` devices; the member axis is padded to the next
multiple of that count with copies of the last member, so that every device works. Padded
members train like any other (they are copies, so they cost time, not correctness) and are
cut from everything that leaves the trainer. With member blocks (``TrainConfig.member_block``)
each device's count is padded to fill its last block too.

The same code runs in one process or in many (``jax.distributed.initialize()`` on every host):
``jax.devices()`` then lists every process's devices, host data is placed with
``jax.make_array_from_callback`` (each process fills only its own devices' shards, from the
same host copy, with no cross-process check), and ``to_host`` gathers what the trainer returns
as numpy with ``process_allgather``.
"""

import hashlib

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MEMBER_AXIS = "members"


def members_mesh(n_members):
  """A 1-D mesh over ``min(n_devices, n_members)`` devices, and the padded member count."""
  devices = jax.devices()
  n_devices = min(len(devices), n_members)
  n_padded = -(-n_members // n_devices) * n_devices
  return Mesh(np.asarray(devices[:n_devices]), (MEMBER_AXIS,)), n_padded


def member_blocks(n_members, n_devices, block):
  """``(n_blocks, n_padded)``: each device's members trained in ``n_blocks`` blocks of at most
  ``block`` members (None: one block), and the member count padded so that every block on
  every device is full."""
  per_device = -(-n_members // n_devices)
  n_blocks = 1 if block is None else -(-per_device // block)
  return n_blocks, n_devices * n_blocks * -(-per_device // n_blocks)


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
  return place(tree, NamedSharding(mesh, PartitionSpec(MEMBER_AXIS)))


def replicate(tree, mesh):
  return place(tree, NamedSharding(mesh, PartitionSpec()))


def place(tree, sharding):
  """Every leaf placed with ``sharding``, which may span the devices of several processes.

  Host values (numpy, and with several processes any array held by this process alone) must
  be the same in every process; each process copies only its own devices' shards. Arrays that
  already live on the mesh are resharded by ``jax.device_put``.
  """
  def put(leaf):
    if isinstance(leaf, jax.Array) and (
        jax.process_count() == 1 or not leaf.is_fully_addressable
        or jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)):
      return jax.device_put(leaf, sharding)
    host = np.asarray(leaf)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
  return jax.tree.map(put, tree)


def to_host(tree):
  """Every leaf as a numpy array in every process; a leaf spread over several processes'
  devices is gathered with ``process_allgather`` (a collective: every process must call it)."""
  def get(leaf):
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
    return np.asarray(leaf)
  return None if tree is None else jax.tree.map(get, tree)


def check_same_in_every_process(name, *values):
  """Raises a ``ValueError`` naming ``name`` unless every process passes equal ``values``
  (compared by a digest of their ``repr``); free with one process."""
  if jax.process_count() == 1:
    return
  digest = np.frombuffer(hashlib.sha256(repr(values).encode()).digest(), np.uint8)
  digests = np.asarray(multihost_utils.process_allgather(digest))
  differ = [i for i in range(len(digests)) if (digests[i] != digest).any()]
  if differ:
    raise ValueError(f"{name}: process {jax.process_index()} differs from processes {differ}; "
                     "every process must call train with the same config, members and data "
                     "shapes")
