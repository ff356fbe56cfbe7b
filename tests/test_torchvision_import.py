"""import_weights.torch_params against torchvision itself: our network gives its logits.

The logits were computed by torchvision's AlexNet (tests/fixtures/make_torchvision_fixture.py)
for weights and inputs that a formula rebuilds here exactly, so no torch is needed.
"""

import os

import jax
import numpy as np
import pytest

from alexnet_jax import import_weights
from alexnet_jax.errors import DataError
from alexnet_jax.model import create_model
from configs import torchvision_alexnet
from tests.fixtures import make_torchvision_fixture as fixture

# float32 rounding over eight layers, relative to the largest logit: torchvision's own float32
# logits and ours each differ from float64 ones by about 1e-6 of it; one std for all three
# channels moves them by 4e-3, a transposed axis by more than 0.1.
RTOL = 1e-5


@pytest.fixture(scope='module')
def recorded():
  with np.load(fixture.PATH) as f:
    formula = {str(k): (int(a), int(b), float(phase), float(scale))
               for k, (a, b, phase, scale) in zip(f['keys'], f['formula'])}
    assert int(f['prime']) == fixture.PRIME
    return formula, f['logits']


@pytest.fixture(scope='module')
def config():
  return torchvision_alexnet.get_config()


@pytest.fixture(scope='module')
def state_dict(recorded):
  return fixture.state_dict(recorded[0])


def network_input(recorded) -> np.ndarray:
  """torchvision's normalized NCHW batch as our network reads it: pixels minus the mean image,
  NHWC, on the 0-255 scale."""
  x = fixture.inputs(recorded[0]).transpose(0, 2, 3, 1)
  return x * (255 * np.asarray(import_weights.TORCHVISION_STD, np.float32))


def assert_torchvision_logits(logits_fn, recorded):
  """`logits_fn()` in full float32 (a GPU would otherwise multiply in TensorFloat-32)."""
  with jax.default_matmul_precision('highest'):
    logits = np.asarray(logits_fn())
  want = recorded[1]
  err = np.abs(logits - want).max()
  assert err <= RTOL * np.abs(want).max(), (
      f'max |ours - torchvision| = {err:.3g}, logits up to {np.abs(want).max():.3g}')


def apply(params, config, recorded):
  network = create_model(config.model)
  return lambda: network.apply({'params': params}, network_input(recorded), train=False)


def test_formula_is_what_the_fixture_recorded(recorded):
  assert recorded[0] == fixture.formulas()
  assert recorded[1].shape == (2, 1000)


def test_logits_equal_torchvision(state_dict, config, recorded):
  params = import_weights.torch_params(state_dict, config)
  assert_torchvision_logits(apply(params, config, recorded), recorded)


def test_dataparallel_keys(state_dict, config):
  plain = import_weights.torch_params(state_dict, config)
  wrapped = import_weights.torch_params({f'module.{k}': v for k, v in state_dict.items()},
                                        config)
  for layer in import_weights.LAYERS:
    for name in ('kernel', 'bias'):
      np.testing.assert_array_equal(wrapped[layer][name], plain[layer][name])


@pytest.mark.parametrize('key,shape', [('features.3.weight', (192, 64, 3, 3)),
                                       ('classifier.6.bias', (10,))])
def test_wrong_shape_refused_in_one_line(state_dict, config, key, shape):
  broken = dict(state_dict, **{key: np.zeros(shape, np.float32)})
  with pytest.raises(DataError) as e:
    import_weights.torch_params(broken, config)
  message = str(e.value)
  layer = {'features.3': 'conv2', 'classifier.6': 'fc8'}[key.rsplit('.', 1)[0]]
  assert '\n' not in message and layer in message and str(shape) in message
  assert str(state_dict[key].shape) in message


def test_pth_round_trip(tmp_path, state_dict, recorded):
  """torch.save's file, through read_torch and import_file, restored as any checkpoint is."""
  torch = pytest.importorskip('torch')
  from alexnet_jax import inference  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / 'alexnet.pth')
  torch.save({k: torch.from_numpy(v) for k, v in state_dict.items()}, path)
  read = import_weights.read_torch(path)
  assert list(read) == list(state_dict)
  for key, value in state_dict.items():
    np.testing.assert_array_equal(read[key], value)
  import_weights.import_file(path, torchvision_alexnet.get_config(), str(tmp_path / 'run'))
  classifier, params, _ = inference.restore(str(tmp_path / 'run'))
  mean = 255 * np.asarray(import_weights.TORCHVISION_MEAN, np.float32)
  np.testing.assert_allclose(classifier.norm.mean_image, np.broadcast_to(mean, (256, 256, 3)))
  assert classifier.crop == 224 and len(classifier.class_names) == 1000
  assert_torchvision_logits(lambda: classifier.logits(params, network_input(recorded)),
                            recorded)
  assert os.path.isdir(tmp_path / 'run' / 'checkpoints' / '0')
