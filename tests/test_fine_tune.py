"""--config.init_from: a run that starts from another checkpoint's parameters, with real files and
processes: a new head where the classes differ, a refusal naming the layer or field that does
not match, and exact resume of the fine-tune after SIGTERM."""

import os
import signal

import jax
import numpy as np
import pytest

from alexnet_jax import checkpointing, fine_tune, train
from alexnet_jax.errors import CheckpointError
from alexnet_jax.model import create_model
from tests.conftest import small_config
from tests.test_faults import _config_file, _params, _start, _steps, _wait_for_step


def _write_base(config, workdir: str, seed: int = 7) -> dict:
  """A checkpoint of `config`'s network with parameters drawn from `seed`, as another run (or
  an import) would leave it; returns its parameters."""
  model = create_model(config.model)
  state = train.create_train_state(jax.random.key(seed), model, config.data.crop_size,
                                   config.optim)
  mgr = checkpointing.manager(workdir, 1)
  checkpointing.save(mgr, 5, state, config, {'lr_policy': {'lr': 0.01}, 'class_names': []},
                     wait=True)
  checkpointing.finish(mgr)
  return jax.tree.map(np.asarray, state.params)


def _fresh(config):
  model = create_model(config.model)
  return train.create_train_state(jax.random.key(0), model, config.data.crop_size,
                                  config.optim).params


def test_other_class_count_keeps_every_layer_but_fc8(shapes_dir, tmp_path, caplog):
  base_config = small_config(shapes_dir, str(tmp_path / 'cache'))
  base_config.model.num_classes = 20
  base = _write_base(base_config, str(tmp_path / 'base'))
  config = small_config(shapes_dir, str(tmp_path / 'cache'))
  fresh = _fresh(config)
  with caplog.at_level('WARNING'):
    params = fine_tune.initial_params(str(tmp_path / 'base'), config.model, fresh)
  assert 'fc8 is initialized anew' in caplog.text and '20 outputs' in caplog.text
  for layer in ('conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7'):
    for leaf in ('kernel', 'bias'):
      np.testing.assert_array_equal(params[layer][leaf], base[layer][leaf])
      assert params[layer][leaf].sharding == fresh[layer][leaf].sharding
  assert params['fc8']['kernel'].shape == (base['fc7']['kernel'].shape[1], 10)
  np.testing.assert_array_equal(params['fc8']['kernel'], fresh['fc8']['kernel'])


def test_same_classes_take_fc8_too(shapes_dir, tmp_path):
  config = small_config(shapes_dir, str(tmp_path / 'cache'))
  base = _write_base(config, str(tmp_path / 'base'))
  params = fine_tune.initial_params(str(tmp_path / 'base'), config.model, _fresh(config))
  np.testing.assert_array_equal(params['fc8']['kernel'], base['fc8']['kernel'])


@pytest.mark.parametrize('field, value, named', [
    ('conv_features', (96, 256, 384, 384, 512), 'layer conv5 does not match: conv5/bias is (32,) '
                                                'there and (64,) here'),
    ('lrn_k', 1.0, 'model.lrn_k: checkpoint 2.0, config 1.0'),
])
def test_another_network_is_refused_naming_the_layer_or_field(shapes_dir, tmp_path, field, value,
                                                              named):
  base_config = small_config(shapes_dir, str(tmp_path / 'cache'))
  _write_base(base_config, str(tmp_path / 'base'))
  config = small_config(shapes_dir, str(tmp_path / 'cache'))
  config.model[field] = value
  with pytest.raises(CheckpointError) as e:
    fine_tune.initial_params(str(tmp_path / 'base'), config.model, _fresh(config))
  assert named in str(e.value) and '\n' not in str(e.value)


def test_fine_tune_resumes_exactly_after_sigterm(shapes_dir, tmp_path):
  """The fine-tune starts from the base's parameters with a fresh step and optimizer; stopped by
  SIGTERM, the same command resumes from its own checkpoint and equals an uninterrupted run."""
  base_config = small_config(shapes_dir, str(tmp_path / 'cache'))
  base_config.model.num_classes = 20
  _write_base(base_config, str(tmp_path / 'base'))
  config_file = _config_file(tmp_path, shapes_dir)
  init = f'--config.init_from={tmp_path / "base"}'
  long = [init, '--config.num_train_steps=100000', '--config.checkpoint_every_steps=100000',
          '--config.eval_every_steps=100000', '--config.log_every_steps=1']
  proc = _start(config_file, tmp_path / 'run', *long)
  _wait_for_step(proc, tmp_path / 'run', 2)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-3000:]
  assert 'fc8 is initialized anew' in err
  [step] = _steps(tmp_path / 'run')
  assert f'SIGTERM: stopped after step {step}' in out

  config = small_config(shapes_dir, str(tmp_path / 'cache'))
  config.init_from = str(tmp_path / 'base')
  config.num_train_steps, config.log_every_steps = step + 2, 1
  config.checkpoint_every_steps = config.eval_every_steps = 100000
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  train.train_and_evaluate(config, str(tmp_path / 'whole'))
  jax.tree.map(np.testing.assert_array_equal, _params(tmp_path / 'run', step + 2),
               _params(tmp_path / 'whole', step + 2))
  # The fine-tune's own step count and optimizer: it started at step 0 with zero momentum.
  loaded = checkpointing.load(str(tmp_path / 'whole'))
  assert loaded.step == step + 2 and loaded.config.init_from == str(tmp_path / 'base')


def test_the_best_checkpoint_survives_keep_checkpoints_1(tmp_path):
  """Orbax keeps the save of lowest validation top-1 error beside the newest one; `load`,
  `export` and `restore` name it as 'best'."""
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  mgr = checkpointing.manager(str(tmp_path), keep=1)
  state = {'params': {'w': np.zeros(3, np.float32)}}
  for step, err in ((1, 0.5), (2, 0.3), (3, 0.4), (4, None), (5, None)):
    state = {'params': {'w': np.full(3, step, np.float32)}}
    checkpointing.save(mgr, step, state, config, {}, val_top1_err=err, wait=True)
  assert checkpointing.best(mgr) == (2, 0.3)
  checkpointing.finish(mgr)
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['2', '5']
  best = checkpointing.load(str(tmp_path), checkpointing.BEST)
  assert best.step == 2 and best.params['w'][0] == 2
  assert checkpointing.load(str(tmp_path)).step == 5
  # A manager opened again (a resumed run) knows the best and keeps it.
  mgr = checkpointing.manager(str(tmp_path), keep=1)
  checkpointing.save(mgr, 6, state, config, {}, val_top1_err=0.35, wait=True)
  checkpointing.finish(mgr)
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['2', '6']


def test_best_is_refused_in_one_line_where_no_save_recorded_an_error(tmp_path):
  from configs import default  # pylint: disable=g-import-not-at-top
  mgr = checkpointing.manager(str(tmp_path), keep=2)
  checkpointing.save(mgr, 1, {'params': {'w': np.zeros(2, np.float32)}}, default.get_config(),
                     {}, wait=True)
  checkpointing.finish(mgr)
  with pytest.raises(CheckpointError, match='records a validation error') as e:
    checkpointing.load(str(tmp_path), 'best')
  assert '\n' not in str(e.value)


def test_training_saves_each_new_best_and_tools_read_it(shapes_dir, tmp_path):
  """Every evaluation that beats the best so far is saved, whatever checkpoint_every_steps says;
  evaluate's and export's --step=best and inference.restore(step='best') read it."""
  from alexnet_jax import evaluate, export, inference  # pylint: disable=g-import-not-at-top
  from alexnet_jax import metric_writer  # pylint: disable=g-import-not-at-top
  config = small_config(shapes_dir, str(tmp_path / 'cache'))
  config.num_train_steps, config.eval_every_steps = 8, 2
  config.checkpoint_every_steps, config.keep_checkpoints = 100000, 1
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  errors = {r['step']: r['top1_err'] for r in metric_writer.read_records(workdir, 'val')}
  best_step = checkpointing.load(workdir, 'best').step
  assert errors[best_step] == min(errors.values())  # of equal errors, Orbax keeps the newer
  assert _steps(workdir) == sorted({best_step, 8})
  _, _, restored = inference.restore(workdir, step='best')
  assert restored.name == config.name
  assert np.load(export.export(workdir, str(tmp_path / 'best.npz'), 'best'))['step'] == best_step
  result = evaluate.evaluate([workdir], ['best'], views=('center',), batch_size=16)
  assert result['members'][0]['step'] == best_step
  assert result['members'][0]['center']['top1_err'] == pytest.approx(errors[best_step], abs=1e-6)
