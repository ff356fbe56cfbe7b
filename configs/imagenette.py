"""The paper's model and recipe on Imagenette: 10 ImageNet classes, 9,469 training JPEGs.

    python -m alexnet_jax.main --config=configs/imagenette.py --workdir=runs/imagenette \
        --config.data.train_dir=../shared/data/imagenette/train \
        --config.data.val_dir=../shared/data/imagenette/val

Everything is docs/paper.md's except the 10-way output layer and one adaptation to so few classes:
the biases the paper sets to 1 are 0.1, as in Caffe's AlexNet (model.positive_bias). With 10
classes each class is the true label of 100 times more images per batch than with ImageNet's
1000, so each step moves every image's logits 100 times further in the same direction; the large
mean activations the biases of 1 create multiply that move, the first steps overshoot and the
ReLUs die (--config.model.positive_bias=1 is the literal recipe). Results: experiments/README.md.
The same images from TFDS: --config.data.source=tfds (tfds_name 'imagenette'); packed once with
`python -m alexnet_jax.prepare --config=configs/imagenette.py --out=DIR`, then
--config.data.source=packed --config.data.packed_dir=DIR.
"""

import os

from configs import default

# The development copy beside the repository (../shared/data/imagenette), wherever one runs from.
_BESIDE_REPO = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), 'shared', 'data', 'imagenette')


def data_root(config) -> str:
  """$IMAGENETTE_DIR (the folder holding train/ and val/), else the copy beside the repository."""
  return default.dataset_root(config, 'IMAGENETTE_DIR', _BESIDE_REPO)


def get_config():
  config = default.get_config()
  config.name = 'imagenette'
  config.model.num_classes = 10
  config.model.positive_bias = 0.1  # the paper's 1 kills a 10-class net in 8 steps
  root = data_root(config)
  config.data.train_dir = os.path.join(root, 'train')
  config.data.val_dir = os.path.join(root, 'val')
  config.data.tfds_name = 'imagenette'
  config.eval_every_steps = -1
  config.log_every_steps = 10
  config.diagnostics_every_steps = 25
  config.checkpoint_every_steps = 500
  return config
