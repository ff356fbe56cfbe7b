"""The paper's augmentation and test-time views (Section 4.1) on the device, a batch at a time.

The host sends the paper's 256x256 images as uint8 (alexnet_jax.input_pipeline): a quarter of
float32's bytes and no float work. Inside the jitted step each image then becomes the network's
input: a random crop x crop patch, its horizontal reflection with probability 1/2, minus the
matching patch of the training set's mean image (Section 2), plus one PCA lighting offset, cast
to the compute dtype. `alexnet_jax.transforms` holds the same steps in NumPy, one example at a
time; the tests hold the two to the same numbers.

Randomness: example i of a batch draws from `fold_in(rng, i)`, i its row in the global batch, so
an image's augmentation depends on the step's key and its place in the batch, never on how the
batch is laid out over devices and processes.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from alexnet_jax.stats import Normalization

# Section 4.1's l_i: the square root of each eigenvalue (default) or the eigenvalue itself.
LIGHTING_SCALES = ('sqrt', 'eigval')


class Draws(NamedTuple):
  """Section 4.1's random choices, one row per image."""
  top: jax.Array    # (B,) int32: the patch's top row
  left: jax.Array   # (B,) int32: its left column
  flip: jax.Array   # (B,) bool: use the horizontal reflection
  alpha: jax.Array  # (B, 3) float32: the lighting coefficients alpha_i ~ N(0, lighting_std)


def draw(rng: jax.Array, batch: int, size: tuple[int, int], crop: int, flip: bool = True,
         lighting_std: float = 0.1) -> Draws:
  """Corners uniform over all (H - crop + 1)(W - crop + 1) positions of an HxW image, a
  reflection with probability 1/2 (none without `flip`), lighting alphas ~ N(0, lighting_std)."""
  h, w = size

  def one(i):
    k_top, k_left, k_flip, k_alpha = jax.random.split(jax.random.fold_in(rng, i), 4)
    return Draws(top=jax.random.randint(k_top, (), 0, h - crop + 1),
                 left=jax.random.randint(k_left, (), 0, w - crop + 1),
                 flip=jnp.logical_and(flip, jax.random.bernoulli(k_flip)),
                 alpha=lighting_std * jax.random.normal(k_alpha, (3,)))

  return jax.vmap(one)(jnp.arange(batch))


def lighting_shift(alpha: jax.Array, norm: Normalization, scale: str = 'sqrt') -> jax.Array:
  """Section 4.1: the RGB offset [p1 p2 p3] [a1 l1, a2 l2, a3 l3]^T of each row of `alpha`.

  l_i is sqrt(lambda_i), the standard deviation along p_i (scale='sqrt', the default), or the
  eigenvalue lambda_i itself, the text read literally (scale='eigval'); see
  transforms.lighting_shift for why the default is the square root.
  """
  lam = jnp.sqrt(jnp.maximum(norm.eigvals, 0)) if scale == 'sqrt' else norm.eigvals
  return (alpha * lam) @ norm.eigvecs.T


def patches(images: jax.Array, norm: Normalization, top: jax.Array, left: jax.Array,
            flip: jax.Array, shift: jax.Array, crop: int, dtype=jnp.float32) -> jax.Array:
  """Per image: its crop x crop patch at (top, left) minus the same patch of the mean image,
  reflected where `flip`, plus its RGB `shift`; (B, crop, crop, 3) in `dtype`."""

  def one(image, top, left, flip, shift):
    corner, shape = (top, left, 0), (crop, crop, 3)
    patch = (jax.lax.dynamic_slice(image, corner, shape).astype(jnp.float32)
             - jax.lax.dynamic_slice(norm.mean_image, corner, shape))
    # Reflecting the centered patch reflects the image and its mean alike.
    patch = jnp.where(flip, patch[:, ::-1], patch)
    return (patch + shift).astype(dtype)

  return jax.vmap(one)(images, top, left, flip, shift)


def train_inputs(images: jax.Array, norm: Normalization, rng: jax.Array, *, crop: int = 227,
                 flip: bool = True, lighting_std: float = 0.1, lighting_scale: str = 'sqrt',
                 dtype=jnp.float32) -> jax.Array:
  """Section 4.1's training augmentation of a uint8 (B, S, S, 3) batch: (B, crop, crop, 3)."""
  drawn = draw(rng, images.shape[0], images.shape[1:3], crop, flip, lighting_std)
  return patches(images, norm, drawn.top, drawn.left, drawn.flip,
                 lighting_shift(drawn.alpha, norm, lighting_scale),
                 crop, jnp.dtype(dtype))


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
