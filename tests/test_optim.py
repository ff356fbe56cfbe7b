"""The optimizer against Section 5's update rule computed by hand, and the LR policies."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alexnet_jax import config_check, migrations, optim
from alexnet_jax.errors import CheckpointError, ConfigError
from configs import imagenette
from configs import paper as paper_config


def _hand_rule(w, grads, lrs, momentum=0.9, wd=5e-4, decay=True):
  """v <- m v - wd eps w - eps g ; w <- w + v, in NumPy float64."""
  w, v = np.array(w, np.float64), np.zeros_like(w, np.float64)
  for g, eps in zip(grads, lrs):
    v = momentum * v - (wd * eps * w if decay else 0.0) - eps * g
    w = w + v
  return w


def _grads(n, shape, seed=0):
  return [np.random.default_rng(seed + i).normal(size=shape) for i in range(n)]


def test_update_rule_across_a_learning_rate_drop():
  params = {'layer': {'kernel': jnp.asarray(np.random.default_rng(9).normal(size=(4, 3)),
                                            jnp.float32),
                      'bias': jnp.ones((3,), jnp.float32)}}
  tx = optim.create(base_lr=0.01, momentum=0.9, weight_decay=5e-4, decay_biases=False)
  state = tx.init(params)
  kernel_grads, bias_grads = _grads(6, (4, 3)), _grads(6, (3,), seed=100)
  lrs = [0.01, 0.01, 0.01, 0.001, 0.001, 0.001]
  p = params
  for kg, bg, lr in zip(kernel_grads, bias_grads, lrs):
    state = optim.with_rate(state, lr)
    grads = {'layer': {'kernel': jnp.asarray(kg, jnp.float32),
                       'bias': jnp.asarray(bg, jnp.float32)}}
    updates, state = tx.update(grads, state, p)
    p = optax.apply_updates(p, updates)
  np.testing.assert_allclose(p['layer']['kernel'],
                             _hand_rule(params['layer']['kernel'], kernel_grads, lrs),
                             rtol=1e-5, atol=1e-6)
  # Biases are not decayed by default (docs/paper.md: weights only).
  np.testing.assert_allclose(p['layer']['bias'],
                             _hand_rule(params['layer']['bias'], bias_grads, lrs, decay=False),
                             rtol=1e-5, atol=1e-6)


def test_differs_from_optax_sgd_after_a_drop():
  """optax.sgd scales by the rate after the trace: equal at a constant rate, not after a drop."""
  w0 = jnp.asarray([1.0, -2.0])
  grads = [jnp.asarray(g, jnp.float32) for g in _grads(4, (2,))]
  lrs = [0.1, 0.1, 0.01, 0.01]

  def run(make):
    tx = optax.inject_hyperparams(make)(learning_rate=lrs[0])
    state, w = tx.init(w0), w0
    for g, lr in zip(grads, lrs):
      state.hyperparams['learning_rate'] = jnp.asarray(lr)
      u, state = tx.update(g, state, w)
      w = optax.apply_updates(w, u)
    return np.asarray(w)

  ours = run(lambda learning_rate: optim.paper_sgd(learning_rate, weight_decay=0.0))
  theirs = run(lambda learning_rate: optax.sgd(learning_rate, momentum=0.9))
  np.testing.assert_allclose(ours, _hand_rule(w0, grads, lrs, wd=0.0), rtol=1e-5)
  assert not np.allclose(ours, theirs, rtol=1e-4)


def test_decay_biases_option_and_schedule_argument():
  w0 = {'bias': jnp.asarray([1.0, 2.0])}
  grads = _grads(3, (2,))
  schedule = optax.piecewise_constant_schedule(0.1, {2: 0.1})  # 0.1, 0.1, 0.01
  tx = optim.paper_sgd(schedule, decay_biases=True)
  state, w = tx.init(w0), w0
  for g in grads:
    u, state = tx.update({'bias': jnp.asarray(g, jnp.float32)}, state, w)
    w = optax.apply_updates(w, u)
  np.testing.assert_allclose(w['bias'], _hand_rule(w0['bias'], grads, [0.1, 0.1, 0.01]),
                             rtol=1e-5)


def test_kernels_only_mask():
  mask = optim.kernels_only({'conv1': {'kernel': 0, 'bias': 0}, 'fc8': {'kernel': 0, 'bias': 0}})
  assert mask == {'conv1': {'kernel': True, 'bias': False}, 'fc8': {'kernel': True, 'bias': False}}


def _plateau(**kw):
  return optim.Plateau(0.01, 0.1, **{'patience': 2, 'max_drops': 3, 'min_delta': 0.0, **kw})


def test_plateau_divides_by_ten_when_validation_error_stops_improving():
  policy, lrs = _plateau(), []
  for err in [0.9, 0.8, 0.7, 0.7, 0.71,    # two evaluations without improvement: drop
              0.6, 0.65, 0.62,             # drop again
              0.5, 0.5, 0.5,               # third drop
              0.5, 0.5, 0.5, 0.5]:         # at most three
    policy.evaluated(err)
    lrs.append(policy.at(step=len(lrs)))
  assert lrs[:4] == [0.01] * 4
  assert lrs[4] == pytest.approx(0.001)
  assert lrs[7] == pytest.approx(1e-4)
  assert lrs[10] == pytest.approx(1e-5)
  assert lrs[-1] == pytest.approx(1e-5) and policy.drops(0) == 3


def test_plateau_needs_more_than_min_delta_to_count_as_improving():
  policy = _plateau(patience=1, min_delta=0.01)
  policy.evaluated(0.5)
  policy.evaluated(0.495)  # better by less than min_delta: no improvement, patience 1: drop
  assert policy.at(0) == pytest.approx(0.001)


def test_plateau_state_saved_and_restored_through_json_decides_alike():
  """A resumed run makes the decisions an uninterrupted one does: the state goes through the
  checkpoint's JSON (best error infinite before the first evaluation) and back."""
  errs = [0.9, 0.8, 0.8, 0.85, 0.7, 0.7, 0.72, 0.69]
  uninterrupted, rates = _plateau(), []
  for err in errs:
    uninterrupted.evaluated(err)
    rates.append(uninterrupted.at(0))
  for cut in range(len(errs) + 1):
    first = _plateau()
    for err in errs[:cut]:
      first.evaluated(err)
    resumed = _plateau()
    resumed.restore(json.loads(json.dumps(first.state())))
    for err in errs[cut:]:
      resumed.evaluated(err)
    assert resumed.state() == uninterrupted.state(), cut
    assert resumed.at(0) == rates[-1]


def test_a_changed_base_rate_continues_with_the_drops_made():
  """The resume rule: every policy's rate is the config's base rate after the drops made."""
  saved = {'lr': 0.01 * 0.1 ** 2, 'best_err': 0.4, 'evals_since_best': 1, 'drops': 2}
  policy = optim.Plateau(0.001, 0.1, patience=2, max_drops=3, min_delta=0.0)
  policy.restore(saved)  # an older checkpoint also holds the rate itself: it is not needed
  assert policy.at(0) == pytest.approx(0.001 * 0.01)
  assert policy.state() == {'best_err': 0.4, 'evals_since_best': 1, 'drops': 2}
  steps = optim.Steps(0.001, 0.1, (10, 20))
  steps.restore(saved)
  assert steps.at(25) == pytest.approx(0.001 * 0.01) and steps.drops(25) == 2


def test_step_policy():
  config = imagenette.get_config().optim
  config.lr_policy, config.base_lr, config.lr_factor = 'step', 0.01, 0.1
  config.step_epochs, config.step_steps = (30, 60, 80), ()
  policy = optim.learning_rate(config, steps_per_epoch=10)
  assert [policy.at(10 * e) for e in (0, 29, 30, 61, 89)] == \
      pytest.approx([0.01, 0.01, 0.001, 1e-4, 1e-5])
  assert policy.at(299) == pytest.approx(0.01)
  assert policy.state() == {}


def test_step_policy_in_steps_drops_at_caffes_iterations():
  """Caffe's 'step' policy: base_lr * gamma ^ floor(iter / stepsize), iter counted from 0."""
  config = imagenette.get_config().optim
  config.lr_policy, config.base_lr, config.lr_factor = 'step', 0.01, 0.1
  config.step_steps = (100_000, 200_000, 300_000, 400_000)
  policy = optim.learning_rate(config, steps_per_epoch=7)  # steps, whatever an epoch is
  for step in (0, 99_999, 100_000, 250_000, 449_999):
    assert policy.at(step) == pytest.approx(0.01 * 0.1 ** (step // 100_000))


def test_constant_policy_ignores_evaluations():
  config = imagenette.get_config().optim
  config.lr_policy, config.base_lr = 'constant', 0.003
  policy = optim.learning_rate(config, steps_per_epoch=7)
  for err in (0.5, 0.5, 0.5, 0.5, 0.5):
    policy.evaluated(err)
  assert policy.at(10**6) == 0.003


def test_bias_lr_scale_doubles_the_biases_rate_alone():
  """Caffe's lr_mult 2 on biases, no decay on them: v <- m v - 2 eps g for a bias."""
  rng = np.random.default_rng(5)
  params = {'fc7': {'kernel': jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
                    'bias': jnp.ones((3,), jnp.float32)}}
  tx = optim.create(base_lr=0.01, momentum=0.9, weight_decay=5e-4, decay_biases=False,
                    bias_lr_scale=2.0)
  state, p = tx.init(params), params
  grads = {'kernel': _grads(4, (4, 3), seed=20), 'bias': _grads(4, (3,), seed=30)}
  lrs = [0.01, 0.01, 0.001, 0.001]
  for t, lr in enumerate(lrs):
    state = optim.with_rate(state, lr)
    g = {'fc7': {k: jnp.asarray(v[t], jnp.float32) for k, v in grads.items()}}
    updates, state = tx.update(g, state, p)
    p = optax.apply_updates(p, updates)
  np.testing.assert_allclose(p['fc7']['kernel'], _hand_rule(
      params['fc7']['kernel'], grads['kernel'], lrs), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(p['fc7']['bias'], _hand_rule(
      params['fc7']['bias'], grads['bias'], [2 * lr for lr in lrs], decay=False), rtol=1e-5,
                             atol=1e-6)


@pytest.mark.parametrize('scale', [1.0, 0.01])
def test_fc8_lr_scale_scales_the_output_layer_rate_alone(scale):
  """v <- m v - s eps (g + wd w) for fc8, the paper's rule for every other layer, across a drop."""
  rng = np.random.default_rng(3)
  params = {name: {'kernel': jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
                   'bias': jnp.ones((3,), jnp.float32)} for name in ('fc7', 'fc8')}
  tx = optim.create(base_lr=0.01, momentum=0.9, weight_decay=5e-4, decay_biases=False,
                    fc8_lr_scale=scale)
  state, p = tx.init(params), params
  grads = {name: {'kernel': _grads(5, (4, 3), seed=10 * i), 'bias': _grads(5, (3,), seed=7 + i)}
           for i, name in enumerate(('fc7', 'fc8'))}
  lrs = [0.01, 0.01, 0.01, 0.001, 0.001]
  for t, lr in enumerate(lrs):
    state = optim.with_rate(state, lr)
    g = {n: {k: jnp.asarray(v[t], jnp.float32) for k, v in layer.items()}
         for n, layer in grads.items()}
    updates, state = tx.update(g, state, p)
    p = optax.apply_updates(p, updates)
  for name, s in (('fc7', 1.0), ('fc8', scale)):
    np.testing.assert_allclose(p[name]['kernel'], _hand_rule(
        params[name]['kernel'], grads[name]['kernel'], [s * lr for lr in lrs]), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(p[name]['bias'], _hand_rule(
        params[name]['bias'], grads[name]['bias'], [s * lr for lr in lrs], decay=False),
                               rtol=1e-5, atol=1e-6)


def test_default_fc8_lr_scale_is_the_paper_optimizer_and_state():
  """At 1 the chain is the paper's three transforms, so its state (and older checkpoints) match;
  configs/paper.py keeps 1, and a checkpoint from before the field resumes as 1 (and refuses
  another value)."""
  params = {'fc8': {'kernel': jnp.ones((2, 2)), 'bias': jnp.zeros((2,))}}
  paper = optim.create(0.01, 0.9, 5e-4, False).init(params)
  assert len(paper.inner_state) == 3
  assert len(optim.create(0.01, 0.9, 5e-4, False, fc8_lr_scale=0.01).init(params).inner_state) == 4
  assert jax.tree.structure(optim.create(0.01, 0.9, 5e-4, False, 1.0).init(params)) == (
      jax.tree.structure(paper))
  assert paper_config.get_config().optim.fc8_lr_scale == 1.0
  # The adaptation configs/imagenette.py makes is in the model: the paper's rates stay.
  assert paper_config.get_config().model.positive_bias == 1.0
  assert imagenette.get_config().model.positive_bias == 0.1
  assert imagenette.get_config().optim.fc8_lr_scale == 1.0
  saved = json.loads(paper_config.get_config().to_json())
  del saved['optim']['fc8_lr_scale'], saved['model']['positive_bias']
  migrations.check_compatible(saved, paper_config.get_config(), 'old')
  scaled = paper_config.get_config()
  scaled.optim.fc8_lr_scale = 0.01
  with pytest.raises(CheckpointError, match='optim.fc8_lr_scale'):
    migrations.check_compatible(saved, scaled, 'old')


@pytest.mark.parametrize('arch,value', [('alexnet', 0.0), ('alexnet', -1.0), ('cifar_cnn', 0.5)])
def test_bad_fc8_lr_scale_is_named(arch, value):
  config = imagenette.get_config()
  config.model.arch, config.optim.fc8_lr_scale = arch, value
  with pytest.raises(ConfigError, match='optim.fc8_lr_scale') as e:
    config_check._validate_recipe(config, config.data, config.optim)
  assert '\n' not in str(e.value)
