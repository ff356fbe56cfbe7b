"""The Grain pipeline and the dataset statistics, over real JPEG files."""

import io
import logging
import os

import numpy as np
import pytest
from PIL import Image

from alexnet_jax import input_pipeline, sources, stats, transforms
from alexnet_jax.errors import DataError
from tests.conftest import BROKEN_DIR_DECODABLE, BROKEN_DIR_UNDECODABLE, make_vanish


def _norm(size):
  return input_pipeline.Normalization(mean_image=np.full((size, size, 3), 100.0, np.float32),
                                      eigvals=np.array([400.0, 25.0, 4.0], np.float32),
                                      eigvecs=np.eye(3, dtype=np.float32))


def test_image_folder_labels_follow_sorted_class_folders(photo_dir):
  src = sources.ImageFolder(photo_dir)
  assert src.class_names == ['n001', 'n002', 'n003'] and len(src) == 18
  assert list(src.labels) == [0] * 6 + [1] * 6 + [2] * 6
  assert isinstance(src[0]['image_bytes'], bytes)


def test_image_folder_errors_are_clear(tmp_path):
  with pytest.raises(DataError, match='No image folder'):
    sources.ImageFolder(str(tmp_path / 'missing'))
  (tmp_path / 'empty' / 'n01').mkdir(parents=True)
  with pytest.raises(DataError, match='holds no images'):
    sources.ImageFolder(str(tmp_path / 'empty'))


def test_train_batches_shapes_dtypes_ranges_and_determinism(photo_dir):
  src = sources.ImageFolder(photo_dir)
  make = lambda seed: iter(input_pipeline.train_dataset(
      src, _norm(256), batch_size=4, seed=seed, resize=256, crop=227, threads=2))
  a, b, c = make(0), make(0), make(1)
  batch = next(a)
  assert batch['image'].shape == (4, 227, 227, 3) and batch['image'].dtype == np.float32
  assert batch['label'].dtype == np.int32 and set(batch['label']) <= {0, 1, 2}
  # Centred 0-255 pixels plus a lighting shift of a few standard deviations at most.
  assert -100 - 10 < batch['image'].min() and batch['image'].max() < 155 + 10
  np.testing.assert_array_equal(batch['image'], next(b)['image'])
  assert not np.array_equal(batch['image'], next(c)['image'])
  labels = np.concatenate([batch['label']] + [next(a)['label'] for _ in range(8)])
  # An epoch (18 images = 4.5 batches) holds every image once before the next reshuffle.
  assert sorted(labels[:16].tolist()).count(0) <= 6


def test_train_augmentation_is_a_crop_of_the_centred_image_flipped_and_lit(photo_dir):
  src = sources.ImageFolder(photo_dir)
  example = input_pipeline.decode_fit(src[0], 256)
  mean = _norm(256).mean_image.astype(np.float64)
  mean[:, :128] = 90.0
  centred = example['image'].astype(np.float64) - mean
  flips = 0
  for seed in range(6):
    norm = _norm(256)
    norm.mean_image[:, :128] = 90.0  # not symmetric, so a reflection must move it too
    out = input_pipeline._train_augment(example, np.random.default_rng(seed), norm=norm,
                                        mirrored_mean=np.ascontiguousarray(
                                            norm.mean_image[:, ::-1]),
                                        crop=227, flip=True, lighting_std=0.1,
                                        lighting_scale='sqrt')['image'].astype(np.float64)
    # Some 227x227 window of the centred image, maybe mirrored, plus one RGB offset.
    found = []
    for flipped, view in ((False, out), (True, out[:, ::-1])):
      shift = view[0, 0] - centred[:30, :30].reshape(-1, 3)  # candidate offsets per position
      for pos in range(900):
        top, left = divmod(pos, 30)
        if np.allclose(view - shift[pos], centred[top:top + 227, left:left + 227], atol=0.01):
          found.append((flipped, shift[pos]))
    assert found, f'seed {seed}: output is no crop of the centred image'
    flipped, shift = found[0]
    flips += flipped
    assert np.abs(shift).max() < 4 * 0.1 * 20  # sqrt(400) = 20 along the first axis
  assert 0 < flips < 6


def test_eval_batches_are_centre_crops_in_order(photo_dir):
  src = sources.ImageFolder(photo_dir)
  batches = list(input_pipeline.eval_dataset(src, _norm(256), batch_size=4, resize=256, crop=227,
                                             threads=2))
  assert [len(b['label']) for b in batches] == [4, 4, 4, 4, 2]
  labels = np.concatenate([b['label'] for b in batches])
  np.testing.assert_array_equal(labels, src.labels)
  first = transforms.fit(transforms.decode(src[0]['image_bytes'], 256), 256)
  np.testing.assert_allclose(batches[0]['image'][0],
                             first[14:241, 14:241].astype(np.float32) - 100.0)


def test_stats_match_a_direct_computation(photo_dir):
  src = sources.ImageFolder(photo_dir)
  norm = stats.compute(src, size=64, threads=2)
  images = np.stack([transforms.fit(transforms.decode(src[i]['image_bytes'], 64), 64)
                     for i in range(len(src))]).astype(np.float64)
  np.testing.assert_allclose(norm.mean_image, images.mean(0), rtol=1e-5, atol=1e-3)
  cov = np.cov(images.reshape(-1, 3).T, bias=True)
  np.testing.assert_allclose(norm.eigvecs @ np.diag(norm.eigvals) @ norm.eigvecs.T, cov,
                             rtol=1e-4, atol=1e-2)
  assert norm.eigvals[0] >= norm.eigvals[1] >= norm.eigvals[2]


def test_stats_sample_and_cache(photo_dir, tmp_path):
  src = sources.ImageFolder(photo_dir)
  assert stats.compute(src, size=32, max_images=5, threads=1).mean_image.shape == (32, 32, 3)
  path = stats.cache_path(str(tmp_path), src.key, 32, 5, 0)
  norm = stats.compute(src, size=32, max_images=5, threads=1)
  stats.save(path, norm)
  np.testing.assert_array_equal(stats.load(path).mean_image, norm.mean_image)


@pytest.mark.parametrize('decoder', transforms.DECODERS)
def test_broken_files_are_skipped_counted_and_named_once(broken_dir, decoder, caplog):
  src = sources.ImageFolder(str(broken_dir))
  make_vanish(broken_dir)
  before = set(input_pipeline.skipped())
  caplog.set_level(logging.WARNING)
  for _ in range(2):  # a second pass names nothing again
    batches = list(input_pipeline.eval_dataset(src, _norm(64), batch_size=3, resize=64, crop=64,
                                               threads=2, decoder=decoder))
    images = np.concatenate([b['image'] for b in batches]) + 100.0  # undo the mean
    labels = np.concatenate([b['label'] for b in batches])
    np.testing.assert_array_equal(labels, [label for _, label in BROKEN_DIR_DECODABLE])
    assert images.shape == (len(BROKEN_DIR_DECODABLE), 64, 64, 3)
    for (name, label), image in zip(BROKEN_DIR_DECODABLE, images):
      red, blue = image[..., 0].mean(), image[..., 2].mean()
      if 'gray' in name:
        assert abs(red - blue) < 1  # grayscale becomes RGB with equal channels
      elif 'damaged' not in name:
        assert (red > blue + 100) == (label == 0), name  # the pixels agree with the label
  skipped = {os.path.relpath(k, broken_dir): v
             for k, v in input_pipeline.skipped().items() if k not in before}
  assert sorted(skipped) == BROKEN_DIR_UNDECODABLE
  assert 'empty' in skipped['n001/empty.JPEG'] and 'unreadable' in skipped['n002/vanished.JPEG']
  assert 'truncated' in skipped['n001/truncated.JPEG']
  for name in BROKEN_DIR_UNDECODABLE:
    logged = [r for r in caplog.records if os.path.join(str(broken_dir), name) in r.getMessage()]
    assert len(logged) == 1 and 'Policy:' in logged[0].getMessage()


def test_training_over_broken_files_keeps_batches_full_and_labels_right(broken_dir):
  src = sources.ImageFolder(str(broken_dir))
  make_vanish(broken_dir)
  it = iter(input_pipeline.train_dataset(src, _norm(64), batch_size=4, seed=0, resize=64,
                                         crop=56, lighting_std=0, threads=2))
  for _ in range(6):  # three epochs of 8 decodable images
    batch = next(it)
    assert batch['image'].shape == (4, 56, 56, 3) and batch['label'].shape == (4,)
    image = batch['image'] + 100.0
    colour = image[..., 0].mean((1, 2)) - image[..., 2].mean((1, 2))
    # Blue images are class 1; red, grayscale and damaged ones are class 0.
    assert np.all((colour < -100) == (batch['label'] == 1))


def test_stats_skip_undecodable_files(broken_dir):
  src = sources.ImageFolder(str(broken_dir))
  make_vanish(broken_dir)
  norm = stats.compute(src, size=16, threads=1)
  assert np.isfinite(norm.mean_image).all() and norm.eigvals[0] > 0


class _Coloured:
  """24 tiny PNGs; image i has red value 10 * i, so a batch shows which records it holds."""

  def __init__(self, n=24):
    self._records = []
    for i in range(n):
      buf = io.BytesIO()
      Image.fromarray(np.full((8, 8, 3), (10 * i, 0, 0), np.uint8)).save(buf, format='PNG')
      self._records.append({'image_bytes': buf.getvalue(), 'label': np.int32(i % 3),
                            'name': f'{i}.png'})

  def __len__(self):
    return len(self._records)

  def __getitem__(self, i):
    return self._records[i]


def _ids(batch):
  return (np.rint((batch['image'][:, 0, 0, 0] + 100.0) / 10)).astype(int).tolist()


def test_processes_read_disjoint_parts_reshuffled_each_epoch(monkeypatch):
  src, per_epoch = _Coloured(), {}
  for process in range(3):
    monkeypatch.setattr(input_pipeline.jax, 'process_index', lambda p=process: p)
    monkeypatch.setattr(input_pipeline.jax, 'process_count', lambda: 3)
    it = iter(input_pipeline.train_dataset(src, _norm(8), batch_size=4, seed=5, resize=8, crop=8,
                                           flip=False, lighting_std=0, threads=1))
    ids = sum((_ids(next(it)) for _ in range(4)), [])  # two epochs of this process's 8 images
    per_epoch[process] = ids[:8], ids[8:]
  for epoch in (0, 1):
    parts = [set(per_epoch[p][epoch]) for p in range(3)]
    assert all(len(part) == 8 for part in parts)  # no repeats within an epoch
    assert set.union(*parts) == set(range(24))    # together, every image once
  assert any(per_epoch[p][0] != per_epoch[p][1] for p in range(3))  # reshuffled
