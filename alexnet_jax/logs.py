"""The command-line tools' logs: the project's own lines and every library warning and error,
without the libraries' INFO chatter (Orbax alone writes a dozen INFO lines per save and restore).

Orbax and Grain log through absl, so their records reach Python's logging through the one
`absl` logger, beside the project's own; they are told apart by the file that logged them.
"""

import logging
import os

from alexnet_jax import disk

LIBRARIES = ('orbax', 'grain', 'tensorstore')  # package folders whose INFO lines are dropped
_PYTHON_LOGGERS = LIBRARIES + ('jax._src.xla_bridge',)  # "Unable to initialize backend 'tpu'"

# Library warnings about what the project does on purpose: Orbax asks for metrics at every save
# once the best checkpoint is tracked, and only the saves of evaluated steps have them.
_EXPECTED = ('Requested `tracked_metric`',)


def _from_library(pathname: str) -> bool:
  return any(part in LIBRARIES for part in pathname.split(os.sep))


class _QuietLibraries(logging.Filter):
  """Drops library records below WARNING. A library error caused by the operating system (a full
  disk) keeps its line but loses its traceback: the caller gets the same error raised."""

  def filter(self, record: logging.LogRecord) -> bool:
    if not _from_library(record.pathname):
      return True
    if record.levelno < logging.WARNING or str(record.msg).startswith(_EXPECTED):
      return False
    if record.exc_info and disk.os_error_code(record.exc_info[1]) is not None:
      exc = record.exc_info[1]
      record.msg, record.args = f'{record.getMessage()}: {type(exc).__name__}: {exc}', ()
      record.exc_info = record.exc_text = None
    return True


_FILTER = _QuietLibraries()


def quiet_library_logs() -> None:
  """Keeps the libraries' warnings and errors and drops their INFO lines; call it once, early
  (calling it again changes nothing)."""
  absl_logger = logging.getLogger('absl')
  if _FILTER not in absl_logger.filters:
    absl_logger.addFilter(_FILTER)
  for name in _PYTHON_LOGGERS:  # those that log through Python's own loggers
    logging.getLogger(name).setLevel(logging.WARNING)
