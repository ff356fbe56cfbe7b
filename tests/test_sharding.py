"""The mesh, the towers on their own devices, data parallelism and several processes.

Multi-device checks run `tests/sharded_step.py` in a subprocess, because the number of forced
CPU devices (XLA_FLAGS) must be set before jax is imported.

The paper's layout (docs/paper.md, "Two towers") implies these collectives in one train step with
`model` = 2, and no others:
  forward   all-gathers of the towers' maps or units into conv3, fc6, fc7 and fc8 (4);
            fc8's classes are split, so the softmax's max and sum are all-reduced (2) and the
            logits are gathered for the top-k error metrics (1; with data > 1 a second one
            gathers them over the batch); the check that the new parameters are finite
            combines the towers' halves (1 all-reduce);
  backward  the gradients into conv3's, fc6's, fc7's and fc8's inputs are sums over both
            towers: all-reduces (4; XLA fuses conv3's with the label logit of the loss);
  data > 1  one combined all-reduce over `data` of every gradient (and the metrics).
conv1, conv2, LRN, conv4 and conv5 need none: each tower's maps stay on its device. So 1 x 2
compiles to 5 all-gathers and 7 all-reduces, 2 x 2 to 6 and 8; the data-parallel layouts
(2 x 1, 4 x 1) to the gradient all-reduce and the metrics' all-gather alone.
"""

import functools
import json
import os
import re
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import AbstractMesh, PartitionSpec as P

from alexnet_jax import sharding, train
from alexnet_jax.errors import ConfigError
from alexnet_jax.model import create_model
from configs import one_tower, paper
from tests.conftest import small_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOWER_LOCAL = {'conv1', 'conv2', 'conv4', 'conv5'}
CROSS_TOWER = ['conv3', 'fc6', 'fc7', 'fc8']


def _env(**extra):
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'JAX_PLATFORMS')}
  return {**env, 'JAX_PLATFORMS': 'cpu', **extra}


def _sharded_steps(devices: int, *layouts: str) -> dict:
  result = subprocess.run([sys.executable, '-m', 'tests.sharded_step', str(devices), *layouts],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=_env())
  assert result.returncode == 0, result.stderr[-3000:]
  runs = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{')]
  return {r['layout']: r for r in runs}


@pytest.fixture(scope='module')
def layouts():
  """Towers (1x2), data-parallel (2x1) on 2 devices; both (2x2), data-parallel (4x1) on 4."""
  return _sharded_steps(4, '1x2', '2x1', '2x2', '4x1')


def _layers(collective: dict) -> set[str]:
  return set(re.findall(r'\b(conv\d|fc\d)/', collective['from']))


def _backward(collective: dict) -> bool:
  return 'transpose(' in collective['from']


def _count(collectives, op, backward, layer) -> int:
  return sum(c['op'] == op and _backward(c) == backward and layer in _layers(c)
             for c in collectives)


def _assert_tower_pattern(collectives, data_parallel: bool):
  ops = [c['op'] for c in collectives]
  assert not {'collective-permute', 'all-to-all', 'reduce-scatter'} & set(ops), collectives
  grad_sum = [c for c in collectives if len(_layers(c)) == 8]  # every layer's weight gradient
  assert len(grad_sum) == int(data_parallel) and all(c['op'] == 'all-reduce' for c in grad_sum)
  tower = [c for c in collectives if c not in grad_sum]
  for c in tower:  # nothing in or out of the tower-local layers, forward or backward
    assert not _layers(c) & TOWER_LOCAL, c
    # LRN, pooling and the flattening run in AlexNet's own scope, outside any layer.
    assert not ('AlexNet)/' in c['from'] and not _layers(c)), c
  for layer in CROSS_TOWER:
    assert _count(tower, 'all-gather', False, layer) == 1, layer  # into the layer
    assert _count(tower, 'all-reduce', True, layer) == 1, layer   # its input's gradient
  loss = [c for c in tower if not _layers(c) and not c['from'].endswith('top_k')]
  # The softmax's max and sum over fc8's split classes, and the finite check of the new state.
  assert sorted(c['from'].rsplit('/', 1)[-1] for c in loss) == [
      'reduce_and', 'reduce_max', 'reduce_sum']
  metrics = [c for c in tower if c['from'].endswith('top_k')]
  assert all(c['op'] == 'all-gather' for c in metrics)
  assert len(metrics) == 1 + int(data_parallel)
  assert ops.count('all-gather') == 4 + len(metrics)
  assert ops.count('all-reduce') == 3 + 4 + int(data_parallel)
  if data_parallel:  # the gradient sum runs over `data`, the tower traffic over `model`
    assert grad_sum[0]['groups'] != tower[0]['groups']


def test_tower_layout_communicates_only_into_conv3_and_the_fc_layers(layouts):
  _assert_tower_pattern(layouts['1x2']['collectives'], data_parallel=False)


def test_towers_and_data_parallel_2x2(layouts):
  _assert_tower_pattern(layouts['2x2']['collectives'], data_parallel=True)


@pytest.mark.parametrize('layout', ['2x1', '4x1'])
def test_data_parallel_layout_only_sums_gradients(layouts, layout):
  collectives = layouts[layout]['collectives']
  grad_sum = [c for c in collectives if len(_layers(c)) == 8]
  assert len(grad_sum) == 1 and grad_sum[0]['op'] == 'all-reduce'
  # Besides it only the metrics' top-k over the whole batch.
  assert all(c['from'].endswith('top_k') for c in collectives if c not in grad_sum)


@pytest.mark.parametrize('layout', ['1x2', '2x1', '2x2', '4x1'])
def test_sharded_steps_equal_single_device_steps(layouts, layout):
  run = layouts[layout]
  assert run['max_abs_diff'] < 1e-6  # float32 rounding, after three steps
  assert run['min_param_change'] > 1e-3  # and the steps did move every parameter


def test_rules_split_every_layer_by_tower():
  mesh = AbstractMesh((1, 2), sharding.AXES)
  spec = lambda path, shape: sharding._spec(path, shape, mesh)
  assert spec('params/conv2/kernel', (5, 5, 48, 256)) == P(None, None, None, 'model')
  assert spec('opt_state/inner_state/2/trace/fc6/kernel', (9216, 4096)) == P(None, 'model')
  assert spec('params/fc8/bias', (1000,)) == P('model')
  assert spec('params/fc8/bias', (999,)) == P()  # an odd class count stays whole
  assert spec('step', ()) == P()


def test_paper_config_uses_two_towers_per_device_pair():
  towers = paper.get_config().model.towers
  assert [sharding.model_axis_size(paper.get_config().mesh, towers, n)
          for n in (1, 2, 8)] == [1, 2, 2]
  config = one_tower.get_config()
  assert config.model.towers == 1
  assert sharding.model_axis_size(config.mesh, 1, 8) == 1


@pytest.mark.parametrize('change,devices,field', [
    (dict(towers=1, model=2), 2, 'mesh.model'),
    (dict(model=2), 1, 'mesh.model'),
    (dict(model=3), 2, 'mesh.model'),
    (dict(batch_size=16), 3, 'batch_size'),
])
def test_layouts_that_cannot_work_name_the_field(change, devices, field):
  config = small_config('/x', '/y')
  config.model.towers = change.get('towers', 2)
  config.mesh.model = change.get('model', 1)
  config.batch_size = change.get('batch_size', 16)
  with pytest.raises(ConfigError, match=re.escape(f'Config field {field} = ')):
    sharding.create_mesh(config, jax.devices()[:1] * devices)


# ---------------------------------------------------------------------------------------------
# Several processes: two on localhost, each with 2 CPU devices, one tower per device.
# ---------------------------------------------------------------------------------------------

def two_hosts_config(data_root: str, cache_dir: str):
  """small_config without dropout or random augmentation: a global batch holds the same
  examples with one process or two, but in another order (each of two processes reads every
  second one), so only maths that ignores an example's position in the batch can match."""
  config = small_config(data_root, cache_dir)
  config.model.dropout_rate = 0.0
  config.data.flip = False
  config.data.lighting_std = 0.0
  config.data.resize_size = config.data.crop_size
  config.eval_every_steps = 2
  config.checkpoint_every_steps = 2
  return config


_CONFIG_FILE = '''from tests.test_sharding import two_hosts_config


def get_config():
  return two_hosts_config({root!r}, {cache!r})
'''


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _two_processes(config_file, workdir, steps) -> str:
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, '-m', 'alexnet_jax.main', f'--config={config_file}',
       f'--workdir={workdir}', f'--config.num_train_steps={steps}', '--config.mesh.model=2',
       f'--coordinator_address=localhost:{port}', '--num_processes=2', f'--process_id={i}'],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      env=_env(XLA_FLAGS='--xla_force_host_platform_device_count=2')) for i in range(2)]
  outputs = [p.communicate(timeout=400)[0] for p in procs]
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  assert "Mesh: {'data': 2, 'model': 2}" in outputs[1]
  return outputs[0]


def _params(config, workdir, step):
  """Parameters of a checkpoint, restored onto this process's one device."""
  init = functools.partial(train.create_train_state, jax.random.key(0),
                           create_model(config.model), config.data.crop_size, config.optim)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                        jax.eval_shape(init))
  mgr = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'), item_names=('state',))
  state = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
  return jax.device_get(state['state'].params)


def test_two_processes_train_like_one_and_resume_on_another_process_count(shapes_dir,
                                                                          tmp_path):
  """Two processes train like one. A preempted job that comes back on fewer or more hosts
  (2 -> 1, 1 -> 2) restores the state exactly and continues the input from the same global
  position, so its parameters equal those of a run that never stopped; the log says so."""
  config_file = tmp_path / 'two_hosts.py'
  config_file.write_text(_CONFIG_FILE.format(root=shapes_dir, cache=str(tmp_path / 'cache')))
  config = two_hosts_config(shapes_dir, str(tmp_path / 'cache'))
  config.num_train_steps = 4
  train.train_and_evaluate(config, str(tmp_path / 'one'))  # also caches the input statistics

  # Two steps, a checkpoint written by both processes, then a restart that restores it.
  _two_processes(config_file, tmp_path / 'two', steps=2)
  shutil.copytree(tmp_path / 'two', tmp_path / 'two_then_one')
  _two_processes(config_file, tmp_path / 'two', steps=4)
  # The same checkpoint of step 2 resumed by one process; one process's step 2, by two.
  resumed = {'two_then_one': _one_process(config_file, tmp_path / 'two_then_one', 4)}
  shutil.copytree(tmp_path / 'one', tmp_path / 'one_then_two',
                  ignore=lambda folder, names: ['4'] if folder.endswith('checkpoints') else [])
  resumed['one_then_two'] = _two_processes(config_file, tmp_path / 'one_then_two', steps=4)
  for run, (before, after) in (('two_then_one', (2, 1)), ('one_then_two', (1, 2))):
    out = resumed[run]
    assert f'was written by {before} process' in out and f'this run has {after}:' in out
    assert 'continues from position 32 of the shuffled stream' in out

  for run, steps in (('two', (2, 4)), ('two_then_one', (4,)), ('one_then_two', (4,))):
    for step in steps:
      got, one = _params(config, tmp_path / run, step), _params(config, tmp_path / 'one', step)
      jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=0, atol=1e-6), got, one)
  assert not np.allclose(_params(config, tmp_path / 'two', 2)['fc8']['kernel'],
                         _params(config, tmp_path / 'two', 4)['fc8']['kernel'])
  with open(tmp_path / 'two' / 'metrics.jsonl') as f:
    assert [r['step'] for r in map(json.loads, f) if r['split'] == 'train'] == [2, 4]


def _one_process(config_file, workdir, steps) -> str:
  done = subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.main', f'--config={config_file}',
       f'--workdir={workdir}', f'--config.num_train_steps={steps}'],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
      timeout=400)
  assert done.returncode == 0, done.stdout[-3000:]
  return done.stdout
