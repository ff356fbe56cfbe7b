"""The Caffe import against OpenCV 4's Caffe importer, an implementation of Caffe's layers that
is not this project's, on a narrow two-tower AlexNet in both caffemodel layouts.

tests/fixtures/make_caffe_fixture.py wrote the net's files and ran them in OpenCV; here the same
files are written again (their SHA-256s prove it), read by alexnet_jax.caffe_format, imported by
import_weights.caffe_params and run by this project's network, without OpenCV.
"""

import jax
import numpy as np
import pytest

from alexnet_jax import augment, caffe_format, import_weights
from alexnet_jax.errors import DataError
from alexnet_jax.model import create_model
from alexnet_jax.stats import Normalization
from configs import caffe_alexnet
from tests.fixtures import make_caffe_fixture as fixture

# Logits agree to float32 rounding: |ours - OpenCV's| <= TOLERANCE * max |OpenCV's logit|.
TOLERANCE = 1e-4


def narrow_config(**model):
  config = caffe_alexnet.get_config()
  config.model.update({'conv_features': fixture.CONV_FEATURES,
                       'fc_features': fixture.FC_FEATURES, 'num_classes': fixture.CLASSES,
                       **model})
  return config


@pytest.fixture(scope='module')
def caffe_dir(tmp_path_factory):
  folder = tmp_path_factory.mktemp('narrow_alexnet')
  written = fixture.write_files(str(folder))
  read_by_opencv = np.load(fixture.FIXTURE)
  assert written == dict(zip(read_by_opencv['files'], read_by_opencv['sha256'])), (
      'make_caffe_fixture.py no longer writes the files OpenCV read: run it again')
  return folder


@pytest.fixture(scope='module')
def opencv():
  return np.load(fixture.FIXTURE)


def outputs(caffe_dir, config, images, model_file='narrow_alexnet.caffemodel'):
  """Our (fc8 logits, fc7 after its ReLU) for uint8 RGB images, with Caffe's mean image."""
  params = import_weights.caffe_params(caffe_format.read_net(str(caffe_dir / model_file)),
                                       config, model_file)
  mean_bgr = caffe_format.read_mean(str(caffe_dir / 'narrow_mean.binaryproto'))
  norm = Normalization(mean_image=np.ascontiguousarray(mean_bgr[::-1].transpose(1, 2, 0)),
                       eigvals=np.zeros(3, np.float32), eigvecs=np.eye(3, dtype=np.float32))
  model = create_model(config.model)
  logits, state = jax.jit(lambda p, x: model.apply({'params': p}, x, train=False,
                                                   mutable=['features']))(
                                                       params, augment.center_view(images, norm))
  return np.asarray(logits), np.asarray(state['features']['fc7_act'][0])


@pytest.mark.parametrize('model_file', ['narrow_alexnet.caffemodel',
                                        'narrow_alexnet_v1.caffemodel'])
def test_logits_equal_opencvs(caffe_dir, opencv, model_file):
  logits, fc7 = outputs(caffe_dir, narrow_config(), opencv['images'], model_file)
  scale = np.abs(opencv['fc8']).max()
  error = np.abs(logits - opencv['fc8']).max()
  assert error <= TOLERANCE * scale, f'max |difference| {error:.3g} at logits up to {scale:.3g}'
  np.testing.assert_allclose(fc7, np.maximum(opencv['fc7'], 0), rtol=0,
                             atol=TOLERANCE * np.abs(opencv['fc7']).max())


@pytest.mark.parametrize('change', [
    dict(lrn_across_towers=False),  # the paper's towers: LRN sums each tower apart
    dict(lrn_alpha=1e-4),           # the paper's alpha on the plain sum, not Caffe's alpha / n
    dict(lrn_k=2.0),                # the paper's k
    'bgr',                          # images given in Caffe's channel order
])
def test_the_fixture_tells_caffes_details_apart(caffe_dir, opencv, change):
  """Each detail Caffe differs in moves the logits far beyond the tolerance above."""
  images = opencv['images']
  if change == 'bgr':
    config, images = narrow_config(), images[..., ::-1]
  else:
    config = narrow_config(**change)
  logits, _ = outputs(caffe_dir, config, images)
  assert np.abs(logits - opencv['fc8']).max() > 100 * TOLERANCE * np.abs(opencv['fc8']).max()


def test_a_file_of_another_width_is_refused(caffe_dir):
  path = str(caffe_dir / 'narrow_alexnet.caffemodel')
  with pytest.raises(DataError) as error:
    import_weights.caffe_params(caffe_format.read_net(path), caffe_alexnet.get_config(), path)
  text = str(error.value)
  assert '\n' not in text
  for part in (path, 'conv1', '(12, 3, 11, 11)', '(96, 3, 11, 11)'):
    assert part in text, text
  with pytest.raises(DataError, match=r'fc6 .*\(32, 1152\).*\(64, 1152\)'):
    import_weights.caffe_params(caffe_format.read_net(path), narrow_config(fc_features=64), path)
