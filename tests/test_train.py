"""The training loop on real JPEGs: learning, metrics, exact resume and checkpoint checks."""

import functools
import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from alexnet_jax import augment, config_check, input_pipeline, optim, sharding, stats, train
from alexnet_jax.errors import CheckpointError, UserError
from alexnet_jax.model import create_model
from tests.conftest import small_config


def _records(workdir, split):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [r for r in map(json.loads, f) if r['split'] == split]


def _params(workdir, step):
  mgr = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'), item_names=('state',))
  return mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))['state'][
      'params']


def test_short_run_logs_every_record(shapes_dir, tmp_path):
  """What a run guarantees: a record per log and evaluation, with finite values and honest
  time fields. (Whether 40 steps already beat chance depends on the machine's arithmetic.)"""
  config = small_config(shapes_dir, str(tmp_path / 'cache'))
  config.model.width = 0.25
  config.num_train_steps = 40
  config.log_every_steps = 10
  config.eval_every_steps = 20
  config.diagnostics_every_steps = 20
  final = train.train_and_evaluate(config, str(tmp_path / 'run'))
  records = _records(tmp_path / 'run', 'train')
  assert [r['step'] for r in records] == [10, 20, 30, 40]
  assert [r['step'] for r in _records(tmp_path / 'run', 'val')] == [20, 40]
  diag = _records(tmp_path / 'run', 'diag')  # what update 20 and update 40 did, layer by layer
  assert [r['step'] for r in diag] == [20, 40]
  assert all(0 <= r['dead_fc7'] <= 1 and r['update_norm_fc8'] > 0 for r in diag)
  for r in records + _records(tmp_path / 'run', 'val'):
    assert {'step', 'epoch', 'split', 'loss', 'top1_err', 'top5_err', 'lr', 'images_per_sec',
            'steps_per_sec', 'time'} <= set(r)
    assert all(np.isfinite(v) for v in r.values() if isinstance(v, float))
  assert all('eta_s' in r for r in records)
  assert records[1]['epoch'] == pytest.approx(20 * 16 / 160)
  assert final['val'] == {k: v for k, v in _records(tmp_path / 'run', 'val')[-1].items()
                          if k in final['val']}
  assert os.listdir(tmp_path / 'run' / 'tensorboard')


def test_a_step_descends_on_its_batch():
  """Gradient descent's guarantee: a small enough step lowers the loss of the batch it used
  (dropout and weight decay off, so the update is the plain gradient of that loss)."""
  config = small_config('/x', '/y')
  config.model.dropout_rate, config.optim.weight_decay, config.optim.base_lr = 0.0, 0.0, 1e-3
  model = create_model(config.model)
  state = train.create_train_state(jax.random.key(0), model, 67, config.optim)
  rng = np.random.default_rng(0)
  batch = {'image': rng.normal(0, 60, (8, 67, 67, 3)).astype(np.float32),
           'label': rng.integers(0, 10, 8).astype(np.int32)}
  # The network's input as it is: no augmentation, no test view.
  eval_step = jax.jit(functools.partial(train.eval_step, view_fn=lambda x, norm: x))
  loss = lambda s: float(eval_step(s, input_pipeline.pad_batch(batch, 8), None)['loss'])
  before = loss(state)
  step = functools.partial(train.train_step, norm=None, lr=1e-3,
                           augment_fn=lambda b, norm: b['image'])
  after, metrics = jax.jit(step)(state, batch, jax.random.key(1))
  assert bool(metrics['finite']) and float(metrics['loss']) == pytest.approx(before / 8, rel=1e-5)
  assert loss(after) < before


class _Recorder:
  """The training iterator, keeping a copy of every batch the loop takes from it."""

  def __init__(self, it, log):
    self._it, self._log = it, log

  def __iter__(self):
    return self

  def __next__(self):
    batch = next(self._it)
    self._log.append({k: np.array(v) for k, v in batch.items()})
    return batch

  def get_state(self):  # Grain's checkpoint handler stores bytes for iterators it does not know
    return json.dumps(self._it.get_state()).encode()

  def set_state(self, state):
    self._it.set_state(json.loads(state))

  def __getattr__(self, name):  # close(), start_prefetch() ...: the iterator's own
    return getattr(self._it, name)


@pytest.mark.parametrize('workers', [0, 2])
def test_resumed_run_equals_uninterrupted_run(shapes_dir, tmp_path, monkeypatch, workers):
  """A run stopped mid-epoch and resumed sees exactly the batches of an uninterrupted run."""
  log = []
  make = train.device_batches
  monkeypatch.setattr(train, 'device_batches', lambda *a, **k: _Recorder(make(*a, **k), log))
  cache = str(tmp_path / 'cache')

  def config(steps):
    c = small_config(shapes_dir, cache)  # 160 images: 10 steps of 16 per epoch
    c.num_train_steps, c.checkpoint_every_steps, c.eval_every_steps = steps, 7, 7
    c.data.workers = workers
    return c

  train.train_and_evaluate(config(14), str(tmp_path / 'whole'))
  whole, log[:] = list(log), []
  train.train_and_evaluate(config(7), str(tmp_path / 'parts'))  # stops mid-epoch 1
  first, log[:] = list(log), []
  train.train_and_evaluate(config(14), str(tmp_path / 'parts'))  # resumes, crosses into epoch 2
  second = list(log)

  assert len(whole) == 14 and len(first) == 7 and len(second) == 7
  for got, expected in zip(first + second, whole):
    np.testing.assert_array_equal(got['label'], expected['label'])
    np.testing.assert_array_equal(got['image'], expected['image'])
  assert not np.array_equal(whole[7]['image'], whole[6]['image'])
  # An epoch (10 steps) holds each image once; the next one is a new order.
  ids = lambda batches: [b['image'][i].tobytes() for b in batches for i in range(16)]
  assert ids(whole[:10])[:8] != ids(whole[10:])[:8]

  resumed, uninterrupted = _params(tmp_path / 'parts', 14), _params(tmp_path / 'whole', 14)
  jax.tree.map(np.testing.assert_array_equal, resumed, uninterrupted)
  jax.tree.map(np.testing.assert_array_equal, _params(tmp_path / 'parts', 7),
               _params(tmp_path / 'whole', 7))
  # Not trivially equal: training moved the parameters between the checkpoints.
  assert not np.array_equal(_params(tmp_path / 'whole', 7)['fc8']['kernel'],
                            uninterrupted['fc8']['kernel'])
  last = lambda d: [r for r in _records(d, 'train') if r['step'] == 14]
  assert last(tmp_path / 'parts')[0]['loss'] == last(tmp_path / 'whole')[0]['loss']


def test_checkpoint_from_another_config_is_refused(shapes_dir, tmp_path, monkeypatch):
  config = small_config(shapes_dir, str(tmp_path / 'cache'))
  config.num_train_steps = 3
  monkeypatch.chdir(tmp_path)
  train.train_and_evaluate(config, 'run')  # a relative workdir, as the README's commands give
  config.model.width = 0.25
  config.num_train_steps = 6
  with pytest.raises(CheckpointError, match=r'model\.width: checkpoint 0\.125, config 0\.25'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  # Nothing was lost: the old checkpoint is still the newest.
  assert sorted(os.listdir(tmp_path / 'run' / 'checkpoints')) == ['3']


def test_class_count_mismatch_is_explained(shapes_dir, tmp_path):
  config = small_config(shapes_dir, str(tmp_path / 'cache'))
  config.model.num_classes = 1000
  with pytest.raises(UserError, match='has 10 classes but config field model.num_classes'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))


def _norm():
  rng = np.random.default_rng(1)
  return stats.Normalization(
      mean_image=rng.uniform(80, 160, (72, 72, 3)).astype(np.float32),
      eigvals=np.array([900.0, 100.0, 16.0], np.float32), eigvecs=np.eye(3, dtype=np.float32))


def test_eval_step_ignores_padding():
  model = create_model(small_config('/x', '/y').model)
  state = train.create_train_state(jax.random.key(0), model, 67, small_config('/x', '/y').optim)
  rng, norm = np.random.default_rng(0), _norm()
  batch = {'image': rng.integers(0, 256, (5, 72, 72, 3), np.uint8),
           'label': rng.integers(0, 10, 5).astype(np.int32)}
  padded = input_pipeline.pad_batch(batch, 8)
  assert padded['image'].shape[0] == 8 and padded['mask'].tolist() == [1] * 5 + [0] * 3
  out = jax.jit(train.eval_step, static_argnums=3)(
      state, padded, norm, functools.partial(augment.center_view, crop=67))
  # The center view by hand: the central 67x67 of the image minus the mean image's.
  views = batch['image'][:, 2:69, 2:69].astype(np.float32) - norm.mean_image[2:69, 2:69]
  logits = np.asarray(model.apply({'params': state.params}, views, train=False), np.float64)
  logp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) \
      - logits.max(1, keepdims=True)
  assert float(out['count']) == 5
  assert float(out['loss']) == pytest.approx(-logp[np.arange(5), batch['label']].sum(), rel=1e-4)
  top5 = np.argsort(-logits, 1)[:, :5]
  assert float(out['top1_err']) == (top5[:, 0] != batch['label']).sum()
  assert float(out['top5_err']) == sum(l not in t for l, t in zip(batch['label'], top5))


def test_evaluate_runs_the_agreed_number_of_batches_padding_a_short_share():
  """A process whose share of the evaluation images ends early still runs every eval step."""
  model = create_model(small_config('/x', '/y').model)
  state = train.create_train_state(jax.random.key(0), model, 67, small_config('/x', '/y').optim)
  rng, norm = np.random.default_rng(0), _norm()
  batches = [{'image': rng.integers(0, 256, (n, 72, 72, 3), np.uint8),
              'label': rng.integers(0, 10, n).astype(np.int32)} for n in (8, 3)]
  calls = []
  step = jax.jit(functools.partial(train.eval_step, view_fn=functools.partial(augment.center_view,
                                                                               crop=67)))

  def counting_step(state, batch, norm):
    calls.append(int(batch['mask'].sum()))
    return step(state, batch, norm)

  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ('data', 'model'))
  metrics = train.evaluate(counting_step, state, batches, norm, batch_size=8, num_batches=4,
                           batch_sharding=sharding.batch_sharding(mesh))
  assert calls == [8, 3, 0, 0]
  whole = {k: np.concatenate([b[k] for b in batches]) for k in ('image', 'label')}
  expected = step(state, input_pipeline.pad_batch(whole, 11), norm)
  assert metrics['top1_err'] == pytest.approx(float(expected['top1_err']) / 11)
  assert metrics['loss'] == pytest.approx(float(expected['loss']) / 11, rel=1e-5)


def test_the_plateau_policy_resumes_with_its_drops_and_the_new_base_rate(shapes_dir, tmp_path,
                                                                         caplog):
  """The learning-rate policy's state travels in the checkpoint, and a resumed run with another
  optim.base_lr continues at that rate after the drops already made."""
  config = small_config(shapes_dir, str(tmp_path / 'cache'))
  config.num_train_steps, config.eval_every_steps, config.log_every_steps = 3, 1, 1
  o = config.optim
  # Only the first evaluation improves (on no error at all): each later one drops the rate.
  o.lr_policy, o.plateau_patience, o.plateau_min_delta, o.lr_factor = 'plateau', 1, 1.0, 0.1
  o.base_lr = 0.01
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  o.base_lr, config.num_train_steps = 0.001, 4
  with caplog.at_level('WARNING'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert 'optim.base_lr is 0.001, the checkpoint was trained with 0.01' in caplog.text
  rates = [r['lr'] for r in _records(tmp_path / 'run', 'train')]
  assert rates == pytest.approx([0.01, 0.01, 0.001, 0.001 * 0.01], rel=1e-6)


def test_the_implementation_may_change_on_resume(shapes_dir, tmp_path):
  """Every form of every operation computes the same maths on the same parameters, so a run
  written with the plain forms resumes, trains and evaluates with the fast ones."""
  config = small_config(shapes_dir, str(tmp_path / 'cache'))
  config.num_train_steps = 3
  config.implementation = 'plain'
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  config.implementation = 'auto,grouped_conv=per_tower,strided_conv=space_to_depth,' \
                          'lrn=custom_gradient,pooling=strided_views,bias=matmul_gradient'
  config.num_train_steps = 6
  final = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert np.isfinite(final['train']['loss'])
  assert [r['step'] for r in _records(tmp_path / 'run', 'train')] == [2, 3, 4, 6]


def test_profile_steps_writes_a_trace_of_those_steps(shapes_dir, tmp_path):
  config = small_config(shapes_dir, str(tmp_path / 'cache'))
  config.num_train_steps, config.profile_steps = 4, '2-3'
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  runs = tmp_path / 'run' / 'profile' / 'plugins' / 'profile'  # TensorBoard's layout
  (trace_run,) = os.listdir(runs)
  files = os.listdir(runs / trace_run)
  assert any(f.endswith('.xplane.pb') for f in files), files         # TensorBoard
  assert 'perfetto_trace.json.gz' in files, files                     # Perfetto


@pytest.mark.parametrize('value', ['5', '3-2', '0-2', 'a-b', '2-3-4'])
def test_a_bad_profile_steps_is_one_clear_message(value):
  config = small_config('/data', '/cache')
  config.profile_steps = value
  with pytest.raises(UserError, match=r"profile_steps = .* write the first and last step to "
                                      r"trace as 'A-B', 1 <= A <= B"):
    config_check.validate(config)
  config.profile_steps = ' 2 - 3 '
  config_check.validate(config)


def test_the_clock_counts_queued_steps_as_training_before_it_pauses(monkeypatch):
  """Steps still queued on the device when an evaluation begins are training time: the clock
  waits for them before it pauses, so the logged rate is not inflated on evaluation steps."""
  now = [100.0]
  monkeypatch.setattr(train.time, 'perf_counter', lambda: now[0])

  def finish_queued_steps(tree):  # the device needs 6 s more for the queued steps
    now[0] += 6.0
    return tree

  monkeypatch.setattr(train.jax, 'block_until_ready', finish_queued_steps)
  clock = train._Clock(step=0)  # pylint: disable=protected-access
  now[0] += 2.0                 # the loop queues 8 steps in 2 s
  with clock.paused(queued='state'):
    now[0] += 30.0              # evaluating
  rates = clock.rates(8, batch_size=4, total_steps=16)
  assert rates['steps_per_sec'] == pytest.approx(8 / 8.0)  # 2 s queueing + 6 s computing
  assert rates['eta_s'] == pytest.approx(8.0)
