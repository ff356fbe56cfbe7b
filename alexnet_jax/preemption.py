"""Stopping a run without losing work, and one run per workdir.

SIGTERM (a cluster's preemption notice) and SIGINT (Ctrl-C) ask the training loop to finish the
step it is in, save a checkpoint, wait for it and exit 0; the same command then resumes. With
several processes, JAX's distributed runtime receives the notice (its preemption service listens
for SIGTERM on every host) and `multihost_utils.reached_preemption_sync_point` names one step at
which every process stops and saves; a SIGINT is handed to that service as a SIGTERM, so both
signals take the same path. A second signal while stopping ends the process at once (the
checkpoints on disk stay intact: Orbax writes each one atomically).

Input worker processes ignore both signals (the run stops them when it closes its iterator) and
exit by themselves when the run's process is gone, even after a SIGKILL.
"""

import datetime
import errno
import fcntl
import os
import signal
import socket
import sys
import threading
import time

import jax
from absl import logging
from jax.experimental import multihost_utils

from alexnet_jax.errors import UserError

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(Exception):
  """A stop signal arrived before the first training step: there is nothing new to save."""


def _uses_preemption_service() -> bool:
  # jax.distributed.initialize starts the service on every process unless it is switched off.
  return jax.process_count() > 1 and jax.config.jax_enable_preemption_service


class StopRequest:
  """Catches SIGTERM and SIGINT while a run trains; `should_stop(step)` says when to stop.

  Use as a context manager around the run. Before `loop_started()` a signal raises `Interrupted`
  at once (setting up a run may take minutes and holds nothing to save); afterwards it only marks
  the request, and the loop stops after its current step.
  """

  def __init__(self):
    self.signal_name: str | None = None
    self._in_loop = False
    self._multi = _uses_preemption_service()
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is not threading.main_thread():
      return self  # Python delivers signals to the main thread only (e.g. a notebook's worker)
    for sig in SIGNALS:
      if sig == signal.SIGTERM and self._multi:
        continue  # JAX's preemption service owns SIGTERM on every host
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous.clear()

  def _handle(self, signum, frame):
    del frame
    if self.signal_name is not None:  # a second signal: stop now, without the checkpoint
      signal.signal(signum, signal.SIG_DFL)
      os.kill(os.getpid(), signum)
      return
    self.signal_name = signal.Signals(signum).name
    if not self._in_loop:
      raise Interrupted(self.signal_name)
    logging.warning('%s received: finishing this step and saving a checkpoint (send it again '
                    'to stop at once).', self.signal_name)
    if self._multi:
      os.kill(os.getpid(), signal.SIGTERM)  # to JAX's preemption service: all hosts agree

  def loop_started(self) -> None:
    self._in_loop = True

  def should_stop(self, step: int) -> bool:
    """Whether to save and stop after `step`. Every process calls it at every step."""
    if self._multi:
      if multihost_utils.reached_preemption_sync_point(step):
        self.signal_name = self.signal_name or 'SIGTERM'
        return True
      return False
    return self.signal_name is not None


# ---------------------------------------------------------------------------------------------
# Input worker processes.
# ---------------------------------------------------------------------------------------------


def _exit_with_parent(parent: int) -> None:
  while os.getppid() == parent:
    time.sleep(1.0)
  os._exit(0)  # pylint: disable=protected-access  # the run is gone: nothing to flush


def init_input_worker(worker_index: int, worker_count: int) -> None:
  """Grain's `worker_init_fn`: a worker leaves stopping to the run and dies with it."""
  del worker_index, worker_count
  for sig in SIGNALS:
    signal.signal(sig, signal.SIG_IGN)
  threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


# ---------------------------------------------------------------------------------------------
# One run per workdir.
# ---------------------------------------------------------------------------------------------


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
