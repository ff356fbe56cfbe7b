"""The training set's mean image and RGB principal components (Sections 2 and 4.1).

Computed in one streaming pass over (a sample of) the training images of any source after the
paper's offline step, accumulating in float64, so memory stays bounded whatever the dataset's
size. The result is cached as an .npz file (a packed dataset carries its own); training loads
it. Run it ahead of training with

    python -m alexnet_jax.stats --config=configs/imagenette.py
"""

import dataclasses
import functools
import hashlib
import os
from typing import NamedTuple

import grain
import jax
import numpy as np
import tqdm
from absl import app, flags, logging
from ml_collections import config_flags

from alexnet_jax.errors import DataError

PACKED_STATS = 'stats.npz'  # the statistics `alexnet_jax.prepare` writes beside packed shards


@jax.tree_util.register_dataclass  # a pytree: put on the devices once, passed to the steps
@dataclasses.dataclass(frozen=True)
class Normalization:
  """What training uses from the training set's statistics."""
  mean_image: np.ndarray  # (S, S, 3) float32, S = the resize size
  eigvals: np.ndarray     # (3,) eigenvalues of the RGB covariance, descending
  eigvecs: np.ndarray     # (3, 3) matching eigenvectors as columns


class Accumulator:
  """Running sums for the mean image and the RGB covariance; memory is one image, whatever n."""

  def __init__(self, size: int):
    self.count = 0
    self.pixel_sum = np.zeros((size, size, 3), np.float64)
    self.outer_sum = np.zeros((3, 3), np.float64)

  def add(self, images: np.ndarray) -> None:
    """Adds a batch of (B, size, size, 3) images."""
    images = images.astype(np.float64)
    self.count += len(images)
    self.pixel_sum += images.sum(axis=0)
    flat = images.reshape(-1, 3)
    self.outer_sum += flat.T @ flat

  def result(self) -> Normalization:
    """Mean image and eigen-decomposition of the RGB covariance of all pixels added."""
    if not self.count:
      raise DataError('No image of the training set could be decoded, so there are no '
                      'statistics to compute; the log names the files that were skipped.')
    n, size = self.count, self.pixel_sum.shape[0]
    mean_image = self.pixel_sum / n
    mean_rgb = mean_image.reshape(-1, 3).mean(axis=0)
    cov = self.outer_sum / (n * size * size) - np.outer(mean_rgb, mean_rgb)
    eigvals, eigvecs = np.linalg.eigh(cov)
    order = np.argsort(eigvals)[::-1]
    return Normalization(mean_image=mean_image.astype(np.float32),
                         eigvals=eigvals[order].astype(np.float32),
                         eigvecs=eigvecs[:, order].astype(np.float32))


class Computed(NamedTuple):
  """A statistics pass: the statistics, and how many of the images it read decoded (-1: not
  counted, as in the statistics `prepare` writes beside a packed set)."""
  norm: Normalization
  images: int = -1  # decoded
  read: int = -1

  def decodable(self, total: int) -> int:
    """How many of the `total` images of the set decode: what an epoch holds. Estimated from
    the sample when the pass read one; `total` where nothing was counted (`prepare` packs only
    images that decode)."""
    if self.read <= 0 or self.images == self.read:
      return total
    return int(total * self.images / self.read)


def compute(source, size: int, max_images: int = 0, seed: int = 0, workers: int = 0,
            threads: int = 8, decoder: str = 'auto') -> Computed:
  """Mean image and RGB PCA of (a sample of) any source, in one streaming pass, and how many of
  the images read decoded.

  Args:
    source: a random-access source of `{'image_bytes', 'label', 'name'}` records.
    size: the offline resize size (paper: 256); the mean image is size x size x 3.
    max_images: use a uniformly drawn sample of this many images; 0 uses all of them.
    seed: seeds the sample.
    workers, threads: Grain worker processes and reading threads.
    decoder: 'auto' or 'pillow' (see `alexnet_jax.transforms`).
  """
  # Reading images needs the input pipeline; a saved Normalization (checkpoints) does not.
  from alexnet_jax import input_pipeline  # pylint: disable=import-outside-toplevel
  ds = grain.MapDataset.source(source)
  if 0 < max_images < len(ds):
    ds = ds.seed(seed).shuffle()[:max_images]
  n = len(ds)
  ds = ds.map(functools.partial(input_pipeline.decode_resize_crop, size=size, decoder=decoder))
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads)).batch(64)
  it = input_pipeline.in_workers(it, workers)
  acc = Accumulator(size)
  with tqdm.tqdm(total=n, desc='dataset statistics', unit='img') as bar:
    for batch in it:
      acc.add(batch['image'])
      bar.update(len(batch['image']))
  if acc.count < n:
    logging.warning('Dataset statistics: %d of %d images were skipped as undecodable (named '
                    'above); the statistics cover the other %d.', n - acc.count, n, acc.count)
  return Computed(acc.result(), acc.count, n)


def cache_path(source, data_config) -> str:
  """Where the statistics of the training set `source` are cached for the data config: one file
  per dataset and the settings that change them."""
  size, max_images, seed = (data_config.resize_size, data_config.stats_max_images,
                            data_config.stats_seed)
  key = hashlib.sha1(f'{source.key}|{size}|{max_images}|{seed}'.encode()).hexdigest()[:12]
  base = os.path.basename(source.key.rstrip('/').split(':')[-1]).replace('@', '_') or 'data'
  return os.path.join(os.path.expanduser(data_config.cache_dir), 'stats',
                      f'{base}-{size}px-{key}.npz')


def save(path: str, computed: Computed) -> None:
  """Writes the statistics and their counts."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f'{path}.tmp-{os.getpid()}.npz'
  norm = computed.norm
  np.savez(tmp, mean_image=norm.mean_image, eigvals=norm.eigvals, eigvecs=norm.eigvecs,
           images=computed.images, read=computed.read)
  os.replace(tmp, path)  # never a half-written cache file


def load(path: str) -> Computed:
  with np.load(path) as f:
    counts = (int(f['images']), int(f['read'])) if 'read' in f else ()
    return Computed(Normalization(mean_image=f['mean_image'], eigvals=f['eigvals'],
                                  eigvecs=f['eigvecs']), *counts)


def load_or_compute(source, data_config) -> Computed:
  """The cached statistics of `source` (the training set) for this data config, computed once,
  with the count of the images that decode."""
  beside = os.path.join(getattr(source, 'root', ''), PACKED_STATS)
  if data_config.source == 'packed' and os.path.exists(beside):
    packed = load(beside)  # written by alexnet_jax.prepare over the whole training split
    if packed.norm.mean_image.shape[0] == data_config.resize_size:
      logging.info('Loading dataset statistics from %s', beside)
      return packed
  path = cache_path(source, data_config)
  if os.path.exists(path):
    logging.info('Loading dataset statistics from %s', path)
    return load(path)
  logging.info('Computing dataset statistics of %r (cached at %s)', source, path)
  computed = compute(source, data_config.resize_size, data_config.stats_max_images,
                     data_config.stats_seed, data_config.workers, data_config.threads,
                     data_config.decoder)
  save(path, computed)
  return computed


def main(argv):
  from alexnet_jax import cli, sources  # pylint: disable=g-import-not-at-top
  cli.start(argv)
  config = flags.FLAGS.config
  with cli.one_line_errors():
    norm = load_or_compute(sources.train_source(config.data), config.data).norm
  print(f'mean RGB {norm.mean_image.reshape(-1, 3).mean(0).round(2)}, '
        f'eigenvalues {norm.eigvals.round(3)}\neigenvectors (columns)\n{norm.eigvecs.round(4)}')


if __name__ == '__main__':
  # Defined here, not at import, so that importing this module adds no flags to a program.
  config_flags.DEFINE_config_file('config', None, 'The training config whose data to use.')
  flags.mark_flag_as_required('config')
  app.run(main)
