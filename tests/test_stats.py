"""The training set's statistics pass also counts the images that decode: an epoch's size."""

import ml_collections
import numpy as np

from alexnet_jax import sources, stats
from tests.conftest import BROKEN_DIR_DECODABLE, BROKEN_DIR_UNDECODABLE, make_vanish


def _data_config(cache_dir, max_images=0):
  return ml_collections.ConfigDict({
      'source': 'imagefolder', 'cache_dir': str(cache_dir), 'resize_size': 32,
      'stats_max_images': max_images, 'stats_seed': 0, 'workers': 0, 'threads': 2,
      'decoder': 'auto'})


def test_an_epoch_counts_the_images_that_decode(broken_dir, tmp_path):
  src = sources.ImageFolder(str(broken_dir))
  make_vanish(broken_dir)
  assert len(src) == len(BROKEN_DIR_DECODABLE) + len(BROKEN_DIR_UNDECODABLE)
  config = _data_config(tmp_path)
  computed = stats.load_or_compute(src, config)
  assert computed.decodable(len(src)) == len(BROKEN_DIR_DECODABLE)
  cached = stats.load_or_compute(src, config)  # a later run: from the cache, counts and all
  assert cached.decodable(len(src)) == len(BROKEN_DIR_DECODABLE)
  np.testing.assert_array_equal(cached.norm.mean_image, computed.norm.mean_image)


def test_a_sampled_count_is_scaled_to_the_whole_set(broken_dir, tmp_path):
  src = sources.ImageFolder(str(broken_dir))
  make_vanish(broken_dir)
  config = _data_config(tmp_path, max_images=6)
  stats.load_or_compute(src, config)
  with np.load(stats.cache_path(src, config)) as f:
    images, read = int(f['images']), int(f['read'])
  assert read == 6 and 0 < images <= 6
  assert stats.load_or_compute(src, config).decodable(len(src)) == len(src) * images // read


def test_uncounted_statistics_take_the_whole_set(tmp_path):
  """The statistics `prepare` writes beside a packed set count nothing: it packs only images
  that decode."""
  norm = stats.Normalization(mean_image=np.zeros((4, 4, 3), np.float32),
                             eigvals=np.ones(3, np.float32), eigvecs=np.eye(3, dtype=np.float32))
  path = str(tmp_path / 'stats.npz')
  stats.save(path, stats.Computed(norm))
  assert stats.load(path).decodable(1234) == 1234


def test_the_cache_is_opened_once_for_the_statistics_and_the_count(broken_dir, tmp_path,
                                                                   monkeypatch):
  src = sources.ImageFolder(str(broken_dir))
  make_vanish(broken_dir)
  config = _data_config(tmp_path)
  stats.load_or_compute(src, config)  # computed and written
  opened, np_load = [], np.load
  monkeypatch.setattr(np, 'load', lambda path, *a, **k: opened.append(path) or np_load(path))
  assert stats.load_or_compute(src, config).decodable(len(src)) == len(BROKEN_DIR_DECODABLE)
  assert opened == [stats.cache_path(src, config)]
