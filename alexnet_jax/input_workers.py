"""Input worker processes: they leave stopping to the run and die with it.

The run stops its Grain workers when it closes its iterator, after the checkpoint a stop signal
asks for (alexnet_jax/preemption.py), so a worker that acted on SIGTERM or SIGINT itself would
only cut that short. A worker whose run is gone, even after a SIGKILL, has no one to feed.
"""

import os
import signal
import threading
import time

from alexnet_jax.preemption import SIGNALS


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
