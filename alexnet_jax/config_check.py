"""Checks a config before any work starts, so a wrong value is named at once, not mid-run."""

import typing

import ml_collections
from absl import logging

from alexnet_jax import flops, implementations, profiling
from alexnet_jax.augment import LIGHTING_SCALES
from alexnet_jax.sources import SOURCES
from alexnet_jax.errors import require
from alexnet_jax.model import ARCHITECTURES, DTYPES, MIDDLE_CONVS, create_model, widened
from alexnet_jax.optim import LR_POLICIES
from alexnet_jax.transforms import DECODERS

# The allowed values, each from the module that acts on the field.
_CHOICES = {
    'model.dtype': DTYPES,
    'data.source': SOURCES,
    'data.decoder': DECODERS,
    'data.lighting_scale': LIGHTING_SCALES,
    'optim.lr_policy': LR_POLICIES,
}


def _get(config, dotted):
  node = config
  for part in dotted.split('.'):
    node = node[part]
  return node


def _field_choices(module, *fields) -> dict:
  """The values a network module's Literal-typed fields allow, by config field."""
  hints = typing.get_type_hints(module)
  return {f'model.{field}': typing.get_args(hints[field]) for field in fields}


def _check_choices(config, choices: dict) -> None:
  for field, allowed in choices.items():
    value = _get(config, field)
    require(value in allowed, field, value, f'choose one of {", ".join(map(repr, allowed))}')


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first field whose value cannot work."""
  _check_choices(config, _CHOICES)
  model, data, optim = config.model, config.data, config.optim
  arch = model.get('arch', 'alexnet')
  require(arch in ARCHITECTURES, 'model.arch', arch,
          "choose 'alexnet' (the paper's network) or 'cifar_cnn' (its CIFAR-10 net)")
  _check_choices(config, _field_choices(ARCHITECTURES[arch], 'activation'))
  require(model.num_classes >= 2, 'model.num_classes', model.num_classes, 'need at least 2 classes')
  _validate_recipe(config, data, optim)
  if arch == 'alexnet':
    _check_choices(config, _field_choices(ARCHITECTURES[arch], 'towers', 'init_scheme'))
    _validate_alexnet(model, data)
  try:
    implementations.choose(config.implementation)
  except ValueError as e:
    require(False, 'implementation', config.implementation, str(e))
  try:
    profiling.parse_steps(config.get('profile_steps', ''))
  except ValueError as e:
    require(False, 'profile_steps', config.profile_steps, str(e))


def _validate_alexnet(model: ml_collections.ConfigDict, data: ml_collections.ConfigDict) -> None:
  require(len(model.conv_features) == 5, 'model.conv_features', model.conv_features,
          'give the kernel counts of conv1..conv5 (five numbers)')
  require(model.width > 0, 'model.width', model.width, 'the width multiplier must be positive')
  for i, n in enumerate(model.conv_features):
    scaled = widened(n, model.width, model.towers)
    require(scaled % model.towers == 0, 'model.conv_features', model.conv_features,
            f'conv{i + 1} has {scaled} kernels after model.width={model.width}, which does not '
            f'split into {model.towers} towers')
  require(0 <= model.dropout_rate < 1, 'model.dropout_rate', model.dropout_rate,
          'must be in [0, 1)')
  require(model.lrn_n >= 1, 'model.lrn_n', model.lrn_n,
          'the LRN window must hold at least 1 channel')
  require(model.pool_window >= 1 and model.pool_stride >= 1, 'model.pool_window', model.pool_window,
          'pooling window and stride must be positive')
  require(model.init_std > 0, 'model.init_std', model.init_std, 'must be positive')
  require(model.hidden_fc_init_std is None or model.hidden_fc_init_std > 0,
          'model.hidden_fc_init_std', model.hidden_fc_init_std,
          'must be positive (or None: model.init_std)')
  require(model.positive_bias >= 0, 'model.positive_bias', model.positive_bias,
          'must be >= 0 (the paper: 1; Caffe: 0.1)')
  require(set(model.skip_convs) <= set(MIDDLE_CONVS), 'model.skip_convs', model.skip_convs,
          f'only the middle conv layers {MIDDLE_CONVS} can be removed')
  # The maps' sides as the network itself computes them (a shape-only trace).
  layers = flops.layers(create_model(model, implementation='plain'), data.crop_size)
  sizes = [l.out_size for l in layers if l.name.startswith('conv')]
  fc6 = next(l for l in layers if l.name == 'fc6')
  require(min(sizes) >= 1 and fc6.in_channels >= 1, 'data.crop_size', data.crop_size,
          f'feature maps would shrink to nothing (conv sides {sizes}, fc6 inputs '
          f'{fc6.in_channels}) with model.conv1_padding={model.conv1_padding} and '
          f'{model.pool_window}x{model.pool_window}/{model.pool_stride} pooling')
  if (data.crop_size, model.conv1_padding) in ((224, 0), (227, 2)):
    logging.warning('data.crop_size=%d with model.conv1_padding=%d gives %dx%d conv1 maps, not '
                    'the paper\'s 55x55: use 227/0 (default) or 224/2.', data.crop_size,
                    model.conv1_padding, sizes[0], sizes[0])


def _validate_recipe(config, data: ml_collections.ConfigDict,
                     optim: ml_collections.ConfigDict) -> None:
  require(0 < data.crop_size <= data.resize_size, 'data.crop_size', data.crop_size,
          f'the crop must fit in the {data.resize_size}x{data.resize_size} image '
          '(data.resize_size)')
  require(data.lighting_std >= 0, 'data.lighting_std', data.lighting_std, 'must be >= 0 (0 is off)')
  require(data.workers >= 0, 'data.workers', data.workers, 'must be >= 0')
  require(data.threads >= 1, 'data.threads', data.threads, 'must be >= 1')
  require(data.stats_max_images >= 0, 'data.stats_max_images', data.stats_max_images,
          'must be >= 0')
  if data.source == 'imagefolder':
    require(bool(data.train_dir), 'data.train_dir', data.train_dir,
            'name the training image folder')
    require(bool(data.val_dir), 'data.val_dir', data.val_dir, 'name the validation image folder')
  elif data.source == 'tfds':
    require(bool(data.tfds_name), 'data.tfds_name', data.tfds_name, 'name the TFDS dataset')
  elif data.source == 'packed':
    require(bool(data.packed_dir), 'data.packed_dir', data.packed_dir,
            'name the folder written by python -m alexnet_jax.prepare')
  else:
    for f in ('demo_train_per_class', 'demo_val_per_class', 'demo_image_size'):
      require(data[f] > 0, f'data.{f}', data[f], 'the demo dataset needs a positive value')
  require(optim.base_lr > 0, 'optim.base_lr', optim.base_lr, 'must be positive')
  require(0 <= optim.momentum < 1, 'optim.momentum', optim.momentum, 'must be in [0, 1)')
  require(optim.weight_decay >= 0, 'optim.weight_decay', optim.weight_decay, 'must be >= 0')
  require(optim.fc8_lr_scale > 0, 'optim.fc8_lr_scale', optim.fc8_lr_scale,
          'must be positive (1 is the paper; num_classes / 1000 for fewer classes)')
  require(optim.fc8_lr_scale == 1.0 or config.model.get('arch', 'alexnet') == 'alexnet',
          'optim.fc8_lr_scale', optim.fc8_lr_scale, 'only AlexNet has an fc8; leave it at 1')
  require(0 < optim.lr_factor <= 1, 'optim.lr_factor', optim.lr_factor, 'must be in (0, 1]')
  require(optim.plateau_patience >= 1, 'optim.plateau_patience', optim.plateau_patience,
          'must be >= 1')
  require(optim.max_lr_drops >= 0, 'optim.max_lr_drops', optim.max_lr_drops, 'must be >= 0')
  require(list(optim.step_epochs) == sorted(optim.step_epochs), 'optim.step_epochs',
          optim.step_epochs,
          'must be increasing')
  require(list(optim.step_steps) == sorted(optim.step_steps) and all(
      s > 0 for s in optim.step_steps), 'optim.step_steps', optim.step_steps,
          'must be increasing positive step counts (or () to drop at optim.step_epochs)')
  require(optim.bias_lr_scale > 0, 'optim.bias_lr_scale', optim.bias_lr_scale,
          'must be positive (1 is the paper; Caffe: 2)')
  require(config.batch_size >= 1, 'batch_size', config.batch_size, 'must be positive')
  require(config.num_epochs > 0 or config.num_train_steps > 0, 'num_epochs', config.num_epochs,
          'train for a positive number of epochs (or set num_train_steps)')
  require(config.log_every_steps >= 1, 'log_every_steps', config.log_every_steps, 'must be >= 1')
  require(config.checkpoint_every_steps >= 1, 'checkpoint_every_steps',
          config.checkpoint_every_steps, 'must be >= 1')
  require(config.diagnostics_every_steps >= 0, 'diagnostics_every_steps',
          config.diagnostics_every_steps, 'must be >= 0 (0 is off)')
  require(config.keep_checkpoints >= 1, 'keep_checkpoints', config.keep_checkpoints,
          'must be >= 1')
  require(config.eval_every_steps == -1 or config.eval_every_steps >= 1, 'eval_every_steps',
          config.eval_every_steps, 'use -1 (once per epoch) or a positive step count')
