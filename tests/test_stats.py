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
  assert stats.decodable_images(src, config) == len(src)  # nothing counted yet
  stats.load_or_compute(src, config)
  assert stats.decodable_images(src, config) == len(BROKEN_DIR_DECODABLE)


def test_a_sampled_count_is_scaled_to_the_whole_set(broken_dir, tmp_path):
  src = sources.ImageFolder(str(broken_dir))
  make_vanish(broken_dir)
  config = _data_config(tmp_path, max_images=6)
  stats.load_or_compute(src, config)
  with np.load(stats.cache_path(src, config)) as f:
    images, read = int(f['images']), int(f['read'])
  assert read == 6 and 0 < images <= 6
  assert stats.decodable_images(src, config) == len(src) * images // read


def test_the_cache_is_opened_once_for_the_statistics_and_the_count(broken_dir, tmp_path,
                                                                   monkeypatch):
  src = sources.ImageFolder(str(broken_dir))
  make_vanish(broken_dir)
  config = _data_config(tmp_path)
  opened, np_load = [], np.load
  monkeypatch.setattr(np, 'load', lambda path, *a, **k: opened.append(path) or np_load(path))
  stats.load_or_compute(src, config)  # computed and written
  assert stats.decodable_images(src, config) == len(BROKEN_DIR_DECODABLE) and not opened
  monkeypatch.setattr(stats, '_counted', {})  # a later run: the statistics come from the cache
  stats.load_or_compute(src, config)
  assert stats.decodable_images(src, config) == len(BROKEN_DIR_DECODABLE)
  assert opened == [stats.cache_path(src, config)]
  monkeypatch.setattr(stats, '_counted', {})  # a process that did not load them reads the count
  assert stats.decodable_images(src, config) == len(BROKEN_DIR_DECODABLE)
