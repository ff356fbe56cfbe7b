"""FLOPs of AlexNet counted from its layer shapes.

XLA's cost analysis cannot serve on a GPU: convolutions become cuDNN calls that it does not
count. So every benchmark uses this count, on every backend. The convention:

- Counted: the multiply-adds of conv1..conv5 and fc6..fc8, 2 FLOPs each, every kernel tap
  included (also those on conv2..conv5's zero padding, which the hardware multiplies too).
- Not counted: bias adds, ReLU, LRN, pooling, dropout, softmax and the optimizer's update:
  element-wise work, about 1% of the forward's FLOPs in XLA's CPU count (the benchmarks'
  peaks, experiments/peaks.py, are matrix-unit peaks, which element-wise work cannot use).
- The network's mathematics, not the implementation's: conv1 as `ops.conv_space_to_depth`
  multiplies a kernel zero-padded from 11x11 to 12x12 (19% more work in conv1), not counted.
- A training step is the forward pass, every layer's weight gradient (as much work as its
  forward) and every layer's input gradient except conv1's (the images need none):
  3 x forward - conv1's forward.

The paper's network: 724,406,816 multiply-adds, so 1.45 GFLOP forward and 4.14 GFLOP per
trained image (tests/test_flops.py counts the paper's table by hand and checks XLA's count).
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from alexnet_jax.model import AlexNet, Conv


@dataclasses.dataclass(frozen=True)
class Layer:
  """One learned layer's shape; a fully connected layer is a 1x1 'convolution' of 1x1 maps."""
  name: str
  in_size: int           # input maps are in_size x in_size x in_channels
  in_channels: int
  kernel: int
  stride: int
  padding: int
  groups: int            # towers the kernels are split into (conv2, conv4, conv5)
  out_size: int
  out_channels: int

  @property
  def macs(self) -> int:
    """Multiply-adds per image."""
    return (self.out_size**2 * self.out_channels *
            self.kernel**2 * self.in_channels // self.groups)


def layers(model: AlexNet, image_size: int) -> list[Layer]:
  """The learned layers `model` applies to image_size x image_size images, in order, as the
  model itself builds them: read from a shape-only trace (no arrays, no FLOPs) that records
  every `Conv` and `nn.Dense` call's input and output shapes."""
  if not isinstance(model, AlexNet):
    raise TypeError(f'FLOPs are counted for AlexNet, not {type(model).__name__}.')
  found = []

  def record(call, args, kwargs, context):
    layer = context.module
    if context.method_name != '__call__' or not isinstance(layer, (Conv, nn.Dense)):
      return call(*args, **kwargs)
    x = args[0]
    if isinstance(layer, nn.Dense):
      found.append(Layer(layer.name, 1, x.shape[-1], 1, 1, 0, 1, 1, layer.features))
      if not x.shape[-1]:  # maps shrunk to nothing: no weights to draw (config_check says so)
        return jnp.zeros((*x.shape[:-1], layer.features), x.dtype)
      return call(*args, **kwargs)
    out = call(*args, **kwargs)
    found.append(Layer(layer.name, x.shape[1], x.shape[-1], layer.kernel_size, layer.stride,
                       layer.padding, layer.groups, out.shape[1], out.shape[-1]))
    return out

  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  with nn.intercept_methods(record):
    jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
  return found


def forward_flops(model: AlexNet, image_size: int) -> int:
  """FLOPs of one image's forward pass (2 per multiply-add of conv1..fc8)."""
  return 2 * sum(layer.macs for layer in layers(model, image_size))


def train_flops(model: AlexNet, image_size: int) -> int:
  """FLOPs of one image's share of a training step: forward, weight gradients, and input
  gradients of every layer but conv1 (3 x forward - conv1's forward)."""
  conv1 = 2 * layers(model, image_size)[0].macs
  return 3 * forward_flops(model, image_size) - conv1
