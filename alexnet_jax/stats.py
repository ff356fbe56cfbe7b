"""The training set's mean image and RGB principal components (Sections 2 and 4.1).

Computed in one streaming pass over (a sample of) the training images after the paper's
offline step, accumulating in float64, so memory stays bounded whatever the dataset's size.
The result is cached as an .npz file; training loads it. Run it ahead of training with

    python -m alexnet_jax.stats --config=configs/imagenette.py
"""

import functools
import hashlib
import os

import grain
import numpy as np
import tqdm
from absl import app, flags, logging
from ml_collections import config_flags

from alexnet_jax import input_pipeline


def compute(source, size: int, max_images: int = 0, seed: int = 0, workers: int = 0,
            threads: int = 8) -> input_pipeline.Normalization:
  """Mean image and eigen-decomposition of the RGB covariance of all pixels.

  Args:
    source: a random-access source of `{'image_bytes', 'label'}` records.
    size: the offline resize size (paper: 256); the mean image is size x size x 3.
    max_images: use a uniformly drawn sample of this many images; 0 uses all of them.
    seed: seeds the sample.
    workers, threads: Grain worker processes and reading threads.
  """
  ds = grain.MapDataset.source(source)
  if 0 < max_images < len(ds):
    ds = ds.seed(seed).shuffle()[:max_images]
  n = len(ds)
  ds = ds.map(functools.partial(input_pipeline.decode_fit, size=size)).batch(64)
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads))
  if workers > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  pixel_sum = np.zeros((size, size, 3), np.float64)
  outer_sum = np.zeros((3, 3), np.float64)
  with tqdm.tqdm(total=n, desc='dataset statistics', unit='img') as bar:
    for batch in it:
      images = batch['image'].astype(np.float64)
      pixel_sum += images.sum(axis=0)
      flat = images.reshape(-1, 3)
      outer_sum += flat.T @ flat
      bar.update(len(images))
  mean_image = pixel_sum / n
  mean_rgb = mean_image.reshape(-1, 3).mean(axis=0)
  cov = outer_sum / (n * size * size) - np.outer(mean_rgb, mean_rgb)
  eigvals, eigvecs = np.linalg.eigh(cov)
  order = np.argsort(eigvals)[::-1]
  return input_pipeline.Normalization(mean_image=mean_image.astype(np.float32),
                                      eigvals=eigvals[order].astype(np.float32),
                                      eigvecs=eigvecs[:, order].astype(np.float32))


def cache_path(cache_dir: str, train_dir: str, size: int, max_images: int, seed: int) -> str:
  """Where the statistics of a training folder are cached: one file per dataset and setting."""
  train_dir = os.path.realpath(os.path.expanduser(train_dir))
  key = hashlib.sha1(f'{train_dir}|{size}|{max_images}|{seed}'.encode()).hexdigest()[:12]
  name = f'{os.path.basename(train_dir.rstrip("/")) or "data"}-{size}px-{key}.npz'
  return os.path.join(os.path.expanduser(cache_dir), 'stats', name)


def save(path: str, norm: input_pipeline.Normalization) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f'{path}.tmp-{os.getpid()}.npz'
  np.savez(tmp, mean_image=norm.mean_image, eigvals=norm.eigvals, eigvecs=norm.eigvecs)
  os.replace(tmp, path)  # never a half-written cache file


def load(path: str) -> input_pipeline.Normalization:
  with np.load(path) as f:
    return input_pipeline.Normalization(mean_image=f['mean_image'], eigvals=f['eigvals'],
                                        eigvecs=f['eigvecs'])


def load_or_compute(source, data_config) -> input_pipeline.Normalization:
  """The cached statistics of `source` (the training set) for this data config, computed once."""
  path = cache_path(data_config.cache_dir, source.root, data_config.resize_size,
                    data_config.stats_max_images, data_config.stats_seed)
  if os.path.exists(path):
    logging.info('Loading dataset statistics from %s', path)
    return load(path)
  logging.info('Computing dataset statistics of %r (cached at %s)', source, path)
  norm = compute(source, data_config.resize_size, data_config.stats_max_images,
                 data_config.stats_seed, data_config.workers, data_config.threads)
  save(path, norm)
  return norm


def main(argv):
  del argv
  from alexnet_jax import data  # pylint: disable=g-import-not-at-top
  config = flags.FLAGS.config
  source = data.train_source(config.data)
  norm = load_or_compute(source, config.data)
  print(f'mean RGB {norm.mean_image.reshape(-1, 3).mean(0).round(2)}, '
        f'eigenvalues {norm.eigvals.round(3)}\neigenvectors (columns)\n{norm.eigvecs.round(4)}')


if __name__ == '__main__':
  # Defined here, not at import, so that importing this module adds no flags to a program.
  config_flags.DEFINE_config_file('config', None, 'The training config whose data to use.')
  flags.mark_flag_as_required('config')
  app.run(main)
