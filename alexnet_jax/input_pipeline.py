"""The input pipeline, in one visible place: source -> decode -> the paper's transforms -> batch.

Built on Grain's `MapDataset`: shuffling, per-example random streams and sharding by process
are Grain's, so the pipeline is deterministic for a seed and its iterator state can be saved in
a checkpoint. Each transform is a function of one example from `alexnet_jax.transforms`.

Skip policy for broken files: a record whose bytes do not decode completely (empty, truncated,
not an image, unreadable, damaged beyond what libjpeg recovers) is left out; everything that
decodes is used, as RGB. Each skipped file is named once in the log with the reason and the
running count of this process (each worker process keeps its own). The record leaves with its
label, so no label shifts; batches stay full because they are formed after the skip.
"""

import dataclasses
import functools

import grain
import jax
import numpy as np
from absl import flags, logging

from alexnet_jax import transforms


@jax.tree_util.register_dataclass  # a pytree: put on the devices once, passed to the steps
@dataclasses.dataclass(frozen=True)
class Normalization:
  """What training uses from the training set's statistics (see `alexnet_jax.stats`)."""
  mean_image: np.ndarray  # (S, S, 3) float32, S = the resize size
  eigvals: np.ndarray     # (3,) eigenvalues of the RGB covariance, descending
  eigvecs: np.ndarray     # (3, 3) matching eigenvectors as columns


_skipped: dict[str, str] = {}  # name -> reason, for the files this process has left out


def skipped() -> dict[str, str]:
  """The files this process has skipped so far, with the reason for each."""
  return dict(_skipped)


def _skip(name: str, reason: str) -> None:
  if name not in _skipped:
    _skipped[name] = reason
    logging.warning('Skipping %s: %s. Policy: a file that does not decode completely is left out '
                    'of training, evaluation and statistics (%d skipped so far in this process).',
                    name, reason, len(_skipped))


def decode_fit(example: dict, size: int, decoder: str = 'auto') -> dict | None:
  """Decode, then the paper's offline step: shorter side -> size, central size x size patch.

  Returns None for a record that does not decode (Grain drops it), after reporting it.
  """
  name = str(example.get('name', '?'))
  if example.get('error'):
    _skip(name, example['error'])
    return None
  try:
    image = transforms.decode(example['image_bytes'], min_size=size, decoder=decoder)
  except transforms.UndecodableImage as e:
    _skip(name, str(e))
    return None
  out = {'image': transforms.fit(image, size, decoder), 'label': np.int32(example['label'])}
  if 'index' in example:
    out['index'] = example['index']
  return out


def _with_index(index: int, example: dict) -> dict:
  return {**example, 'index': np.int32(index)}


def fitted(source, size: int, decoder: str = 'auto') -> grain.MapDataset:
  """The paper's offline step over a source, each example with its `index` in the source;
  undecodable records become None (dropped)."""
  return grain.MapDataset.source(source).map_with_index(_with_index).map(
      functools.partial(decode_fit, size=size, decoder=decoder))


def _eval_view(example: dict, *, norm: Normalization, crop: int, views: str) -> dict:
  image = transforms.centre(example['image'], norm.mean_image)
  image = transforms.center_crop(image, crop) if views == 'center' else transforms.ten_crop(
      image, crop)
  return {'image': np.ascontiguousarray(image), 'label': example['label'],
          'index': example['index']}


def _shard(ds: grain.MapDataset) -> grain.MapDataset:
  """Each JAX process reads a disjoint, interleaved part of the (shuffled) examples."""
  return ds[jax.process_index()::jax.process_count()]


def in_workers(it: grain.IterDataset, workers: int) -> grain.IterDataset:
  """Runs the pipeline so far in `workers` processes (none for 0), each prefetching."""
  if workers <= 0:
    return it
  if not flags.FLAGS.is_parsed():
    # Grain's workers read absl flags; outside an absl app (a notebook, pytest) use the defaults.
    flags.FLAGS.mark_as_parsed()
  return it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))


def _batched(ds: grain.MapDataset, batch_size: int, drop_remainder: bool, workers: int,
             threads: int) -> grain.IterDataset:
  """Reads with threads (dropping skipped records), batches, then fans out to worker processes."""
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads))
  return in_workers(it.batch(batch_size, drop_remainder=drop_remainder), workers)


def train_dataset(source, *, batch_size: int, seed: int, resize: int, workers: int = 0,
                  threads: int = 8, decoder: str = 'auto') -> grain.IterDataset:
  """Endless batches of training images, reshuffled every epoch, for `augment.train_inputs`.

  `batch_size` is this process's share of the global batch. Batches are dicts with `image`
  (B, resize, resize, 3) uint8, the paper's fitted images, and `label` (B,) int32.
  """
  ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat(None)
  ds = _shard(ds)
  ds = ds.map(functools.partial(decode_fit, size=resize, decoder=decoder))
  return _batched(ds, batch_size, True, workers, threads)


def eval_dataset(source, norm: Normalization | None = None, *, batch_size: int, resize: int,
                 crop: int = 0, views: str = 'center', workers: int = 0, threads: int = 8,
                 decoder: str = 'auto') -> grain.IterDataset:
  """One pass over this process's share of the evaluation images, in order.

  Batches are dicts with `image` (B, resize, resize, 3) uint8, the paper's fitted images, whose
  views `augment.eval_inputs` makes on the device; `label` (B,) int32; and `index`, each
  image's position in the source. The last batch may be smaller than `batch_size`.

  With `norm`, the host cuts the views instead, as float32 centred on the mean image, for
  callers that run the network outside a jitted step: views='center' gives `image` (B, crop,
  crop, 3), the centre patch; views='ten' (B, 10, crop, crop, 3), transforms.ten_crop's patches.
  """
  if views not in ('center', 'ten'):
    raise ValueError(f"views must be 'center' or 'ten', not {views!r}")
  ds = _shard(fitted(source, resize, decoder))
  if norm is not None:
    ds = ds.map(functools.partial(_eval_view, norm=norm, crop=crop, views=views))
  return _batched(ds, batch_size, False, workers, threads)
