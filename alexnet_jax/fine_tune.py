"""A run that starts from another checkpoint's parameters (`--config.init_from`): a fine-tune.

The checkpoint may be any this project reads: a training run's workdir, its checkpoints/ folder
or one step's folder, or an imported network (alexnet_jax.import_weights). Only the parameters
come from it; the step, the optimizer's momentum, the learning-rate policy and the training
set's statistics start fresh, and the new run resumes from its own checkpoints as any other.

The networks must be the same, except for the number of classes: where it differs, fc8 keeps
the new run's own random initialization, and the log says so.
"""

import jax
import ml_collections
import numpy as np
from absl import logging

from alexnet_jax import checkpointing, migrations
from alexnet_jax.errors import CheckpointError

# Model fields that only say how a network is initialized or trained, not what it computes.
_FREE = frozenset({'num_classes', 'dtype', 'init_scheme', 'init_std', 'hidden_fc_init_std',
                   'positive_bias', 'input_std', 'dropout_rate'})
_OUTPUT = 'fc8'


def _differing_fields(saved: ml_collections.ConfigDict, model: ml_collections.ConfigDict
                      ) -> list[str]:
  old, new = migrations.comparable({'model': saved.to_dict()}, {'model': model.to_dict()})
  return [f'{k}: checkpoint {old.get(k)!r}, config {new.get(k)!r}'
          for k in sorted(set(old) | set(new))
          if k.split('.', 1)[1] not in _FREE and old.get(k) != new.get(k)]


def _flat(params) -> dict[str, jax.Array]:
  return {jax.tree_util.keystr(path, simple=True, separator='/'): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}


def initial_params(path: str, model_config: ml_collections.ConfigDict, fresh):
  """The parameters a fine-tune starts from: the checkpoint's at `path`, laid out as `fresh`
  (the new run's initialized parameters, whose shardings they take), and fresh's fc8 where the
  class counts differ. Raises CheckpointError naming the layer or field that does not match."""
  loaded = checkpointing.load(path)
  where = f'--config.init_from={path} (step {loaded.step})'
  old, new = _flat(loaded.params), _flat(fresh)
  reinit = loaded.config.model.num_classes != model_config.num_classes
  for name in sorted(set(old) | set(new)):
    if reinit and name.startswith(_OUTPUT + '/'):
      continue
    if name not in old or name not in new or tuple(old[name].shape) != tuple(new[name].shape):
      shape = lambda d: tuple(d[name].shape) if name in d else 'absent'
      raise CheckpointError(f'{where}: layer {name.split("/")[0]} does not match: {name} is '
                            f'{shape(old)} there and {shape(new)} here. Use the model fields '
                            'of the config it was written with.')
  if diffs := _differing_fields(loaded.config.model, model_config):
    raise CheckpointError(f'{where} computes a different network: {"; ".join(diffs[:4])}. Use '
                          'the model fields of the config it was written with.')
  if reinit:
    logging.warning('init_from: fc8 has %d outputs in %s and %d here: fc8 is initialized anew, '
                    'every other layer comes from step %d.', loaded.config.model.num_classes,
                    loaded.path, model_config.num_classes, loaded.step)
  logging.info('Initialized from %s (step %d).', loaded.path, loaded.step)

  def take(name, leaf):
    if reinit and name.startswith(_OUTPUT + '/'):
      return leaf
    value = np.asarray(old[name], leaf.dtype)
    return jax.make_array_from_callback(value.shape, leaf.sharding, lambda index: value[index])

  # `new` holds fresh's leaves in its flattening order.
  return jax.tree.unflatten(jax.tree.structure(fresh), [take(n, l) for n, l in new.items()])
