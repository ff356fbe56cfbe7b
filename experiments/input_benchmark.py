"""Training-input throughput: this project's uint8 host path against host-float recipes.

Measures training images/s per core (the loader's images/s over the cores it occupies) and the
bytes per image each loader hands to the device, all in one process and run, the loaders
interleaved so that load from other programs hits them alike:
  baseline      PIL transforms in a torch DataLoader (a multiprocessing.Pool of the same PIL
                code when torch is absent): open, RGB, shorter side -> 256, central 256x256,
                random 227x227 crop, random flip, float32 minus the mean image, PCA lighting;
  float32-jpeg  the host-float recipe in Grain: decode, resize and center-crop as below, then
                the crop, the reflection, the mean subtraction and the lighting per example
                as float32 on the host (this project's input path before the augmentation
                moved to the device; here only as a contender);
  uint8-jpeg    `input_pipeline.train_dataset` over the same JPEG files (ImageFolder): decode,
                the paper's offline step, Grain's draws of the augmentation and the uint8
                227x227 patch cut from the image, reflected where drawn;
  uint8-packed  the same over `alexnet_jax.prepare`'s ArrayRecord shards of them;
  fitted-packed the path before Grain drew the augmentation, as it ran, over the same shards:
                the fitted 256x256 uint8 images, read record by record, the crop and the
                reflection left to the device;
and, on request (--loaders), the alternatives the uint8 path was chosen over:
  uint8-packed-workers    the same in Grain worker processes, one per core, instead of threads;
  uint8-packed-per-image  Grain reading and decoding image by image (`MapDataset.source`, a
                          per-image map, Grain's batch) instead of a batch at a time (the
                          fitted 256x256 images: decoding, without the draws).
The uint8 loaders leave the float arithmetic to the device (alexnet_jax.augment); its cost per
batch on the JAX backend at hand is timed too. --cores sets every loader's parallelism (default: all
cores); the uint8 loaders split it into processes and threads as the config defaults do.

    python experiments/input_benchmark.py --data=../shared/data/imagenette/train \
        --packed=/tmp/imagenette_packed --json=input.json

The packed shards are written first if --packed does not hold them yet. Results: BENCHMARKS.md.
"""

import functools
import gc
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time

import grain
import jax
import numpy as np
from absl import app, flags
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from alexnet_jax import augment, input_pipeline, prepare, sources, stats, transforms  # noqa: E402
from configs import default  # noqa: E402
from experiments import machine  # noqa: E402

flags.DEFINE_string('data', '../shared/data/imagenette/train', 'An ImageFolder of JPEGs.')
flags.DEFINE_string('packed', '/tmp/imagenette_packed', 'Packed shards of --data (made if absent).')
flags.DEFINE_integer('cores', 0, 'Cores each loader may use (its worker processes or threads); '
                     '0: all of this machine\'s.')
flags.DEFINE_integer('batch_size', 128, 'Images per batch.')
flags.DEFINE_integer('batches', 20, 'Batches timed per run, after warm-up batches.')
flags.DEFINE_integer('warmup', 3, 'Batches drawn before timing (worker start-up, prefetch fill).')
flags.DEFINE_integer('repeats', 5, 'Runs of each loader; the median is reported.')
flags.DEFINE_list('loaders', ['baseline', 'float32-jpeg', 'uint8-jpeg', 'fitted-packed',
                              'uint8-packed'],
                  'Which loaders to run.')
flags.DEFINE_bool('decoders', True,
                  'Also time decode + resize_center_crop to 256x256 per decoder, one core.')
flags.DEFINE_string('json', None, 'Also write the results here.')
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
  paths = [folder.name(i) for i in range(len(folder))]
  dataset = PilDataset(paths, folder.labels, norm)
  try:
    import torch  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    return 'torch DataLoader + PIL', _torch_batches(dataset, workers, batch_size)
  except ImportError:
    return 'multiprocessing.Pool + PIL', _pool_batches(dataset, workers, batch_size)


# --- The host-float recipe: the augmentation as float32 on the host, per example, in Grain -----


def host_float_augment(example: dict, rng: np.random.Generator, *, norm, mirrored_mean) -> dict:
  """Crop (and reflect) the uint8 image and the mean image alike, then one float32 pass."""
  height, width = example['image'].shape[:2]
  top, left = int(rng.integers(0, height - CROP + 1)), int(rng.integers(0, width - CROP + 1))
  image = transforms.crop(example['image'], top, left, CROP)
  mean = transforms.crop(norm.mean_image, top, left, CROP)
  if rng.random() < 0.5:
    image = transforms.mirror(image)
    mean = transforms.crop(mirrored_mean, top, mirrored_mean.shape[1] - left - CROP, CROP)
  image = transforms.subtract_mean(image, mean)
  transforms.add_rgb(image, transforms.lighting_shift(norm.eigvals, norm.eigvecs, 0.1, rng))
  return {'image': image, 'label': example['label']}


def host_float_batches(source, norm, batch_size, workers, threads):
  ds = grain.MapDataset.source(source).seed(0).shuffle().repeat(None)
  ds = ds.map(functools.partial(input_pipeline.decode_resize_crop, size=RESIZE))
  mirrored_mean = np.ascontiguousarray(norm.mean_image[:, ::-1])
  ds = ds.random_map(functools.partial(host_float_augment, norm=norm, mirrored_mean=mirrored_mean))
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads))
  return iter(input_pipeline.in_workers(it.batch(batch_size, drop_remainder=True), workers))


# --- This project's pipeline, and the alternatives it was chosen over --------------------------


def uint8_batches(source, batch_size, workers, threads):
  return iter(input_pipeline.train_dataset(source, batch_size=batch_size, seed=0, resize=RESIZE,
                                           crop=CROP, workers=workers, threads=threads))


def fitted_batches(source, batch_size, workers, threads):
  """The training path before Grain drew the augmentation, as it ran: the fitted 256x256
  images, shuffled, read record by record and decoded a batch at a time, in full batches."""
  indices = grain.MapDataset.range(len(source)).seed(0).shuffle().repeat(None)
  it = input_pipeline.decoded_batches(source, indices, batch_size, RESIZE, 'auto', threads)
  it = grain.experimental.RebatchIterDataset(it, batch_size, drop_remainder=True)
  return iter(input_pipeline.in_workers(it, workers))


def per_image_batches(source, batch_size, threads):
  ds = grain.MapDataset.source(source).seed(0).shuffle().repeat(None)
  ds = ds.map(functools.partial(input_pipeline.decode_resize_crop, size=RESIZE))
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads))
  return iter(it.batch(batch_size, drop_remainder=True))


def stop(batches) -> None:
  """Ends a loader's worker processes before the next loader is timed."""
  if hasattr(batches, 'close'):
    batches.close()
  gc.collect()
  time.sleep(1)


def cpu_seconds() -> float:
  """CPU time of this process and its children so far (psutil; NaN without it)."""
  try:
    import psutil  # pylint: disable=g-import-not-at-top
  except ImportError:
    return float('nan')
  total = 0.0
  for p in [psutil.Process()] + psutil.Process().children(recursive=True):
    try:
      total += sum(p.cpu_times()[:2])
    except psutil.Error:  # a worker that just ended
      pass
  return total


def measure(batches, warmup, n, batch_size, shape) -> tuple[float, float, float]:
  """Images per second over n batches after warm-up, images per CPU-second the loader's
  processes used meanwhile (a per-core rate that other programs' load barely moves), and the
  bytes per image of a batch (labels aside); checks each batch's shape."""
  for _ in range(warmup):
    next(batches)
  start, start_cpu = time.perf_counter(), cpu_seconds()
  for _ in range(n):
    batch = next(batches)
    image = batch['image'] if isinstance(batch, dict) else batch[0]
    assert tuple(image.shape) == (batch_size,) + shape, image.shape
  seconds, cpu_used = time.perf_counter() - start, cpu_seconds() - start_cpu
  arrays = ([v for k, v in batch.items() if k != 'label'] if isinstance(batch, dict)
            else [batch[0]])
  per_image = sum(np.asarray(a).nbytes for a in arrays) / batch_size
  # A short run can use less CPU time than the clock tick that counts it: no figure then.
  return (n * batch_size / seconds, n * batch_size / cpu_used if cpu_used > 0 else float('nan'),
          per_image)


def device_augment_cost(norm, batch_size: int, runs: int = 7, calls: int = 5) -> dict:
  """Milliseconds per batch of `augment.train_inputs` (on drawn patches) and of the ten test
  views (on 256x256 images) on the default JAX device, for a uint8 batch already there: the
  device's share of the input work."""
  device = jax.devices()[0]
  fitted = np.random.default_rng(0).integers(0, 256, (batch_size, RESIZE, RESIZE, 3), np.uint8)
  drawn = jax.device_put(augment.drawn_batch(fitted, np.zeros(batch_size), CROP), device)
  images, dev_norm = jax.device_put(fitted, device), jax.device_put(norm, device)
  result = {'backend': f'{device.platform} ({device.device_kind})', 'batch': batch_size}
  for name, fn, data in (('train_inputs', augment.train_inputs, drawn),
                         ('ten_views', lambda x, n: augment.ten_views(x, n, crop=CROP), images)):
    jitted = jax.jit(fn)
    jitted(data, dev_norm).block_until_ready()
    times = []
    for _ in range(runs):
      start = time.perf_counter()
      for _ in range(calls):
        out = jitted(data, dev_norm)
      out.block_until_ready()
      times.append((time.perf_counter() - start) / calls * 1e3)
    result[f'{name}_ms_per_batch'] = statistics.median(times)
  return result


def decoder_table(folder) -> None:
  """decode + resize_center_crop to 256x256 on one core, per decoder, on the files as they are
  and re-encoded at 500x375 (ImageNet's typical size), with the mean pixel difference from
  Pillow."""
  originals = [folder[i]['image_bytes'] for i in range(0, len(folder), max(1, len(folder) // 300))]
  larger = []
  for data in originals[:100]:
    image = Image.fromarray(transforms.decode(data)).resize((500, 375), Image.BICUBIC)
    larger.append(transforms.encode_jpeg(np.asarray(image), 90))
  print(f'\n{"decode + resize_center_crop, one core":28s} {"as stored":>20s} '
        f'{"500x375 re-encoded":>24s}')
  for decoder in transforms.DECODERS:
    cells = []
    for files in (originals, larger):
      run = lambda: [transforms.resize_center_crop(transforms.decode(d, RESIZE, decoder), RESIZE,
                                                   decoder) for d in files]
      best = min(_timed(run) for _ in range(3))
      diff = np.mean([np.abs(a.astype(float) - b).mean() for a, b in zip(run(), [
          transforms.resize_center_crop(transforms.decode(d, RESIZE, 'pillow'), RESIZE, 'pillow')
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
  d = default.get_config().data
  cores = FLAGS.cores or len(os.sched_getaffinity(0))
  if not sources.packed_shards(FLAGS.packed, 'train'):
    d.train_dir = FLAGS.data
    prepare.prepare(d, FLAGS.packed, splits=('train',))
  packed = sources.Packed(FLAGS.packed, 'train')
  norm = stats.load(os.path.join(FLAGS.packed, stats.PACKED_STATS)).norm
  bs = FLAGS.batch_size
  # The uint8 path as training runs it by default, scaled to `cores`.
  workers = min(d.workers, cores)
  threads = max(1, cores // max(1, workers)) if workers else cores
  loaders = FLAGS.loaders
  results = {name: [] for name in loaders}
  per_cpu_second = {name: [] for name in loaders}
  bytes_per_image = {}
  baseline_name, loads = 'baseline', []
  for _ in range(FLAGS.repeats):
    loads.append(os.getloadavg()[0])
    for name in loaders:
      if name == 'baseline':
        baseline_name, batches = baseline_batches(folder, norm, cores, bs)
        shape = (CROP, CROP, 3)
      elif name == 'float32-jpeg':  # as it ran: one worker process per core
        batches, shape = host_float_batches(folder, norm, bs, cores, 1), (CROP, CROP, 3)
      elif name == 'uint8-packed-workers':
        batches, shape = uint8_batches(packed, bs, cores, 1), (CROP, CROP, 3)
      elif name == 'fitted-packed':
        batches, shape = fitted_batches(packed, bs, workers, threads), (RESIZE, RESIZE, 3)
      elif name == 'uint8-packed-per-image':
        batches, shape = per_image_batches(packed, bs, cores), (RESIZE, RESIZE, 3)
      else:
        src = packed if name == 'uint8-packed' else folder
        batches, shape = uint8_batches(src, bs, workers, threads), (CROP, CROP, 3)
      rate, per_cpu, bytes_per_image[name] = measure(batches, FLAGS.warmup, FLAGS.batches, bs,
                                                     shape)
      results[name].append(rate)
      per_cpu_second[name].append(per_cpu)
      stop(batches)
      print(f'  {name}: {rate / cores:.0f} img/s per core, {per_cpu:.0f} per CPU-second',
            flush=True)
  loads.append(os.getloadavg()[0])

  versions = {p: machine.version(p) for p in ('jax', 'grain', 'pillow', 'simplejpeg',
                                              'opencv-python-headless', 'torch', 'numpy')}
  cpu = machine.cpu_model()
  print(f'\nmachine: {cpu}, {os.cpu_count()} cores; python {platform.python_version()}; '
        f'{", ".join(f"{k} {v}" for k, v in versions.items())}; fast decoder in use: '
        f'{transforms.FAST_DECODER}; load average {min(loads):.1f}-{max(loads):.1f}')
  print(f'{len(folder)} JPEGs from {FLAGS.data}; {cores} cores per loader (uint8: {workers} '
        f'worker processes, {threads} threads each); batch {bs}, {FLAGS.batches} batches per '
        f'run after {FLAGS.warmup} warm-up, median of {FLAGS.repeats} runs\n')
  print(f'{"loader":28s} {"img/s per core":>15s} {"vs baseline (same run)":>23s} '
        f'{"img per CPU-second":>19s} {"bytes per image":>16s}')
  rows = []
  for name in loaders:
    per_core = statistics.median(results[name]) / cores
    ratio = None
    if 'baseline' in results:  # the median of the ratios within each repeat
      ratio = float(statistics.median(np.divide(results[name], results['baseline'])))
    label = baseline_name if name == 'baseline' else name
    per_cpu = statistics.median(per_cpu_second[name])
    rows.append({'loader': name, 'description': label, 'images_per_sec_per_core': per_core,
                 'vs_baseline': ratio, 'images_per_cpu_second': per_cpu,
                 'bytes_per_image': bytes_per_image[name], 'per_run_images_per_sec': results[name]})
    print(f'{label:28s} {per_core:15.0f} {f"{ratio:.2f}x" if ratio else "-":>23s} '
          f'{per_cpu:19.0f} {bytes_per_image[name]:16,.0f}')
  if {'uint8-packed', 'fitted-packed'} <= set(results):
    drawn_vs_fitted = float(statistics.median(np.divide(results['uint8-packed'],
                                                        results['fitted-packed'])))
    print(f'\nuint8-packed against fitted-packed (the host drawing and cutting the patches, same '
          f'run): {drawn_vs_fitted:.2f}x the images/s, '
          f'{bytes_per_image["uint8-packed"] / bytes_per_image["fitted-packed"]:.2f}x the bytes')
  cost = device_augment_cost(norm, bs)
  print(f'\nThe device\'s part on {cost["backend"]}, batch {bs}: train_inputs '
        f'{cost["train_inputs_ms_per_batch"]:.1f} ms ({CROP}x{CROP} patches), ten_views '
        f'{cost["ten_views_ms_per_batch"]:.1f} ms ({RESIZE}x{RESIZE} images) per batch')
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump({'rows': rows, 'device_augment': cost, 'cpu': cpu, 'cores': cores,
                 'uint8_workers': workers, 'uint8_threads': threads, 'versions': versions,
                 'python': platform.python_version(), 'load_average': loads,
                 'command': ' '.join(sys.argv), 'batches': FLAGS.batches,
                 'repeats': FLAGS.repeats}, f, indent=1)
  if FLAGS.decoders:
    decoder_table(folder)


if __name__ == '__main__':
  app.run(main)
