"""Which dataset a config names: the sources for training and evaluation, with clear errors.

`data.source` picks the layout (see `alexnet_jax.sources`):
  'imagefolder'  data.train_dir, one folder per synset; data.val_dir the same layout, or, with
                 data.val_labels set, ILSVRC-2012's flat validation folder and its label file;
  'tfds'         data.tfds_name in ArrayRecord format under data.tfds_data_dir;
  'packed'       data.packed_dir, written by `python -m alexnet_jax.prepare`;
  'demo'         the offline demo's drawn shapes.
Evaluation always numbers classes as training does.
"""

import os

import ml_collections

from alexnet_jax import demo_data, sources
from alexnet_jax.errors import DataError

SOURCES = ('imagefolder', 'tfds', 'packed', 'demo')


def _dirs(config: ml_collections.ConfigDict) -> tuple[str, str]:
  if config.source == 'demo':
    root = demo_data.ensure(config.demo_dir, config.demo_train_per_class,
                            config.demo_val_per_class, config.demo_image_size)
    return os.path.join(root, 'train'), os.path.join(root, 'val')
  return config.train_dir, config.val_dir


def _missing(config, split: str, path: str) -> DataError:
  return DataError(
      f'No {split} images at {os.path.abspath(os.path.expanduser(path))!r}. '
      f'data.source={config.source!r} reads an '
      'ImageFolder tree: one sub-folder per class (ILSVRC-2012 synset ids such as n01440764 '
      'for ImageNet), the JPEGs inside. Download ILSVRC-2012 from image-net.org, extract the '
      'training archive into such folders, then pass --config.data.train_dir=/path/to/train '
      '--config.data.val_dir=/path/to/val (the validation images sorted into the same folders, '
      'or the flat folder as distributed with --config.data.val_labels=LABEL_FILE), or set the '
      'variable the config reads to the folder holding train/ and val/: IMAGENET_DIR for '
      'configs/paper.py and one_tower.py, IMAGENETTE_DIR for configs/imagenette.py and '
      'imagenette_small.py. Other layouts: data.source=tfds or packed.')


def train_source(config: ml_collections.ConfigDict):
  """The training split of the dataset `config` (the config's `data` section) names."""
  if config.source == 'tfds':
    return sources.TFDS(config.tfds_name, config.tfds_train_split, config.tfds_data_dir or None)
  if config.source == 'packed':
    return sources.Packed(config.packed_dir, 'train')
  path = _dirs(config)[0]
  if not os.path.isdir(os.path.expanduser(path)):
    raise _missing(config, 'training', path)
  return sources.ImageFolder(path)


def eval_source(config: ml_collections.ConfigDict, class_names):
  """The evaluation split, its labels numbered by the training split's `class_names`."""
  if config.source == 'tfds':
    src = sources.TFDS(config.tfds_name, config.tfds_eval_split, config.tfds_data_dir or None)
  elif config.source == 'packed':
    src = sources.Packed(config.packed_dir, 'val')
  else:
    path = _dirs(config)[1]
    if not os.path.isdir(os.path.expanduser(path)):
      raise _missing(config, 'validation', path)
    if config.source == 'imagefolder' and config.val_labels:
      return sources.ImageNetVal(path, config.val_labels, class_names)
    return sources.ImageFolder(path, class_names=class_names)
  if list(src.class_names) != list(class_names):
    raise DataError(f'{src!r} numbers its classes differently from the training split; both '
                    'splits must come from the same dataset.')
  return src
