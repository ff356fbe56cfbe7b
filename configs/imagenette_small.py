"""The paper's recipe on Imagenette at the scale of a 2-core CPU: the base of the ablation sweeps.

    python -m alexnet_jax.main --config=configs/imagenette_small.py --workdir=runs/imagenette_small
    python -m experiments.sweep --sweep=ablations --root=runs/ablations

Imagenette's 9,469 training images (10 ImageNet classes) at 72x72 with 67x67 crops, a quarter of
the paper's width, 18 epochs: a run takes minutes on a laptop CPU. What stays the paper's: the
two towers, ReLU, LRN, overlapping pooling, dropout, flips, PCA lighting, the mean image, SGD
with momentum 0.9 and weight decay 5e-4, batch 128. What does not, and why: fan-in scaled init
on pixels / 64 (the paper's N(0, 0.01) leaves so narrow a net at chance for longer than these
runs last; configs/demo.py), and a learning rate of 0.01 divided by 10 at fixed epochs 12 and
16 rather than on plateaus, so that every ablation trains for the same steps.
Results (and the scale caveat) are in experiments/README.md.
"""

import os

from configs import default, demo, imagenette


def get_config():
  config = demo.small_network(default.get_config())
  config.name = 'imagenette_small'
  root = imagenette.data_root(config)
  config.data.train_dir = os.path.join(root, 'train')
  config.data.val_dir = os.path.join(root, 'val')
  config.data.tfds_name = 'imagenette'  # with --config.data.source=tfds (README, "Data sources")
  config.optim.lr_policy = 'step'
  config.optim.step_epochs = (12, 16)
  config.num_epochs = 18
  config.log_every_steps = 73         # 73 steps of 128 make an epoch: one training record each
  config.checkpoint_every_steps = 730
  config.keep_checkpoints = 1
  return config
