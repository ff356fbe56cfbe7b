"""The analytic FLOP count against a hand count of docs/paper.md's table and against XLA's own
count."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from alexnet_jax import flops, implementations, optim
from alexnet_jax.model import AlexNet
from alexnet_jax.train import TrainState, train_step

# docs/paper.md's table, multiply-adds per image: output maps x kernel taps x input channels seen.
PAPER_MACS = {
    'conv1': 55 * 55 * 96 * (11 * 11 * 3),
    'conv2': 27 * 27 * 256 * (5 * 5 * 48),     # own tower: 48 of the 96 maps
    'conv3': 13 * 13 * 384 * (3 * 3 * 256),    # both towers
    'conv4': 13 * 13 * 384 * (3 * 3 * 192),
    'conv5': 13 * 13 * 256 * (3 * 3 * 192),
    'fc6': 6 * 6 * 256 * 4096,
    'fc7': 4096 * 4096,
    'fc8': 4096 * 1000,
}
# The layer shapes, and so the count, are the same under every implementation.
AUTO = implementations.for_backend()


@pytest.mark.parametrize('size,padding', [(227, 0), (224, 2)])
def test_paper_network_counted_by_hand(size, padding):
  model = AlexNet(conv1_padding=padding, implementation=AUTO)
  assert {l.name: l.macs for l in flops.layers(model, size)} == PAPER_MACS
  total = sum(PAPER_MACS.values())
  assert total == 724_406_816                               # about 0.72 GMAC
  assert flops.forward_flops(model, size) == 2 * total
  assert flops.train_flops(model, size) == 6 * total - 2 * PAPER_MACS['conv1']
  # The same shapes give docs/paper.md's parameter count: kernels (taps x inputs x outputs)
  # plus biases.
  params = sum(l.kernel**2 * l.in_channels // l.groups * l.out_channels + l.out_channels
               for l in flops.layers(model, size))
  assert params == 60_965_224


def test_one_tower_width_and_removed_layers_follow_the_model():
  """Layer shapes of variants against the kernels the model itself creates."""
  for fields, size in [(dict(towers=1, conv_features=(48, 128, 192, 192, 256)), 227),
                       (dict(width=0.25, num_classes=10, skip_convs=(3,)), 99),
                       (dict(width=0.5, skip_convs=(2, 4), pool_window=2), 131)]:
    model = AlexNet(**fields, implementation=AUTO)
    params = jax.eval_shape(lambda m=model, s=size: m.init(
        jax.random.key(0), jnp.zeros((1, s, s, 3)), train=False))['params']
    counted = flops.layers(model, size)
    assert [l.name for l in counted] == list(params)
    for l in counted:
      fan_in = l.kernel**2 * l.in_channels // l.groups
      assert np.prod(params[l.name]['kernel'].shape) == fan_in * l.out_channels, l.name
  one_tower = {l.name: l.macs for l in flops.layers(
      AlexNet(towers=1, conv_features=(48, 128, 192, 192, 256), implementation=AUTO), 227)}
  assert one_tower['conv2'] == 27 * 27 * 128 * (5 * 5 * 48)   # one tower sees all 48 maps
  assert one_tower['conv4'] == 13 * 13 * 192 * (3 * 3 * 192)
  assert one_tower['fc6'] == PAPER_MACS['fc6']


# ---------------------------------------------------------------------------------------------
# Against XLA's cost analysis (CPU). XLA counts 2 FLOPs per multiply-add like this module, but
# only for kernel taps that land on the input, not on the zero padding; and it counts element-
# wise work, which this module leaves out.
# ---------------------------------------------------------------------------------------------


def _xla_flops(fn, *args) -> float:
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  return (cost[0] if isinstance(cost, (list, tuple)) else cost)['flops']


def _padding_macs(layer: flops.Layer) -> int:
  """Multiply-adds whose input lies on the zero padding, counted position by position."""
  l = layer
  pos = np.arange(l.out_size)[:, None] * l.stride + np.arange(l.kernel) - l.padding
  inside = int(((pos >= 0) & (pos < l.in_size)).sum())  # (output, tap) pairs along one axis
  return l.macs - inside**2 * l.in_channels // l.groups * l.out_channels


@pytest.mark.parametrize('name', list(PAPER_MACS))
def test_each_layer_forward_and_gradients_match_xla(name):
  """Forward, weight gradient and input gradient each do the layer's multiply-adds."""
  l = next(l for l in flops.layers(AlexNet(implementation=AUTO), 227) if l.name == name)
  x = jnp.zeros((1, l.in_size, l.in_size, l.in_channels))
  w = jnp.zeros((l.kernel, l.kernel, l.in_channels // l.groups, l.out_channels))
  conv = lambda x, w: lax.conv_general_dilated(
      x, w, (l.stride,) * 2, [(l.padding,) * 2] * 2, dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=l.groups)
  y = jnp.zeros(jax.eval_shape(conv, x, w).shape)
  assert y.shape == (1, l.out_size, l.out_size, l.out_channels)
  expected = 2 * (l.macs - _padding_macs(l))
  assert _xla_flops(conv, x, w) == expected
  assert _xla_flops(lambda x, w, y: jax.vjp(lambda w: conv(x, w), w)[1](y)[0], x, w, y) == expected
  assert _xla_flops(lambda x, w, y: jax.vjp(lambda x: conv(x, w), x)[1](y)[0], x, w, y) == expected


def _activations(model: AlexNet, size: int) -> int:
  """Activation elements per image: every layer's output maps and every pooled map."""
  total, pooled = 0, {'conv1', 'conv2', 'conv5'}
  for l in flops.layers(model, size):
    total += l.out_size**2 * l.out_channels
    if l.name in pooled:
      side = (l.out_size - model.pool_window) // model.pool_stride + 1
      total += side**2 * l.out_channels
  return total


def test_network_forward_and_train_step_match_xla():
  """The paper's network as compiled by XLA:CPU against the count.

  XLA = count - padding taps + r, where r is XLA's element-wise FLOPs (1 per element and
  operation: bias, ReLU, LRN's ten or so, eight maxima per pooled element, the loss). Those are
  bounded per activation element: 16 in the forward; in the step, forward and backward (about
  3x the forward) times up to 4 for the producers XLA:CPU recomputes inside each fused
  consumer (the nine pooling views, LRN's five-tap window): 256. The step's optimizer update
  adds at most 6 FLOPs per parameter per step (decay, learning rate, momentum, update), shared
  by the batch. A matmul counted wrongly would be one layer's multiply-adds or more, e.g.
  conv1's input gradient (211 MFLOP), which the step must not compute nor the count include.
  """
  # conv1 as a plain convolution (see below), the rest as the CPU computes it.
  model = AlexNet(implementation=implementations.choose('auto,strided_conv=direct', 'cpu'))
  size, batch = 227, 32
  padding = sum(_padding_macs(l) for l in flops.layers(model, size))
  activations = _activations(model, size)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)),
                                             train=False))['params']
  images = lambda n: jax.ShapeDtypeStruct((n, size, size, 3), jnp.float32)

  forward = _xla_flops(lambda p, x: model.apply({'params': p}, x, train=False), params, images(1))
  r = forward - (flops.forward_flops(model, size) - 2 * padding)
  assert 0 <= r <= 16 * activations, (forward, r / activations)

  state = jax.eval_shape(lambda p: TrainState.create(
      apply_fn=model.apply, params=p, tx=optim.create(0.01, 0.9, 5e-4, False)), params)
  # The step on images the augmentation has already made, so that only the network counts.
  network_step = functools.partial(train_step, norm=None, lr=0.01,
                                   augment_fn=lambda b, norm: b['image'])
  step = _xla_flops(network_step, state, {'image': images(batch), 'label': jax.ShapeDtypeStruct(
      (batch,), jnp.int32)}, jax.random.key(0))
  update = 6 * 60_965_224 / batch
  r = step / batch - (flops.train_flops(model, size) - 3 * 2 * padding)
  assert 0 <= r <= 256 * activations + update, (step, r / activations)
  assert r < 2 * flops.layers(model, size)[0].macs  # no input gradient for the images

  # space_to_depth's conv1 multiplies a kernel zero-padded to 12x12 in 4x4 blocks: 3x3 blocks
  # of 4x4x3 inputs, 432 taps instead of 363, work the count leaves out.
  s2d = AlexNet(
      implementation=implementations.choose('auto,strided_conv=space_to_depth', 'cpu'))
  extra = _xla_flops(lambda p, x: s2d.apply({'params': p}, x, train=False), params,
                     images(1)) - forward
  assert extra == pytest.approx(2 * 55 * 55 * 96 * (432 - 363), rel=1e-3)
