"""Figure 4: validation images and the six training images nearest them in fc7 feature space.

    python -m experiments.figure4 --workdir=runs/imagenette_small    # writes <workdir>/figure4.png

fc7 is the last hidden layer (4096 units in the paper's net; after its ReLU, test mode). Every
training image's center patch is passed through the net once; each query is a validation image
(--queries of them, spread over the classes), and its neighbours are the training images at the
smallest Euclidean distance (Section 6.1).
"""

import functools
import os
import sys

import jax
import numpy as np
from absl import app, flags

from alexnet_jax import (augment, cli, inference, input_pipeline, logs, sources, transforms,
                         visualize)
from alexnet_jax.errors import UserError
from experiments import plotting


def features(classifier, params, source, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
  """(fc7 features (N, D), source indices (N,)) of every readable image's center patch."""
  ds = input_pipeline.eval_dataset(source, batch_size=batch_size, resize=classifier.resize,
                                   decoder=classifier.decoder)
  center = jax.jit(functools.partial(augment.center_view, crop=classifier.crop))
  norm = jax.device_put(classifier.norm)
  feats, index = [], []
  for batch in ds:
    feats.append(classifier.features(params, center(batch['image'], norm)))
    index.append(batch['index'])
  return np.concatenate(feats), np.concatenate(index)


def thumbnail(source, index: int, size: int) -> np.ndarray:
  return transforms.resize_center_crop(transforms.decode(source[int(index)]['image_bytes']), size)


def draw(workdir: str, out: str, queries: int = 6, k: int = 6, overrides=None) -> str:
  plt = plotting.pyplot()

  classifier, params, config = inference.restore(workdir)
  cli.apply_data_overrides(config, overrides or {})  # {'data.FIELD': value}: where the images are
  train_src = sources.train_source(config.data)
  val_src = sources.eval_source(config.data, train_src.class_names)
  train_feats, train_index = features(classifier, params, train_src)
  # Queries: the first validation images of evenly spaced classes.
  labels = np.asarray(val_src.labels)
  classes = np.linspace(0, len(train_src.class_names) - 1, queries).round().astype(int)
  query_index = np.array([np.flatnonzero(labels == c)[0] for c in classes])
  query_inputs = classifier.preprocess([transforms.decode(val_src[int(i)]['image_bytes'])
                                   for i in query_index])
  nearest, dist = visualize.nearest(classifier.features(params, query_inputs), train_feats, k)
  fig, axes = plt.subplots(queries, k + 1, figsize=(1.3 * (k + 1), 1.45 * queries))
  size = config.data.resize_size
  for r, q in enumerate(query_index):
    row = [thumbnail(val_src, q, size)] + [thumbnail(train_src, train_index[j], size)
                                           for j in nearest[r]]
    titles = [f'query: {classifier.names[labels[q]]}'] + [
        f'{classifier.names[train_src.labels[train_index[j]]]}\nd={d:.3g}'
        for j, d in zip(nearest[r], dist[r])]
    for ax, image, title in zip(axes[r], row, titles):
      ax.imshow(image)
      ax.set_title(title, fontsize=6)
      ax.set_axis_off()
  fig.suptitle(f'The {k} training images nearest each validation image in fc7 space '
               f'({config.name})', fontsize=8)
  return plotting.save(fig, out, dpi=130)


def main(argv):
  del argv
  options = flags.FLAGS
  logs.quiet_library_logs()
  try:
    out = options.out or os.path.join(options.workdir, 'figure4.png')
    print('wrote', draw(options.workdir, out, options.queries, options.k, cli.overrides()))
  except UserError as e:
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  flags.DEFINE_string('workdir', None, 'A training run (or a checkpoint folder).')
  flags.DEFINE_integer('queries', 6, 'Query images (rows).')
  flags.DEFINE_integer('k', 6, 'Neighbours per query (the paper shows six).')
  cli.define_data_overrides('--config.data.FIELD=VALUE: where the images are now.')
  flags.DEFINE_string('out', '', 'The PNG to write (default: <workdir>/figure4.png; the figure '
                      'in experiments/README.md is experiments/figures/figure4.png).')
  flags.mark_flags_as_required(['workdir'])
  app.run(main, flags_parser=cli.parse_flags)
