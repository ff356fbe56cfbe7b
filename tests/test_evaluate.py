"""Evaluation: ten patches and ensembles checked by hand in NumPy, and the command line."""

import csv
import json
import logging
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from alexnet_jax import checkpointing, evaluate, inference, transforms
from alexnet_jax.errors import CheckpointError, UserError


def test_ten_crop_is_the_four_corners_the_center_and_their_mirrors():
  image = np.arange(8 * 9 * 3).reshape(8, 9, 3)
  views = transforms.ten_crop(image, 5)
  expected = [image[0:5, 0:5], image[0:5, 4:9], image[3:8, 0:5], image[3:8, 4:9], image[1:6, 2:7]]
  expected += [v[:, ::-1] for v in expected]
  assert views.shape == (10, 5, 5, 3)
  np.testing.assert_array_equal(views, np.stack(expected))


def test_top_k_errors_by_hand():
  probs = np.array([[0.1, 0.5, 0.2, 0.2], [0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]])
  labels = np.array([1, 2, 0])
  errors = evaluate.top_k_errors(probs, labels, ks=(1, 2))
  assert errors == {'top1_err': pytest.approx(2 / 3), 'top2_err': pytest.approx(2 / 3)}
  assert evaluate.top_k_errors(probs, labels, ks=(3,))['top3_err'] == pytest.approx(1 / 3)


def test_one_ranking_for_training_evaluation_and_the_confusion_matrix():
  # Ties (rows 0 and 1) rank by the lower class index, as NumPy's stable sort does.
  scores = np.array([[0.3, 0.1, 0.3, 0.3], [0.25, 0.25, 0.25, 0.25], [0.1, 0.2, 0.3, 0.4],
                     [0.5, 0.2, 0.2, 0.1]], np.float32)
  labels = np.array([2, 3, 0, 1])
  order = np.argsort(-scores, axis=-1, kind='stable')
  by_hand = [(order[:, :k] != labels[:, None]).all(-1).astype(np.float32) for k in (1, 2, 3)]
  np.testing.assert_array_equal(inference.top_classes(scores, 3), order[:, :3])
  np.testing.assert_array_equal(inference.top_classes(scores, 5), order)  # fewer classes than k
  jitted = jax.jit(evaluate.top_k_misses, static_argnums=2)(scores, labels, (1, 2, 3))
  for misses in (evaluate.top_k_misses(scores, labels, (1, 2, 3)), jitted):
    for got, want in zip(misses, by_hand):
      np.testing.assert_array_equal(got, want)
  per_class = evaluate.per_class(scores, labels, 4)
  assert [per_class['confusion'][t].index(1) for t in labels] == [0, 0, 3, 0]  # order[:, 0]
  assert per_class['per_class_top5_acc'] == [1.0, 1.0, 1.0, 1.0]


def _numpy_softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_ten_crop_probabilities_match_a_hand_computation(trained_workdir, shapes_dir):
  loaded = checkpointing.load(trained_workdir)
  probs, labels, index = evaluate.probabilities(loaded, 'ten', batch_size=8)
  classifier, params, config = inference.restore(trained_workdir)
  val_dir = os.path.join(shapes_dir, 'val')
  files = [os.path.join(c, f) for c in sorted(os.listdir(val_dir))
           for f in sorted(os.listdir(os.path.join(val_dir, c)))]  # ImageFolder's order
  assert len(probs) == len(files) == len(index)
  for row in (0, len(files) - 1):
    path = os.path.join(val_dir, files[index[row]])
    assert labels[row] == classifier.class_names.index(os.path.dirname(files[index[row]]))
    # By hand: resize and center-crop, subtract the mean image, cut the ten patches by slicing.
    image = np.asarray(Image.open(path).convert('RGB'))
    image = transforms.resize_center_crop(image, config.data.resize_size)
    centered = image.astype(np.float32) - loaded.norm.mean_image
    c, s = config.data.crop_size, config.data.resize_size
    patches = [centered[t:t + c, l:l + c] for t, l in
               ((0, 0), (0, s - c), (s - c, 0), (s - c, s - c), ((s - c) // 2, (s - c) // 2))]
    patches += [p[:, ::-1] for p in patches]
    logits = np.asarray(classifier.logits(params, np.stack(patches)), np.float64)
    np.testing.assert_allclose(probs[row], _numpy_softmax(logits).mean(0), rtol=1e-4,
                               atol=1e-6)


def test_center_crop_error_matches_the_training_loops_evaluation(trained_workdir):
  result = evaluate.evaluate([trained_workdir], [None], views=('center',), batch_size=8)
  with open(os.path.join(trained_workdir, 'metrics.jsonl')) as f:
    last_val = [r for r in map(json.loads, f) if r['split'] == 'val'][-1]
  member = result['members'][0]
  assert member['step'] == last_val['step'] == 6
  assert member['center']['top1_err'] == pytest.approx(last_val['top1_err'], abs=1e-6)
  assert member['center']['top5_err'] == pytest.approx(last_val['top5_err'], abs=1e-6)
  assert result['ensemble'] is None


def test_ensemble_averages_the_members_softmax(trained_workdir):
  result = evaluate.evaluate([trained_workdir], [3, 6], views=('center',), batch_size=8)
  members = [evaluate.probabilities(checkpointing.load(trained_workdir, s), 'center', 8)
             for s in (3, 6)]
  labels = members[0][1]
  by_hand = evaluate.top_k_errors((members[0][0] + members[1][0]) / 2, labels)
  assert [m['step'] for m in result['members']] == [3, 6]
  assert result['ensemble']['center']['top1_err'] == pytest.approx(by_hand['top1_err'])
  assert result['ensemble']['center']['top5_err'] == pytest.approx(by_hand['top5_err'])
  assert result['ensemble']['center']['members'] == 2


def test_command_line_writes_json(trained_workdir, tmp_path):
  out = tmp_path / 'eval.json'
  proc = subprocess.run([sys.executable, '-m', 'alexnet_jax.evaluate',
                         f'--workdir={trained_workdir}', '--step=3,6', f'--out={out}'],
                        capture_output=True, text=True, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  result = json.loads(out.read_text())
  assert set(result['members'][0]) >= {'center', 'ten', 'step', 'checkpoint'}
  assert set(result['ensemble']) == {'center', 'ten'}
  assert 'ensemble of 2' in proc.stdout and 'ten-crop top-1' in proc.stdout
  assert len(result['ensemble']['ten']['per_class_top1_acc']) == 10
  for view in ('center', 'ten'):  # the ensemble's confusion matrices, drawn beside the JSON
    assert Image.open(tmp_path / f'eval-confusion-{view}.png').format == 'PNG'


def test_command_line_reads_moved_images_from_config_data_fields(trained_workdir, shapes_dir,
                                                               tmp_path):
  """--config.data.FIELD=VALUE, as in training, says where the checkpoint's images are now;
  nothing else of its config can change."""
  moved = tmp_path / 'val'
  for cls in sorted(os.listdir(os.path.join(shapes_dir, 'val'))):  # one image of each class
    first = sorted(os.listdir(os.path.join(shapes_dir, 'val', cls)))[0]
    os.makedirs(moved / cls)
    shutil.copy(os.path.join(shapes_dir, 'val', cls, first), moved / cls / first)
  evaluate_with = lambda *flags: subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.evaluate', f'--workdir={trained_workdir}',
       '--views=center', f'--out={tmp_path / "eval.json"}', *flags],
      capture_output=True, text=True, check=False)
  proc = evaluate_with(f'--config.data.val_dir={moved}', '--config.data.threads=1')
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert json.loads((tmp_path / 'eval.json').read_text())['members'][0]['center']['images'] == 10
  proc = evaluate_with('--config.model.width=2')
  assert proc.returncode != 0 and 'only where the images are can change' in proc.stderr
  assert 'Traceback' not in proc.stderr
  loaded = checkpointing.load(trained_workdir)
  with pytest.raises(UserError, match='no field data.val_dri; the nearest is data.val_dir'):
    inference.checkpoint_config(loaded, {'data.val_dri': str(moved)})
  with pytest.raises(UserError, match='only where the images are'):
    inference.checkpoint_config(loaded, {'optim.base_lr': 1.0})


def test_missing_checkpoint_is_a_clear_error(tmp_path, trained_workdir):
  with pytest.raises(CheckpointError, match='does not exist'):
    checkpointing.load(str(tmp_path / 'nowhere'))
  with pytest.raises(CheckpointError, match=r'steps there: \[3, 6\]'):
    checkpointing.load(trained_workdir, step=5)
  proc = subprocess.run([sys.executable, '-m', 'alexnet_jax.evaluate',
                         f'--workdir={tmp_path / "nowhere"}'], capture_output=True, text=True,
                        check=False)
  assert proc.returncode != 0 and 'does not exist' in proc.stderr


def _record_decoder(workdir, decoder):
  path = os.path.join(workdir, 'checkpoints', '6', 'meta', 'metadata')
  with open(path) as f:
    meta = json.load(f)
  meta['decoder'] = decoder
  with open(path, 'w') as f:
    json.dump(meta, f)


@pytest.mark.skipif(not transforms.FAST_DECODER, reason='both decoders are Pillow here')
def test_evaluation_decodes_as_training_did_unless_told_otherwise(trained_workdir, tmp_path):
  original = checkpointing.load(trained_workdir)
  assert original.decoder == 'simplejpeg+opencv'  # what training recorded: 'auto' resolved here
  pillow = evaluate.probabilities(original, 'center', 8, {'data.decoder': 'pillow'})[0]
  fast = evaluate.probabilities(original, 'center', 8)[0]
  assert not np.array_equal(pillow, fast)  # the decoders' pixels differ a little
  workdir = str(shutil.copytree(trained_workdir, tmp_path / 'run'))
  _record_decoder(workdir, 'pillow')
  recorded = checkpointing.load(workdir)
  assert recorded.decoder == 'pillow'
  np.testing.assert_array_equal(evaluate.probabilities(recorded, 'center', 8)[0], pillow)
  np.testing.assert_array_equal(
      evaluate.probabilities(recorded, 'center', 8, {'data.decoder': 'auto'})[0], fast)


def test_a_fast_decoder_missing_here_is_one_warning(trained_workdir, tmp_path, monkeypatch,
                                                    caplog):
  workdir = str(shutil.copytree(trained_workdir, tmp_path / 'run'))
  _record_decoder(workdir, 'simplejpeg+opencv')
  monkeypatch.setattr(transforms, 'FAST_DECODER', False)
  inference._warn_fast_decoder_missing.cache_clear()  # pylint: disable=protected-access
  loaded = checkpointing.load(workdir)
  with caplog.at_level(logging.WARNING):
    for _ in range(2):
      assert inference.checkpoint_config(loaded).data.decoder == 'auto'
  warnings = [r.getMessage() for r in caplog.records if 'simplejpeg' in r.getMessage()]
  assert len(warnings) == 1 and "pip install -e '.[fast]'" in warnings[0]


def test_per_class_accuracy_confusion_and_predictions_by_hand(trained_workdir, shapes_dir,
                                                              tmp_path):
  # Three classes of the validation images, in a folder of their own.
  images = tmp_path / 'images'
  val = os.path.join(shapes_dir, 'val')
  for c in sorted(os.listdir(val))[2:5]:
    shutil.copytree(os.path.join(val, c), images / c)
  broken = images / sorted(os.listdir(val))[2] / 'zz_empty.JPEG'
  broken.write_bytes(b'')
  csv_path = tmp_path / 'preds.csv'
  result = evaluate.evaluate([trained_workdir], [None], views=('center',), batch_size=8,
                             images=str(images), predictions=str(csv_path))
  assert result['skipped_files'] == {'count': 1, 'files': [str(broken)]}
  classifier, params, _ = inference.restore(trained_workdir)
  files = sorted(str(p) for p in images.glob('*/*') if p != broken)  # ImageFolder's order
  labels = np.array([classifier.class_names.index(os.path.basename(os.path.dirname(f)))
                     for f in files])
  # By hand: the center patch of each file through the network, softmax, counts in NumPy.
  logits = classifier.logits(params, classifier.preprocess(files))
  probs = _numpy_softmax(np.asarray(logits, np.float64))
  top1 = probs.argmax(-1)
  center = result['members'][0]['center']
  assert center['images'] == len(files) == 12
  assert result['class_names'] == list(classifier.class_names)
  confusion = np.zeros((10, 10), int)
  for t, p in zip(labels, top1):
    confusion[t, p] += 1
  np.testing.assert_array_equal(center['confusion'], confusion)
  for c in range(10):
    rows = labels == c
    if not rows.any():
      assert center['per_class_top1_acc'][c] is None and center['per_class_images'][c] == 0
      continue
    assert center['per_class_top1_acc'][c] == pytest.approx(np.mean(top1[rows] == c))
    top5 = np.argsort(-probs[rows], axis=-1)[:, :5]
    assert center['per_class_top5_acc'][c] == pytest.approx(np.mean((top5 == c).any(-1)))
  assert center['top1_err'] == pytest.approx(np.mean(top1 != labels))
  # The predictions file: one row per image, the top-5 and their probabilities, best first.
  with open(csv_path) as f:
    rows = list(csv.DictReader(f))
  assert [r['file'] for r in rows] == files
  for r, p, label in zip(rows, probs, labels):
    order = np.argsort(-p)[:5]
    assert r['label'] == classifier.class_names[label]
    assert [r[f'top{j}'] for j in range(1, 6)] == [classifier.class_names[i] for i in order]
    np.testing.assert_allclose([float(r[f'p_top{j}']) for j in range(1, 6)], p[order],
                               rtol=1e-4)
    assert float(r['p_label']) == pytest.approx(p[label], rel=1e-4)
  # The confusion matrix as a picture.
  [png] = evaluate.confusion_pngs(result, str(tmp_path / 'eval'))
  assert png.endswith('eval-confusion-center.png') and Image.open(png).format == 'PNG'
