"""The paper's preprocessing and augmentation (Section 2 and Section 4.1), one example at a time.

Images are HxWx3 uint8 arrays, RGB, on the 0-255 scale. `decode` turns any stored image into
such an array; `resize_center_crop` is the paper's offline step (shorter side to 256, central
256x256 patch); `subtract_mean` subtracts the training set's mean image; `crop`, `mirror` and
`lighting_shift` are the two forms of data augmentation. Training splits these steps between
the host and the device (alexnet_jax.augment); these NumPy forms are the reference it is tested
against, and what reading a single image for inference uses.

Decoding and resizing use simplejpeg (libjpeg-turbo) and OpenCV when they are installed
(`pip install alexnet_jax[fast]`), else Pillow: the first is the faster (BENCHMARKS.md,
"Decoder choice"), with pixels within one intensity level of Pillow's. Anything simplejpeg does
not handle (PNG, CMYK and YCCK JPEGs, damaged data) is decoded by Pillow, so both decoders
accept the same files.
"""

import io

import numpy as np
from PIL import Image

try:  # The fast path is optional: both are binary wheels that not every platform has.
  import cv2
  import simplejpeg
  cv2.setNumThreads(1)  # one image per call; parallelism comes from the input workers
  FAST_DECODER = True
except ImportError:  # pragma: no cover - depends on the environment
  FAST_DECODER = False

DECODERS = ('auto', 'pillow')
# The decoder that ran, by the name a checkpoint records: 'auto' is Pillow where simplejpeg and
# OpenCV are not installed, so the setting alone does not say which pixels training saw.
_FAST_NAME, _PILLOW_NAME = 'simplejpeg+opencv', 'pillow'


class UndecodableImage(ValueError):
  """The bytes are not an image that decodes completely (empty, truncated, damaged, unknown)."""


def _use_fast(decoder: str) -> bool:
  return decoder == 'auto' and FAST_DECODER


def decoder_name(decoder: str) -> str:
  """The decoder a `data.decoder` setting runs here, named as a checkpoint records it."""
  return _FAST_NAME if _use_fast(decoder) else _PILLOW_NAME


def decoder_setting(name: str | None) -> str | None:
  """The `data.decoder` that decodes as the recorded decoder `name` did; None where a
  checkpoint records none (one written before checkpoints carried it)."""
  return {_FAST_NAME: 'auto', _PILLOW_NAME: 'pillow'}.get(name)


def _decode_pillow(image_bytes: bytes, min_size: int) -> np.ndarray:
  try:
    image = Image.open(io.BytesIO(image_bytes))
    if min_size and image.format == 'JPEG':
      # libjpeg's DCT scaling: decode at the smallest 1/2, 1/4 or 1/8 scale that keeps the
      # shorter side >= min_size. Far less work for large photographs, resized afterwards anyway.
      w, h = image.size
      scale = min_size / min(w, h)
      image.draft('RGB', (int(np.ceil(w * scale)), int(np.ceil(h * scale))))
    return np.asarray(image.convert('RGB'))  # grayscale, CMYK (Adobe-inverted too), palette
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise UndecodableImage(f'{type(e).__name__}: {e}') from e


def decode(image_bytes: bytes, min_size: int = 0, decoder: str = 'auto',
           out: np.ndarray | None = None) -> np.ndarray:
  """Decodes JPEG (or any Pillow format) bytes to an HxWx3 uint8 RGB array.

  Grayscale and CMYK become RGB; a PNG stored under a .JPEG name decodes as the PNG it is. With
  `min_size`, a JPEG is decoded directly at a reduced DCT scale whose shorter side is still at
  least `min_size`. A JPEG that decodes to the shape of `out` is decoded into it (a row of a
  batch: no array of its own, no copy). Raises UndecodableImage for bytes that do not decode
  completely.
  """
  if not image_bytes:
    raise UndecodableImage('empty file')
  if _use_fast(decoder) and image_bytes[:2] == b'\xff\xd8':
    try:
      h, w, colorspace, _ = simplejpeg.decode_jpeg_header(image_bytes)
      if colorspace in ('YCbCr', 'RGB', 'Gray'):
        # The 1/2, 1/4 or 1/8 scale Pillow's draft mode picks, so both decoders give the same
        # pixels (libjpeg-turbo's other M/8 scales would be faster still, but differ).
        f = 1
        while f < 8 and min_size and min(w, h) >= 2 * f * min_size:
          f *= 2
        shape = (-(-h // f), -(-w // f), 3)
        return simplejpeg.decode_jpeg(  # strict: warnings raise
            image_bytes, colorspace='RGB', min_height=shape[0], min_width=shape[1],
            buffer=out if out is not None and out.shape == shape else None)
    except ValueError:
      pass  # damaged or unusual data: Pillow decides whether it is decodable
  return _decode_pillow(image_bytes, min_size)


def resize(image: np.ndarray, width: int, height: int, decoder: str = 'auto',
           out: np.ndarray | None = None) -> np.ndarray:
  """Bilinear resize (area-averaging when shrinking, so that no detail aliases), into `out` if
  given (height x width x 3)."""
  if _use_fast(decoder):
    shrink = width * height < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), dst=out,
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
  resized = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR,
                                                     reducing_gap=None))
  if out is None:
    return resized
  out[...] = resized
  return out


def resize_center_crop(image: np.ndarray, size: int, decoder: str = 'auto',
        out: np.ndarray | None = None) -> np.ndarray:
  """Section 2: rescale so the shorter side is `size`, then take the central size x size patch.

  With `out` (size x size x 3, e.g. a row of a batch) the patch is written there.
  """
  h, w = image.shape[:2]
  scale = size / min(w, h)
  new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
  if (new_w, new_h) != (w, h):
    image = resize(image, new_w, new_h, decoder, out if new_w == new_h == size else None)
  patch = center_crop(image, size)
  if out is None:
    return np.ascontiguousarray(patch)
  if not np.shares_memory(patch, out):  # decoded or resized elsewhere: one copy into place
    out[...] = patch
  return out


def subtract_mean(image: np.ndarray, mean_image: np.ndarray) -> np.ndarray:
  """Section 2: subtract the mean activity over the training set from each pixel."""
  return np.subtract(image, mean_image, dtype=np.float32)  # one pass, a new contiguous array


def crop(image: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
  return image[top:top + size, left:left + size]


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
  return crop(image, (image.shape[0] - size) // 2, (image.shape[1] - size) // 2, size)


def ten_crop(image: np.ndarray, size: int) -> np.ndarray:
  """Section 4.1's test-time views: the four corner patches, the center patch and the horizontal
  reflections of all five, stacked as (10, size, size, C) in that order."""
  h, w = image.shape[:2]
  offsets = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size),
             ((h - size) // 2, (w - size) // 2)]
  views = [crop(image, top, left, size) for top, left in offsets]
  return np.stack(views + [mirror(v) for v in views])


def mirror(image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
  """The horizontal reflection of a uint8 HxWx3 image, into `out` if given: OpenCV's or
  Pillow's, 20 times faster than NumPy's copy of a reversed view."""
  if FAST_DECODER:
    return cv2.flip(image, 1) if out is None else cv2.flip(image, 1, dst=out)
  reflected = np.asarray(Image.fromarray(np.ascontiguousarray(image)).transpose(
      Image.Transpose.FLIP_LEFT_RIGHT))
  if out is None:
    return reflected
  np.copyto(out, reflected)
  return out


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


def add_rgb(image: np.ndarray, offset: np.ndarray) -> np.ndarray:
  """Adds one RGB offset to every pixel of a contiguous float32 image, in place.

  As rows of W*3 values plus a tiled offset: NumPy broadcasts a trailing axis of 3 slowly.
  """
  rows = image.reshape(image.shape[0], -1)
  np.add(rows, np.tile(offset.astype(image.dtype), image.shape[1]), out=rows)
  return image


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
  """JPEG bytes of an RGB uint8 array (the packed format's records).

  4:2:0 chroma, as ImageNet's own JPEGs: it decodes faster than 4:4:4 for a fraction of an
  intensity level more error (BENCHMARKS.md, "Input pipeline").
  """
  if FAST_DECODER:
    return simplejpeg.encode_jpeg(np.ascontiguousarray(image), quality=quality, colorspace='RGB',
                                  colorsubsampling='420')
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format='JPEG', quality=quality, subsampling=2)  # 4:2:0
  return buf.getvalue()
