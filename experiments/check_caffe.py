"""Our import of a Caffe AlexNet against OpenCV 4's Caffe importer: the largest logit difference.

    python -m experiments.check_caffe --prototxt=deploy.prototxt \
        --weights=bvlc_alexnet.caffemodel --mean=imagenet_mean.binaryproto [a.JPEG b.JPEG ...]

It needs the project and OpenCV 4 in one environment (`pip install -e .
'opencv-python-headless<5'`; OpenCV 5 reads no Caffe files). The file goes the user's way:
`import_weights.import_file` into a temporary workdir, `inference.restore`, the classifier's
preprocessing. Each JPEG is fitted to 256x256 (shorter side, then the center) once and both
networks see that image: OpenCV through Caffe's test-time transform (BGR, minus the mean image,
the central 227x227 crop, NCHW). Without JPEGs, four random images. tests/test_caffe_import.py
makes the same comparison on a narrow net, with OpenCV's outputs stored.
"""

import sys
import tempfile

import numpy as np
from absl import app, flags

from alexnet_jax import caffe_format, import_weights, inference, logs, transforms
from alexnet_jax.errors import UserError
from configs import caffe_alexnet

flags.DEFINE_string('prototxt', None, "The net's deploy.prototxt, for OpenCV.")
flags.DEFINE_string('weights', None, 'bvlc_alexnet.caffemodel.')
flags.DEFINE_string('mean', None, 'imagenet_mean.binaryproto.')
flags.mark_flags_as_required(['prototxt', 'weights', 'mean'])


def opencv_logits(prototxt: str, weights: str, mean: str, images: np.ndarray,
                  crop: int) -> np.ndarray:
  """fc8 of OpenCV's Caffe net for uint8 RGB (B, S, S, 3) images."""
  import cv2  # pylint: disable=g-import-not-at-top
  if not cv2.__version__.startswith('4.'):
    raise UserError(f'OpenCV {cv2.__version__} reads no Caffe files: pip install '
                    "'opencv-python-headless<5'.")
  top = (images.shape[1] - crop) // 2
  bgr = images[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32) - caffe_format.read_mean(mean)
  net = cv2.dnn.readNetFromCaffe(prototxt, weights)
  net.setInput(np.ascontiguousarray(bgr[:, :, top:top + crop, top:top + crop]))
  return net.forward('fc8')


def main(argv):
  logs.quiet_library_logs()
  options = flags.FLAGS
  config = caffe_alexnet.get_config()
  size = config.data.resize_size
  try:
    if argv[1:]:
      images = np.stack([transforms.resize_center_crop(
          transforms.decode(open(path, 'rb').read()), size) for path in argv[1:]])
    else:
      images = np.random.default_rng(0).integers(0, 256, (4, size, size, 3), np.uint8)
    theirs = opencv_logits(options.prototxt, options.weights, options.mean, images,
                           config.data.crop_size)
    with tempfile.TemporaryDirectory() as workdir:
      import_weights.import_file(options.weights, config, workdir, options.mean)
      classifier, params, _ = inference.restore(workdir)
    ours = np.asarray(classifier.logits(params, classifier.preprocess(images)))
  except (UserError, OSError) as e:
    sys.exit(f'error: {e}')
  for i, name in enumerate(argv[1:] or [f'random image {i}' for i in range(len(images))]):
    print(f'{name}: max |difference| {np.abs(ours[i] - theirs[i]).max():.3g}, top-1 ours '
          f'{ours[i].argmax()} OpenCV {theirs[i].argmax()}')
  print(f'max |difference| of the logits: {np.abs(ours - theirs).max():.3g}, at logits up to '
        f'{np.abs(theirs).max():.3g}')


if __name__ == '__main__':
  app.run(main)
