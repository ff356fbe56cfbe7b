"""A checkpoint's parameters as one NumPy file, for code that reads neither Orbax nor Flax:

    python -m alexnet_jax.export --workdir=runs/paper --out=alexnet.npz
    python -m alexnet_jax.export --workdir=runs/paper --step=450000 --out=alexnet_450k.npz
    python -m alexnet_jax.export --workdir=runs/paper --step=best --out=alexnet_best.npz

The keys are the paper's layer names: `conv1/kernel` (11, 11, 3, 96), `conv1/bias` (96,), ...,
`fc8/kernel` (4096, 1000), `fc8/bias` (1000,), in Flax's layouts (convolution kernels height x
width x input x output, the input channels of a tower's half of the maps only, as in the paper;
dense kernels input x output). Beside them: `mean_image`, `eigvals` and `eigvecs` (the training
set's statistics, where the checkpoint has them; see `alexnet_jax.stats`), `class_names` (the
output order) and `step`. Read it with `np.load(path)`.
"""

import os

import jax
import numpy as np
from absl import app, flags

from alexnet_jax import checkpointing, cli
from alexnet_jax.errors import UserError


def arrays(loaded: checkpointing.Loaded) -> dict[str, np.ndarray]:
  """{'conv1/kernel': ..., ..., 'mean_image': ..., 'class_names': ...} of a loaded checkpoint."""
  out = {jax.tree_util.keystr(path, simple=True, separator='/'): np.asarray(value)
         for path, value in jax.tree_util.tree_flatten_with_path(loaded.params)[0]}
  if loaded.norm is not None:
    out.update(mean_image=loaded.norm.mean_image, eigvals=loaded.norm.eigvals,
               eigvecs=loaded.norm.eigvecs)
  out['class_names'] = np.array(loaded.class_names, dtype=str)
  out['step'] = np.array(loaded.step)
  return out


def export(path: str, out: str, step: int | str | None = None) -> str:
  """Writes the checkpoint at `path` (the newest, or `step`: a number or 'best') to the .npz
  file `out`; returns its path. The file appears whole or not at all."""
  loaded = checkpointing.load(path, step)
  out = os.path.abspath(os.path.expanduser(out if out.endswith('.npz') else out + '.npz'))
  partial = out + '.partial.npz'
  try:
    os.makedirs(os.path.dirname(out), exist_ok=True)
    np.savez(partial, **arrays(loaded))
    os.replace(partial, out)
  except OSError as e:
    if os.path.exists(partial):
      os.remove(partial)
    raise UserError(f'Cannot write {out}: {e.strerror or e}. Give --out a file in a folder this '
                    'user can write to.') from e
  return out


def main(argv):
  cli.start(argv)
  options = flags.FLAGS
  with cli.one_line_errors():
    print('wrote', export(options.workdir, options.out, options.step))


if __name__ == '__main__':
  flags.DEFINE_string('workdir', None, 'A training run (or its checkpoints/ or one step folder).')
  flags.DEFINE_string('step', None, "Checkpoint step (default: the newest; 'best': the lowest "
                      'validation top-1 error).')
  flags.DEFINE_string('out', 'params.npz', 'The .npz file to write.')
  flags.mark_flags_as_required(['workdir'])
  app.run(main)
