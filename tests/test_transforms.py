"""The paper's per-example transforms (docs/paper.md, Data and Augmentation), checked against
direct computation."""

import io

import numpy as np
import pytest
from PIL import Image

from alexnet_jax import transforms


def _jpeg(image: Image.Image, fmt='JPEG') -> bytes:
  buf = io.BytesIO()
  image.save(buf, format=fmt, quality=95)
  return buf.getvalue()


@pytest.mark.parametrize('mode', ['RGB', 'L', 'CMYK'])
def test_decode_gives_rgb_for_every_jpeg_mode(mode):
  rgb = Image.fromarray(np.full((40, 60, 3), (200, 30, 90), np.uint8))
  image = transforms.decode(_jpeg(rgb.convert(mode)))
  assert image.dtype == np.uint8 and image.shape == (40, 60, 3)
  pixels = image.astype(np.float32)
  if mode == 'L':
    assert np.all(pixels[..., 0] == pixels[..., 1])
  else:
    np.testing.assert_allclose(pixels.mean((0, 1)), (200, 30, 90), atol=6)


def test_decode_png_under_any_name():
  png = _jpeg(Image.fromarray(np.zeros((8, 8, 3), np.uint8)), fmt='PNG')
  assert transforms.decode(png, min_size=256).shape == (8, 8, 3)


def test_draft_decoding_keeps_the_shorter_side_at_least_the_target():
  big = Image.fromarray(np.random.default_rng(0).integers(0, 255, (1200, 900, 3), np.uint8))
  for decoder in transforms.DECODERS:
    image = transforms.decode(_jpeg(big), min_size=256, decoder=decoder)
    assert min(image.shape[:2]) >= 256 and image.shape[1] < 900  # decoded at a reduced scale


@pytest.mark.parametrize('w,h', [(500, 300), (300, 500), (256, 256), (100, 180)])
def test_fit_rescales_shorter_side_and_takes_the_central_square(w, h):
  x = np.zeros((h, w, 3), np.uint8)
  x[:, w // 2 - 2: w // 2 + 2] = 255  # a vertical bar through the center
  out = transforms.resize_center_crop(x, 256)
  assert out.shape == (256, 256, 3) and out.dtype == np.uint8
  column = out[128].astype(float).sum(-1)
  center_of_bar = (column * np.arange(256)).sum() / column.sum()
  assert abs(center_of_bar - 127.5) <= 1.5  # the central patch keeps the center


def test_center_and_crops():
  image = np.arange(256 * 256 * 3, dtype=np.float32).reshape(256, 256, 3) % 251
  mean = np.full((256, 256, 3), 7.0, np.float32)
  centered = transforms.subtract_mean(image.astype(np.uint8), mean)
  np.testing.assert_array_equal(centered, image.astype(np.uint8).astype(np.float32) - 7.0)
  np.testing.assert_array_equal(transforms.center_crop(image, 227), image[14:241, 14:241])


@pytest.mark.parametrize('scale,power', [('sqrt', 0.5), ('eigval', 1.0)])
def test_pca_lighting_has_the_stated_covariance(scale, power):
  q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
  eigvals = np.array([900.0, 64.0, 9.0])
  rng = np.random.default_rng(2)
  shifts = np.stack([transforms.lighting_shift(eigvals, q, 0.1, rng, scale)
                     for _ in range(40000)])
  expected = q @ np.diag((0.1 * eigvals ** power) ** 2) @ q.T
  np.testing.assert_allclose(np.cov(shifts.T), expected, rtol=0.05, atol=0.02 * expected.max())
  np.testing.assert_allclose(shifts.mean(0), 0, atol=0.05 * np.sqrt(expected.max()))


@pytest.mark.skipif(not transforms.FAST_DECODER, reason='simplejpeg and OpenCV not installed')
@pytest.mark.parametrize('w,h', [(224, 224), (500, 375), (1200, 900)])
def test_fast_decoder_gives_pillows_pixels(w, h):
  rng = np.random.default_rng(0)
  smooth = np.asarray(Image.fromarray(rng.integers(0, 255, (h // 8, w // 8, 3), np.uint8))
                      .resize((w, h), Image.BICUBIC))  # photo-like: no pixel-level noise
  data = _jpeg(Image.fromarray(smooth))
  fast = transforms.resize_center_crop(transforms.decode(data, 256, 'auto'), 256, 'auto')
  slow = transforms.resize_center_crop(transforms.decode(data, 256, 'pillow'), 256, 'pillow')
  assert fast.shape == slow.shape == (256, 256, 3)
  # Decoding is identical; OpenCV's area shrink and Pillow's bilinear filter differ a little on
  # this much fine detail (0.2-0.8 levels on real photographs, BENCHMARKS.md).
  np.testing.assert_array_equal(transforms.decode(data, 256, 'auto'),
                                transforms.decode(data, 256, 'pillow'))
  assert np.abs(fast.astype(float) - slow).mean() < 3
  np.testing.assert_allclose(fast.mean((0, 1)), slow.mean((0, 1)), atol=0.5)


@pytest.mark.parametrize('fast', [True, False])
def test_the_recorded_decoder_name_reads_back_as_the_setting_that_decodes_alike(fast,
                                                                                monkeypatch):
  monkeypatch.setattr(transforms, 'FAST_DECODER', fast)
  assert transforms.decoder_name('auto') == ('simplejpeg+opencv' if fast else 'pillow')
  assert transforms.decoder_name('pillow') == 'pillow'
  for setting in transforms.DECODERS:
    recorded = transforms.decoder_setting(transforms.decoder_name(setting))
    assert transforms.decoder_name(recorded) == transforms.decoder_name(setting)
  assert transforms.decoder_setting(None) is None  # a checkpoint that records no decoder


def _encoded(h, w, fmt='JPEG', mode='RGB', seed=0):
  pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8)
  buf = io.BytesIO()
  Image.fromarray(pixels).convert(mode).save(buf, format=fmt, quality=90)
  return buf.getvalue()


@pytest.mark.parametrize('decoder', transforms.DECODERS)
@pytest.mark.parametrize('h, w, fmt, mode', [
    (32, 32, 'JPEG', 'RGB'),    # already the size: decoded straight into the row
    (24, 24, 'JPEG', 'RGB'),    # square, enlarged: resized into the row
    (40, 56, 'JPEG', 'RGB'),    # shrunk, then the central patch copied in
    (70, 33, 'JPEG', 'L'),      # grayscale, portrait
    (32, 32, 'PNG', 'RGB'),     # not a JPEG: Pillow
    (150, 140, 'JPEG', 'CMYK')  # Pillow, at a reduced DCT scale
])
def test_fit_into_a_row_equals_fit(decoder, h, w, fmt, mode):
  data = _encoded(h, w, fmt, mode)
  expected = transforms.resize_center_crop(transforms.decode(data, 32, decoder), 32, decoder)
  batch = np.full((3, 32, 32, 3), 7, np.uint8)
  row = transforms.resize_center_crop(transforms.decode(data, 32, decoder, out=batch[1]), 32,
                                     decoder, out=batch[1])
  assert np.shares_memory(row, batch)
  np.testing.assert_array_equal(batch[1], expected)
  assert (batch[0] == 7).all() and (batch[2] == 7).all()  # the other rows are untouched
