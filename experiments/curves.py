"""Training and validation error against epochs, several runs on one plot, from metrics.jsonl.

    python -m experiments.curves --workdirs=runs/ablations/baseline,runs/ablations/no_dropout \
        --out=runs/curves.png

Solid lines are the training error (the mean over each logging interval, in training mode:
with dropout and augmentation), dashed lines the validation error of the same run. Several
--metrics draw one panel each; a diagnostics metric (dead_fc7, update_norm_fc8, ...) comes from
the runs' 'diag' rows:

    python -m experiments.curves --workdirs=runs/adapted,runs/literal \
        --metrics=loss,top1_err,dead_fc7 --out=experiments/figures/recipe.png
"""

import os

from absl import app, flags

from alexnet_jax import logs, metric_writer
from experiments import plotting


def _axis_label(metric: str) -> str:
  if metric.endswith('_err'):
    return f'{metric.replace("_err", "")} error (%)'
  if metric.startswith('dead_'):
    return f'dead {metric[len("dead_"):]} units (%)'
  return metric.replace('_', ' ')


def draw(workdirs: list[str], out: str, labels: list[str] | None = None, metric: str = 'top1_err',
         title: str = '', metrics: list[str] | None = None) -> str:
  """One panel per metric of `metrics` (default: `metric` alone), every run in each."""
  plt = plotting.pyplot()
  panels = metrics or [metric]
  labels = labels or [os.path.basename(os.path.normpath(w)) for w in workdirs]
  fig, axes = plt.subplots(1, len(panels), figsize=(7 if len(panels) == 1 else 4 * len(panels),
                                                    4.5), squeeze=False)
  runs = [metric_writer.read_by_split(w) for w in workdirs]
  for workdir, records in zip(workdirs, runs):
    if not records:
      raise SystemExit(f'error: {workdir} has no metrics.jsonl; give training run folders.')
  for ax, name in zip(axes[0], panels):
    splits = (('diag', '-'),) if name.startswith(('dead_', 'grad_', 'update_', 'param_')) else (
        ('train', '-'), ('val', '--'))
    scale = 100 if name.endswith('_err') or name.startswith('dead_') else 1
    for i, (records, label) in enumerate(zip(runs, labels)):
      for split, style in splits:
        recs = [r for r in records.get(split, []) if name in r]
        ax.plot([r['epoch'] for r in recs], [scale * r[name] for r in recs], style,
                color=f'C{i % 10}', label=f'{label} ({split})', lw=1.2,
                marker='o' if split == 'diag' else None, ms=3)  # diag rows are sparse
    ax.set_xlabel('epoch')
    ax.set_ylabel(_axis_label(name))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
  axes[0][0].set_title(title or 'Training (solid) and validation (dashed)', fontsize=9)
  return plotting.save(fig, out, dpi=130)


def main(argv):
  del argv
  logs.quiet_library_logs()
  options = flags.FLAGS
  print('wrote', draw(options.workdirs, options.out, options.labels or None, options.metric,
                      options.title, options.metrics or None))


if __name__ == '__main__':
  flags.DEFINE_list('workdirs', None, 'Training run folders.')
  flags.DEFINE_list('labels', [], 'A legend label per run (default: the folder names).')
  flags.DEFINE_enum('metric', 'top1_err', ['top1_err', 'top5_err', 'loss'], 'What to plot.')
  flags.DEFINE_list('metrics', [], 'Several metrics, one panel each (overrides --metric): '
                    'loss, top1_err, top5_err, or a diagnostics field such as dead_fc7.')
  flags.DEFINE_string('title', '', 'Plot title.')
  flags.DEFINE_string('out', 'runs/curves.png', 'The PNG to write (the committed figures in '
                      'experiments/figures/ are written only when named here).')
  flags.mark_flags_as_required(['workdirs'])
  app.run(main)
