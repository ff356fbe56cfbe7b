"""The paper's optimizer and learning-rate policies (Krizhevsky et al. 2012, Section 5).

Update rule, with the learning rate eps *inside* the momentum buffer:

    v <- 0.9 v - 0.0005 eps w - eps dL/dw
    w <- w + v

`optax.sgd(momentum=...)` scales by eps after the trace instead; the two agree while eps is
constant and differ after every learning-rate drop.

`fc8_lr_scale` multiplies eps for the output layer alone. The paper's value is 1; with K classes
instead of ImageNet's 1000, K / 1000 makes fc8's own share of each logit's move per step what it
is on ImageNet. The hidden layers' share stays, so on 10 classes it is not enough by itself
(experiments/README.md, "Why the paper's recipe dies on 10 classes").

`bias_lr_scale` multiplies eps for every bias: 1 in the paper, 2 in Caffe's AlexNet recipe
(its `lr_mult: 2` on biases).
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

# How the learning rate moves: on plateaus of the validation error (Section 5), at fixed epochs,
# or never.
LR_POLICIES = ('plateau', 'step', 'constant')


def kernels_only(params) -> Any:
  """Weight-decay mask: True for every `kernel` leaf (cuda-convnet decayed weights, not biases)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: bool(path) and getattr(path[-1], 'key', None) == 'kernel', params)


def output_layer(params) -> Any:
  """Mask: True for the leaves of fc8, the output layer, whose rate `fc8_lr_scale` scales."""
  return {name: jax.tree.map(lambda _: name == 'fc8', layer) for name, layer in params.items()}


def biases(params) -> Any:
  """Mask: True for every `bias` leaf, whose rate `bias_lr_scale` scales."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: bool(path) and getattr(path[-1], 'key', None) == 'bias', params)


def paper_sgd(learning_rate: optax.ScalarOrSchedule, momentum: float = 0.9,
              weight_decay: float = 5e-4, decay_biases: bool = False, fc8_lr_scale: float = 1.0,
              bias_lr_scale: float = 1.0) -> optax.GradientTransformation:
  """SGD with momentum and weight decay exactly as Section 5's update rule.

  Args:
    learning_rate: eps, a float or an optax schedule of the step count.
    momentum: the momentum coefficient (paper: 0.9).
    weight_decay: the decay coefficient (paper: 0.0005).
    decay_biases: the paper does not say; default False decays kernels only.
    fc8_lr_scale: fc8's rate is eps times this (paper: 1). At 1 the chain and its state are
      exactly the paper's optimizer, so checkpoints written before the option restore.
    bias_lr_scale: every bias's rate is eps times this (paper: 1; Caffe: 2); at 1, likewise.
  """
  steps = [
      optax.add_decayed_weights(weight_decay, mask=None if decay_biases else kernels_only),
      optax.scale_by_learning_rate(learning_rate),  # -eps (g + wd w): eps enters before the trace
  ]
  if fc8_lr_scale != 1.0:  # before the trace, as eps itself: v <- m v - s eps (g + wd w)
    steps.append(optax.masked(optax.scale(fc8_lr_scale), output_layer))
  if bias_lr_scale != 1.0:
    steps.append(optax.masked(optax.scale(bias_lr_scale), biases))
  steps.append(optax.trace(decay=momentum, nesterov=False))  # v <- momentum v + that; update v
  return optax.chain(*steps)


def create(base_lr: float, momentum: float, weight_decay: float, decay_biases: bool,
           fc8_lr_scale: float = 1.0, bias_lr_scale: float = 1.0
           ) -> optax.GradientTransformation:
  """paper_sgd with the learning rate as a hyperparameter the training loop can change."""
  static = ('decay_biases', 'fc8_lr_scale', 'bias_lr_scale')
  return optax.inject_hyperparams(paper_sgd, static_args=static)(
      learning_rate=base_lr, momentum=momentum, weight_decay=weight_decay,
      decay_biases=decay_biases, fc8_lr_scale=fc8_lr_scale, bias_lr_scale=bias_lr_scale)


def get_lr(opt_state) -> jax.Array:
  return opt_state.hyperparams['learning_rate']


def set_lr(opt_state, lr: float):
  hyperparams = dict(opt_state.hyperparams)
  hyperparams['learning_rate'] = jnp.asarray(lr, dtype=jnp.asarray(get_lr(opt_state)).dtype)
  return opt_state._replace(hyperparams=hyperparams)


# ---------------------------------------------------------------------------------------------
# Learning-rate policies. Each is a pure function of plain numbers, so that its state can be
# stored in a checkpoint and a resumed run makes the same decisions as an uninterrupted one.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PlateauState:
  """Bookkeeping of the paper's policy: the best validation error at the current rate."""
  lr: float
  best_err: float = float('inf')
  evals_since_best: int = 0
  drops: int = 0


def plateau_update(state: PlateauState, val_err: float, *, patience: int, factor: float,
                   max_drops: int, min_delta: float) -> PlateauState:
  """Section 5: divide the rate by 10 when the validation error stops improving at it.

  An evaluation improves if it beats the best error at the current rate by more than
  `min_delta`; after `patience` evaluations without improvement the rate is multiplied by
  `factor`, at most `max_drops` times (the paper: three).
  """
  if val_err < state.best_err - min_delta:
    return dataclasses.replace(state, best_err=val_err, evals_since_best=0)
  waited = state.evals_since_best + 1
  if waited < patience or state.drops >= max_drops:
    return dataclasses.replace(state, evals_since_best=waited)
  # The error to beat is reset with the rate: "stopped improving *with the current rate*".
  return PlateauState(lr=state.lr * factor, best_err=val_err, evals_since_best=0,
                      drops=state.drops + 1)


def step_lr(base_lr: float, at: int, drops: tuple[int, ...], factor: float) -> float:
  """A reproducible stand-in for the plateau rule: multiply by `factor` at each of `drops`,
  epochs or steps as `at` counts (Caffe's solver counts steps)."""
  return base_lr * factor ** sum(at >= d for d in drops)
