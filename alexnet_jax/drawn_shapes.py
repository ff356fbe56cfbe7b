"""A small 10-class image dataset drawn procedurally, so the demo runs with no download.

It is written as JPEG files in the ImageFolder layout (one folder per class), so the demo
exercises the same decode -> transform -> batch path as ImageNet. Each image is one of ten
shapes or textures in random colours, position, size and orientation, over a noisy background.
"""

import os

import numpy as np
import tqdm
from PIL import Image, ImageDraw

CLASSES = ('circle', 'square', 'triangle', 'ring', 'cross', 'horizontal_stripes',
           'vertical_stripes', 'diagonal_stripes', 'checkerboard', 'dots')


def _colours(rng: np.random.Generator) -> tuple[tuple, tuple]:
  while True:
    bg, fg = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    if np.abs(bg.astype(int) - fg).sum() > 200:  # enough contrast to see the shape
      return tuple(int(c) for c in bg), tuple(int(c) for c in fg)


def _stripes(draw, size, fg, period, direction):
  for k in range(-2 * size, 2 * size, period):
    if direction == 'h':
      draw.rectangle([0, k, size, k + period // 2 - 1], fill=fg)
    elif direction == 'v':
      draw.rectangle([k, 0, k + period // 2 - 1, size], fill=fg)
    else:
      draw.polygon([(k, 0), (k + period // 2, 0), (k + period // 2 + size, size), (k + size, size)],
                   fill=fg)


def draw(label: int, size: int, rng: np.random.Generator) -> Image.Image:
  """One size x size RGB image of class `label`."""
  bg, fg = _colours(rng)
  image = Image.new('RGB', (size, size), bg)
  d = ImageDraw.Draw(image)
  r = rng.uniform(0.18, 0.32) * size
  cx, cy = rng.uniform(r + 2, size - r - 2, 2)
  name = CLASSES[label]
  if name == 'circle':
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)
  elif name == 'square':
    theta = rng.uniform(0, np.pi / 2)
    corners = [(cx + r * np.cos(theta + a), cy + r * np.sin(theta + a))
               for a in np.arange(4) * np.pi / 2]
    d.polygon(corners, fill=fg)
  elif name == 'triangle':
    theta = rng.uniform(0, 2 * np.pi)
    d.polygon([(cx + r * np.cos(theta + a), cy + r * np.sin(theta + a))
               for a in np.arange(3) * 2 * np.pi / 3], fill=fg)
  elif name == 'ring':
    d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fg, width=max(2, int(r / 3.5)))
  elif name == 'cross':
    w = max(2, r / 3)
    d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fg)
    d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fg)
  elif name in ('horizontal_stripes', 'vertical_stripes', 'diagonal_stripes'):
    _stripes(d, size, fg, int(rng.integers(size // 8, size // 4)), name[0])
  elif name == 'checkerboard':
    cell = int(rng.integers(size // 8, size // 4))
    for i in range(0, size, cell):
      for j in range(0, size, cell):
        if (i // cell + j // cell) % 2:
          d.rectangle([i, j, i + cell - 1, j + cell - 1], fill=fg)
  elif name == 'dots':
    for _ in range(int(rng.integers(4, 8))):
      x, y = rng.uniform(0, size, 2)
      s = rng.uniform(0.04, 0.08) * size
      d.ellipse([x - s, y - s, x + s, y + s], fill=fg)
  pixels = np.asarray(image, np.float32) + rng.normal(0, 12, (size, size, 3))
  return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def ensure(root: str, train_per_class: int, val_per_class: int, size: int, seed: int = 0) -> str:
  """Writes `root/train/<class>/*.jpg` and `root/val/<class>/*.jpg` unless already complete.

  A finished dataset is marked by a file naming its parameters; an interrupted or differently
  sized one is drawn again. Returns `root`.
  """
  root = os.path.expanduser(root)
  marker = os.path.join(root, 'COMPLETE')
  spec = f'{train_per_class} {val_per_class} {size} {seed}'
  if os.path.exists(marker) and open(marker).read() == spec:
    return root
  rng = np.random.default_rng(seed)
  total = len(CLASSES) * (train_per_class + val_per_class)
  with tqdm.tqdm(total=total, desc=f'drawing demo images into {root}', unit='img') as bar:
    for split, per_class in (('train', train_per_class), ('val', val_per_class)):
      for label, name in enumerate(CLASSES):
        folder = os.path.join(root, split, name)
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
          # Sizes vary around `size` so that the resize step of the pipeline does real work.
          side = int(size * rng.uniform(1.0, 1.4))
          image = draw(label, side, rng)
          image.save(os.path.join(folder, f'{name}_{i:05d}.jpg'), quality=90)
          bar.update()
  with open(marker, 'w') as f:
    f.write(spec)
  return root
