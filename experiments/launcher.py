"""Where a sweep's run stands, read from its workdir and SLURM's queue; a run sent to SLURM.

A run's state never comes from the sweep that started it, so any later command can read it:

- finished: its record (ROOT/NAME/run.json, written by the sweep) is there, or its metrics say it
  trained every step (the last 'train' record of metrics.jsonl has no time left, eta_s 0) and
  the checkpoint of that step is saved;
- running: a process holds the workdir's lock (alexnet_jax/workdir_lock.py), or SLURM runs its job;
- queued: its job waits in SLURM's queue (requeued after a preemption, too);
- failed: it started (a job was submitted, or a log was written) and neither finished nor runs:
  an error, a kill, or a time limit; the last line of its log says which;
- not started.

Preemption and requeueing are experiments/slurm/train.sbatch's (--requeue, a checkpoint at
SIGTERM), and resuming is the run's own: a failed run sent again continues from its newest
checkpoint.
"""

import dataclasses
import datetime
import fcntl
import glob
import json
import os
import struct
import subprocess
import sys

from alexnet_jax import metric_writer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = 'experiments/slurm/train.sbatch'
JOBS_FILE = 'jobs.json'  # in the sweep's root: run name -> its last job's id, base and overrides
RUNNING = ('RUNNING', 'COMPLETING', 'CONFIGURING')  # SLURM's states of a job that has started

# struct flock, for asking about a lock without taking it: Linux's field order (type, whence,
# start, len, pid), and macOS's (start, len, pid, type, whence).
_FLOCK = {'darwin': ('qqihh', 3)}.get(sys.platform, ('hhqqi4x', 0))


@dataclasses.dataclass(frozen=True)
class Resources:
  """What every job of a sweep asks SLURM for; None keeps train.sbatch's own #SBATCH value."""
  nodes: int | None = None
  gpus_per_node: int | None = None
  time: str | None = None
  partition: str | None = None

  def sbatch_flags(self) -> list[str]:
    given = {'nodes': self.nodes, 'gpus-per-node': self.gpus_per_node, 'time': self.time,
             'partition': self.partition}
    return [f'--{k}={v}' for k, v in given.items() if v is not None]


@dataclasses.dataclass(frozen=True)
class State:
  name: str  # finished, running, queued, failed or not started
  detail: str = ''


def finished(workdir: str) -> bool:
  """Whether the run trained every step and saved that step's checkpoint."""
  train = metric_writer.read_by_split(workdir).get('train')
  if not train or train[-1].get('eta_s') != 0:  # a stopped run's last record has time left
    return False
  return os.path.isdir(os.path.join(workdir, 'checkpoints', str(train[-1]['step'])))


def lock_held(workdir: str) -> bool:
  """Whether a process holds the workdir's lock, asked (F_GETLK) without taking it: a lock taken
  even for a moment would turn away a run starting then."""
  fmt, type_field = _FLOCK
  query = [0] * 5
  query[type_field] = fcntl.F_WRLCK
  for path in glob.glob(os.path.join(workdir, 'lock.*')):  # one per process of the run
    try:
      with open(path) as f:
        answer = fcntl.fcntl(f, fcntl.F_GETLK, struct.pack(fmt, *query))
    except OSError:
      continue  # gone, or a file system without locks: nothing to ask
    if struct.unpack(fmt, answer)[type_field] != fcntl.F_UNLCK:
      return True
  return False


def _slurm(command: list[str], env: dict | None = None) -> str:
  """The output of a SLURM command, or one line saying why there is none."""
  try:
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          check=False)
  except FileNotFoundError:
    raise SystemExit(f'error: {command[0]} is not on PATH: submit a SLURM sweep, and ask its '
                     '--status, where SLURM\'s commands are (a login node).') from None
  if proc.returncode:
    why = (proc.stderr.strip().splitlines() or [f'exit {proc.returncode}'])[-1]
    raise SystemExit(f'error: {command[0]} failed: {why}. Fix what it says, then run the same '
                     'command again.')
  return proc.stdout


def queue() -> dict[str, str]:
  """This user's jobs in SLURM's queue: job id -> state (PENDING, RUNNING, ...)."""
  out = _slurm(['squeue', '--noheader', f'--user={os.getuid()}', '--format=%i %T'])
  return dict(line.split()[:2] for line in out.splitlines() if len(line.split()) >= 2)


def submit(name: str, base: str, workdir: str, override_flags: list[str],
           resources: Resources) -> str:
  """Submits one run as a job of train.sbatch, its output in WORKDIR/slurm-JOBID.out; returns
  the job id."""
  os.makedirs(workdir, exist_ok=True)  # SLURM opens the output file there before the job runs
  env = {**os.environ, 'PYTHON': os.environ.get('PYTHON', sys.executable)}  # the sweep's venv
  out = _slurm(['sbatch', '--parsable', f'--job-name=alexnet-{name}',
                f'--output={workdir}/slurm-%j.out', '--open-mode=append',
                *resources.sbatch_flags(), SCRIPT, base, workdir, *override_flags], env)
  return out.strip().split(';')[0]  # --parsable: "id" or "id;cluster"


def read_jobs(root: str) -> dict[str, dict]:
  path = os.path.join(root, JOBS_FILE)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def write_jobs(root: str, jobs: dict[str, dict]) -> None:
  path = os.path.join(root, JOBS_FILE)
  with open(f'{path}.tmp', 'w') as f:
    json.dump(jobs, f, indent=2)
  os.replace(f'{path}.tmp', path)  # never a half-written record of what was submitted


def log_path(workdir: str, job: str | None) -> str:
  """A run's log: its SLURM job's output, or the local sweep's log.txt."""
  return os.path.join(workdir, f'slurm-{job}.out' if job else 'log.txt')


def _last_line(path: str) -> str:
  with open(path, errors='replace') as f:
    lines = [l.strip() for l in f.read().replace('\r', '\n').splitlines() if l.strip()]
  return lines[-1] if lines else f'{path} is empty'


def _errors(workdir: str) -> str:
  val = metric_writer.read_by_split(workdir).get('val')
  if not val:
    return 'no validation record'
  return (f'val top-1 err {100 * val[-1]["top1_err"]:.1f}%, '
          f'top-5 err {100 * val[-1]["top5_err"]:.1f}%')


def _progress(workdir: str) -> str:
  train = metric_writer.read_by_split(workdir).get('train')
  if not train:
    return 'no step logged yet'
  last = train[-1]
  left = datetime.timedelta(seconds=round(last['eta_s']))
  return f'step {last["step"]}, {last["steps_per_sec"]:.3g} steps/s, {left} left'


def state(workdir: str, job: str | None, queued: dict[str, str]) -> State:
  """Where the run in `workdir` stands; `job` is its last SLURM job (None: run here), `queued`
  the scheduler's queue (`queue()`)."""
  if os.path.exists(os.path.join(workdir, 'run.json')) or finished(workdir):
    return State('finished', _errors(workdir))
  in_queue = queued.get(job) if job else None
  of_job = f' (job {job})' if job else ''
  if lock_held(workdir) or in_queue in RUNNING:
    return State('running', _progress(workdir) + of_job)
  if in_queue:
    return State('queued', f'job {job}' + ('' if in_queue == 'PENDING' else f', {in_queue}'))
  log = log_path(workdir, job)
  if os.path.exists(log):
    return State('failed', _last_line(log) + of_job)
  if job or os.path.exists(os.path.join(workdir, metric_writer.METRICS_FILE)):
    return State('failed', f'no log at {log}')
  return State('not started')
