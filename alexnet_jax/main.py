"""Trains AlexNet: `python -m alexnet_jax.main --config=configs/paper.py --workdir=DIR`.

Kept short on purpose: the logic is in `alexnet_jax.train`, importable and testable in Colab.
Every config field can be overridden from the command line, e.g. --config.optim.base_lr=0.02.
On several hosts, every process runs the same command with its own --process_id (or the
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID environment variables; on SLURM
and other clusters JAX finds them itself with --distributed).
"""

import json
import os

import jax
from absl import app, flags, logging

from alexnet_jax import cli, preemption, train

_CONFIG = cli.define_config_file(None, 'Training config file; --config.FIELD=VALUE overrides '
                                 'a field.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and metrics.')
flags.mark_flags_as_required(['config', 'workdir'])
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', os.environ.get('JAX_COORDINATOR_ADDRESS'),
    'host:port of process 0, for jax.distributed (default: $JAX_COORDINATOR_ADDRESS).')
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', int(os.environ.get('JAX_NUM_PROCESSES', 0)) or None,
    'Number of processes (hosts) in the run (default: $JAX_NUM_PROCESSES).')
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', int(os.environ['JAX_PROCESS_ID']) if 'JAX_PROCESS_ID' in os.environ else None,
    'This process\'s index, 0 .. num_processes - 1 (default: $JAX_PROCESS_ID).')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False, 'Call jax.distributed.initialize() and let JAX detect the cluster '
    '(SLURM, Open MPI, Kubernetes, Cloud TPU); implied by any of the three flags above.')


def main(argv):
  cli.start(argv)
  cli.use_compilation_cache(_CONFIG.value.compilation_cache_dir)
  given = (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  if _DISTRIBUTED.value or any(v is not None for v in given):
    # Before anything touches a device: every process must join the runtime first.
    jax.distributed.initialize(*given)
  logging.info('Process %d of %d; JAX devices: %s', jax.process_index(), jax.process_count(),
               jax.devices())
  try:
    with cli.one_line_errors():
      final = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except preemption.Interrupted as e:
    print(f'{e}: stopped before the first step; nothing new to save.')
    return
  if 'stopped' in final:
    stopped = final['stopped']
    print(f'{stopped["signal"]}: stopped after step {stopped["step"]}, checkpoint '
          f'{stopped["checkpoint"]}; the same command resumes.')
    return
  print(f'final metrics ({_WORKDIR.value}):\n{json.dumps(final, indent=2)}')


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
