"""The paper's model and recipe on Imagenette: 10 ImageNet classes, 9,469 training JPEGs.

    python -m alexnet_jax.main --config=configs/imagenette.py --workdir=runs/imagenette \
        --config.data.train_dir=../shared/data/imagenette/train \
        --config.data.val_dir=../shared/data/imagenette/val

Everything is PAPER.md's except the 10-way output layer and its learning rate: fc8 learns at
base_lr * 10 / 1000 (optim.fc8_lr_scale), because with 10 classes each class is the true label
of 100 times more images per batch than with ImageNet's 1000, so at the paper's rate each logit
moves 100 times further per step, the first steps overshoot and the ReLUs die
(--config.optim.fc8_lr_scale=1 is the literal recipe). Results are in experiments/README.md.
The same images from TFDS: --config.data.source=tfds (tfds_name 'imagenette'); packed once with
`python -m alexnet_jax.prepare --config=configs/imagenette.py --out=DIR`, then
--config.data.source=packed --config.data.packed_dir=DIR.
"""

import os

from configs import default


def get_config():
  config = default.get_config()
  config.name = 'imagenette'
  config.model.num_classes = 10
  config.optim.fc8_lr_scale = config.model.num_classes / 1000  # each logit moves as on ImageNet
  root = os.environ.get('IMAGENETTE_DIR', '../shared/data/imagenette')
  config.data.train_dir = os.path.join(root, 'train')
  config.data.val_dir = os.path.join(root, 'val')
  config.data.tfds_name = 'imagenette'
  config.eval_every_steps = -1
  config.log_every_steps = 10
  config.diagnostics_every_steps = 25
  config.checkpoint_every_steps = 500
  return config
