"""The device mesh and how the train state and batches lie on it (docs/paper.md, "Two towers").

The mesh has two axes: `data` (each row trains on its own slice of the batch) and `model` (1, or
2 for the paper's layout: one tower per device). Parameters are sharded by the rules below, over
their names, and XLA derives the collectives from these shardings (the grouped convolutions
stay on their tower's device, see implementations.Implementation.conv): the towers meet only in
conv3 and the fully connected layers, and gradients are summed over `data`.
"""

import functools
import re

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from alexnet_jax import implementations
from alexnet_jax.errors import require
from alexnet_jax.implementations import TOWER_AXIS

AXES = ('data', TOWER_AXIS)

# (parameter-path pattern, sharding), first match wins. With model = 2 each device holds its
# tower's half of every layer: the kernels and biases of its output channels or units.
RULES = (
    (r'conv\d/kernel$', P(None, None, None, TOWER_AXIS)),
    (r'fc\d/kernel$', P(None, TOWER_AXIS)),
    (r'(conv|fc)\d/bias$', P(TOWER_AXIS)),
    (r'.*', P()),  # the step count and the learning rate: one copy on every device
)


def model_axis_size(mesh_config: ml_collections.ConfigDict, towers: int, devices: int) -> int:
  """`mesh.model`, with 0 (auto) resolved: 2 (one tower per device) if both exist, else 1."""
  size = mesh_config.model
  require(size in (0, 1, 2), 'mesh.model', size,
          'choose 1 (no model split), 2 (one tower per device) or 0 (2 where possible)')
  if size == 0:
    return 2 if towers == 2 and devices >= 2 and devices % 2 == 0 else 1
  return size


def create_mesh(config: ml_collections.ConfigDict, devices=None) -> Mesh:
  """The (data, model) mesh over all devices, in jax.devices() order, which every part uses.

  Raises ConfigError where the config cannot be laid out on these devices.
  """
  devices = jax.devices() if devices is None else devices
  n, towers = len(devices), config.model.get('towers', 1)
  model = model_axis_size(config.mesh, towers, n)
  require(model == 1 or towers == model, 'mesh.model', model,
          f'a model axis of {model} puts one tower per device, but model.towers = {towers}; '
          'use mesh.model=1 for a one-tower net')
  require(n % model == 0, 'mesh.model', model,
          f'one tower per device needs an even number of devices and there are {n}; use '
          'mesh.model=1')
  # jax.devices() lists each process's devices together: a pair must not straddle two hosts.
  require(jax.local_device_count() % model == 0, 'mesh.model', model,
          f'each process has {jax.local_device_count()} devices, so a tower pair would span '
          'two hosts; use mesh.model=1')
  data = n // model
  require(config.batch_size % data == 0, 'batch_size', config.batch_size,
          f'the batch is split over the {data} rows of the data axis ({n} devices / mesh.model '
          f'{model}); use a multiple of {data}')
  return Mesh(np.asarray(devices).reshape(data, model), AXES)


def _path(keys) -> str:
  return jax.tree_util.keystr(keys, simple=True, separator='/')


def _spec(path: str, shape: tuple[int, ...], mesh: Mesh) -> P:
  spec = next(spec for pattern, spec in RULES if re.search(pattern, path))
  # A dimension that does not split evenly (an odd class count in fc8) stays whole.
  fits = len(spec) <= len(shape) and all(
      axis is None or shape[i] % mesh.shape[axis] == 0 for i, axis in enumerate(spec))
  return spec if fits else P()


def state_shardings(tree, mesh: Mesh):
  """A NamedSharding for every array of `tree` (params, the optimizer's copies of them, ...)."""
  return jax.tree_util.tree_map_with_path(
      lambda keys, x: NamedSharding(mesh, _spec(_path(keys), np.shape(x), mesh)), tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Examples split over `data`; both towers of a data row see the same examples."""
  return NamedSharding(mesh, P('data'))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def shard_batch(batch: dict, sharding: NamedSharding) -> dict:
  """This process's share of the global batch -> global arrays, rows in process order."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


def jit(fn, mesh: Mesh, in_shardings, out_shardings,
        implementation: implementations.Implementation, donate_argnums=()):
  """`implementation.jit` with shardings, tracing `fn` inside `mesh` so the towers find their
  devices."""

  @functools.wraps(fn)
  def within_mesh(*args):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return fn(*args)

  return implementation.jit(within_mesh, in_shardings=in_shardings, out_shardings=out_shardings,
                            donate_argnums=donate_argnums)
