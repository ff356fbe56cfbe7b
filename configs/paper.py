"""The paper's full recipe on ILSVRC-2012: 90 epochs, batch 128, the two-tower network.

    python -m alexnet_jax.main --config=configs/paper.py --workdir=runs/paper \
        --config.data.train_dir=/data/imagenet/train --config.data.val_dir=/data/imagenet/val

ImageNet is read as an ImageFolder tree (one folder per synset); with IMAGENET_DIR set, its
train/ and val/ sub-folders are used. val/ may also be the flat folder of 50,000 JPEGs as
distributed, with IMAGENET_VAL_LABELS naming the devkit's ground truth (meta.mat beside it) or
a CSV of file name,synset. Other copies of ImageNet: --config.data.source=tfds (imagenet2012
in ArrayRecord format) or packed (see README, "Data sources"). The paper: 5-6 days on two
GTX 580s; 40.7% top-1 and 18.2% top-5 validation error for one CNN (Table 2). With 2 or more
devices the towers lie one per device as on the paper's two GPUs (mesh.model = 2), and further
pairs split the batch; on one device the same network runs whole.
"""

import os

from configs import default


def get_config():
  config = default.get_config()
  config.name = 'paper'
  root = default.dataset_root(config, 'IMAGENET_DIR', '~/data/imagenet')
  config.data.train_dir = os.path.join(root, 'train')
  config.data.val_dir = os.path.join(root, 'val')
  config.data.val_labels = os.environ.get('IMAGENET_VAL_LABELS', '')
  config.data.tfds_name = 'imagenet2012'
  config.mesh.model = 0         # 2 (one tower per device) when there are 2+ devices, else 1
  return config
