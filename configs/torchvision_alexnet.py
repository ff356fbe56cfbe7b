"""torchvision's AlexNet (`IMAGENET1K_V1`, the one-tower variant of "One weird trick"): its
network, and as much of the recipe behind the weights as this project's input path expresses.

Import the published weights (56.522% top-1 / 79.066% top-5 accuracy published for ILSVRC-2012
validation, center crop), then evaluate them on your ImageNet validation set:

    pip install -e '.[torch]'      # reads the .pth file (torch's weights_only loader)
    python -m alexnet_jax.import_weights --config=configs/torchvision_alexnet.py \
        --weights=alexnet-owt-7be5be79.pth --workdir=runs/torchvision_alexnet
    python -m alexnet_jax.evaluate --workdir=runs/torchvision_alexnet \
        --config.data.val_dir=/data/imagenet/val

The network: one tower of 64, 192, 384, 256 and 256 kernels, no LRN, conv1 padded by 2 for
224x224 crops. torchvision scales pixels to 0-1 and normalizes each channel by the mean (0.485,
0.456, 0.406) and std (0.229, 0.224, 0.225); the import keeps the mean as a constant mean image
(255 times it) and folds the stds into conv1, so the checkpoint reads 0-255 pixels minus its mean
image, as every other one here does.

Training from scratch (python -m alexnet_jax.main --config=configs/torchvision_alexnet.py)
follows torchvision's reference recipe where this project can: batch 256, rate 0.01 divided by 10
every 30 epochs, 90 epochs, momentum 0.9, weight decay 1e-4 on every parameter, flips, no PCA
lighting. What still differs:
  * torchvision trains on RandomResizedCrop patches (8-100% of the area, aspect 3/4-4/3, resized
    to 224); here, random 224x224 patches of the central 256x256 square, as in the paper.
  * torchvision divides each channel by its std; here the centered pixels are scaled by one
    factor, 1 / (255 x 0.226), the three stds' mean (they lie within 2% of it).
  * torch.optim.SGD applies the rate after the momentum buffer; here it is inside it (the
    paper's rule). The two agree until the first drop of the rate.
  * torchvision's dropout acts on fc6's and fc7's inputs, here on their outputs; its
    initialization is PyTorch's default (uniform, fan-in scaled), here the 'he' scheme.
"""

from alexnet_jax.import_weights import TORCHVISION_STD
from configs import paper


def get_config():
  config = paper.get_config()
  config.name = 'torchvision_alexnet'
  m = config.model
  m.towers = 1
  m.conv_features = (64, 192, 384, 256, 256)
  m.lrn = False
  m.conv1_padding = 2
  m.init_scheme = 'he'
  m.input_scale = 1 / (255 * sum(TORCHVISION_STD) / 3)
  config.mesh.model = 1

  config.data.crop_size = 224
  # Pillow decodes and resizes as torchvision's evaluation transforms do, pixel for pixel
  # (experiments/README.md); --config.data.decoder=auto is faster and moves the logits slightly.
  config.data.decoder = 'pillow'
  config.data.lighting_std = 0.0
  o = config.optim
  o.weight_decay = 1e-4
  o.decay_biases = True
  o.lr_policy = 'step'
  o.step_epochs = (30, 60)
  config.batch_size = 256
  config.num_epochs = 90
  return config
