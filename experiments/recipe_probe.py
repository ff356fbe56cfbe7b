"""The first steps of the paper's recipe on few classes: what each step does to the logits and
to the ReLUs, variant by variant.

    python -m experiments.recipe_probe --variants=literal,literal_1000_random,bias_0.1,config
    python -m experiments.recipe_probe --variants=literal --steps=20 --batch=32
    python -m experiments.recipe_probe --config=configs/imagenette.py \
        --config.data.train_dir=../shared/data/imagenette/train --variants=config

Each variant builds the state its config creates (`train.create_train_state`) and runs the
project's own jitted `train_step`, with the training augmentation (drawn by the pipeline), on the
same real training batches (the project's input pipeline, seed 0). After every step a fixed probe
batch (64 training images spread over the classes, center crops, no dropout) is run forward:

  - `|dz|`: the mean absolute change of its logits over that step;
  - `d margin`: the mean change of the true-class logit minus the mean logit (what the softmax
    sees; positive is learning);
  - dead: per hidden layer, the fraction of units <= 0 for all 64 images at every position;
  - `|du fc8|`: the norm of the update fc8's parameters received.

The variants (`VARIANTS`) change one thing each against the literal recipe (the config with
the paper's `model.positive_bias` and `optim.fc8_lr_scale`): the class count (1000 outputs,
with the labels remapped at random into all 1000 classes, so that a class is the true label of
0.13 images per batch as on ImageNet, or the 10 real labels among 1000 outputs), the biases of 1
(Caffe's 0.1), the batch size, a learning-rate warm-up, and fc8's rate; 'config' is the config
as given. Results and their reading are in experiments/README.md.
"""

import dataclasses
import functools
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
# pylint: disable=g-import-not-at-top
from alexnet_jax import augment, diagnostics, input_pipeline, logs, sources, stats, train
from alexnet_jax.model import create_model
from experiments import machine
# pylint: enable=g-import-not-at-top

_CONFIG = config_flags.DEFINE_config_file(
    'config', os.path.join(REPO, 'configs', 'imagenette.py'),
    'The recipe every variant starts from (its data.train_dir is read).')
_VARIANTS = flags.DEFINE_list('variants', ['literal', 'config'], 'Names in VARIANTS to run.')
_STEPS = flags.DEFINE_integer('steps', 8, 'Training steps per variant.')
_BATCH = flags.DEFINE_integer('batch', None, 'Images per step for every variant (default: each '
                              "variant's own, else config.batch_size).")
_PROBE = flags.DEFINE_integer('probe_images', 64, 'Images in the fixed probe batch.')
_JSON = flags.DEFINE_string('json', None, 'Also write every row here.')


@dataclasses.dataclass(frozen=True)
class Variant:
  """One change against the literal recipe. `overrides`: dotted config fields; `classes`:
  outputs of fc8 (None: the config's); `random_labels`: labels drawn uniformly among all
  `classes`; `warmup_steps`: the rate ramps linearly from base_lr / warmup_steps to base_lr."""
  overrides: tuple[tuple[str, object], ...] = ()
  classes: int | None = None
  random_labels: bool = False
  batch: int | None = None
  warmup_steps: int = 0


# The paper's values of the fields a config may adapt; every variant but 'config' starts here.
_LITERAL = (('optim.fc8_lr_scale', 1.0), ('model.positive_bias', 1.0))
VARIANTS = {
    'config': Variant(),  # --config as it is (configs/imagenette.py: its adaptation)
    'literal': Variant(_LITERAL),
    'literal_1000_random': Variant(_LITERAL, classes=1000, random_labels=True),
    'literal_1000_real': Variant(_LITERAL, classes=1000),
    'literal_batch_32': Variant(_LITERAL, batch=32),
    'literal_batch_256': Variant(_LITERAL, batch=256),
    'literal_warmup_100': Variant(_LITERAL, warmup_steps=100),
    'bias_0.1': Variant(_LITERAL + (('model.positive_bias', 0.1),)),
    'bias_0.1_batch_32': Variant(_LITERAL + (('model.positive_bias', 0.1),), batch=32),
    'fc8_lr_0.01': Variant(_LITERAL + (('optim.fc8_lr_scale', 0.01),)),
}


def variant_config(base: ml_collections.ConfigDict, v: Variant) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(base.to_dict())
  for field, value in v.overrides:
    *parents, leaf = field.split('.')
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  if v.classes:
    config.model.num_classes = v.classes
  if v.batch:
    config.batch_size = v.batch
  return config


def probe_batch(source, norm, n: int, resize: int, crop: int) -> dict:
  """`n` training images spread evenly over the (class-sorted) source, center-cropped."""
  idx = np.linspace(0, len(source) - 1, n).astype(int)
  batch = input_pipeline.decode_resize_crop_batch([source[int(i)] for i in idx], resize)
  images = augment.center_view(jnp.asarray(batch['image']), norm, crop=crop)
  return {'image': images, 'label': jnp.asarray(batch['label'])}


def relabel(labels: np.ndarray, classes: int, seed: int) -> np.ndarray:
  """Labels drawn uniformly among `classes`, fixed by `seed`: each class is the true label of
  batch / classes images per batch, as on ImageNet."""
  return np.random.default_rng(seed).integers(0, classes, len(labels)).astype(np.int32)


def run_variant(name: str, v: Variant, base: ml_collections.ConfigDict, source, norm,
                steps: int) -> list[dict]:
  config = variant_config(base, v)
  if _BATCH.value:
    config.batch_size = _BATCH.value
  d, o = config.data, config.optim
  model = create_model(config.model)
  init_rng, dropout_rng = jax.random.split(jax.random.key(config.seed))
  state = train.create_train_state(init_rng, model, d.crop_size, o)
  augment_fn = functools.partial(augment.train_inputs, lighting_scale=d.lighting_scale,
                                 dtype=config.model.dtype)
  step_fn = jax.jit(functools.partial(train.train_step, augment_fn=augment_fn))
  dnorm = jax.device_put(norm)
  probe = probe_batch(source, dnorm, _PROBE.value, d.resize_size, d.crop_size)
  if v.random_labels:
    probe['label'] = jnp.asarray(relabel(np.asarray(probe['label']), config.model.num_classes, 0))

  @jax.jit
  def look(params, images):
    logits, inputs = diagnostics.forward(state.apply_fn, params, images, train=False)
    return logits, diagnostics.dead_fractions(inputs)

  batches = iter(input_pipeline.train_dataset(
      source, batch_size=config.batch_size, seed=0, resize=d.resize_size, crop=d.crop_size,
      flip=d.flip, lighting_std=d.lighting_std, threads=d.threads))
  logits, dead = look(state.params, probe['image'])
  rows = [{'variant': name, 'step': 0, 'batch': config.batch_size, **_dead(dead)}]
  start = time.perf_counter()
  for i in range(steps):
    lr = o.base_lr * (min(1.0, (i + 1) / v.warmup_steps) if v.warmup_steps else 1.0)
    batch = next(batches)
    if v.random_labels:
      batch = {**batch, 'label': relabel(batch['label'], config.model.num_classes, 1 + i)}
    fc8 = state.params['fc8']
    state, metrics = step_fn(state, batch, dropout_rng, dnorm, lr)
    new_logits, dead = look(state.params, probe['image'])
    dz = new_logits - logits
    true = lambda z: jnp.take_along_axis(z, probe['label'][:, None], 1)[:, 0] - z.mean(-1)
    rows.append({
        'variant': name, 'step': i + 1, 'batch': config.batch_size,
        'loss': float(metrics['loss']), 'top1_err': float(metrics['top1_err']),
        'lr': float(metrics['lr']), 'mean_abs_dlogit': float(jnp.abs(dz).mean()),
        'd_margin': float((true(new_logits) - true(logits)).mean()),
        'fc8_update_norm': float(update_norm(state.params['fc8'], fc8)), **_dead(dead)})
    logits = new_logits
    print(_row_line(rows[-1]), flush=True)
  rows[-1]['seconds'] = time.perf_counter() - start
  return rows


def update_norm(new, old) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum((a - b) ** 2) for a, b in zip(jax.tree.leaves(new),
                                                            jax.tree.leaves(old))))


def _dead(dead: dict) -> dict:
  return {k: float(v) for k, v in dead.items()}


def _row_line(r: dict) -> str:
  dead = ' '.join(f'{k[5:]} {100 * v:3.0f}%' for k, v in r.items() if k.startswith('dead_'))
  return (f'{r["variant"]:>22} step {r["step"]:2d}  loss {r.get("loss", float("nan")):7.3f}  '
          f'|dz| {r.get("mean_abs_dlogit", 0):8.3f}  d margin {r.get("d_margin", 0):+8.3f}  '
          f'|du fc8| {r.get("fc8_update_norm", 0):8.4f}  dead {dead}')


def markdown(rows: list[dict]) -> str:
  """One line per variant: the loss over the steps, the largest logit move, dead fc7 and conv5
  at the end."""
  lines = ['| variant | batch | loss, step 1 → last | max mean abs dz | sum d margin | '
           'max fc8 update | dead conv5 / fc7 at the end |', '| --- | ---: | --- | ---: | ---: | '
           '---: | --- |']
  for name in dict.fromkeys(r['variant'] for r in rows):
    rs = [r for r in rows if r['variant'] == name and r['step'] > 0]
    losses = ' → '.join(f'{r["loss"]:.2f}' for r in rs)
    last, first = rs[-1], [r for r in rows if r['variant'] == name][0]
    lines.append(
        f'| {name} | {last["batch"]} | {losses} | {max(r["mean_abs_dlogit"] for r in rs):.2f} | '
        f'{sum(r["d_margin"] for r in rs):+.2f} | {max(r["fc8_update_norm"] for r in rs):.3f} | '
        f'{100 * first.get("dead_conv5", 0):.0f}% → {100 * last.get("dead_conv5", 0):.0f}% / '
        f'{100 * first.get("dead_fc7", 0):.0f}% → {100 * last.get("dead_fc7", 0):.0f}% |')
  return '\n'.join(lines)


def main(argv):
  del argv
  logs.quiet_library_logs()
  base = _CONFIG.value
  unknown = set(_VARIANTS.value) - set(VARIANTS)
  if unknown:
    raise app.UsageError(f'--variants: {sorted(unknown)} are not among {sorted(VARIANTS)}.')
  source = sources.ImageFolder(base.data.train_dir)
  norm = stats.load_or_compute(source, base.data).norm
  rows, info = [], machine.describe()
  print(machine.one_line(info))
  for name in _VARIANTS.value:
    rows += run_variant(name, VARIANTS[name], base, source, norm, _STEPS.value)
    if _JSON.value:  # after every variant: a long probe stopped early keeps what it measured
      with open(_JSON.value, 'w') as f:
        json.dump({'machine': info, 'rows': rows}, f, indent=1)
  print(markdown(rows))


if __name__ == '__main__':
  app.run(main)
