"""Checkpoints that are never lost: damaged ones set aside, refused writes named, any device count,
plain Orbax and the .npz export, and logs without the libraries' INFO lines."""

import errno
import functools
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import types

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import alexnet_jax
from alexnet_jax import (checkpointing, damage, disk, evaluate, export, logs, migrations, sharding,
                         train)
from alexnet_jax.errors import CheckpointError
from alexnet_jax.model import create_model
from alexnet_jax.stats import Normalization
from configs import default
from tests.conftest import small_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = default.get_config()
NORM = Normalization(mean_image=np.full((4, 4, 3), 100, np.float32),
                     eigvals=np.ones(3, np.float32), eigvecs=np.eye(3, dtype=np.float32))


def _state(step: int) -> dict:
  """Random numbers, as weights are: zstd cannot compress them, so changed bytes stay numbers."""
  kernel = jax.random.normal(jax.random.key(step), (4096, 8))
  return {'step': jnp.int32(step), 'params': {'fc': {'kernel': kernel, 'bias': jnp.arange(8.0)}}}


def _iterator():
  return iter(grain.MapDataset.range(1000).to_iter_dataset())



@pytest.fixture(scope='module')
def synthetic_run(tmp_path_factory):
  """Checkpoints at steps 1, 2 and 3 of a small state; at step s the iterator yields 10 s next."""
  workdir = str(tmp_path_factory.mktemp('synthetic') / 'run')
  mgr = checkpointing.manager(workdir, keep=5)
  it = _iterator()
  for step in (1, 2, 3):
    while next(it) != 10 * step - 1:
      pass
    checkpointing.save(mgr, step, _state(step), CONFIG, {'class_names': ['a', 'b']}, NORM, it)
  checkpointing.finish(mgr)
  return workdir


def _largest_file(folder) -> str:
  files = [os.path.join(root, f) for root, _, names in os.walk(folder) for f in names]
  return max(files, key=os.path.getsize)


def _truncate(step_dir):
  path = _largest_file(step_dir / 'state')
  os.truncate(path, os.path.getsize(path) // 2)


def _flip_bytes(step_dir):
  path = _largest_file(step_dir / 'state')
  with open(path, 'rb') as f:
    data = bytearray(f.read())
  for i in range(len(data) // 2, len(data) // 2 + 16):
    data[i] ^= 0xFF
  with open(path, 'wb') as f:
    f.write(data)


DAMAGE = {
    'truncated array data': _truncate,
    'changed array bytes': _flip_bytes,
    'state missing': lambda d: shutil.rmtree(d / 'state'),
    'config missing': lambda d: shutil.rmtree(d / 'config'),
    'meta not JSON': lambda d: (d / 'meta' / 'metadata').write_text('{"lr_poli'),
    'data_iter missing': lambda d: shutil.rmtree(d / 'data_iter'),
    'data_iter not JSON': lambda d: (d / 'data_iter' / 'process_0-of-1.json').write_text('{'),
}


@pytest.mark.parametrize('damage', sorted(DAMAGE))
def test_damaged_newest_checkpoint_is_set_aside_and_the_one_before_restored(
    synthetic_run, tmp_path, damage, caplog):
  workdir = shutil.copytree(synthetic_run, tmp_path / 'run')
  DAMAGE[damage](workdir / 'checkpoints' / '3')
  mgr = checkpointing.manager(str(workdir), keep=5)
  it = _iterator()
  with caplog.at_level(logging.WARNING):
    step, state, meta, _ = checkpointing.restore_newest(mgr, _state(0), CONFIG, str(workdir), it)
  assert step == 2 and meta == {'class_names': ['a', 'b']}
  np.testing.assert_array_equal(state['params']['fc']['kernel'],
                                _state(2)['params']['fc']['kernel'])
  assert next(it) == 20  # where step 2 left the input, not moved half-way by step 3
  warnings = [r.getMessage() for r in caplog.records if 'does not read back' in r.getMessage()]
  assert len(warnings) == 1 and str(workdir / 'checkpoints' / '3') in warnings[0], warnings
  if damage == 'changed array bytes':  # only the checksums in meta can see this one
    assert 'differ from what was saved' in warnings[0] and 'params/fc/kernel' in warnings[0]
  # Out of Orbax's view but kept; the step can be written again.
  assert mgr.all_steps() == [1, 2] and os.listdir(workdir / 'checkpoints_damaged') == ['3']
  checkpointing.save(mgr, 3, _state(3), CONFIG, {'class_names': ['a', 'b']}, NORM, it)
  checkpointing.finish(mgr)
  assert checkpointing.load(str(workdir)).step == 3


def test_when_every_checkpoint_is_damaged_the_run_stops_and_nothing_moves(synthetic_run,
                                                                          tmp_path):
  workdir = shutil.copytree(synthetic_run, tmp_path / 'run')
  for step in (1, 2, 3):
    shutil.rmtree(workdir / 'checkpoints' / str(step) / 'state')
  mgr = checkpointing.manager(str(workdir), keep=5)
  with pytest.raises(CheckpointError, match=r'step 3: state: .*step 2: .*step 1: .*Nothing was '
                                            'moved'):
    checkpointing.restore_newest(mgr, _state(0), CONFIG, str(workdir), _iterator())
  assert mgr.all_steps() == [1, 2, 3] and not os.path.exists(workdir / 'checkpoints_damaged')
  empty = checkpointing.manager(str(tmp_path / 'new'), keep=5)
  assert checkpointing.restore_newest(empty, _state(0), CONFIG, str(tmp_path / 'new')) is None


def test_a_checkpoint_of_another_config_is_refused_not_skipped(synthetic_run, tmp_path):
  workdir = shutil.copytree(synthetic_run, tmp_path / 'run')
  shutil.rmtree(workdir / 'checkpoints' / '3' / 'state')
  other = default.get_config()
  other.model.width = 0.5
  mgr = checkpointing.manager(str(workdir), keep=5)
  with pytest.raises(CheckpointError, match=r'different config \(model\.width: checkpoint 1\.0'):
    checkpointing.restore_newest(mgr, _state(0), other, str(workdir))
  assert mgr.all_steps() == [1, 2, 3] and not os.path.exists(workdir / 'checkpoints_damaged')


def test_the_implementation_is_not_part_of_a_checkpoints_identity():
  """Checkpoints written before the implementation left the model hold its two switches."""
  saved = json.loads(default.get_config().to_json())
  del saved['implementation']
  saved['model'].update(split_towers=False, space_to_depth=True)
  config = default.get_config()
  config.implementation = 'plain'
  migrations.check_compatible(saved, config, 'old')
  assert 'split_towers' not in migrations.without_retired(saved)['model']


def test_load_reads_the_newest_checkpoint_that_reads_back(trained_workdir, tmp_path, caplog):
  workdir = shutil.copytree(trained_workdir, tmp_path / 'run')
  _flip_bytes(workdir / 'checkpoints' / '6')
  with caplog.at_level(logging.WARNING):
    assert checkpointing.load(str(workdir)).step == 3
  assert any('step 6' in r.getMessage() and 'Reading step 3' in r.getMessage()
             for r in caplog.records)
  with pytest.raises(CheckpointError, match=r'step 6: state: 1 array\(s\) differ.*Pick another '
                                            r'step \(\[3\]\)'):
    checkpointing.load(str(workdir), step=6)
  assert os.listdir(workdir / 'checkpoints') == os.listdir(os.path.join(trained_workdir,
                                                                        'checkpoints'))


# A child that writes a checkpoint, then one that outgrows its file size limit: the write fails
# with EFBIG as it would with ENOSPC on a full disk (root may write to read-only folders).
_REFUSED_WRITE = '''
import logging, resource, signal, sys
import jax.numpy as jnp
from alexnet_jax import checkpointing, logs
from alexnet_jax.errors import CheckpointError
from configs import default
logging.basicConfig(format='%(levelname)s %(pathname)s %(message)s', force=True)
logs.quiet_library_logs()
config, mgr = default.get_config(), checkpointing.manager(sys.argv[1], keep=3)
state = lambda n: {'params': {'w': jnp.linspace(0, 1, n)}}
checkpointing.save(mgr, 1, state(1000), config, {}, wait=True)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
checkpointing.save(mgr, 2, state(300_000), config, {})  # written in the background
try:
  checkpointing.finish(mgr)
except CheckpointError as e:
  sys.exit(f'error: {e}')
'''


def test_a_refused_write_is_one_line_and_the_earlier_checkpoint_resumes(tmp_path):
  workdir = str(tmp_path / 'run')
  proc = subprocess.run([sys.executable, '-c', _REFUSED_WRITE, workdir], cwd=REPO,
                        capture_output=True, text=True, check=False)
  assert proc.returncode == 1, proc.stderr[-3000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert re.match(r'error: Checkpoint step 2 could not be written to .*File too large.*resumes '
                  r'from step 1, the newest checkpoint, which is intact\.$', last), last
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  assert '2.orbax-checkpoint-tmp' in os.listdir(os.path.join(workdir, 'checkpoints'))
  # The rerun: the half-written folder goes, step 1 is there, step 2 is written anew.
  mgr = checkpointing.manager(workdir, keep=3)
  assert mgr.all_steps() == [1]
  checkpointing.save(mgr, 2, {'params': {'w': jnp.ones(3)}}, CONFIG, {})
  checkpointing.finish(mgr)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['1', '2']
  assert checkpointing.load(workdir).step == 2


def test_a_save_that_cannot_fit_is_refused_before_writing(synthetic_run, tmp_path, monkeypatch):
  workdir = shutil.copytree(synthetic_run, tmp_path / 'run')
  mgr = checkpointing.manager(str(workdir), keep=5)
  monkeypatch.setattr(disk.shutil, 'disk_usage',
                      lambda path: types.SimpleNamespace(total=10**9, used=10**9, free=10_000))
  with pytest.raises(CheckpointError, match=r'step 4 was not written: 0 MiB are free.*resumes '
                                            'from step 3'):
    checkpointing.save(mgr, 4, _state(4), CONFIG, {}, NORM)
  checkpointing.finish(mgr)
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['1', '2', '3']
  (tmp_path / 'file').write_text('')
  with pytest.raises(CheckpointError, match='Cannot create the checkpoint folder'):
    checkpointing.manager(str(tmp_path / 'file' / 'run'), keep=1)


def test_os_errors_are_read_from_orbax_and_tensorstore_messages():
  tensorstore = ValueError('OUT_OF_RANGE: Error writing "w/0" in OCDBT database: Failed to write '
                           "439641 bytes to file 4: No space left on device [os_error_code='28']")
  wrapped = RuntimeError('save failed')
  wrapped.__cause__ = tensorstore
  assert disk.os_error_code(wrapped) == 28
  assert disk.os_error_code(PermissionError(13, 'Permission denied')) == 13
  assert disk.os_error_code(ValueError('Read-only file system')) == 30
  assert disk.os_error_code(ValueError('shape mismatch')) is None


# --- A checkpoint written on two devices, read on one ----------------------------------------

_TWO_DEVICES = '''
import logging, sys
from absl import logging as absl_logging
from alexnet_jax import logs, train
from tests.conftest import small_config
logging.basicConfig(level=logging.INFO, format='%(levelname)s %(pathname)s: %(message)s',
                    force=True)
absl_logging.set_verbosity(absl_logging.INFO)  # as app.run does
logs.quiet_library_logs()
config = small_config(sys.argv[1], sys.argv[2])
config.mesh.model = 2
train.train_and_evaluate(config, sys.argv[3])
'''


@pytest.fixture(scope='module')
def two_device_run(shapes_dir, tmp_path_factory):
  """(workdir, log) of the tiny run trained with one tower on each of two devices."""
  root = tmp_path_factory.mktemp('two_devices')
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2',
             JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-c', _TWO_DEVICES, shapes_dir, str(root / 'cache'),
                         str(root / 'run')], cwd=REPO, env=env, capture_output=True, text=True,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return str(root / 'run'), proc.stderr


def test_two_device_checkpoint_is_evaluated_restored_and_exported_on_one(two_device_run,
                                                                         shapes_dir, tmp_path):
  assert jax.device_count() == 1
  workdir, _ = two_device_run
  loaded = checkpointing.load(workdir)
  assert loaded.step == 6 and loaded.params['conv1']['kernel'].shape == (11, 11, 3, 12)
  # The same network: evaluated here, it makes the errors the two-device run measured.
  result = evaluate.evaluate([workdir], [None], views=('center',), batch_size=8)
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    last_val = [r for r in map(json.loads, f) if r['split'] == 'val'][-1]
  assert result['members'][0]['center']['top1_err'] == pytest.approx(last_val['top1_err'],
                                                                     abs=1e-6)
  model, params, _ = alexnet_jax.restore(workdir)
  val = os.path.join(shapes_dir, 'val', 'circle')
  pred = alexnet_jax.predict(model, params, [os.path.join(val, f) for f in os.listdir(val)[:2]])
  assert pred.probs.shape == (2, 5) and np.all(pred.probs > 0)
  exported = np.load(export.export(workdir, str(tmp_path / 'params.npz')))
  expected = {f'{layer}/{name}' for layer in ('conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6',
                                              'fc7', 'fc8') for name in ('kernel', 'bias')}
  assert expected <= set(exported.files)
  for key in expected:
    layer, name = key.split('/')
    np.testing.assert_array_equal(exported[key], loaded.params[layer][name])
  np.testing.assert_array_equal(exported['mean_image'], loaded.norm.mean_image)
  assert list(exported['class_names']) == list(loaded.class_names) and exported['step'] == 6


def test_two_device_checkpoint_resumes_onto_a_one_device_mesh(two_device_run, shapes_dir,
                                                              tmp_path):
  workdir, _ = two_device_run
  config = small_config(shapes_dir, str(tmp_path / 'cache'))
  config.mesh.model = 1
  mesh = sharding.create_mesh(config)
  init = functools.partial(train.create_train_state, jax.random.key(0),
                           create_model(config.model), config.data.crop_size,
                           config.optim)
  shapes = jax.eval_shape(init)
  target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes,
                        sharding.state_shardings(shapes, mesh))
  mgr = checkpointing.manager(workdir, config.keep_checkpoints)
  step, state, meta, _ = checkpointing.restore_newest(mgr, target, config, workdir)
  checkpointing.finish(mgr)
  # Read back whole: the checksums the two-device run recorded match these arrays.
  assert step == 6 and int(state.step) == 6 and len(meta['class_names']) == 10
  assert state.params['fc6']['kernel'].sharding.mesh.shape == {'data': 1, 'model': 1}


def test_readme_reads_the_checkpoint_with_plain_orbax(two_device_run, tmp_path):
  workdir, _ = two_device_run
  with open(os.path.join(REPO, 'README.md')) as f:
    section = f.read().split('## Checkpoints on disk')[1].split('\n## ')[0]
  snippet = next(code for code in re.findall(r'```python\n(.*?)```', section, re.S)
                 if 'ocp.CheckpointManager' in code)
  assert "'runs/paper/checkpoints'" in snippet
  namespace = {}
  exec(snippet.replace("'runs/paper/checkpoints'",  # pylint: disable=exec-used
                       repr(os.path.join(workdir, 'checkpoints'))), namespace)
  exported = np.load(export.export(workdir, str(tmp_path / 'params.npz')))
  for key in exported.files:
    if '/' in key:
      layer, name = key.split('/')
      np.testing.assert_array_equal(namespace['params'][layer][name], exported[key])
  np.testing.assert_array_equal(namespace['mean_image'], exported['mean_image'])
  assert namespace['class_names'] == list(exported['class_names'])


def test_logs_keep_the_projects_lines_and_library_warnings_but_no_library_info(two_device_run):
  _, log = two_device_run
  lines = log.splitlines()
  assert any(line.startswith('INFO') and '/alexnet_jax/train.py: Mesh:' in line for line in lines)
  library_info = [line for line in lines if line.startswith('INFO') and
                  any(f'{os.sep}{name}{os.sep}' in line for name in logs.LIBRARIES)]
  assert not library_info, library_info[:5]
  absl_logger = logging.getLogger('absl')
  filters = list(absl_logger.filters)
  levels = {name: logger.level for name, logger in logging.root.manager.loggerDict.items()
            if isinstance(logger, logging.Logger)}

  def kept(level, path):
    return bool(absl_logger.filter(logging.LogRecord('absl', level, path, 1, 'm', (), None)))

  try:
    logs.quiet_library_logs()
    orbax_file = os.path.join('site-packages', 'orbax', 'checkpoint', 'checkpoint_manager.py')
    assert not kept(logging.INFO, orbax_file)
    assert kept(logging.WARNING, orbax_file) and kept(logging.ERROR, orbax_file)
    assert kept(logging.INFO, os.path.join('alexnet_jax', 'train.py'))
  finally:  # this test process's logging as it was
    absl_logger.filters[:] = filters
    for name, level in levels.items():
      logging.getLogger(name).setLevel(level)


def _failing_restore(monkeypatch, error, times):
  """Orbax's restore raising `error` for the first `times` calls on step 3, as a file system
  would; counts the calls."""
  real, calls = ocp.CheckpointManager.restore, []

  def restore(self, step, *args, **kwargs):
    if step == 3 and len(calls) < times:
      calls.append(step)
      raise error
    return real(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, 'restore', restore)
  monkeypatch.setattr(damage, '_RETRY_SECONDS', (0.0, 0.0))
  return calls


def test_a_passing_read_error_is_tried_again_and_costs_nothing(synthetic_run, tmp_path,
                                                               monkeypatch, caplog):
  workdir = shutil.copytree(synthetic_run, tmp_path / 'run')
  calls = _failing_restore(monkeypatch, OSError(errno.EIO, 'Input/output error'), times=2)
  mgr = checkpointing.manager(str(workdir), keep=5)
  with caplog.at_level(logging.WARNING):
    step, _, _, _ = checkpointing.restore_newest(mgr, _state(0), CONFIG, str(workdir),
                                                 _iterator())
  assert step == 3 and len(calls) == 2
  assert 'trying again' in caplog.text and not os.path.exists(workdir / 'checkpoints_damaged')


@pytest.mark.parametrize('error', [PermissionError(errno.EACCES, 'Permission denied'),
                                   ValueError('UNAVAILABLE: the network file system timed out')])
def test_a_lasting_read_error_is_not_damage_and_moves_nothing(synthetic_run, tmp_path,
                                                              monkeypatch, error):
  """Only evidence of damage sets a checkpoint aside: a read that keeps failing for another
  reason stops the run in one line naming the checkpoint, with every checkpoint where it was."""
  workdir = shutil.copytree(synthetic_run, tmp_path / 'run')
  _failing_restore(monkeypatch, error, times=100)
  mgr = checkpointing.manager(str(workdir), keep=5)
  with pytest.raises(CheckpointError) as e:
    checkpointing.restore_newest(mgr, _state(0), CONFIG, str(workdir), _iterator())
  text = str(e.value)
  assert '\n' not in text and 'Checkpoint step 3' in text and 'nothing was moved' in text
  assert str(error.args[-1])[:20] in text
  assert mgr.all_steps() == [1, 2, 3] and not os.path.exists(workdir / 'checkpoints_damaged')
  with pytest.raises(CheckpointError, match='could not be read'):
    checkpointing.load(str(workdir))  # the readers outside training alike
