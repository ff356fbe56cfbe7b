"""Top-1 and top-5 error of checkpoints, from one center patch and from the paper's ten patches,
alone and as softmax-averaged ensembles (Table 2's "5 CNNs" rows), with per-class accuracy and
the confusion matrix.

    python -m alexnet_jax.evaluate --workdir=runs/imagenette_small
    python -m alexnet_jax.evaluate --workdir=runs/imagenette_small --step=1314
    python -m alexnet_jax.evaluate --workdir=runs/imagenette_small --step=best
    python -m alexnet_jax.evaluate --workdir=runs/seed0,runs/seed1,runs/seed2   # an ensemble
    python -m alexnet_jax.evaluate --workdir=runs/imagenette_small --images=DIR \
        --predictions=preds.csv      # any ImageFolder; one row per image

Each checkpoint is read with the config saved beside it and evaluated on that config's
validation split (--config.data.val_dir=PATH and the like point it elsewhere), or on --images, any
folder of `<class>/<image>` files whose class folders are among the checkpoint's classes. Several
--workdir (or several --step of one workdir) are also evaluated together: their softmax outputs
averaged per image. Prints a table and writes JSON (--out; default <first workdir>/eval-<step>.json)
holding, per view, the errors, each class's top-1 and top-5 accuracy and the confusion matrix
(rows: true class, columns: top-1 prediction), drawn beside it as <json>-confusion-<view>.png
(with matplotlib installed). --predictions writes a CSV for the first view: per image its file,
label, top-5 classes and their probabilities, and the label's probability. With several
checkpoints, the PNG and the CSV are the ensemble's.
"""

import csv
import dataclasses
import functools
import json
import os
import time
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging

from alexnet_jax import augment, checkpointing, cli, input_pipeline, sources
from alexnet_jax.errors import DataError, UserError
from alexnet_jax.inference import (checkpoint_config, display_name, normalization,
                                   top_classes, view_probabilities)
from alexnet_jax.model import create_model
from alexnet_jax.stats import Normalization

VIEWS = ('center', 'ten')
FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class _Prepared:
  """What evaluating one checkpoint needs, read once for all its views."""
  network: nn.Module
  params: Any               # on the device
  source: Any               # the validation split, or the ImageFolder `images`
  norm: Normalization
  data: ml_collections.ConfigDict  # the checkpoint's data config, overrides applied


def _prepare(loaded: checkpointing.Loaded, overrides: Mapping[str, Any] = MappingProxyType({}),
             images: str = '') -> _Prepared:
  """One checkpoint, ready to evaluate; `images` (an ImageFolder) replaces the config's
  validation split."""
  config = checkpoint_config(loaded, overrides)  # the decoder training used, then overrides
  data_config = config.data
  class_names = list(loaded.class_names) or list(sources.train_source(data_config).class_names)
  eval_src = (sources.ImageFolder(images, class_names=class_names) if images
              else sources.eval_source(data_config, class_names))
  return _Prepared(network=create_model(config.model), params=jax.device_put(loaded.params),
                   source=eval_src, norm=normalization(loaded, data_config), data=data_config)


def top_k_misses(scores, labels, ks: Sequence[int] = (1, 5)) -> tuple[jax.Array, ...]:
  """For each k in `ks`, per example 1.0 where the label is not among the k highest scores,
  else 0.0: jittable (the training and evaluation steps) and on NumPy arrays alike."""
  hit = top_classes(scores, max(ks)) == labels[:, None]
  return tuple(1.0 - hit[:, :k].any(-1).astype(jnp.float32) for k in ks)


def top_k_errors(probs: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 5)) -> dict:
  """{'top1_err': ..., 'top5_err': ...}: the fraction of rows whose label is not in the top k."""
  return {f'top{k}_err': float(np.asarray(misses).mean(dtype=np.float64))
          for k, misses in zip(ks, top_k_misses(probs, labels, ks))}


@functools.cache
def _batch_probabilities(network, crop: int, views: str):
  """(params, uint8 images, norm) -> softmax averaged over the views the device cuts from the
  images (Section 4.1), jitted with the network's compiler options."""
  return network.implementation.jit(lambda params, images, norm: view_probabilities(
      network, params, augment.eval_inputs(images, norm, crop=crop, views=views)))


def _view_probabilities(prepared: _Prepared, views: str, batch_size: int):
  data_config = prepared.data
  ds = input_pipeline.eval_dataset(prepared.source, batch_size=batch_size,
                                   resize=data_config.resize_size, threads=data_config.threads,
                                   decoder=data_config.decoder)
  norm = jax.device_put(prepared.norm)
  probs, labels, index = [], [], []
  for batch in ds:
    n = len(batch['label'])
    padded = input_pipeline.pad_batch(batch, batch_size)  # one compiled shape for every batch
    probabilities = _batch_probabilities(prepared.network, data_config.crop_size, views)
    probs.append(np.asarray(probabilities(prepared.params, padded['image'], norm))[:n])
    labels.append(batch['label'])
    index.append(batch['index'])
  if not probs:
    raise DataError(f'No validation image of {prepared.source!r} could be read.')
  return np.concatenate(probs), np.concatenate(labels), np.concatenate(index)


def probabilities(loaded: checkpointing.Loaded, views: str, batch_size: int,
                  overrides: Mapping[str, Any] = MappingProxyType({})
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(probs (N, classes), labels (N,), source indices (N,)) of one checkpoint on its
  validation images; with views='ten' each row is the mean softmax of the ten patches."""
  return _view_probabilities(_prepare(loaded, overrides), views, batch_size)


def per_class(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
  """Each class's top-1 and top-5 accuracy (None for a class without images), its image count,
  and the confusion matrix: row = true class, column = top-1 prediction."""
  order = np.asarray(top_classes(probs, 5))  # one ranking for the matrix and the top-5 hits
  confusion = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(confusion, (labels, order[:, 0]), 1)
  images = confusion.sum(1)
  top5 = np.bincount(labels[(order == labels[:, None]).any(-1)], minlength=num_classes)
  acc = lambda hits: [float(h / n) if n else None for h, n in zip(hits, images)]
  return {'per_class_top1_acc': acc(np.diag(confusion)), 'per_class_top5_acc': acc(top5),
          'per_class_images': images.tolist(), 'confusion': confusion.tolist()}


def _name_of(source, i: int) -> str:
  """The file (or record name) of a source's image i."""
  return source.name(i) if hasattr(source, 'name') else str(source[i]['name'])


def _write_predictions(path: str, probs: np.ndarray, labels: np.ndarray, index: np.ndarray,
                       source, class_names: list[str]) -> None:
  """One CSV row per image: file, label, the top-5 classes and probabilities, p(label)."""
  order = np.asarray(top_classes(probs, 5))
  k = order.shape[-1]
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['file', 'label', *(f'top{j + 1}' for j in range(k)),
                     *(f'p_top{j + 1}' for j in range(k)), 'p_label'])
    for row, (i, label) in enumerate(zip(index, labels)):
      writer.writerow([_name_of(source, int(i)), class_names[label],
                       *(class_names[c] for c in order[row]),
                       *(f'{probs[row, c]:.6g}' for c in order[row]),
                       f'{probs[row, label]:.6g}'])


def evaluate(workdirs: list[str], steps: list[int | str | None], *, views=VIEWS,
             batch_size: int = 64, overrides: Mapping[str, Any] = MappingProxyType({}),
             images: str = '', predictions: str = '') -> dict:
  """Errors, per-class accuracy and confusion matrices of every (workdir, step) checkpoint and,
  for several, of their ensemble; on the checkpoints' validation split, or on the ImageFolder
  `images`. `overrides`: {'data.FIELD': value}, where the images are now. `predictions`: a CSV
  path for the per-image predictions of the first view."""
  members = [(w, s) for w in workdirs for s in steps]
  result = {'members': [], 'ensemble': None}
  sums: dict[str, np.ndarray] = {}
  reference = None
  for workdir, step in members:
    loaded = checkpointing.load(workdir, step)
    prepared = _prepare(loaded, overrides, images)
    num_classes = len(loaded.class_names) or prepared.network.num_classes
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
      logging.info('%s step %d, %s: %s', workdir, loaded.step, v, entry[v])
      entry[v].update(per_class(probs, labels, num_classes))
      sums[v] = sums.get(v, 0) + probs
    result['members'].append(entry)
  labels, index = reference[0], reference[1]
  result['class_names'] = list(prepared.source.class_names)
  if len(members) > 1:
    result['ensemble'] = {v: {**top_k_errors(sums[v] / len(members), labels),
                              'images': int(len(labels)), 'members': len(members),
                              **per_class(sums[v] / len(members), labels, num_classes)}
                          for v in views}
  if predictions:
    _write_predictions(predictions, sums[views[0]] / len(members), labels, index,
                       prepared.source, result['class_names'])
  # The images that did not decode are those whose index never arrived (the log says why).
  source = prepared.source
  skipped = sorted(set(range(len(source))) - set(index.tolist()))
  result['skipped_files'] = {'count': len(skipped),
                             'files': [_name_of(source, i) for i in skipped[:20]]}
  return result


def confusion_pngs(result: dict, stem: str) -> list[str]:
  """Draws the confusion matrix of each view (the ensemble's, for several checkpoints) as
  `<stem>-confusion-<view>.png`; nothing, with a warning, where matplotlib is not installed."""
  try:  # Figure without pyplot: no backend chosen, no window, whatever the caller uses
    from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top  (optional)
  except ImportError:
    logging.warning("matplotlib is not installed, so the confusion matrix is only in the JSON; "
                    "pip install -e '.[experiments]' draws it.")
    return []
  headline = result['ensemble'] or result['members'][0]
  names = [display_name(c) for c in result['class_names']]
  written = []
  for v in (v for v in VIEWS if v in headline):
    confusion = np.asarray(headline[v]['confusion'])
    rows = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)  # each true class sums to 1
    n = len(names)
    side = min(max(4.0, 0.35 * n + 2), 40.0)
    fig = Figure(figsize=(side, side))
    ax = fig.subplots()
    ax.imshow(rows, cmap='Blues', vmin=0, vmax=1)
    if n <= 50:  # names and counts are readable
      ax.set_xticks(range(n), names, rotation=90, fontsize=7)
      ax.set_yticks(range(n), names, fontsize=7)
      for (i, j), count in np.ndenumerate(confusion):
        if count:
          ax.text(j, i, str(count), ha='center', va='center', fontsize=6,
                  color='white' if rows[i, j] > 0.5 else 'black')
    ax.set_xlabel('top-1 prediction')
    ax.set_ylabel('true class')
    ax.set_title(f'{v} crop: top-1 error {100 * headline[v]["top1_err"]:.2f}% on '
                 f'{headline[v]["images"]} images (rows normalized)', fontsize=9)
    fig.tight_layout()
    written.append(f'{stem}-confusion-{v}.png')
    fig.savefig(written[-1], dpi=120)
  return written


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
  cli.start(argv)
  cli.use_compilation_cache()
  steps = list(FLAGS.step) or [None]  # numbers or 'best', read by checkpointing.load
  if not FLAGS.views or set(FLAGS.views) - set(VIEWS):
    raise app.UsageError(f'--views={",".join(FLAGS.views)}: choose from {", ".join(VIEWS)}.')
  with cli.one_line_errors():
    result = evaluate(FLAGS.workdir, steps, views=tuple(FLAGS.views),
                      batch_size=FLAGS.batch_size, overrides=cli.overrides(),
                      images=FLAGS.images, predictions=FLAGS.predictions)
  print(table(result))
  if result['skipped_files']['count']:
    print(f'{result["skipped_files"]["count"]} unreadable files left out (listed in the JSON).')
  first = result['members'][0]
  out = FLAGS.out or os.path.join(os.path.expanduser(first['workdir']),
                              f'eval-{first["step"]}{"-ensemble" if result["ensemble"] else ""}'
                              '.json')
  with open(out, 'w') as fh:
    json.dump(result, fh, indent=2)
  print(f'wrote {out}')
  for path in confusion_pngs(result, os.path.splitext(out)[0]) + (
      [FLAGS.predictions] if FLAGS.predictions else []):
    print(f'wrote {path}')


if __name__ == '__main__':
  flags.DEFINE_list('workdir', None, 'Training run folder(s); several make an ensemble.')
  flags.DEFINE_list('step', [], "Checkpoint step(s) (default: the newest; 'best': the lowest "
                    'validation top-1 error); several: ensemble.')
  flags.DEFINE_list('views', list(VIEWS), "'center' (one patch) and/or 'ten' (Section 4.1).")
  flags.DEFINE_integer('batch_size', 64, 'Images per batch (ten patches each for views=ten).')
  cli.define_data_overrides('--config.data.FIELD=VALUE: where the validation images are now.')
  flags.DEFINE_string('out', '', 'JSON output file.')
  flags.DEFINE_string('images', '', 'Evaluate on this ImageFolder (<class>/<image>, the classes '
                      'among the checkpoint\'s) instead of the validation split.')
  flags.DEFINE_string('predictions', '', 'CSV file for the per-image predictions (file, label, '
                      'top-5 and probabilities) of the first view.')
  flags.mark_flags_as_required(['workdir'])
  app.run(main, flags_parser=cli.parse_flags)
