"""Training-input throughput: this project's Grain pipeline against the usual PyTorch recipe.

Measures training images/s per worker core, all in one process and run, interleaved, on
  baseline     PIL transforms in a torch DataLoader (a multiprocessing.Pool of the same PIL
               code when torch is absent): open, RGB, shorter side -> 256, central 256x256,
               random 227x227 crop, random flip, float32 minus the mean image, PCA lighting;
  jpeg         `input_pipeline.train_dataset` over the same JPEG files (ImageFolder);
  jpeg-pillow  the same with data.decoder='pillow' (Pillow draft decoding and resizing);
  packed       the same pipeline over `alexnet_jax.prepare`'s ArrayRecord shards of them.
Each loader runs in --workers worker processes and the main process only collects batches.

    python experiments/input_benchmark.py --data=../shared/data/imagenette/train \
        --packed=/tmp/imagenette_packed --workers=2

The packed shards are written first if --packed does not hold them yet. Results: BENCHMARKS.md.
"""

import gc
import importlib.metadata
import multiprocessing
import os
import platform
import statistics
import sys
import time

import numpy as np
from absl import app, flags
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from alexnet_jax import input_pipeline, prepare, sources, stats, transforms  # noqa: E402
from configs import default  # noqa: E402

flags.DEFINE_string('data', '../shared/data/imagenette/train', 'An ImageFolder of JPEGs.')
flags.DEFINE_string('packed', '/tmp/imagenette_packed', 'Packed shards of --data (made if absent).')
flags.DEFINE_integer('workers', 2, 'Worker processes per loader (= the cores the figure is per).')
flags.DEFINE_integer('threads', 1, 'Grain reading threads per worker.')
flags.DEFINE_integer('batch_size', 128, 'Images per batch.')
flags.DEFINE_integer('batches', 20, 'Batches timed per run, after warm-up batches.')
flags.DEFINE_integer('warmup', 3, 'Batches drawn before timing (worker start-up, prefetch fill).')
flags.DEFINE_integer('repeats', 3, 'Runs of each loader; the median is reported.')
flags.DEFINE_string('loaders', 'baseline,jpeg,jpeg-pillow,packed', 'Which loaders to run.')
flags.DEFINE_bool('decoders', True, 'Also time decode + fit to 256x256 per decoder, one core.')
FLAGS = flags.FLAGS

RESIZE, CROP = 256, 227


# --- The baseline: PIL transforms as most PyTorch training scripts write them -----------------


class PilDataset:
  """torchvision-style: Resize(256) + CenterCrop(256), RandomCrop(227), RandomHorizontalFlip,
  then to float32 with the mean image subtracted and the PCA lighting added."""

  def __init__(self, paths, labels, norm):
    self.paths, self.labels, self.norm = paths, labels, norm

  def __len__(self):
    return len(self.paths)

  def __getitem__(self, i):
    rng = np.random.default_rng()
    image = Image.open(self.paths[i]).convert('RGB')
    w, h = image.size
    s = RESIZE / min(w, h)
    image = image.resize((max(RESIZE, round(w * s)), max(RESIZE, round(h * s))), Image.BILINEAR)
    left, top = (image.width - RESIZE) // 2, (image.height - RESIZE) // 2
    image = image.crop((left, top, left + RESIZE, top + RESIZE))
    y, x = rng.integers(0, RESIZE - CROP + 1, 2)
    image = image.crop((x, y, x + CROP, y + CROP))
    if rng.random() < 0.5:
      image = image.transpose(Image.FLIP_LEFT_RIGHT)
    pixels = np.asarray(image, np.float32) - self.norm.mean_image[y:y + CROP, x:x + CROP]
    pixels += self.norm.eigvecs @ (rng.normal(0, 0.1, 3) * np.sqrt(self.norm.eigvals))
    return pixels, self.labels[i]


def _torch_batches(dataset, workers, batch_size):
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(1)
  loader = torch.utils.data.DataLoader(
      dataset, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
      persistent_workers=True, prefetch_factor=2,
      worker_init_fn=lambda _: torch.set_num_threads(1))
  while True:
    yield from loader


_pool_dataset = None


def _pool_item(i):
  return _pool_dataset[i]


def _pool_batches(dataset, workers, batch_size):
  global _pool_dataset
  _pool_dataset = dataset
  with multiprocessing.get_context('fork').Pool(workers) as pool:
    rng = np.random.default_rng(0)
    while True:
      for start in range(0, len(dataset) - batch_size + 1, batch_size):
        order = rng.permutation(len(dataset))[start:start + batch_size]
        items = pool.map(_pool_item, order, chunksize=8)
        yield np.stack([x for x, _ in items]), np.array([y for _, y in items])


def baseline_batches(folder, norm, workers, batch_size):
  dataset = PilDataset([str(p) for p in folder._paths], folder.labels, norm)  # pylint: disable=protected-access
  try:
    import torch  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    return 'torch DataLoader + PIL', _torch_batches(dataset, workers, batch_size)
  except ImportError:
    return 'multiprocessing.Pool + PIL', _pool_batches(dataset, workers, batch_size)


# --- This project's pipeline -----------------------------------------------------------------


def grain_batches(source, norm, workers, threads, batch_size, decoder):
  return iter(input_pipeline.train_dataset(source, norm, batch_size=batch_size, seed=0,
                                           resize=RESIZE, crop=CROP, workers=workers,
                                           threads=threads, decoder=decoder))


def stop(batches) -> None:
  """Ends a loader's worker processes before the next loader is timed."""
  if hasattr(batches, 'close'):
    batches.close()
  gc.collect()
  time.sleep(1)


def measure(batches, warmup, n, batch_size) -> float:
  """Images per second over n batches after warm-up; checks each batch's shape."""
  for _ in range(warmup):
    next(batches)
  start = time.perf_counter()
  for _ in range(n):
    batch = next(batches)
    image = batch['image'] if isinstance(batch, dict) else batch[0]
    assert tuple(image.shape) == (batch_size, CROP, CROP, 3), image.shape
  return n * batch_size / (time.perf_counter() - start)


def decoder_table(folder) -> None:
  """decode + fit to 256x256 on one core, per decoder, on the files as they are and re-encoded
  at 500x375 (ImageNet's typical size), with the mean pixel difference from Pillow."""
  originals = [folder[i]['image_bytes'] for i in range(0, len(folder), max(1, len(folder) // 300))]
  larger = []
  for data in originals[:100]:
    image = Image.fromarray(transforms.decode(data)).resize((500, 375), Image.BICUBIC)
    larger.append(transforms.encode_jpeg(np.asarray(image), 90))
  print(f'\n{"decode + fit, one core":28s} {"as stored":>20s} {"500x375 re-encoded":>24s}')
  for decoder in transforms.DECODERS:
    cells = []
    for files in (originals, larger):
      run = lambda: [transforms.fit(transforms.decode(d, RESIZE, decoder), RESIZE, decoder)
                     for d in files]
      best = min(_timed(run) for _ in range(3))
      diff = np.mean([np.abs(a.astype(float) - b).mean() for a, b in zip(run(), [
          transforms.fit(transforms.decode(d, RESIZE, 'pillow'), RESIZE, 'pillow')
          for d in files])])
      cells.append(f'{len(files) / best:7.0f}/s (diff {diff:.2f})')
    print(f'{decoder:28s} {cells[0]:>20s} {cells[1]:>24s}')


def _timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def main(argv):
  del argv
  folder = sources.ImageFolder(FLAGS.data)
  if not sources.packed_shards(FLAGS.packed, 'train'):
    d = default.get_config().data
    d.train_dir, d.workers, d.threads = FLAGS.data, FLAGS.workers, FLAGS.threads
    prepare.prepare(d, FLAGS.packed, splits=('train',))
  packed = sources.Packed(FLAGS.packed, 'train')
  norm = stats.load(os.path.join(FLAGS.packed, stats.PACKED_STATS))
  w, bs = FLAGS.workers, FLAGS.batch_size
  loaders = FLAGS.loaders.split(',')
  results = {name: [] for name in loaders}
  baseline_name = 'baseline'
  for _ in range(FLAGS.repeats):
    for name in loaders:  # interleaved, so load from other programs hits every loader alike
      if name == 'baseline':
        baseline_name, batches = baseline_batches(folder, norm, w, bs)
      else:
        src = packed if name == 'packed' else folder
        decoder = 'pillow' if name == 'jpeg-pillow' else 'auto'
        batches = grain_batches(src, norm, w, FLAGS.threads, bs, decoder)
      results[name].append(measure(batches, FLAGS.warmup, FLAGS.batches, bs))
      stop(batches)
      print(f'  {name}: {results[name][-1] / w:.0f} img/s per worker core', flush=True)

  versions = ', '.join(f'{p} {_version(p)}' for p in (
      'jax', 'grain', 'pillow', 'simplejpeg', 'opencv-python-headless', 'torch', 'numpy'))
  print(f'\nmachine: {_cpu()}, {os.cpu_count()} cores; python {platform.python_version()}; '
        f'{versions}; fast decoder in use: {transforms.FAST_DECODER}')
  print(f'{len(folder)} JPEGs from {FLAGS.data}; {w} workers, batch {bs}, {FLAGS.batches} '
        f'batches per run after {FLAGS.warmup} warm-up, median of {FLAGS.repeats} runs\n')
  print(f'{"loader":28s} {"img/s per core":>15s} {"vs baseline (same run)":>23s} '
        f'{"ImageNet epoch, 16 cores":>25s}')
  for name in loaders:
    per_core = statistics.median(results[name]) / w
    label = baseline_name if name == 'baseline' else f'Grain {name}'
    ratio = '-'
    if 'baseline' in results:  # the median of the ratios within each repeat
      ratio = f'{statistics.median(np.divide(results[name], results["baseline"])):.2f}x'
    epoch_min = 1281167 / (per_core * 16) / 60
    print(f'{label:28s} {per_core:15.0f} {ratio:>23s} {epoch_min:21.1f} min')
  if FLAGS.decoders:
    decoder_table(folder)


def _version(package: str) -> str:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return 'absent'


def _cpu() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      return next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
  except (OSError, StopIteration):
    return platform.machine()


if __name__ == '__main__':
  app.run(main)
