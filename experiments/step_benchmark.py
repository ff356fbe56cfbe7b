"""Train-step throughput of the paper's AlexNet: this project's JAX step against PyTorch.

    python experiments/step_benchmark.py                 # batch 128, 5 timed runs of 5 steps
    python experiments/step_benchmark.py --runs=7 --steps=10 --json=step.json
    python experiments/step_benchmark.py --data=../shared/data/imagenette/train  # + end to end

The same network (two towers as grouped convolutions, LRN by the paper's formula within each
tower, dropout, 1000 classes, 227x227 input) and the same update rule (the learning rate inside
the momentum buffer, weight decay on the weights) in both frameworks, on synthetic batches
already on the device, so that only the step is timed. Contenders are timed in turn within each
run, and the median over runs is reported, with the ratio against PyTorch eager from the same
process. Compile time (or PyTorch's first steps) is reported separately; FLOPs per step come
from XLA's cost analysis, memory from the compiled step (and the device's peak on a GPU).
With --data, the float32 step also runs fed by the real input pipeline, for the end-to-end
rate beside the synthetic one.
"""

import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from alexnet_jax import input_pipeline, optim, sources, stats  # pylint: disable=g-import-not-at-top
from alexnet_jax.model import AlexNet
from alexnet_jax import train
from alexnet_jax.train import TrainState, train_step

_BATCH = flags.DEFINE_integer('batch', 128, 'Images per step (the paper: 128).')
_STEPS = flags.DEFINE_integer('steps', 5, 'Timed steps per run.')
_RUNS = flags.DEFINE_integer('runs', 5, 'Timed runs; the median is reported.')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed steps after compilation.')
_DTYPES = flags.DEFINE_list('dtypes', ['float32', 'bfloat16'], 'JAX compute dtypes.')
_TORCH = flags.DEFINE_list('torch', ['eager', 'compile'], 'PyTorch modes; empty for none.')
_JSON = flags.DEFINE_string('json', None, 'Also write the results here.')
_DATA = flags.DEFINE_string('data', None, 'An ImageFolder of JPEGs: also time the float32 step '
                            'fed by the real input pipeline (end to end).')
_WORKERS = flags.DEFINE_integer('workers', 2, 'Grain worker processes for --data.')

# Dense peak throughput (FLOP/s) by device kind, for the fraction of peak on a GPU.
_PEAK = {
    'NVIDIA H100 80GB HBM3': {'float32': 67e12, 'bfloat16': 989e12},
    'NVIDIA H200': {'float32': 67e12, 'bfloat16': 989e12},
    'NVIDIA A100-SXM4-80GB': {'float32': 19.5e12, 'bfloat16': 312e12},
}


# ---------------------------------------------------------------------------------------------
# JAX: the project's own train_step.
# ---------------------------------------------------------------------------------------------


def real_batches(data_dir: str, batch: int, workers: int):
  """Training batches from JPEGs through the project's Grain pipeline, put on the device by a
  thread two steps ahead, as train.py does."""
  source = sources.ImageFolder(data_dir)
  norm = stats.compute(source, 256, max_images=256, workers=workers)  # enough for a timing run
  ds = input_pipeline.train_dataset(source, norm, batch_size=batch, seed=0, resize=256, crop=227,
                                    workers=workers)
  return train.device_batches(ds, jax.sharding.SingleDeviceSharding(jax.devices()[0]))


def jax_contender(dtype: str, batch: int, batches=None):
  """The compiled step on one synthetic batch kept on the device, or on `batches` if given."""
  model = AlexNet(dtype=jnp.dtype(dtype))
  images = jax.random.normal(jax.random.key(1), (batch, 227, 227, 3), jnp.float32) * 60
  labels = jax.random.randint(jax.random.key(2), (batch,), 0, 1000)
  params = jax.jit(lambda r: model.init(r, images[:1], train=False))(jax.random.key(0))['params']
  state = TrainState.create(apply_fn=model.apply, params=params,
                            tx=optim.create(0.01, 0.9, 5e-4, False))
  data, rng = {'image': images, 'label': labels}, jax.random.key(3)
  start = time.perf_counter()
  compiled = jax.jit(train_step, donate_argnums=0).lower(state, data, rng).compile()
  info = {'compile_s': time.perf_counter() - start}
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  info['gflops_per_step'] = float(cost.get('flops', float('nan'))) / 1e9
  mem = compiled.memory_analysis()
  if mem is not None:
    info['compiled_memory_mb'] = (mem.argument_size_in_bytes + mem.output_size_in_bytes +
                                  mem.temp_size_in_bytes - mem.alias_size_in_bytes) / 2**20
  box = {'state': state}

  def run(steps):
    s = box['state']
    for _ in range(steps):
      s, metrics = compiled(s, data if batches is None else next(batches), rng)
    jax.block_until_ready(metrics['loss'])
    box['state'] = s

  run(_WARMUP.value)
  stats = jax.devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    info['device_peak_memory_mb'] = stats['peak_bytes_in_use'] / 2**20
  return run, info


# ---------------------------------------------------------------------------------------------
# PyTorch: the same network and update rule, written the way a PyTorch user would.
# ---------------------------------------------------------------------------------------------


def torch_contender(mode: str, batch: int):
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top

  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  torch.set_num_threads(os.cpu_count())

  class TowerLRN(nn.Module):
    """The paper's LRN within each tower: torch divides alpha by n, so pass alpha * n."""

    def __init__(self):
      super().__init__()
      self.lrn = nn.LocalResponseNorm(5, alpha=1e-4 * 5, beta=0.75, k=2.0)

    def forward(self, x):
      return torch.cat([self.lrn(t) for t in x.chunk(2, dim=1)], dim=1)

  net = nn.Sequential(
      nn.Conv2d(3, 96, 11, 4), nn.ReLU(), TowerLRN(), nn.MaxPool2d(3, 2),
      nn.Conv2d(96, 256, 5, 1, 2, groups=2), nn.ReLU(), TowerLRN(), nn.MaxPool2d(3, 2),
      nn.Conv2d(256, 384, 3, 1, 1), nn.ReLU(),
      nn.Conv2d(384, 384, 3, 1, 1, groups=2), nn.ReLU(),
      nn.Conv2d(384, 256, 3, 1, 1, groups=2), nn.ReLU(), nn.MaxPool2d(3, 2),
      nn.Flatten(), nn.Linear(9216, 4096), nn.ReLU(), nn.Dropout(0.5),
      nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4096, 1000)).to(device)
  memory_format = torch.channels_last if device == 'cuda' else torch.contiguous_format
  net = net.to(memory_format=memory_format)
  params = list(net.parameters())
  decayed = [p.dim() > 1 for p in params]
  velocity = [torch.zeros_like(p) for p in params]
  images = (torch.randn(batch, 3, 227, 227, device=device) * 60).to(
      memory_format=memory_format)
  labels = torch.randint(0, 1000, (batch,), device=device)
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
  info = {'compile_s': time.perf_counter() - start, 'device': device}
  run(_WARMUP.value)
  if device == 'cuda':
    info['device_peak_memory_mb'] = torch.cuda.max_memory_allocated() / 2**20
  return run, info


def main(argv):
  del argv
  batch = _BATCH.value
  contenders = {}
  for dtype in _DTYPES.value:
    contenders[f'jax {dtype}'] = jax_contender(dtype, batch)
  feed = real_batches(_DATA.value, batch, _WORKERS.value) if _DATA.value else None
  if feed is not None:
    contenders['jax float32 + input'] = jax_contender('float32', batch, feed)
  for mode in _TORCH.value:
    try:
      contenders[f'torch {mode}'] = torch_contender(mode, batch)
    except Exception as e:  # torch missing, or torch.compile unsupported here
      print(f'skipping torch {mode}: {type(e).__name__}: {e}'.splitlines()[0])
  rates = {name: [] for name in contenders}
  for _ in range(_RUNS.value):
    for name, (run, _) in contenders.items():
      start = time.perf_counter()
      run(_STEPS.value)
      rates[name].append(batch * _STEPS.value / (time.perf_counter() - start))

  device = jax.devices()[0]
  print(f'\nAlexNet train step, batch {batch}, {_RUNS.value} runs x {_STEPS.value} steps, '
        f'JAX {jax.__version__} on {device.device_kind} ({jax.default_backend()})')
  baseline = statistics.median(rates['torch eager']) if 'torch eager' in rates else None
  results = {}
  for name, (_, info) in contenders.items():
    median = statistics.median(rates[name])
    row = {'images_per_sec': median, 'runs': rates[name], **info}
    if baseline:
      row['vs_torch_eager'] = median / baseline
    dtype = name.split()[-1]
    peak = _PEAK.get(device.device_kind, {}).get(dtype)
    if peak and 'gflops_per_step' in info:
      row['fraction_of_peak'] = info['gflops_per_step'] * 1e9 * median / batch / peak
    results[name] = row
    extras = ' '.join(f'{k}={v:.3g}' if isinstance(v, float) else f'{k}={v}'
                      for k, v in row.items() if k not in ('images_per_sec', 'runs'))
    print(f'  {name:16s} {median:9.1f} images/s  {extras}')
  if feed is not None:
    feed.close()  # stops the worker processes and frees their shared memory
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump({'batch': batch, 'device': device.device_kind, 'jax': jax.__version__,
                 'results': results}, f, indent=2)


if __name__ == '__main__':
  app.run(main)
