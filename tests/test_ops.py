"""Each operation's forms against the paper's formula (NumPy) and against each other, values
and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax import implementations, ops
from tests import numpy_alexnet

LRN = dict(k=2.0, n=5, alpha=1e-4, beta=0.75)


def _grads(f, *args):
  """Gradients of a scalar that weighs every output differently, so no error can cancel."""
  return jax.grad(lambda *a: jnp.sin(f(*a)).sum(), argnums=tuple(range(len(args))))(*args)


@pytest.mark.parametrize('custom_gradient', [False, True])
@pytest.mark.parametrize('groups', [1, 2])
def test_lrn_matches_the_papers_formula(groups, custom_gradient):
  a = np.random.default_rng(0).normal(0, 30, size=(2, 3, 3, 16)).astype(np.float32)
  expected = numpy_alexnet.lrn(a, **LRN, towers=groups)
  got = ops.local_response_norm(jnp.asarray(a), groups=groups, custom_gradient=custom_gradient,
                                **LRN)
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5)


def test_lrn_never_mixes_the_towers():
  # A large activation in tower 2's first channel must leave tower 1's last channel untouched,
  # though it is its neighbour in the channel axis; within one tower it is divided.
  a = np.ones((1, 1, 1, 8), np.float32)
  b = a.copy()
  b[..., 4] = 1000.0
  towers = ops.local_response_norm(jnp.asarray(b), groups=2, **LRN)
  ref = ops.local_response_norm(jnp.asarray(a), groups=2, **LRN)
  assert towers[..., 3] == ref[..., 3]
  assert towers[..., 5] < ref[..., 5]
  single = ops.local_response_norm(jnp.asarray(b), groups=1, **LRN)
  assert single[..., 3] < ref[..., 3]


def test_lrn_alpha_multiplies_the_plain_sum():
  a = np.full((1, 1, 1, 5), 10.0, np.float32)  # center channel: 5 neighbours of 100 each
  got = ops.local_response_norm(jnp.asarray(a), groups=1, k=2.0, n=5, alpha=1e-2, beta=1.0)
  assert float(got[0, 0, 0, 2]) == pytest.approx(10.0 / (2.0 + 1e-2 * 500.0))  # not alpha / n


@pytest.mark.parametrize('groups,beta', [(1, 0.75), (2, 0.75), (2, 0.6)])
def test_lrn_custom_gradient_matches_autodiff_of_the_formula(groups, beta):
  x = jax.random.normal(jax.random.key(0), (3, 5, 5, 16)) * 30
  constants = dict(groups=groups, k=2.0, n=5, alpha=1e-3, beta=beta)
  ours, = _grads(lambda x: ops.local_response_norm(x, custom_gradient=True, **constants), x)
  plain, = _grads(lambda x: ops.local_response_norm(x, **constants), x)
  np.testing.assert_allclose(ours, plain, rtol=1e-4, atol=1e-5 * float(jnp.abs(plain).max()))


def test_max_pool_forms_match_numpy_and_each_other():
  x = jax.random.normal(jax.random.key(1), (2, 13, 13, 8))
  np.testing.assert_allclose(ops.max_pool(x, 3, 2), numpy_alexnet.maxpool(np.asarray(x)))
  np.testing.assert_array_equal(ops.max_pool_strided_views(x, 3, 2), ops.max_pool(x, 3, 2))
  np.testing.assert_allclose(_grads(lambda x: ops.max_pool_strided_views(x, 3, 2), x)[0],
                             _grads(lambda x: ops.max_pool(x, 3, 2), x)[0])


@pytest.mark.parametrize('form', [ops.conv, ops.conv_per_tower])
def test_grouped_conv_forms_match_numpy(form):
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, 9, 9, 8)).astype(np.float32)
  kernel = rng.normal(size=(5, 5, 4, 6)).astype(np.float32)
  expected = numpy_alexnet.conv(x, kernel, np.zeros(6), 1, 2, groups=2)
  got = form(jnp.asarray(x), jnp.asarray(kernel), 1, 2, 2)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(implementations.for_backend('cpu').cpu_conv_kernels != 'ynnpack',
                    reason='YNNPACK is chosen only on the CPUs it was measured on')
@pytest.mark.parametrize('stride,padding,groups', [(4, 0, 1), (1, 2, 2), (1, 1, 1)])
def test_ynnpack_convolutions_match_numpy_and_xlas_gradients(stride, padding, groups):
  rng = np.random.default_rng(4)
  size, k = (23, 11) if stride == 4 else (9, 2 * padding + 1)
  x = jnp.asarray(rng.normal(size=(2, size, size, 4)).astype(np.float32))
  kernel = jnp.asarray(rng.normal(size=(k, k, 4 // groups, 6)).astype(np.float32))
  conv = lambda x, kernel: ops.conv(x, kernel, stride, padding, groups)
  ynn = implementations.Implementation(cpu_conv_kernels='ynnpack')
  got = ynn.jit(conv)(x, kernel)
  expected = numpy_alexnet.conv(np.asarray(x), np.asarray(kernel), np.zeros(6), stride, padding,
                                groups=groups)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
  ours = ynn.jit(lambda *a: _grads(conv, *a))(x, kernel)
  xla = jax.jit(lambda *a: _grads(conv, *a))(x, kernel)
  for a, b in zip(ours, xla):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))


@pytest.mark.parametrize('size,padding', [(35, 0), (32, 2)])
def test_space_to_depth_conv_matches_numpy_and_the_direct_gradient(size, padding):
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(2, size, size, 3)).astype(np.float32))
  kernel = jnp.asarray(rng.normal(size=(11, 11, 3, 4)).astype(np.float32))
  got = ops.conv_space_to_depth(x, kernel, 4, padding)
  expected = numpy_alexnet.conv(np.asarray(x), np.asarray(kernel), np.zeros(4), 4, padding)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)
  ours = _grads(lambda x, k: ops.conv_space_to_depth(x, k, 4, padding), x, kernel)
  direct = _grads(lambda x, k: ops.conv(x, k, 4, padding), x, kernel)
  for ours, direct in zip(ours, direct):
    np.testing.assert_allclose(ours, direct, rtol=1e-4, atol=1e-4 * float(jnp.abs(direct).max()))


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_bias_matmul_gradient_matches_numpy_and_autodiff(dtype):
  rng = np.random.default_rng(5)
  y = rng.normal(size=(3, 5, 5, 6)).astype(np.float32)
  bias = rng.normal(size=(6,)).astype(np.float32)
  tolerance = dict(rtol=2e-2, atol=5e-2) if dtype == jnp.bfloat16 else dict(rtol=1e-5, atol=1e-5)
  y, bias = (np.asarray(jnp.asarray(a, dtype), np.float32) for a in (y, bias))  # representable
  got = ops.add_bias_matmul_gradient(jnp.asarray(y, dtype), jnp.asarray(bias, dtype))
  np.testing.assert_allclose(np.asarray(got, np.float32), y + bias, **tolerance)
  # The bias gradient is the sum of the maps' gradient over batch and positions, by hand.
  weights = rng.normal(size=y.shape).astype(np.float32)
  loss = lambda f: lambda y, b: (f(y, b).astype(jnp.float32) * weights).sum()
  dy, db = jax.grad(loss(ops.add_bias_matmul_gradient), argnums=(0, 1))(
      jnp.asarray(y, dtype), jnp.asarray(bias, dtype))
  assert db.dtype == dtype and dy.dtype == dtype
  np.testing.assert_allclose(np.asarray(db, np.float32), weights.sum(axis=(0, 1, 2)), **tolerance)
  np.testing.assert_allclose(np.asarray(dy, np.float32), weights, **tolerance)
  plain = jax.grad(loss(ops.add_bias), argnums=(0, 1))(jnp.asarray(y, dtype),
                                                        jnp.asarray(bias, dtype))
  for ours, theirs in zip((dy, db), plain):
    np.testing.assert_allclose(np.asarray(ours, np.float32), np.asarray(theirs, np.float32),
                               **tolerance)
