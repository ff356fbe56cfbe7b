"""The network against docs/paper.md: parameter tree, count, initialization, and logits against an
independent NumPy network under every implementation (alexnet_jax/implementations.py)."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax import implementations
from alexnet_jax.cifar_cnn import CifarCNN
from alexnet_jax.model import AlexNet, count_params
from tests import numpy_alexnet

# Every operation in both of its forms (YNNPACK's convolutions on the CPUs that choose them).
IMPLEMENTATIONS = {
    'plain': implementations.PLAIN,
    'fast': implementations.Implementation('per_tower', 'space_to_depth', 'custom_gradient',
                                           'strided_views',
                                           implementations.for_backend('cpu').cpu_conv_kernels,
                                           'matmul_gradient')}
# What create_model resolves implementation='auto' to on this backend.
AUTO = implementations.for_backend()

PAPER_SHAPES = {
    'conv1': (11, 11, 3, 96), 'conv2': (5, 5, 48, 256), 'conv3': (3, 3, 256, 384),
    'conv4': (3, 3, 192, 384), 'conv5': (3, 3, 192, 256), 'fc6': (9216, 4096),
    'fc7': (4096, 4096), 'fc8': (4096, 1000),
}


def _init(model, x, seed: int):
  """Parameters initialized under jit: run op by op, XLA:CPU would compile every primitive."""
  return jax.jit(model.init, static_argnames='train')(jax.random.key(seed), x, train=False)[
      'params']


def _apply(model, params, x, **kwargs):
  """The model jitted as training jits it, with its implementation's compiler options."""
  return model.implementation.jit(model.apply, static_argnames='train')({'params': params}, x,
                                                                        **kwargs)


def _shapes(model, size):
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)),
                                                train=False))
  return variables['params']


@pytest.mark.parametrize('size,padding', [(227, 0), (224, 2)])
def test_parameter_tree_and_count(size, padding):
  params = _shapes(AlexNet(conv1_padding=padding, implementation=AUTO), size)
  assert list(params) == list(PAPER_SHAPES)
  for name, shape in PAPER_SHAPES.items():
    assert set(params[name]) == {'kernel', 'bias'}
    assert params[name]['kernel'].shape == shape
    assert params[name]['bias'].shape == (shape[-1],)
    assert params[name]['kernel'].dtype == jnp.float32
  assert count_params(params) == 60_965_224


def test_spatial_sizes_follow_the_paper():
  model = AlexNet(implementation=AUTO)
  _, state = jax.eval_shape(lambda: model.init_with_output(
      jax.random.key(0), jnp.zeros((1, 227, 227, 3)), train=False,
      capture_intermediates=True))
  inter = flax.core.unfreeze(state)['intermediates']
  sides = [inter[n]['__call__'][0].shape[1] for n in ('conv1', 'conv2', 'conv3', 'conv5')]
  assert sides == [55, 27, 13, 13]
  assert inter['fc6']['__call__'][0].shape == (1, 4096)


def test_initialization_is_the_papers():
  params = AlexNet(implementation=AUTO).init(jax.random.key(0), jnp.zeros((1, 227, 227, 3)),
                                             train=False)['params']
  for name in PAPER_SHAPES:
    kernel = np.asarray(params[name]['kernel'])
    assert abs(kernel.mean()) < 1e-3, name
    assert kernel.std() == pytest.approx(0.01, rel=0.05 if kernel.size > 1e5 else 0.1), name
    expected_bias = 1.0 if name in ('conv2', 'conv4', 'conv5', 'fc6', 'fc7') else 0.0
    np.testing.assert_array_equal(np.asarray(params[name]['bias']), expected_bias)


def test_positive_bias_changes_only_the_biases_the_paper_sets_to_one():
  init = lambda **kw: _init(AlexNet(width=0.125, **kw, implementation=AUTO),
                            jnp.zeros((1, 67, 67, 3)), 0)
  paper, caffe = init(), init(positive_bias=0.1)
  for name in PAPER_SHAPES:
    np.testing.assert_array_equal(caffe[name]['kernel'], paper[name]['kernel'])
    np.testing.assert_array_equal(caffe[name]['bias'], 0.1 * paper[name]['bias'])


@pytest.mark.parametrize('implementation', IMPLEMENTATIONS)
def test_full_size_logits_match_an_independent_numpy_network(implementation):
  model = AlexNet(implementation=IMPLEMENTATIONS[implementation])
  images = np.random.default_rng(1).normal(0, 60, size=(2, 227, 227, 3)).astype(np.float32)
  params = _init(model, images[:1], 3)
  # Larger weights than the paper's 0.01 so that every layer's signal matters in the logits.
  params = jax.tree.map(lambda p: p * 3.0, params)
  got = np.asarray(_apply(model, params, images, train=False))
  expected = numpy_alexnet.forward(jax.device_get(params), images)
  np.testing.assert_allclose(got, expected, rtol=2e-3, atol=2e-3 * np.abs(expected).max())


@pytest.mark.parametrize('implementation', IMPLEMENTATIONS)
@pytest.mark.parametrize('towers,padding,size', [(1, 0, 67), (2, 2, 64)])
def test_variant_logits_match_numpy(towers, padding, size, implementation):
  model = AlexNet(num_classes=7, towers=towers, width=0.25, conv1_padding=padding,
                  activation='tanh', implementation=IMPLEMENTATIONS[implementation])
  images = np.random.default_rng(2).normal(0, 60, size=(3, size, size, 3)).astype(np.float32)
  params = _init(model, images[:1], 0)
  params = jax.tree.map(lambda p: p * 5.0, params)
  got = np.asarray(_apply(model, params, images, train=False))
  expected = numpy_alexnet.forward(jax.device_get(params), images, conv1_padding=padding,
                                   towers=towers, act=np.tanh)
  np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())


def test_caffe_lrn_across_the_towers_matches_numpy():
  """Caffe's AlexNet: k = 1, alpha / n, and the window running across the tower boundary (the
  LRN forms with one group are held to NumPy in tests/test_ops.py)."""
  model = AlexNet(num_classes=7, width=0.25, lrn_k=1.0, lrn_alpha=2e-5, lrn_across_towers=True,
                  implementation=implementations.PLAIN)
  images = np.random.default_rng(4).normal(0, 60, size=(2, 67, 67, 3)).astype(np.float32)
  params = jax.tree.map(lambda p: p * 20.0, _init(model, images[:1], 1))
  got = np.asarray(_apply(model, params, images, train=False))
  expected = numpy_alexnet.forward(jax.device_get(params), images, lrn_towers=1, k=1.0,
                                   alpha=2e-5)
  np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())
  within = numpy_alexnet.forward(jax.device_get(params), images, k=1.0, alpha=2e-5)
  assert np.abs(within - expected).max() > 1e-2 * np.abs(expected).max()  # the field matters


def test_hidden_fc_init_std_draws_fc6_and_fc7_alone():
  model = AlexNet(hidden_fc_init_std=0.005, implementation=AUTO)
  for name, std in (('conv3', 0.01), ('fc6', 0.005), ('fc7', 0.005), ('fc8', 0.01)):
    init = model._kernel_init(name)  # pylint: disable=protected-access
    kernel = init(jax.random.key(0), (512, 512))
    assert float(jnp.std(kernel)) == pytest.approx(std, rel=0.02), name


def test_gradients_are_the_same_under_every_implementation():
  """The fast forms' hand-written backward passes (LRN, bias), strided views and per-tower
  convolutions give the plain forms' gradient of the whole network's loss."""
  images = np.random.default_rng(3).normal(0, 60, size=(3, 67, 67, 3)).astype(np.float32)
  labels = np.array([0, 3, 6])
  grads = {}
  for name, implementation in IMPLEMENTATIONS.items():
    model = AlexNet(num_classes=7, width=0.125, init_scheme='he', implementation=implementation)
    params = _init(model, images[:1], 0)

    def loss(params, model=model):
      logits = model.apply({'params': params}, images, train=False)
      return -jax.nn.log_softmax(logits)[jnp.arange(3), labels].mean()

    grads[name] = implementation.jit(jax.grad(loss))(params)
  for layer in PAPER_SHAPES:
    for leaf in ('kernel', 'bias'):
      plain, fast = grads['plain'][layer][leaf], grads['fast'][layer][leaf]
      assert float(jnp.abs(plain).max()) > 0, (layer, leaf)
      np.testing.assert_allclose(fast, plain, rtol=1e-3, atol=1e-4 * float(jnp.abs(plain).max()),
                                 err_msg=f'{layer}/{leaf}')


def test_variants_are_fields_of_one_module():
  x = jnp.zeros((1, 227, 227, 3))
  no_lrn = AlexNet(lrn=False, pool_window=2, pool_stride=2, implementation=AUTO)
  params = _shapes(no_lrn, 227)
  assert params['fc6']['kernel'].shape[0] == 6 * 6 * 256  # 55 -> 27 -> 13 -> 6 with 2/2 pools
  one_tower = _shapes(AlexNet(towers=1, conv_features=(48, 128, 192, 192, 256),
                              implementation=AUTO), 227)
  assert one_tower['conv2']['kernel'].shape == (5, 5, 48, 128)
  assert one_tower['conv4']['kernel'].shape == (3, 3, 192, 192)
  wide = _shapes(AlexNet(width=0.5, num_classes=10, implementation=AUTO), 227)
  assert wide['conv1']['kernel'].shape == (11, 11, 3, 48)
  assert wide['fc8']['kernel'].shape == (2048, 10)
  del x


def test_dropout_only_in_training():
  model = AlexNet(num_classes=10, width=0.125, implementation=AUTO)
  x = jnp.asarray(np.random.default_rng(0).normal(0, 60, (2, 67, 67, 3)), jnp.float32)
  params = _init(model, x, 0)
  params = jax.tree.map(lambda p: p * 5.0, params)
  apply = lambda train, seed: _apply(model, params, x, train=train,
                                     rngs={'dropout': jax.random.key(seed)})
  np.testing.assert_array_equal(apply(False, 0), apply(False, 1))
  assert not np.allclose(apply(True, 0), apply(True, 1))


def test_bfloat16_compute_keeps_float32_params_and_close_logits():
  x = jnp.asarray(np.random.default_rng(0).normal(0, 60, (2, 67, 67, 3)), jnp.float32)
  f32 = AlexNet(num_classes=10, width=0.25, implementation=AUTO)
  bf16 = AlexNet(num_classes=10, width=0.25, dtype=jnp.bfloat16, implementation=AUTO)
  params = _init(bf16, x, 0)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  params = jax.tree.map(lambda p: p * 5.0, params)
  a = _apply(f32, params, x, train=False)
  b = _apply(bf16, params, x, train=False)
  assert b.dtype == jnp.float32
  np.testing.assert_allclose(b, a, rtol=0.05, atol=0.05 * float(jnp.abs(a).max()))


@pytest.mark.parametrize('removed', [2, 3, 4])
def test_removing_a_middle_conv_layer_matches_numpy(removed):
  """Section 7's ablation: the layer's conv, ReLU and LRN go, its pooling stays."""
  model = AlexNet(num_classes=5, width=0.25, skip_convs=(removed,), implementation=AUTO)
  images = np.random.default_rng(3).normal(0, 60, size=(2, 99, 99, 3)).astype(np.float32)
  params = _init(model, images[:1], 1)
  assert f'conv{removed}' not in params and len(params) == 7
  p = {k: {n: np.asarray(v, np.float64) for n, v in d.items()} for k, d in params.items()}
  relu = lambda v: np.maximum(v, 0)
  x = images.astype(np.float64)
  x = numpy_alexnet.maxpool(numpy_alexnet.lrn(relu(numpy_alexnet.conv(
      x, p['conv1']['kernel'], p['conv1']['bias'], 4)), towers=2))
  if removed != 2:
    x = numpy_alexnet.lrn(relu(numpy_alexnet.conv(x, p['conv2']['kernel'], p['conv2']['bias'],
                                                  1, 2, 2)), towers=2)
  x = numpy_alexnet.maxpool(x)
  if removed != 3:
    x = relu(numpy_alexnet.conv(x, p['conv3']['kernel'], p['conv3']['bias'], 1, 1))
  if removed != 4:
    x = relu(numpy_alexnet.conv(x, p['conv4']['kernel'], p['conv4']['bias'], 1, 1, 2))
  x = numpy_alexnet.maxpool(relu(numpy_alexnet.conv(x, p['conv5']['kernel'], p['conv5']['bias'],
                                                    1, 1, 2)))
  x = x.reshape(len(x), -1)
  for name in ('fc6', 'fc7'):
    x = relu(x @ p[name]['kernel'] + p[name]['bias'])
  expected = x @ p['fc8']['kernel'] + p['fc8']['bias']
  got = np.asarray(_apply(model, params, images, train=False))
  np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())


@pytest.mark.parametrize('implementation', IMPLEMENTATIONS)
@pytest.mark.parametrize('activation,lrn', [('relu', False), ('tanh', True)])
def test_cifar_cnn_matches_numpy(activation, lrn, implementation):
  """The four-layer CIFAR-10 net of Figure 1: conv-pool[-LRN] x2, conv-pool, fc."""
  model = CifarCNN(activation=activation, lrn=lrn, implementation=IMPLEMENTATIONS[implementation])
  images = np.random.default_rng(4).normal(0, 60, size=(2, 32, 32, 3)).astype(np.float32)
  params = _init(model, images[:1], 2)
  assert list(params) == ['conv1', 'conv2', 'conv3', 'fc4']
  assert params['conv2']['kernel'].shape == (5, 5, 32, 32)
  p = {k: {n: np.asarray(v, np.float64) for n, v in d.items()} for k, d in params.items()}
  act = np.tanh if activation == 'tanh' else (lambda v: np.maximum(v, 0))
  response_norm = (lambda v: numpy_alexnet.lrn(v, towers=1)) if lrn else (lambda v: v)
  x = images.astype(np.float64) / 64
  for name in ('conv1', 'conv2'):
    x = response_norm(numpy_alexnet.maxpool(act(numpy_alexnet.conv(
        x, p[name]['kernel'], p[name]['bias'], 1, 2))))
  x = numpy_alexnet.maxpool(act(numpy_alexnet.conv(x, p['conv3']['kernel'], p['conv3']['bias'],
                                                   1, 2)))
  assert x.shape[1:] == (3, 3, 64)
  expected = x.reshape(2, -1) @ p['fc4']['kernel'] + p['fc4']['bias']
  got = np.asarray(_apply(model, params, images, train=False))
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
