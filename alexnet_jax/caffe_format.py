"""Caffe's binary files read without Caffe or protobuf: the trained nets' weights and mean image.

A `.caffemodel` is a serialized `NetParameter` and `imagenet_mean.binaryproto` a `BlobProto`
(caffe.proto in BVLC/caffe, src/caffe/proto/). Reading them needs only protobuf's wire format
and the few field numbers below, so the importer depends on neither Caffe nor a compiled
caffe.proto. Nothing in a file is executed or unpickled; float data is decoded by NumPy.
"""

import numpy as np

from alexnet_jax.errors import DataError

# Protobuf wire types.
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5

# caffe.proto's field numbers.
_NET_LAYERS_V1 = 2      # NetParameter.layers: V1LayerParameter (files written before 2015)
_NET_LAYER = 100        # NetParameter.layer: LayerParameter
_LAYER_NAME, _LAYER_TYPE, _LAYER_BLOBS = 1, 2, 7              # LayerParameter (type: string)
_V1_NAME, _V1_TYPE, _V1_BLOBS, _V1_V0 = 4, 5, 6, 1            # V1LayerParameter (type: enum)
_V0_NAME, _V0_TYPE, _V0_BLOBS = 1, 2, 50                      # V0LayerParameter inside a V1
_BLOB_LEGACY = (1, 2, 3, 4)                                   # BlobProto num, channels, h, w
_BLOB_DATA, _BLOB_SHAPE, _BLOB_DOUBLE_DATA = 5, 7, 8          # BlobProto
_SHAPE_DIM = 1                                                # BlobShape.dim

# V1LayerParameter.LayerType as Caffe's UpgradeV1LayerType names it.
_V1_TYPES = {
    0: '', 1: 'Accuracy', 2: 'BNLL', 3: 'Concat', 4: 'Convolution', 5: 'Data', 6: 'Dropout',
    7: 'EuclideanLoss', 8: 'Flatten', 9: 'HDF5Data', 10: 'HDF5Output', 11: 'Im2col',
    12: 'ImageData', 13: 'InfogainLoss', 14: 'InnerProduct', 15: 'LRN',
    16: 'MultinomialLogisticLoss', 17: 'Pooling', 18: 'ReLU', 19: 'Sigmoid', 20: 'Softmax',
    21: 'SoftmaxWithLoss', 22: 'Split', 23: 'TanH', 24: 'WindowData', 25: 'Eltwise',
    26: 'Power', 27: 'SigmoidCrossEntropyLoss', 28: 'HingeLoss', 29: 'MemoryData',
    30: 'ArgMax', 31: 'Threshold', 32: 'DummyData', 33: 'Slice', 34: 'MVN', 35: 'AbsVal',
    36: 'Silence', 37: 'ContrastiveLoss', 38: 'Exp', 39: 'Deconvolution'}


class _Malformed(Exception):
  """The bytes are not the message they should be; the text says where."""


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
  value = shift = 0
  while True:
    if pos >= len(buf):
      raise _Malformed(f'a number at byte {pos} runs past the end')
    byte = buf[pos]
    pos += 1
    value |= (byte & 0x7F) << shift
    if byte < 0x80:
      return value, pos
    shift += 7
    if shift > 63:
      raise _Malformed(f'a number at byte {pos} is longer than 10 bytes')


def _field(buf: memoryview, pos: int):
  """The field at `pos`: (number, wire type, value, position after). A value is an int for
  varints and the field's bytes (a memoryview, not a copy) for the other wire types."""
  start = pos
  key, pos = _varint(buf, pos)
  number, wire = key >> 3, key & 7
  if number == 0:
    raise _Malformed(f'byte {start} starts a field numbered 0')
  if wire == _VARINT:
    value, pos = _varint(buf, pos)
    return number, wire, value, pos
  if wire == _LEN:
    size, pos = _varint(buf, pos)
  elif wire in (_I64, _I32):
    size = 8 if wire == _I64 else 4
  else:
    raise _Malformed(f'byte {start} starts a field of unknown wire type {wire}')
  if pos + size > len(buf):
    raise _Malformed(f'a field of {size} bytes at byte {pos} runs past the end, at byte '
                     f'{len(buf)}')
  return number, wire, buf[pos:pos + size], pos + size


def _fields(buf: memoryview):
  pos = 0
  while pos < len(buf):
    number, wire, value, pos = _field(buf, pos)
    yield number, wire, value


def _text(value, what: str) -> str:
  if not isinstance(value, memoryview):
    raise _Malformed(f'{what} is not a string')
  return bytes(value).decode('utf-8', errors='replace')


def _run(buf: memoryview, pos: int, stride: int) -> int:
  """How many records of `stride` bytes from `pos` on start with the byte at `pos`: the fields
  of an unpacked repeated float or double (a one-byte key, then the value), counted by NumPy."""
  count = (len(buf) - pos) // stride
  records = np.frombuffer(buf[pos:pos + count * stride], np.uint8).reshape(count, stride)
  other = np.flatnonzero(records[:, 0] != buf[pos])
  return int(other[0]) if len(other) else count


def _blob(buf: memoryview, where: str) -> np.ndarray:
  """A BlobProto as a float32 array, shaped as Caffe's Blob::FromProto shapes it: by the
  legacy num, channels, height, width if any is set, else by BlobShape."""
  legacy, dims = {}, None
  chunks = {_BLOB_DATA: [], _BLOB_DOUBLE_DATA: []}
  pos = 0
  while pos < len(buf):
    number, wire, value, after = _field(buf, pos)
    if number in chunks and wire == (_I32 if number == _BLOB_DATA else _I64):
      stride = after - pos
      if stride == 1 + len(value):  # unpacked values, each after the same one-byte key
        count = _run(buf, pos, stride)
        chunks[number].append(np.frombuffer(buf[pos:pos + count * stride], np.uint8)
                              .reshape(count, stride)[:, 1:].tobytes())
        after = pos + count * stride
      else:
        chunks[number].append(value)
    elif number in chunks and wire == _LEN:
      chunks[number].append(value)
    elif number in _BLOB_LEGACY and wire == _VARINT:
      legacy[number] = value
    elif number == _BLOB_SHAPE and wire == _LEN:
      dims = []
      for dim_number, dim_wire, dim in _fields(value):
        if dim_number == _SHAPE_DIM and dim_wire == _VARINT:
          dims.append(dim)
        elif dim_number == _SHAPE_DIM and dim_wire == _LEN:
          dim_pos = 0
          while dim_pos < len(dim):
            d, dim_pos = _varint(dim, dim_pos)
            dims.append(d)
    pos = after
  if legacy:
    shape = tuple(legacy.get(n, 0) for n in _BLOB_LEGACY)
  else:
    shape = tuple(dims or ())
  if any(d >= 1 << 63 for d in shape):  # int64 and int32 negatives are 10-byte varints
    raise _Malformed(f'{where} has a negative dimension')
  doubles = chunks[_BLOB_DOUBLE_DATA]
  parts = doubles or chunks[_BLOB_DATA]
  raw = parts[0] if len(parts) == 1 else b''.join(parts)  # one packed field: no copy
  itemsize = 8 if doubles else 4
  if len(raw) % itemsize:
    raise _Malformed(f'{where} holds {len(raw)} bytes of data, not a whole number of values')
  data = np.frombuffer(raw, '<f8' if doubles else '<f4')
  if data.size != int(np.prod(shape, dtype=np.int64)):
    raise _Malformed(f'{where} holds {data.size} values but its shape {shape} needs '
                     f'{int(np.prod(shape, dtype=np.int64))}')
  return data.astype(np.float32).reshape(shape)


def _layer(buf: memoryview, v1: bool, index: int):
  """(name, type, blobs) of a LayerParameter, or of a V1LayerParameter (with its V0 inside)."""
  name_field, type_field, blobs_field = ((_V1_NAME, _V1_TYPE, _V1_BLOBS) if v1
                                         else (_LAYER_NAME, _LAYER_TYPE, _LAYER_BLOBS))
  name, kind, blob_bytes = f'#{index}', '', []
  for number, wire, value in _fields(buf):
    if number == name_field:
      name = _text(value, f'the name of layer {index}')
    elif number == type_field and v1:
      if wire != _VARINT:
        raise _Malformed(f'the type of layer {name} is not a V1 layer type')
      kind = _V1_TYPES.get(value, f'V1 type {value}')
    elif number == type_field:
      kind = _text(value, f'the type of layer {name}')
    elif number == blobs_field and wire == _LEN:
      blob_bytes.append(value)
    elif v1 and number == _V1_V0 and wire == _LEN:
      old_name, old_kind, old_blobs = _v0_layer(value, index)
      name, kind, blob_bytes = old_name or name, old_kind or kind, blob_bytes + old_blobs
  blobs = [_blob(b, f'blob {i} of layer {name}') for i, b in enumerate(blob_bytes)]
  return name, kind, blobs


def _v0_layer(buf: memoryview, index: int):
  name, kind, blobs = '', '', []
  for number, wire, value in _fields(buf):
    if number == _V0_NAME:
      name = _text(value, f'the name of layer {index}')
    elif number == _V0_TYPE:
      kind = _text(value, f'the type of layer {index}')
    elif number == _V0_BLOBS and wire == _LEN:
      blobs.append(value)
  return name, kind, blobs


def _read(path: str) -> memoryview:
  try:
    with open(path, 'rb') as f:
      buf = memoryview(f.read())
  except OSError as e:
    raise DataError(f'Cannot read {path}: {e.strerror}. Check the path.') from None
  if not buf:
    raise DataError(f'{path} is empty: download it again.')
  return buf


def _undecodable(path: str, buf: memoryview, kind: str, error: str) -> DataError:
  """The one line that tells a user what is wrong with a file that did not decode."""
  head = bytes(buf[:512])
  if all(32 <= b < 127 or b in b'\t\r\n' for b in head):
    return DataError(f'{path} is a text file, not a binary Caffe {kind} (a .prototxt describes '
                     f'layers, not their values): give the {kind} file.')
  return DataError(f'{path} is not a Caffe {kind}, or is truncated or damaged ({error}): '
                   'download it again, or give the right file.')


def read_layers(path: str) -> list[tuple[str, str, list[np.ndarray]]]:
  """A `.caffemodel`'s layers in file order: (name, type, blobs), each blob a float32 array
  shaped as the file states it (legacy files: 4-D, e.g. (1, 1, 4096, 9216) for fc6's weights).

  Both layouts of NetParameter are read: `layer` (type a string, e.g. 'Convolution') and the
  older `layers` (V1LayerParameter, whose type enum is given the name Caffe upgrades it to).
  """
  buf = _read(path)
  try:
    layers = []
    for number, wire, value in _fields(buf):
      if number in (_NET_LAYER, _NET_LAYERS_V1) and wire == _LEN:
        layers.append(_layer(value, number == _NET_LAYERS_V1, len(layers)))
  except _Malformed as e:
    raise _undecodable(path, buf, '.caffemodel', str(e)) from None
  if not layers:
    raise _undecodable(path, buf, '.caffemodel', 'it holds no layers')
  return layers


def read_net(path: str) -> dict[str, list[np.ndarray]]:
  """A `.caffemodel` as layer name -> its blobs (weights, then biases), for the layers that
  have any: {'conv1': [(96, 3, 11, 11), (96,)], ...} for bvlc_alexnet."""
  net = {name: blobs for name, _, blobs in read_layers(path) if blobs}
  if not net:
    raise DataError(f'{path} holds layers but no weights: give the .caffemodel of the trained '
                    'net.')
  return net


def read_mean(path: str) -> np.ndarray:
  """A `.binaryproto` mean image (a BlobProto, e.g. imagenet_mean.binaryproto: 1x3x256x256, BGR,
  0-255) as a (C, H, W) float32 array, channels in the file's (BGR) order."""
  buf = _read(path)
  try:
    mean = _blob(buf, 'the blob')
  except _Malformed as e:
    raise _undecodable(path, buf, '.binaryproto', str(e)) from None
  if mean.ndim == 4 and mean.shape[0] == 1:
    mean = mean[0]
  if mean.ndim != 3 or not mean.size:
    raise DataError(f'{path} holds a blob of shape {mean.shape}, not one image (1, C, H, W): give '
                    'a mean image such as imagenet_mean.binaryproto.')
  return mean
