"""The paper's augmentation (Section 4.1): the host's Grain pipeline draws it and cuts the patches;
the device does the float arithmetic inside the jitted step. The test views are the device's.

Host, per batch of the pipeline (`draw`, `cut`; alexnet_jax.input_pipeline composes them): each
record's patch corner, reflection and three lighting coefficients are a function of the run's
seed and the record's position in Grain's shuffled stream alone (`draw`, a counter-based
generator over the positions of a batch, vectorized); the crop x crop patch is then cut from the
uint8 image, reflected where drawn. The same draws therefore come in a resumed run (the position
is the iterator's checkpointed state) and whatever the number of processes and devices (the
positions are those of the stream before Grain splits it among processes). Grain's `random_map`
would seed a generator per record to the same effect, but resetting it costs the two-core host
a fifth of its images per second (BENCHMARKS.md, "Input pipeline").

Device, per batch (`train_inputs`): the uint8 patch minus the matching patch of the training
set's mean image (Section 2; reflected with it), plus the lighting offset, cast to the compute
dtype: XLA fuses it into conv1's input. The host sends uint8 patches and 21 bytes of draws, a
fifth fewer bytes than the 256x256 images and a quarter of float32's, and does no float work on
pixels. Evaluation sends the 256x256 uint8 images, and the device cuts the test views from them
(`eval_inputs`).

`alexnet_jax.transforms` holds the same steps in NumPy, one example at a time; the tests hold
both to the same numbers.
"""

import jax
import jax.numpy as jnp
import numpy as np

from alexnet_jax import transforms
from alexnet_jax.stats import Normalization

# Section 4.1's l_i: the square root of each eigenvalue (default) or the eigenvalue itself.
LIGHTING_SCALES = ('sqrt', 'eigval')
DRAWS = ('top', 'left', 'flip', 'alpha')  # what a training batch carries beside its patches


def _mix(x: np.ndarray) -> np.ndarray:
  """SplitMix64's finalizer: a bijection of uint64 whose output bits look independent."""
  x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


def _uniforms(seed: int, positions: np.ndarray, n: int) -> np.ndarray:
  """(len(positions), n) uniforms in [0, 1), each a function of (seed, position, column)."""
  with np.errstate(over='ignore'):  # uint64 arithmetic wraps, as the generator intends
    key = _mix(np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(0x632BE59BD9B4E019))
    counter = (np.asarray(positions, np.uint64)[:, None] * np.uint64(n)
               + np.arange(n, dtype=np.uint64))
    bits = _mix(_mix(counter ^ key))
  return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


def draw(seed: int, positions: np.ndarray, size: int, crop: int, flip: bool = True,
         lighting_std: float = 0.1) -> dict:
  """Section 4.1's random choices for the records at `positions` of the training stream: the
  patch's corner, uniform over all (size - crop + 1)^2 positions; a reflection with probability
  1/2 (none without `flip`); the lighting coefficients alpha_i ~ N(0, lighting_std), by
  Box-Muller. Every draw is made whatever the options, so that turning one off leaves the
  others as they were. Returns {'top', 'left' (int32), 'flip' (bool), 'alpha' (float32, 3)}."""
  u = _uniforms(seed, positions, 7)
  corners = (u[:, :2] * (size - crop + 1)).astype(np.int32)
  radius = np.sqrt(-2.0 * np.log1p(-u[:, 3:5]))
  angle = 2.0 * np.pi * u[:, 5:7]
  normals = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)], axis=1)[:, :3]
  return {'top': corners[:, 0], 'left': corners[:, 1], 'flip': flip & (u[:, 2] < 0.5),
          'alpha': (lighting_std * normals).astype(np.float32)}


def cut(image: np.ndarray, top: int, left: int, flip: bool, crop: int,
        out: np.ndarray | None = None) -> np.ndarray:
  """The crop x crop patch of a uint8 HxWx3 image at (top, left), reflected where `flip`:
  a slice and a copy (into `out` if given)."""
  patch = image[top:top + crop, left:left + crop]
  if flip:
    return transforms.mirror(patch, out)
  if out is None:
    return np.ascontiguousarray(patch)
  np.copyto(out, patch)
  return out


def drawn_batch(images: np.ndarray, labels: np.ndarray, crop: int, seed: int = 0,
                flip: bool = True, lighting_std: float = 0.1) -> dict:
  """A training batch as the pipeline makes it, from (B, S, S, 3) uint8 images already fitted:
  image i drawn as the record at position i of the stream. For synthetic data (benchmarks,
  tests, probes); training draws in its Grain pipeline."""
  batch = draw(seed, np.arange(len(images)), images.shape[1], crop, flip, lighting_std)
  batch['image'] = np.stack([cut(im, t, l, f, crop) for im, t, l, f in zip(
      images, batch['top'], batch['left'], batch['flip'])])
  batch['label'] = np.asarray(labels, np.int32)
  return batch


def lighting_shift(alpha: jax.Array, norm: Normalization, scale: str = 'sqrt') -> jax.Array:
  """Section 4.1: the RGB offset [p1 p2 p3] [a1 l1, a2 l2, a3 l3]^T of each row of `alpha`.

  l_i is sqrt(lambda_i), the standard deviation along p_i (scale='sqrt', the default), or the
  eigenvalue lambda_i itself, the text read literally (scale='eigval'); see
  transforms.lighting_shift for why the default is the square root.
  """
  lam = jnp.sqrt(jnp.maximum(norm.eigvals, 0)) if scale == 'sqrt' else norm.eigvals
  return (alpha * lam) @ norm.eigvecs.T


def train_inputs(batch: dict, norm: Normalization, *, lighting_scale: str = 'sqrt',
                 dtype=jnp.float32) -> jax.Array:
  """The network's training input from a batch the pipeline drew and cut: each uint8 patch
  (B, crop, crop, 3) minus the patch of the mean image at its corner (reflected with it), plus
  its lighting offset, in `dtype`."""
  images = batch['image']
  crop = images.shape[1]

  def mean_patch(top, left, flip):
    patch = jax.lax.dynamic_slice(norm.mean_image, (top, left, 0), (crop, crop, 3))
    return jnp.where(flip, patch[:, ::-1], patch)

  mean = jax.vmap(mean_patch)(batch['top'], batch['left'], batch['flip'])
  shift = lighting_shift(batch['alpha'], norm, lighting_scale)
  return (images.astype(jnp.float32) - mean + shift[:, None, None, :]).astype(jnp.dtype(dtype))


def _mean_subtracted(images: jax.Array, norm: Normalization, top: int, left: int,
                     crop: int) -> jax.Array:
  return (images[:, top:top + crop, left:left + crop].astype(jnp.float32)
          - norm.mean_image[top:top + crop, left:left + crop])


def center_view(images: jax.Array, norm: Normalization, *, crop: int = 227,
                dtype=jnp.float32) -> jax.Array:
  """The test-time center patch of a uint8 (B, S, S, 3) batch, centered: (B, crop, crop, 3)."""
  h, w = images.shape[1:3]
  top, left = (h - crop) // 2, (w - crop) // 2
  return _mean_subtracted(images, norm, top, left, crop).astype(jnp.dtype(dtype))


def ten_views(images: jax.Array, norm: Normalization, *, crop: int = 227,
              dtype=jnp.float32) -> jax.Array:
  """Section 4.1's ten test patches of a uint8 (B, S, S, 3) batch, centered: (B, 10, crop, crop,
  3), in transforms.ten_crop's order (four corners, center, then the reflections of all five)."""
  h, w = images.shape[1:3]
  corners = ((0, 0), (0, w - crop), (h - crop, 0), (h - crop, w - crop),
             ((h - crop) // 2, (w - crop) // 2))
  views = jnp.stack([_mean_subtracted(images, norm, top, left, crop) for top, left in corners],
                    axis=1)
  return jnp.concatenate([views, views[:, :, :, ::-1]], axis=1).astype(jnp.dtype(dtype))


def eval_inputs(images: jax.Array, norm: Normalization, *, crop: int = 227, views: str = 'center',
                dtype=jnp.float32) -> jax.Array:
  """The network's test input from uint8 images: views='center' (B, crop, crop, 3) or 'ten'
  (B, 10, crop, crop, 3), as `inference.view_probabilities` takes them."""
  if views not in ('center', 'ten'):
    raise ValueError(f"views must be 'center' or 'ten', not {views!r}")
  return (center_view if views == 'center' else ten_views)(images, norm, crop=crop, dtype=dtype)
