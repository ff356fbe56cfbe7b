"""The paper's preprocessing and augmentation (Section 2 and Section 4.1), one example at a time.

Images are HxWx3 arrays, RGB, on the 0-255 scale. `fit` is the paper's offline step (shorter
side to 256, central 256x256 patch); `centre` subtracts the training set's mean image; the
random crop, the reflection and the PCA lighting are the two forms of data augmentation.
"""

import io

import numpy as np
from PIL import Image


def decode(image_bytes: bytes, min_size: int = 0) -> Image.Image:
  """Decodes JPEG (or any Pillow format) bytes to an RGB image; grayscale and CMYK become RGB.

  With `min_size`, a JPEG is decoded directly at the smallest 1/2, 1/4 or 1/8 scale whose
  shorter side is still at least `min_size` (libjpeg's DCT scaling): far less work for large
  photographs, and the result is resized afterwards anyway.
  """
  image = Image.open(io.BytesIO(image_bytes))
  if min_size and image.format == 'JPEG':
    w, h = image.size
    scale = min_size / min(w, h)
    image.draft('RGB', (int(np.ceil(w * scale)), int(np.ceil(h * scale))))
  return image.convert('RGB')


def fit(image: Image.Image, size: int) -> np.ndarray:
  """Section 2: rescale so the shorter side is `size`, then take the central size x size patch."""
  w, h = image.size
  scale = size / min(w, h)
  new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
  if (new_w, new_h) != (w, h):
    image = image.resize((new_w, new_h), Image.BILINEAR, reducing_gap=None)
  left, top = (new_w - size) // 2, (new_h - size) // 2
  return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


def centre(image: np.ndarray, mean_image: np.ndarray) -> np.ndarray:
  """Section 2: subtract the mean activity over the training set from each pixel."""
  return image.astype(np.float32) - mean_image


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
  top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
  return image[top:top + size, left:left + size]


def random_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
  """Section 4.1: a random size x size patch (the mean image, already subtracted, moves with it)."""
  top = rng.integers(0, image.shape[0] - size + 1)
  left = rng.integers(0, image.shape[1] - size + 1)
  return image[top:top + size, left:left + size]


def random_flip(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Section 4.1: the horizontal reflection, with probability 1/2."""
  return image[:, ::-1] if rng.random() < 0.5 else image


def lighting_shift(eigvals: np.ndarray, eigvecs: np.ndarray, std: float,
                   rng: np.random.Generator, scale: str = 'sqrt') -> np.ndarray:
  """Section 4.1: [p1 p2 p3] [a1 l1, a2 l2, a3 l3]^T with a_i ~ N(0, std), one draw per image.

  `eigvecs` holds the eigenvectors p_i of the 3x3 RGB covariance as columns, `eigvals` the
  matching eigenvalues (variances, 0-255 scale). With scale='eigval', l_i is the eigenvalue
  itself, the paper's text read literally; with 'sqrt' (default), l_i is its square root, the
  standard deviation along p_i, as public AlexNet implementations use. On 0-255 pixels the
  literal reading shifts colours by hundreds of intensity levels (the largest eigenvalue of
  natural images is in the thousands), far beyond the pixel range. Returns the RGB offset that
  is added to every pixel: its covariance is P diag(std^2 l^2) P^T.
  """
  alpha = rng.normal(0.0, std, size=3)
  lam = np.sqrt(np.maximum(eigvals, 0)) if scale == 'sqrt' else eigvals
  return (eigvecs @ (alpha * lam)).astype(np.float32)
