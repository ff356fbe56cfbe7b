"""Shared fixtures: small ImageFolder trees of real JPEG files, written into a temp folder."""

import os

import ml_collections
import numpy as np
import pytest
from PIL import Image

from alexnet_jax import demo_data
from configs import default


@pytest.fixture(scope='session')
def shapes_dir(tmp_path_factory):
  """The demo's 10 drawn classes as JPEGs: train/ with 16 per class, val/ with 4 per class."""
  return demo_data.ensure(str(tmp_path_factory.mktemp('shapes')), 16, 4, 72, seed=1)


@pytest.fixture(scope='session')
def photo_dir(tmp_path_factory):
  """Three classes of non-square noise 'photos' in RGB, grayscale and CMYK JPEG."""
  root = tmp_path_factory.mktemp('photos')
  rng = np.random.default_rng(0)
  for c, name in enumerate(('n001', 'n002', 'n003')):
    os.makedirs(root / name)
    for i in range(6):
      h, w = int(rng.integers(200, 400)), int(rng.integers(200, 400))
      pixels = np.clip(rng.normal(60 + 60 * c, 40, (h, w, 3)), 0, 255).astype(np.uint8)
      image = Image.fromarray(pixels)
      if i == 4:
        image = image.convert('L')
      elif i == 5:
        image = image.convert('CMYK')
      image.save(root / name / f'img{i}.JPEG', quality=90)
  return str(root)


def small_config(data_root: str, cache_dir: str) -> ml_collections.ConfigDict:
  """A tiny two-tower AlexNet on the 72-pixel shapes, a few steps long."""
  config = default.get_config()
  config.name = 'test'
  config.model.num_classes = 10
  config.model.width = 0.125
  config.model.init_scheme = 'he'
  config.model.input_scale = 1 / 64
  config.data.train_dir = os.path.join(data_root, 'train')
  config.data.val_dir = os.path.join(data_root, 'val')
  config.data.resize_size = 72
  config.data.crop_size = 67
  config.data.cache_dir = cache_dir
  config.data.threads = 2
  config.optim.lr_policy = 'constant'
  config.batch_size = 16
  config.num_train_steps = 6
  config.eval_every_steps = 3
  config.log_every_steps = 2
  config.checkpoint_every_steps = 3
  return config
