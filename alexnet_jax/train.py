"""Training and evaluation, top to bottom: devices, input, model and state, the steps, the loop.

`train_step(state, batch, rng, norm)` and `eval_step(state, batch, norm)` are pure functions,
jitted once, that make the network's input on the device from uint8 batches: drawn patches for
training, 256x256 images for evaluation (alexnet_jax.augment);
`train_and_evaluate(config, workdir)` is the loop around them: periodic evaluation, the paper's
learning-rate policy, metrics and Orbax checkpoints that a restarted run resumes from.
"""

import contextlib
import dataclasses
import functools
import math
import os
import time

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from absl import logging
from flax.training import train_state

from alexnet_jax import (augment, checkpointing, config_check, diagnostics, fine_tune,
                         input_pipeline, optim, preemption, profiling, sharding, sources, stats,
                         transforms)
from alexnet_jax.errors import UserError
from alexnet_jax.evaluate import top_k_misses
from alexnet_jax.cifar_cnn import CifarCNN
from alexnet_jax.metric_writer import MetricWriter
from alexnet_jax.model import AlexNet, count_params, create_model


class TrainState(train_state.TrainState):
  """step, params and opt_state (the learning rate lives in opt_state.hyperparams)."""


def create_train_state(rng: jax.Array, model: AlexNet | CifarCNN, image_size: int,
                       optim_config: ml_collections.ConfigDict, params=None) -> TrainState:
  """A fresh train state: `params` (an imported network's) or the model's initialization."""
  if params is None:
    images = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    params = jax.jit(lambda r: model.init(r, images, train=False))(rng)['params']
  tx = optim.create(optim_config.base_lr, optim_config.momentum, optim_config.weight_decay,
                    optim_config.decay_biases, optim_config.fc8_lr_scale,
                    optim_config.bias_lr_scale)
  return TrainState.create(apply_fn=model.apply, params=params, tx=tx)


# ---------------------------------------------------------------------------------------------
# The steps.
# ---------------------------------------------------------------------------------------------


def train_step(state: TrainState, batch: dict, rng: jax.Array, norm: stats.Normalization,
               augment_fn=augment.train_inputs,
               skip_nonfinite: bool = False) -> tuple[TrainState, dict]:
  """One SGD step on a batch: softmax cross-entropy averaged over the batch (Section 5).

  `batch` holds the uint8 patches and their draws (alexnet_jax.augment); `augment_fn(batch,
  norm)` makes the network's input from them on the device (Section 4.1). Dropout's key comes
  from `rng` and the step, so a resumed run draws what an uninterrupted one does.

  `metrics['finite']` says whether the loss and the new parameters are all finite: the loop
  checks it before every save and evaluation. With `skip_nonfinite`, a step that is not finite
  leaves the parameters and momentum as they were (the step count still advances).
  """
  dropout_rng = jax.random.fold_in(rng, state.step)
  images = augment_fn(batch, norm)

  def loss_fn(params):
    logits = state.apply_fn({'params': params}, images, train=True,
                            rngs={'dropout': dropout_rng})
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']).mean()
    return loss, logits

  (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  top1, top5 = top_k_misses(logits, batch['label'])
  new_state = state.apply_gradients(grads=grads)
  finite = jnp.isfinite(loss) & jnp.stack(
      [jnp.isfinite(x).all() for x in jax.tree.leaves(new_state.params)]).all()
  if skip_nonfinite:
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = new_state.replace(params=keep(new_state.params, state.params),
                                  opt_state=keep(new_state.opt_state, state.opt_state))
  metrics = {'loss': loss, 'top1_err': top1.mean(), 'top5_err': top5.mean(),
             'lr': optim.get_lr(state.opt_state), 'finite': finite}
  return new_state, metrics


def eval_step(state: TrainState, batch: dict, norm: stats.Normalization,
              view_fn=augment.center_view) -> dict:
  """Sums of loss and errors over the batch's real examples (`mask` marks padding with 0);
  `view_fn(images, norm)` cuts the test view from the uint8 images on the device."""
  logits = state.apply_fn({'params': state.params}, view_fn(batch['image'], norm), train=False)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
  top1, top5 = top_k_misses(logits, batch['label'])
  mask = batch['mask']
  return {'loss': (loss * mask).sum(), 'top1_err': (top1 * mask).sum(),
          'top5_err': (top5 * mask).sum(), 'count': mask.sum()}


def evaluate(jitted_eval_step, state: TrainState, eval_ds, norm: stats.Normalization, *,
             batch_size: int, num_batches: int, batch_sharding: jax.sharding.Sharding) -> dict:
  """Loss, top-1 and top-5 error of the center crops of the whole evaluation set.

  Every process runs the same `num_batches` steps, as the sharded step needs all of them: one
  whose share of the images has run out (a smaller share, or skipped files) feeds padding.
  """
  start, sums = time.perf_counter(), None
  empty = {'image': np.zeros((0,) + norm.mean_image.shape, np.uint8),
           'label': np.zeros((0,), np.int32)}
  batches = iter(eval_ds)
  for _ in range(num_batches):
    batch = input_pipeline.pad_batch(next(batches, empty), batch_size)
    out = jitted_eval_step(state, sharding.shard_batch(batch, batch_sharding), norm)
    sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
  sums = jax.device_get(sums)
  n = float(sums.pop('count'))
  metrics = {k: float(v) / n for k, v in sums.items()}
  seconds = time.perf_counter() - start
  metrics['images_per_sec'], metrics['steps_per_sec'] = n / seconds, num_batches / seconds
  return metrics


# ---------------------------------------------------------------------------------------------
# The loop.
# ---------------------------------------------------------------------------------------------


def device_batches(ds: grain.IterDataset, batch_sharding: jax.sharding.Sharding, ahead: int = 2):
  """An iterator of batches already on the devices: a thread puts them there `ahead` steps
  before the loop takes them. Its checkpointed state (Grain's thread prefetch) is the position
  of the batches the loop has taken, not of those in flight, so a resumed run sees each once."""
  put = functools.partial(sharding.shard_batch, sharding=batch_sharding)
  return iter(grain.experimental.ThreadPrefetchIterDataset(ds.map(put),
                                                           prefetch_buffer_size=ahead))


def _lr_for_policy(optim_config: ml_collections.ConfigDict, policy: optim.PlateauState,
                   step: int, steps_per_epoch: int) -> float:
  if optim_config.lr_policy == 'step' and optim_config.step_steps:
    return optim.step_lr(optim_config.base_lr, step, tuple(optim_config.step_steps),
                         optim_config.lr_factor)
  if optim_config.lr_policy == 'step':
    return optim.step_lr(optim_config.base_lr, step // steps_per_epoch,
                         tuple(optim_config.step_epochs), optim_config.lr_factor)
  return policy.lr  # 'plateau' moves policy.lr after evaluations; 'constant' never does


def resumed_policy(policy: optim.PlateauState, saved_base_lr: float,
                   optim_config: ml_collections.ConfigDict) -> optim.PlateauState:
  """The rule for a resumed run: the rate follows the config's `optim.base_lr`, with the drops
  the run has already made (the same for every policy: 'step' recomputes it from the epoch)."""
  base_lr = optim_config.base_lr
  lr = base_lr * optim_config.lr_factor ** policy.drops
  if base_lr != saved_base_lr:
    logging.warning('optim.base_lr is %g, the checkpoint was trained with %g: the learning rate '
                    'continues at %g (the new base rate after %d drops).', base_lr, saved_base_lr,
                    lr if optim_config.lr_policy != 'step' else base_lr, policy.drops)
  return dataclasses.replace(policy, lr=lr)


class _FiniteCheck:
  """The `finite` flag of every step since the last check, read from the device only when the
  loop is about to log, evaluate or save, so that checking costs no synchronisation per step."""

  def __init__(self, skip: bool):
    self.skip, self.skipped, self._flags = skip, 0, []

  def add(self, step: int, finite: jax.Array) -> None:
    self._flags.append((step, finite))

  def verify(self, mgr, workdir: str, base_lr: float) -> None:
    """Raises UserError naming the first non-finite step, or counts it with `skip`."""
    flags = jax.device_get([f for _, f in self._flags])
    bad = [step for (step, _), ok in zip(self._flags, flags) if not ok]
    self._flags = []
    if not bad:
      return
    if self.skip:
      self.skipped += len(bad)
      logging.warning('Skipped %d non-finite updates (steps %s); %d in this run so far.',
                      len(bad), ', '.join(map(str, bad[:10])), self.skipped)
      return
    mgr.wait_until_finished()
    good = mgr.latest_step()
    where = (f'The newest good checkpoint is step {good} in {workdir}/checkpoints; the same '
             'command resumes from it.' if good is not None else
             'No checkpoint had been written yet, so a rerun starts from the beginning.')
    raise UserError(f'Training diverged at step {bad[0]}: the loss or the parameters became NaN '
                    f'or infinite, and nothing from that step on was saved. {where} Lower '
                    f'optim.base_lr (now {base_lr}; a resumed run follows the new value), or set '
                    '--config.skip_nonfinite_updates=True to skip such steps.')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains per `config`, writing metrics and checkpoints to `workdir`; returns final metrics.

  SIGTERM or SIGINT stop the run after the current step with a checkpoint (`final['stopped']`
  says where); a second run in the same workdir is refused while this one holds it.
  """
  config_check.validate(config)
  workdir = checkpointing.absolute(workdir)
  with preemption.StopRequest() as stop, preemption.WorkdirLock(workdir):
    return _train(config, workdir, stop)


def _train(config: ml_collections.ConfigDict, workdir: str, stop: preemption.StopRequest) -> dict:
  is_main = jax.process_index() == 0

  # --- Devices and mesh: built once; the input, the steps and the checkpoints all use it ------
  mesh = sharding.create_mesh(config)
  batch_sharding, replicated = sharding.batch_sharding(mesh), sharding.replicated(mesh)
  logging.info('Mesh: %s', dict(mesh.shape))

  # --- Input ----------------------------------------------------------------------------------
  train_src = sources.train_source(config.data)
  eval_src = sources.eval_source(config.data, train_src.class_names)
  if len(train_src.class_names) != config.model.num_classes:
    raise UserError(f'The training data {train_src!r} has {len(train_src.class_names)} '
                    f'classes but config field model.num_classes = {config.model.num_classes}. '
                    f'Set --config.model.num_classes={len(train_src.class_names)} or point '
                    'the data config at the intended dataset.')
  if config.batch_size % jax.process_count():
    raise UserError(f'Config field batch_size = {config.batch_size} does not split over '
                    f'{jax.process_count()} processes; use a multiple of the process count.')
  norm = stats.load_or_compute(train_src, config.data)
  local_batch = config.batch_size // jax.process_count()
  data = config.data
  # The host draws the augmentation and sends uint8 patches (alexnet_jax/augment.py); the float
  # arithmetic and the test view are the devices'.
  train_ds = input_pipeline.train_dataset(
      train_src, batch_size=local_batch, seed=config.seed, resize=data.resize_size,
      crop=data.crop_size, flip=data.flip, lighting_std=data.lighting_std, workers=data.workers,
      threads=data.threads, decoder=data.decoder)
  train_iter = device_batches(train_ds, batch_sharding)
  eval_ds = input_pipeline.eval_dataset(eval_src, batch_size=local_batch, resize=data.resize_size,
                                        workers=data.workers, threads=data.threads,
                                        decoder=data.decoder)
  device_norm = jax.device_put(norm, replicated)
  augment_fn = functools.partial(augment.train_inputs, lighting_scale=data.lighting_scale,
                                 dtype=config.model.dtype)
  view_fn = functools.partial(augment.center_view, crop=data.crop_size, dtype=config.model.dtype)
  # The most batches any process's share of the evaluation set can make; all processes run them.
  eval_batches = math.ceil(math.ceil(len(eval_src) / jax.process_count()) / local_batch)
  # An epoch is the images that decode (the statistics pass counted them), not the files.
  images = stats.decodable_images(train_src, data)
  steps_per_epoch = max(1, images // config.batch_size)
  total_steps = (config.num_train_steps if config.num_train_steps > 0
                 else config.num_epochs * steps_per_epoch)
  eval_every = steps_per_epoch if config.eval_every_steps == -1 else config.eval_every_steps
  logging.info('train: %r (%d images decode); eval: %r; %d steps per epoch, %d steps', train_src,
               images, eval_src, steps_per_epoch, total_steps)

  # --- Model and train state ------------------------------------------------------------------
  init_rng, dropout_rng = jax.random.split(jax.random.key(config.seed))
  model = create_model(config.model, config.implementation)
  init = functools.partial(create_train_state, init_rng, model, data.crop_size, config.optim)
  state_sharding = sharding.state_shardings(jax.eval_shape(init), mesh)
  state = jax.jit(init, out_shardings=state_sharding)()  # each device makes only its shards
  policy = optim.PlateauState(lr=config.optim.base_lr)
  finite = _FiniteCheck(config.skip_nonfinite_updates)

  with contextlib.ExitStack() as cleanup:
    # --- Checkpoints: resume from the newest one in the workdir that reads completely ---------
    mgr = checkpointing.manager(workdir, config.keep_checkpoints)
    cleanup.push(_finishing(mgr))
    cleanup.callback(getattr(train_iter, 'close', lambda: None))
    resumed_from = None
    if restored := checkpointing.restore_newest(mgr, state, config, workdir, train_iter):
      resumed_from, state, meta = restored
      saved_base_lr = checkpointing.saved_config(mgr, resumed_from)['optim']['base_lr']
      policy = resumed_policy(optim.PlateauState(**meta['lr_policy']), saved_base_lr,
                              config.optim)
      finite.skipped = meta.get('skipped_updates', 0)
      logging.info('Resumed from step %d in %s', resumed_from, workdir)
      if 'input_processes' in meta:
        _continue_stream(train_iter, resumed_from, meta['input_processes'], config.batch_size)
    elif config.init_from:  # a fine-tune: another checkpoint's parameters, all else fresh
      state = state.replace(params=fine_tune.initial_params(config.init_from, config.model,
                                                            state.params))
    best = checkpointing.best(mgr)
    best_err = best[1] if best else float('inf')

    def meta():
      return {'lr_policy': dataclasses.asdict(policy), 'class_names': train_src.class_names,
              'decoder': transforms.decoder_name(data.decoder), 'skipped_updates': finite.skipped}

    def save(step, val_top1_err=None, wait=False):
      finite.verify(mgr, workdir, config.optim.base_lr)  # never a checkpoint of a diverged run
      checkpointing.save(mgr, step, state, config, meta(), norm, train_iter,
                         val_top1_err=val_top1_err, wait=wait)

    train_fn = functools.partial(train_step, augment_fn=augment_fn,
                                 skip_nonfinite=config.skip_nonfinite_updates)
    options = model.implementation.compiler_options  # e.g. XLA:CPU's convolution kernels
    jitted_train_step = sharding.jit(train_fn, mesh,
                                     (state_sharding, batch_sharding, replicated, replicated),
                                     (state_sharding, replicated), donate_argnums=0,
                                     compiler_options=options)
    jitted_eval_step = sharding.jit(functools.partial(eval_step, view_fn=view_fn), mesh,
                                    (state_sharding, batch_sharding, replicated), replicated,
                                    compiler_options=options)
    # Compiled on its first call: a run with diagnostics off never builds it.
    jitted_diagnose = sharding.jit(
        functools.partial(diagnostics.diagnose, augment_fn=augment_fn), mesh,
        (state_sharding, batch_sharding, replicated, replicated), replicated,
        compiler_options=options)
    death = diagnostics.DeathWatch()
    profile = profiling.StepProfile(config.get('profile_steps', ''), workdir)
    cleanup.callback(profile.close)
    writer = MetricWriter(workdir, enabled=is_main, resume_step=resumed_from)
    cleanup.callback(writer.close)
    writer.write_json('model.json', {'arch': config.model.get('arch', 'alexnet'),
                                     'params': count_params(state.params)})
    step = int(state.step)
    if step >= total_steps:
      logging.info('The run in %s has already trained its %d steps.', workdir, total_steps)
      return writer.final_records()
    current_lr = float(optim.get_lr(state.opt_state))
    final = {}

    # --- Loop ---------------------------------------------------------------------------------
    history, clock = [], _Clock(step)
    stop.loop_started()
    with tqdm.tqdm(total=total_steps, initial=step, desc='train', unit='step',
                   disable=None if is_main else True) as bar:
      while step < total_steps:
        lr = _lr_for_policy(config.optim, policy, step, steps_per_epoch)
        if lr != current_lr:  # a Python float: no device round trip per step
          state = state.replace(opt_state=optim.set_lr(state.opt_state, lr))
          current_lr = lr
        profile.before(step + 1)  # the trace includes the input the step waits for
        batch = next(train_iter)
        if config.diagnostics_every_steps and (step + 1) % config.diagnostics_every_steps == 0:
          # What update step + 1 does to each layer, logged under that step (before it runs).
          diag = jax.device_get(jitted_diagnose(state, batch, dropout_rng, device_norm))
          writer.write('diag', step + 1, (step + 1) / steps_per_epoch, diag)
          death.check(step + 1, diag)
        with profile.annotation(step + 1):
          state, metrics = jitted_train_step(state, batch, dropout_rng, device_norm)
        step += 1
        profile.after(step, state)
        finite.add(step, metrics.pop('finite'))
        history.append(metrics)
        bar.update()
        stopping = stop.should_stop(step)
        last = step == total_steps

        if step % config.log_every_steps == 0 or last or stopping:
          finite.verify(mgr, workdir, config.optim.base_lr)
          values = jax.device_get(history)
          train_metrics = {k: float(np.nanmean([v[k] for v in values])) for k in values[0]}
          train_metrics.update(clock.rates(step, config.batch_size, total_steps))
          if finite.skip:
            train_metrics['skipped_updates'] = finite.skipped
          writer.write('train', step, step / steps_per_epoch, train_metrics)
          bar.set_postfix(loss=f'{train_metrics["loss"]:.3f}', lr=f'{train_metrics["lr"]:.2g}')
          final['train'] = train_metrics
          history = []

        val_err = None
        if (step % eval_every == 0 or last) and not stopping:
          with clock.paused(state):
            finite.verify(mgr, workdir, config.optim.base_lr)  # never evaluate a diverged net
            val = evaluate(jitted_eval_step, state, eval_ds, device_norm, batch_size=local_batch,
                           num_batches=eval_batches, batch_sharding=batch_sharding)
            val['lr'] = float(optim.get_lr(state.opt_state))
            writer.write('val', step, step / steps_per_epoch, val)
          final['val'], val_err = val, val['top1_err']
          if config.optim.lr_policy == 'plateau':
            policy = optim.plateau_update(
                policy, val['top1_err'], patience=config.optim.plateau_patience,
                factor=config.optim.lr_factor, max_drops=config.optim.max_lr_drops,
                min_delta=config.optim.plateau_min_delta)

        # A new best validation error is saved at once, and kept beside the newest checkpoints.
        improved = val_err is not None and val_err < best_err
        if step % config.checkpoint_every_steps == 0 or last or stopping or improved:
          with clock.paused(state):
            save(step, val_err, wait=stopping)
          best_err = min(best_err, val_err) if val_err is not None else best_err

        if stopping:
          final['stopped'] = {'signal': stop.signal_name, 'step': step,
                              'checkpoint': os.path.join(workdir, 'checkpoints', str(step))}
          logging.warning('%s: stopped after step %d with a checkpoint; the same command '
                          'resumes.', stop.signal_name, step)
          break
    return final


def _continue_stream(train_iter, step: int, writers: int, batch_size: int) -> None:
  """The input of a run resumed on another number of processes than wrote its checkpoint: the
  stream from the position where `step` begins, the same for every process count."""
  processes = lambda n: f'{n} process' + ('es' if n > 1 else '')
  written = (f'The checkpoint of step {step} was written by {processes(writers)} and this run '
             f'has {jax.process_count()}: the model and optimizer state are restored exactly')
  if input_pipeline.start_at(train_iter, step):
    logging.warning('%s, and the input continues from position %d of the shuffled stream, '
                    'where step %d begins with any number of processes. Images that a process '
                    'had read past that position, to replace files it skipped (each named in '
                    'the log), are seen again.', written, step * batch_size, step + 1)
  else:
    logging.warning('%s, but input worker processes (data.workers > 0) keep a position that '
                    'does not carry over, so the input starts the shuffled stream again from '
                    'its beginning (the first epoch\'s order: %d steps of images seen again). '
                    'With data.workers=0 the stream continues exactly.', written, step)


def _finishing(mgr):
  """An exit callback: waits for the last save and closes the manager. While another error is
  already on its way out, a failure here is logged rather than put in its place."""

  def finish(kind, error, traceback):
    del kind, traceback
    try:
      checkpointing.finish(mgr)
    except Exception as e:  # pylint: disable=broad-except
      if error is None:
        raise
      logging.warning('While stopping, the last checkpoint could not be finished: %s', e)
    return False

  return finish


class _Clock:
  """Training throughput that leaves out the time spent evaluating and saving."""

  def __init__(self, step: int):
    self._start, self._step, self._paused = time.perf_counter(), step, 0.0

  @contextlib.contextmanager
  def paused(self, queued=None):
    """Leaves out the time of the block, once the steps still queued on the device (`queued`,
    their output) are done: their compute is training time."""
    jax.block_until_ready(queued)
    start = time.perf_counter()
    try:
      yield
    finally:
      self._paused += time.perf_counter() - start

  def rates(self, step: int, batch_size: int, total_steps: int) -> dict:
    """Steps and images per second since the last call, and the time left at that rate."""
    seconds = max(time.perf_counter() - self._start - self._paused, 1e-9)
    steps_per_sec = (step - self._step) / seconds
    self._start, self._step, self._paused = time.perf_counter(), step, 0.0
    return {'steps_per_sec': steps_per_sec, 'images_per_sec': steps_per_sec * batch_size,
            'eta_s': (total_steps - step) / max(steps_per_sec, 1e-9)}
