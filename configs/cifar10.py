"""The paper's four-layer CNN on CIFAR-10 (Figure 1 and the LRN claim): alexnet_jax.cifar_cnn.

    tar -xzf ../shared/data/cifar10-jpeg.tar.gz -C ~/.cache/alexnet_jax/cifar10
    python -m alexnet_jax.main --config=configs/cifar10.py --workdir=runs/cifar10

CIFAR10_DIR names the folder that holds train/ and test/ (default ~/.cache/alexnet_jax/cifar10).
As in Figure 1: no regularization of any kind (no weight decay, dropout or augmentation), the
32x32 images whole, the per-pixel mean image subtracted; a constant learning rate. One epoch
is 390 steps of 128, and the training error is logged once per epoch (its mean over the epoch).
experiments/figure1.py runs the ReLU/tanh comparison and the LRN pair from this config.
"""

import os

import ml_collections

from configs import default


def get_config():
  config = default.get_config()
  config.name = 'cifar10'
  config.model = ml_collections.ConfigDict(dict(
      arch='cifar_cnn', num_classes=10, conv_features=(32, 32, 64), activation='relu', lrn=False,
      lrn_k=2.0, lrn_n=5, lrn_alpha=1e-4, lrn_beta=0.75, input_scale=1 / 64, dtype='float32'))
  root = default.dataset_root(config, 'CIFAR10_DIR', '~/.cache/alexnet_jax/cifar10')
  config.data.train_dir = os.path.join(root, 'train')
  config.data.val_dir = os.path.join(root, 'test')
  config.data.tfds_name = 'cifar10'     # with --config.data.source=tfds: TFDS's copy, PNGs
  config.data.tfds_eval_split = 'test'
  config.data.resize_size = 32
  config.data.crop_size = 32
  config.data.flip = False
  config.data.lighting_std = 0.0
  config.optim.lr_policy = 'constant'
  config.optim.base_lr = 0.01
  config.optim.weight_decay = 0.0
  config.batch_size = 128
  config.num_epochs = 30
  config.log_every_steps = 390         # one log line per epoch: the epoch's training error
  config.checkpoint_every_steps = 3900
  config.keep_checkpoints = 1
  return config
