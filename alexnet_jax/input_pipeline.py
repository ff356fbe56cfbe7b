"""The host's part of the input, in one visible place: source -> decode -> the paper's offline
step -> (training) the drawn augmentation's uint8 patch -> batch (the host/device split:
alexnet_jax.augment).

Built on Grain's `MapDataset`: shuffling and sharding by process are Grain's, and the
augmentation is drawn from each record's position in Grain's shuffled stream (augment.draw), so
the pipeline is deterministic for a seed and its iterator state can be saved in a checkpoint.

Records are read and decoded a batch at a time (simplejpeg and OpenCV write into one scratch
image, whose patch is cut into the batch's array) by `threads` threads of this process, each
working on its own batch (the decoders release the GIL), and, with `workers` > 0, in that many
worker processes. Per batch rather than per image, Grain's bookkeeping costs little beside the
decoding (BENCHMARKS.md).

Skip policy for broken files: a record whose bytes do not decode completely (empty, truncated,
not an image, unreadable, damaged beyond what libjpeg recovers) is left out; everything that
decodes is used, as RGB. Each skipped file is named in the log with the reason, once per pass
over the data. The record leaves with its label and draws, so no label shifts; training batches
stay full because Grain's rebatching forms them after the skip (passing a full batch through
without a copy). Who reads the images counts what is missing: the statistics pass (and so the
epoch length, which counts only images that decode), evaluation (by the `index` of what arrived)
and `alexnet_jax.prepare`.
"""

import functools

import grain
import jax
import numpy as np
from absl import flags, logging

from alexnet_jax import augment, input_workers, transforms
from alexnet_jax.errors import UserError


def read_image(example: dict, size: int, decoder: str = 'auto',
               out: np.ndarray | None = None) -> dict:
  """Decode, then the paper's offline step: shorter side -> size, central size x size patch.

  The image is written into `out` if given. Raises transforms.UndecodableImage, with the reason,
  for a record that does not decode completely.
  """
  if example.get('error'):  # the source could not read the file
    raise transforms.UndecodableImage(example['error'])
  image = transforms.decode(example['image_bytes'], min_size=size, decoder=decoder, out=out)
  out = {'image': transforms.resize_center_crop(image, size, decoder, out),
         'label': np.int32(example['label'])}
  if 'index' in example:
    out['index'] = example['index']
  return out


def decode_resize_crop(example: dict, size: int, decoder: str = 'auto',
                       out: np.ndarray | None = None) -> dict | None:
  """`read_image`, or None (Grain drops it) for a record that does not decode, which is named
  in the log with the reason. Those who consume the images count what is left out."""
  try:
    return read_image(example, size, decoder, out)
  except transforms.UndecodableImage as e:
    logging.warning('Skipping %s: %s. Policy: a file that does not decode completely is left out '
                    'of training, evaluation and statistics.', example.get('name', '?'), e)
    return None


def decode_resize_crop_batch(examples: list[dict], size: int, decoder: str = 'auto') -> dict | None:
  """`decode_resize_crop` of a list of records into one (n, size, size, 3) uint8 array, in
  order: the records that do not decode are left out (None if none decodes). Carries `index` if
  given."""
  images = np.empty((len(examples), size, size, 3), np.uint8)
  kept = []
  for example in examples:
    if (out := decode_resize_crop(example, size, decoder, out=images[len(kept)])) is not None:
      kept.append(out)
  if not kept:
    return None
  batch = {'image': images[:len(kept)], 'label': np.array([k['label'] for k in kept], np.int32)}
  if 'index' in examples[0]:
    batch['index'] = np.array([k['index'] for k in kept], np.int32)
  return batch


def _read_decode(indices: list[int], *, source, size: int, decoder: str,
                 with_index: bool) -> dict | None:
  examples = [source[i] for i in indices]
  if with_index:
    examples = [{**e, 'index': np.int32(i)} for e, i in zip(examples, indices)]
  return decode_resize_crop_batch(examples, size, decoder)


def _read_decode_cut(records: list[tuple[int, int]], *, source, seed: int, size: int, crop: int,
                     flip: bool, lighting_std: float, decoder: str) -> dict | None:
  """The patches of `records` ((position in the stream, index in the source) pairs) as one
  (n, crop, crop, 3) uint8 array, drawn (augment.draw) and cut, with their labels and draws, in
  order; records that do not decode are left out (None if none decodes)."""
  positions = np.array([p for p, _ in records], np.int64)
  drawn = augment.draw(seed, positions, size, crop, flip, lighting_std)
  scratch = np.empty((size, size, 3), np.uint8)
  images = np.empty((len(records), crop, crop, 3), np.uint8)
  kept, labels = [], []
  for k, (_, index) in enumerate(records):
    example = decode_resize_crop(source[int(index)], size, decoder, out=scratch)
    if example is not None:
      augment.cut(example['image'], drawn['top'][k], drawn['left'][k], drawn['flip'][k], crop,
                  out=images[len(kept)])
      kept.append(k)
      labels.append(example['label'])
  if not kept:
    return None
  batch = {key: value[kept] for key, value in drawn.items()}
  batch.update(image=images[:len(kept)], label=np.array(labels, np.int32))
  return batch


def _shard(ds: grain.MapDataset) -> grain.MapDataset:
  """Each JAX process reads a disjoint, interleaved part of the (shuffled) examples."""
  return ds[jax.process_index()::jax.process_count()]


def in_workers(it: grain.IterDataset, workers: int) -> grain.IterDataset:
  """Runs the pipeline so far in `workers` processes (none for 0), each prefetching."""
  if workers <= 0:
    return it
  if not flags.FLAGS.is_parsed():  # Grain's workers read its absl flags
    raise UserError('data.workers > 0 runs Grain worker processes, which read absl flags, and '
                    'none have been parsed here (this is not an absl app: a notebook or a '
                    'script). Call absl.flags.FLAGS.mark_as_parsed() first to use the flags\' '
                    'defaults, or set data.workers=0.')
  return it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers),
                        worker_init_fn=input_workers.init_input_worker)


def _batched(ds: grain.MapDataset, batch_size: int, read, threads: int) -> grain.IterDataset:
  """`read` of each `batch_size` elements of `ds` in one call, by one of `threads` threads.

  The batch's map reads its records itself: through `MapDataset.source`, Grain would record
  metrics for every record, a large share of the cost of decoding it (BENCHMARKS.md).
  """
  ds = ds.batch(batch_size, batch_fn=list).map(read)
  return ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=threads))


def decoded_batches(source, indices: grain.MapDataset, batch_size: int, size: int,
                    decoder: str, threads: int, with_index: bool = False) -> grain.IterDataset:
  """The records at `indices`, `batch_size` at a time, each batch read and decoded into one
  array (smaller where records were skipped)."""
  return _batched(indices, batch_size, functools.partial(
      _read_decode, source=source, size=size, decoder=decoder, with_index=with_index), threads)


def training_stream(num_records: int, seed: int) -> grain.MapDataset:
  """The endless stream of (position, record index) pairs: the records reshuffled epoch after
  epoch, each with its position in the stream, which its augmentation is drawn from."""
  records = grain.MapDataset.range(num_records).seed(seed).shuffle().repeat(None)
  return records.map_with_index(lambda position, index: (position, index))


def train_dataset(source, *, batch_size: int, seed: int, resize: int, crop: int,
                  flip: bool = True, lighting_std: float = 0.1, workers: int = 0,
                  threads: int = 8, decoder: str = 'auto') -> grain.IterDataset:
  """Endless batches of drawn training patches, for `augment.train_inputs`.

  `batch_size` is this process's share of the global batch. Batches are dicts with `image`
  (B, crop, crop, 3) uint8, each the drawn patch of its fitted resize x resize image, reflected
  where drawn; `label` (B,) int32; and the draws `top`, `left` (B,) int32, `flip` (B,) bool and
  `alpha` (B, 3) float32 (augment.draw).
  """
  records = _shard(training_stream(len(source), seed))  # positions drawn before the split
  it = _batched(records, batch_size, functools.partial(
      _read_decode_cut, source=source, seed=seed, size=resize, crop=crop, flip=flip,
      lighting_std=lighting_std, decoder=decoder), threads)
  # Full batches again after skipped records; a full batch passes through uncopied.
  it = grain.experimental.RebatchIterDataset(it, batch_size, drop_remainder=True)
  return in_workers(it, workers)


def start_at(it, batches: int) -> bool:
  """Moves a fresh `train_dataset` iterator to this process's `batches`-th batch, the first of
  the global stream position `batches` x global batch size: how a run resumed on another number
  of processes continues the stream. False where the iterator's state is not the one this
  pipeline builds with data.workers = 0 (worker processes keep their own)."""
  state = it.get_state()
  if set(state) != {'parent', 'batch_idx'} or set(state['parent']) != {'next_index'}:
    return False
  it.set_state({'parent': {'next_index': batches}, 'batch_idx': 0})
  return True


def eval_dataset(source, *, batch_size: int, resize: int, workers: int = 0, threads: int = 8,
                 decoder: str = 'auto') -> grain.IterDataset:
  """One pass over this process's share of the evaluation images, in order.

  Batches are dicts with `image` (B, resize, resize, 3) uint8, the paper's fitted images, whose
  views `augment.eval_inputs` makes on the device; `label` (B,) int32; and `index`, each
  image's position in the source. A batch holds at most `batch_size` images (fewer for the last
  and where files were skipped; `pad_batch` fills it up).
  """
  indices = _shard(grain.MapDataset.range(len(source)))
  it = decoded_batches(source, indices, batch_size, resize, decoder, threads, with_index=True)
  return in_workers(it, workers)


def pad_batch(batch: dict, size: int) -> dict:
  """Pads a short batch to `size` so that every batch has one shape; adds `mask`."""
  n = len(batch['label'])
  padded = {k: np.concatenate([v, np.zeros((size - n,) + v.shape[1:], v.dtype)])
            for k, v in batch.items()}
  padded['mask'] = (np.arange(size) < n).astype(np.float32)
  return padded
