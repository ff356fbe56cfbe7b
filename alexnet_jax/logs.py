"""The command-line tools' logs: the project's own lines and every library warning and error,
without the libraries' INFO chatter (Orbax alone writes a dozen INFO lines per save and restore).

Orbax and Grain log through absl, so their records reach Python's logging through the one
`absl` logger, beside the project's own; they are told apart by the file that logged them.
"""

import errno
import logging
import os
import re

LIBRARIES = ('orbax', 'grain', 'tensorstore')  # package folders whose INFO lines are dropped
_PYTHON_LOGGERS = LIBRARIES + ('jax._src.xla_bridge',)  # "Unable to initialize backend 'tpu'"

# TensorStore reports a failed write as ValueError('... File too large [os_error_code=\'27\']').
_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")
_STRERRORS = {os.strerror(code): code for code in (
    errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM)}


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
    if record.exc_info and os_error_code(record.exc_info[1]) is not None:
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
