"""The paper's one-GPU comparison net: one tower with half as many kernels in each conv layer.

    python -m alexnet_jax.main --config=configs/one_tower.py --workdir=runs/one_tower \
        --config.data.train_dir=/data/imagenet/train --config.data.val_dir=/data/imagenet/val

Section 6.1: the two-tower net is 1.7% (top-1) and 1.2% (top-5) better than "a net with half as
many kernels in each convolutional layer trained on one GPU". The paper's footnote keeps conv5
and the fully connected layers at full size, so that both nets have about as many parameters
(most sit in fc6, which reads conv5): 59.8M against 61.0M. Everything else is configs/paper.py.
"""

from configs import paper


def get_config():
  config = paper.get_config()
  config.name = 'one_tower'
  config.model.towers = 1
  config.model.conv_features = (48, 128, 192, 192, 256)
  config.mesh.model = 1         # one tower, nothing to split: extra devices split the batch
  return config
