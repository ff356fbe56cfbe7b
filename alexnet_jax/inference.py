"""A trained network outside the training loop: restore a checkpoint, classify images, read fc7.

    import alexnet_jax
    classifier, params, config = alexnet_jax.restore('runs/imagenette_small')   # or gs://...
    pred = alexnet_jax.predict(classifier, params, ['cat.jpg', 'dog.jpg'], top_k=5)
    pred.names[0], pred.probs[0]

A `Classifier` is the Flax network together with what it needs to read a raw image the way
training did: the class names, and the training set's mean image (Section 2), saved in the
checkpoint.
Nothing here needs the optimizer, the input pipeline's iterator or more than one device.
"""

import dataclasses
import functools
import os
from types import MappingProxyType
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from alexnet_jax import checkpointing, transforms
from alexnet_jax.cli import apply_data_overrides
from alexnet_jax.errors import CheckpointError, DataError
from alexnet_jax.model import create_model
from alexnet_jax.stats import Normalization


@functools.cache
def imagenet_names() -> dict[str, str]:
  """WordNet synset id -> its ImageNet class name ('n01440764' -> 'tench, Tinca tinca')."""
  path = os.path.join(os.path.dirname(__file__), 'imagenet_classes.txt')
  with open(path) as f:
    return dict(line.rstrip('\n').split('\t', 1) for line in f if line.strip())


def imagenet_synsets() -> tuple[str, ...]:
  """The 1000 ILSVRC-2012 synsets in the standard (sorted) order that TFDS and folders use."""
  return tuple(imagenet_names())


def display_name(class_name: str) -> str:
  """A synset's first ImageNet lemma ('n01440764' -> 'tench'); other labels as they are."""
  name = imagenet_names().get(class_name)
  return name.split(',')[0] if name else class_name


@dataclasses.dataclass(frozen=True)
class Classifier:
  """The network and how it reads images: `restore` returns one.

  Attributes:
    network: the Flax module the checkpoint's config describes (AlexNet or its CIFAR-10 net).
    class_names: the training data's labels, in output order (synsets for ImageNet data).
    norm: the training set's mean image and RGB PCA (Section 2, 4.1).
    resize: images are fitted to resize x resize (shorter side, then the center).
    crop: the network's input side (227 for the paper's net).
    decoder: how JPEGs are decoded and resized ('auto' or 'pillow', see data.decoder): the
      way training did, as the pixels differ slightly between the two.
  """
  network: nn.Module
  class_names: tuple[str, ...]
  norm: Normalization
  resize: int
  crop: int
  decoder: str = 'auto'

  @property
  def names(self) -> tuple[str, ...]:
    """Readable class names: ImageNet's for synsets, the dataset's own labels otherwise."""
    return tuple(display_name(c) for c in self.class_names)

  def preprocess(self, images, views: str = 'center') -> np.ndarray:
    """Raw images -> the network's input: fitted, mean-subtracted, cropped.

    `images`: file paths, encoded bytes, PIL images or HxWx3 RGB arrays on the 0-255 scale (a
    list of them, or one NxHxWx3 array): uint8, or floats from 0 to 255. Float arrays on the 0-1
    scale (as matplotlib and many loaders give) are refused with a ValueError rather than read
    as near-black images; multiply them by 255 first. Returns (N, crop, crop, 3) for
    views='center', or (N, 10, crop, crop, 3) for the paper's ten patches (views='ten').
    """
    out = []
    for image in _as_list(images):
      fitted = transforms.resize_center_crop(_to_rgb_array(image, self.decoder), self.resize,
                                             self.decoder)
      centered = transforms.subtract_mean(fitted, self.norm.mean_image)
      out.append(transforms.center_crop(centered, self.crop) if views == 'center'
                 else transforms.ten_crop(centered, self.crop))
    return np.stack(out).astype(np.float32)

  def logits(self, params, inputs: np.ndarray) -> jax.Array:
    """Logits of preprocessed inputs ((N, crop, crop, 3); test mode: no dropout)."""
    return _jitted(_logits, self.network)(params, jnp.asarray(inputs))

  def features(self, params, inputs: np.ndarray) -> np.ndarray:
    """fc7's 4096-d activations (after ReLU) of preprocessed inputs: Figure 4's features."""
    return np.asarray(_jitted(_fc7, self.network)(params, jnp.asarray(inputs)))


@functools.cache
def _jitted(fn, network):
  """`fn(network, ...)` jitted for `network`, with its implementation's compiler options, as
  training compiles it."""
  return network.implementation.jit(functools.partial(fn, network))


def _logits(network, params, x):
  return network.apply({'params': params}, x, train=False)


def view_probabilities(network, params, images):
  """Softmax over the classes, averaged over each image's views: `images` is (B, crop, crop, 3)
  or (B, views, crop, crop, 3), the result (B, classes)."""
  flat = images.reshape((-1,) + images.shape[-3:])
  probs = jax.nn.softmax(network.apply({'params': params}, flat, train=False), axis=-1)
  return probs.reshape(images.shape[0], -1, probs.shape[-1]).mean(axis=1)


def _fc7(network, params, x):
  _, state = network.apply({'params': params}, x, train=False, mutable=['features'])
  return state['features']['fc7_act'][0]


def _as_list(images) -> list:
  if isinstance(images, np.ndarray) and images.ndim == 4:
    return list(images)
  if isinstance(images, (str, bytes, os.PathLike, np.ndarray)) or hasattr(images, 'convert'):
    return [images]
  return list(images)


def _to_rgb_array(image, decoder: str = 'auto') -> np.ndarray:
  if isinstance(image, (str, os.PathLike)):
    with open(image, 'rb') as f:
      image = f.read()
  if isinstance(image, bytes):
    return transforms.decode(image, decoder=decoder)
  if hasattr(image, 'convert'):  # a PIL image
    return np.asarray(image.convert('RGB'))
  image = np.asarray(image)
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, axis=-1)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f'An image must be HxWx3 RGB (or HxW grayscale); got shape {image.shape}.')
  if image.dtype != np.uint8:
    if np.issubdtype(image.dtype, np.floating) and 0 < image.max() <= 1:
      raise ValueError('A float image with values in [0, 1] was given; predict reads pixels on '
                       'the 0-255 scale, as training did. Pass image * 255 (or uint8 pixels).')
    if image.min() < 0 or image.max() > 255:
      raise ValueError(f'Pixel values must lie in 0-255; this image has {image.min()} to '
                       f'{image.max()}. Pass RGB on the 0-255 scale (uint8, or floats).')
    image = np.round(image).astype(np.uint8)
  return image


@functools.cache
def _warn_fast_decoder_missing() -> None:
  logging.warning('This checkpoint was trained on images decoded by simplejpeg and OpenCV, which '
                  'are not installed here: Pillow decodes them instead, so the pixels and so '
                  "the errors differ slightly. Install them with pip install -e '.[fast]'.")


def checkpoint_config(loaded: checkpointing.Loaded,
                      overrides: Mapping[str, Any] = MappingProxyType({})
                      ) -> ml_collections.ConfigDict:
  """A copy of the checkpoint's config to read images with: the JPEG decoder training used
  (where the checkpoint records it), then the user's `{'data.FIELD': value}` overrides, which
  win (cli.apply_data_overrides)."""
  config = ml_collections.ConfigDict(loaded.config.to_dict())
  recorded = transforms.decoder_setting(loaded.decoder)
  if recorded and 'data.decoder' not in overrides:
    config.data.decoder = recorded
    if config.data.decoder == 'auto' and not transforms.FAST_DECODER:
      _warn_fast_decoder_missing()
  apply_data_overrides(config, overrides)
  return config


def normalization(loaded: checkpointing.Loaded,
                  data_config: ml_collections.ConfigDict) -> Normalization:
  """The training set's mean image and PCA: saved in the checkpoint, or, for one written before
  checkpoints carried them, recomputed (once, then cached) from the training data."""
  if loaded.norm is not None:
    return loaded.norm
  from alexnet_jax import sources, stats  # pylint: disable=g-import-not-at-top
  try:
    return stats.load_or_compute(sources.train_source(data_config), data_config).norm
  except DataError as e:
    raise CheckpointError(
        f'The checkpoint {loaded.path} has no saved mean image, and the training data it '
        f'would be recomputed from cannot be read ({e}). Run from the folder the training '
        'ran in, or use a checkpoint written by this version, which carries the '
        'statistics.') from e


def restore(path: str, step: int | str | None = None, decoder: str | None = None
            ) -> tuple[Classifier, dict, ml_collections.ConfigDict]:
  """(classifier, params, config) of a checkpoint: a training run's workdir, its checkpoints/
  folder or one step's folder, local or anywhere Orbax reads (gs://...), written on any number
  of devices. The newest checkpoint unless `step` names another ('best': the one of lowest
  validation top-1 error). Images are decoded as in
  training unless `decoder` ('auto' or 'pillow') says otherwise."""
  loaded = checkpointing.load(path, step)
  config = checkpoint_config(loaded, {'data.decoder': decoder} if decoder else {})
  norm = normalization(loaded, config.data)
  class_names = loaded.class_names
  if not class_names and config.model.num_classes == 1000:
    class_names = imagenet_synsets()
  network = create_model(config.model)
  classifier = Classifier(network=network, class_names=tuple(class_names) or tuple(
      str(i) for i in range(config.model.num_classes)), norm=norm,
                resize=config.data.resize_size, crop=config.data.crop_size,
                decoder=config.data.decoder)
  return classifier, jax.tree.map(jnp.asarray, loaded.params), config


@dataclasses.dataclass(frozen=True)
class Prediction:
  """Per image, the top-k classes: `ids` (N, k), `probs` (N, k), `names` N lists of k."""
  ids: np.ndarray
  probs: np.ndarray
  names: list[list[str]]


def top_classes(scores, k: int) -> jax.Array:
  """The k highest-scoring classes of each row, best first (all of them when fewer than k).
  Equal scores rank by the lower class index, as a stable sort does: predictions, training's and
  evaluation's errors, the confusion matrix and the predictions file all rank alike."""
  return jax.lax.top_k(scores, min(k, scores.shape[-1]))[1]


def predict(classifier: Classifier, params, images, top_k: int = 5,
            views: str = 'center') -> Prediction:
  """Classifies raw images (see Classifier.preprocess for what `images` may be).

  views='center' reads the center patch; views='ten' averages the softmax over the paper's ten
  patches (Section 4.1). Returns the top_k class ids, probabilities and names, best first.
  """
  inputs = jnp.asarray(classifier.preprocess(images, views))
  probs = np.asarray(_jitted(view_probabilities, classifier.network)(params, inputs))
  ids = np.asarray(top_classes(probs, top_k))
  names = classifier.names
  return Prediction(ids=ids, probs=np.take_along_axis(probs, ids, axis=-1),
                    names=[[names[i] for i in row] for row in ids])
