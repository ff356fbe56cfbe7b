"""The experiment tools as a newcomer runs them: a sweep, the figures, the curves."""

import csv
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
from PIL import Image

from experiments import ablations, curves, figure1, figure3, figure4, sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_claim_has_a_sweep_of_valid_overrides():
  from alexnet_jax import config_check  # pylint: disable=g-import-not-at-top
  from configs import imagenette_small  # pylint: disable=g-import-not-at-top
  assert {'relu_tanh', 'lrn', 'pooling', 'towers', 'lighting', 'dropout',
          'middle_conv'} <= set(ablations.SWEEPS)
  assert set(ablations.SWEEPS['middle_conv'].runs) == {'baseline', 'no_conv2', 'no_conv3',
                                                    'no_conv4'}
  for name, (overrides, _) in ablations.ABLATIONS.items():
    config = imagenette_small.get_config()
    for key, value in overrides.items():
      section, field = key.split('.')
      config[section][field] = value
    config_check.validate(config)  # raises ConfigError for an override that cannot run
    assert name == 'baseline' or overrides


def test_flag_values_parse_back():
  assert sweep.flag_value((3,)) == '(3,)'
  assert sweep.flag_value((48, 128)) == '(48,128,)'
  assert sweep.flag_value(False) == 'False' and sweep.flag_value(0.5) == '0.5'


def test_sweep_runs_each_override_and_tabulates(shapes_dir, tmp_path):
  common = {'data.source': 'imagefolder', 'data.train_dir': os.path.join(shapes_dir, 'train'),
            'data.val_dir': os.path.join(shapes_dir, 'val'),
            'data.cache_dir': str(tmp_path / 'cache'), 'model.width': 0.125,
            'num_train_steps': 4, 'batch_size': 16, 'log_every_steps': 2,
            'eval_every_steps': 4, 'data.threads': 2}
  small = ablations.Sweep('test', {'baseline': {}, 'no_conv3': {'model.skip_convs': (3,)}})
  rows = sweep.run_sweep(small, str(tmp_path / 'runs'), base='configs/demo.py', common=common)
  assert [r['run'] for r in rows] == ['baseline', 'no_conv3']
  for r in rows:
    assert 0 <= r['val_top1_err'] <= 1 and r['params'] > 0 and r['wall_min'] != ''
  assert rows[1]['params'] < rows[0]['params']         # conv3's kernels are gone
  assert rows[0]['delta_top1'] == 0
  with open(tmp_path / 'runs' / 'results.csv') as f:
    assert [r['run'] for r in csv.DictReader(f)] == ['baseline', 'no_conv3']
  table = (tmp_path / 'runs' / 'results.md').read_text()
  assert '| no_conv3 |' in table and 'val top-1 err %' in table
  # A second invocation reuses the finished runs instead of training them again.
  mtime = os.path.getmtime(tmp_path / 'runs' / 'baseline' / 'metrics.jsonl')
  sweep.run_sweep(small, str(tmp_path / 'runs'), base='configs/demo.py', common=common,
                  only=['baseline'])
  assert os.path.getmtime(tmp_path / 'runs' / 'baseline' / 'metrics.jsonl') == mtime


def test_sweep_refuses_a_root_of_runs_made_with_other_settings(tmp_path, capsys):
  small = ablations.Sweep('test', {'baseline': {}, 'no_lrn': {'model.lrn': False}})
  for name, overrides in (('baseline', {'num_epochs': '2'}),
                          ('no_lrn', {'num_epochs': '2', 'model.lrn': False})):
    os.makedirs(tmp_path / name)
    (tmp_path / name / 'run.json').write_text(json.dumps(
        {'name': name, 'base': 'configs/demo.py', 'overrides': overrides, 'returncode': 0,
         'wall_s': 1.0}))
  with pytest.raises(SystemExit, match=r'baseline: num_epochs=2 \(this sweep: 3\); no_lrn: '
                     r'num_epochs=2 \(this sweep: 3\)\. Give another --root'):
    sweep.run_sweep(small, str(tmp_path), base='configs/demo.py', common={'num_epochs': '3'})
  with pytest.raises(SystemExit, match=r'baseline: base configs/demo.py \(this sweep: configs/pap'):
    sweep.run_sweep(small, str(tmp_path), base='configs/paper.py', common={'num_epochs': '2'},
                    only=['baseline'], gather_only=True)
  # The same settings find the runs finished: nothing is trained again.
  rows = sweep.run_sweep(small, str(tmp_path), base='configs/demo.py',
                         common={'num_epochs': '2'})
  assert [r['run'] for r in rows] == ['baseline', 'no_lrn']
  assert 'error' not in capsys.readouterr().err


@pytest.mark.parametrize('flag,named', [('--only=nonsense', 'nonsense'),
                                        ('--config.optim.base_rate=1', "'base_lr'")])
def test_sweep_command_line_rejects_unknown_runs_and_fields(tmp_path, flag, named):
  proc = subprocess.run([sys.executable, '-m', 'experiments.sweep', '--sweep=lrn',
                         f'--root={tmp_path}', flag], cwd=REPO,
                        capture_output=True, text=True, check=False)
  assert proc.returncode != 0 and named in proc.stderr and 'Traceback' not in proc.stderr


def test_sweep_command_line_overrides_reach_every_run(tmp_path):
  """--config=FILE and --config.FIELD=VALUE, as training takes them, set the base and a field
  of every run: a root of runs recorded with them is found finished, one without is refused."""
  for name in ('baseline', 'no_lrn'):
    os.makedirs(tmp_path / name)
    (tmp_path / name / 'run.json').write_text(json.dumps(
        {'name': name, 'base': 'configs/demo.py', 'returncode': 0, 'wall_s': 1.0,
         'overrides': {'num_epochs': 2, **({'model.lrn': False} if name == 'no_lrn' else {})}}))
  run = lambda *flags: subprocess.run(
      [sys.executable, '-m', 'experiments.sweep', '--sweep=lrn', f'--root={tmp_path}',
       '--gather_only', *flags], cwd=REPO, capture_output=True, text=True, check=False)
  proc = run('--config=configs/demo.py', '--config.num_epochs=2')
  assert proc.returncode == 0, proc.stderr
  assert '| no_lrn |' in proc.stdout
  proc = run('--config=configs/demo.py', '--config.num_epochs=3')
  assert proc.returncode != 0 and 'num_epochs=2 (this sweep: 3)' in proc.stderr


def _is_png(path, min_side=100):
  with Image.open(path) as image:
    return image.format == 'PNG' and min(image.size) >= min_side


def test_figures_and_curves_from_a_checkpoint(trained_workdir, tmp_path):
  assert _is_png(figure3.draw(trained_workdir, str(tmp_path / 'f3.png')))
  assert _is_png(figure4.draw(trained_workdir, str(tmp_path / 'f4.png'), queries=2, k=3))
  assert _is_png(curves.draw([trained_workdir, trained_workdir], str(tmp_path / 'c.png'),
                             labels=['a', 'b']))


def test_figure_scripts_write_beside_the_run_not_over_the_committed_figures(trained_workdir,
                                                                          tmp_path):
  workdir = shutil.copytree(trained_workdir, tmp_path / 'run')
  committed = os.path.join(REPO, 'experiments', 'figures', 'figure3.png')
  before = os.path.getmtime(committed)
  proc = subprocess.run([sys.executable, '-m', 'experiments.figure3', f'--workdir={workdir}'],
                        cwd=REPO, capture_output=True, text=True, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert _is_png(workdir / 'figure3.png') and os.path.getmtime(committed) == before


def test_figure1_reads_the_epoch_a_target_is_reached():
  recs = [{'epoch': 1.0, 'top1_err': 0.5}, {'epoch': 2.0, 'top1_err': 0.3},
          {'epoch': 3.0, 'top1_err': 0.2}]
  assert figure1.epochs_to(recs, 0.25) == 2.5
  assert figure1.epochs_to(recs, 0.5) == 1.0
  assert figure1.epochs_to(recs, 0.1) is None


_SLURM_CONFIG = '''from tests.conftest import small_config


def get_config():
  config = small_config({root!r}, {cache!r})
  config.num_train_steps = config.eval_every_steps = config.checkpoint_every_steps = 2
  return config
'''

# SLURM's srun on one machine: SLURM_NTASKS copies of the command, each with its task's ids.
_FAKE_SRUN = '''#!/bin/bash
while [[ $1 == -* ]]; do shift; done
pids=()
for ((i = 0; i < SLURM_NTASKS; i++)); do
  SLURM_STEP_NODELIST=$SLURM_JOB_NODELIST SLURM_PROCID=$i SLURM_LOCALID=$i "$@" &
  pids+=($!)
done
rc=0
for pid in "${pids[@]}"; do wait "$pid" || rc=$?; done
exit $rc
'''


def test_slurm_script_trains_on_two_hosts_from_slurms_variables(shapes_dir, tmp_path):
  """experiments/slurm/train.sbatch as SLURM runs it: two tasks of two CPU devices each, which
  find each other through SLURM's variables alone (no coordinator address or process id)."""
  config_file = tmp_path / 'slurm_config.py'
  config_file.write_text(_SLURM_CONFIG.format(root=shapes_dir, cache=str(tmp_path / 'cache')))
  (tmp_path / 'bin').mkdir()
  (tmp_path / 'bin' / 'srun').write_text(_FAKE_SRUN)
  (tmp_path / 'bin' / 'srun').chmod(0o755)
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  cluster = ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID',
             'JAX_LOCAL_DEVICE_IDS', 'JAX_PLATFORMS', 'XLA_FLAGS')
  env = {k: v for k, v in os.environ.items() if not k.startswith('SLURM_') and k not in cluster}
  env.update(PATH=f'{tmp_path / "bin"}:{env["PATH"]}', PYTHON=sys.executable, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=2', SLURM_JOB_ID='4242',
             SLURM_JOB_NODELIST='localhost', SLURM_NTASKS='2', SLURM_SUBMIT_DIR=REPO,
             JAX_COORDINATOR_PORT=str(port))
  proc = subprocess.run(['bash', os.path.join(REPO, 'experiments', 'slurm', 'train.sbatch'),
                         str(config_file), str(tmp_path / 'run'), '--config.mesh.model=2'],
                        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                        check=False)
  out = proc.stdout + proc.stderr
  assert proc.returncode == 0, out[-3000:]
  assert 'Process 0 of 2' in out and 'Process 1 of 2' in out
  assert "Mesh: {'data': 2, 'model': 2}" in out  # four devices of two processes, one mesh
  assert os.path.isdir(tmp_path / 'run' / 'checkpoints' / '2')
  assert out.count('final metrics') == 2
