"""The arrays behind the paper's Figures 3 and 4, as plain NumPy (plotting is experiments/').

Figure 3: the conv1 kernels as small RGB images, one block of rows per tower.
Figure 4: the training images whose fc7 feature vectors are nearest a query's, in Euclidean
distance.
"""

import numpy as np


def conv1_grid(kernel: np.ndarray, towers: int = 2, columns: int = 16, zoom: int = 4,
               gap: int = 1) -> np.ndarray:
  """conv1's kernels, (k, k, 3, C) in Flax layout, as one uint8 RGB image.

  Each kernel is stretched on its own to the full 0-255 range (its minimum black, its maximum
  white, as the paper's figure shows them), enlarged `zoom` times, and laid out `columns` to a
  row. Tower t's kernels (channels [t C/towers, (t+1) C/towers)) fill their own block of rows,
  with a wider gap between the blocks.
  """
  kernel = np.asarray(kernel, np.float32)
  k, _, c_in, c_out = kernel.shape
  if c_in != 3:
    raise ValueError(f'conv1 reads RGB images: expected 3 input channels, got {c_in}.')
  per_tower = c_out // towers
  columns = min(columns, per_tower)
  rows = -(-per_tower // columns)
  cell = k * zoom + gap
  tower_gap = 4 * gap
  height = towers * rows * cell + (towers - 1) * tower_gap + gap
  grid = np.full((height, columns * cell + gap, 3), 255, np.uint8)
  for j in range(c_out):
    w = kernel[..., j]
    lo, hi = w.min(), w.max()
    image = np.round(255 * (w - lo) / (hi - lo if hi > lo else 1.0)).astype(np.uint8)
    image = image.repeat(zoom, axis=0).repeat(zoom, axis=1)
    tower, i = divmod(j, per_tower)
    row, col = divmod(i, columns)
    top = tower * (rows * cell + tower_gap) + row * cell + gap
    left = col * cell + gap
    grid[top:top + k * zoom, left:left + k * zoom] = image
  return grid


def nearest(queries: np.ndarray, keys: np.ndarray, k: int = 6) -> tuple[np.ndarray, np.ndarray]:
  """(indices (Q, k), distances (Q, k)) of the k rows of `keys` nearest each row of `queries`
  in Euclidean distance, nearest first."""
  queries, keys = np.asarray(queries, np.float64), np.asarray(keys, np.float64)
  d2 = ((queries ** 2).sum(1)[:, None] - 2 * queries @ keys.T + (keys ** 2).sum(1)[None, :])
  d2 = np.maximum(d2, 0)
  idx = np.argsort(d2, axis=1, kind='stable')[:, :k]
  return idx, np.sqrt(np.take_along_axis(d2, idx, axis=1))
