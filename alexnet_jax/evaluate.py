"""Top-1 and top-5 error of checkpoints, from one centre patch and from the paper's ten patches,
alone and as softmax-averaged ensembles (Table 2's "5 CNNs" rows).

    python -m alexnet_jax.evaluate --workdir=runs/imagenette_small
    python -m alexnet_jax.evaluate --workdir=runs/imagenette_small --step=1314
    python -m alexnet_jax.evaluate --workdir=runs/seed0,runs/seed1,runs/seed2   # an ensemble

Each checkpoint is read with the config saved beside it and evaluated on that config's
validation split (--set data.val_dir=PATH and the like point it elsewhere). Several --workdir
(or several --step of one workdir) are also evaluated together: their softmax outputs averaged
per image. Prints a table and writes JSON (--out; default <first workdir>/eval-<step>.json).
"""

import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from alexnet_jax import checkpointing, data, input_pipeline, logs, train
from alexnet_jax.errors import DataError, UserError
from alexnet_jax.inference import (checkpoint_config, normalization, top_k_errors,
                                   view_probabilities)

VIEWS = ('center', 'ten')


def _prepare(loaded: checkpointing.Loaded, settings=()):
  """(network, params, validation source, normalization, data config) of one checkpoint."""
  config = checkpoint_config(loaded, settings)  # the decoder training used, then the settings
  d = config.data
  class_names = list(loaded.class_names) or list(data.train_source(d).class_names)
  return (train.create_model(config.model), jax.device_put(loaded.params),
          data.eval_source(d, class_names), normalization(loaded, d), d)


def _view_probabilities(prepared, views: str, batch_size: int):
  network, params, eval_src, norm, d = prepared
  ds = input_pipeline.eval_dataset(eval_src, norm, batch_size=batch_size, resize=d.resize_size,
                                   crop=d.crop_size, views=views, threads=d.threads,
                                   decoder=d.decoder)
  probs, labels, index = [], [], []
  for batch in ds:
    n = len(batch['label'])
    padded = train.pad_batch(batch, batch_size)  # one compiled shape for every batch
    probs.append(np.asarray(view_probabilities(network, params,
                                               jnp.asarray(padded['image'])))[:n])
    labels.append(batch['label'])
    index.append(batch['index'])
  if not probs:
    raise DataError(f'No validation image of {eval_src!r} could be read.')
  return np.concatenate(probs), np.concatenate(labels), np.concatenate(index)


def probabilities(loaded: checkpointing.Loaded, views: str, batch_size: int,
                  settings: list[str] = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(probs (N, classes), labels (N,), source indices (N,)) of one checkpoint on its
  validation images; with views='ten' each row is the mean softmax of the ten patches."""
  return _view_probabilities(_prepare(loaded, settings), views, batch_size)


def evaluate(workdirs: list[str], steps: list[int | None], *, views=VIEWS, batch_size: int = 64,
             settings: list[str] = ()) -> dict:
  """Errors of every (workdir, step) checkpoint and, for several, of their ensemble."""
  members = [(w, s) for w in workdirs for s in steps]
  result = {'members': [], 'ensemble': None}
  sums: dict[str, np.ndarray] = {}
  reference = None
  for workdir, step in members:
    loaded = checkpointing.load(workdir, step)
    prepared = _prepare(loaded, settings)
    entry = {'workdir': workdir, 'step': loaded.step, 'checkpoint': loaded.path,
             'config': loaded.config.get('name', '')}
    for v in views:
      start = time.perf_counter()
      probs, labels, index = _view_probabilities(prepared, v, batch_size)
      if reference is None:
        reference = (labels, index, loaded.class_names)
      elif (not np.array_equal(index, reference[1]) or not np.array_equal(labels, reference[0])
            or loaded.class_names != reference[2]):
        raise UserError(f'{loaded.path} was evaluated on other images or classes than '
                        f'{result["members"][0]["checkpoint"]}; an ensemble needs members '
                        'trained and evaluated on the same dataset.')
      entry[v] = {**top_k_errors(probs, labels), 'images': int(len(labels)),
                  'seconds': round(time.perf_counter() - start, 1)}
      sums[v] = sums.get(v, 0) + probs
    result['members'].append(entry)
    logging.info('%s step %d: %s', workdir, loaded.step, entry)
  if len(members) > 1:
    labels = reference[0]
    result['ensemble'] = {v: {**top_k_errors(sums[v] / len(members), labels),
                              'images': int(len(labels)), 'members': len(members)}
                          for v in views}
  skipped = input_pipeline.skipped()
  result['skipped_files'] = {'count': len(skipped), 'files': sorted(skipped)[:20]}
  return result


def table(result: dict) -> str:
  views = [v for v in VIEWS if v in result['members'][0]]
  head = ' '.join(f'{v + "-crop top-1":>17} {v + "-crop top-5":>17}' for v in views)
  lines = [f'{"checkpoint":<50} {head}']
  rows = [(f'{m["workdir"]} @ {m["step"]}', m) for m in result['members']]
  if result['ensemble']:
    rows.append((f'ensemble of {len(result["members"])} (softmax averaged)', result['ensemble']))
  for name, r in rows:
    cells = ' '.join(f'{100 * r[v]["top1_err"]:16.2f}% {100 * r[v]["top5_err"]:16.2f}%'
                     for v in views)
    lines.append(f'{name[-50:]:<50} {cells}')
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logs.quiet_library_logs()
  f = flags.FLAGS
  steps = [int(s) for s in f.step] or [None]
  if not f.views or set(f.views) - set(VIEWS):
    raise app.UsageError(f'--views={",".join(f.views)}: choose from {", ".join(VIEWS)}.')
  try:
    result = evaluate(f.workdir, steps, views=tuple(f.views), batch_size=f.batch_size,
                      settings=f.set)
  except UserError as e:
    sys.exit(f'error: {e}')
  print(table(result))
  if result['skipped_files']['count']:
    print(f'{result["skipped_files"]["count"]} unreadable files left out (listed in the JSON).')
  first = result['members'][0]
  out = f.out or os.path.join(os.path.expanduser(first['workdir']),
                              f'eval-{first["step"]}{"-ensemble" if result["ensemble"] else ""}'
                              '.json')
  with open(out, 'w') as fh:
    json.dump(result, fh, indent=2)
  print(f'wrote {out}')


if __name__ == '__main__':
  flags.DEFINE_list('workdir', None, 'Training run folder(s); several make an ensemble.')
  flags.DEFINE_list('step', [], 'Checkpoint step(s) (default: the newest); several: ensemble.')
  flags.DEFINE_list('views', list(VIEWS), "'center' (one patch) and/or 'ten' (Section 4.1).")
  flags.DEFINE_integer('batch_size', 64, 'Images per batch (ten patches each for views=ten).')
  flags.DEFINE_multi_string('set', [], 'data.FIELD=VALUE: where the validation images are.')
  flags.DEFINE_string('out', '', 'JSON output file.')
  flags.mark_flags_as_required(['workdir'])
  app.run(main)
