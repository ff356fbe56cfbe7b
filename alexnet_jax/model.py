"""AlexNet as docs/paper.md's architecture table describes it (Krizhevsky et al. 2012, Section 3).

One line per learned layer, named as the paper names them. The two GPU towers are grouped
convolutions (`feature_group_count=towers`): channels [0, C/2) are tower 1, [C/2, C) tower 2.
conv2, conv4 and conv5 see only their own tower; conv3 and the fully connected layers see both.

The parameter tree is a contract that checkpoints and notebooks rely on: `conv1` ... `conv5`,
`fc6` ... `fc8`, each holding exactly one `kernel` (Flax layout, grouped shape) and one `bias`.
"""

import dataclasses
from typing import Callable, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from alexnet_jax import implementations, ops
from alexnet_jax.cifar_cnn import CifarCNN

DTYPES = ('float32', 'bfloat16')  # compute dtypes; parameters are always float32
# Conv layers an ablation may remove: Section 7, "removing any of the middle layers results in a
# loss of about 2% for the top-1 performance".
MIDDLE_CONVS = (2, 3, 4)

# Section 5: biases are 1 (`positive_bias`) in conv2, conv4, conv5 and the hidden FC layers, 0
# elsewhere.
_BIAS_ONE = frozenset({'conv2', 'conv4', 'conv5', 'fc6', 'fc7'})


def widened(features: int, width: float, towers: int) -> int:
  """A layer's kernel count under the `width` multiplier: at least one kernel per tower."""
  return max(towers, round(features * width))


class Conv(nn.Module):
  """A convolution whose kernels are split into `groups` towers, each seeing only its own
  tower's input channels, with nn.Conv's parameters: `kernel` (k, k, C_in / groups, features)
  and `bias`. How it is computed is `implementation`'s choice (alexnet_jax/implementations.py)."""
  features: int
  kernel_size: int
  stride: int
  padding: int
  groups: int
  implementation: implementations.Implementation
  kernel_init: Callable
  bias_init: Callable
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    kernel = self.param('kernel', self.kernel_init,
                        (k, k, x.shape[-1] // self.groups, self.features), jnp.float32)
    bias = self.param('bias', self.bias_init, (self.features,), jnp.float32)
    y = self.implementation.conv(x.astype(self.dtype), kernel.astype(self.dtype), self.stride,
                                 self.padding, self.groups)
    return self.implementation.add_bias(y, bias.astype(self.dtype))


class AlexNet(ops.ResponseNormalized):
  """The network of Krizhevsky, Sutskever and Hinton (2012), with its ablations as fields.

  Attributes:
    num_classes: output classes (1000 for ILSVRC).
    towers: 2 is the paper's two-GPU net (grouped conv2/4/5, LRN within each tower); 1 is a
      single tower.
    conv_features: kernels in conv1..conv5 (paper: 96, 256, 384, 384, 256).
    fc_features: units in fc6 and fc7 (paper: 4096).
    width: multiplier on every conv and hidden FC layer's width (1.0 is the paper).
    activation: 'relu' (paper, Section 3.1) or 'tanh' (the saturating baseline of Figure 1).
    lrn, lrn_k, lrn_n, lrn_alpha, lrn_beta: local response normalization after the ReLU of
      conv1 and conv2, and its constants (Section 3.3; fields of ops.ResponseNormalized).
    lrn_across_towers: the LRN window runs over the whole layer, across the tower boundary, as
      Caffe's AlexNet computes it; False (the paper's towers) keeps each tower's sums apart.
    pool_window, pool_stride: max-pooling (paper: 3, 2, overlapping; Section 3.4).
    conv1_padding: 0 for the default 227x227 input; 2 for 224x224 (torchvision's reading).
    dropout_rate: dropout on the outputs of fc6 and fc7 (paper: 0.5; Section 4.2).
    init_scheme: 'paper' draws every kernel from N(0, init_std^2) and sets the biases to 0 or 1
      (Section 5); 'he' scales each layer's Gaussian by its fan-in (He et al. 2015) with zero
      biases, which trains narrow variants from the first step.
    init_std: standard deviation of the zero-mean Gaussian for every kernel (paper: 0.01).
    hidden_fc_init_std: the same for fc6 and fc7 under init_scheme 'paper'; None is init_std
      (the paper). Caffe's AlexNet draws them with 0.005.
    positive_bias: the constant of the biases the paper sets to 1 (conv2, conv4, conv5, fc6,
      fc7) under init_scheme 'paper'. Caffe's AlexNet uses 0.1: the mean activation these biases
      create multiplies every update's effect on all images alike, which few classes cannot
      afford (experiments/README.md).
    input_std: the input pixels' standard deviation that 'he' scales conv1 for (mean-subtracted
      0-255 pixels: about 64).
    input_scale: multiplies the images before conv1 (paper: 1, the network sees the centered
      0-255 values themselves).
    dtype: compute dtype (float32 or bfloat16); parameters are always float32.
    implementation: how the convolutions, LRN and pooling are computed, never the mathematics or
      the parameters (alexnet_jax/implementations.py); create_model resolves the config's choice.
    skip_convs: middle conv layers (2, 3, 4) left out, for Section 7's ablation. A removed
      layer's convolution, ReLU and LRN go; its pooling stays, so the maps keep their sizes, and
      the next layer reads the previous layer's maps (towers stay apart where conv3 is removed).

  The fc7 activations (after ReLU, before dropout: the 4096-d features of Figure 4) are sown as
  `features/fc7_act`: `model.apply(v, x, train=False, mutable=['features'])` returns them.
  """
  num_classes: int = 1000
  towers: Literal[1, 2] = 2
  conv_features: tuple[int, int, int, int, int] = (96, 256, 384, 384, 256)
  fc_features: int = 4096
  width: float = 1.0
  activation: Literal['relu', 'tanh'] = 'relu'
  pool_window: int = 3
  pool_stride: int = 2
  conv1_padding: int = 0
  dropout_rate: float = 0.5
  init_scheme: Literal['paper', 'he'] = 'paper'
  init_std: float = 0.01
  hidden_fc_init_std: float | None = None
  positive_bias: float = 1.0
  input_std: float = 64.0
  input_scale: float = 1.0
  dtype: jnp.dtype = jnp.float32
  implementation: implementations.Implementation = dataclasses.field(kw_only=True)
  skip_convs: tuple[int, ...] = ()
  lrn_across_towers: bool = False

  def _features(self, n: int) -> int:
    return widened(n, self.width, self.towers)

  def _kernel_init(self, name: str, input_std: float = 1.0):
    if self.init_scheme == 'he':
      return nn.initializers.variance_scaling(2.0 / input_std**2, 'fan_in', 'normal')
    if name in ('fc6', 'fc7') and self.hidden_fc_init_std is not None:
      return nn.initializers.normal(self.hidden_fc_init_std)
    return nn.initializers.normal(self.init_std)

  def _bias_init(self, name):
    one = self.init_scheme == 'paper' and name in _BIAS_ONE
    return nn.initializers.constant(self.positive_bias if one else 0.0)

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool) -> jax.Array:
    """Maps NHWC float images (mean-subtracted, 0-255 scale) to float32 logits."""
    impl = self.implementation
    act = ops.ACTIVATIONS[self.activation]
    both, own = 1, self.towers  # groups: a layer sees both towers' maps, or its own tower's

    def conv(name, x, features, size, stride, padding, groups, lrn=False):
      """The layer, its ReLU and, where the table has it, its LRN."""
      if int(name[-1]) in self.skip_convs:  # Section 7's ablation: all three go
        return x
      scale = self.input_std * self.input_scale if name == 'conv1' else 1.0
      x = act(Conv(self._features(features), size, stride, padding, groups, impl,
                   self._kernel_init(name, scale), self._bias_init(name), self.dtype,
                   name=name)(x))
      lrn_groups = 1 if self.lrn_across_towers else self.towers
      return self.response_norm(x, impl, groups=lrn_groups) if lrn else x

    def pool(x):
      return impl.max_pool(x, self.pool_window, self.pool_stride)

    def fc(name, x, features):
      return nn.Dense(features, kernel_init=self._kernel_init(name),
                      bias_init=self._bias_init(name), dtype=self.dtype, param_dtype=jnp.float32,
                      name=name)(x)

    dropout = lambda x: nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    f1, f2, f3, f4, f5 = self.conv_features
    x = (images * self.input_scale if self.input_scale != 1.0 else images).astype(self.dtype)
    #             layer        kernels size stride padding           groups
    x = pool(conv('conv1', x, f1, 11, 4, self.conv1_padding, both, lrn=True))  # 55 -> 27
    x = pool(conv('conv2', x, f2, 5, 1, 2, own, lrn=True))                     # 27 -> 13
    x = conv('conv3', x, f3, 3, 1, 1, both)
    x = conv('conv4', x, f4, 3, 1, 1, own)
    x = pool(conv('conv5', x, f5, 3, 1, 1, own))                               # 13 -> 6
    x = x.reshape(x.shape[0], -1)                                              # 6*6*256 = 9216
    x = dropout(act(fc('fc6', x, self._features(self.fc_features))))
    x = act(fc('fc7', x, self._features(self.fc_features)))
    self.sow('features', 'fc7_act', x)                                         # Figure 4
    x = dropout(x)
    return fc('fc8', x, self.num_classes).astype(jnp.float32)


def count_params(params) -> int:
  return sum(p.size for p in jax.tree_util.tree_leaves(params))


def dropout_key(run_key: jax.Array, step: jax.Array) -> jax.Array:
  """The key of the dropout masks of the update that follows `step` steps: a function of the
  run's key and the step alone, so that a resumed run draws what an uninterrupted one does."""
  return jax.random.fold_in(run_key, step)


# config.model.arch names the network; the other config.model fields are its module fields.
ARCHITECTURES = {'alexnet': AlexNet, 'cifar_cnn': CifarCNN}


def create_model(model_config: ml_collections.ConfigDict,
                 implementation: str = 'auto') -> 'AlexNet | CifarCNN':
  """The network `config.model` describes: `arch` names the module, the other fields are its
  fields. `implementation` is the config's field of that name (implementations.choose), resolved
  here once for this backend."""
  fields = dict(model_config)
  arch = ARCHITECTURES[fields.pop('arch', 'alexnet')]
  for name, value in fields.items():
    if isinstance(value, (list, tuple)):
      fields[name] = tuple(value)
  fields['dtype'] = jnp.dtype(fields['dtype'])
  return arch(**fields, implementation=implementations.choose(implementation))
