"""Shared fixtures: small ImageFolder trees of real JPEG files, written into a temp folder."""

import atexit
import io
import os
import shutil
import tempfile

# One XLA compilation cache for the whole session and every process it starts. Most tests train
# or evaluate the same small networks, and on a CPU compiling them is most of a test's time. It is
# set before jax is imported, in the environment, so pytest-xdist's workers (started by this
# process) and the training runs the tests start as subprocesses all share it. The file lock
# (filelock, in the test extra) keeps a process from reading an entry another is writing.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='alexnet_jax_tests_xla_')
  atexit.register(shutil.rmtree, os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
  os.environ.setdefault('JAX_COMPILATION_CACHE_MAX_SIZE', str(16 << 30))

import ml_collections
import numpy as np
import pytest
from absl import flags
from PIL import Image

from alexnet_jax import drawn_shapes
from configs import default, demo

# pytest is not an absl app: the tests whose pipelines start Grain's worker processes (which read
# absl flags) run with the flags' defaults, as a notebook would after the same call.
flags.FLAGS.mark_as_parsed()

# pytest-xdist (--dist loadfile) hands out whole files in collection order: the longest first,
# so that no worker is left alone with a long file while the other has finished.
_LONGEST_FIRST = ('test_train.py', 'test_demo.py', 'test_sharding.py', 'test_gpu_report.py',
                  'test_faults.py', 'test_model.py', 'test_experiments.py',
                  'test_sweep_cluster.py', 'test_checkpointing.py', 'test_fine_tune.py')


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole


@pytest.fixture(scope='session')
def shapes_dir(tmp_path_factory):
  """The demo's 10 drawn classes as JPEGs: train/ with 16 per class, val/ with 4 per class."""
  return drawn_shapes.ensure(str(tmp_path_factory.mktemp('shapes')), 16, 4, 72, seed=1)


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
  config = demo.small_network(default.get_config(), width=0.125)
  config.name = 'test'
  config.data.train_dir = os.path.join(data_root, 'train')
  config.data.val_dir = os.path.join(data_root, 'val')
  config.data.cache_dir = cache_dir
  config.data.threads = 2
  config.optim.lr_policy = 'constant'
  config.batch_size = 16
  config.num_train_steps = 6
  config.eval_every_steps = 3
  config.log_every_steps = 2
  config.checkpoint_every_steps = 3
  return config


def _jpeg_bytes(image: Image.Image, fmt: str = 'JPEG') -> bytes:
  buf = io.BytesIO()
  image.save(buf, format=fmt, quality=90)
  return buf.getvalue()


# The files of `broken_dir` that decode, in sorted order with their labels, and those that do not.
BROKEN_DIR_DECODABLE = [('n001/cmyk.JPEG', 0), ('n001/damaged.JPEG', 0), ('n001/gray.JPEG', 0),
                        ('n001/png.JPEG', 0), ('n001/rgb.JPEG', 0), ('n002/a.JPEG', 1),
                        ('n002/b.JPEG', 1), ('n002/c.JPEG', 1)]
BROKEN_DIR_UNDECODABLE = ['n001/empty.JPEG', 'n001/garbage.JPEG', 'n001/truncated.JPEG',
                          'n002/vanished.JPEG']


@pytest.fixture
def broken_dir(tmp_path):
  """ImageNet's known oddities in its training layout: CMYK, grayscale, a PNG named .JPEG, damaged
  entropy-coded data, a truncated file, an empty one, garbage, and one that vanishes after the
  folder was listed. Class n001 is red and n002 blue, so a wrong label shows in the pixels."""
  rng = np.random.default_rng(0)
  colour = lambda rgb: Image.fromarray(np.clip(rng.normal(rgb, 20, (300, 400, 3)), 0, 255)
                                       .astype(np.uint8))
  red, blue = (200, 40, 40), (40, 40, 200)
  os.makedirs(tmp_path / 'n001')
  os.makedirs(tmp_path / 'n002')
  good = _jpeg_bytes(colour(red))
  files = {
      'n001/rgb.JPEG': good,
      'n001/cmyk.JPEG': _jpeg_bytes(colour(red).convert('CMYK')),
      'n001/gray.JPEG': _jpeg_bytes(colour(red).convert('L')),
      'n001/png.JPEG': _jpeg_bytes(colour(red), 'PNG'),
      # Bytes overwritten inside the scan data: libjpeg warns and decodes what it can.
      'n001/damaged.JPEG': good[:len(good) // 2] + bytes(200) + good[len(good) // 2 + 200:],
      'n001/truncated.JPEG': good[:len(good) // 3],
      'n001/empty.JPEG': b'',
      'n001/garbage.JPEG': rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(),
  }
  for i in 'abc':
    files[f'n002/{i}.JPEG'] = _jpeg_bytes(colour(blue))
  for name, content in files.items():
    (tmp_path / name).write_bytes(content)
  (tmp_path / 'n002' / 'vanished.JPEG').write_bytes(good)
  return tmp_path


def make_vanish(root) -> None:
  """Removes the file that `broken_dir` says vanishes (call after building the source)."""
  os.remove(os.path.join(root, 'n002', 'vanished.JPEG'))


@pytest.fixture(scope='session')
def trained_workdir(shapes_dir, tmp_path_factory):
  """A finished tiny run on the shapes (checkpoints at steps 3 and 6), for the tools that read
  checkpoints: evaluation, restore and predict, the figures and the notebook."""
  from alexnet_jax import train  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('trained')
  config = small_config(shapes_dir, str(root / 'cache'))
  workdir = str(root / 'run')
  train.train_and_evaluate(config, workdir)
  return workdir
