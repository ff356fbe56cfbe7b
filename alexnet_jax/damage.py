"""Checkpoints that do not read back, told apart by what the failure is evidence of:
  * damage (a truncated or missing file, a missing item, flipped bytes) sets the checkpoint aside
    into `<workdir>/checkpoints_damaged/`, kept for inspection, out of Orbax's view;
  * a read that fails for another reason (a permission, a network file system's hiccup, memory)
    is no evidence of damage: it is tried again, then stops the run with one line naming the
    checkpoint and the error, nothing moved.
Every process of a run decides alike, as a damaged shard may be read by one process only.
"""

import json
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from alexnet_jax.errors import CheckpointError

DAMAGED = 'checkpoints_damaged'  # beside checkpoints/, out of Orbax's view


class Damaged(Exception):
  """A checkpoint that does not read back completely; the message says why."""


class Unreadable(CheckpointError):
  """A checkpoint that could not be read for a reason that is no evidence of damage."""


def _summary(exc: BaseException) -> str:
  """The innermost cause's type and first line: TensorStore's own words, without its spec."""
  while exc.__cause__ is not None or exc.__context__ is not None:
    exc = exc.__cause__ or exc.__context__
  text = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc).strip()
  text = f'{type(exc).__name__}: {text.splitlines()[0] if text else ""}'
  return text if len(text) <= 300 else text[:297] + '...'


# What Orbax, TensorStore and json raise for a file that is missing, truncated or not what was
# written: evidence of damage. Anything else (a permission, a network file system's hiccup,
# memory) says nothing about the files.
_DAMAGE_CODES = ('NOT_FOUND', 'OUT_OF_RANGE', 'DATA_LOSS')
_RETRY_SECONDS = (1.0, 4.0)  # waits before the second and third tries of an unreadable item


def _is_damage(exc: BaseException) -> bool:
  seen = set()
  while exc is not None and id(exc) not in seen:
    seen.add(id(exc))
    text = str(exc)
    if (isinstance(exc, (FileNotFoundError, json.JSONDecodeError))
        or (isinstance(exc, KeyError) and 'was not found in the checkpoint' in text)
        or any(code in text for code in _DAMAGE_CODES)):
      return True
    exc = exc.__cause__ or exc.__context__
  return False


def read(mgr: ocp.CheckpointManager, step: int, item: str, args):
  """One item of a checkpoint. A missing, truncated or undecodable file is Damaged; any other
  failure is tried again, then is Unreadable, a CheckpointError naming the checkpoint."""
  for wait in (*_RETRY_SECONDS, None):
    try:
      return mgr.restore(step, args=ocp.args.Composite(**{item: args}))[item]
    except Exception as e:  # pylint: disable=broad-except  (Orbax and TensorStore raise many)
      if _is_damage(e):
        raise Damaged(f'{item}: {_summary(e)}') from e
      if wait is None:
        raise Unreadable(
            f'Checkpoint step {step} in {mgr.directory} could not be read ({item}: '
            f'{_summary(e)}), {len(_RETRY_SECONDS) + 1} times. That is no sign of damage, so '
            'nothing was moved: fix the cause (permissions, the file system, memory), then run '
            'the same command again.') from e
      logging.warning('Reading %s of checkpoint step %d failed (%s); trying again in %g s.',
                      item, step, _summary(e), wait)
      time.sleep(wait)


def everywhere(ok: bool) -> bool:
  """Whether `ok` holds on every process (a damaged shard may be read by one process only)."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.array(ok))))


def _anywhere(flag: bool) -> bool:
  """Whether `flag` holds on any process."""
  return not everywhere(not flag)


def set_aside(mgr: ocp.CheckpointManager, steps) -> dict[int, str]:
  """Moves the step folders to <workdir>/checkpoints_damaged/ (process 0 does, the others wait),
  so that Orbax no longer lists them and a later save of the same step can be written."""
  moved = {}
  if jax.process_index() == 0:
    damaged = mgr.directory.parent / DAMAGED
    for step in steps:
      target, n = damaged / str(step), 1
      while target.exists():
        target, n = damaged / f'{step}.{n}', n + 1
      try:
        damaged.mkdir(parents=True, exist_ok=True)
        (mgr.directory / str(step)).rename(target)
        moved[step] = f'was moved to {target}'
      except OSError as e:
        moved[step] = (f'could not be moved to {target} ({e.strerror or e}); move it by '
                       'hand')
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('alexnet_jax: damaged checkpoints set aside')
  mgr.reload()
  return moved


def stop_if_unreadable(mgr: ocp.CheckpointManager, step: int,
                       unreadable: Unreadable | None) -> None:
  """Raises on every process, with nothing moved, if any process could not read `step`."""
  if _anywhere(unreadable is not None):
    raise unreadable or Unreadable(f'Checkpoint step {step} in {mgr.directory} could not be '
                                   'read by another process (its log says why); nothing was '
                                   'moved.')
