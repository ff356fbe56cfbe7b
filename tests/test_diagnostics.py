"""Dead units and per-layer norms against a NumPy evaluation, the once-only warning, and the
'diag' rows across a resume."""

import functools
import logging

import jax
import numpy as np
import pytest

from alexnet_jax import diagnostics, metric_writer, train
from alexnet_jax.model import create_model
from tests import numpy_alexnet
from tests.conftest import small_config

_IDENTITY = lambda batch, norm: batch['image']  # the network's input as it is
# One jitted function for the module: the tests below share its compilation.
_DIAGNOSE = jax.jit(functools.partial(diagnostics.diagnose, norm=None, augment_fn=_IDENTITY))


@pytest.fixture(scope='module')
def small():
  """The tiny two-tower net of small_config without dropout, so that its training-mode forward
  pass is the NumPy network's, and with fc8's rate scaled, so that the update norms must come
  from the optimizer the config creates."""
  config = small_config('/x', '/y')
  config.model.dropout_rate, config.model.input_scale = 0.0, 1.0
  config.optim.fc8_lr_scale = 0.01
  model = create_model(config.model)
  return train.create_train_state(jax.random.key(0), model, 67, config.optim), config


def _batch(n=6, seed=0):
  rng = np.random.default_rng(seed)
  return {'image': rng.normal(0, 1, (n, 67, 67, 3)).astype(np.float32),
          'label': rng.integers(0, 10, n).astype(np.int32)}


# The rate of the diagnosed update: not the config's base rate, which the optimizer state was
# created with, so that the update norms show that the rate given is the one used.
_LR = 0.003


def _diagnose(state, batch):
  return jax.device_get(_DIAGNOSE(state, batch, rng=jax.random.key(1), lr=_LR))


def _dead_by_hand(pre_activation):
  flat = pre_activation.reshape(-1, pre_activation.shape[-1])
  return np.mean([np.all(flat[:, unit] <= 0) for unit in range(flat.shape[1])])


def test_dead_fractions_and_norms_match_numpy(small):
  state, config = small
  batch = _batch()
  params = jax.device_get(state.params)
  # Some units dead and some alive in every layer: push a third of each layer's biases far down.
  for name in diagnostics.HIDDEN_LAYERS:
    bias = params[name]['bias'].copy()
    bias[::3] = -1e4
    params[name] = {**params[name], 'bias': bias}
  state = state.replace(params=params)
  got = _diagnose(state, batch)

  record = {}
  logits = numpy_alexnet.forward(params, batch['image'], record=record)
  for name in diagnostics.HIDDEN_LAYERS:
    expected = _dead_by_hand(record[name])
    assert 0 < expected < 1
    assert got[f'dead_{name}'] == pytest.approx(expected, abs=1e-6), name

  # fc8's gradient of the mean softmax cross-entropy, and the first update of the paper's rule
  # (momentum buffer empty) at fc8's rate s eps: u = -s eps (g + wd w) for the kernel, -s eps g
  # for the bias.
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  delta = (p - np.eye(10)[batch['label']]) / len(logits)
  g_kernel, g_bias = record['fc7_act'].T @ delta, delta.sum(0)
  eps, wd = _LR * config.optim.fc8_lr_scale, config.optim.weight_decay
  w = params['fc8']['kernel'].astype(np.float64)
  loss = -np.log(p[np.arange(len(p)), batch['label']]).mean()
  assert got['loss'] == pytest.approx(loss, rel=1e-4)
  assert got['grad_norm_fc8'] == pytest.approx(np.sqrt((g_kernel**2).sum() + (g_bias**2).sum()),
                                               rel=1e-4)
  assert got['update_norm_fc8'] == pytest.approx(
      eps * np.sqrt(((g_kernel + wd * w)**2).sum() + (g_bias**2).sum()), rel=1e-4)
  for name in params:
    by_hand = np.sqrt(sum((np.asarray(v, np.float64)**2).sum() for v in params[name].values()))
    assert got[f'param_norm_{name}'] == pytest.approx(by_hand, rel=1e-5)
    assert np.isfinite(got[f'grad_norm_{name}']) and np.isfinite(got[f'update_norm_{name}'])


def test_a_dead_layer_warns_once_naming_it_and_the_step(small, caplog):
  state, _ = small
  params = jax.device_get(state.params)
  params['fc7'] = {**params['fc7'], 'bias': np.full_like(params['fc7']['bias'], -1e4)}
  got = _diagnose(state.replace(params=params), _batch())
  assert got['dead_fc7'] == 1.0 and got['dead_fc6'] < 0.9
  watch = diagnostics.DeathWatch()
  with caplog.at_level(logging.WARNING):
    assert watch.check(25, got) == ['fc7']
    assert watch.check(50, got) == ['fc7']
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert len(warnings) == 1 and 'step 25' in warnings[0] and 'fc7 100%' in warnings[0]


def test_resume_drops_the_diag_rows_after_the_checkpoint(tmp_path):
  """A resumed run rewrites the rows its predecessor logged after the checkpoint: diagnostics
  included, so each step and split keeps one row (the loop's rows: tests/test_train.py)."""
  writer = metric_writer.MetricWriter(str(tmp_path))
  for step in (2, 4, 6):
    writer.write('train', step, step / 10, {'loss': 2.3})
    writer.write('diag', step, step / 10, {'dead_fc7': 0.5})
  writer.close()
  metric_writer.MetricWriter(str(tmp_path), resume_step=4).close()
  assert [(r['split'], r['step']) for r in metric_writer.read_records(str(tmp_path))] == [
      ('train', 2), ('diag', 2), ('train', 4), ('diag', 4)]
