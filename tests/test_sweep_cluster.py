"""A sweep sent to SLURM, on one machine: stand-in `sbatch` and `squeue` keep a queue in a folder,
and the test runs each job (experiments/slurm/train.sbatch, as SLURM would) when it chooses."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from experiments import ablations, launcher, sweep
from tests.test_experiments import _FAKE_SRUN  # SLURM_NTASKS copies of the command

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# sbatch: queues the job (its arguments and folder) and prints its id, as --parsable does.
_SBATCH = '''#!/bin/bash
q=$STAND_IN_QUEUE
id=$((1000 + $(ls "$q" | grep -c '\\.args$')))
printf '%s\\0' "$@" > "$q/$id.args"
echo "$PWD" > "$q/$id.cwd"
echo PENDING > "$q/$id.state"
echo "$id"
'''

# squeue: the jobs not yet ended, as "%i %T".
_SQUEUE = '''#!/bin/bash
for f in "$STAND_IN_QUEUE"/*.state; do
  [[ -e $f ]] || continue
  s=$(<"$f")
  if [[ $s == PENDING || $s == RUNNING ]]; then echo "$(basename "$f" .state) $s"; fi
done
'''


_CONFIG = '''from tests.conftest import small_config


def get_config():
  config = small_config({root!r}, {cache!r})
  config.eval_every_steps = 1000  # at the last step only
  return config
'''

_CLUSTER_VARS = ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID',
                 'JAX_LOCAL_DEVICE_IDS', 'JAX_PLATFORMS', 'XLA_FLAGS')


class Cluster:
  """The stand-in scheduler: its commands on PATH, its queue in a folder."""

  def __init__(self, tmp_path):
    self.queue = tmp_path / 'queue'
    self.queue.mkdir()
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    for name, text in (('sbatch', _SBATCH), ('squeue', _SQUEUE), ('srun', _FAKE_SRUN)):
      (bin_dir / name).write_text(text)
      (bin_dir / name).chmod(0o755)
    self.env = {k: v for k, v in os.environ.items()
                if not k.startswith('SLURM_') and k not in _CLUSTER_VARS}
    self.env.update(PATH=f'{bin_dir}:{self.env["PATH"]}', STAND_IN_QUEUE=str(self.queue),
                    PYTHON=sys.executable, JAX_PLATFORMS='cpu')

  def jobs(self) -> list[str]:
    return sorted(p.stem for p in self.queue.glob('*.args'))

  def args(self, job: str) -> list[str]:
    return (self.queue / f'{job}.args').read_text().split('\0')[:-1]

  def start(self, job: str) -> subprocess.Popen:
    """Runs the job's script as SLURM would: from the folder it was submitted in, its output
    where --output says, in a process group of its own."""
    args = self.args(job)
    first = next(i for i, a in enumerate(args) if not a.startswith('-'))
    options = dict(a[2:].partition('=')[::2] for a in args[:first])
    with socket.socket() as s:
      s.bind(('localhost', 0))
      port = s.getsockname()[1]
    cwd = (self.queue / f'{job}.cwd').read_text().strip()
    env = {**self.env, 'SLURM_JOB_ID': job, 'SLURM_JOB_NODELIST': 'localhost',
           'SLURM_NTASKS': '1', 'SLURM_SUBMIT_DIR': cwd, 'JAX_COORDINATOR_PORT': str(port)}
    (self.queue / f'{job}.state').write_text('RUNNING')
    with open(options['output'].replace('%j', job), 'a') as out:
      return subprocess.Popen(['bash', *args[first:]], cwd=cwd, env=env, stdout=out,
                              stderr=subprocess.STDOUT, start_new_session=True)

  def end(self, job: str, proc: subprocess.Popen) -> int:
    rc = proc.wait(timeout=120)
    (self.queue / f'{job}.state').write_text('COMPLETED' if rc == 0 else 'FAILED')
    return rc

  def run(self, job: str) -> int:
    return self.end(job, self.start(job))


def _wait_for_a_checkpoint(workdir, proc, timeout=60) -> None:
  """Until the run has logged a step and saved a checkpoint after it started."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    assert proc.poll() is None, 'the job ended before its first checkpoint'
    saved = os.listdir(workdir / 'checkpoints') if (workdir / 'checkpoints').exists() else []
    if any(d.isdigit() for d in saved) and (workdir / 'metrics.jsonl').exists():
      return
    time.sleep(0.05)
  raise AssertionError('no checkpoint in time')


# This test's sweep; `_sweep_command` adds it to the command's sweeps as `cluster_test`.
RUNS = {'baseline': {}, 'no_lrn': {'model.lrn': False},
        'long': {'num_train_steps': 100, 'log_every_steps': 10, 'checkpoint_every_steps': 20},
        'broken': {'data.train_dir': '/nonexistent/train'}, 'extra': {'seed': 3}}
TEST_SWEEP = ablations.Sweep('cluster test', RUNS)


def _sweep_command(cluster, *flags):
  """experiments.sweep as a user runs it, with this test's sweep among the sweeps."""
  code = ('import runpy, sys; from experiments import ablations; '
          f'ablations.SWEEPS["cluster_test"] = ablations.Sweep("cluster test", {RUNS!r}); '
          'sys.argv[0] = "sweep"; runpy.run_module("experiments.sweep", run_name="__main__")')
  return subprocess.run([sys.executable, '-c', code, '--sweep=cluster_test', *flags], cwd=REPO,
                        env=cluster.env, capture_output=True, text=True, timeout=120, check=False)


def _status(root, base) -> dict[str, str]:
  lines = sweep.status(sweep.select(TEST_SWEEP), base, str(root))
  return {line.split()[0]: line for line in lines}


def test_a_sweep_on_slurm_submitted_resumed_and_gathered(shapes_dir, tmp_path, monkeypatch):
  cluster = Cluster(tmp_path)
  monkeypatch.setenv('PATH', cluster.env['PATH'])
  monkeypatch.setenv('STAND_IN_QUEUE', cluster.env['STAND_IN_QUEUE'])
  base = tmp_path / 'cluster_config.py'
  base.write_text(_CONFIG.format(root=shapes_dir, cache=str(tmp_path / 'cache')))
  root = tmp_path / 'runs'
  submitted = ['baseline', 'no_lrn', 'long', 'broken']
  assert set(_status(root, str(base)).values()) == {
      f'{n:<8}  not started' for n in RUNS}

  # One job per run, each with the sweep's resources; the job ids kept in the root.
  proc = _sweep_command(cluster, f'--root={root}', f'--config={base}', '--launcher=slurm',
                        f'--only={",".join(submitted)}', '--nodes=1', '--gpus_per_node=2',
                        '--time=0:30:00', '--partition=debug')
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert '0 of 4 runs finished' in proc.stdout
  jobs = {n: j['id'] for n, j in launcher.read_jobs(str(root)).items()}
  assert list(jobs) == submitted and sorted(jobs.values()) == cluster.jobs()
  args = cluster.args(jobs['no_lrn'])
  assert {'--parsable', '--nodes=1', '--gpus-per-node=2', '--time=0:30:00',
          '--partition=debug'} <= set(args)
  assert args[-4:] == [launcher.SCRIPT, str(base), str(root / 'no_lrn'), '--config.model.lrn=False']

  # Submitted again while all are queued: nothing is submitted twice.
  assert sweep.run_sweep(TEST_SWEEP, str(root), base=str(base), only=submitted,
                         launch_with='slurm') == []
  assert len(cluster.jobs()) == 4
  status = _status(root, str(base))
  assert status['no_lrn'].split()[1:] == ['queued', 'job', jobs['no_lrn']]

  # SLURM runs three of them: one finishes, one fails, one is stopped mid-way (later killed).
  started = {n: cluster.start(jobs[n]) for n in ('long', 'baseline', 'broken')}
  long_job = started.pop('long')
  try:
    _wait_for_a_checkpoint(root / 'long', long_job)
    os.killpg(long_job.pid, signal.SIGSTOP)  # holds its lock and its place in the queue
    for name, job in started.items():
      rc = cluster.end(jobs[name], job)
      assert (rc == 0) == (name == 'baseline'), (root / name / f'slurm-{jobs[name]}.out'
                                                ).read_text()
    proc = _sweep_command(cluster, f'--root={root}', f'--config={base}', '--status')
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()}
    assert list(lines) == list(RUNS)
    assert 'finished' in lines['baseline'] and 'val top-1 err' in lines['baseline']
    assert ' running ' in lines['long'] and 'steps/s' in lines['long'] and 'left' in lines['long']
    assert f'(job {jobs["long"]})' in lines['long'] and 'step ' in lines['long']
    assert 'failed' in lines['broken'] and 'No training images' in lines['broken']
    assert lines['no_lrn'].split()[1:] == ['queued', 'job', jobs['no_lrn']]
    assert lines['extra'].split()[1:] == ['not', 'started']
    # Running and queued: submitted again, the sweep sends nothing.
    sweep.run_sweep(TEST_SWEEP, str(root), base=str(base),
                    only=['baseline', 'no_lrn', 'long'], launch_with='slurm')
    assert len(cluster.jobs()) == 4
  finally:
    os.killpg(long_job.pid, signal.SIGKILL)  # no checkpoint at the end: as a node lost
    cluster.end(jobs['long'], long_job)
  deadline = time.time() + 30
  while launcher.lock_held(str(root / 'long')) and time.time() < deadline:
    time.sleep(0.05)  # the training process ends a moment after the job's script
  assert 'failed' in _status(root, str(base))['long']

  # Submitted again: only the killed run; it resumes from its checkpoint and finishes.
  gathered = ['baseline', 'long']
  assert sweep.run_sweep(TEST_SWEEP, str(root), base=str(base), only=gathered,
                         launch_with='slurm') == []
  resumed = launcher.read_jobs(str(root))['long']['id']
  assert cluster.jobs() == sorted([*jobs.values(), resumed]) and resumed not in jobs.values()
  assert cluster.run(resumed) == 0
  assert 'Resumed from step' in (root / 'long' / f'slurm-{resumed}.out').read_text()

  # All finished: the same command submits nothing and gathers the table.
  rows = sweep.run_sweep(TEST_SWEEP, str(root), base=str(base), only=gathered,
                         launch_with='slurm')
  assert len(cluster.jobs()) == 5
  assert [r['run'] for r in rows] == gathered and all(r['val_top1_err'] != '' for r in rows)
  assert rows[1]['epochs'] == 10.0 and (root / 'results.md').exists()
  record = json.loads((root / 'long' / 'run.json').read_text())
  assert record['job'] == resumed and record['overrides'] == RUNS['long']


def test_status_of_a_local_sweep(tmp_path):
  """--status reads a local sweep's runs from their workdirs alone: the lock of a run training
  now, its last 'train' record, the record of a finished one, the log of one that stopped. A
  local sweep does not start a run that another process is training."""
  root = tmp_path
  for name in RUNS:
    os.makedirs(root / name)
  (root / 'baseline' / 'run.json').write_text('{"base": "b.py", "overrides": {}}')
  (root / 'baseline' / 'metrics.jsonl').write_text(
      json.dumps({'step': 6, 'split': 'val', 'top1_err': 0.25, 'top5_err': 0.0625}) + '\n')
  (root / 'no_lrn' / 'metrics.jsonl').write_text(json.dumps(
      {'step': 40, 'split': 'train', 'steps_per_sec': 2.5, 'eta_s': 3725.0}) + '\n')
  (root / 'long' / 'log.txt').write_text('step 3\nerror: the disk is full.\n\n')
  holder = subprocess.Popen(
      [sys.executable, '-c', 'import fcntl, sys, time; f = open(sys.argv[1], "a+"); '
       'fcntl.lockf(f, fcntl.LOCK_EX); print(flush=True); time.sleep(60)',
       str(root / 'no_lrn' / 'lock.0')], stdout=subprocess.PIPE, text=True)
  try:
    holder.stdout.readline()
    lines = _status(root, 'b.py')
    assert sweep.launch('no_lrn', 'b.py', {}, str(root)) == {}  # not started a second time
  finally:
    holder.kill()
    holder.wait()
  assert lines['baseline'] == 'baseline  finished     val top-1 err 25.0%, top-5 err 6.2%'
  assert lines['no_lrn'] == 'no_lrn    running      step 40, 2.5 steps/s, 1:02:05 left'
  assert lines['long'] == 'long      failed       error: the disk is full.'
  assert lines['extra'] == 'extra     not started'
  assert 'failed' in _status(root, 'b.py')['no_lrn']  # the lock went with its holder


@pytest.mark.parametrize('flags,says', [
    (('--launcher=slurm',), 'sbatch failed: sbatch: error: no partition'),
    (('--nodes=2',), 'are for SLURM jobs'),
])
def test_sweep_command_line_refuses_in_one_line(tmp_path, flags, says):
  cluster = Cluster(tmp_path)
  (tmp_path / 'bin' / 'sbatch').write_text('#!/bin/bash\necho "sbatch: error: no partition" >&2\n'
                                           'exit 1\n')
  proc = _sweep_command(cluster, f'--root={tmp_path / "runs"}', '--only=baseline', *flags)
  assert proc.returncode != 0 and says in proc.stderr and 'Traceback' not in proc.stderr
