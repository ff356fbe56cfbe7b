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
  """paper_sgd with a slot for the learning rate in its state, which each step fills
  (`with_rate`) from the policy that owns the rate."""
  static = ('decay_biases', 'fc8_lr_scale', 'bias_lr_scale')
  return optax.inject_hyperparams(paper_sgd, static_args=static)(
      learning_rate=base_lr, momentum=momentum, weight_decay=weight_decay,
      decay_biases=decay_biases, fc8_lr_scale=fc8_lr_scale, bias_lr_scale=bias_lr_scale)


def with_rate(opt_state, lr):
  """`opt_state` of `create` whose next update uses the learning rate `lr`."""
  hyperparams = dict(opt_state.hyperparams)
  dtype = jnp.asarray(hyperparams['learning_rate']).dtype
  hyperparams['learning_rate'] = jnp.asarray(lr, dtype=dtype)
  return opt_state._replace(hyperparams=hyperparams)


# ---------------------------------------------------------------------------------------------
# The learning rate: one object per policy owns it. It says the rate at a step, takes each
# evaluation's error, and saves and restores its own state (plain numbers, in the checkpoint's
# JSON), so that a resumed run makes the decisions an uninterrupted one does. The step is given
# the rate as an argument; the Optax state's `learning_rate` slot only carries it into the chain.
# ---------------------------------------------------------------------------------------------


class Constant:
  """A rate that never moves; also the base of the other policies: each rate is the base rate
  times `factor` once per drop made so far."""

  def __init__(self, base_lr: float, factor: float = 1.0):
    self.base_lr, self.factor = base_lr, factor

  def drops(self, step: int) -> int:
    """How many times the rate has been multiplied by `factor` when `step` steps are done."""
    del step
    return 0

  def at(self, step: int) -> float:
    """The rate of the update that follows `step` completed steps."""
    return self.base_lr * self.factor ** self.drops(step)

  def evaluated(self, val_err: float) -> None:
    """Takes the validation error of an evaluation; only the plateau policy moves on it."""
    del val_err

  def state(self) -> dict:
    """What a checkpoint keeps of the policy: nothing the step count does not already say."""
    return {}

  def restore(self, saved: dict) -> None:
    """Continues from a checkpoint's `state()`. The base rate is always the config's: a
    resumed run with another `optim.base_lr` continues at that rate with the drops made."""
    del saved


class Steps(Constant):
  """Multiply by `factor` at each of `boundaries` (steps): a reproducible stand-in for the
  plateau rule, at fixed epochs or, as Caffe's solver counts, at fixed steps."""

  def __init__(self, base_lr: float, factor: float, boundaries: tuple[int, ...]):
    super().__init__(base_lr, factor)
    self.boundaries = tuple(boundaries)

  def drops(self, step: int) -> int:
    return sum(step >= b for b in self.boundaries)


class Plateau(Constant):
  """Section 5: divide the rate by 10 when the validation error stops improving at it.

  An evaluation improves if it beats the best error at the current rate by more than
  `min_delta`; after `patience` evaluations without improvement the rate is multiplied by
  `factor`, at most `max_drops` times (the paper: three).
  """

  def __init__(self, base_lr: float, factor: float, *, patience: int, max_drops: int,
               min_delta: float):
    super().__init__(base_lr, factor)
    self.patience, self.max_drops, self.min_delta = patience, max_drops, min_delta
    self.best_err, self.evals_since_best, self.made = float('inf'), 0, 0

  def drops(self, step: int) -> int:
    del step
    return self.made

  def evaluated(self, val_err: float) -> None:
    if val_err < self.best_err - self.min_delta:
      self.best_err, self.evals_since_best = val_err, 0
    elif self.evals_since_best + 1 < self.patience or self.made >= self.max_drops:
      self.evals_since_best += 1
    else:  # the error to beat is reset with the rate: "stopped improving *with the current rate*"
      self.best_err, self.evals_since_best, self.made = val_err, 0, self.made + 1

  def state(self) -> dict:
    return {'best_err': self.best_err, 'evals_since_best': self.evals_since_best,
            'drops': self.made}

  def restore(self, saved: dict) -> None:
    self.best_err = saved.get('best_err', float('inf'))
    self.evals_since_best = saved.get('evals_since_best', 0)
    self.made = saved.get('drops', 0)


def learning_rate(optim_config, steps_per_epoch: int) -> Constant:
  """The policy `optim.lr_policy` names, in its initial state."""
  o = optim_config
  if o.lr_policy == 'plateau':
    return Plateau(o.base_lr, o.lr_factor, patience=o.plateau_patience,
                   max_drops=o.max_lr_drops, min_delta=o.plateau_min_delta)
  if o.lr_policy == 'step':
    boundaries = (tuple(o.step_steps) if o.step_steps
                  else tuple(e * steps_per_epoch for e in o.step_epochs))
    return Steps(o.base_lr, o.lr_factor, boundaries)
  return Constant(o.base_lr)
