"""Orbax checkpoints of a run: the train state, the config beside it, the LR policy's state and
the input iterator's position, saved together and atomically (Orbax finalizes a step only once
every item is written, so an interrupted save leaves no half-written checkpoint behind).
"""

import json
import os

import grain
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from alexnet_jax.errors import CheckpointError

# Config sections that change what a checkpoint's numbers mean: resuming with other values would
# silently continue a different experiment.
_MUST_MATCH = ('model', 'optim.momentum', 'optim.weight_decay', 'optim.decay_biases',
               'data.resize_size', 'data.crop_size', 'batch_size', 'seed')


def manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  """Keeps the newest `keep` checkpoints under `<workdir>/checkpoints/<step>/`."""
  if '://' not in workdir:  # Orbax writes arrays only to absolute paths; gs:// etc. pass as given
    workdir = os.path.abspath(os.path.expanduser(workdir))
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
  return ocp.CheckpointManager(epath.Path(workdir) / 'checkpoints', options=options,
                               item_names=('state', 'config', 'meta', 'data_iter'))


def save(mgr: ocp.CheckpointManager, step: int, state, config: ml_collections.ConfigDict,
         meta: dict, data_iter=None) -> bool:
  """Saves step `step`; `meta` is JSON (the LR policy's state, the class names)."""
  items = dict(state=ocp.args.StandardSave(state),
               config=ocp.args.JsonSave(json.loads(config.to_json())),
               meta=ocp.args.JsonSave(meta))
  if data_iter is not None:
    items['data_iter'] = grain.checkpoint.CheckpointSave(data_iter)
  return mgr.save(step, args=ocp.args.Composite(**items), force=True)  # the loop decides when


def saved_config(mgr: ocp.CheckpointManager, step: int) -> dict:
  return mgr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))['config']


def _flatten(d: dict, prefix: str = '') -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = list(v) if isinstance(v, tuple) else v
  return out


def check_compatible(saved: dict, config: ml_collections.ConfigDict, where: str) -> None:
  """Raises CheckpointError if the checkpoint was trained with a different model or recipe."""
  old, new = _flatten(saved), _flatten(json.loads(config.to_json()))
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


def restore(mgr: ocp.CheckpointManager, step: int, abstract_state, data_iter=None):
  """Returns (state, meta) and moves `data_iter` to where the checkpoint left it."""
  items = dict(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore())
  if data_iter is not None:
    items['data_iter'] = grain.checkpoint.CheckpointRestore(data_iter)
  restored = mgr.restore(step, args=ocp.args.Composite(**items))
  return restored['state'], restored['meta']
