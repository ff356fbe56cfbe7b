"""The Grain pipeline and the dataset statistics, over real JPEG files."""

import io
import logging
import os

import numpy as np
import pytest
from absl import flags
from PIL import Image

from alexnet_jax import augment, input_pipeline, sources, stats, transforms
from alexnet_jax.errors import DataError, UserError
from tests.conftest import BROKEN_DIR_DECODABLE, BROKEN_DIR_UNDECODABLE, make_vanish


def _norm(size):
  return stats.Normalization(mean_image=np.full((size, size, 3), 100.0, np.float32),
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


def _fitted(src, size):
  return [transforms.resize_center_crop(transforms.decode(src[i]['image_bytes'], size), size)
          for i in range(len(src))]


def test_train_batches_are_drawn_uint8_patches_shuffled_and_deterministic(photo_dir):
  src = sources.ImageFolder(photo_dir)
  make = lambda seed: iter(input_pipeline.train_dataset(src, batch_size=4, seed=seed,
                                                        resize=256, crop=227, threads=2))
  a, b, c = make(0), make(0), make(1)
  batch = next(a)
  assert batch['image'].shape == (4, 227, 227, 3) and batch['image'].dtype == np.uint8
  assert batch['label'].dtype == np.int32 and set(batch['label']) <= {0, 1, 2}
  assert batch['top'].dtype == batch['left'].dtype == np.int32
  assert batch['flip'].dtype == np.bool_ and batch['alpha'].shape == (4, 3)
  again = next(b)
  for key in batch:
    np.testing.assert_array_equal(batch[key], again[key])
  assert not np.array_equal(batch['image'], next(c)['image'])
  # Each patch is the drawn patch of one source image after the paper's offline step, with
  # that image's label.
  fitted = _fitted(src, 256)
  batches = [batch] + [next(a) for _ in range(8)]
  seen = []
  for bt in batches:
    for i in range(4):
      matches = [j for j, f in enumerate(fitted) if np.array_equal(
          augment.cut(f, bt['top'][i], bt['left'][i], bt['flip'][i], 227), bt['image'][i])]
      assert len(matches) == 1 and src.labels[matches[0]] == bt['label'][i]
      seen.append(matches[0])
  # An epoch (18 images = 4.5 batches) holds every image once before the next reshuffle.
  assert len(set(seen[:18])) == 18
  assert any(bt['flip'].any() for bt in batches) and not all(bt['flip'].all() for bt in batches)


def test_eval_batches_are_the_fitted_images_in_order(photo_dir):
  src = sources.ImageFolder(photo_dir)
  batches = list(input_pipeline.eval_dataset(src, batch_size=4, resize=256, threads=2))
  assert [len(b['label']) for b in batches] == [4, 4, 4, 4, 2]
  np.testing.assert_array_equal(np.concatenate([b['label'] for b in batches]), src.labels)
  np.testing.assert_array_equal(np.concatenate([b['index'] for b in batches]), np.arange(18))
  images = np.concatenate([b['image'] for b in batches])
  assert images.dtype == np.uint8
  np.testing.assert_array_equal(images, np.stack(_fitted(src, 256)))


def test_stats_match_a_direct_computation(photo_dir):
  src = sources.ImageFolder(photo_dir)
  norm = stats.compute(src, size=64, threads=2).norm
  images = np.stack([transforms.resize_center_crop(transforms.decode(src[i]['image_bytes'], 64), 64)
                     for i in range(len(src))]).astype(np.float64)
  np.testing.assert_allclose(norm.mean_image, images.mean(0), rtol=1e-5, atol=1e-3)
  cov = np.cov(images.reshape(-1, 3).T, bias=True)
  np.testing.assert_allclose(norm.eigvecs @ np.diag(norm.eigvals) @ norm.eigvecs.T, cov,
                             rtol=1e-4, atol=1e-2)
  assert norm.eigvals[0] >= norm.eigvals[1] >= norm.eigvals[2]


def test_stats_sample_and_cache(photo_dir, tmp_path):
  src = sources.ImageFolder(photo_dir)
  computed = stats.compute(src, size=32, max_images=5, threads=1)
  assert computed.norm.mean_image.shape == (32, 32, 3) and computed.read == 5
  path = str(tmp_path / 'stats' / 'photos.npz')
  stats.save(path, computed)
  loaded = stats.load(path)
  np.testing.assert_array_equal(loaded.norm.mean_image, computed.norm.mean_image)
  assert (loaded.images, loaded.read) == (computed.images, 5)


@pytest.mark.parametrize('decoder', transforms.DECODERS)
def test_broken_files_are_skipped_named_and_missing_from_the_indices(broken_dir, decoder,
                                                                     caplog):
  src = sources.ImageFolder(str(broken_dir))
  make_vanish(broken_dir)
  caplog.set_level(logging.WARNING)
  batches = list(input_pipeline.eval_dataset(src, batch_size=3, resize=64, threads=2,
                                             decoder=decoder))
  images = np.concatenate([b['image'] for b in batches]).astype(np.float32)
  labels = np.concatenate([b['label'] for b in batches])
  np.testing.assert_array_equal(labels, [label for _, label in BROKEN_DIR_DECODABLE])
  assert images.shape == (len(BROKEN_DIR_DECODABLE), 64, 64, 3)
  for (name, label), image in zip(BROKEN_DIR_DECODABLE, images):
    red, blue = image[..., 0].mean(), image[..., 2].mean()
    if 'gray' in name:
      assert abs(red - blue) < 1  # grayscale becomes RGB with equal channels
    elif 'damaged' not in name:
      assert (red > blue + 100) == (label == 0), name  # the pixels agree with the label
  # What is missing from the indices is what did not decode: the count evaluation reports.
  arrived = set(np.concatenate([b['index'] for b in batches]).tolist())
  missing = [os.path.relpath(src.name(i), broken_dir) for i in range(len(src)) if i not in arrived]
  assert missing == BROKEN_DIR_UNDECODABLE
  reasons = {'n001/empty.JPEG': 'empty', 'n002/vanished.JPEG': 'unreadable',
             'n001/truncated.JPEG': 'truncated', 'n001/garbage.JPEG': ''}
  for name in BROKEN_DIR_UNDECODABLE:  # each named once in the pass, with the reason
    logged = [r.getMessage() for r in caplog.records
              if os.path.join(str(broken_dir), name) in r.getMessage()]
    assert len(logged) == 1 and 'Policy:' in logged[0] and reasons[name] in logged[0], logged


def test_worker_processes_outside_an_absl_app_are_a_clear_error(photo_dir, monkeypatch):
  monkeypatch.setattr(type(flags.FLAGS), 'is_parsed', lambda self: False)
  src = sources.ImageFolder(photo_dir)
  with pytest.raises(UserError, match=r'mark_as_parsed\(\).*or set data.workers=0'):
    input_pipeline.eval_dataset(src, batch_size=4, resize=32, workers=1)


def test_training_over_broken_files_keeps_batches_full_and_labels_right(broken_dir):
  src = sources.ImageFolder(str(broken_dir))
  make_vanish(broken_dir)
  it = iter(input_pipeline.train_dataset(src, batch_size=4, seed=0, resize=64, crop=56,
                                         threads=2))
  for _ in range(6):  # three epochs of 8 decodable images
    batch = next(it)
    assert batch['image'].shape == (4, 56, 56, 3) and batch['label'].shape == (4,)
    assert all(batch[k].shape[0] == 4 for k in augment.DRAWS)  # the draws left with the file
    image = batch['image'].astype(np.float32)
    colour = image[..., 0].mean((1, 2)) - image[..., 2].mean((1, 2))
    # Blue images are class 1; red, grayscale and damaged ones are class 0.
    assert np.all((colour < -100) == (batch['label'] == 1))


def test_stats_skip_undecodable_files(broken_dir):
  src = sources.ImageFolder(str(broken_dir))
  make_vanish(broken_dir)
  norm = stats.compute(src, size=16, threads=1).norm
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
  return (np.rint(batch['image'][:, 0, 0, 0] / 10)).astype(int).tolist()


def test_processes_read_disjoint_parts_reshuffled_each_epoch(monkeypatch):
  src, per_epoch = _Coloured(), {}
  for process in range(3):
    monkeypatch.setattr(input_pipeline.jax, 'process_index', lambda p=process: p)
    monkeypatch.setattr(input_pipeline.jax, 'process_count', lambda: 3)
    it = iter(input_pipeline.train_dataset(src, batch_size=4, seed=5, resize=8, crop=6,
                                           threads=1))
    got = [next(it) for _ in range(4)]  # two epochs of this process's 8 images
    ids = sum((_ids(b) for b in got), [])
    per_epoch[process] = ids[:8], ids[8:]
    # Record k of process p is position 3k + p of the stream: drawn as if read by one process.
    whole = augment.draw(5, np.arange(48), 8, 6)
    drawn = {key: np.concatenate([b[key] for b in got]) for key in augment.DRAWS}
    for key in augment.DRAWS:
      np.testing.assert_array_equal(drawn[key], whole[key][process::3])
  for epoch in (0, 1):
    parts = [set(per_epoch[p][epoch]) for p in range(3)]
    assert all(len(part) == 8 for part in parts)  # no repeats within an epoch
    assert set.union(*parts) == set(range(24))    # together, every image once
  assert any(per_epoch[p][0] != per_epoch[p][1] for p in range(3))  # reshuffled


def test_start_at_continues_the_stream_on_another_process_count(monkeypatch):
  """Two processes resuming step 3 of a one-process run (global batch 8): together they read
  the positions from 3 x 8 on, drawn as the one process would have drawn them."""
  src = _Coloured()
  whole = augment.draw(5, np.arange(64), 8, 6)
  for process in range(2):
    monkeypatch.setattr(input_pipeline.jax, 'process_index', lambda p=process: p)
    monkeypatch.setattr(input_pipeline.jax, 'process_count', lambda: 2)
    it = iter(input_pipeline.train_dataset(src, batch_size=4, seed=5, resize=8, crop=6,
                                           threads=1))
    assert input_pipeline.start_at(it, 3)
    got = [next(it) for _ in range(2)]
    for key in augment.DRAWS:
      np.testing.assert_array_equal(np.concatenate([b[key] for b in got]),
                                    whole[key][24 + process:40:2])
