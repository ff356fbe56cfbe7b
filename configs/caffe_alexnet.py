"""Caffe's reference AlexNet (`bvlc_alexnet`): its network, and the recipe that trained it.

Import the published weights (57.1% top-1 / 80.2% top-5 accuracy published for ILSVRC-2012
validation, center crop), then evaluate them on your ImageNet validation set:

    python -m alexnet_jax.import_weights --config=configs/caffe_alexnet.py \
        --weights=bvlc_alexnet.caffemodel --mean=imagenet_mean.binaryproto \
        --workdir=runs/bvlc_alexnet
    python -m alexnet_jax.evaluate --workdir=runs/bvlc_alexnet \
        --config.data.val_dir=/data/imagenet/val

Train it from scratch as Caffe's `solver.prototxt` and `train_val.prototxt` did:

    python -m alexnet_jax.main --config=configs/caffe_alexnet.py --workdir=runs/caffe_alexnet

The network is the paper's two-tower net with Caffe's local response normalization: k = 1, and
alpha divided by the window size n (`lrn_alpha` holds 1e-4 / 5, as the paper's formula
multiplies the plain sum by it), its window running over the whole layer across the tower
boundary. Caffe reads BGR images; the import turns conv1's input channels to RGB, so the
checkpoint reads images as every other one here does.

The recipe: biases 0.1 where the paper has 1 (Caffe's readme: biases of 1 "gave flat loss"), fc6
and fc7 drawn with std 0.005, biases learning at twice the rate and without weight decay, no PCA
lighting, batch 256, the rate 0.01 divided by 10 every 100,000 iterations, 450,000 iterations
(about 90 epochs); the validation set every 1,000 iterations and a snapshot every 10,000. Caffe's
update rule is the paper's (the rate inside the momentum buffer). What still differs:
  * Caffe warps every image to 256x256, ignoring its aspect ratio; here the shorter side becomes
    256 and the central 256x256 patch is kept (the paper's way), in training and evaluation.
  * Caffe subtracts the mean image of its warped training images (imagenet_mean.binaryproto);
    training here computes the mean image of the training set as the data section reads it.
"""

from configs import paper


def get_config():
  config = paper.get_config()
  config.name = 'caffe_alexnet'
  m = config.model
  m.lrn_k = 1.0
  m.lrn_alpha = 1e-4 / 5        # Caffe's alpha / local_size
  m.lrn_across_towers = True
  m.positive_bias = 0.1
  m.hidden_fc_init_std = 0.005

  config.data.lighting_std = 0.0
  o = config.optim
  o.bias_lr_scale = 2.0         # lr_mult: 2 on every bias (decay_mult: 0, the default here)
  o.lr_policy = 'step'
  o.step_steps = (100_000, 200_000, 300_000, 400_000)  # stepsize: 100000, gamma: 0.1
  config.batch_size = 256
  config.num_train_steps = 450_000
  config.eval_every_steps = 1_000
  config.checkpoint_every_steps = 10_000
  return config
