"""The packed format: any source converted once into ArrayRecord shards of 256x256 JPEGs.

The paper's offline step (Section 2: shorter side to 256, central 256x256 patch) is done once,
here, instead of in every epoch; training then decodes a small JPEG per image and reads it by
random access. Run

    python -m alexnet_jax.prepare --config=configs/paper.py --out=/data/imagenet_packed

and train with --config.data.source=packed --config.data.packed_dir=/data/imagenet_packed.
--max_images=N packs only the first N images of each class of each split: a small copy for a
trial run (its statistics are those of the images packed).
The folder holds `train-NNNNN-of-NNNNN.array_record` and `val-...` shards (records as
`sources.pack_record` writes them), `classes.txt` (the label map: one synset per line, in label
order), `stats.npz` (mean image and RGB PCA of every packed training image) and `info.json`
(counts, settings and the files skipped as undecodable), written last.
"""

import functools
import json
import math
import os
import shutil

import grain
import tqdm
from absl import app, flags, logging
from array_record.python import array_record_module

from alexnet_jax import cli, input_pipeline, sources, stats, transforms
from alexnet_jax.errors import DataError


def _pack_one(example: dict, size: int, quality: int, decoder: str) -> dict:
  """One record of the packed format, or the reason it was skipped."""
  name = str(example.get('name', '?'))
  try:
    out = input_pipeline.read_image(example, size, decoder)
  except transforms.UndecodableImage as e:  # named with the others at the end of the split
    return {'skipped': name, 'reason': str(e)}
  record = sources.pack_record(transforms.encode_jpeg(out['image'], quality), int(out['label']),
                               name)
  return {'record': record, 'image': out['image']}


def pack_split(source, out_dir: str, split: str, *, size: int = 256, quality: int = 95,
               shard_images: int = 5000, decoder: str = 'auto', workers: int = 0,
               threads: int = 8, with_stats: bool = False):
  """Writes `source` as `<out_dir>/<split>-*.array_record`, in source order.

  Returns (images written, {skipped name: reason}, statistics or None).
  """
  n = len(source)
  num_shards = max(1, math.ceil(n / shard_images))
  os.makedirs(out_dir, exist_ok=True)
  for stale in sources.packed_shards(out_dir, split):
    os.remove(stale)
  ds = grain.MapDataset.source(source).map(
      functools.partial(_pack_one, size=size, quality=quality, decoder=decoder))
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads))
  it = input_pipeline.in_workers(it, workers)
  acc = stats.Accumulator(size) if with_stats else None
  skipped, written, writer, shard = {}, 0, None, -1
  with tqdm.tqdm(total=n, desc=f'packing {split}', unit='img') as bar:
    for i, item in enumerate(it):
      if i // shard_images != shard:  # shard k holds source records [k * shard_images, ...)
        if writer:
          writer.close()
        shard = i // shard_images
        path = os.path.join(out_dir, f'{split}-{shard:05d}-of-{num_shards:05d}.array_record')
        # One record per group: random access. Uncompressed: zstd saves nothing on JPEG bytes
        # and slows every read (BENCHMARKS.md, "Input pipeline").
        writer = array_record_module.ArrayRecordWriter(path, 'group_size:1,uncompressed')
      if 'skipped' in item:
        skipped[item['skipped']] = item['reason']
      else:
        writer.write(item['record'])
        written += 1
        if acc:
          acc.add(item['image'][None])
      bar.update()
  writer.close()
  if skipped:
    logging.warning('%s: %d of %d files were skipped as undecodable and are not in the packed '
                    'split: %s', split, len(skipped), n,
                    '; '.join(f'{k} ({v})' for k, v in sorted(skipped.items())))
  return written, skipped, (acc.result() if acc else None)


def prepare(data_config, out_dir: str, splits=('train', 'val'), max_images: int = 0) -> dict:
  """Packs the train and/or val split of the dataset `data_config` names (with max_images > 0,
  the first max_images of each class); returns info.json."""
  if data_config.source == 'packed':
    raise DataError('data.source is already "packed": point the config at the original '
                    'images (imagefolder or tfds) to pack them.')
  # The images are found before anything is written: a missing dataset leaves no folder behind.
  train_src = sources.train_source(data_config)
  split_sources = {split: train_src if split == 'train' else
                   sources.eval_source(data_config, train_src.class_names) for split in splits}
  if max_images > 0:
    split_sources = {k: sources.FirstPerClass(src, max_images) for k, src in split_sources.items()}
  out_dir = os.path.expanduser(out_dir)
  info_path = os.path.join(out_dir, 'info.json')
  size, d = data_config.resize_size, data_config
  info = {'size': size, 'quality': d.packed_quality, 'classes': len(train_src.class_names),
          'max_images_per_class': max_images, 'splits': {}}
  created = not os.path.exists(out_dir)
  try:
    os.makedirs(out_dir, exist_ok=True)
    if os.path.exists(info_path):
      with open(info_path) as f:
        old = json.load(f)
      if all(old.get(k, 0) == info[k]
             for k in ('size', 'quality', 'classes', 'max_images_per_class')):
        info['splits'] = old['splits']  # splits packed earlier with the same settings stay listed
      os.remove(info_path)  # incomplete until rewritten at the end
    with open(os.path.join(out_dir, 'classes.txt'), 'w') as f:
      f.write('\n'.join(train_src.class_names) + '\n')
  except OSError as e:
    if created:  # nothing of the user's was there
      shutil.rmtree(out_dir, ignore_errors=True)
    raise DataError(f'Cannot write the packed dataset to {out_dir}: {e.strerror or e}. Give '
                    '--out a folder this user can create and write to.') from e
  for split, src in split_sources.items():
    written, skipped, norm = pack_split(
        src, out_dir, split, size=size, quality=d.packed_quality,
        shard_images=d.packed_shard_images, decoder=d.decoder, workers=d.workers,
        threads=d.threads, with_stats=split == 'train')
    if norm is not None:
      stats.save(os.path.join(out_dir, stats.PACKED_STATS), stats.Computed(norm))
    info['splits'][split] = {'source': repr(src), 'images': written, 'skipped': skipped}
  with open(info_path, 'w') as f:
    json.dump(info, f, indent=1)
  return info


def main(argv):
  cli.start(argv)
  with cli.one_line_errors():
    info = prepare(flags.FLAGS.config.data, flags.FLAGS.out, tuple(flags.FLAGS.splits),
                   flags.FLAGS.max_images)
  for split, s in info['splits'].items():
    print(f'{split}: {s["images"]} images packed, {len(s["skipped"])} skipped, from {s["source"]}')


if __name__ == '__main__':
  cli.define_config_file(None, 'The config whose data to pack.')
  flags.DEFINE_string('out', None, 'Output folder for the packed shards.')
  flags.DEFINE_list('splits', ['train', 'val'], 'Which splits to pack.')
  flags.DEFINE_integer('max_images', 0, 'Pack only the first N images of each class of each '
                       'split (a trial run\'s data); 0: all.', lower_bound=0)
  flags.mark_flags_as_required(['config', 'out'])
  app.run(main, flags_parser=cli.parse_flags)
