"""Train-step throughput of AlexNet: this project's JAX step against PyTorch, and against the
device's peak.

    python experiments/step_benchmark.py                 # the paper's net, batch 128, 5 x 5 steps
    python experiments/step_benchmark.py --runs=5 --steps=10 --json=step.json
    python experiments/step_benchmark.py --implementation=each   # each operation's other form
    python experiments/step_benchmark.py --data=../shared/data/imagenette/train   # + end to end
    python experiments/step_benchmark.py --config.model.width=0.25 --config.data.crop_size=99

The network is the config's (default: configs/default.py, the paper's: two towers as grouped
convolutions, LRN within each tower, dropout, 1000 classes, 227x227), trained by the project's
jitted `train_step` with the paper's update rule, on a synthetic batch already on the device so
that only the step is timed. PyTorch runs the same layers and rule (eager and torch.compile; on
a GPU with channels-last and bf16 autocast). Contenders are timed in turn within each run and
the median over runs is reported beside PyTorch eager from the same process.

FLOPs are counted from the layer shapes (alexnet_jax.flops: 2 per multiply-add of conv1..fc8,
backward twice the forward less conv1's input gradient), the same on every backend; XLA's cost
analysis leaves out the cuDNN convolutions on a GPU. The fraction of peak divides by the
device's dense peak for the arithmetic actually used: bf16, or for float32 TF32 or full float32
depending on jax_default_matmul_precision and the GPU (experiments/peaks.py).

--implementation adds contenders computed another way (alexnet_jax/implementations.py): the
same mathematics, e.g. 'plain', or 'auto,lrn=autodiff'; 'each' is 'plain' and the backend's
choice with one operation's form changed, for every operation. --data adds the step fed by the real
input pipeline (an ImageFolder of JPEGs or a `prepare`d packed folder) for each dtype: the
end-to-end rate.
"""

import dataclasses
import functools
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
# pylint: disable=g-import-not-at-top
from alexnet_jax import (augment, flops, implementations, input_pipeline, optim, sources, stats,
                         train)
from alexnet_jax.model import create_model
from alexnet_jax.train import TrainState, train_step
from experiments import machine, peaks
# pylint: enable=g-import-not-at-top

_CONFIG = config_flags.DEFINE_config_file(
    'config', os.path.join(REPO, 'configs', 'default.py'),
    'The network (config.model), image size (config.data) and batch (config.batch_size).')
_BATCH = flags.DEFINE_integer('batch', None, 'Images per step (default: config.batch_size).')
_STEPS = flags.DEFINE_integer('steps', 5, 'Timed steps per run.')
_RUNS = flags.DEFINE_integer('runs', 5, 'Timed runs; the median is reported.')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed steps after compilation.')
_DTYPES = flags.DEFINE_list('dtypes', ['float32', 'bfloat16'], 'JAX compute dtypes.')
_IMPLEMENTATIONS = flags.DEFINE_multi_string(
    'implementation', [], 'Also time the step computed this way (implementations.choose: plain, '
    'auto,lrn=autodiff, ...); each is a contender. "each": plain, and every operation in turn '
    'in its other form.')
_TORCH = flags.DEFINE_list('torch', ['eager', 'compile'], 'PyTorch modes; empty for none.')
_JSON = flags.DEFINE_string('json', None, 'Also write the results here.')
_DATA = flags.DEFINE_string('data', None, 'An ImageFolder of JPEGs or a packed folder: also '
                            'time each dtype\'s step fed by the real input pipeline.')
_WORKERS = flags.DEFINE_integer('workers', 2, 'Grain worker processes for --data.')
_BUDGET = flags.DEFINE_float('budget_s', 0, 'Prepare no further contender after this many '
                             'seconds (0: no limit); those left out are listed as errors.')

def implementation_specs(specs: list[str]) -> list[str]:
  """'auto' first, then the specs asked for, 'each' expanded; checked by
  implementations.choose."""
  out = ['auto']
  for spec in specs:
    if spec == 'each':
      chosen = implementations.for_backend()
      # An unmeasured backend's 'auto' is already the plain forms.
      if chosen != implementations.PLAIN:
        out.append('plain')
      for name, forms in implementations.FORMS.items():
        if name in implementations.CPU_ONLY and jax.default_backend() != 'cpu':
          continue
        other = next(form for form in forms if form != getattr(chosen, name))
        out.append(f'auto,{name}={other}')
    else:
      try:
        implementations.choose(spec)
      except ValueError as e:
        raise app.UsageError(f'--implementation={spec}: {e}') from e
      out.append(spec)
  return list(dict.fromkeys(out))


def build_model(model_config, dtype: str, implementation: str = 'auto'):
  m = ml_collections.ConfigDict(model_config.to_dict())
  m.dtype = dtype
  return create_model(m, implementation)


# ---------------------------------------------------------------------------------------------
# JAX: the project's own train_step.
# ---------------------------------------------------------------------------------------------


def real_batches(path: str, batch: int, resize: int, crop: int, workers: int):
  """(training batches, statistics) from a packed folder or an ImageFolder through the project's
  Grain pipeline, put on the device by a thread two steps ahead, as train.py does."""
  if sources.packed_shards(path, 'train'):
    source = sources.Packed(path, 'train')
    norm = stats.load(os.path.join(path, stats.PACKED_STATS)).norm
    resize = norm.mean_image.shape[0]
  else:
    source = sources.ImageFolder(path)
    norm = stats.compute(source, resize, max_images=256, workers=workers).norm  # for timing
  ds = input_pipeline.train_dataset(source, batch_size=batch, seed=0, resize=resize, crop=crop,
                                    workers=workers, threads=os.cpu_count() or 1)
  return train.device_batches(ds, jax.sharding.SingleDeviceSharding(jax.devices()[0])), norm


def synthetic_norm(resize: int) -> stats.Normalization:
  """Statistics of natural-image magnitude, for a step timed on synthetic images."""
  return stats.Normalization(
      mean_image=np.full((resize, resize, 3), 115.0, np.float32),
      eigvals=np.array([4000.0, 300.0, 50.0], np.float32), eigvecs=np.eye(3, dtype=np.float32))


def jax_contender(model, crop: int, classes: int, batch: int, resize: int, norm,
                  batches=None):
  """The compiled step, the device's part of the augmentation included, on one synthetic
  batch of drawn uint8 patches kept on the device, or on `batches` if given."""
  rng = np.random.default_rng(1)
  data = jax.device_put(augment.drawn_batch(
      rng.integers(0, 256, (batch, resize, resize, 3), np.uint8),
      rng.integers(0, classes, batch), crop))
  params = jax.jit(lambda r: model.init(r, jnp.zeros((1, crop, crop, 3)), train=False))(
      jax.random.key(0))['params']
  state = TrainState.create(apply_fn=model.apply, params=params,
                            tx=optim.create(0.01, 0.9, 5e-4, False))
  rng, norm = jax.random.key(3), jax.device_put(norm)
  step = functools.partial(train_step, lr=0.01, augment_fn=functools.partial(
      augment.train_inputs, dtype=model.dtype))
  start = time.perf_counter()
  compiled = model.implementation.jit(step, donate_argnums=0).lower(
      state, data, rng, norm).compile()
  info = {'compile_s': time.perf_counter() - start}
  mem = compiled.memory_analysis()
  if mem is not None:
    info['compiled_memory_mb'] = (mem.argument_size_in_bytes + mem.output_size_in_bytes +
                                  mem.temp_size_in_bytes - mem.alias_size_in_bytes) / 2**20
  box = {'state': state}

  def run(steps):
    s = box['state']
    for _ in range(steps):
      s, metrics = compiled(s, data if batches is None else next(batches), rng, norm)
    jax.block_until_ready(metrics['loss'])
    box['state'] = s

  run(_WARMUP.value)
  device_stats = jax.devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in device_stats:
    info['device_peak_memory_mb'] = device_stats['peak_bytes_in_use'] / 2**20
  return run, info


# ---------------------------------------------------------------------------------------------
# PyTorch: the same layers and update rule, written the way a PyTorch user would.
# ---------------------------------------------------------------------------------------------


def torch_contender(mode: str, model, crop: int, batch: int):
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top

  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  torch.set_num_threads(os.cpu_count())

  class TowerLRN(nn.Module):
    """The paper's LRN within each tower: torch divides alpha by n, so pass alpha * n."""

    def __init__(self):
      super().__init__()
      self.lrn = nn.LocalResponseNorm(model.lrn_n, alpha=model.lrn_alpha * model.lrn_n,
                                      beta=model.lrn_beta, k=model.lrn_k)

    def forward(self, x):
      return torch.cat([self.lrn(t) for t in x.chunk(model.towers, dim=1)], dim=1)

  layers = {l.name: l for l in flops.layers(model, crop)}  # the JAX model's shapes
  modules = []
  for name in ('conv1', 'conv2', 'conv3', 'conv4', 'conv5'):
    if name in layers:
      l = layers[name]
      modules += [nn.Conv2d(l.in_channels, l.out_channels, l.kernel, l.stride, l.padding,
                            groups=l.groups), nn.ReLU()]
      if name in ('conv1', 'conv2') and model.lrn:
        modules.append(TowerLRN())
    if name in ('conv1', 'conv2', 'conv5'):
      modules.append(nn.MaxPool2d(model.pool_window, model.pool_stride))
  modules.append(nn.Flatten())
  for name in ('fc6', 'fc7', 'fc8'):
    modules.append(nn.Linear(layers[name].in_channels, layers[name].out_channels))
    if name != 'fc8':
      modules += [nn.ReLU(), nn.Dropout(model.dropout_rate)]
  net = nn.Sequential(*modules).to(device)
  memory_format = torch.channels_last if device == 'cuda' else torch.contiguous_format
  net = net.to(memory_format=memory_format)
  params = list(net.parameters())
  decayed = [p.dim() > 1 for p in params]
  velocity = [torch.zeros_like(p) for p in params]
  images = (torch.randn(batch, 3, crop, crop, device=device) * 60).to(
      memory_format=memory_format)
  labels = torch.randint(0, model.num_classes, (batch,), device=device)
  loss_fn = nn.CrossEntropyLoss()
  forward = torch.compile(net) if mode == 'compile' else net

  def step():
    with torch.autocast(device, dtype=torch.bfloat16, enabled=device == 'cuda'):
      loss = loss_fn(forward(images), labels)
    grads = torch.autograd.grad(loss, params)
    with torch.no_grad():  # v <- 0.9 v - 0.0005 eps w - eps g ; w <- w + v
      for p, v, g, d in zip(params, velocity, grads, decayed):
        v.mul_(0.9).add_(g, alpha=-0.01)
        if d:
          v.add_(p, alpha=-0.0005 * 0.01)
        p.add_(v)
    return loss

  def run(steps):
    for _ in range(steps):
      loss = step()
    float(loss.detach())  # waits for the device

  start = time.perf_counter()
  run(1)
  info = {'compile_s': time.perf_counter() - start, 'torch_device': device,
          'dtype': 'bfloat16' if device == 'cuda' else 'float32'}
  run(_WARMUP.value)
  if device == 'cuda':
    info['device_peak_memory_mb'] = torch.cuda.max_memory_allocated() / 2**20
  return run, info


# ---------------------------------------------------------------------------------------------
# The comparison.
# ---------------------------------------------------------------------------------------------


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  m, crop = config.model, config.data.crop_size
  batch = _BATCH.value or config.batch_size
  reference = build_model(m, 'float32')
  per_image = flops.train_flops(reference, crop)
  device = jax.devices()[0]

  contenders, errors = {}, {}
  start = time.perf_counter()

  def add(name, make, **row):
    if _BUDGET.value and time.perf_counter() - start > _BUDGET.value:
      errors[name] = f'not prepared: over --budget_s={_BUDGET.value:g}'
      return
    try:
      run, info = make()
    except Exception as e:  # pylint: disable=broad-except  (an implementation or torch may fail)
      errors[name] = f'{type(e).__name__}: {e}'.splitlines()[0]
      print(f'skipping {name}: {errors[name]}', flush=True)
      return
    contenders[name] = (run, {**row, **info})
    print(f'ready: {name} (first step or compile {info["compile_s"]:.1f} s)', flush=True)

  resize = config.data.resize_size
  norm = synthetic_norm(resize)

  def add_jax(dtype, implementation, batches=None):
    label = ('' if implementation == 'auto' else implementation) if batches is None else '+ input'
    add(f'jax {dtype} {label}'.strip(), lambda: jax_contender(
        build_model(m, dtype, implementation), crop, m.num_classes, batch, resize, norm,
        batches), framework='jax', dtype=dtype, implementation=implementation,
        input='synthetic' if batches is None else 'real')

  # In order of importance, for --budget_s: the backend's implementation, the real input,
  # PyTorch, and last the other implementations.
  everything = implementation_specs(_IMPLEMENTATIONS.value)
  for dtype in _DTYPES.value:
    add_jax(dtype, everything[0])
  feed = None
  if _DATA.value:
    feed, norm = real_batches(_DATA.value, batch, resize, crop, _WORKERS.value)
    resize = norm.mean_image.shape[0]
    for dtype in _DTYPES.value:
      add_jax(dtype, everything[0], feed)
  for mode in _TORCH.value:
    add(f'torch {mode}', lambda mode=mode: torch_contender(mode, reference, crop, batch),
        framework='torch', implementation=mode, input='synthetic')
  for dtype in _DTYPES.value:
    for implementation in everything[1:]:
      add_jax(dtype, implementation)

  rates = {name: [] for name in contenders}
  for _ in range(_RUNS.value):
    for name, (run, _) in contenders.items():
      start = time.perf_counter()
      run(_STEPS.value)
      rates[name].append(batch * _STEPS.value / (time.perf_counter() - start))
  if feed is not None:
    feed.close()  # stops the worker processes and frees their shared memory

  medians = {name: statistics.median(r) for name, r in rates.items()}
  baseline = medians.get('torch eager')
  results = {}
  for name, (_, info) in contenders.items():
    rate = medians[name]
    row = {'images_per_sec': rate, 'runs': rates[name], **info,
           'gflops_per_image': per_image / 1e9, 'tflops_per_sec': per_image * rate / 1e12}
    row.update(peaks.fraction_of_peak(per_image * rate, device, row['dtype']))
    if baseline:
      row['vs_torch_eager'] = rate / baseline
    same = f'jax {info.get("dtype")}'
    if info['framework'] == 'jax' and name != same and same in medians:
      key = 'vs_synthetic' if info['input'] == 'real' else 'vs_default'
      row[key] = rate / medians[same]
    results[name] = row

  about = machine.describe()
  precision = jax.config.jax_default_matmul_precision or 'default'
  print(f'\nAlexNet train step, batch {batch}, {crop}x{crop}, {_RUNS.value} runs x '
        f'{_STEPS.value} steps; {machine.one_line(about)}')
  print(f'FLOPs counted from the layer shapes: {flops.forward_flops(reference, crop) / 1e9:.3f} '
        f'GFLOP forward, {per_image / 1e9:.3f} GFLOP per trained image; float32 matmul '
        f'precision {precision!r} -> {"/".join(map(str, peaks.float32_math(device)))}')
  print(f'{"contender":52s} {"images/s":>9s} {"vs eager":>8s} {"vs ref":>7s} {"TFLOP/s":>8s} '
        f'{"peak":>7s} {"of peak":>8s} {"compile s":>9s}')
  for name, r in results.items():
    ref = r.get('vs_default', r.get('vs_synthetic'))
    cells = [f'{r["images_per_sec"]:9.1f}', _fmt(r.get('vs_torch_eager'), '8.2fx'),
             _fmt(ref, '7.2fx'), f'{r["tflops_per_sec"]:8.3f}', _fmt(r['peak_tflops'], '7.1f'),
             _fmt(r['fraction_of_peak'], '8.1%'), f'{r["compile_s"]:9.1f}']
    print(f'{name:52s} {" ".join(cells)}  [{r["math"]}]')
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump({'batch': batch, 'crop': crop, 'runs': _RUNS.value, 'steps': _STEPS.value,
                 'machine': about, 'device': device.device_kind, 'jax': jax.__version__,
                 'backend': jax.default_backend(),
                 'auto': dataclasses.asdict(implementations.for_backend()),
                 'matmul_precision': precision,
                 'float32_math': peaks.float32_math(device)[0],
                 'gflops_per_image': per_image / 1e9,
                 'forward_gflops_per_image': flops.forward_flops(reference, crop) / 1e9,
                 'layer_macs': {l.name: l.macs for l in flops.layers(reference, crop)},
                 'results': results, 'errors': errors}, f, indent=2)


def _fmt(value, spec: str) -> str:
  """value formatted by spec ('8.2fx': a ratio with its x), '-' where there is none."""
  ratio = spec.endswith('x')
  spec = spec[:-1] if ratio else spec
  width = int(spec.split('.')[0])
  if value is None:
    return '-'.rjust(width)
  return f'{value:{width - ratio}{spec[spec.index("."):]}}' + ('x' if ratio else '')


if __name__ == '__main__':
  app.run(main)
