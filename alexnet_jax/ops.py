"""How the network's operations are computed; alexnet_jax/model.py says what they compute.

Each operation has its plain form, written as docs/paper.md states it, and beside it a faster
form of the same mathematics for backends where XLA's own lowering of the plain form is slow.
Which form runs is alexnet_jax/implementations.py's choice; it never changes the parameters or
the outputs beyond float rounding.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

# Section 3.1: the units, rectified linear or the saturating tanh they are compared with.
ACTIVATIONS = {'relu': nn.relu, 'tanh': jnp.tanh}


# ---------------------------------------------------------------------------------------------
# Convolution, grouped into towers (Section 3.5's conv2, conv4, conv5).
# ---------------------------------------------------------------------------------------------


def conv(x: jax.Array, kernel: jax.Array, stride: int = 1, padding: int = 0,
         groups: int = 1) -> jax.Array:
  """Plain: XLA's convolution; `groups` towers each see only their own input channels."""
  return jax.lax.conv_general_dilated(x, kernel, (stride, stride), [(padding, padding)] * 2,
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                      feature_group_count=groups)


def conv_per_tower(x: jax.Array, kernel: jax.Array, stride: int = 1, padding: int = 0,
                   groups: int = 1) -> jax.Array:
  """`conv` as one ungrouped convolution per tower, concatenated: XLA:CPU's grouped
  convolution is far slower than its ordinary one."""
  return jnp.concatenate([conv(xt, kt, stride, padding)
                          for xt, kt in zip(jnp.split(x, groups, axis=-1),
                                            jnp.split(kernel, groups, axis=-1))], axis=-1)


def conv_space_to_depth(x: jax.Array, kernel: jax.Array, stride: int, padding: int = 0
                        ) -> jax.Array:
  """An ungrouped strided `conv` (conv1) as one matrix product over stride x stride blocks.

  The image is cut into s x s blocks (space to depth), each output position gathers its
  ceil(k/s)^2 neighbouring blocks as one row, and the k x k kernel, zero-padded to a multiple
  of s and folded the same way, multiplies them: exactly the strided convolution.
  """
  x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  n, h, w, c = x.shape
  k, s = kernel.shape[0], stride
  kb = -(-k // s)                                        # kernel size in blocks
  oh, ow = (h - k) // s + 1, (w - k) // s + 1
  hb, wb = oh + kb - 1, ow + kb - 1                      # input size in blocks
  x = x[:, :hb * s, :wb * s]
  x = jnp.pad(x, ((0, 0), (0, hb * s - x.shape[1]), (0, wb * s - x.shape[2]), (0, 0)))
  x = x.reshape(n, hb, s, wb, s, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, hb, wb, s * s * c)
  rows = jnp.concatenate([x[:, i:i + oh, j:j + ow] for i in range(kb) for j in range(kb)], -1)
  kernel = jnp.pad(kernel, ((0, kb * s - k), (0, kb * s - k), (0, 0), (0, 0)))
  kernel = kernel.reshape(kb, s, kb, s, c, -1).transpose(0, 2, 1, 3, 4, 5)
  return rows @ kernel.reshape(kb * kb * s * s * c, -1)


def add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
  """Plain: a layer's bias added to every position of its maps; autodiff sums the gradient."""
  return y + bias


@jax.custom_vjp
def add_bias_matmul_gradient(y: jax.Array, bias: jax.Array) -> jax.Array:
  """`add_bias` whose bias gradient, the sum of the maps' gradient over every position, is one
  matrix product with a row of ones: XLA:CPU fuses the plain sum with the element-wise
  backward pass before it into a slow column reduction."""
  return add_bias(y, bias)


def _add_bias_fwd(y, bias):
  return add_bias(y, bias), None


def _add_bias_bwd(_, g):
  channels = g.shape[-1]
  ones = jnp.ones((1, g.size // channels), g.dtype)
  bias_grad = jnp.dot(ones, g.reshape(-1, channels), preferred_element_type=jnp.float32)
  return g, bias_grad.reshape(channels).astype(g.dtype)


add_bias_matmul_gradient.defvjp(_add_bias_fwd, _add_bias_bwd)


# ---------------------------------------------------------------------------------------------
# Local response normalization (Section 3.3).
# ---------------------------------------------------------------------------------------------


def _window_sum(x: jax.Array, n: int) -> jax.Array:
  """sum_{j = i - n//2}^{i + n//2} x_j along the last axis, zero beyond its ends."""
  half = n // 2
  padded = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(half, half)])
  return sum(padded[..., j:j + x.shape[-1]] for j in range(2 * half + 1))


def _lrn_formula(a, k, n, alpha, beta):
  return a * (k + alpha * _window_sum(a * a, n)) ** -beta


def _inverse_power(d: jax.Array, beta: float) -> jax.Array:
  if beta == 0.75:  # d^-3/4 as rsqrt(d) * sqrt(rsqrt(d)): the same value, far cheaper than pow
    r = jax.lax.rsqrt(d)
    return r * jnp.sqrt(r)
  return d ** -beta


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _lrn_custom_gradient(a, k, n, alpha, beta):
  return _lrn_fwd(a, k, n, alpha, beta)[0]


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


_lrn_custom_gradient.defvjp(_lrn_fwd, _lrn_bwd)


def local_response_norm(x: jax.Array, *, groups: int, k: float, n: int, alpha: float,
                        beta: float, custom_gradient: bool = False) -> jax.Array:
  """b_i = a_i / (k + alpha * sum_{|j-i| <= n/2} a_j^2) ** beta, over channels (Section 3.3).

  The window never crosses a tower boundary (each group of C/groups channels is normalized on
  its own) and alpha multiplies the plain sum, as in the paper (not alpha / n, as in Caffe).
  Computed in float32 whatever the input dtype. `custom_gradient` replaces autodiff of the
  formula by a hand-written backward pass of one more window sum, cheaper on XLA:CPU.
  """
  *batch, c = x.shape
  a = x.astype(jnp.float32).reshape(*batch, groups, c // groups)
  formula = _lrn_custom_gradient if custom_gradient else _lrn_formula
  return formula(a, float(k), int(n), float(alpha), float(beta)).reshape(x.shape).astype(x.dtype)


class ResponseNormalized(nn.Module):
  """The fields of Section 3.3's normalization, for a network module that applies it.

  Attributes:
    lrn: whether the network applies it (where its table has it).
    lrn_k, lrn_n, lrn_alpha, lrn_beta: its constants (paper: 2, 5, 1e-4, 0.75).
  """
  lrn: bool = True
  lrn_k: float = 2.0
  lrn_n: int = 5
  lrn_alpha: float = 1e-4
  lrn_beta: float = 0.75

  def response_norm(self, x: jax.Array, implementation, groups: int) -> jax.Array:
    """x normalized within each of `groups` towers, in `implementation`'s form (an
    implementations.Implementation), or x itself where `lrn` is off."""
    if not self.lrn:
      return x
    return implementation.local_response_norm(x, groups=groups, k=self.lrn_k, n=self.lrn_n,
                                              alpha=self.lrn_alpha, beta=self.lrn_beta)


# ---------------------------------------------------------------------------------------------
# Max-pooling (Section 3.4).
# ---------------------------------------------------------------------------------------------


def max_pool(x: jax.Array, window: int, stride: int) -> jax.Array:
  """Plain: VALID max-pooling by XLA's reduce_window."""
  return nn.max_pool(x, (window, window), (stride, stride))


def max_pool_strided_views(x: jax.Array, window: int, stride: int) -> jax.Array:
  """`max_pool` as the maximum of window^2 strided views of x: its gradient is a few
  element-wise selects instead of XLA's select-and-scatter, which XLA:CPU runs slowly."""
  _, h, w, _ = x.shape
  oh, ow = (h - window) // stride + 1, (w - window) // stride + 1
  views = [x[:, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride]
           for i in range(window) for j in range(window)]
  return functools.reduce(jnp.maximum, views)
