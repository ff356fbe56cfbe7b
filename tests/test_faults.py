"""Faults a week-long run meets, injected with real processes, signals and files: SIGTERM and
SIGINT mid-run, SIGKILL with input workers alive, divergence, a second run in the same workdir,
an unwritable workdir, a misspelled config field."""

import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from alexnet_jax import checkpointing, metric_writer, train
from alexnet_jax.errors import UserError
from tests.conftest import small_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CONFIG_FILE = '''
from tests.conftest import small_config


def get_config():
  return small_config({root!r}, {cache!r})
'''


def _config_file(tmp_path, shapes_dir) -> str:
  path = tmp_path / 'faults_config.py'
  path.write_text(_CONFIG_FILE.format(root=shapes_dir, cache=str(tmp_path / 'cache')))
  return str(path)


def _env():
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'JAX_PLATFORMS')}
  return {**env, 'JAX_PLATFORMS': 'cpu'}


def _start(config_file, workdir, *overrides, **kwargs) -> subprocess.Popen:
  return subprocess.Popen(
      [sys.executable, '-m', 'alexnet_jax.main', f'--config={config_file}',
       f'--workdir={workdir}', *overrides],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), **kwargs)


def _wait_for_step(proc, workdir, step, timeout=240) -> None:
  """Until the run has logged a training record at `step` or later."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    records = metric_writer.read_records(str(workdir), 'train')
    if records and records[-1]['step'] >= step:
      return
    time.sleep(0.2)
  raise AssertionError(f'no training record at step {step} within {timeout} s')


def _descendants(pid: int) -> set[int]:
  """The processes below `pid`, from /proc."""
  parents = {}
  for entry in os.listdir('/proc'):
    if entry.isdigit():
      try:
        with open(f'/proc/{entry}/stat') as f:
          parents[int(entry)] = int(f.read().rsplit(')', 1)[1].split()[1])
      except (OSError, IndexError, ValueError):
        pass
  found, frontier = set(), {pid}
  while frontier:
    frontier = {p for p, parent in parents.items() if parent in frontier} - found
    found |= frontier
  return found


def _alive(pids) -> set[int]:
  alive = set()
  for pid in pids:
    try:
      with open(f'/proc/{pid}/stat') as f:
        if f.read().rsplit(')', 1)[1].split()[0] != 'Z':
          alive.add(pid)
    except OSError:
      pass
  return alive


def _all_exit(pids, timeout=20) -> bool:
  """Whether the processes `pids` are all gone within `timeout` seconds."""
  deadline = time.monotonic() + timeout
  while _alive(pids) and time.monotonic() < deadline:
    time.sleep(0.2)
  return not _alive(pids)


def _steps(workdir) -> list[int]:
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints')) if d.isdigit())


def _params(workdir, step):
  mgr = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'), item_names=('state',))
  return mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))['state'][
      'params']


@pytest.mark.parametrize('sig, workers, group', [(signal.SIGTERM, 1, False),
                                                  (signal.SIGINT, 1, True)])
def test_signal_saves_a_checkpoint_at_the_current_step_and_the_run_resumes_exactly(
    shapes_dir, tmp_path, sig, workers, group):
  """SIGTERM to the run (a scheduler), or SIGINT to its whole process group (Ctrl-C in a
  terminal, which reaches the input workers too)."""
  config_file = _config_file(tmp_path, shapes_dir)
  long = ['--config.num_train_steps=100000', '--config.checkpoint_every_steps=100000',
          '--config.eval_every_steps=100000', '--config.log_every_steps=1',
          f'--config.data.workers={workers}']
  proc = _start(config_file, tmp_path / 'run', *long, start_new_session=True)
  _wait_for_step(proc, tmp_path / 'run', 3)
  workers_seen = _descendants(proc.pid)
  if group:
    os.killpg(proc.pid, sig)
  else:
    proc.send_signal(sig)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-3000:]
  assert 'Traceback' not in err
  [step] = _steps(tmp_path / 'run')  # the one checkpoint: the step the signal stopped at
  assert f'{sig.name}: stopped after step {step}' in out
  assert step >= 3
  assert workers_seen and _all_exit(workers_seen)

  # The same command resumes (here with an end in sight) and equals an uninterrupted run.
  config = small_config(shapes_dir, str(tmp_path / 'cache'))
  config.num_train_steps, config.log_every_steps, config.data.workers = step + 3, 1, workers
  config.checkpoint_every_steps = config.eval_every_steps = 100000
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  train.train_and_evaluate(config, str(tmp_path / 'whole'))
  jax.tree.map(np.testing.assert_array_equal, _params(tmp_path / 'run', step + 3),
               _params(tmp_path / 'whole', step + 3))
  # One record per step: the resumed run dropped what the stopped one logged after its save.
  steps = [r['step'] for r in metric_writer.read_records(str(tmp_path / 'run'), 'train')]
  assert steps == list(range(1, step + 4))


def test_sigkill_leaves_no_input_worker_behind_and_the_log_is_deduplicated(shapes_dir, tmp_path):
  config_file = _config_file(tmp_path, shapes_dir)
  proc = _start(config_file, tmp_path / 'run', '--config.num_train_steps=100000',
                '--config.checkpoint_every_steps=4', '--config.eval_every_steps=100000',
                '--config.log_every_steps=1', '--config.data.workers=1')
  deadline = time.monotonic() + 240
  while not (os.path.isdir(tmp_path / 'run' / 'checkpoints') and _steps(tmp_path / 'run')):
    assert time.monotonic() < deadline and proc.poll() is None, 'no checkpoint was written'
    time.sleep(0.2)
  _wait_for_step(proc, tmp_path / 'run', _steps(tmp_path / 'run')[-1] + 2)
  workers = _descendants(proc.pid)
  assert workers, 'the run should have started an input worker process'
  proc.kill()
  proc.communicate(timeout=60)
  assert _all_exit(workers), 'input workers outlived the killed run'

  # The killed run logged steps after its last checkpoint; resuming rewrites them exactly once.
  last = _steps(tmp_path / 'run')[-1]
  logged = [r['step'] for r in metric_writer.read_records(str(tmp_path / 'run'), 'train')]
  assert max(logged) > last
  config = small_config(shapes_dir, str(tmp_path / 'cache'))
  config.num_train_steps, config.log_every_steps, config.eval_every_steps = last + 2, 1, 100000
  config.data.workers = 1
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  steps = [r['step'] for r in metric_writer.read_records(str(tmp_path / 'run'), 'train')]
  assert steps == list(range(1, last + 3))


def _all_finite(tree) -> bool:
  return all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(tree))


def test_divergence_never_costs_a_good_checkpoint(shapes_dir, tmp_path):
  config = small_config(shapes_dir, str(tmp_path / 'cache'))
  config.keep_checkpoints = 2
  train.train_and_evaluate(config, str(tmp_path / 'run'))  # good checkpoints at 3 and 6
  # Resume with a rate that blows up; log and evaluate rarely, save often: the check runs
  # before every save all the same.
  config.optim.base_lr, config.num_train_steps = 1e6, 40
  config.log_every_steps = config.eval_every_steps = 1000
  config.checkpoint_every_steps = 1
  with pytest.raises(UserError, match=r'diverged at step \d+') as error:
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  steps = _steps(tmp_path / 'run')
  assert f'The newest good checkpoint is step {steps[-1]} in' in str(error.value)
  assert steps[-1] >= 6 and all(_all_finite(_params(tmp_path / 'run', s)) for s in steps)


def test_divergence_without_any_checkpoint_says_so(shapes_dir, tmp_path):
  config = small_config(shapes_dir, str(tmp_path / 'cache'))
  config.optim.base_lr, config.num_train_steps = 1e6, 30
  config.log_every_steps = config.checkpoint_every_steps = config.eval_every_steps = 1000
  with pytest.raises(UserError, match='No checkpoint had been written yet'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints') or not _steps(tmp_path / 'run')


def test_skipping_nonfinite_updates_counts_them_and_keeps_the_state_finite(shapes_dir, tmp_path):
  config = small_config(shapes_dir, str(tmp_path / 'cache'))
  config.optim.base_lr, config.skip_nonfinite_updates = 1e6, True
  final = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert final['train']['skipped_updates'] >= 1
  assert all(_all_finite(_params(tmp_path / 'run', s)) for s in _steps(tmp_path / 'run'))


def test_a_second_run_in_the_same_workdir_is_refused_until_the_first_is_gone(
    shapes_dir, tmp_path):
  config_file = _config_file(tmp_path, shapes_dir)
  first = _start(config_file, tmp_path / 'run', '--config.num_train_steps=100000',
                 '--config.log_every_steps=1', '--config.eval_every_steps=100000')
  _wait_for_step(first, tmp_path / 'run', 1)
  second = subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.main', f'--config={config_file}',
       f'--workdir={tmp_path / "run"}'], cwd=ROOT, capture_output=True, text=True, env=_env(),
      timeout=120)
  assert second.returncode == 1
  assert f'Another run is using the workdir {tmp_path / "run"}: pid {first.pid}' in second.stderr
  assert 'Traceback' not in second.stderr
  first.kill()  # a dead run holds no lock: the next one starts
  first.communicate(timeout=60)
  config = small_config(shapes_dir, str(tmp_path / 'cache'))
  config.num_train_steps = 2
  train.train_and_evaluate(config, str(tmp_path / 'run'))


@pytest.fixture
def read_only_dir(tmp_path):
  """A folder this process cannot write to: a read-only tmpfs for root (who writes anywhere
  else), a folder without write permission for anyone else."""
  path = tmp_path / 'read_only'
  path.mkdir()
  if os.geteuid() != 0:
    path.chmod(0o555)
    yield path, 'Permission denied'
    return
  mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', str(path)],
                           capture_output=True, text=True)
  if mounted.returncode:
    pytest.skip(f'root cannot mount a read-only tmpfs here: {mounted.stderr.strip()}')
  yield path, 'Read-only file system'
  subprocess.run(['umount', str(path)], check=True)


def test_unwritable_workdir_is_one_line(shapes_dir, tmp_path, read_only_dir):
  folder, reason = read_only_dir
  result = subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.main', f'--config={_config_file(tmp_path, shapes_dir)}',
       f'--workdir={folder / "run"}'], cwd=ROOT, capture_output=True, text=True, env=_env(),
      timeout=120)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      f'error: Cannot write to the workdir {folder / "run"}: {reason}. Choose a writable '
      '--workdir.')
  assert 'Traceback' not in result.stderr


def test_misspelled_config_field_is_one_line_naming_the_section(shapes_dir, tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.main', '--config=configs/demo.py',
       f'--workdir={tmp_path / "run"}', '--config.optim.lerning_rate=0.1'],
      cwd=ROOT, capture_output=True, text=True, env=_env(), timeout=120)
  assert result.returncode == 1
  [line] = result.stderr.strip().splitlines()
  assert line.startswith("error: --config.optim.lerning_rate: optim has no field 'lerning_rate'")
  assert 'base_lr' in line
  assert not os.path.exists(tmp_path / 'run')


def test_rerun_of_a_finished_run_reports_its_final_metrics(trained_workdir, shapes_dir, tmp_path):
  config = small_config(shapes_dir, str(tmp_path / 'cache'))
  final = train.train_and_evaluate(config, trained_workdir)
  assert final['val']['top1_err'] == metric_writer.read_records(trained_workdir, 'val')[-1][
      'top1_err']
  assert {'steps_per_sec', 'images_per_sec', 'eta_s', 'time'} <= set(final['train'])


def test_sigterm_to_one_of_two_processes_stops_both_at_the_same_step(shapes_dir, tmp_path):
  """JAX's preemption sync point: the process that was not signalled stops at the same step,
  and both write their part of one checkpoint there."""
  config_file = _config_file(tmp_path, shapes_dir)
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  env = {**_env(), 'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}
  procs = [subprocess.Popen(
      [sys.executable, '-m', 'alexnet_jax.main', f'--config={config_file}',
       f'--workdir={tmp_path / "run"}', '--config.num_train_steps=100000',
       '--config.checkpoint_every_steps=100000', '--config.eval_every_steps=100000',
       '--config.log_every_steps=1', '--config.mesh.model=2',
       f'--coordinator_address=localhost:{port}', '--num_processes=2', f'--process_id={i}'],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
      for i in range(2)]
  _wait_for_step(procs[0], tmp_path / 'run', 3)
  procs[1].send_signal(signal.SIGTERM)
  outputs = [p.communicate(timeout=180) for p in procs]
  for p, (out, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
  [step] = _steps(tmp_path / 'run')
  for out, _ in outputs:
    assert f'SIGTERM: stopped after step {step}' in out
  assert _all_finite(checkpointing.load(str(tmp_path / 'run'), step).params)
