"""The four-layer CNN of the paper's CIFAR-10 experiments (Figure 1, the LRN claim; §3.1, §3.3).

The paper does not print this net's layers; it is cuda-convnet's CIFAR-10 net of the time
(`layers-18pct`): three 5x5 convolutions of 32, 32 and 64 kernels, each followed by 3x3/2
max-pooling, and a 10-way fully connected layer: four learned layers. `lrn` adds the paper's
response normalization after the first two pooling layers, as that net had it. Section 3.1
compares it with ReLU and with tanh units; no regularization of any kind (no dropout, no weight
decay in the Figure 1 runs, no augmentation).
"""

import dataclasses
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from alexnet_jax import implementations, ops


class CifarCNN(ops.ResponseNormalized):
  """conv1 -> pool -> [LRN] -> conv2 -> pool -> [LRN] -> conv3 -> pool -> fc4 (32x32 input).

  Attributes:
    num_classes: 10 for CIFAR-10.
    conv_features: kernels in conv1..conv3 (cuda-convnet: 32, 32, 64).
    activation: 'relu' or 'tanh' (Figure 1 compares them).
    lrn, lrn_k, lrn_n, lrn_alpha, lrn_beta: the paper's local response normalization after
      pool1 and pool2 (the 11% vs 13% claim), and its constants (ops.ResponseNormalized).
    input_scale: multiplies the mean-subtracted 0-255 images first.
    dtype: compute dtype; parameters are float32.
    implementation: how LRN and pooling are computed (alexnet_jax/implementations.py);
      create_model resolves the config's choice.
  """
  num_classes: int = 10
  conv_features: tuple[int, int, int] = (32, 32, 64)
  activation: Literal['relu', 'tanh'] = 'relu'
  lrn: bool = False
  input_scale: float = 1 / 64
  dtype: jnp.dtype = jnp.float32
  implementation: implementations.Implementation = dataclasses.field(kw_only=True)

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool) -> jax.Array:
    del train  # no dropout: the Figure 1 nets have no regularization
    act = ops.ACTIVATIONS[self.activation]
    # The same fan-in scaled Gaussian for both activations, so only the units differ.
    init = nn.initializers.lecun_normal()
    impl = self.implementation

    lrn = lambda x: self.response_norm(x, impl, groups=1)
    def pool(x):
      return impl.max_pool(x, 3, 2)

    def conv(name, features):
      return nn.Conv(features, (5, 5), padding=2, kernel_init=init, dtype=self.dtype,
                     param_dtype=jnp.float32, name=name)

    x = (images * self.input_scale).astype(self.dtype)
    x = lrn(pool(act(conv('conv1', self.conv_features[0])(x))))               # 32 -> 15
    x = lrn(pool(act(conv('conv2', self.conv_features[1])(x))))               # 15 -> 7
    x = pool(act(conv('conv3', self.conv_features[2])(x)))                    # 7 -> 3
    x = x.reshape(x.shape[0], -1)                                              # 3*3*64 = 576
    logits = nn.Dense(self.num_classes, kernel_init=init, dtype=self.dtype,
                      param_dtype=jnp.float32, name='fc4')(x)
    return logits.astype(jnp.float32)
