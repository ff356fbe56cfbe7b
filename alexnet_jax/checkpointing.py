"""Orbax checkpoints of a run: the train state, the config beside it, the LR policy's state, the
training set's statistics (mean image and PCA, so that the checkpoint alone can classify images)
and the input iterator's position, saved together and atomically (Orbax finalizes a step only
once every item is written, so an interrupted save leaves no half-written checkpoint behind).

Held here, the Orbax wiring: the manager (the newest checkpoints kept, and the best), `save` and
`finish`, `restore_newest` for a run that resumes, and `load`, which reads a checkpoint back
without the training machinery, onto whatever devices this process has: from a workdir, its
`checkpoints/` folder or one step's folder, on local disk or anywhere Orbax reads (gs://...).
Both read a step with one reader, so that a run and a notebook trust the same evidence.

What can go wrong on disk is answered with the earlier checkpoints kept:
  * a write that fails (a full disk, a quota, a read-only or foreign folder) stops the run with
    one CheckpointError naming the step, the reason and the newest intact checkpoint, and a save
    that cannot fit is refused before it starts (disk.py);
  * a checkpoint that shows damage (a truncated or missing file, a missing item, flipped bytes:
    `save` records a checksum of every array, checksums.py, as Orbax checksums none of the data)
    is set aside into `<workdir>/checkpoints_damaged/` and the run resumes from the newest one
    that reads (damage.py);
  * a read that fails for another reason (a permission, a network file system's hiccup, memory)
    is no evidence of damage: it is tried again, then stops the run with one line naming the
    checkpoint and the error, nothing moved (damage.py).
migrations.py reads a config saved by older code as today's, and refuses a resume from a
checkpoint of another model or recipe.
"""

import dataclasses
import json
import os
from typing import Any, NamedTuple

import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from alexnet_jax import checksums, damage, disk, migrations
from alexnet_jax.errors import CheckpointError
from alexnet_jax.stats import Normalization

ITEMS = ('state', 'config', 'meta', 'norm', 'data_iter')


def absolute(workdir: str) -> str:
  """A workdir or checkpoint path as Orbax takes it: it writes arrays only to absolute paths;
  gs:// and other URLs pass as given."""
  return workdir if '://' in workdir else os.path.abspath(os.path.expanduser(workdir))


BEST = 'best'  # names the checkpoint of lowest validation top-1 error, where a step is asked for
_BEST_METRIC = 'val_top1_err'


def _options(keep: int | None = None, **kwargs) -> ocp.CheckpointManagerOptions:
  """Orbax's own bookkeeping of the best checkpoint: a save given `metrics` records them, and
  the one of lowest validation top-1 error is kept beside the newest `keep`."""
  policies = ocp.checkpoint_managers
  policy = None if keep is None else policies.AnyPreservationPolicy([
      policies.LatestN(n=keep),
      policies.BestN(get_metric_fn=lambda m: m[_BEST_METRIC], reverse=True, n=1,
                     keep_checkpoints_without_metrics=False)])
  return ocp.CheckpointManagerOptions(best_fn=lambda m: m[_BEST_METRIC], best_mode='min',
                                      preservation_policy=policy, **kwargs)


def manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  """Keeps the newest `keep` checkpoints under `<workdir>/checkpoints/<step>/`, and the best
  (`save` with `val_top1_err`); the folders of saves that never finished (a crash, a full disk)
  are removed as it starts."""
  directory = epath.Path(absolute(workdir)) / 'checkpoints'
  options = _options(keep, create=True, cleanup_tmp_directories=True)
  try:
    return ocp.CheckpointManager(directory, options=options, item_names=ITEMS)
  except Exception as e:  # pylint: disable=broad-except  (Orbax wraps OSError in ValueError)
    if (code := disk.os_error_code(e)) is None:
      raise
    raise CheckpointError(f'Cannot create the checkpoint folder {directory}: '
                          f'{os.strerror(code)}. Use a --workdir this user can write to.') from e


# ---------------------------------------------------------------------------------------------
# Saving.
# ---------------------------------------------------------------------------------------------


def _wait(mgr: ocp.CheckpointManager) -> None:
  """Waits for the save in flight; a write the file system refused raises CheckpointError."""
  in_flight = mgr.latest_step()  # Orbax lists a step as soon as its save starts
  try:
    mgr.wait_until_finished()
  except Exception as e:  # pylint: disable=broad-except
    if err := disk.write_error(mgr, in_flight, e):
      raise err from e
    raise


def save(mgr: ocp.CheckpointManager, step: int, state, config: ml_collections.ConfigDict,
         meta: dict, norm: Normalization | None = None, data_iter=None, *,
         val_top1_err: float | None = None, wait: bool = False) -> bool:
  """Saves step `step` in the background (`wait`: before returning); `meta` is JSON (the LR
  policy's state, the class names) and also carries the arrays' checksums. `val_top1_err`, the
  validation error of this very step, makes it a candidate for the best checkpoint.

  Raises CheckpointError, with the earlier checkpoints intact, when this save cannot fit on the
  disk, or when the file system refuses it or the previous one (found here, as the previous
  background write is waited for first).
  """
  _wait(mgr)
  disk.check_space(mgr, step)
  sums = {'state': checksums.compute(state)}
  items = dict(state=ocp.args.StandardSave(state),
               config=ocp.args.JsonSave(json.loads(config.to_json())))
  if norm is not None:
    norm = dataclasses.asdict(norm)
    sums['norm'] = checksums.compute(norm)
    items['norm'] = ocp.args.StandardSave(norm)
  items['meta'] = ocp.args.JsonSave({**meta, 'checksums': sums})
  if data_iter is not None:
    items['data_iter'] = grain.checkpoint.CheckpointSave(data_iter)
  try:
    metrics = None if val_top1_err is None else {_BEST_METRIC: float(val_top1_err)}
    saved = mgr.save(step, args=ocp.args.Composite(**items), metrics=metrics,
                     force=True)  # the loop decides when
    if wait:
      mgr.wait_until_finished()
  except Exception as e:  # pylint: disable=broad-except
    if err := disk.write_error(mgr, step, e):
      raise err from e
    raise
  return saved


def finish(mgr: ocp.CheckpointManager) -> None:
  """Waits for the last save and closes the manager: the end of a run. Raises CheckpointError
  if the file system refused the last save."""
  try:
    _wait(mgr)
  finally:
    mgr.close()


def best(mgr: ocp.CheckpointManager) -> tuple[int, float] | None:
  """(step, validation top-1 error) of the best checkpoint kept, or None if no save recorded
  one."""
  metrics = {s: mgr.metrics(s) for s in mgr.all_steps()}
  scored = [(m[_BEST_METRIC], s) for s, m in metrics.items() if m and _BEST_METRIC in m]
  return (min(scored)[1], min(scored)[0]) if scored else None


# ---------------------------------------------------------------------------------------------
# Restoring.
# ---------------------------------------------------------------------------------------------


def _has(mgr: ocp.CheckpointManager, step: int, item: str) -> bool:
  return (mgr.directory / str(step) / item).exists()


def _input_writers(mgr: ocp.CheckpointManager, step: int) -> int | None:
  """How many processes wrote the input position of `step` (Grain names each one's file
  process_<i>-of-<n>.json), or None where the checkpoint has none."""
  for path in (mgr.directory / str(step) / 'data_iter').glob('process_*-of-*.json'):
    return int(path.name.rsplit('-of-', 1)[1].split('.')[0])
  return None


def _read(mgr: ocp.CheckpointManager, step: int, abstract_state=None):
  """(state, meta, norm) of one step, every array checked against the checksum its save
  recorded (norm None where the checkpoint has none). The arrays land on the shardings of
  `abstract_state`; without one, onto this process's first device where the devices the
  checkpoint was written on are not all here."""
  here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = ocp.args.StandardRestore(abstract_state,
                                    fallback_sharding=here if abstract_state is None else None)
  meta = dict(damage.read(mgr, step, 'meta', ocp.args.JsonRestore()) or {})
  sums = meta.pop('checksums', {})
  state = damage.read(mgr, step, 'state', target)
  checksums.verify(sums.get('state'), state, 'state')
  norm = None
  if _has(mgr, step, 'norm'):
    norm = damage.read(mgr, step, 'norm', ocp.args.StandardRestore())
    checksums.verify(sums.get('norm'), norm, 'norm')
  return state, meta, norm


class Restored(NamedTuple):
  """A checkpoint a run resumes from."""
  step: int
  state: Any
  meta: dict
  config: dict  # the config it was written with, as saved


def restore_newest(mgr: ocp.CheckpointManager, abstract_state, config: ml_collections.ConfigDict,
                   workdir: str, data_iter=None) -> Restored | None:
  """The newest checkpoint that reads completely, or None if the workdir has none.

  A checkpoint written by another config raises CheckpointError (the run is refused, nothing is
  skipped). One whose input position was written by another number of processes restores
  everything else, leaves `data_iter` where it is and says so in the returned meta
  (`input_processes`: how many wrote it). One that shows damage (an item or file missing, a
  truncated or undecodable file, bytes that changed) is logged with one warning and moved to
  <workdir>/checkpoints_damaged/, kept for inspection, once an older one has read back. If none
  reads back, CheckpointError lists them and nothing is moved. A read that fails for another
  reason (a permission, a file system's hiccup, memory) is tried again, then raises
  CheckpointError naming the checkpoint, with nothing moved.
  """
  damaged = {}
  for step in sorted(mgr.all_steps(), reverse=True):
    why, unreadable = 'another process could not read it', None
    try:
      saved = damage.read(mgr, step, 'config', ocp.args.JsonRestore())
      migrations.check_compatible(saved, config, workdir)
      state, meta, _ = _read(mgr, step, abstract_state)
      ok = True
    except damage.Damaged as e:
      ok, why = False, str(e)
    except damage.Unreadable as e:
      ok, unreadable = False, e
    damage.stop_if_unreadable(mgr, step, unreadable)
    # Processes enter each Orbax restore together (it ends in a barrier): the iterator's
    # position, the one item each process reads a different file of, only once all have the rest.
    # Written by another number of processes, it does not apply: the caller places the input.
    writers = _input_writers(mgr, step) if damage.everywhere(ok) else None
    if writers not in (None, jax.process_count()):
      meta['input_processes'] = writers
    elif damage.everywhere(ok) and data_iter is not None:
      try:
        damage.read(mgr, step, 'data_iter', grain.checkpoint.CheckpointRestore(data_iter))
      except damage.Damaged as e:
        ok, why = False, str(e)
      except damage.Unreadable as e:
        unreadable = e
      damage.stop_if_unreadable(mgr, step, unreadable)
    if not damage.everywhere(ok):
      damaged[step] = why
      continue
    moved = damage.set_aside(mgr, damaged) if damaged else {}
    for s, reason in damaged.items():
      logging.warning('Checkpoint step %d (%s) does not read back: %s. It %s; resuming from '
                      'step %d.', s, mgr.directory / str(s), reason,
                      moved.get(s, 'was moved aside by process 0'), step)
    return Restored(step, state, meta, saved)
  if damaged:
    listed = '; '.join(f'step {s}: {why}' for s, why in damaged.items())
    raise CheckpointError(
        f'No checkpoint in {mgr.directory} reads back completely ({listed}), so the run cannot '
        'resume. Nothing was moved or deleted. If the code changed since they were written, '
        'run the version that wrote them; otherwise restore the folder from a backup, or move '
        'it aside (or use a new --workdir) to start over.')
  return None


# ---------------------------------------------------------------------------------------------
# Reading a checkpoint outside training.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Loaded:
  """What `load` reads: the parameters and what the run knew about its data."""
  params: dict
  config: ml_collections.ConfigDict
  class_names: tuple[str, ...]
  norm: Normalization | None  # None for a checkpoint written before statistics were saved
  step: int
  path: str
  # The JPEG decoder training used ('simplejpeg+opencv' or 'pillow'); None for older checkpoints.
  decoder: str | None = None


def _checkpoints_dir(path: str) -> tuple[epath.Path, int | None]:
  """(the folder of numbered steps, the step `path` names or None) for a workdir, its
  checkpoints/ folder, or one step's folder."""
  folder = epath.Path(absolute(path))
  if (folder / 'checkpoints').is_dir():
    return folder / 'checkpoints', None
  if folder.name.isdigit() and (folder / 'config').exists():
    return folder.parent, int(folder.name)
  if folder.is_dir():
    return folder, None
  raise CheckpointError(f'{path} does not exist. Give a training run\'s --workdir, its '
                        'checkpoints/ folder or one checkpoint\'s folder (checkpoints/<step>).')


def load(path: str, step: int | str | None = None) -> Loaded:
  """Reads the parameters, config, class names and statistics of one checkpoint (the newest
  that reads back unless `step` or a step folder says which; step='best' is the one of lowest
  validation top-1 error), as host arrays: no optimizer, and any number of devices, whatever
  the run was trained on."""
  directory, named_step = _checkpoints_dir(path)
  step = step if step is not None else named_step
  with ocp.CheckpointManager(directory, options=_options(create=False),
                             item_names=ITEMS) as mgr:
    steps = mgr.all_steps()
    if step == BEST:
      if (found := best(mgr)) is None:
        raise CheckpointError(
            f'No checkpoint in {directory} records a validation error (steps there: '
            f'{sorted(steps) or "none"}), so none is the best. Name a step instead.')
      step = found[0]
    elif isinstance(step, str):
      if not step.isdigit():
        raise CheckpointError(f'Step {step!r}: give a step number or {BEST!r}.')
      step = int(step)
    if not steps or (step is not None and step not in steps):
      raise CheckpointError(
          f'No checkpoint {"at step " + str(step) + " " if step is not None else ""}in '
          f'{directory} (steps there: {sorted(steps) or "none"}). Point at a workdir that '
          'training has written a checkpoint to, or pick one of the steps listed.')
    damaged = {}
    for found in [step] if step is not None else sorted(steps, reverse=True):
      try:
        config = damage.read(mgr, found, 'config', ocp.args.JsonRestore())
        state, meta, norm = _read(mgr, found)
        break
      except damage.Damaged as e:
        damaged[found] = str(e)
    else:
      listed = '; '.join(f'step {s}: {why}' for s, why in damaged.items())
      others = sorted(set(steps) - set(damaged))
      raise CheckpointError(
          f'The checkpoint in {directory} does not read back ({listed}). '
          + (f'Pick another step ({others}).' if others else 'Restore the folder from a backup.'))
  for s, why in damaged.items():
    logging.warning('Checkpoint step %d (%s) does not read back: %s. Reading step %d instead.',
                    s, directory / str(s), why, found)
  if norm is not None:
    norm = Normalization(**{k: np.asarray(v, np.float32) for k, v in norm.items()})
  config = ml_collections.ConfigDict(migrations.without_retired(config))
  return Loaded(params=jax.tree.map(np.asarray, state['params']), config=config,
                class_names=tuple(meta.get('class_names', ())), norm=norm, step=found,
                path=str(directory / str(found)), decoder=meta.get('decoder'))
