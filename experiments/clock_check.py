"""The training rate the loop logs, against the wall clock, over whole runs.

    python experiments/clock_check.py --steps=300 --every=20 --runs=3 --json=clock.json

Trains the offline demo (configs/demo.py) for --steps steps in two ways, alternating, --runs
times each, every run a fresh process and workdir:
  * plain: no evaluation and no checkpoint before the last step. Its wall-clock rate, the steps
    between its first and last 'train' records over the time between them, is the truth;
  * busy: an evaluation and a checkpoint every --every steps, which the loop's clock leaves out.
The busy run's logged rate (its records' steps over the training time their `steps_per_sec`
implies) should equal the plain run's wall-clock rate: a clock that counted the compute of the
steps still queued on the device as paused would log a higher one. The busy run's own
wall-clock rate is printed beside them: the time its evaluations and saves took. The first
record of each run holds the compilation and is left out. The runs are compared with each other,
so other work on the machine moves the result: run it on a quiet one. Results: BENCHMARKS.md,
"The logged training rate".
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
# pylint: disable=g-import-not-at-top
from alexnet_jax import metric_writer
from experiments import machine
# pylint: enable=g-import-not-at-top

_STEPS = flags.DEFINE_integer('steps', 300, 'Steps of each run.')
_EVERY = flags.DEFINE_integer('every', 20, 'Log every this many steps; the busy run also '
                                           'evaluates and saves a checkpoint as often.')
_RUNS = flags.DEFINE_integer('runs', 3, 'Runs of each kind; the medians are reported.')
_JSON = flags.DEFINE_string('json', None, 'Also write the results here.')


def rates(workdir: str) -> dict:
  """The wall-clock and the logged rate (steps per second) after the first record."""
  records = sorted(metric_writer.read_records(workdir, 'train'), key=lambda r: r['step'])
  first, rest = records[0], records[1:]
  steps = rest[-1]['step'] - first['step']
  logged_seconds, before = 0.0, first['step']
  for r in rest:
    logged_seconds += (r['step'] - before) / r['steps_per_sec']
    before = r['step']
  return {'wall': steps / (rest[-1]['time'] - first['time']), 'logged': steps / logged_seconds}


def train(workdir: str, busy: bool) -> dict:
  steps, every = _STEPS.value, _EVERY.value
  interval = every if busy else steps
  command = [sys.executable, '-m', 'alexnet_jax.main', '--config=configs/demo.py',
             f'--workdir={workdir}', f'--config.num_train_steps={steps}',
             f'--config.log_every_steps={every}', f'--config.eval_every_steps={interval}',
             f'--config.checkpoint_every_steps={interval}']
  subprocess.run(command, cwd=REPO, check=True, capture_output=True)
  return rates(workdir)


def main(argv):
  del argv
  root = tempfile.mkdtemp(prefix='clock_check_')
  runs = {'plain': [], 'busy': []}
  try:
    for i in range(_RUNS.value):
      for kind in runs:
        runs[kind].append(train(os.path.join(root, f'{kind}{i}'), busy=kind == 'busy'))
        print(f'run {i} {kind}: wall {runs[kind][-1]["wall"]:.2f} steps/s, logged '
              f'{runs[kind][-1]["logged"]:.2f} steps/s', flush=True)
  finally:
    shutil.rmtree(root, ignore_errors=True)
  median = {kind: {k: statistics.median(r[k] for r in rs) for k in ('wall', 'logged')}
            for kind, rs in runs.items()}
  ratio = statistics.median(b['logged'] / p['wall'] for b, p in zip(runs['busy'], runs['plain']))
  about = machine.describe()
  busy, plain = median['busy'], median['plain']
  print(f'Demo, {_STEPS.value} steps, median of {_RUNS.value}: plain run {plain["wall"]:.2f} '
        f'steps/s by the wall clock; busy run (evaluation and checkpoint every {_EVERY.value} '
        f'steps) logs {busy["logged"]:.2f} steps/s, {busy["wall"]:.2f} by the wall clock; logged '
        f'busy / wall plain {ratio:.3f} (median of the runs\' ratios); {machine.one_line(about)}')
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump({'runs': runs, 'median': median, 'ratio': ratio, 'machine': about}, f, indent=2)


if __name__ == '__main__':
  app.run(main)
