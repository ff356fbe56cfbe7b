"""A resumed run's time to its first step, with an empty and with a warm compilation cache.

    python experiments/restart_benchmark.py --runs=3 --json=restart.json

Trains the offline demo (configs/demo.py) for --steps steps once, then resumes a copy of that
workdir for one more step, --runs times each with an empty compilation cache ('cold') and with
the cache the cold run just filled ('warm'), alternating. The time to the first step runs from
starting the command to the time of that step's training record in metrics.jsonl: Python and
JAX start-up, reading the checkpoint, building the input pipeline, compiling (or loading) the
programs and the step itself. Results: BENCHMARKS.md, "Restarts".
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
# pylint: disable=g-import-not-at-top
from alexnet_jax import metric_writer
from experiments import machine
# pylint: enable=g-import-not-at-top

_RUNS = flags.DEFINE_integer('runs', 3, 'Resumes per cache state; the median is reported.')
_STEPS = flags.DEFINE_integer('steps', 20, 'Steps of the run that is resumed.')
_JSON = flags.DEFINE_string('json', None, 'Also write the results here.')


def train(workdir: str, steps: int, cache: str) -> float:
  """Runs the demo in `workdir` up to `steps`; returns the seconds to its first step's record."""
  env = {k: v for k, v in os.environ.items() if k != 'JAX_COMPILATION_CACHE_DIR'}
  command = [sys.executable, '-m', 'alexnet_jax.main', '--config=configs/demo.py',
             f'--workdir={workdir}', f'--config.num_train_steps={steps}',
             '--config.log_every_steps=1', f'--config.checkpoint_every_steps={steps}',
             f'--config.compilation_cache_dir={cache}']
  before = {r['step'] for r in metric_writer.read_records(workdir, 'train')}
  start = time.time()
  subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True)
  first = min((r for r in metric_writer.read_records(workdir, 'train')
               if r['step'] not in before), key=lambda r: r['step'])
  return first['time'] - start


def main(argv):
  del argv
  root = tempfile.mkdtemp(prefix='restart_benchmark_')
  try:
    base = os.path.join(root, 'base')
    train(base, _STEPS.value, '')
    seconds = {'cold': [], 'warm': []}
    for i in range(_RUNS.value):
      cache = os.path.join(root, f'cache{i}')
      for state in ('cold', 'warm'):
        workdir = os.path.join(root, f'{state}{i}')
        shutil.copytree(base, workdir)
        seconds[state].append(train(workdir, _STEPS.value + 1, cache))
        print(f'run {i} {state}: {seconds[state][-1]:.1f} s to the first step', flush=True)
  finally:
    shutil.rmtree(root, ignore_errors=True)
  about = machine.describe()
  medians = {state: statistics.median(s) for state, s in seconds.items()}
  print(f'Resumed demo, time to the first step (median of {_RUNS.value}): cold cache '
        f'{medians["cold"]:.1f} s, warm cache {medians["warm"]:.1f} s; {machine.one_line(about)}')
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump({'seconds': seconds, 'median': medians, 'machine': about}, f, indent=2)


if __name__ == '__main__':
  app.run(main)
