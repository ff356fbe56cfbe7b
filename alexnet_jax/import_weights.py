"""The public trained AlexNets as ordinary checkpoints: Caffe's `bvlc_alexnet` and torchvision's.

    python -m alexnet_jax.import_weights --config=configs/caffe_alexnet.py \
        --weights=bvlc_alexnet.caffemodel --mean=imagenet_mean.binaryproto \
        --workdir=runs/bvlc_alexnet
    python -m alexnet_jax.import_weights --config=configs/torchvision_alexnet.py \
        --weights=alexnet-owt-7be5be79.pth --workdir=runs/torchvision_alexnet

The workdir then holds a checkpoint at step 0 like any training run's: the parameters in this
project's layout, the config, the 1000 ILSVRC-2012 synsets in sorted order as class names, and
the mean image the network expects. `evaluate`, `export`, `inference.restore`, the figures and
`--config.init_from` read it unchanged.

The conversion is exact, nothing is re-trained or approximated: convolution kernels go from
(out, in, h, w) to (h, w, in, out), fc6's rows from the C, H, W order in which Caffe and PyTorch
flatten pool5 to this network's H, W, C, Caffe's BGR conv1 to RGB, and torchvision's per-channel
std into conv1's kernels (times the config's `model.input_scale`, which the network applies
first). A file of another shape is refused with one line naming the layer and both shapes.

A `.caffemodel` is read without Caffe (alexnet_jax.caffe_format); a `.pth` file with torch's
`weights_only` loader (pip install -e '.[torch]'). Neither runs code from the file.
"""

import hashlib
import os
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags

from alexnet_jax import checkpointing, cli, config_check, optim, train
from alexnet_jax.errors import CheckpointError, DataError, UserError
from alexnet_jax.inference import imagenet_synsets
from alexnet_jax.model import create_model
from alexnet_jax.stats import Normalization

LAYERS = ('conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7', 'fc8')
# torchvision.models.alexnet's modules holding conv1 ... fc8 (features.N, classifier.N).
TORCH_NAMES = dict(zip(LAYERS, ('features.0', 'features.3', 'features.6', 'features.8',
                                'features.10', 'classifier.1', 'classifier.4', 'classifier.6')))
# torchvision's input normalization on the 0-1 scale: ImageNet's channel means and stds.
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)
CAFFE_MEANS = ('.binaryproto', '.npy')  # Caffe's imagenet_mean.binaryproto, or its NumPy copy


# ---------------------------------------------------------------------------------------------
# From a file's tensors to this network's parameters.
# ---------------------------------------------------------------------------------------------


def expected_shapes(config: ml_collections.ConfigDict) -> dict[str, dict[str, tuple]]:
  """{'conv1': {'kernel': (11, 11, 3, 96), 'bias': (96,)}, ...} of the network `config` builds."""
  model = create_model(config.model, 'plain')
  image = jax.ShapeDtypeStruct((1, config.data.crop_size, config.data.crop_size, 3), jnp.float32)
  params = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), image)
  return jax.tree.map(lambda p: tuple(p.shape), params['params'])


def _file_layout(name: str, kernel_shape: tuple) -> tuple:
  """A kernel's shape as Caffe and PyTorch store it: (out, in, h, w) or (out, in)."""
  if name.startswith('conv'):
    h, w, c_in, c_out = kernel_shape
    return (c_out, c_in, h, w)
  return (kernel_shape[1], kernel_shape[0])


def _converted(name: str, weight: np.ndarray, bias: np.ndarray, want: dict, pool5_channels: int,
               where: str) -> dict[str, np.ndarray]:
  """One layer's kernel and bias in this network's layout, from (out, in, h, w) or (out, in)."""
  file_shape = _file_layout(name, want['kernel'])
  if name.startswith('fc') and weight.ndim == 4 and weight.shape[:2] == (1, 1):
    weight = weight.reshape(weight.shape[2:])  # Caffe's oldest files store (1, 1, out, in)
  if bias.ndim == 4 and bias.shape[:3] == (1, 1, 1):
    bias = bias.reshape(-1)
  for what, got, need in (('weights', weight.shape, file_shape),
                          ('biases', bias.shape, want['bias'])):
    if tuple(got) != tuple(need):
      raise DataError(f'{where} has {what} of shape {tuple(got)}, but the network '
                      f'of this config needs {tuple(need)}. Use the config of the network the '
                      'file holds (configs/caffe_alexnet.py or configs/torchvision_alexnet.py).')
  weight = weight.astype(np.float32)
  if name.startswith('conv'):
    kernel = weight.transpose(2, 3, 1, 0)
  elif name == 'fc6':  # pool5 is flattened as (C, H, W) there and as (H, W, C) here
    out, inputs = weight.shape
    side = int(round((inputs // pool5_channels) ** 0.5))
    kernel = weight.reshape(out, pool5_channels, side, side).transpose(2, 3, 1, 0)
    kernel = kernel.reshape(inputs, out)
  else:
    kernel = weight.T
  return {'kernel': np.ascontiguousarray(kernel), 'bias': np.asarray(bias, np.float32)}


def _params(tensors: Callable[[str], tuple[np.ndarray, np.ndarray]],
            config: ml_collections.ConfigDict, source: str,
            file_names: Mapping[str, str] | None = None) -> dict:
  """Every layer's parameters from `tensors(layer) -> (weight, bias)` in the file's layout;
  `file_names` are the layers' names in the file where they differ, for the messages."""
  want = expected_shapes(config)
  missing = [name for name in LAYERS if name not in want]
  if missing:
    raise DataError(f'The config\'s network has no {", ".join(missing)}: an imported AlexNet '
                    'needs all eight layers (model.skip_convs must be empty).')
  pool5_channels = want['conv5']['bias'][0]

  def where(name):
    known_as = f' ({file_names[name]})' if file_names else ''
    return f'{source}: layer {name}{known_as}'

  return {name: _converted(name, *tensors(name), want[name], pool5_channels, where(name))
          for name in LAYERS}


def caffe_params(blobs: Mapping[str, list[np.ndarray]], config: ml_collections.ConfigDict,
                 source: str = 'the Caffe file') -> dict:
  """Parameters from a caffemodel's blobs (`caffe_format.read_net`): conv1 ... fc8, each
  [weight, bias]; conv1's input channels turned from Caffe's BGR to RGB."""

  def tensors(name):
    layer = blobs.get(name)
    if layer is None or len(layer) < 2:
      raise DataError(f'{source}: no layer {name} with weights and biases (layers with weights '
                      f'there: {", ".join(n for n, b in blobs.items() if b) or "none"}). Give a '
                      'caffemodel of AlexNet, whose layers are named conv1 ... fc8.')
    weight, bias = layer[0], layer[1]
    if name == 'conv1' and weight.ndim == 4:
      weight = weight[:, ::-1]  # BGR -> RGB
    return weight, bias

  return _params(tensors, config, source)


def torch_params(state_dict: Mapping[str, np.ndarray], config: ml_collections.ConfigDict,
                 source: str = 'the PyTorch file') -> dict:
  """Parameters from torchvision's AlexNet state dict (`features.0.weight`, ...,
  `classifier.6.bias`; DataParallel's `module.` is ignored), with torchvision's per-channel std
  and the config's `model.input_scale` folded into conv1."""
  tensors_by_key = {'.'.join(p for p in k.split('.') if p != 'module'): np.asarray(v)
                    for k, v in state_dict.items()}

  def tensors(name):
    key = TORCH_NAMES[name]
    if f'{key}.weight' not in tensors_by_key or f'{key}.bias' not in tensors_by_key:
      raise DataError(f'{source}: no {key}.weight and {key}.bias (layer {name}); its keys start '
                      f'{", ".join(list(tensors_by_key)[:4])}. Give torchvision\'s AlexNet state '
                      'dict.')
    weight, bias = tensors_by_key[f'{key}.weight'], tensors_by_key[f'{key}.bias']
    if name == 'conv1' and weight.ndim == 4 and weight.shape[1] == 3:
      # x_torch = (p / 255 - mean) / std = (p - 255 mean) / (255 std), and the network scales
      # p - 255 mean by input_scale before conv1.
      scale = 255.0 * np.asarray(TORCHVISION_STD, np.float64) * config.model.input_scale
      weight = (weight.astype(np.float64) / scale[None, :, None, None]).astype(np.float32)
    return weight, bias

  return _params(tensors, config, source, TORCH_NAMES)


# ---------------------------------------------------------------------------------------------
# Reading the files.
# ---------------------------------------------------------------------------------------------


def read_torch(path: str) -> dict[str, np.ndarray]:
  """A PyTorch state dict (or a checkpoint holding one under 'state_dict' or 'model') as NumPy
  arrays, through torch's `weights_only` loader: tensors and plain containers, never code."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise UserError(f'Reading {path} needs PyTorch (CPU wheels suffice): pip install -e '
                    "'.[torch]'. Training never needs it.") from e
  try:
    obj = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pylint: disable=broad-except  (zip, pickle and unpickler errors)
    text = str(e).strip()
    first = text.splitlines()[0].split('. ')[0] if text else type(e).__name__
    raise DataError(f'{path} does not read as a PyTorch state dict ({first[:200]}). Give the '
                    'file torch.save(model.state_dict(), path) wrote, whole.') from e
  for key in ('state_dict', 'model'):
    if isinstance(obj, dict) and isinstance(obj.get(key), dict):
      obj = obj[key]
  if not isinstance(obj, dict):
    raise DataError(f'{path} holds a {type(obj).__name__}, not a state dict of tensors.')
  return {k: v.detach().float().numpy() for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _caffe_mean(path: str, size: int) -> np.ndarray:
  """Caffe's BGR (3, S, S) mean image as this project's RGB (S, S, 3)."""
  from alexnet_jax import caffe_format  # pylint: disable=g-import-not-at-top
  if path.endswith('.npy'):
    try:
      mean = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
      raise DataError(f'{path} does not read as a NumPy array: {e}.') from e
  else:
    mean = caffe_format.read_mean(path)
  mean = np.asarray(mean, np.float32).reshape(-1, *np.shape(mean)[-2:])
  if mean.shape != (3, size, size):
    raise DataError(f'The mean image {path} has shape {mean.shape}; the config reads '
                    f'{size}x{size} images (data.resize_size), so it needs (3, {size}, {size}).')
  return np.ascontiguousarray(mean[::-1].transpose(1, 2, 0))


def _data_mean(config: ml_collections.ConfigDict) -> np.ndarray:
  """This project's mean image of the training set the config's data section names."""
  from alexnet_jax import sources, stats  # pylint: disable=g-import-not-at-top
  return stats.load_or_compute(sources.train_source(config.data), config.data).norm.mean_image


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# The checkpoint.
# ---------------------------------------------------------------------------------------------


def import_file(weights: str, config: ml_collections.ConfigDict, workdir: str,
                mean: str = '') -> str:
  """Writes `weights` (a .caffemodel or a PyTorch .pth/.pt file) as the step-0 checkpoint of
  `workdir`, for the network `config` describes; returns the checkpoint's folder.

  `mean`, for a Caffe file: Caffe's mean image (imagenet_mean.binaryproto, or a .npy of it), or
  'data' for this project's mean image of the training set the config names. torchvision's
  weights carry their own (255 times its channel means, at every pixel).
  """
  config_check.validate(config)
  if not os.path.isfile(weights):
    raise DataError(f'No file {weights}. Give --weights the path of bvlc_alexnet.caffemodel or '
                    'of torchvision\'s alexnet-owt-7be5be79.pth.')
  size = config.data.resize_size
  if weights.endswith('.caffemodel'):
    from alexnet_jax import caffe_format  # pylint: disable=g-import-not-at-top
    params = caffe_params(caffe_format.read_net(weights), config, weights)
    if mean == 'data':
      mean_image = _data_mean(config)
    elif mean.endswith(CAFFE_MEANS):
      mean_image = _caffe_mean(mean, size)
    else:
      raise UserError('A Caffe network needs the mean image it was trained with: --mean='
                      'imagenet_mean.binaryproto (Caffe\'s ILSVRC-2012 mean, or a .npy of it), '
                      'or --mean=data for this project\'s mean image of the training set the '
                      'config names.')
  elif weights.endswith(('.pth', '.pt')):
    if mean:
      raise UserError('--mean is for Caffe files: torchvision\'s weights expect its own channel '
                      'means, which the import sets.')
    params = torch_params(read_torch(weights), config, weights)
    mean_image = np.broadcast_to(255 * np.asarray(TORCHVISION_MEAN, np.float32),
                                 (size, size, 3)).copy()
  else:
    raise UserError(f'{weights}: give a Caffe .caffemodel or a PyTorch .pth/.pt state dict.')
  # No PCA comes with the weights: training (a fine-tune too) computes its data's own.
  norm = Normalization(mean_image=mean_image.astype(np.float32),
                       eigvals=np.zeros(3, np.float32), eigvecs=np.eye(3, dtype=np.float32))
  return _write(params, norm, config, workdir, weights)


def _write(params: dict, norm: Normalization, config: ml_collections.ConfigDict, workdir: str,
           weights: str) -> str:
  workdir = checkpointing.absolute(workdir)
  model = create_model(config.model, 'plain')
  state = train.create_train_state(jax.random.key(0), model, config.data.crop_size, config.optim,
                                   params=jax.tree.map(jnp.asarray, params))
  mgr = checkpointing.manager(workdir, config.keep_checkpoints)
  try:
    if mgr.all_steps():
      raise CheckpointError(f'{workdir} already holds checkpoints (steps {mgr.all_steps()}). '
                            'Import into a new --workdir.')
    meta = {'lr_policy': optim.learning_rate(config.optim, steps_per_epoch=1).state(),
            'class_names': (imagenet_synsets() if config.model.num_classes == 1000 else
                            [str(i) for i in range(config.model.num_classes)]),
            'imported_from': {'file': os.path.abspath(weights), 'sha256': _sha256(weights)}}
    checkpointing.save(mgr, 0, state, config, meta, norm, wait=True)
  finally:
    checkpointing.finish(mgr)
  return os.path.join(workdir, 'checkpoints', '0')


def main(argv):
  cli.start(argv)
  options = flags.FLAGS
  with cli.one_line_errors():
    path = import_file(options.weights, options.config, options.workdir, options.mean)
  print(f'wrote {path}: evaluate it with python -m alexnet_jax.evaluate --workdir='
        f'{options.workdir} --config.data.val_dir=/path/to/imagenet/val')


if __name__ == '__main__':
  cli.define_config_file(None, 'The config of the network the file holds: '
                         'configs/caffe_alexnet.py or configs/torchvision_alexnet.py.')
  flags.DEFINE_string('weights', None, 'bvlc_alexnet.caffemodel, or a PyTorch state dict of '
                      "torchvision's AlexNet (.pth).")
  flags.DEFINE_string('mean', '', 'Caffe only: imagenet_mean.binaryproto (or a .npy of it), or '
                      '"data" for the mean image of the training set the config names.')
  flags.DEFINE_string('workdir', None, 'A new folder for the checkpoint.')
  flags.mark_flags_as_required(['config', 'weights', 'workdir'])
  app.run(main, flags_parser=cli.parse_flags)
