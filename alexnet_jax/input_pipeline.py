"""The input pipeline, in one visible place: source -> decode -> the paper's transforms -> batch.

Built on Grain's `MapDataset`: shuffling, per-example random streams and sharding by process
are Grain's, so the pipeline is deterministic for a seed and its iterator state can be saved in
a checkpoint. Each transform is a function of one example from `alexnet_jax.transforms`.
"""

import dataclasses
import functools

import grain
import jax
import numpy as np

from alexnet_jax import transforms


@dataclasses.dataclass(frozen=True)
class Normalization:
  """What training uses from the training set's statistics (see `alexnet_jax.stats`)."""
  mean_image: np.ndarray  # (S, S, 3) float32, S = the resize size
  eigvals: np.ndarray     # (3,) eigenvalues of the RGB covariance, descending
  eigvecs: np.ndarray     # (3, 3) matching eigenvectors as columns


def decode_fit(example: dict, size: int) -> dict:
  """Decode, then the paper's offline step: shorter side -> size, central size x size patch."""
  image = transforms.fit(transforms.decode(example['image_bytes'], min_size=size), size)
  return {'image': image, 'label': example['label']}


def fitted(source, size: int) -> grain.MapDataset:
  """The paper's offline step over a source: shorter side -> size, central size x size patch."""
  return grain.MapDataset.source(source).map(functools.partial(decode_fit, size=size))


def _train_augment(example: dict, rng: np.random.Generator, *, norm: Normalization, crop: int,
                   flip: bool, lighting_std: float, lighting_scale: str) -> dict:
  image = transforms.centre(example['image'], norm.mean_image)
  image = transforms.random_crop(image, crop, rng)
  if flip:
    image = transforms.random_flip(image, rng)
  if lighting_std > 0:
    image = image + transforms.lighting_shift(norm.eigvals, norm.eigvecs, lighting_std, rng,
                                              lighting_scale)
  return {'image': np.ascontiguousarray(image), 'label': example['label']}


def _eval_view(example: dict, *, norm: Normalization, crop: int) -> dict:
  image = transforms.center_crop(transforms.centre(example['image'], norm.mean_image), crop)
  return {'image': np.ascontiguousarray(image), 'label': example['label']}


def _shard(ds: grain.MapDataset) -> grain.MapDataset:
  """Each JAX process reads a disjoint, interleaved part of the (shuffled) examples."""
  return ds[jax.process_index()::jax.process_count()]


def _iterate(ds: grain.MapDataset, workers: int, threads: int) -> grain.IterDataset:
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads))
  if workers > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  return it


def train_dataset(source, norm: Normalization, *, batch_size: int, seed: int, resize: int,
                  crop: int, flip: bool = True, lighting_std: float = 0.1,
                  lighting_scale: str = 'sqrt', workers: int = 0, threads: int = 8
                  ) -> grain.IterDataset:
  """Endless batches of augmented training images, reshuffled every epoch.

  `batch_size` is this process's share of the global batch. Batches are dicts with `image`
  (B, crop, crop, 3) float32 centred on the mean image and `label` (B,) int32.
  """
  ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat(None)
  ds = _shard(ds)
  ds = ds.map(functools.partial(decode_fit, size=resize))
  ds = ds.random_map(functools.partial(_train_augment, norm=norm, crop=crop, flip=flip,
                                       lighting_std=lighting_std, lighting_scale=lighting_scale))
  return _iterate(ds.batch(batch_size, drop_remainder=True), workers, threads)


def eval_dataset(source, norm: Normalization, *, batch_size: int, resize: int, crop: int,
                 workers: int = 0, threads: int = 8) -> grain.IterDataset:
  """One pass over this process's share of the evaluation images, centre crops, in order.

  The last batch may be smaller than `batch_size`.
  """
  ds = _shard(fitted(source, resize))
  ds = ds.map(functools.partial(_eval_view, norm=norm, crop=crop))
  return _iterate(ds.batch(batch_size, drop_remainder=False), workers, threads)
