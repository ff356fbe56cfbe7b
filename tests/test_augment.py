"""The augmentation against the NumPy transforms, and the paper's distributions of what it draws.

The host's part (the draws in Grain, the uint8 patch) and the device's (mean, lighting, cast)
together give transforms.py's pixels for the same draws. The statistical checks use fixed seeds
and bounds of six standard errors or more, so they hold for any seed but with a chance far below
one in a million; a wrong distribution (an offset never drawn, a biased flip, a lighting offset
on the wrong axes or scale) misses them by far more. That a draw depends on the seed and the
position in the stream alone, not on batches or processes, is checked here and, through the
pipeline, in tests/test_input_pipeline.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax import augment, stats, transforms

S, CROP = 20, 16  # 5 x 5 crop positions

_train_inputs = jax.jit(augment.train_inputs, static_argnames=('lighting_scale', 'dtype'))


def _norm(size=S, seed=0):
  rng = np.random.default_rng(seed)
  eigvecs = np.linalg.qr(rng.normal(size=(3, 3)))[0].astype(np.float32)
  return stats.Normalization(
      mean_image=rng.uniform(60, 190, (size, size, 3)).astype(np.float32),
      eigvals=np.array([1600.0, 90.0, 9.0], np.float32), eigvecs=eigvecs)


def _images(n, size=S, seed=1):
  return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), np.uint8)


class _Alpha:
  """Stands in for a NumPy Generator whose normal draw is the given alpha."""

  def __init__(self, alpha):
    self.alpha = np.asarray(alpha, np.float64)

  def normal(self, loc, scale, size):
    return self.alpha


def _numpy_patch(image, norm, top, left, flip, alpha, scale):
  """transforms.py, literally: crop the centered image, reflect it, add the lighting offset."""
  patch = transforms.crop(transforms.subtract_mean(image, norm.mean_image), top, left, CROP)
  if flip:
    patch = transforms.mirror(np.ascontiguousarray(patch))
  shift = transforms.lighting_shift(norm.eigvals, norm.eigvecs, 0.1, _Alpha(alpha), scale)
  return transforms.add_rgb(np.ascontiguousarray(patch), shift)


def _batch(images, seed=3, **options):
  return augment.drawn_batch(images, np.arange(len(images)), CROP, seed, **options)


@pytest.mark.parametrize('scale', ['sqrt', 'eigval'])
def test_training_inputs_match_the_numpy_transforms(scale):
  """The host's patch and the device's float part give transforms.py's pixels for the draws."""
  norm, images = _norm(), _images(8)
  batch = _batch(images)
  assert batch['image'].shape == (8, CROP, CROP, 3) and batch['image'].dtype == np.uint8
  out = np.asarray(_train_inputs(batch, norm, lighting_scale=scale))
  assert out.shape == (8, CROP, CROP, 3) and out.dtype == np.float32
  assert 0 < batch['flip'].sum() < 8  # both branches are compared
  for i in range(8):
    expected = _numpy_patch(images[i], norm, batch['top'][i], batch['left'][i],
                            batch['flip'][i], batch['alpha'][i], scale)
    np.testing.assert_allclose(out[i], expected, rtol=1e-5, atol=1e-3)


def test_patches_at_the_corners_with_and_without_reflection():
  norm, images = _norm(), _images(4)
  top, left = np.array([0, 0, S - CROP, S - CROP]), np.array([0, S - CROP, 0, S - CROP])
  flip = np.array([False, True, True, False])
  batch = {'image': np.stack([augment.cut(images[i], top[i], left[i], flip[i], CROP)
                              for i in range(4)]),
           'top': top.astype(np.int32), 'left': left.astype(np.int32), 'flip': flip,
           'alpha': np.zeros((4, 3), np.float32)}
  out = np.asarray(_train_inputs(batch, norm))
  for i in range(4):
    expected = _numpy_patch(images[i], norm, top[i], left[i], flip[i], np.zeros(3), 'sqrt')
    np.testing.assert_allclose(out[i], expected, rtol=0, atol=1e-4)


def test_compute_dtype_and_switches():
  norm, images = _norm(), _images(4)
  batch = _batch(images, seed=0)
  bf16 = _train_inputs(batch, norm, dtype='bfloat16')
  f32 = _train_inputs(batch, norm)
  assert bf16.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(bf16, np.float32), f32, rtol=1e-2, atol=0.5)
  # No reflection, no lighting: plain centered patches at the same corners as with them.
  plain = _batch(images, seed=0, flip=False, lighting_std=0.0)
  assert not plain['flip'].any() and not plain['alpha'].any()
  np.testing.assert_array_equal(plain['top'], batch['top'])
  np.testing.assert_array_equal(plain['left'], batch['left'])
  out = np.asarray(_train_inputs(plain, norm))
  for i in range(4):
    expected = _numpy_patch(images[i], norm, plain['top'][i], plain['left'][i], False,
                            np.zeros(3), 'sqrt')
    np.testing.assert_allclose(out[i], expected, rtol=0, atol=1e-4)


def test_test_views_match_the_numpy_ten_crop():
  norm, images = _norm(), _images(3)
  ten = np.asarray(augment.eval_inputs(images, norm, crop=CROP, views='ten'))
  center = np.asarray(augment.eval_inputs(images, norm, crop=CROP))
  assert ten.shape == (3, 10, CROP, CROP, 3) and center.shape == (3, CROP, CROP, 3)
  for i in range(3):
    centered = transforms.subtract_mean(images[i], norm.mean_image)
    np.testing.assert_allclose(ten[i], transforms.ten_crop(centered, CROP), rtol=0, atol=1e-4)
    np.testing.assert_allclose(center[i], transforms.center_crop(centered, CROP), rtol=0,
                               atol=1e-4)
  np.testing.assert_array_equal(ten[:, 4], center)  # the fifth view is the center
  assert augment.eval_inputs(images, norm, crop=CROP, dtype='bfloat16').dtype == jnp.bfloat16
  with pytest.raises(ValueError, match='views'):
    augment.eval_inputs(images, norm, crop=CROP, views='five')


def test_a_draw_depends_only_on_the_seed_and_the_position():
  """A record's draws are a function of the seed and its position in the stream: the same for
  a stream read whole or split among processes, in batches of any size."""
  positions = np.arange(40)
  whole = augment.draw(7, positions, S, CROP)
  for process in range(3):
    part = augment.draw(7, positions[process::3], S, CROP)
    for key in augment.DRAWS:
      np.testing.assert_array_equal(part[key], whole[key][process::3])
  one = augment.draw(7, np.array([17]), S, CROP)
  for key in augment.DRAWS:
    np.testing.assert_array_equal(one[key][0], whole[key][17])
  assert not np.array_equal(augment.draw(8, positions, S, CROP)['alpha'], whole['alpha'])
  # Records at other positions (the same image in another epoch) are drawn anew.
  assert len({tuple(a) for a in whole['alpha']}) == len(positions)
  # Turning one option off leaves the other draws as they were.
  plain = augment.draw(7, positions, S, CROP, flip=False, lighting_std=0.0)
  np.testing.assert_array_equal(plain['top'], whole['top'])
  assert not plain['flip'].any() and not plain['alpha'].any()


N = 200_000  # draws for the distribution checks


@pytest.fixture(scope='module')
def draws():
  """N draws of a 20 x 20 image's 16 x 16 patches, at stream positions 0 .. N - 1 (seed 11)."""
  return augment.draw(11, np.arange(N), S, CROP)


def _chi2_bound(cells: int) -> float:
  """A chi-square statistic this large has probability below 1e-7 under uniformity (Wilson-
  Hilferty's normal approximation at 5.2 standard deviations, conservative here)."""
  k = cells - 1
  return k * (1 - 2 / (9 * k) + 5.2 * np.sqrt(2 / (9 * k))) ** 3


def test_crop_corners_are_uniform_over_all_positions(draws):
  rows = cols = S - CROP + 1  # 5 x 5 positions of a 20 x 20 image
  counts = np.zeros((rows, cols))
  np.add.at(counts, (draws['top'], draws['left']), 1)
  assert draws['top'].min() == 0 and draws['top'].max() == rows - 1
  assert draws['left'].min() == 0 and draws['left'].max() == cols - 1
  expected = N / counts.size
  assert ((counts - expected) ** 2 / expected).sum() < _chi2_bound(counts.size)


def test_reflection_has_probability_one_half(draws):
  assert abs(draws['flip'].mean() - 0.5) < 6 * np.sqrt(0.25 / N)
  # Independent of the corner: half of the images at every position are reflected.
  for top in range(S - CROP + 1):
    at = draws['flip'][draws['top'] == top]
    assert abs(at.mean() - 0.5) < 6 * np.sqrt(0.25 / len(at))


def test_lighting_alphas_are_normal_with_the_papers_deviation(draws):
  alpha = draws['alpha'].astype(np.float64)
  se = 0.1 / np.sqrt(N)
  assert np.all(np.abs(alpha.mean(0)) < 6 * se)
  assert np.all(np.abs(alpha.std(0) - 0.1) < 6 * 0.1 / np.sqrt(2 * N))
  # Normal, not merely of the right variance: within one and two deviations.
  for k, p in ((1, 0.682689), (2, 0.954500)):
    inside = (np.abs(alpha) < k * 0.1).mean(0)
    assert np.all(np.abs(inside - p) < 6 * np.sqrt(p * (1 - p) / N))
  # One independent draw per coefficient.
  corr = np.corrcoef(alpha.T)
  assert np.all(np.abs(corr - np.eye(3)) < 6 / np.sqrt(N))


@pytest.mark.parametrize('scale', ['sqrt', 'eigval'])
def test_lighting_offset_covariance_is_p_diag_sigma2_l2_pt(draws, scale):
  norm = _norm()
  shift = np.asarray(augment.lighting_shift(draws['alpha'], norm, scale), np.float64)
  lam = np.sqrt(norm.eigvals) if scale == 'sqrt' else norm.eigvals
  expected = norm.eigvecs @ np.diag(0.1**2 * lam.astype(np.float64)**2) @ norm.eigvecs.T
  cov = np.cov(shift.T)
  # Each entry's standard error is at most sqrt(2 / N) times the largest variance.
  np.testing.assert_allclose(cov, expected, rtol=0, atol=6 * np.sqrt(2 / N) * expected.max())
  np.testing.assert_allclose(shift.mean(0), 0, atol=6 * np.sqrt(expected.max() / N))
