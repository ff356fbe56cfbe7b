"""The packed format: `prepare` writes shards, label map and statistics; training reads them."""

import json
import os
import pickle
import subprocess
import sys

import grain
import numpy as np
import pytest
from array_record.python import array_record_module

from alexnet_jax import input_pipeline, prepare, sources, stats, transforms
from alexnet_jax.errors import DataError
from configs import default
from tests.conftest import BROKEN_DIR_DECODABLE, BROKEN_DIR_UNDECODABLE, make_vanish

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _data_config(train_dir, val_dir, out):
  d = default.get_config().data
  d.train_dir, d.val_dir, d.packed_dir = str(train_dir), str(val_dir), str(out)
  d.resize_size, d.packed_shard_images, d.threads = 64, 5, 2
  return d


def test_prepare_packs_every_decodable_image_with_its_label(photo_dir, tmp_path):
  d = _data_config(photo_dir, photo_dir, tmp_path / 'packed')
  info = prepare.prepare(d, d.packed_dir)
  assert info['splits']['train']['images'] == 18 and not info['splits']['train']['skipped']
  assert len(sources.packed_shards(d.packed_dir, 'train')) == 4  # 5 images per shard
  for shard in sources.packed_shards(d.packed_dir, 'train'):  # random access, read uncompressed
    reader = array_record_module.ArrayRecordReader(shard)
    assert {'group_size:1', 'uncompressed'} <= set(reader.writer_options_string().split(','))
    reader.close()
  original = sources.ImageFolder(photo_dir)
  d.source = 'packed'
  packed = sources.train_source(d)
  assert packed.class_names == original.class_names and len(packed) == 18
  assert pickle.loads(pickle.dumps(packed))[4] == packed[4]  # as Grain's workers receive it
  for i in range(len(packed)):
    record = packed[i]
    assert record['label'] == original.labels[i] and record['name'] == original[i]['name']
    expected = transforms.resize_center_crop(transforms.decode(original[i]['image_bytes'], 64), 64)
    image = transforms.decode(record['image_bytes'])
    assert image.shape == (64, 64, 3)
    # Pixel noise is JPEG's worst case (4:2:0 chroma); colours must still agree closely.
    assert np.abs(image.astype(float) - expected).mean() < 8
    np.testing.assert_allclose(image.mean((0, 1)), expected.mean((0, 1)), atol=1.0)
  # The statistics beside the shards are those of the packed training images.
  norm = stats.load_or_compute(packed, d).norm
  direct = stats.compute(original, 64, threads=1).norm
  np.testing.assert_allclose(norm.mean_image, direct.mean_image, atol=1e-3)
  np.testing.assert_allclose(norm.eigvals, direct.eigvals, rtol=1e-4)
  assert len(sources.eval_source(d, packed.class_names)) == 18
  d.source = 'imagefolder'
  prepare.prepare(d, d.packed_dir, splits=('val',))  # a split packed later joins the others
  info = json.load(open(os.path.join(d.packed_dir, 'info.json')))
  assert info['classes'] == 3 and sorted(info['splits']) == ['train', 'val']


def test_prepare_skips_broken_files_and_names_them(broken_dir, tmp_path):
  d = _data_config(broken_dir, broken_dir, tmp_path / 'packed')
  src = sources.ImageFolder(str(broken_dir))
  make_vanish(broken_dir)
  written, skipped, norm = prepare.pack_split(src, d.packed_dir, 'train', size=32,
                                              shard_images=3, threads=2, with_stats=True)
  assert written == len(BROKEN_DIR_DECODABLE) and norm.mean_image.shape == (32, 32, 3)
  assert sorted(os.path.relpath(k, broken_dir) for k in skipped) == BROKEN_DIR_UNDECODABLE
  records = grain.sources.ArrayRecordDataSource(sources.packed_shards(d.packed_dir, 'train'))
  labels = [int(sources.unpack_record(records[i])['label']) for i in range(len(records))]
  assert labels == [label for _, label in BROKEN_DIR_DECODABLE]


def test_training_pipeline_reads_packed_shards(photo_dir, tmp_path):
  d = _data_config(photo_dir, photo_dir, tmp_path / 'packed')
  prepare.prepare(d, d.packed_dir, splits=('train',))
  packed = sources.Packed(d.packed_dir, 'train')
  packed_stats = stats.load(os.path.join(d.packed_dir, stats.PACKED_STATS))
  assert packed_stats.norm.mean_image.shape == (64, 64, 3)
  it = iter(input_pipeline.train_dataset(packed, batch_size=6, seed=0, resize=64, crop=56,
                                         threads=2))
  labels = np.concatenate([next(it)['label'] for _ in range(3)])
  assert sorted(labels.tolist()) == sorted(packed[i]['label'] for i in range(18))


def test_prepare_max_images_packs_the_first_of_each_class(photo_dir, tmp_path):
  out = tmp_path / 'packed'
  proc = subprocess.run([sys.executable, '-m', 'alexnet_jax.prepare', '--config=configs/default.py',
                         f'--config.data.train_dir={photo_dir}',
                         f'--config.data.val_dir={photo_dir}',
                         '--config.data.resize_size=32', '--config.data.threads=2',
                         '--max_images=2', f'--out={out}'],
                        cwd=REPO, capture_output=True, text=True, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'train: 6 images packed' in proc.stdout and 'val: 6 images packed' in proc.stdout
  original = sources.ImageFolder(photo_dir)
  first_two = [i for i in range(len(original))
               if list(original.labels[:i]).count(original.labels[i]) < 2]
  for split in ('train', 'val'):
    packed = sources.Packed(str(out), split)
    assert [packed[i]['name'] for i in range(len(packed))] == [original[i]['name']
                                                               for i in first_two]
  assert json.load(open(out / 'info.json'))['max_images_per_class'] == 2


def test_first_per_class_reads_labels_from_records_when_a_source_lists_none(photo_dir):
  class Unlisted:  # as TFDS: labels only inside the records
    def __init__(self, src):
      self.src, self.class_names, self.key = src, src.class_names, 'unlisted'

    def __len__(self):
      return len(self.src)

    def __getitem__(self, i):
      return self.src[i]
  original = sources.ImageFolder(photo_dir)
  subset = sources.FirstPerClass(Unlisted(original), 1)
  assert [int(subset[i]['label']) for i in range(len(subset))] == [0, 1, 2]
  assert subset[1]['name'] == original[6]['name']


def test_prepare_answers_missing_images_in_one_line_and_writes_nothing(tmp_path):
  out = tmp_path / 'packed'
  proc = subprocess.run([sys.executable, '-m', 'alexnet_jax.prepare', '--config=configs/default.py',
                         f'--config.data.train_dir={tmp_path / "nowhere" / "train"}',
                         f'--config.data.val_dir={tmp_path / "nowhere" / "val"}', f'--out={out}'],
                        cwd=REPO, capture_output=True, text=True, check=False)
  assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1].startswith('error: No training images at')
  assert not out.exists()


def test_prepare_answers_an_unwritable_folder_and_leaves_none_behind(photo_dir, tmp_path):
  (tmp_path / 'a_file').write_text('')
  d = _data_config(photo_dir, photo_dir, tmp_path / 'a_file' / 'packed')  # root may write anywhere
  with pytest.raises(DataError, match='Cannot write the packed dataset to .*a_file/packed'):
    prepare.prepare(d, d.packed_dir)
  if os.geteuid() != 0:  # permissions stop only other users
    (tmp_path / 'locked').mkdir(mode=0o500)
    with pytest.raises(DataError, match='Permission denied'):
      prepare.prepare(d, str(tmp_path / 'locked' / 'packed'))
    assert not os.listdir(tmp_path / 'locked')
