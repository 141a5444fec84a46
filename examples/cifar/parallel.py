"""The device mesh and placing host data on it, across processes."""

import hashlib

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np


def mesh_over_local_devices(num_devices: int | None = None) -> Mesh:
  """The first ``num_devices`` devices (default all) on one 'data' axis."""
  devices = jax.devices()
  return Mesh(np.array(devices[: num_devices or len(devices)]), ('data',))


def replicate(tree, mesh: Mesh):
  """Places a host tree replicated on every device of ``mesh``, all processes."""
  sharding = NamedSharding(mesh, P())
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def put(x):
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    return jax.make_array_from_process_local_data(sharding, np.asarray(x))

  return jax.tree.map(put, tree)


def to_global(mesh: Mesh, *arrays: np.ndarray):
  """Host batches -> arrays sharded over 'data' across all processes.

  Every process iterates the same global batches (same seeds); each one
  contributes its contiguous slice, which lands on its own devices.
  """
  sharding = NamedSharding(mesh, P('data'))
  n, i = jax.process_count(), jax.process_index()
  out = []
  for a in arrays:
    per = len(a) // n
    out.append(
      jax.make_array_from_process_local_data(sharding, a[i * per : (i + 1) * per], a.shape)
    )
  return out


def params_digest(params) -> str:
  """SHA-256 of this process's copy of the (replicated) params, leaf by leaf.

  Every process of a multi-host run computes it on its own devices' data:
  equal digests prove that the replicas hold bit-identical parameters.
  """
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    digest.update(jax.tree_util.keystr(path).encode())
    digest.update(np.asarray(leaf.addressable_shards[0].data).tobytes())
  return digest.hexdigest()
