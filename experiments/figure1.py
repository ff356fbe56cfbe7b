"""Figure 1 and the CIFAR-10 LRN claim: the paper's four-layer CNN, ReLU against tanh.

    python -m experiments.figure1 --root=runs/figure1

1. Learning rates: each activation trains one epoch at each rate of --lrs; the rate with the
   lowest training error after that epoch is its fastest ("each net's learning rate chosen to
   be as fast as possible", Figure 1's caption).
2. Figure 1: each activation trains at its rate, a few epochs at a time, until its training error
   has been under --target (25%) for --after epochs or --max_epochs is reached. The speed-up is
   the ratio of the epochs each needs to reach the target (read off the per-epoch training error,
   linearly interpolated between epochs).
3. The LRN claim (13% test error without normalization, 11% with): the ReLU net again with the
   paper's response normalization, as many epochs as the ReLU run; both nets' test errors.

Runs live in ROOT/<name> (metrics.jsonl, checkpoints); a second invocation reuses finished
runs. Writes ROOT/figure1.json and the plot (--out, default ROOT/figure1.png).
The images come from $CIFAR10_DIR or are unpacked from --tarball into ~/.cache/alexnet_jax.
"""

import json
import os
import tarfile

from absl import app, flags

from alexnet_jax import logs, metric_writer
from experiments import plotting, sweep

_ROOT = flags.DEFINE_string('root', 'runs/figure1', 'Folder for the runs.')
_TARBALL = flags.DEFINE_string('tarball', '../shared/data/cifar10-jpeg.tar.gz',
                               'CIFAR-10 as JPEGs (train/<class>/*.jpg, test/<class>/*.jpg).')
_LRS = flags.DEFINE_list('lrs', ['0.003', '0.01', '0.03', '0.1'], 'Learning rates to try.')
_TARGET = flags.DEFINE_float('target', 0.25, 'The training error Figure 1 measures the time to.')
_AFTER = flags.DEFINE_integer('after', 2, 'Epochs to keep training after reaching the target.')
_MAX_EPOCHS = flags.DEFINE_integer('max_epochs', 30, 'Stop a run here whatever its error.')
_CHUNK = flags.DEFINE_integer('chunk', 3, 'Epochs per resumed leg of a run.')
_OUT = flags.DEFINE_string('out', '', 'The plot (default: ROOT/figure1.png; the figure in '
                            'experiments/README.md is experiments/figures/figure1.png).')
_PLOT_ONLY = flags.DEFINE_bool('plot_only', False, 'Only redraw from the runs in --root.')

BASE = 'configs/cifar10.py'
ACTIVATIONS = ('relu', 'tanh')


def cifar_dir(tarball: str) -> str:
  """$CIFAR10_DIR, or the tarball unpacked once under ~/.cache/alexnet_jax/cifar10."""
  if os.environ.get('CIFAR10_DIR'):
    return os.environ['CIFAR10_DIR']
  root = os.path.expanduser('~/.cache/alexnet_jax/cifar10')
  if not os.path.isdir(os.path.join(root, 'test')):
    if not os.path.exists(tarball):
      raise SystemExit(f'error: CIFAR-10 is neither in {root} nor at --tarball={tarball}. Give '
                       '--tarball the path of cifar10-jpeg.tar.gz or set CIFAR10_DIR to a folder '
                       'holding train/ and test/.')
    os.makedirs(root, exist_ok=True)
    with tarfile.open(tarball) as tar:
      tar.extractall(root, filter='data')
  return root


def train(root: str, name: str, overrides: dict, epochs: int, env: dict) -> list[dict]:
  """Trains (or resumes) ROOT/name to `epochs` epochs; returns its per-epoch training records."""
  workdir = os.path.join(root, name)
  have = metric_writer.read_by_split(workdir).get('train', [])
  if not have or have[-1]['epoch'] < epochs:
    _, rc, wall_s = sweep.train(BASE, {**overrides, 'num_epochs': epochs}, workdir, env)
    with open(os.path.join(workdir, 'wall_s.txt'), 'a') as f:
      f.write(f'{wall_s:.1f}\n')
    if rc:
      print(f'{name} stopped with exit {rc} (diverged?); see {workdir}/log.txt')
  return metric_writer.read_by_split(workdir).get('train', [])


def epochs_to(records: list[dict], target: float) -> float | None:
  """The (interpolated) epoch at which the training error first reaches `target`."""
  prev_epoch, prev_err = 0.0, 0.9  # chance on 10 classes at epoch 0
  for r in records:
    if r['top1_err'] <= target:
      return prev_epoch + (prev_err - target) / (prev_err - r['top1_err']) * (r['epoch'] -
                                                                              prev_epoch)
    prev_epoch, prev_err = r['epoch'], r['top1_err']
  return None


def wall_minutes(root: str, name: str) -> float:
  path = os.path.join(root, name, 'wall_s.txt')
  if not os.path.exists(path):
    return 0.0
  with open(path) as f:
    return round(sum(float(x) for x in f.read().split()) / 60, 1)


def run(root: str) -> dict:
  env = {**os.environ, 'CIFAR10_DIR': cifar_dir(_TARBALL.value)}
  summary = {'lr_search': {}, 'lr': {}, 'epochs_to_target': {}, 'test_err': {}, 'wall_min': {}}
  # 1. The fastest learning rate of each activation: lowest training error after one epoch.
  for act in ACTIVATIONS:
    errors = {}
    for lr in _LRS.value:
      recs = train(root, f'search_{act}_lr{lr}', {'model.activation': act,
                                                  'optim.base_lr': float(lr)}, 1, env)
      if recs and recs[-1]['epoch'] >= 1:
        errors[lr] = recs[-1]['top1_err']
    summary['lr_search'][act] = errors
    summary['lr'][act] = float(min(errors, key=errors.get))
  # 2. Figure 1: each at its rate until it has been under the target for a while.
  for act in ACTIVATIONS:
    overrides = {'model.activation': act, 'optim.base_lr': summary['lr'][act]}
    epochs = 0
    while epochs < _MAX_EPOCHS.value:
      epochs = min(epochs + _CHUNK.value, _MAX_EPOCHS.value)
      recs = train(root, act, overrides, epochs, env)
      reached = epochs_to(recs, _TARGET.value)
      if reached is not None and recs[-1]['epoch'] >= reached + _AFTER.value:
        break
  # 3. The LRN pair: the ReLU net with normalization, as long as the ReLU run.
  relu_epochs = metric_writer.read_by_split(os.path.join(root, 'relu'))['train'][-1]['epoch']
  train(root, 'relu_lrn', {'model.activation': 'relu', 'model.lrn': True,
                           'optim.base_lr': summary['lr']['relu']}, int(relu_epochs), env)
  return summarize(root, summary)


def summarize(root: str, summary: dict) -> dict:
  for name in ('relu', 'tanh', 'relu_lrn'):
    m = metric_writer.read_by_split(os.path.join(root, name))
    train_recs, val = m.get('train', []), m.get('val', [])
    summary['epochs_to_target'][name] = epochs_to(train_recs, _TARGET.value)
    summary['test_err'][name] = {'final': val[-1]['top1_err'] if val else None,
                                 'best': min((r['top1_err'] for r in val), default=None),
                                 'epochs': val[-1]['epoch'] if val else None}
    summary['wall_min'][name] = wall_minutes(root, name)
  relu, tanh = summary['epochs_to_target']['relu'], summary['epochs_to_target']['tanh']
  summary['speedup'] = tanh / relu if relu and tanh else None
  summary['target'] = _TARGET.value
  with open(os.path.join(root, 'figure1.json'), 'w') as f:
    json.dump(summary, f, indent=2)
  return summary


def plot(root: str, summary: dict, out: str) -> None:
  plt = plotting.pyplot()

  fig, ax = plt.subplots(figsize=(6, 4.2))
  for name, style in (('relu', '-'), ('tanh', '--')):
    recs = metric_writer.read_by_split(os.path.join(root, name)).get('train', [])
    lr = summary['lr'].get(name)
    ax.plot([0] + [r['epoch'] for r in recs], [0.9] + [r['top1_err'] for r in recs], style,
            color='k', label=f'{name} (lr {lr:g})' if lr else name)
  ax.axhline(_TARGET.value, color='0.6', lw=0.8)
  speed, reached = summary.get('speedup'), summary['epochs_to_target']
  fmt = lambda e: f'{e:.1f} epochs' if e else 'not reached'
  ax.set_title(f'Four-layer CNN on CIFAR-10, epochs to {_TARGET.value:.0%} training error: '
               f'ReLU {fmt(reached["relu"])}, tanh {fmt(reached["tanh"])}'
               + (f' ({speed:.1f}x)' if speed else ''), fontsize=8)
  ax.set_xlabel('epochs')
  ax.set_ylabel('training error rate')
  ax.set_ylim(0, 0.8)
  ax.legend()
  print('wrote', plotting.save(fig, out, dpi=120))


def main(argv):
  del argv
  logs.quiet_library_logs()
  root = os.path.abspath(os.path.expanduser(_ROOT.value))
  if _PLOT_ONLY.value:
    with open(os.path.join(root, 'figure1.json')) as f:
      summary = summarize(root, json.load(f))
  else:
    summary = run(root)
  print(json.dumps(summary, indent=2))
  plot(root, summary, _OUT.value or os.path.join(root, 'figure1.png'))


if __name__ == '__main__':
  app.run(main)
