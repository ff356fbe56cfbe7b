"""Random-access sources of encoded images, as Grain's `MapDataset.source` takes.

Every source has the same interface: `len(source)`, `source[i]` -> `{'image_bytes': bytes,
'label': int32, 'name': str}`, `source.class_names` (label i is `class_names[i]`) and
`source.key` (a string naming the data, for caches). Labels number the classes in sorted
synset order, as ILSVRC's synset list and TFDS's `imagenet2012` do, so every layout of the same
dataset gives every image the same label.

- `ImageFolder`: `root/<synset>/<image>` (the ILSVRC-2012 training layout).
- `ImageNetVal`: a flat folder of images plus a label file (ILSVRC-2012 validation as
  distributed): the devkit's ground truth with its ILSVRC2012_IDs mapped through the devkit's
  `meta.mat`, or a CSV of file name -> synset.
- `TFDS`: a TFDS dataset prepared in ArrayRecord format, read by random access.
- `Packed`: the project's own ArrayRecord shards of 256x256 JPEGs (see `alexnet_jax.prepare`).

A file that cannot be read gives empty `image_bytes` and an `error`; decoding then skips it by
the pipeline's broken-file policy (alexnet_jax.input_pipeline) rather than stopping the epoch.

`train_source` and `eval_source` build the sources a config's `data` section names:
`data.source` is 'imagefolder' (data.train_dir, one folder per synset; data.val_dir the same
layout, or, with data.val_labels set, ILSVRC-2012's flat validation folder and its label file),
'tfds' (data.tfds_name in ArrayRecord format under data.tfds_data_dir), 'packed'
(data.packed_dir, written by `python -m alexnet_jax.prepare`) or 'demo' (the offline demo's drawn
shapes). Evaluation always numbers classes as training does.
"""

import csv
import glob
import os
import struct
from typing import Sequence

import ml_collections
import numpy as np

from alexnet_jax import drawn_shapes
from alexnet_jax.errors import DataError

IMAGE_EXTENSIONS = ('.jpeg', '.jpg', '.png', '.bmp', '.webp')


def _read(path: str) -> dict:
  try:
    with open(path, 'rb') as f:
      return {'image_bytes': f.read()}
  except OSError as e:  # vanished, unreadable, a directory...: skipped downstream, never a crash
    return {'image_bytes': b'', 'error': f'unreadable: {e.strerror or e}'}


def _class_index(class_names: Sequence[str]) -> dict[str, int]:
  return {name: i for i, name in enumerate(class_names)}


def _is_image(name: str) -> bool:
  return name.lower().endswith(IMAGE_EXTENSIONS)


class _ImageFiles:
  """Image files on disk with their labels: what ImageFolder and ImageNetVal share once listed.

  Subclasses set `root`, `key`, `class_names`, `_paths` and `_labels`.
  """

  def __len__(self) -> int:
    return len(self._paths)

  def __getitem__(self, index: int) -> dict:
    path = str(self._paths[index])
    return {**_read(path), 'label': self._labels[index], 'name': path}

  def __repr__(self) -> str:
    return (f'{type(self).__name__}({self.root!r}, {len(self)} images, '
            f'{len(self.class_names)} classes)')

  def name(self, index: int) -> str:
    """The path of image `index`, without reading it."""
    return str(self._paths[index])

  @property
  def labels(self) -> np.ndarray:
    return self._labels


class ImageFolder(_ImageFiles):
  """`root/<class>/<image>` files, classes numbered in sorted folder order."""

  def __init__(self, root: str, class_names: Sequence[str] | None = None):
    root = os.path.expanduser(root)
    if not os.path.isdir(root):
      raise DataError(f'No image folder at {root!r}: expected one sub-folder per class with the '
                      'images inside (the ImageNet training layout). Point the config at it, '
                      'e.g. --config.data.train_dir=/path/to/train.')
    found = sorted(d.name for d in os.scandir(root) if d.is_dir())
    self.class_names = list(class_names) if class_names is not None else found
    index = _class_index(self.class_names)
    unknown = sorted(set(found) - set(index))
    if unknown:
      raise DataError(f'{root!r} has class folders the training set does not have: '
                      f'{unknown[:5]}{" ..." if len(unknown) > 5 else ""}. Training and '
                      'evaluation folders must name the same classes.')
    paths, labels = [], []
    for name in found:
      for entry in sorted(os.scandir(os.path.join(root, name)), key=lambda e: e.name):
        if entry.is_file() and _is_image(entry.name):
          paths.append(entry.path)
          labels.append(index[name])
    if not paths:
      raise DataError(f'{root!r} holds no images ({", ".join(IMAGE_EXTENSIONS)}) in any of its '
                      f'{len(found)} class folders.')
    self.root = root
    self.key = f'imagefolder:{os.path.realpath(root)}'
    self._paths = np.array(paths)  # one array, not a list of str objects: cheap to send to workers
    self._labels = np.array(labels, dtype=np.int32)


def _devkit_labels(path: str) -> list[str]:
  """Synsets of the devkit's ground truth: line i is the ILSVRC2012_ID of validation image i+1."""
  meta = os.path.join(os.path.dirname(path), 'meta.mat')
  if not os.path.exists(meta):
    raise DataError(f'The devkit ground truth {path!r} numbers classes by ILSVRC2012_ID, which '
                    f'the devkit\'s meta.mat maps to synsets, but there is no {meta!r}. Keep the '
                    'devkit\'s data/ folder together (ground truth and meta.mat side by side), '
                    'or pass a CSV of file name,synset as data.val_labels.')
  from scipy import io as sio  # pylint: disable=g-import-not-at-top  (only for the devkit)
  synsets = sio.loadmat(meta, squeeze_me=True)['synsets']
  wnid = {int(s['ILSVRC2012_ID']): str(s['WNID']) for s in synsets if int(s['num_children']) == 0}
  with open(path) as f:
    ids = [int(line) for line in f if line.strip()]
  missing = sorted(set(ids) - set(wnid))
  if missing:
    raise DataError(f'{path!r} uses ILSVRC2012_IDs {missing[:5]} that {meta!r} does not list as '
                    'leaf synsets: the two files come from different devkits.')
  return [wnid[i] for i in ids]


def _csv_labels(path: str) -> dict[str, str]:
  """`name,synset` rows; the synset may be the first word of the column (LOC_val_solution.csv)."""
  out = {}
  with open(path, newline='') as f:
    for row in csv.reader(f):
      if len(row) < 2 or not row[1].strip():
        continue
      name, synset = row[0].strip(), row[1].split()[0]
      if synset.startswith('n') and synset[1:].isdigit():  # skips a header row
        out[os.path.splitext(name)[0]] = synset
  return out


class ImageNetVal(_ImageFiles):
  """ILSVRC-2012 validation as distributed: a flat folder of images and a label file.

  `labels_file` is either the devkit's `ILSVRC2012_validation_ground_truth.txt` (with the
  devkit's `meta.mat` beside it; line i labels the i-th file in sorted order,
  ILSVRC2012_val_00000001.JPEG first) or a CSV of file name -> synset.
  """

  def __init__(self, root: str, labels_file: str, class_names: Sequence[str]):
    root, labels_file = os.path.expanduser(root), os.path.expanduser(labels_file)
    if not os.path.isdir(root):
      raise DataError(f'No validation folder at {root!r}: expected the 50,000 ILSVRC-2012 '
                      'validation JPEGs in one flat folder. Set --config.data.val_dir.')
    if not os.path.exists(labels_file):
      raise DataError(f'No validation label file at {labels_file!r}. Pass the devkit\'s '
                      'data/ILSVRC2012_validation_ground_truth.txt (meta.mat beside it) or a CSV '
                      'of file name,synset as --config.data.val_labels.')
    files = sorted(e.name for e in os.scandir(root) if e.is_file() and _is_image(e.name))
    if not files:
      raise DataError(f'{root!r} holds no images ({", ".join(IMAGE_EXTENSIONS)}).')
    if labels_file.lower().endswith('.csv'):
      by_name = _csv_labels(labels_file)
      unlabelled = [f for f in files if os.path.splitext(f)[0] not in by_name]
      if unlabelled:
        raise DataError(f'{len(unlabelled)} images in {root!r} have no row in {labels_file!r} '
                        f'(e.g. {unlabelled[:3]}): the label file is for another folder.')
      synsets = [by_name[os.path.splitext(f)[0]] for f in files]
    else:
      synsets = _devkit_labels(labels_file)
      if len(synsets) != len(files):
        raise DataError(f'{labels_file!r} labels {len(synsets)} images but {root!r} holds '
                        f'{len(files)}: the devkit ground truth labels the complete, unrenamed '
                        'validation folder, one line per file in sorted order.')
    self.class_names = list(class_names)
    index = _class_index(self.class_names)
    unknown = sorted(set(synsets) - set(index))
    if unknown:
      raise DataError(f'{labels_file!r} names synsets the training set does not have: '
                      f'{unknown[:5]}. Training and validation must name the same classes.')
    self.root = root
    self.key = f'imagenetval:{os.path.realpath(root)}'
    self._paths = np.array([os.path.join(root, f) for f in files])
    self._labels = np.array([index[s] for s in synsets], dtype=np.int32)


def _tfds_build_hint(name: str, data_dir: str) -> str:
  manual = (f' (ImageNet needs its manual download in {data_dir}/downloads/manual first)'
            if name.startswith('imagenet2012') else '')
  return ("Build it once in ArrayRecord format: pip install -e '.[tfds]' (TensorFlow, which only "
          f'the build needs), then `tfds build {name} --file_format=array_record '
          f'--data_dir={data_dir}`{manual}, and set --config.data.tfds_data_dir={data_dir}.')


class TFDS:
  """A TFDS dataset in ArrayRecord format (`tfds.data_source`), images left encoded.

  Prepare it once with TFDS (`tfds build imagenet2012 --file_format=array_record`, the manual
  download in `<data_dir>/downloads/manual`); reading needs no TensorFlow. A dataset that is not
  prepared is reported, never downloaded or generated here.
  """

  def __init__(self, name: str, split: str, data_dir: str | None = None,
               image_key: str = 'image', label_key: str = 'label'):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (slow import)
    data_dir = os.path.abspath(os.path.expanduser(data_dir)) if data_dir else None
    where = data_dir or os.path.expanduser(os.environ.get('TFDS_DATA_DIR',
                                                          '~/tensorflow_datasets'))
    try:
      # tfds.data_source generates a dataset it does not find: ask first whether it is there.
      prepared = tfds.builder(name, data_dir=data_dir).is_prepared()
    except Exception as e:  # an unknown name, a damaged dataset_info.json...
      raise DataError(f'No TFDS dataset {name!r} in {where!r} ({type(e).__name__}: '
                      f'{str(e).splitlines()[0][:200]}). {_tfds_build_hint(name, where)}') from e
    if not prepared:
      raise DataError(f'TFDS dataset {name!r} is not prepared in {where!r}. '
                      f'{_tfds_build_hint(name, where)}')
    try:
      self._source = tfds.data_source(name, split=split, data_dir=data_dir, download=False,
                                      decoders={image_key: tfds.decode.SkipDecoding()})
    except Exception as e:  # TFDS raises several types: no such split, another file format...
      raise DataError(
          f'Cannot read TFDS dataset {name!r} split {split!r} from {where!r} '
          f'({type(e).__name__}: {str(e)[:300]}). It must be prepared in ArrayRecord format; '
          f'{_tfds_build_hint(name, where)}') from e
    self.class_names = list(self._source.dataset_info.features[label_key].names)
    self._name, self._split, self._image_key, self._label_key = name, split, image_key, label_key
    self.key = f'tfds:{name}/{split}@{data_dir}'

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict:
    record = self._source[index]
    name = record.get('file_name', f'{self._name}/{self._split}[{index}]')
    return {'image_bytes': record[self._image_key], 'label': np.int32(record[self._label_key]),
            'name': name.decode() if isinstance(name, bytes) else str(name)}

  def __repr__(self) -> str:
    return (f'TFDS({self._name!r}, {self._split!r}, {len(self)} images, '
            f'{len(self.class_names)} classes)')


class FirstPerClass:
  """The first `n` records of each class of `source`, in the source's order: a trial run's data.

  The labels come from `source.labels` where the source lists them (image folders), else from
  reading the records in order until every class has `n`.
  """

  def __init__(self, source, n: int):
    labels = getattr(source, 'labels', None)
    counts = np.zeros(len(source.class_names), np.int64)
    keep = []
    for i in range(len(source)):
      label = int(labels[i] if labels is not None else source[i]['label'])
      if counts[label] < n:
        counts[label] += 1
        keep.append(i)
        if labels is None and counts.min() >= n:
          break
    self._source, self._index, self._n = source, np.array(keep, np.int64), n
    self.class_names = source.class_names
    self.key = f'{source.key}[first {n} per class]'
    if labels is not None:
      self.labels = np.asarray(labels)[self._index]

  def __len__(self) -> int:
    return len(self._index)

  def __getitem__(self, index: int) -> dict:
    return self._source[int(self._index[index])]

  def __repr__(self) -> str:
    return f'{self._source!r}, the first {self._n} of each class ({len(self)} images)'


# A packed record: label (int32), name length (uint16), name (UTF-8), then the JPEG bytes.
_HEADER = struct.Struct('<iH')


def pack_record(image_bytes: bytes, label: int, name: str) -> bytes:
  name_bytes = name.encode()[:65535]
  return _HEADER.pack(label, len(name_bytes)) + name_bytes + image_bytes


def unpack_record(record: bytes) -> dict:
  label, n = _HEADER.unpack_from(record)
  start = _HEADER.size + n
  return {'image_bytes': record[start:], 'label': np.int32(label),
          'name': record[_HEADER.size:start].decode()}


def packed_shards(root: str, split: str) -> list[str]:
  return sorted(glob.glob(os.path.join(os.path.expanduser(root), f'{split}-*.array_record')))


class Packed:
  """`alexnet_jax.prepare`'s output: ArrayRecord shards `<split>-NNNNN-of-NNNNN.array_record` of
  256x256 JPEGs with their labels, and `classes.txt` (one synset per line, label order)."""

  def __init__(self, root: str, split: str):
    import grain  # pylint: disable=g-import-not-at-top
    root = os.path.expanduser(root)
    shards = packed_shards(root, split)
    classes = os.path.join(root, 'classes.txt')
    if not shards or not os.path.exists(classes):
      raise DataError(f'No packed {split!r} split in {root!r} (expected {split}-*.array_record '
                      'and classes.txt). Write it once with `python -m alexnet_jax.prepare '
                      f'--config=CONFIG --out={root}`, or set --config.data.packed_dir.')
    with open(classes) as f:
      self.class_names = [line.strip() for line in f if line.strip()]
    self._source = grain.sources.ArrayRecordDataSource(shards)
    self.root, self._split = root, split
    self.key = f'packed:{os.path.realpath(root)}/{split}'

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict:
    return unpack_record(self._source[index])

  def __repr__(self) -> str:
    return (f'Packed({self.root!r}, {self._split!r}, {len(self)} images, '
            f'{len(self.class_names)} classes)')


# ---------------------------------------------------------------------------------------------
# The sources a config names.
# ---------------------------------------------------------------------------------------------

SOURCES = ('imagefolder', 'tfds', 'packed', 'demo')


def _dirs(config: ml_collections.ConfigDict) -> tuple[str, str]:
  if config.source == 'demo':
    root = drawn_shapes.ensure(config.demo_dir, config.demo_train_per_class,
                            config.demo_val_per_class, config.demo_image_size)
    return os.path.join(root, 'train'), os.path.join(root, 'val')
  return config.train_dir, config.val_dir


def _missing(config, split: str, path: str) -> DataError:
  variable = config.get('root_env', '')  # the config's own (older checkpoints' configs: none)
  folders = ' and '.join(f'{os.path.basename(os.path.normpath(d))}/'
                         for d in (config.train_dir, config.val_dir))
  set_variable = (f', or set {variable}, which this config reads, to the folder holding {folders}'
                  if variable else '')
  return DataError(
      f'No {split} images at {os.path.abspath(os.path.expanduser(path))!r}. '
      f'data.source={config.source!r} reads an '
      'ImageFolder tree: one sub-folder per class (ILSVRC-2012 synset ids such as n01440764 '
      'for ImageNet), the JPEGs inside. Download ILSVRC-2012 from image-net.org, extract the '
      'training archive into such folders, then pass --config.data.train_dir=/path/to/train '
      '--config.data.val_dir=/path/to/val (the validation images sorted into the same folders, '
      'or the flat folder as distributed with --config.data.val_labels=LABEL_FILE)'
      f'{set_variable}. Other layouts: data.source=tfds or packed.')


def train_source(config: ml_collections.ConfigDict):
  """The training split of the dataset `config` (the config's `data` section) names."""
  if config.source == 'tfds':
    return TFDS(config.tfds_name, config.tfds_train_split, config.tfds_data_dir or None)
  if config.source == 'packed':
    return Packed(config.packed_dir, 'train')
  path = _dirs(config)[0]
  if not os.path.isdir(os.path.expanduser(path)):
    raise _missing(config, 'training', path)
  return ImageFolder(path)


def eval_source(config: ml_collections.ConfigDict, class_names):
  """The evaluation split, its labels numbered by the training split's `class_names`."""
  if config.source == 'tfds':
    src = TFDS(config.tfds_name, config.tfds_eval_split, config.tfds_data_dir or None)
  elif config.source == 'packed':
    src = Packed(config.packed_dir, 'val')
  else:
    path = _dirs(config)[1]
    if not os.path.isdir(os.path.expanduser(path)):
      raise _missing(config, 'validation', path)
    if config.source == 'imagefolder' and config.val_labels:
      return ImageNetVal(path, config.val_labels, class_names)
    return ImageFolder(path, class_names=class_names)
  if list(src.class_names) != list(class_names):
    raise DataError(f'{src!r} numbers its classes differently from the training split; both '
                    'splits must come from the same dataset.')
  return src
