"""Which dataset a config names: the sources for training and evaluation, with clear errors."""

import os

import ml_collections

from alexnet_jax import demo_data
from alexnet_jax.errors import DataError
from alexnet_jax.sources import ImageFolder


def _dirs(config: ml_collections.ConfigDict) -> tuple[str, str]:
  if config.source == 'demo':
    root = demo_data.ensure(config.demo_dir, config.demo_train_per_class,
                            config.demo_val_per_class, config.demo_image_size)
    return os.path.join(root, 'train'), os.path.join(root, 'val')
  return config.train_dir, config.val_dir


def _missing(config, split: str, path: str) -> DataError:
  return DataError(
      f'No {split} images at {os.path.expanduser(path)!r}. The {config.name!r} config reads an '
      'ImageFolder tree: one sub-folder per class (ILSVRC-2012 synset ids such as n01440764 '
      'for ImageNet), the JPEGs inside. Download ILSVRC-2012 from image-net.org, extract the '
      'training archive into such folders and sort the validation images into the same folders, '
      f'then pass --config.data.train_dir=/path/to/train --config.data.val_dir=/path/to/val '
      '(or set IMAGENET_DIR to the folder holding train/ and val/).')


def train_source(config: ml_collections.ConfigDict) -> ImageFolder:
  path = _dirs(config)[0]
  if not os.path.isdir(os.path.expanduser(path)):
    raise _missing(config, 'training', path)
  return ImageFolder(path)


def eval_source(config: ml_collections.ConfigDict, class_names) -> ImageFolder:
  path = _dirs(config)[1]
  if not os.path.isdir(os.path.expanduser(path)):
    raise _missing(config, 'validation', path)
  return ImageFolder(path, class_names=class_names)
