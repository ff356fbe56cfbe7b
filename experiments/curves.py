"""Training and validation error against epochs, several runs on one plot, from metrics.jsonl.

    python -m experiments.curves --workdirs=runs/ablations/baseline,runs/ablations/no_dropout \
        --out=runs/curves.png

Solid lines are the training error (the mean over each logging interval, in training mode:
with dropout and augmentation), dashed lines the validation error of the same run.
"""

import os

from absl import app, flags

from alexnet_jax import logs
from experiments import plotting, sweep


def draw(workdirs: list[str], out: str, labels: list[str] | None = None, metric: str = 'top1_err',
         title: str = '') -> str:
  plt = plotting.pyplot()

  labels = labels or [os.path.basename(os.path.normpath(w)) for w in workdirs]
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for i, (workdir, label) in enumerate(zip(workdirs, labels)):
    metrics = sweep.read_metrics(workdir)
    if not metrics:
      raise SystemExit(f'error: {workdir} has no metrics.jsonl; give training run folders.')
    colour = f'C{i % 10}'
    for split, style in (('train', '-'), ('val', '--')):
      recs = metrics.get(split, [])
      scale = 1 if metric == 'loss' else 100
      ax.plot([r['epoch'] for r in recs], [scale * r[metric] for r in recs], style,
              color=colour, label=f'{label} ({split})', lw=1.2)
  ax.set_xlabel('epoch')
  ax.set_ylabel('loss' if metric == 'loss' else f'{metric.replace("_err", "")} error (%)')
  ax.set_title(title or 'Training (solid) and validation (dashed) error', fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=6, ncol=2)
  return plotting.save(fig, out, dpi=130)


def main(argv):
  del argv
  logs.quiet_library_logs()
  f = flags.FLAGS
  print('wrote', draw(f.workdirs, f.out, f.labels or None, f.metric, f.title))


if __name__ == '__main__':
  flags.DEFINE_list('workdirs', None, 'Training run folders.')
  flags.DEFINE_list('labels', [], 'A legend label per run (default: the folder names).')
  flags.DEFINE_enum('metric', 'top1_err', ['top1_err', 'top5_err', 'loss'], 'What to plot.')
  flags.DEFINE_string('title', '', 'Plot title.')
  flags.DEFINE_string('out', 'runs/curves.png', 'The PNG to write (the committed figures in '
                      'experiments/figures/ are written only when named here).')
  flags.mark_flags_as_required(['workdirs'])
  app.run(main)
