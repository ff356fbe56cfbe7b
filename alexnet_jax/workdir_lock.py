"""One run per workdir: a second run would write over the first one's checkpoints and metrics,
so it is refused while the first one lives."""

import datetime
import errno
import fcntl
import os
import socket
import sys

import jax
from absl import logging

from alexnet_jax.errors import UserError


class WorkdirLock:
  """An exclusive lock on `<workdir>/lock.<process index>`, held while a run uses the workdir.

  The operating system releases it when the process ends in any way (SIGKILL included), so a
  dead run never blocks the next one. The file records who holds it, for the refusal message.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, f'lock.{jax.process_index()}')
    self._file = None

  def __enter__(self):
    try:
      os.makedirs(os.path.dirname(self.path), exist_ok=True)
      f = open(self.path, 'a+')
    except OSError as e:
      raise UserError(f'Cannot write to the workdir {os.path.dirname(self.path)}: '
                      f'{e.strerror}. Choose a writable --workdir.') from None
    try:
      fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EAGAIN, errno.EACCES):  # held; others: no locks on this fs
        logging.warning('Cannot lock %s (%s): nothing stops a second run from using this '
                        'workdir at the same time.', self.path, e.strerror)
        self._file = f
        return self
      f.seek(0)
      holder = f.read().strip() or 'another process'
      f.close()
      raise UserError(f'Another run is using the workdir {os.path.dirname(self.path)}: '
                      f'{holder}. Wait for it to finish or stop it, or use another '
                      '--workdir.') from None
    f.seek(0)
    f.truncate()
    started = datetime.datetime.now().isoformat(timespec='seconds')
    f.write(f'pid {os.getpid()} on {socket.gethostname()}, started {started}: '
            f'{" ".join(sys.argv)}\n')
    f.flush()
    self._file = f
    return self

  def __exit__(self, *exc):
    if self._file is not None:
      self._file.close()  # closing releases the lock
      self._file = None
