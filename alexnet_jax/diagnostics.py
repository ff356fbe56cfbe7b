"""What a training step does to each layer: dead units, and gradient, update and parameter norms.

A ReLU unit whose input is <= 0 for every image passes no gradient back and learns nothing: a
layer that is mostly dead has stopped training, and its loss can sit at ln(classes) while nothing
fails. `diagnose` measures this on the step's own batch, with the step's own augmentation and
dropout, so it sees exactly what `train.train_step` is about to do, and it leaves train_step (and
the collectives of the sharded step) untouched: the loop calls it every
`config.diagnostics_every_steps` steps, beside the step.

A conv unit is one output channel: dead if it is <= 0 at every position of every image of the
batch. A fully connected unit is dead if it is <= 0 for every image. The update is what the
optimizer adds to the parameters at this step (`tx.update` with the current optimizer state).
"""

import jax
import jax.numpy as jnp
import optax
from absl import logging

from alexnet_jax import augment, model, optim, stats

# The hidden layers, whose ReLUs can die; fc8 feeds the softmax.
HIDDEN_LAYERS = ('conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7')
# A layer with more dead units than this has effectively stopped learning.
DEAD_WARNING = 0.9


def _is_layer(module, method_name: str) -> bool:
  return method_name == '__call__' and module.name in HIDDEN_LAYERS


def forward(apply_fn, params, images: jax.Array, **kwargs) -> tuple[jax.Array, dict]:
  """The logits, and the input of each hidden layer's ReLU (the output of its conv or dense
  module), by layer name; `kwargs` go to `apply_fn` (train, rngs)."""
  logits, captured = apply_fn({'params': params}, images, capture_intermediates=_is_layer,
                              mutable=['intermediates'], **kwargs)
  return logits, {name: out['__call__'][0] for name, out in captured['intermediates'].items()}


def dead_fraction(pre_activation: jax.Array) -> jax.Array:
  """The fraction of units (last axis) whose input is <= 0 at every image and position, i.e.
  whose ReLU outputs 0 throughout the batch."""
  dead = jnp.all(pre_activation <= 0, axis=tuple(range(pre_activation.ndim - 1)))
  return dead.astype(jnp.float32).mean()


def dead_fractions(pre_activations: dict) -> dict:
  """`dead_<layer>` for each hidden layer present, in network order."""
  return {f'dead_{name}': dead_fraction(pre_activations[name])
          for name in HIDDEN_LAYERS if name in pre_activations}


def _norms(tree) -> dict:
  """The L2 norm of each layer's parameters (kernel and bias together)."""
  return {name: optax.global_norm(layer) for name, layer in tree.items()}


def diagnose(state, batch: dict, rng: jax.Array, norm: stats.Normalization, lr: jax.Array,
             augment_fn=augment.train_inputs) -> dict:
  """The dead fraction of each hidden layer and the gradient, update and parameter norms of
  every layer, for the step `train_step(state, batch, rng, norm, lr, augment_fn)` would make.

  Keys: `dead_<layer>` for conv1..fc7 (layers removed by model.skip_convs are absent), and
  `grad_norm_<layer>`, `update_norm_<layer>`, `param_norm_<layer>` for conv1..fc8, plus `loss`.
  """
  # The same batch and key as train_step: the same patches, lighting and dropout masks.
  dropout_rng = model.dropout_key(rng, state.step)
  images = augment_fn(batch, norm)

  def loss_fn(params):
    logits, inputs = forward(state.apply_fn, params, images, train=True,
                             rngs={'dropout': dropout_rng})
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']).mean()
    return loss, inputs

  (loss, inputs), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, _ = state.tx.update(grads, optim.with_rate(state.opt_state, lr), state.params)
  metrics = {'loss': loss, **dead_fractions(inputs)}
  for kind, tree in (('grad', grads), ('update', updates), ('param', state.params)):
    metrics.update({f'{kind}_norm_{name}': n for name, n in _norms(tree).items()})
  return metrics


class DeathWatch:
  """Warns once per run when a hidden layer is more than `threshold` dead."""

  def __init__(self, threshold: float = DEAD_WARNING):
    self.threshold, self.warned = threshold, False

  def check(self, step: int, metrics: dict) -> list[str]:
    """The layers over the threshold in `metrics` (a `diagnose` result read to the host)."""
    dead = [k[len('dead_'):] for k, v in metrics.items()
            if k.startswith('dead_') and v > self.threshold]
    if dead and not self.warned:
      self.warned = True
      shown = ', '.join(f'{name} {metrics[f"dead_{name}"]:.0%}' for name in dead)
      logging.warning('Dead ReLUs at step %d: %s of the units pass no gradient on this batch. '
                      'The layer has stopped learning; a loss stuck at ln(classes) follows. '
                      'With few classes and the paper\'s biases of 1, set '
                      'model.positive_bias=0.1 (experiments/README.md); else lower '
                      'optim.base_lr.', step, shown)
    return dead
