"""AlexNet as PAPER.md's architecture table describes it (Krizhevsky et al. 2012, Section 3).

One line per learned layer, named as the paper names them. The two GPU towers are grouped
convolutions (`feature_group_count=towers`): channels [0, C/2) are tower 1, [C/2, C) tower 2.
conv2, conv4 and conv5 see only their own tower; conv3 and the fully connected layers see both.

The parameter tree is a contract that checkpoints and notebooks rely on: `conv1` ... `conv5`,
`fc6` ... `fc8`, each holding exactly one `kernel` (Flax layout, grouped shape) and one `bias`.
"""

import functools
from typing import Callable, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

# The device-mesh axis that holds one tower per device (alexnet_jax.sharding builds the mesh).
TOWER_AXIS = 'model'

# Section 5: biases are 1 (`positive_bias`) in conv2, conv4, conv5 and the hidden FC layers, 0
# elsewhere.
_BIAS_ONE = frozenset({'conv2', 'conv4', 'conv5', 'fc6', 'fc7'})


def _window_sum(x: jax.Array, n: int) -> jax.Array:
  """sum_{j = i - n//2}^{i + n//2} x_j along the last axis, zero beyond its ends."""
  half = n // 2
  padded = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(half, half)])
  return sum(padded[..., j:j + x.shape[-1]] for j in range(2 * half + 1))


def _inverse_power(d: jax.Array, beta: float) -> jax.Array:
  if beta == 0.75:  # d^-3/4 as rsqrt(d) * sqrt(rsqrt(d)): the same value, far cheaper than pow
    r = jax.lax.rsqrt(d)
    return r * jnp.sqrt(r)
  return d ** -beta


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _lrn(a, k, n, alpha, beta):
  return a * _inverse_power(k + alpha * _window_sum(a * a, n), beta)


def _lrn_fwd(a, k, n, alpha, beta):
  d = k + alpha * _window_sum(a * a, n)
  scale = _inverse_power(d, beta)
  return a * scale, (a, d, scale)


def _lrn_bwd(k, n, alpha, beta, residuals, g):
  # d b_i / d a_j = scale_i [i = j] - 2 alpha beta a_i a_j scale_i / d_i for j in window(i);
  # the window is symmetric, so the second term sums over window(j) again.
  del k
  a, d, scale = residuals
  t = g * a * scale / d
  return (g * scale - 2 * alpha * beta * a * _window_sum(t, n),)


_lrn.defvjp(_lrn_fwd, _lrn_bwd)


def local_response_norm(x: jax.Array, *, groups: int, k: float, n: int, alpha: float,
                        beta: float) -> jax.Array:
  """Section 3.3: b_i = a_i / (k + alpha * sum_{|j-i| <= n/2} a_j^2) ** beta, over channels.

  The window never crosses a tower boundary (each group of C/groups channels is normalized on
  its own) and alpha multiplies the plain sum, as in the paper (not alpha / n, as in Caffe).
  Computed in float32 whatever the input dtype, with a hand-written gradient (one more window
  sum) that XLA:CPU runs several times faster than the differentiated formula.
  """
  *batch, c = x.shape
  a = x.astype(jnp.float32).reshape(*batch, groups, c // groups)
  return _lrn(a, float(k), int(n), float(alpha), float(beta)).reshape(x.shape).astype(x.dtype)


def max_pool(x: jax.Array, window: int, stride: int) -> jax.Array:
  """VALID max-pooling as the maximum of window^2 strided views of x.

  The same values as `nn.max_pool`; its gradient is a few element-wise selects instead of
  XLA's select-and-scatter, which is several times slower on CPU.
  """
  _, h, w, _ = x.shape
  oh, ow = (h - window) // stride + 1, (w - window) // stride + 1
  views = [x[:, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride]
           for i in range(window) for j in range(window)]
  return functools.reduce(jnp.maximum, views)


def _conv(x: jax.Array, kernel: jax.Array, stride: int = 1, padding: int = 0,
          groups: int = 1) -> jax.Array:
  return jax.lax.conv_general_dilated(x, kernel, (stride, stride), [(padding, padding)] * 2,
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                      feature_group_count=groups)


def space_to_depth_conv(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """A VALID convolution with stride s as one matrix product over s x s pixel blocks.

  The image is cut into s x s blocks (space to depth), each output position gathers its
  ceil(k/s)^2 neighbouring blocks as one row, and the k x k kernel, zero-padded to a multiple
  of s and folded the same way, multiplies them: exactly the strided convolution. For conv1
  (11x11, stride 4, 3 channels) XLA:CPU runs this, forward and weight gradient, in about half
  the time of its direct convolution.
  """
  n, h, w, c = x.shape
  k = kernel.shape[0]
  kb = -(-k // stride)                                   # kernel size in blocks
  oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
  hb, wb = oh + kb - 1, ow + kb - 1                      # input size in blocks
  x = x[:, :hb * stride, :wb * stride]
  x = jnp.pad(x, ((0, 0), (0, hb * stride - x.shape[1]), (0, wb * stride - x.shape[2]), (0, 0)))
  x = x.reshape(n, hb, stride, wb, stride, c).transpose(0, 1, 3, 2, 4, 5)
  x = x.reshape(n, hb, wb, stride * stride * c)
  rows = jnp.concatenate([x[:, i:i + oh, j:j + ow] for i in range(kb) for j in range(kb)], -1)
  kernel = jnp.pad(kernel, ((0, kb * stride - k), (0, kb * stride - k), (0, 0), (0, 0)))
  kernel = kernel.reshape(kb, stride, kb, stride, c, -1).transpose(0, 2, 1, 3, 4, 5)
  return rows @ kernel.reshape(kb * kb * stride * stride * c, -1)


class TowerConv(nn.Module):
  """A convolution whose kernels are split into `towers` groups that each see only their own
  tower's input channels, with nn.Conv's parameters: `kernel` (kh, kw, C_in / towers, C_out)
  and `bias`.

  `split=True` computes one ordinary convolution per tower and concatenates them, which is the
  same mathematics as `feature_group_count=towers` and several times faster on XLA:CPU;
  `space_to_depth=True` computes a strided ungrouped convolution as `space_to_depth_conv`.
  Inside a device mesh whose `TOWER_AXIS` has one device per tower, each device convolves
  its own tower's maps with its own kernels, as the paper's two GPUs did.
  """
  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 0
  towers: int = 1
  split: bool = True
  space_to_depth: bool = True
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    kernel = self.param('kernel', self.kernel_init,
                        (k, k, x.shape[-1] // self.towers, self.features), jnp.float32)
    bias = self.param('bias', self.bias_init, (self.features,), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    if self.towers > 1 and jax.sharding.get_abstract_mesh().shape.get(TOWER_AXIS) == self.towers:
      # XLA's partitioner would gather a grouped conv's operands; shard_map keeps each tower local.
      channels = P(None, None, None, TOWER_AXIS)
      y = jax.shard_map(functools.partial(_conv, stride=self.stride, padding=self.padding),
                        in_specs=(channels, channels), out_specs=channels,
                        axis_names={TOWER_AXIS})(x, kernel)
    elif self.towers > 1 and self.split:
      y = jnp.concatenate([_conv(xt, kt, self.stride, self.padding)
                           for xt, kt in zip(jnp.split(x, self.towers, axis=-1),
                                             jnp.split(kernel, self.towers, axis=-1))], axis=-1)
    elif self.stride > 1 and self.towers == 1 and self.space_to_depth:
      pad = self.padding
      y = space_to_depth_conv(jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0))), kernel,
                              self.stride)
    else:
      y = _conv(x, kernel, self.stride, self.padding, self.towers)
    return y + bias.astype(self.dtype)


class AlexNet(nn.Module):
  """The network of Krizhevsky, Sutskever and Hinton (2012), with its ablations as fields.

  Attributes:
    num_classes: output classes (1000 for ILSVRC).
    towers: 2 is the paper's two-GPU net (grouped conv2/4/5, LRN within each tower); 1 is a
      single tower.
    conv_features: kernels in conv1..conv5 (paper: 96, 256, 384, 384, 256).
    fc_features: units in fc6 and fc7 (paper: 4096).
    width: multiplier on every conv and hidden FC layer's width (1.0 is the paper).
    activation: 'relu' (paper, Section 3.1) or 'tanh' (the saturating baseline of Figure 1).
    lrn: local response normalization after the ReLU of conv1 and conv2 (Section 3.3).
    lrn_k, lrn_n, lrn_alpha, lrn_beta: its constants (paper: 2, 5, 1e-4, 0.75).
    pool_window, pool_stride: max-pooling (paper: 3, 2, overlapping; Section 3.4).
    conv1_padding: 0 for the default 227x227 input; 2 for 224x224 (torchvision's reading).
    dropout_rate: dropout on the outputs of fc6 and fc7 (paper: 0.5; Section 4.2).
    init_scheme: 'paper' draws every kernel from N(0, init_std^2) and sets the biases to 0 or 1
      (Section 5); 'he' scales each layer's Gaussian by its fan-in (He et al. 2015) with zero
      biases, which trains narrow variants from the first step.
    init_std: standard deviation of the zero-mean Gaussian for every kernel (paper: 0.01).
    positive_bias: the constant of the biases the paper sets to 1 (conv2, conv4, conv5, fc6,
      fc7) under init_scheme 'paper'. Caffe's AlexNet uses 0.1: the mean activation these biases
      create multiplies every update's effect on all images alike, which few classes cannot
      afford (experiments/README.md).
    input_std: the input pixels' standard deviation that 'he' scales conv1 for (mean-subtracted
      0-255 pixels: about 64).
    input_scale: multiplies the images before conv1 (paper: 1, the network sees the centred
      0-255 values themselves).
    dtype: compute dtype (float32 or bfloat16); parameters are always float32.
    split_towers: compute grouped convolutions tower by tower (faster on CPU) rather than with
      `feature_group_count`; the mathematics and the parameters are the same.
    space_to_depth: compute conv1 as one matrix product over 4x4 pixel blocks (faster on CPU,
      see `space_to_depth_conv`); again the same mathematics and parameters.
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
  lrn: bool = True
  lrn_k: float = 2.0
  lrn_n: int = 5
  lrn_alpha: float = 1e-4
  lrn_beta: float = 0.75
  pool_window: int = 3
  pool_stride: int = 2
  conv1_padding: int = 0
  dropout_rate: float = 0.5
  init_scheme: Literal['paper', 'he'] = 'paper'
  init_std: float = 0.01
  positive_bias: float = 1.0
  input_std: float = 64.0
  input_scale: float = 1.0
  dtype: jnp.dtype = jnp.float32
  split_towers: bool = True
  space_to_depth: bool = True
  skip_convs: tuple[int, ...] = ()

  def _features(self, n: int) -> int:
    return max(self.towers, round(n * self.width))

  def _kernel_init(self, input_std: float = 1.0):
    if self.init_scheme == 'he':
      return nn.initializers.variance_scaling(2.0 / input_std**2, 'fan_in', 'normal')
    return nn.initializers.normal(self.init_std)

  def _bias_init(self, name):
    one = self.init_scheme == 'paper' and name in _BIAS_ONE
    return nn.initializers.constant(self.positive_bias if one else 0.0)

  def _conv(self, name, kernel, stride=1, padding=0, groups=1):
    index = int(name[-1]) - 1
    return TowerConv(self._features(self.conv_features[index]), kernel, stride, padding, groups,
                     split=self.split_towers, space_to_depth=self.space_to_depth,
                     kernel_init=self._kernel_init(
                         self.input_std * self.input_scale if name == 'conv1' else 1.0),
                     bias_init=self._bias_init(name), dtype=self.dtype, name=name)

  def _dense(self, name, features):
    return nn.Dense(features, kernel_init=self._kernel_init(),
                    bias_init=self._bias_init(name),
                    dtype=self.dtype, param_dtype=jnp.float32, name=name)

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool) -> jax.Array:
    """Maps NHWC float images (mean-subtracted, 0-255 scale) to float32 logits."""
    act = {'relu': nn.relu, 'tanh': jnp.tanh}[self.activation]
    t = self.towers

    def norm(x):
      if not self.lrn:
        return x
      return local_response_norm(x, groups=t, k=self.lrn_k, n=self.lrn_n, alpha=self.lrn_alpha,
                                 beta=self.lrn_beta)

    def pool(x):
      return max_pool(x, self.pool_window, self.pool_stride)

    def layer(name, x, kernel, padding, groups, then=lambda y: y):
      if int(name[-1]) in self.skip_convs:  # Section 7's ablation: conv, ReLU (and LRN) go
        return x
      return then(act(self._conv(name, kernel, padding=padding, groups=groups)(x)))

    x = (images * self.input_scale if self.input_scale != 1.0 else images).astype(self.dtype)
    x = pool(norm(act(self._conv('conv1', 11, 4, self.conv1_padding)(x))))      # 55 -> 27
    x = pool(layer('conv2', x, 5, 2, t, then=norm))                             # 27 -> 13
    x = layer('conv3', x, 3, 1, 1)                                              # both towers
    x = layer('conv4', x, 3, 1, t)
    x = pool(act(self._conv('conv5', 3, padding=1, groups=t)(x)))              # 13 -> 6
    x = x.reshape(x.shape[0], -1)                                               # 6*6*256 = 9216
    fc = self._features(self.fc_features)
    dropout = lambda x: nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = dropout(act(self._dense('fc6', fc)(x)))                                 # both towers
    x = act(self._dense('fc7', fc)(x))
    self.sow('features', 'fc7_act', x)                                          # Figure 4
    x = dropout(x)
    return self._dense('fc8', self.num_classes)(x).astype(jnp.float32)


def count_params(params) -> int:
  return sum(p.size for p in jax.tree_util.tree_leaves(params))
