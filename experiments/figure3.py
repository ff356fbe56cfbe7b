"""Figure 3: the conv1 kernels of a checkpoint, one block of rows per tower.

    python -m experiments.figure3 --workdir=runs/imagenette_small    # writes <workdir>/figure3.png

The paper's Figure 3 shows the 96 kernels of its net: tower 1's came out largely colour-agnostic,
tower 2's colour-specific. Each kernel is stretched to the full grey range on its own.
"""

import os
import sys

from absl import app, flags

from alexnet_jax import checkpointing, logs, visualize
from alexnet_jax.errors import UserError
from experiments import plotting


def draw(workdir: str, out: str, step: int | None = None) -> str:
  plt = plotting.pyplot()

  loaded = checkpointing.load(workdir, step)
  towers = loaded.config.model.get('towers', 1)
  grid = visualize.conv1_grid(loaded.params['conv1']['kernel'], towers=towers)
  fig, ax = plt.subplots(figsize=(grid.shape[1] / 60, grid.shape[0] / 60 + 0.4))
  ax.imshow(grid, interpolation='nearest')
  ax.set_axis_off()
  ax.set_title(f'conv1 kernels, {loaded.config.get("name", "")} step {loaded.step}: '
               + ('tower 1 above, tower 2 below' if towers == 2 else 'one tower'), fontsize=8)
  return plotting.save(fig, out, dpi=150)


def main(argv):
  del argv
  logs.quiet_library_logs()
  options = flags.FLAGS
  try:
    out = options.out or os.path.join(options.workdir, 'figure3.png')
    print('wrote', draw(options.workdir, out, options.step))
  except UserError as e:
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  flags.DEFINE_string('workdir', None, 'A training run (or a checkpoint folder).')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: the newest).')
  flags.DEFINE_string('out', '', 'The PNG to write (default: <workdir>/figure3.png; the figure '
                      'in experiments/README.md is experiments/figures/figure3.png).')
  flags.mark_flags_as_required(['workdir'])
  app.run(main)
