"""restore / predict for notebooks, the figures' arrays, and the Colab notebook run headless."""

import json
import os
import shutil

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from PIL import Image

import alexnet_jax
from alexnet_jax import checkpointing, implementations, inference, transforms, visualize
from alexnet_jax.errors import CheckpointError
from alexnet_jax.model import AlexNet

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _val_files(shapes_dir):
  val = os.path.join(shapes_dir, 'val')
  return [os.path.join(val, c, sorted(os.listdir(os.path.join(val, c)))[0])
          for c in sorted(os.listdir(val))]


def test_restore_returns_the_trained_network_params_and_config(trained_workdir):
  classifier, params, config = alexnet_jax.restore(trained_workdir)
  loaded = checkpointing.load(os.path.join(trained_workdir, 'checkpoints', '6'))
  assert isinstance(classifier.network, AlexNet) and classifier.network.width == config.model.width
  assert config.num_train_steps == 6 and loaded.step == 6
  for name in ('conv1', 'fc8'):
    np.testing.assert_array_equal(np.asarray(params[name]['kernel']),
                                  loaded.params[name]['kernel'])
  assert classifier.crop == 67 and classifier.resize == 72 and len(classifier.class_names) == 10
  assert classifier.norm.mean_image.shape == (72, 72, 3)
  with pytest.raises(CheckpointError, match='does not exist'):
    alexnet_jax.restore(os.path.join(trained_workdir, 'missing'))


def test_predict_ranks_classes_by_the_networks_softmax(trained_workdir, shapes_dir):
  classifier, params, _ = alexnet_jax.restore(trained_workdir)
  files = _val_files(shapes_dir)
  pred = alexnet_jax.predict(classifier, params, files, top_k=3)
  assert pred.ids.shape == pred.probs.shape == (len(files), 3)
  assert np.all(np.diff(pred.probs, axis=1) <= 0)          # best first
  # By hand: the same pixels through the network, softmax in NumPy.
  image = transforms.resize_center_crop(np.asarray(Image.open(files[0]).convert('RGB')), 72)
  image = image.astype(np.float32) - classifier.norm.mean_image
  c = (72 - 67) // 2
  logits = np.asarray(classifier.logits(params, image[None, c:c + 67, c:c + 67]), np.float64)[0]
  probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
  np.testing.assert_array_equal(pred.ids[0], np.argsort(-probs)[:3])
  np.testing.assert_allclose(pred.probs[0], np.sort(probs)[::-1][:3], rtol=1e-4)
  assert pred.names[0] == [classifier.class_names[i] for i in pred.ids[0]]
  # Arrays, PIL images and bytes are read alike.
  same = alexnet_jax.predict(classifier, params, [Image.open(files[0]),
                                             open(files[0], 'rb').read()], top_k=3)
  np.testing.assert_allclose(same.probs, np.stack([pred.probs[0]] * 2), rtol=1e-5)
  ten = alexnet_jax.predict(classifier, params, files[:2], top_k=1, views='ten')
  assert ten.ids.shape == (2, 1)


def test_predict_refuses_float_images_on_the_0_1_scale(trained_workdir, shapes_dir):
  classifier, params, _ = alexnet_jax.restore(trained_workdir)
  pixels = np.asarray(Image.open(_val_files(shapes_dir)[0]).convert('RGB'))
  with pytest.raises(ValueError, match=r'values in \[0, 1\].*image \* 255'):
    alexnet_jax.predict(classifier, params, pixels.astype(np.float32) / 255)
  with pytest.raises(ValueError, match='must lie in 0-255'):
    alexnet_jax.predict(classifier, params, pixels.astype(np.float32) * 2)
  as_float = alexnet_jax.predict(classifier, params, pixels.astype(np.float32), top_k=3)
  as_uint8 = alexnet_jax.predict(classifier, params, pixels, top_k=3)
  np.testing.assert_array_equal(as_float.ids, as_uint8.ids)
  np.testing.assert_allclose(as_float.probs, as_uint8.probs, rtol=1e-6)


def test_imagenet_models_name_their_classes():
  names = inference.imagenet_names()
  assert len(names) == 1000 and inference.imagenet_synsets()[0] == 'n01440764'
  assert inference.display_name('n01440764') == 'tench'
  assert inference.display_name('n03888257') == 'parachute'
  assert inference.display_name('airplane') == 'airplane'   # a dataset's own label
  network = AlexNet(implementation=implementations.PLAIN)
  classifier = inference.Classifier(network=network, class_names=inference.imagenet_synsets(),
                                    norm=None, resize=256, crop=227)
  assert classifier.names[:2] == ('tench', 'goldfish') and len(classifier.names) == 1000


def test_conv1_grid_lays_out_each_towers_kernels_by_hand():
  rng = np.random.default_rng(0)
  kernel = rng.normal(size=(11, 11, 3, 8)).astype(np.float32)
  grid = visualize.conv1_grid(kernel, towers=2, columns=2, zoom=2, gap=1)
  # 4 kernels per tower in 2 rows of 2; cells of 11*2+1 = 23 pixels; 4 pixels between towers.
  assert grid.shape == (2 * 2 * 23 + 4 + 1, 2 * 23 + 1, 3)
  for j, (top, left) in {0: (1, 1), 3: (24, 24), 4: (51, 1), 7: (74, 24)}.items():
    w = kernel[..., j]
    expected = np.round(255 * (w - w.min()) / (w.max() - w.min())).astype(np.uint8)
    np.testing.assert_array_equal(grid[top:top + 22:2, left:left + 22:2], expected)


def test_nearest_is_brute_force_euclidean():
  rng = np.random.default_rng(1)
  keys, queries = rng.normal(size=(50, 7)), rng.normal(size=(4, 7))
  idx, dist = visualize.nearest(queries, keys, k=6)
  for q in range(4):
    d = np.sqrt(((keys - queries[q]) ** 2).sum(1))
    np.testing.assert_array_equal(idx[q], np.argsort(d)[:6])
    np.testing.assert_allclose(dist[q], np.sort(d)[:6], rtol=1e-9)


def test_fc7_features_are_the_last_hidden_layer(trained_workdir, shapes_dir):
  classifier, params, _ = alexnet_jax.restore(trained_workdir)
  inputs = classifier.preprocess(_val_files(shapes_dir)[:2])
  feats = classifier.features(params, inputs)
  assert feats.shape == (2, classifier.network._features(4096)) and (feats >= 0).all()
  # fc8 applied to the features gives the logits: they are what the classifier reads.
  logits = feats @ np.asarray(params['fc8']['kernel']) + np.asarray(params['fc8']['bias'])
  np.testing.assert_allclose(logits, np.asarray(classifier.logits(params, inputs)), rtol=1e-4,
                             atol=1e-4)


def _run_notebook(monkeypatch) -> str:
  """The notebook in a fresh kernel started in experiments/, as Jupyter does; its printed text."""
  monkeypatch.setenv('MPLBACKEND', 'Agg')
  nb = nbformat.read(os.path.join(REPO, 'experiments', 'colab_restore.ipynb'), as_version=4)
  NotebookClient(nb, timeout=300, kernel_name='python3',
                 resources={'metadata': {'path': os.path.join(REPO, 'experiments')}}).execute()
  return '\n'.join(o.get('text', '') for cell in nb.cells if cell.cell_type == 'code'
                   for o in cell.get('outputs', []))


def test_colab_notebook_runs_headless(trained_workdir, shapes_dir, monkeypatch, tmp_path):
  """The notebook in a fresh kernel started in experiments/, as Jupyter does, on the trained
  fixture (given a checkpoint, it trains nothing)."""
  monkeypatch.setenv('ALEXNET_CHECKPOINT', trained_workdir)
  monkeypatch.setenv('ALEXNET_IMAGES', os.path.join(shapes_dir, 'val'))
  monkeypatch.setenv('ALEXNET_OUT', str(tmp_path))
  text = _run_notebook(monkeypatch)
  assert 'installed before: True' in text and 'demo trained' not in text
  assert 'parameters' in text and 'top-5' in text and 'kernel grid: (' in text
  assert 'figure 4: written' in text
  for figure in ('figure3.png', 'figure4.png'):
    assert Image.open(tmp_path / figure).format == 'PNG'


_NARROW_CAFFE_CONFIG = '''
from tests.test_caffe_import import narrow_config


def get_config():
  return narrow_config()
'''


def test_colab_notebook_imports_a_pretrained_file_headless(shapes_dir, monkeypatch, tmp_path):
  """The notebook's trained-AlexNet path offline: the same cells import a random-weight Caffe
  file (the narrow net the Caffe import is checked on) and classify images with it."""
  from tests.fixtures import make_caffe_fixture  # pylint: disable=g-import-not-at-top
  make_caffe_fixture.write_files(str(tmp_path))
  config_file = tmp_path / 'narrow_caffe.py'
  config_file.write_text(_NARROW_CAFFE_CONFIG)
  monkeypatch.setenv('ALEXNET_PRETRAINED', str(tmp_path / 'narrow_alexnet.caffemodel'))
  monkeypatch.setenv('ALEXNET_PRETRAINED_MEAN', str(tmp_path / 'narrow_mean.binaryproto'))
  monkeypatch.setenv('ALEXNET_PRETRAINED_CONFIG', str(config_file))
  monkeypatch.setenv('ALEXNET_IMAGES', os.path.join(shapes_dir, 'val'))
  monkeypatch.setenv('ALEXNET_OUT', str(tmp_path / 'out'))
  monkeypatch.setenv('PYTHONPATH', REPO)  # the kernel imports the config's test helpers
  text = _run_notebook(monkeypatch)
  assert 'imported:' in text and 'demo trained' not in text
  assert 'caffe_alexnet: AlexNet' in text and 'top-5' in text and 'kernel grid: (' in text
  loaded = checkpointing.load(str(tmp_path / 'out' / 'imported' / 'narrow_alexnet'))
  assert loaded.step == 0 and loaded.config.model.lrn_across_towers
  assert Image.open(tmp_path / 'out' / 'figure3.png').format == 'PNG'


def test_restore_decodes_as_training_did(trained_workdir, shapes_dir, tmp_path):
  workdir = shutil.copytree(trained_workdir, tmp_path / 'run')
  path = workdir / 'checkpoints' / '6' / 'meta' / 'metadata'
  meta = json.loads(path.read_text())
  path.write_text(json.dumps({**meta, 'decoder': 'pillow'}))
  classifier, _, config = alexnet_jax.restore(str(workdir))
  assert classifier.decoder == config.data.decoder == 'pillow'
  assert alexnet_jax.restore(str(workdir), decoder='auto')[0].decoder == 'auto'
  file = _val_files(shapes_dir)[0]
  with open(file, 'rb') as f:
    by_hand = transforms.resize_center_crop(transforms.decode(f.read(), decoder='pillow'), 72,
                                            'pillow')
  c = (72 - 67) // 2
  expected = (by_hand.astype(np.float32) - classifier.norm.mean_image)[c:c + 67, c:c + 67]
  np.testing.assert_array_equal(classifier.preprocess([file])[0], expected)
