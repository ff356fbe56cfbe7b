"""Checksums of a checkpoint's arrays, as Orbax stores their bytes without one and flipped bytes
read back as numbers: `save` records one per array in the checkpoint's meta, and the reader
compares them with what it read, so that changed bytes count as damage.
"""

import jax
import jax.numpy as jnp
import numpy as np

from alexnet_jax import damage


def _fingerprint(x: jax.Array) -> jax.Array:
  """A 32-bit sum of the array's bits, each word weighted by an odd number that depends on its
  position: changing any one element changes it. Computed where the array lies, shards too."""
  if x.dtype == jnp.bool_:
    words = x.astype(jnp.uint32)
  elif x.dtype.itemsize >= 4:
    words = jax.lax.bitcast_convert_type(x, jnp.uint32)
  else:
    words = jax.lax.bitcast_convert_type(x, jnp.dtype(f'uint{8 * x.dtype.itemsize}'))
    words = words.astype(jnp.uint32)
  index, stride = jnp.zeros(words.shape, jnp.uint32), 1
  for dim in reversed(range(words.ndim)):
    index = index + jax.lax.broadcasted_iota(jnp.uint32, words.shape, dim) * np.uint32(stride)
    stride *= words.shape[dim]
  return jnp.sum((words ^ (index * np.uint32(0x9E3779B9))) * (2 * index + 1), dtype=jnp.uint32)


_fingerprints = jax.jit(lambda tree: jax.tree.map(_fingerprint, tree))


def compute(tree) -> dict[str, str]:
  """{'params/conv1/kernel': '1a2b3c4d', ...}: a fingerprint of every array of `tree`."""
  prints = _fingerprints(tree)
  return {jax.tree_util.keystr(path, simple=True, separator='/'):
          f'{int(np.asarray(value.addressable_data(0))):08x}'
          for path, value in jax.tree_util.tree_flatten_with_path(prints)[0]}


def verify(expected: dict | None, tree, item: str) -> None:
  """Raises damage.Damaged if an array of `tree` differs from the one that was saved."""
  if not expected:  # a checkpoint written before checksums were recorded
    return
  got = compute(tree)
  bad = [k for k, v in expected.items() if got.get(k) != v]
  if bad:
    raise damage.Damaged(f'{item}: {len(bad)} array(s) differ from what was saved (checksum '
                         f'of {", ".join(bad[:3])}{" ..." if len(bad) > 3 else ""})')
