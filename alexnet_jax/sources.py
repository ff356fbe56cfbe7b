"""Random-access sources of (encoded image, label) records, as Grain's `MapDataset.source` takes.

An ImageFolder tree holds one folder per class (a WordNet synset id for ImageNet) with the
images inside; classes are numbered in sorted folder order, as ILSVRC's synset list is sorted.
"""

import os
from typing import Sequence

import numpy as np

from alexnet_jax.errors import DataError

IMAGE_EXTENSIONS = ('.jpeg', '.jpg', '.png', '.bmp', '.webp')


class ImageFolder:
  """`root/<class>/<image>` files, read by index: `{'image_bytes': bytes, 'label': int32}`."""

  def __init__(self, root: str, class_names: Sequence[str] | None = None):
    root = os.path.expanduser(root)
    if not os.path.isdir(root):
      raise DataError(f'No image folder at {root!r}: expected one sub-folder per class with the '
                      'images inside (the ImageNet training layout). Point the config at it, '
                      'e.g. --config.data.train_dir=/path/to/train.')
    found = sorted(d.name for d in os.scandir(root) if d.is_dir())
    self.class_names = list(class_names) if class_names is not None else found
    index = {name: i for i, name in enumerate(self.class_names)}
    unknown = sorted(set(found) - set(index))
    if unknown:
      raise DataError(f'{root!r} has class folders the training set does not have: '
                      f'{unknown[:5]}{" ..." if len(unknown) > 5 else ""}. Training and '
                      'evaluation folders must name the same classes.')
    paths, labels = [], []
    for name in found:
      for entry in sorted(os.scandir(os.path.join(root, name)), key=lambda e: e.name):
        if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS):
          paths.append(entry.path)
          labels.append(index[name])
    if not paths:
      raise DataError(f'{root!r} holds no images ({", ".join(IMAGE_EXTENSIONS)}) in any of its '
                      f'{len(found)} class folders.')
    self.root = root
    self._paths = np.array(paths)  # one array, not a list of str objects: cheap to send to workers
    self._labels = np.array(labels, dtype=np.int32)

  def __len__(self) -> int:
    return len(self._paths)

  def __getitem__(self, index: int) -> dict:
    with open(self._paths[index], 'rb') as f:
      return {'image_bytes': f.read(), 'label': self._labels[index]}

  def __repr__(self) -> str:
    return f'ImageFolder({self.root!r}, {len(self)} images, {len(self.class_names)} classes)'

  @property
  def labels(self) -> np.ndarray:
    return self._labels
