"""Writes that the file system refuses: the errno behind what Orbax and TensorStore raise, the one
CheckpointError that names the step, the reason and the newest intact checkpoint, and the
free-space check that refuses a save before it can fill the disk half-way.
"""

import errno
import os
import re
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from alexnet_jax.errors import CheckpointError

_NO_SPACE = {errno.ENOSPC: 'the disk is full', errno.EDQUOT: 'the disk quota is used up',
             errno.EFBIG: 'a file outgrew the size limit of the file system or of this process '
                          '(ulimit -f)'}
_NO_ACCESS = {errno.EROFS: 'the file system is read-only',
              errno.EACCES: 'this user may not write there',
              errno.EPERM: 'this user may not write there'}
_REFUSED = {**_NO_SPACE, **_NO_ACCESS}

# TensorStore reports a failed write as ValueError('... File too large [os_error_code=\'27\']').
_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")
_STRERRORS = {os.strerror(code): code for code in _REFUSED}


def os_error_code(exc: BaseException | None) -> int | None:
  """The errno behind an exception, or None: an OSError's own, or the one that TensorStore and
  Orbax write into the messages of the exceptions they raise instead (any in the chain)."""
  seen = set()
  while exc is not None and id(exc) not in seen:
    seen.add(id(exc))
    if isinstance(exc, OSError) and exc.errno:
      return exc.errno
    text = str(exc)
    if match := _OS_ERROR_CODE.search(text):
      return int(match.group(1))
    for message, code in _STRERRORS.items():
      if message in text:
        return code
    exc = exc.__cause__ or exc.__context__
  return None


_FREE_SPACE = ('Free space there (or lower --config.keep_checkpoints, or use a --workdir on a '
               'larger disk)')


def _then_rerun(intact: int | None) -> str:
  """What running the same command again does, from the newest intact checkpoint."""
  return ('then run the same command again: ' +
          (f'it resumes from step {intact}, the newest checkpoint, which is intact'
           if intact is not None else 'no earlier checkpoint exists, so it starts over'))


def write_error(mgr: ocp.CheckpointManager, step: int | None,
                exc: BaseException) -> CheckpointError | None:
  """The CheckpointError for a write that the file system refused, or None for another error."""
  code = os_error_code(exc)
  if code not in _REFUSED:
    return None
  todo = (_FREE_SPACE if code in _NO_SPACE
          else 'Make the folder writable for this user (or use another --workdir)')
  mgr.reload()  # what is finalized on disk, without the step that failed
  return CheckpointError(
      f'Checkpoint step {step} could not be written to {mgr.directory}: {_REFUSED[code]} '
      f'({os.strerror(code)}). {todo}, {_then_rerun(mgr.latest_step())}.')


def _folder_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(root, f))
             for root, _, files in os.walk(path) for f in files)


def _on_process_0(value):
  """Process 0's `value` on every process, so that all of them decide alike."""
  if jax.process_count() == 1:
    return value
  return multihost_utils.broadcast_one_to_all(value)


def check_space(mgr: ocp.CheckpointManager, step: int) -> None:
  """Refuses a save that cannot fit: on local disks, the free space against the size of the
  newest checkpoint, which the new one will match."""
  latest = mgr.latest_step()
  if latest is None or '://' in str(mgr.directory):
    return
  mib = np.zeros(2, np.int32)  # free, needed; in MiB, as JAX's default integers are 32 bits
  if jax.process_index() == 0:
    mib[:] = (shutil.disk_usage(str(mgr.directory)).free // 2**20,
              -(-_folder_bytes(str(mgr.directory / str(latest))) // 2**20))
  free, need = (int(v) for v in _on_process_0(mib))
  if free < need:
    raise CheckpointError(
        f'Checkpoint step {step} was not written: {free} MiB are free on the disk of '
        f'{mgr.directory}, and a checkpoint takes {need} MiB (step {latest}). {_FREE_SPACE}, '
        f'{_then_rerun(latest)}.')
