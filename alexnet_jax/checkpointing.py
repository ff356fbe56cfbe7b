"""Orbax checkpoints of a run: the train state, the config beside it, the LR policy's state, the
training set's statistics (mean image and PCA, so that the checkpoint alone can classify images)
and the input iterator's position, saved together and atomically (Orbax finalizes a step only
once every item is written, so an interrupted save leaves no half-written checkpoint behind).

`load` reads a checkpoint back without the training machinery: from a workdir, its
`checkpoints/` folder or one step's folder, on local disk or anywhere Orbax reads (gs://...).
"""

import dataclasses
import json
import os

import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from alexnet_jax.errors import CheckpointError
from alexnet_jax.input_pipeline import Normalization

ITEMS = ('state', 'config', 'meta', 'norm', 'data_iter')

# Config sections that change what a checkpoint's numbers mean: resuming with other values would
# silently continue a different experiment.
_MUST_MATCH = ('model', 'optim.momentum', 'optim.weight_decay', 'optim.decay_biases',
               'data.resize_size', 'data.crop_size', 'batch_size', 'seed')


def absolute(workdir: str) -> str:
  """Orbax writes arrays only to absolute paths; gs:// and other URLs pass as given."""
  return workdir if '://' in workdir else os.path.abspath(os.path.expanduser(workdir))


def manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  """Keeps the newest `keep` checkpoints under `<workdir>/checkpoints/<step>/`."""
  workdir = absolute(workdir)
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
  return ocp.CheckpointManager(epath.Path(workdir) / 'checkpoints', options=options,
                               item_names=ITEMS)


def save(mgr: ocp.CheckpointManager, step: int, state, config: ml_collections.ConfigDict,
         meta: dict, norm: Normalization | None = None, data_iter=None) -> bool:
  """Saves step `step`; `meta` is JSON (the LR policy's state, the class names)."""
  items = dict(state=ocp.args.StandardSave(state),
               config=ocp.args.JsonSave(json.loads(config.to_json())),
               meta=ocp.args.JsonSave(meta))
  if norm is not None:
    items['norm'] = ocp.args.StandardSave(dataclasses.asdict(norm))
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


def restore_newest(mgr: ocp.CheckpointManager, abstract_state, config, workdir: str,
                   data_iter=None):
  """(step, state, meta) of the newest checkpoint in `workdir`, or None if there is none."""
  if (latest := mgr.latest_step()) is None:
    return None
  check_compatible(saved_config(mgr, latest), config, workdir)
  return (latest, *restore(mgr, latest, abstract_state, data_iter))


def wait(mgr: ocp.CheckpointManager) -> None:
  """Blocks until the checkpoint being written is on disk."""
  mgr.wait_until_finished()


def close(mgr: ocp.CheckpointManager) -> None:
  mgr.wait_until_finished()
  mgr.close()


def restore(mgr: ocp.CheckpointManager, step: int, abstract_state, data_iter=None):
  """Returns (state, meta) and moves `data_iter` to where the checkpoint left it."""
  items = dict(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore())
  if data_iter is not None:
    items['data_iter'] = grain.checkpoint.CheckpointRestore(data_iter)
  restored = mgr.restore(step, args=ocp.args.Composite(**items))
  return restored['state'], restored['meta']


@dataclasses.dataclass(frozen=True)
class Loaded:
  """What `load` reads: the parameters and what the run knew about its data."""
  params: dict
  config: ml_collections.ConfigDict
  class_names: tuple[str, ...]
  norm: Normalization | None  # None for a checkpoint written before statistics were saved
  step: int
  path: str


def _checkpoints_dir(path: str) -> tuple[epath.Path, int | None]:
  """(the folder of numbered steps, the step `path` names or None) for a workdir, its
  checkpoints/ folder, or one step's folder."""
  p = epath.Path(path if '://' in path else os.path.abspath(os.path.expanduser(path)))
  if (p / 'checkpoints').is_dir():
    return p / 'checkpoints', None
  if p.name.isdigit() and (p / 'config').exists():
    return p.parent, int(p.name)
  if p.is_dir():
    return p, None
  raise CheckpointError(f'{path} does not exist. Give a training run\'s --workdir, its '
                        'checkpoints/ folder or one checkpoint\'s folder (checkpoints/<step>).')


def load(path: str, step: int | None = None) -> Loaded:
  """Reads the parameters, config, class names and statistics of one checkpoint (the newest
  unless `step` or a step folder says otherwise), as host arrays: no optimizer, no devices."""
  directory, named_step = _checkpoints_dir(path)
  options = ocp.CheckpointManagerOptions(create=False)
  with ocp.CheckpointManager(directory, options=options, item_names=ITEMS) as mgr:
    steps = mgr.all_steps()
    step = step if step is not None else named_step if named_step is not None else (
        max(steps) if steps else None)
    if step is None or step not in steps:
      raise CheckpointError(
          f'No checkpoint {"at step " + str(step) + " " if step is not None else ""}in '
          f'{directory} (steps there: {sorted(steps) or "none"}). Point at a workdir that '
          'training has written a checkpoint to, or pick one of the steps listed.')
    items = dict(state=ocp.args.StandardRestore(), config=ocp.args.JsonRestore(),
                 meta=ocp.args.JsonRestore())
    has_norm = (directory / str(step) / 'norm').exists()
    if has_norm:
      items['norm'] = ocp.args.StandardRestore()
    restored = mgr.restore(step, args=ocp.args.Composite(**items))
  params = jax.tree.map(np.asarray, restored['state']['params'])
  norm = None
  if has_norm:
    n = restored['norm']
    norm = Normalization(**{k: np.asarray(v, np.float32) for k, v in n.items()})
  meta = restored['meta'] or {}
  return Loaded(params=params, config=ml_collections.ConfigDict(restored['config']),
                class_names=tuple(meta.get('class_names', ())), norm=norm, step=step,
                path=str(directory / str(step)))
