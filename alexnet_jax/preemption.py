"""Stopping a run without losing work.

SIGTERM (a cluster's preemption notice) and SIGINT (Ctrl-C) ask the training loop to finish the
step it is in, save a checkpoint, wait for it and exit 0; the same command then resumes. With
several processes, JAX's distributed runtime receives the notice (its preemption service listens
for SIGTERM on every host) and `multihost_utils.reached_preemption_sync_point` names one step at
which every process stops and saves; a SIGINT is handed to that service as a SIGTERM, so both
signals take the same path. A second signal while stopping ends the process at once (the
checkpoints on disk stay intact: Orbax writes each one atomically).

Input worker processes leave both signals to the run (alexnet_jax/input_workers.py).
"""

import os
import signal
import threading

import jax
from absl import logging
from jax.experimental import multihost_utils

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
