"""The optimizer against Section 5's update rule computed by hand, and the LR policies."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alexnet_jax import optim


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
    state = optim.set_lr(state, lr)
    grads = {'layer': {'kernel': jnp.asarray(kg, jnp.float32),
                       'bias': jnp.asarray(bg, jnp.float32)}}
    updates, state = tx.update(grads, state, p)
    p = optax.apply_updates(p, updates)
  np.testing.assert_allclose(p['layer']['kernel'],
                             _hand_rule(params['layer']['kernel'], kernel_grads, lrs),
                             rtol=1e-5, atol=1e-6)
  # Biases are not decayed by default (PAPER.md: weights only).
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


def test_plateau_divides_by_ten_when_validation_error_stops_improving():
  s = optim.PlateauState(lr=0.01)
  kw = dict(patience=2, factor=0.1, max_drops=3, min_delta=0.0)
  lrs = []
  for err in [0.9, 0.8, 0.7, 0.7, 0.71,    # two evaluations without improvement: drop
              0.6, 0.65, 0.62,             # drop again
              0.5, 0.5, 0.5,               # third drop
              0.5, 0.5, 0.5, 0.5]:         # at most three
    s = optim.plateau_update(s, err, **kw)
    lrs.append(s.lr)
  assert lrs[:4] == [0.01] * 4
  assert lrs[4] == pytest.approx(0.001)
  assert lrs[7] == pytest.approx(1e-4)
  assert lrs[10] == pytest.approx(1e-5)
  assert lrs[-1] == pytest.approx(1e-5) and s.drops == 3


def test_step_policy():
  assert [optim.step_lr(0.01, e, (30, 60, 80), 0.1) for e in (0, 29, 30, 61, 89)] == \
      pytest.approx([0.01, 0.01, 0.001, 1e-4, 1e-5])
