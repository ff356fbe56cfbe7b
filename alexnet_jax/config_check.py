"""Checks a config before any work starts, so a wrong value is named at once, not mid-run."""

import ml_collections
from absl import logging

from alexnet_jax.errors import ConfigError

_CHOICES = {
    'model.activation': ('relu', 'tanh'),
    'model.dtype': ('float32', 'bfloat16'),
    'data.source': ('imagefolder', 'tfds', 'packed', 'demo'),
    'data.decoder': ('auto', 'pillow'),
    'data.lighting_scale': ('sqrt', 'eigval'),
    'optim.lr_policy': ('plateau', 'step', 'constant'),
}


def _get(config, dotted):
  node = config
  for part in dotted.split('.'):
    node = node[part]
  return node


def _require(ok: bool, field: str, value, what: str):
  if not ok:
    raise ConfigError(f'Config field {field} = {value!r} is invalid: {what}. Set it with '
                      f'--config.{field}=VALUE or in the config file.')


def spatial_sizes(crop: int, conv1_padding: int, pool_window: int, pool_stride: int) -> list[int]:
  """Feature-map sides after conv1, pool1, pool2 and pool5 (paper: 55, 27, 13, 6)."""
  conv1 = (crop + 2 * conv1_padding - 11) // 4 + 1
  pool = lambda s: (s - pool_window) // pool_stride + 1
  p1 = pool(conv1)
  p2 = pool(p1)  # conv2..conv5 keep the size (padding 2 for 5x5, 1 for 3x3)
  return [conv1, p1, p2, pool(p2)]


_ALEXNET_CHOICES = {
    'model.towers': (1, 2),
    'model.init_scheme': ('paper', 'he'),
}
# Conv layers an ablation may remove: Section 7, "removing any of the middle layers results in a
# loss of about 2% for the top-1 performance".
MIDDLE_CONVS = (2, 3, 4)


def _check_choices(config, choices: dict) -> None:
  for field, allowed in choices.items():
    value = _get(config, field)
    _require(value in allowed, field, value, f'choose one of {", ".join(map(repr, allowed))}')


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first field whose value cannot work."""
  _check_choices(config, _CHOICES)
  m, d, o = config.model, config.data, config.optim
  arch = m.get('arch', 'alexnet')
  _require(arch in ('alexnet', 'cifar_cnn'), 'model.arch', arch,
           "choose 'alexnet' (the paper's network) or 'cifar_cnn' (its CIFAR-10 net)")
  _require(m.num_classes >= 2, 'model.num_classes', m.num_classes, 'need at least 2 classes')
  if arch == 'alexnet':
    _check_choices(config, _ALEXNET_CHOICES)
    _validate_alexnet(m, d)
  _validate_recipe(config, d, o)


def _validate_alexnet(m: ml_collections.ConfigDict, d: ml_collections.ConfigDict) -> None:
  _require(len(m.conv_features) == 5, 'model.conv_features', m.conv_features,
           'give the kernel counts of conv1..conv5 (five numbers)')
  _require(m.width > 0, 'model.width', m.width, 'the width multiplier must be positive')
  for i, n in enumerate(m.conv_features):
    scaled = max(m.towers, round(n * m.width))
    _require(scaled % m.towers == 0, 'model.conv_features', m.conv_features,
             f'conv{i + 1} has {scaled} kernels after model.width={m.width}, which does not '
             f'split into {m.towers} towers')
  _require(0 <= m.dropout_rate < 1, 'model.dropout_rate', m.dropout_rate, 'must be in [0, 1)')
  _require(m.lrn_n >= 1, 'model.lrn_n', m.lrn_n, 'the LRN window must hold at least 1 channel')
  _require(m.pool_window >= 1 and m.pool_stride >= 1, 'model.pool_window', m.pool_window,
           'pooling window and stride must be positive')
  _require(m.init_std > 0, 'model.init_std', m.init_std, 'must be positive')
  _require(m.positive_bias >= 0, 'model.positive_bias', m.positive_bias,
           'must be >= 0 (the paper: 1; Caffe: 0.1)')
  _require(set(m.skip_convs) <= set(MIDDLE_CONVS), 'model.skip_convs', m.skip_convs,
           f'only the middle conv layers {MIDDLE_CONVS} can be removed')
  sizes = spatial_sizes(d.crop_size, m.conv1_padding, m.pool_window, m.pool_stride)
  _require(min(sizes) >= 1, 'data.crop_size', d.crop_size,
           f'feature maps would shrink to nothing ({sizes}) with model.conv1_padding='
           f'{m.conv1_padding} and {m.pool_window}x{m.pool_window}/{m.pool_stride} pooling')
  if (d.crop_size, m.conv1_padding) in ((224, 0), (227, 2)):
    logging.warning('data.crop_size=%d with model.conv1_padding=%d gives %dx%d conv1 maps, not '
                    'the paper\'s 55x55: use 227/0 (default) or 224/2.', d.crop_size,
                    m.conv1_padding, sizes[0], sizes[0])


def _validate_recipe(config, d: ml_collections.ConfigDict, o: ml_collections.ConfigDict) -> None:
  _require(0 < d.crop_size <= d.resize_size, 'data.crop_size', d.crop_size,
           f'the crop must fit in the {d.resize_size}x{d.resize_size} image (data.resize_size)')
  _require(d.lighting_std >= 0, 'data.lighting_std', d.lighting_std, 'must be >= 0 (0 is off)')
  _require(d.workers >= 0, 'data.workers', d.workers, 'must be >= 0')
  _require(d.threads >= 1, 'data.threads', d.threads, 'must be >= 1')
  _require(d.stats_max_images >= 0, 'data.stats_max_images', d.stats_max_images, 'must be >= 0')
  if d.source == 'imagefolder':
    _require(bool(d.train_dir), 'data.train_dir', d.train_dir, 'name the training image folder')
    _require(bool(d.val_dir), 'data.val_dir', d.val_dir, 'name the validation image folder')
  elif d.source == 'tfds':
    _require(bool(d.tfds_name), 'data.tfds_name', d.tfds_name, 'name the TFDS dataset')
  elif d.source == 'packed':
    _require(bool(d.packed_dir), 'data.packed_dir', d.packed_dir,
             'name the folder written by python -m alexnet_jax.prepare')
  else:
    for f in ('demo_train_per_class', 'demo_val_per_class', 'demo_image_size'):
      _require(d[f] > 0, f'data.{f}', d[f], 'the demo dataset needs a positive value')
  _require(o.base_lr > 0, 'optim.base_lr', o.base_lr, 'must be positive')
  _require(0 <= o.momentum < 1, 'optim.momentum', o.momentum, 'must be in [0, 1)')
  _require(o.weight_decay >= 0, 'optim.weight_decay', o.weight_decay, 'must be >= 0')
  _require(o.fc8_lr_scale > 0, 'optim.fc8_lr_scale', o.fc8_lr_scale,
           'must be positive (1 is the paper; num_classes / 1000 for fewer classes)')
  _require(o.fc8_lr_scale == 1.0 or config.model.get('arch', 'alexnet') == 'alexnet',
           'optim.fc8_lr_scale', o.fc8_lr_scale, 'only AlexNet has an fc8; leave it at 1')
  _require(0 < o.lr_factor <= 1, 'optim.lr_factor', o.lr_factor, 'must be in (0, 1]')
  _require(o.plateau_patience >= 1, 'optim.plateau_patience', o.plateau_patience, 'must be >= 1')
  _require(o.max_lr_drops >= 0, 'optim.max_lr_drops', o.max_lr_drops, 'must be >= 0')
  _require(list(o.step_epochs) == sorted(o.step_epochs), 'optim.step_epochs', o.step_epochs,
           'must be increasing')
  _require(config.batch_size >= 1, 'batch_size', config.batch_size, 'must be positive')
  _require(config.num_epochs > 0 or config.num_train_steps > 0, 'num_epochs', config.num_epochs,
           'train for a positive number of epochs (or set num_train_steps)')
  _require(config.log_every_steps >= 1, 'log_every_steps', config.log_every_steps, 'must be >= 1')
  _require(config.checkpoint_every_steps >= 1, 'checkpoint_every_steps',
           config.checkpoint_every_steps, 'must be >= 1')
  _require(config.diagnostics_every_steps >= 0, 'diagnostics_every_steps',
           config.diagnostics_every_steps, 'must be >= 0 (0 is off)')
  _require(config.keep_checkpoints >= 1, 'keep_checkpoints', config.keep_checkpoints,
           'must be >= 1')
  _require(config.eval_every_steps == -1 or config.eval_every_steps >= 1, 'eval_every_steps',
           config.eval_every_steps, 'use -1 (once per epoch) or a positive step count')
