"""The import command end to end, in a real process: a Caffe file becomes a checkpoint that
restore, predict, evaluate and export read, and gives OpenCV's logits from there; a user's
mistake is one line."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import alexnet_jax
from alexnet_jax import caffe_format, checkpointing, evaluate, export, import_weights
from alexnet_jax.errors import UserError
from tests.fixtures import make_caffe_fixture as fixture
from tests.test_caffe_import import TOLERANCE, narrow_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NARROW = [f'--config.model.conv_features=({", ".join(map(str, fixture.CONV_FEATURES))})',
          f'--config.model.fc_features={fixture.FC_FEATURES}',
          f'--config.model.num_classes={fixture.CLASSES}']


def _import(tmp_path, *flags) -> subprocess.CompletedProcess:
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'JAX_PLATFORMS')}
  return subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.import_weights', '--config=configs/caffe_alexnet.py',
       *flags], cwd=ROOT, capture_output=True, text=True, env={**env, 'JAX_PLATFORMS': 'cpu'},
      timeout=300)


@pytest.fixture(scope='module')
def imported(tmp_path_factory):
  """The narrow Caffe net of the OpenCV check, imported by the command into a workdir."""
  folder = tmp_path_factory.mktemp('caffe')
  fixture.write_files(str(folder))
  workdir = folder / 'run'
  done = _import(folder, f'--weights={folder / "narrow_alexnet.caffemodel"}',
                 f'--mean={folder / "narrow_mean.binaryproto"}', f'--workdir={workdir}', *NARROW)
  assert done.returncode == 0, done.stderr[-3000:]
  assert f'wrote {workdir}/checkpoints/0' in done.stdout
  return folder, str(workdir)


def test_the_checkpoint_holds_the_network_its_mean_and_classes(imported):
  folder, workdir = imported
  loaded = checkpointing.load(workdir)
  assert loaded.step == 0 and loaded.config.name == 'caffe_alexnet'
  assert loaded.class_names == tuple(str(i) for i in range(fixture.CLASSES))
  mean_bgr = caffe_format.read_mean(str(folder / 'narrow_mean.binaryproto'))
  np.testing.assert_array_equal(loaded.norm.mean_image, mean_bgr[::-1].transpose(1, 2, 0))
  # conv1 reads RGB: its input channels are Caffe's BGR ones reversed.
  caffe_conv1 = caffe_format.read_net(str(folder / 'narrow_alexnet.caffemodel'))['conv1'][0]
  np.testing.assert_array_equal(loaded.params['conv1']['kernel'],
                                caffe_conv1[:, ::-1].transpose(2, 3, 1, 0))


def test_restored_checkpoint_gives_opencvs_logits(imported):
  """From the checkpoint on disk, through restore and the classifier's own preprocessing."""
  _, workdir = imported
  opencv = np.load(fixture.FIXTURE)
  classifier, params, _ = alexnet_jax.restore(workdir)
  logits = np.asarray(classifier.logits(params, classifier.preprocess(opencv['images'])))
  assert np.abs(logits - opencv['fc8']).max() <= TOLERANCE * np.abs(opencv['fc8']).max()
  pred = alexnet_jax.predict(classifier, params, opencv['images'], top_k=3)
  np.testing.assert_array_equal(pred.ids[:, 0], opencv['fc8'].argmax(-1))


def test_evaluate_and_export_read_it(imported, shapes_dir, tmp_path):
  _, workdir = imported
  images = tmp_path / 'images'
  for label in ('0', '3'):  # a folder per class among the checkpoint's ('0' ... '9')
    shutil.copytree(os.path.join(shapes_dir, 'val', sorted(os.listdir(
        os.path.join(shapes_dir, 'val')))[int(label)]), images / label)
  result = evaluate.evaluate([workdir], [None], views=('center',), batch_size=4,
                             images=str(images))
  assert result['members'][0]['step'] == 0
  assert 0 <= result['members'][0]['center']['top1_err'] <= 1
  arrays = np.load(export.export(workdir, str(tmp_path / 'caffe.npz')))
  assert arrays['conv2/kernel'].shape == (5, 5, 6, 32) and arrays['mean_image'].shape == (256,
                                                                                         256, 3)


@pytest.mark.parametrize('mean, into, words', [
    ('', 'new', ['needs the mean image', '--mean=imagenet_mean.binaryproto']),
    ('x.binaryproto', 'new', ['x.binaryproto']),
    ('narrow_mean.binaryproto', 'imported', ['already holds checkpoints', 'a new --workdir']),
])
def test_a_mistake_is_one_line(imported, tmp_path, mean, into, words):
  folder, workdir = imported
  config = narrow_config()
  target = workdir if into == 'imported' else str(tmp_path / 'new')
  with pytest.raises(UserError) as e:
    import_weights.import_file(str(folder / 'narrow_alexnet.caffemodel'), config, target,
                               str(folder / mean) if mean else '')
  assert '\n' not in str(e.value) and all(w in str(e.value) for w in words), str(e.value)
