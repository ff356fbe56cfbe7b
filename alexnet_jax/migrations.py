"""A saved config read by today's code: the fields retired since a checkpoint was written are
dropped, those added since take the value the older code behaved as, and the sections that give
a checkpoint's numbers their meaning must match for a run to resume from it.
"""

import json

import ml_collections

from alexnet_jax.errors import CheckpointError

# Config sections that change what a checkpoint's numbers mean: resuming with other values would
# silently continue a different experiment.
_MUST_MATCH = ('model', 'optim.momentum', 'optim.weight_decay', 'optim.decay_biases',
               'optim.fc8_lr_scale', 'optim.bias_lr_scale', 'data.resize_size', 'data.crop_size',
               'batch_size', 'seed',
               'data.workers')  # the input position is saved per worker process
# Fields older checkpoints hold that no longer exist: switches of the implementation, which is
# not part of a model's identity (the top-level `implementation` field chooses it now).
_RETIRED = ('split_towers', 'space_to_depth')
# Fields added after checkpoints were written, with the value their older code behaved as.
ADDED_FIELDS = {'optim.fc8_lr_scale': 1.0, 'optim.bias_lr_scale': 1.0,
                'model.positive_bias': 1.0, 'model.lrn_across_towers': False,
                'model.hidden_fc_init_std': None}


def _flatten(d: dict, prefix: str = '') -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = list(v) if isinstance(v, tuple) else v
  return out


def without_retired(saved: dict) -> dict:
  """A saved config without the fields that no longer exist, so that today's ConfigDict and
  comparison take it."""
  model = {k: v for k, v in saved.get('model', {}).items() if k not in _RETIRED}
  return {**saved, 'model': model} if 'model' in saved else dict(saved)


def comparable(saved: dict, current: dict) -> tuple[dict, dict]:
  """A saved config and today's, each flattened to {'model.width': ..., ...} (tuples as lists),
  the saved one read as today's code reads it: without the retired fields, and with each field
  added since that `current` has, at the value the older code behaved as."""
  old, new = _flatten(without_retired(saved)), _flatten(current)
  old.update({k: v for k, v in ADDED_FIELDS.items() if k in new and k not in old})
  return old, new


def check_compatible(saved: dict, config: ml_collections.ConfigDict, where: str) -> None:
  """Raises CheckpointError if the checkpoint was trained with a different model or recipe."""
  old, new = comparable(saved, json.loads(config.to_json()))
  diffs = [f'{k}: checkpoint {old.get(k)!r}, config {new.get(k)!r}'
           for k in sorted(set(old) | set(new))
           if old.get(k) != new.get(k)
           and any(k == p or k.startswith(p + '.') for p in _MUST_MATCH)]
  if diffs:
    raise CheckpointError(
        f'The checkpoint in {where} was written by a different config ({"; ".join(diffs[:6])}'
        f'{" ..." if len(diffs) > 6 else ""}), so this run cannot resume from it. Use a new '
        '--workdir for the new config, or run with the config stored beside the checkpoint '
        '(checkpoints/<step>/config).')
