"""Trains AlexNet: `python -m alexnet_jax.main --config=configs/paper.py --workdir=DIR`.

Kept short on purpose: the logic is in `alexnet_jax.train`, importable and testable in Colab.
Every config field can be overridden from the command line, e.g. --config.optim.base_lr=0.02.
"""

import json
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from alexnet_jax import train
from alexnet_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Training config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and metrics.')
flags.mark_flags_as_required(['config', 'workdir'])


def _quiet_library_info(record) -> bool:
  """Orbax logs every save at INFO; keep its warnings and errors, drop the rest."""
  return record.levelno >= logging.WARNING or 'orbax' not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_quiet_library_info)
  logging.info('JAX devices: %s', jax.devices())
  try:
    final = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except UserError as e:
    sys.exit(f'error: {e}')
  print(f'final metrics ({_WORKDIR.value}):\n{json.dumps(final, indent=2)}')


if __name__ == '__main__':
  app.run(main)
