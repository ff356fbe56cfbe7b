"""The torchvision import checked against torchvision's own code, where torchvision is installed.

    pip install torch torchvision        # CPU wheels suffice; nothing is downloaded
    python -m experiments.check_torchvision --images=../shared/data/imagenette/val
    python -m experiments.check_torchvision --images=DIR --weights=alexnet-owt-7be5be79.pth \
        --num_images=500 --json=check_torchvision.json

torchvision.models.alexnet() with seeded random weights (or the --weights file) is saved with
torch.save(model.state_dict()), imported by `python -m alexnet_jax.import_weights` and read back
by alexnet_jax.inference.restore. --images is a folder of JPEGs, or of class folders of them, of
which --num_images are taken, spread over the folders.

(a) Exactness: both networks on the same batch, torchvision's normalized NCHW tensors (ours
    reads them times 255 x std, NHWC: pixels minus the mean image). The logits must differ by
    float32 rounding: each side is also compared with torchvision in float64.
(b) End to end: torchvision's evaluation transforms (AlexNet_Weights.IMAGENET1K_V1.transforms():
    Pillow decoding, Resize(256) bilinear with antialiasing, CenterCrop(224), normalize) against
    alexnet_jax.predict's reading of the same files (Classifier.preprocess: shorter side 256 and
    the central 256x256, the mean image, the central 224x224), with each of this project's
    decoders: how far the pixels differ, and how far that moves the logits and the top classes.

Random weights are redrawn with He's Gaussian (zero biases): PyTorch's default initialization
gives each layer a sixth of the variance that keeps a ReLU network's signal, so its logits would
hardly depend on the image. A random network still puts most images in a few classes, so the
top-1 and top-5 agreement mean most with the trained weights.
"""

import copy
import dataclasses
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
# pylint: disable=g-import-not-at-top
import jax
from alexnet_jax import import_weights, inference, logs, transforms
from experiments import machine
# pylint: enable=g-import-not-at-top

flags.DEFINE_string('images', None, 'A folder of JPEGs, or of class folders of JPEGs.')
flags.DEFINE_integer('num_images', 200, 'Images taken, spread evenly over the class folders.')
flags.DEFINE_string('weights', '', "A state dict of torchvision's AlexNet (.pth); default: "
                    'random weights drawn from --seed.')
flags.DEFINE_integer('seed', 0, 'torch.manual_seed of the random weights.')
flags.DEFINE_integer('float64_images', 16, 'Images that torchvision also runs in float64.')
flags.DEFINE_string('json', None, 'Also write the results here.')
FLAGS = flags.FLAGS

CONFIG = os.path.join(REPO, 'configs', 'torchvision_alexnet.py')
_BATCH = 50


def image_files(folder: str, count: int) -> list[str]:
  """`count` files of `folder`, taken in turn from each class folder (sorted), or its own."""
  subdirs = sorted(d.path for d in os.scandir(folder) if d.is_dir())
  lists = [sorted(e.path for e in os.scandir(d) if e.is_file()) for d in subdirs or [folder]]
  files = []
  for i in range(max(map(len, lists))):
    files += [names[i] for names in lists if i < len(names)]
  if not files:
    sys.exit(f'error: no files in {folder}')
  return files[:count]


def torchvision_model(weights: str, seed: int):
  import torch  # pylint: disable=g-import-not-at-top
  import torchvision  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  model = torchvision.models.alexnet()
  if weights:
    model.load_state_dict(torch.load(weights, map_location='cpu', weights_only=True))
  else:
    for module in model.modules():
      if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
        torch.nn.init.kaiming_normal_(module.weight, nonlinearity='relu')
        torch.nn.init.zeros_(module.bias)
  return model.eval()


def torch_logits(model, x: np.ndarray, dtype=None) -> np.ndarray:
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    return np.concatenate([model(torch.from_numpy(x[i:i + _BATCH]).to(dtype)).double().numpy()
                           for i in range(0, len(x), _BATCH)])


def our_logits(classifier, params, x: np.ndarray) -> np.ndarray:
  return np.concatenate([np.asarray(classifier.logits(params, x[i:i + _BATCH]), np.float64)
                         for i in range(0, len(x), _BATCH)])


def import_checkpoint(model, tmp: str) -> tuple:
  """The model through torch.save, the import command and inference.restore."""
  import torch  # pylint: disable=g-import-not-at-top
  path = os.path.join(tmp, 'alexnet.pth')
  torch.save(model.state_dict(), path)
  workdir = os.path.join(tmp, 'run')
  subprocess.run([sys.executable, '-m', 'alexnet_jax.import_weights', f'--config={CONFIG}',
                  f'--weights={path}', f'--workdir={workdir}'], cwd=REPO, check=True,
                 stdout=subprocess.DEVNULL)
  return inference.restore(workdir)


def exactness(model, classifier, params, x_torch: np.ndarray) -> tuple[dict, np.ndarray,
                                                                        np.ndarray]:
  """(a): both networks on torchvision's batch, in full float32 (a GPU would otherwise multiply
  in TensorFloat-32); the first images also through torchvision in float64. Returns the
  figures, torchvision's logits and our network's input."""
  import torch  # pylint: disable=g-import-not-at-top
  std = np.asarray(import_weights.TORCHVISION_STD, np.float32)
  x_ours = x_torch.transpose(0, 2, 3, 1) * (255 * std)
  theirs = torch_logits(model, x_torch)
  with jax.default_matmul_precision('highest'):
    ours = our_logits(classifier, params, x_ours)
  n = min(FLAGS.float64_images, len(x_torch))
  exact = torch_logits(copy.deepcopy(model).double(), x_torch[:n], torch.float64)
  largest = np.abs(theirs).max()
  diff = np.abs(ours - theirs)
  return {'images': len(x_torch), 'max_abs': float(diff.max()),
          'max_rel_largest_logit': float(diff.max() / largest),
          'max_rel_spread': float((diff / theirs.std(axis=1, keepdims=True)).max()),
          'float64_images': n,
          'torchvision_vs_float64': float(np.abs(theirs[:n] - exact).max() / largest),
          'ours_vs_float64': float(np.abs(ours[:n] - exact).max() / largest)}, theirs, x_ours


def top(logits: np.ndarray, k: int) -> np.ndarray:
  return np.argsort(-logits, axis=1, kind='stable')[:, :k]


def end_to_end(classifier, params, files, x_ours, theirs) -> list[dict]:
  """(b): each decoder's reading of the files against torchvision's transforms."""
  rows = [('torchvision tensor (a)', None)]
  decoders = ('auto', 'pillow') if transforms.FAST_DECODER else ('pillow',)
  rows += [(f'predict, decoder={d}', d) for d in decoders]
  spread = theirs.std(axis=1, keepdims=True)  # over the classes, per image
  image_rms = np.sqrt(np.mean((theirs - theirs.mean(axis=0)) ** 2))  # from image to image
  their_top5 = top(theirs, 5)
  out = []
  for name, decoder in rows:
    if decoder is None:
      inputs = x_ours
    else:
      reader = dataclasses.replace(classifier, decoder=decoder)
      inputs = reader.preprocess(files)
    ours = our_logits(classifier, params, inputs)
    diff = np.abs(ours - theirs)
    ids = inference.predict(reader, params, files).ids if decoder else top(ours, 5)
    out.append({'reading': name, 'decoder': decoder,
                'pixels_mean_abs': float(np.abs(inputs - x_ours).mean()),
                'logits_max_rel_spread': float((diff / spread).max()),
                'logits_median_rel_spread': float(np.median(diff / spread)),
                'logits_rms_rel_images': float(np.sqrt(np.mean(diff ** 2)) / image_rms),
                'top1_agree': float((ids[:, 0] == their_top5[:, 0]).mean()),
                'top5_agree': float(np.mean([set(a) == set(b) for a, b in zip(ids, their_top5)]))})
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logs.quiet_library_logs()
  import torch  # pylint: disable=g-import-not-at-top
  import torchvision  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  files = image_files(FLAGS.images, FLAGS.num_images)
  model = torchvision_model(FLAGS.weights, FLAGS.seed)
  preset = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.transforms()
  with torch.no_grad():
    x_torch = torch.stack([preset(Image.open(f).convert('RGB')) for f in files]).numpy()
  with tempfile.TemporaryDirectory() as tmp:
    classifier, params, _ = import_checkpoint(model, tmp)
  exact, theirs, x_ours = exactness(model, classifier, params, x_torch)
  rows = end_to_end(classifier, params, files, x_ours, theirs)

  info = machine.describe()
  info['versions']['torchvision'] = machine.version('torchvision')
  weights = FLAGS.weights or f'random (He normal, torch.manual_seed({FLAGS.seed}))'
  distinct = len(set(theirs.argmax(axis=1)))
  print(f'{machine.one_line(info)}\nweights: {weights}; {len(files)} images of {FLAGS.images}; '
        f"torchvision's top-1: {distinct} distinct classes; the restored checkpoint reads JPEGs "
        f'with decoder={classifier.decoder}\n')
  print(f"(a) torchvision's batch: max |ours - torchvision| {exact['max_abs']:.3g}, that is "
        f"{exact['max_rel_largest_logit']:.2g} of the\n    largest logit and "
        f"{exact['max_rel_spread']:.2g} of an image's logit spread (std over classes). "
        f"Against float64\n    torchvision ({exact['float64_images']} images), relative to "
        f"the largest logit: torchvision {exact['torchvision_vs_float64']:.2g}, ours "
        f"{exact['ours_vs_float64']:.2g}.\n")
  print("(b) from the JPEGs, against torchvision's transforms: mean |d pixel| (0-255); "
        "|d logit| relative to\n    each image's logit spread (max, median), and its RMS "
        "relative to the logits' change from image\n    to image; top-1 and top-5 (as sets) "
        'agreement:\n')
  head = ('reading', 'pixels |d|', 'max', 'median', 'vs images', 'top-1', 'top-5')
  print(f'{head[0]:<26}{head[1]:>11}{head[2]:>9}{head[3]:>9}{head[4]:>11}{head[5]:>8}'
        f'{head[6]:>8}')
  for r in rows:
    print(f"{r['reading']:<26}{r['pixels_mean_abs']:>11.3f}{r['logits_max_rel_spread']:>9.3g}"
          f"{r['logits_median_rel_spread']:>9.3g}{r['logits_rms_rel_images']:>11.3g}"
          f"{r['top1_agree']:>8.1%}{r['top5_agree']:>8.1%}")
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump({'machine': info, 'weights': weights, 'images': FLAGS.images,
                 'num_images': len(files), 'distinct_top1': distinct, 'exact': exact,
                 'end_to_end': rows}, f, indent=1)


if __name__ == '__main__':
  flags.mark_flag_as_required('images')
  app.run(main)
