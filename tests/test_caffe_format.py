"""alexnet_jax.caffe_format against messages built by an encoder that shares no code with it:
tests/fixtures/make_caffe_fixture.py's, whose files OpenCV's protobuf reads."""

import struct

import numpy as np
import pytest

from alexnet_jax import caffe_format
from alexnet_jax.errors import DataError
from tests.fixtures.make_caffe_fixture import blob, key, layer, message, number, v1_layer, varint


def write(tmp_path, data: bytes, name='net.caffemodel') -> str:
  path = tmp_path / name
  path.write_bytes(data)
  return str(path)


def weights(*shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_layer_layout_with_blob_shapes(tmp_path):
  w, b, fw, fb = weights(4, 3, 5, 5), weights(4, seed=1), weights(10, 36, seed=2), weights(10)
  data = (message(1, b'net') + layer('conv1', 'Convolution', [blob(w), blob(b)])
          + layer('relu1', 'ReLU') + layer('fc8', 'InnerProduct', [blob(fw), blob(fb)]))
  path = write(tmp_path, data)
  net = caffe_format.read_net(path)
  assert list(net) == ['conv1', 'fc8']
  for got, want in zip(net['conv1'] + net['fc8'], [w, b, fw, fb]):
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
  assert [(n, t, len(bs)) for n, t, bs in caffe_format.read_layers(path)] == [
      ('conv1', 'Convolution', 2), ('relu1', 'ReLU', 0), ('fc8', 'InnerProduct', 2)]


def test_v1_layout_with_legacy_shapes_and_unpacked_data(tmp_path):
  w, b = weights(1, 1, 6, 20), weights(1, 1, 1, 6, seed=1)
  conv = weights(2, 3, 3, 3, seed=2)
  data = (v1_layer('conv1', 4, [blob(conv, legacy=True, packed=False)]) + v1_layer('relu1', 18)
          + v1_layer('fc6', 14, [blob(w, legacy=True, packed=False), blob(b, legacy=True)])
          + v1_layer('odd', 99))
  path = write(tmp_path, data)
  layers = caffe_format.read_layers(path)
  assert [(n, t) for n, t, _ in layers] == [
      ('conv1', 'Convolution'), ('relu1', 'ReLU'), ('fc6', 'InnerProduct'), ('odd', 'V1 type 99')]
  net = caffe_format.read_net(path)
  assert net['fc6'][0].shape == (1, 1, 6, 20) and net['fc6'][1].shape == (1, 1, 1, 6)
  np.testing.assert_array_equal(net['conv1'][0], conv)
  np.testing.assert_array_equal(net['fc6'][0], w)
  np.testing.assert_array_equal(net['fc6'][1], b)


def test_v0_layer_inside_a_v1_layer(tmp_path):
  w = weights(3, 2)
  v0 = message(1, b'fc7') + message(2, b'innerproduct') + message(50, blob(w))
  path = write(tmp_path, message(2, message(1, v0)))
  [(name, kind, [got])] = caffe_format.read_layers(path)
  assert (name, kind) == ('fc7', 'innerproduct')
  np.testing.assert_array_equal(got, w)


@pytest.mark.parametrize('packed', [True, False])
def test_double_data_is_read_as_float32(tmp_path, packed):
  w = np.random.default_rng(0).normal(size=(3, 4))
  net = caffe_format.read_net(write(tmp_path, layer('fc', 'InnerProduct',
                                                    [blob(w, double=True, packed=packed)])))
  assert net['fc'][0].dtype == np.float32
  np.testing.assert_array_equal(net['fc'][0], w.astype(np.float32))


def test_unpacked_dims_split_data_and_unknown_fields(tmp_path):
  """Fields in any order, values split over several fields, and fields the reader does not
  know (ParamSpec, convolution_param, fixed32 and fixed64 values) skipped."""
  w = weights(2, 3, 4)
  flat = w.ravel()
  shape = message(7, b''.join(number(1, d) for d in w.shape))
  data = (message(5, flat[:7].tobytes()) + key(9, 1) + b'\0' * 8 + shape
          + b''.join(key(5, 5) + struct.pack('<f', v) for v in flat[7:15]) + key(11, 5) + b'1234'
          + b'\xad\x00' + flat[15:16].tobytes()  # a key of two bytes, as a varint may be
          + message(5, flat[16:].tobytes()))
  lay = (message(6, message(3, struct.pack('<f', 1.0))) + message(1, b'conv')
         + message(106, number(1, 2) + number(5, 2)) + message(7, data)
         + message(2, b'Convolution') + key(10, 0) + varint(1))
  path = write(tmp_path, number(5, 1) + message(100, lay) + message(1, b'name'))
  np.testing.assert_array_equal(caffe_format.read_net(path)['conv'][0], w)


def test_many_unpacked_values_and_a_scalar_blob(tmp_path):
  w = weights(300, 1000)
  scalar = message(7, b'') + message(5, struct.pack('<f', 2.5))
  path = write(tmp_path, layer('fc', 'InnerProduct', [blob(w, packed=False), scalar]))
  got, one = caffe_format.read_net(path)['fc']
  np.testing.assert_array_equal(got, w)
  assert one.shape == () and one == 2.5


def test_mean_image(tmp_path):
  mean = np.random.default_rng(0).uniform(0, 255, size=(1, 3, 8, 6)).astype(np.float32)
  for legacy in (False, True):
    got = caffe_format.read_mean(write(tmp_path, blob(mean, legacy=legacy), 'mean.binaryproto'))
    assert got.shape == (3, 8, 6) and got.dtype == np.float32
    np.testing.assert_array_equal(got, mean[0])


def assert_one_line(error: pytest.ExceptionInfo, path: str, *words: str):
  text = str(error.value)
  assert '\n' not in text and path in text, text
  for word in words:
    assert word in text, text


def test_truncated_files(tmp_path):
  data = (layer('conv1', 'Convolution', [blob(weights(4, 3, 5, 5)), blob(weights(4))])
          + layer('fc8', 'InnerProduct', [blob(weights(10, 36), packed=False)]))
  for cut in (3, len(data) // 2, len(data) - 7, len(data) - 1):
    path = write(tmp_path, data[:cut])
    with pytest.raises(DataError) as error:
      caffe_format.read_net(path)
    assert_one_line(error, path, 'truncated')


@pytest.mark.parametrize('content, words', [
    (b'name: "AlexNet"\nlayer {\n  name: "data"\n}\n', ['text file', '.prototxt']),
    (b'PK\x03\x04' + bytes(range(256)), ['not a Caffe .caffemodel']),
    (b'\xff\xd8\xff\xe0' + b'\x00' * 64, ['not a Caffe .caffemodel']),
    (b'', ['empty']),
    (number(5, 1) + message(1, b'\x01only a name'), ['holds no layers']),
    (layer('relu1', 'ReLU') + layer('pool1', 'Pooling'), ['no weights']),
])
def test_files_that_are_not_caffemodels(tmp_path, content, words):
  path = write(tmp_path, content)
  with pytest.raises(DataError) as error:
    caffe_format.read_net(path)
  assert_one_line(error, path, *words)


def test_blob_whose_data_does_not_fill_its_shape(tmp_path):
  bad = message(7, message(1, varint(4) + varint(5))) + message(5, weights(19).tobytes())
  path = write(tmp_path, layer('conv1', 'Convolution', [bad]))
  with pytest.raises(DataError) as error:
    caffe_format.read_net(path)
  assert_one_line(error, path, 'conv1', '19 values', '(4, 5)')


def test_missing_file_and_wrong_mean_files(tmp_path):
  with pytest.raises(DataError) as error:
    caffe_format.read_net(str(tmp_path / 'absent.caffemodel'))
  assert_one_line(error, 'absent.caffemodel')
  path = write(tmp_path, blob(weights(4, 5)), 'mean.binaryproto')
  with pytest.raises(DataError) as error:
    caffe_format.read_mean(path)
  assert_one_line(error, path, '(4, 5)')
  path = write(tmp_path, blob(weights(1, 3, 4, 4))[:-3], 'mean.binaryproto')
  with pytest.raises(DataError) as error:
    caffe_format.read_mean(path)
  assert_one_line(error, path, 'truncated')
