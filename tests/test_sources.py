"""Every layout of a dataset, built from real JPEG files, read back with the right labels."""

import importlib
import io
import os
import pickle
import shutil
import sys

import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds
from PIL import Image

from alexnet_jax import sources, stats, transforms
from alexnet_jax.errors import DataError
from configs import default

CLASSES = ['n001', 'n002', 'n003']


def _by_bytes(photo_dir):
  """Each image's bytes -> its true label (the class folder it was written into)."""
  out = {}
  for label, name in enumerate(CLASSES):
    for f in os.listdir(os.path.join(photo_dir, name)):
      with open(os.path.join(photo_dir, name, f), 'rb') as fh:
        out[fh.read()] = label
  return out


def _assert_labels_right(src, truth):
  assert len(src) == len(truth)
  seen = set()
  for i in range(len(src)):
    record = src[i]
    assert truth[record['image_bytes']] == record['label'], record['name']
    seen.add(record['image_bytes'])
  assert len(seen) == len(truth)  # every image exactly once


@pytest.fixture(scope='module')
def flat_val(photo_dir, tmp_path_factory):
  """The photos as ILSVRC-2012 validation is distributed: one flat folder, shuffled names,
  with the devkit's ground truth + meta.mat and the CSV form of the labels."""
  root = tmp_path_factory.mktemp('val_flat')
  files = [(label, os.path.join(photo_dir, c, f)) for label, c in enumerate(CLASSES)
           for f in sorted(os.listdir(os.path.join(photo_dir, c)))]
  order = np.random.default_rng(0).permutation(len(files))
  os.makedirs(root / 'val')
  ilsvrc_id = {'n002': 1, 'n003': 2, 'n001': 3}  # devkit ids are not in sorted synset order
  gt, rows = [], ['ImageId,PredictionString']
  for k, i in enumerate(order):
    label, path = files[i]
    name = f'ILSVRC2012_val_{k + 1:08d}'
    shutil.copy(path, root / 'val' / f'{name}.JPEG')
    gt.append(str(ilsvrc_id[CLASSES[label]]))
    rows.append(f'{name},{CLASSES[label]} 1 2 30 40 {CLASSES[label]} 5 6 70 80')
  os.makedirs(root / 'devkit' / 'data')
  (root / 'devkit' / 'data' / 'ILSVRC2012_validation_ground_truth.txt').write_text(
      '\n'.join(gt) + '\n')
  synsets = np.array([(v, k, 'words', 0) for k, v in ilsvrc_id.items()] +
                     [(1001, 'n999', 'an inner node', 3)],
                     dtype=[('ILSVRC2012_ID', 'O'), ('WNID', 'O'), ('words', 'O'),
                            ('num_children', 'O')])
  scipy.io.savemat(root / 'devkit' / 'data' / 'meta.mat', {'synsets': synsets})
  (root / 'LOC_val_solution.csv').write_text('\n'.join(rows) + '\n')
  return root


class PhotoSet(tfds.core.GeneratorBasedBuilder):
  """The photos as a real TFDS dataset, written offline in ArrayRecord format."""
  VERSION = tfds.core.Version('1.0.0')
  photo_dir = None
  # TFDS resolves the code path of a builder defined inside a package with importlib_resources,
  # which it does not install on Python >= 3.9; a top-level module name skips that lookup.
  __module__ = 'photos_builder'

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(encoding_format='jpeg'),
        'label': tfds.features.ClassLabel(names=CLASSES),
        'file_name': tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples(range(5)),
            'validation': self._generate_examples(range(5, 6))}

  def _generate_examples(self, which):
    for label, c in enumerate(CLASSES):
      for f in sorted(os.listdir(os.path.join(self.photo_dir, c))):
        if int(f[3]) in which:
          path = os.path.join(self.photo_dir, c, f)
          with open(path, 'rb') as fh:
            yield f'{c}/{f}', {'image': fh.read(), 'label': label, 'file_name': f'{c}/{f}'}


sys.modules.setdefault(PhotoSet.__module__, sys.modules[__name__])  # so the builder pickles


@pytest.fixture(scope='module')
def tfds_dir(photo_dir, tmp_path_factory):
  root = str(tmp_path_factory.mktemp('tfds'))
  PhotoSet.photo_dir = photo_dir
  PhotoSet(data_dir=root, file_format='array_record').download_and_prepare()
  return root


def test_image_folder(photo_dir):
  src = sources.ImageFolder(photo_dir)
  assert src.class_names == CLASSES
  _assert_labels_right(src, _by_bytes(photo_dir))


@pytest.mark.parametrize('labels', ['devkit/data/ILSVRC2012_validation_ground_truth.txt',
                                    'LOC_val_solution.csv'])
def test_flat_validation_folder_with_devkit_or_csv_labels(photo_dir, flat_val, labels):
  src = sources.ImageNetVal(str(flat_val / 'val'), str(flat_val / labels), CLASSES)
  _assert_labels_right(src, _by_bytes(photo_dir))


def test_flat_validation_errors_are_clear(flat_val, tmp_path):
  with pytest.raises(DataError, match='No validation label file'):
    sources.ImageNetVal(str(flat_val / 'val'), str(tmp_path / 'none.csv'), CLASSES)
  gt = tmp_path / 'ILSVRC2012_validation_ground_truth.txt'
  gt.write_text('1\n2\n')
  with pytest.raises(DataError, match='meta.mat'):
    sources.ImageNetVal(str(flat_val / 'val'), str(gt), CLASSES)
  shutil.copy(flat_val / 'devkit' / 'data' / 'meta.mat', tmp_path / 'meta.mat')
  with pytest.raises(DataError, match='labels 2 images but'):
    sources.ImageNetVal(str(flat_val / 'val'), str(gt), CLASSES)
  with pytest.raises(DataError, match='synsets the training set does not have'):
    sources.ImageNetVal(str(flat_val / 'val'), str(flat_val / 'LOC_val_solution.csv'),
                        ['n001', 'n002'])


def test_tfds_array_record_dataset(photo_dir, tfds_dir):
  truth = _by_bytes(photo_dir)
  train = sources.TFDS('photo_set', 'train', tfds_dir)
  val = sources.TFDS('photo_set', 'validation', tfds_dir)
  assert train.class_names == CLASSES and (len(train), len(val)) == (15, 3)
  for src in (train, val):
    for i in range(len(src)):
      record = src[i]
      assert truth[record['image_bytes']] == record['label'], record['name']
      assert record['name'].startswith(CLASSES[record['label']])


def test_tfds_source_goes_to_workers_and_gives_statistics(tfds_dir):
  train = sources.TFDS('photo_set', 'train', tfds_dir)
  copy = pickle.loads(pickle.dumps(train))  # how Grain hands a source to worker processes
  assert copy[3] == train[3]
  norm = stats.compute(train, size=16, threads=1).norm
  images = np.stack([transforms.resize_center_crop(transforms.decode(train[i]['image_bytes'], 16),
                                                   16)
                     for i in range(len(train))]).astype(np.float64)
  np.testing.assert_allclose(norm.mean_image, images.mean(0), atol=1e-3)


def test_tfds_missing_dataset_is_explained(tmp_path):
  with pytest.raises(DataError, match='--file_format=array_record'):
    sources.TFDS('photo_set', 'train', str(tmp_path))
  # A dataset TFDS knows how to download is reported, not downloaded or generated.
  with pytest.raises(DataError, match=f"'imagenette' is not prepared in '{tmp_path}'.*"
                     f'tfds build imagenette --file_format=array_record --data_dir={tmp_path}'):
    sources.TFDS('imagenette', 'train', str(tmp_path))
  assert not os.listdir(tmp_path)


@pytest.mark.parametrize('name', ['paper', 'one_tower', 'imagenette', 'imagenette_small',
                                  'cifar10'])
def test_every_config_names_its_tfds_dataset(name):
  config = importlib.import_module(f'configs.{name}').get_config()
  expected = {'cifar10': 'cifar10', 'imagenette': 'imagenette', 'imagenette_small': 'imagenette'}
  assert config.data.tfds_name == expected.get(name, 'imagenet2012')
  assert tfds.builder_cls(config.data.tfds_name)  # a dataset TFDS knows how to build
  # TFDS's split names: CIFAR-10 has no 'validation', its test set serves.
  assert config.data.tfds_eval_split == ('test' if name == 'cifar10' else 'validation')


def test_config_picks_the_source(photo_dir, flat_val, tfds_dir):
  d = default.get_config().data
  d.train_dir = photo_dir
  d.val_dir = str(flat_val / 'val')
  d.val_labels = str(flat_val / 'LOC_val_solution.csv')
  train = sources.train_source(d)
  assert isinstance(train, sources.ImageFolder)
  assert isinstance(sources.eval_source(d, train.class_names), sources.ImageNetVal)
  d.source, d.tfds_name, d.tfds_data_dir = 'tfds', 'photo_set', tfds_dir
  assert len(sources.train_source(d)) == 15 and len(sources.eval_source(d, CLASSES)) == 3
  d.source, d.packed_dir = 'packed', str(flat_val / 'nothing')
  with pytest.raises(DataError, match='alexnet_jax.prepare'):
    sources.train_source(d)


def test_packed_record_round_trip():
  jpeg = transforms.encode_jpeg(np.zeros((8, 8, 3), np.uint8), 90)
  record = sources.unpack_record(sources.pack_record(jpeg, 7, 'n007/x.JPEG'))
  assert record == {'image_bytes': jpeg, 'label': 7, 'name': 'n007/x.JPEG'}
  assert Image.open(io.BytesIO(record['image_bytes'])).size == (8, 8)


def test_a_missing_folder_names_the_variable_its_config_reads(tmp_path, monkeypatch):
  from configs import cifar10  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv('CIFAR10_DIR', str(tmp_path / 'nowhere'))
  with pytest.raises(DataError, match='No training images at .*nowhere/train.*, or set '
                     'CIFAR10_DIR, which this config reads, to the folder holding train/ and '
                     'test/. Other layouts'):
    sources.train_source(cifar10.get_config().data)
  data = default.get_config().data  # reads no variable: the message names none
  data.train_dir = str(tmp_path / 'train')
  with pytest.raises(DataError, match=r'LABEL_FILE\)\. Other layouts'):
    sources.train_source(data)
