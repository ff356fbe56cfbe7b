"""Training and evaluation, top to bottom: the steps, then the run around them.

`train_step(state, batch, rng, norm, lr)` and `eval_step(state, batch, norm)` are pure functions,
jitted once, that make the network's input on the device from uint8 batches (alexnet_jax.augment
says why the work is split so).

`train_and_evaluate(config, workdir)` is the run, in three parts:
  * `_setup`: the mesh, shardings, data, step counts and jitted functions, one frozen value;
  * `_restore_or_init`: the newest checkpoint that reads back, or a fresh (or fine-tuned) state;
  * `_loop`: the steps, each followed by the periodic actions `_log`, `_evaluate` and `_save`,
    each with its interval (`_Action`); `_diagnose` looks at the update before it is made.
"""

import contextlib
import dataclasses
import functools
import math
import os
import time
from typing import Callable

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
                         transforms, workdir_lock)
from alexnet_jax.cifar_cnn import CifarCNN
from alexnet_jax.errors import UserError
from alexnet_jax.evaluate import top_k_misses
from alexnet_jax.metric_writer import MetricWriter
from alexnet_jax.model import AlexNet, count_params, create_model, dropout_key


TrainState = train_state.TrainState


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
               lr: jax.Array, augment_fn=augment.train_inputs,
               skip_nonfinite: bool = False) -> tuple[TrainState, dict]:
  """One SGD step on a batch at learning rate `lr`: softmax cross-entropy averaged over the
  batch (Section 5).

  `batch` holds the uint8 patches and their draws (alexnet_jax.augment); `augment_fn(batch,
  norm)` makes the network's input from them on the device (Section 4.1). Dropout's key comes
  from `rng` and the step (model.dropout_key).

  `metrics['finite']` says whether the loss and the new parameters are all finite: the loop
  checks it before every save and evaluation. With `skip_nonfinite`, a step that is not finite
  leaves the parameters and momentum as they were (the step count still advances).
  """
  dropout_rng = dropout_key(rng, state.step)
  images = augment_fn(batch, norm)
  state = state.replace(opt_state=optim.with_rate(state.opt_state, lr))

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
             'lr': jnp.asarray(lr, jnp.float32), 'finite': finite}
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
# The run: setup, restore or initialize, the loop.
# ---------------------------------------------------------------------------------------------


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains per `config`, writing metrics and checkpoints to `workdir`; returns final metrics.

  SIGTERM or SIGINT stop the run after the current step with a checkpoint (`final['stopped']`
  says where); a second run in the same workdir is refused while this one holds it.
  """
  config_check.validate(config)
  workdir = checkpointing.absolute(workdir)
  with preemption.StopRequest() as stop, workdir_lock.WorkdirLock(workdir):
    s = _setup(config, workdir)
    with contextlib.ExitStack() as cleanup:
      cleanup.callback(getattr(s.train_iter, 'close', lambda: None))
      mgr = checkpointing.manager(workdir, config.keep_checkpoints)
      cleanup.push(_finishing(mgr))
      run = _restore_or_init(s, mgr)
      try:
        return _loop(s, run, mgr, stop, cleanup)
      except _Diverged as e:
        raise _diverged_error(e.step, mgr, s) from None


@dataclasses.dataclass(frozen=True)
class _Setup:
  """What stays fixed for the whole run."""
  config: ml_collections.ConfigDict
  workdir: str
  mesh: jax.sharding.Mesh
  batch_sharding: jax.sharding.Sharding
  replicated: jax.sharding.Sharding
  state_sharding: object  # a tree of shardings, as the train state
  class_names: tuple[str, ...]
  norm: stats.Normalization  # on the host, for the checkpoint
  device_norm: stats.Normalization
  train_iter: object  # batches already on the devices; checkpointed with the state
  eval_ds: grain.IterDataset
  local_batch: int  # this process's share of a batch
  eval_batches: int  # the most batches any process's share of the evaluation set makes
  steps_per_epoch: int
  total_steps: int
  eval_every: int
  run_key: jax.Array  # dropout's; see model.dropout_key
  init: Callable[[], TrainState]  # a fresh state, each device making only its shards
  train_step: Callable
  eval_step: Callable
  diagnose: Callable  # compiled on its first call: a run with diagnostics off never builds it


def _setup(config: ml_collections.ConfigDict, workdir: str) -> _Setup:
  mesh = sharding.create_mesh(config)
  batch_sharding, replicated = sharding.batch_sharding(mesh), sharding.replicated(mesh)
  logging.info('Mesh: %s', dict(mesh.shape))

  data = config.data
  train_src = sources.train_source(data)
  eval_src = sources.eval_source(data, train_src.class_names)
  if len(train_src.class_names) != config.model.num_classes:
    raise UserError(f'The training data {train_src!r} has {len(train_src.class_names)} '
                    f'classes but config field model.num_classes = {config.model.num_classes}. '
                    f'Set --config.model.num_classes={len(train_src.class_names)} or point '
                    'the data config at the intended dataset.')
  if config.batch_size % jax.process_count():
    raise UserError(f'Config field batch_size = {config.batch_size} does not split over '
                    f'{jax.process_count()} processes; use a multiple of the process count.')
  statistics = stats.load_or_compute(train_src, data)
  norm = statistics.norm
  local_batch = config.batch_size // jax.process_count()
  train_ds = input_pipeline.train_dataset(
      train_src, batch_size=local_batch, seed=config.seed, resize=data.resize_size,
      crop=data.crop_size, flip=data.flip, lighting_std=data.lighting_std, workers=data.workers,
      threads=data.threads, decoder=data.decoder)
  eval_ds = input_pipeline.eval_dataset(eval_src, batch_size=local_batch, resize=data.resize_size,
                                        workers=data.workers, threads=data.threads,
                                        decoder=data.decoder)
  # An epoch is the images that decode (the statistics pass counted them), not the files.
  images = statistics.decodable(len(train_src))
  steps_per_epoch = max(1, images // config.batch_size)
  total_steps = (config.num_train_steps if config.num_train_steps > 0
                 else config.num_epochs * steps_per_epoch)
  logging.info('train: %r (%d images decode); eval: %r; %d steps per epoch, %d steps', train_src,
               images, eval_src, steps_per_epoch, total_steps)

  init_rng, run_key = jax.random.split(jax.random.key(config.seed))
  model = create_model(config.model, config.implementation)
  init = functools.partial(create_train_state, init_rng, model, data.crop_size, config.optim)
  state_sharding = sharding.state_shardings(jax.eval_shape(init), mesh)
  augment_fn = functools.partial(augment.train_inputs, lighting_scale=data.lighting_scale,
                                 dtype=config.model.dtype)
  view_fn = functools.partial(augment.center_view, crop=data.crop_size, dtype=config.model.dtype)
  impl = model.implementation  # e.g. XLA:CPU's convolution kernels, a compiler option
  step_in = (state_sharding, batch_sharding, replicated, replicated, replicated)
  return _Setup(
      config=config, workdir=workdir, mesh=mesh, batch_sharding=batch_sharding,
      replicated=replicated, state_sharding=state_sharding,
      class_names=tuple(train_src.class_names), norm=norm,
      device_norm=jax.device_put(norm, replicated),
      train_iter=device_batches(train_ds, batch_sharding), eval_ds=eval_ds,
      local_batch=local_batch,
      eval_batches=math.ceil(math.ceil(len(eval_src) / jax.process_count()) / local_batch),
      steps_per_epoch=steps_per_epoch, total_steps=total_steps,
      eval_every=steps_per_epoch if config.eval_every_steps == -1 else config.eval_every_steps,
      run_key=run_key,
      init=impl.jit(init, out_shardings=state_sharding),
      train_step=sharding.jit(
          functools.partial(train_step, augment_fn=augment_fn,
                            skip_nonfinite=config.skip_nonfinite_updates),
          mesh, step_in, (state_sharding, replicated), impl, donate_argnums=0),
      eval_step=sharding.jit(functools.partial(eval_step, view_fn=view_fn), mesh,
                             (state_sharding, batch_sharding, replicated), replicated, impl),
      diagnose=sharding.jit(functools.partial(diagnostics.diagnose, augment_fn=augment_fn), mesh,
                            step_in, replicated, impl))


def device_batches(ds: grain.IterDataset, batch_sharding: jax.sharding.Sharding, ahead: int = 2):
  """An iterator of batches already on the devices: a thread puts them there `ahead` steps
  before the loop takes them. Its checkpointed state (Grain's thread prefetch) is the position
  of the batches the loop has taken, not of those in flight, so a resumed run sees each once."""
  put = functools.partial(sharding.shard_batch, sharding=batch_sharding)
  return iter(grain.experimental.ThreadPrefetchIterDataset(ds.map(put),
                                                           prefetch_buffer_size=ahead))


@dataclasses.dataclass
class _Run:
  """What the loop changes as it goes, and where it writes."""
  state: TrainState
  lr: optim.Constant  # the learning-rate policy: the one owner of the rate
  finite: '_FiniteCheck'
  resumed_from: int | None
  best_err: float  # the lowest validation error saved so far
  mgr: object = None
  writer: MetricWriter | None = None
  bar: tqdm.tqdm | None = None
  clock: '_Clock | None' = None
  step: int = 0
  stopping: bool = False
  val_err: float | None = None  # this step's validation error, where it evaluated
  history: list = dataclasses.field(default_factory=list)  # the train metrics since the last log
  final: dict = dataclasses.field(default_factory=dict)


def _restore_or_init(s: _Setup, mgr) -> _Run:
  """The newest checkpoint in the workdir that reads completely, or else a fresh state (with
  another checkpoint's parameters, for a fine-tune)."""
  config = s.config
  state = s.init()
  lr = optim.learning_rate(config.optim, s.steps_per_epoch)
  finite = _FiniteCheck(config.skip_nonfinite_updates)
  resumed_from = None
  if restored := checkpointing.restore_newest(mgr, state, config, s.workdir, s.train_iter):
    resumed_from, state, meta, saved_config = restored
    lr.restore(meta.get('lr_policy', {}))
    saved_base_lr = saved_config['optim']['base_lr']
    if saved_base_lr != config.optim.base_lr:
      logging.warning('optim.base_lr is %g, the checkpoint was trained with %g: the learning '
                      'rate continues at %g (the new base rate after %d drops).',
                      config.optim.base_lr, saved_base_lr, lr.at(resumed_from),
                      lr.drops(resumed_from))
    finite.skipped = meta.get('skipped_updates', 0)
    logging.info('Resumed from step %d in %s', resumed_from, s.workdir)
    if 'input_processes' in meta:
      _continue_stream(s.train_iter, resumed_from, meta['input_processes'], config.batch_size)
  elif config.init_from:  # a fine-tune: another checkpoint's parameters, all else fresh
    state = state.replace(params=fine_tune.initial_params(config.init_from, config.model,
                                                          state.params))
  best = checkpointing.best(mgr)
  return _Run(state=state, lr=lr, finite=finite, resumed_from=resumed_from,
              best_err=best[1] if best else float('inf'), step=int(state.step))


def _loop(s: _Setup, run: _Run, mgr, stop: preemption.StopRequest,
          cleanup: contextlib.ExitStack) -> dict:
  """The steps, each followed by the actions that are due after it."""
  config = s.config
  is_main = jax.process_index() == 0
  run.mgr = mgr
  run.writer = MetricWriter(s.workdir, enabled=is_main, resume_step=run.resumed_from)
  cleanup.callback(run.writer.close)
  run.writer.write_json('model.json', {'arch': config.model.get('arch', 'alexnet'),
                                       'params': count_params(run.state.params)})
  if run.step >= s.total_steps:
    logging.info('The run in %s has already trained its %d steps.', s.workdir, s.total_steps)
    return run.writer.final_records()
  profile = profiling.StepProfile(config.get('profile_steps', ''), s.workdir)
  cleanup.callback(profile.close)
  death = diagnostics.DeathWatch()
  actions = (_Action(_log, config.log_every_steps, on_stop=True),
             _Action(_evaluate, s.eval_every, on_stop=False),
             _Action(_save, config.checkpoint_every_steps, on_stop=True, also=_improved))
  run.clock = _Clock(run.step)
  stop.loop_started()
  with tqdm.tqdm(total=s.total_steps, initial=run.step, desc='train', unit='step',
                 disable=None if is_main else True) as run.bar:
    while run.step < s.total_steps:
      lr = run.lr.at(run.step)  # a Python float: no device round trip per step
      profile.before(run.step + 1)  # the trace includes the input the step waits for
      batch = next(s.train_iter)
      if config.diagnostics_every_steps and (run.step + 1) % config.diagnostics_every_steps == 0:
        _diagnose(s, run, batch, lr, death)
      with profile.annotation(run.step + 1):
        run.state, metrics = s.train_step(run.state, batch, s.run_key, s.device_norm, lr)
      run.step += 1
      profile.after(run.step, run.state)
      run.finite.add(run.step, metrics.pop('finite'))
      run.history.append(metrics)
      run.bar.update()
      run.stopping, run.val_err = stop.should_stop(run.step), None
      last = run.step == s.total_steps
      for action in actions:
        if action.due(run, last):
          action.act(s, run)
      if run.stopping:
        run.final['stopped'] = {'signal': stop.signal_name, 'step': run.step,
                                'checkpoint': os.path.join(s.workdir, 'checkpoints',
                                                           str(run.step))}
        logging.warning('%s: stopped after step %d with a checkpoint; the same command '
                        'resumes.', stop.signal_name, run.step)
        break
  return run.final


@dataclasses.dataclass(frozen=True)
class _Action:
  """What the loop does after a step whose number `every` divides, after the last step, and,
  `on_stop`, after the step a signal stops the run at; `also(run)` makes it due at other steps."""
  act: Callable[[_Setup, _Run], None]
  every: int
  on_stop: bool
  also: Callable[[_Run], bool] = lambda run: False

  def due(self, run: _Run, last: bool) -> bool:
    if run.stopping:
      return self.on_stop
    return run.step % self.every == 0 or last or self.also(run)


def _log(s: _Setup, run: _Run) -> None:
  """One 'train' row: the mean of the steps' metrics since the last row, and the rate."""
  run.finite.verify()
  values = jax.device_get(run.history)
  row = {k: float(np.nanmean([v[k] for v in values])) for k in values[0]}
  row.update(run.clock.rates(run.step, s.config.batch_size, s.total_steps))
  if run.finite.skip:
    row['skipped_updates'] = run.finite.skipped
  run.writer.write('train', run.step, run.step / s.steps_per_epoch, row)
  run.bar.set_postfix(loss=f'{row["loss"]:.3f}', lr=f'{row["lr"]:.2g}')
  run.final['train'], run.history = row, []


def _evaluate(s: _Setup, run: _Run) -> None:
  """One 'val' row on the whole evaluation set; the learning-rate policy takes its error."""
  with run.clock.paused(run.state):
    run.finite.verify()  # never evaluate a diverged net
    val = evaluate(s.eval_step, run.state, s.eval_ds, s.device_norm, batch_size=s.local_batch,
                   num_batches=s.eval_batches, batch_sharding=s.batch_sharding)
    val['lr'] = run.lr.at(run.step - 1)  # the rate of the step just made
    run.writer.write('val', run.step, run.step / s.steps_per_epoch, val)
  run.final['val'], run.val_err = val, val['top1_err']
  run.lr.evaluated(val['top1_err'])


def _improved(run: _Run) -> bool:
  """A new best validation error is saved at once, and kept beside the newest checkpoints."""
  return run.val_err is not None and run.val_err < run.best_err


def _save(s: _Setup, run: _Run) -> None:
  """A checkpoint of this step (waited for when the run stops); never one of a diverged run."""
  with run.clock.paused(run.state):
    run.finite.verify()
    meta = {'lr_policy': run.lr.state(), 'class_names': list(s.class_names),
            'decoder': transforms.decoder_name(s.config.data.decoder),
            'skipped_updates': run.finite.skipped}
    checkpointing.save(run.mgr, run.step, run.state, s.config, meta, s.norm, s.train_iter,
                       val_top1_err=run.val_err, wait=run.stopping)
  if run.val_err is not None:
    run.best_err = min(run.best_err, run.val_err)


def _diagnose(s: _Setup, run: _Run, batch: dict, lr: float,
              death: diagnostics.DeathWatch) -> None:
  """What the coming update (step + 1) does to each layer, logged under that step before it
  runs."""
  diag = jax.device_get(s.diagnose(run.state, batch, s.run_key, s.device_norm, lr))
  run.writer.write('diag', run.step + 1, (run.step + 1) / s.steps_per_epoch, diag)
  death.check(run.step + 1, diag)


class _Diverged(Exception):
  """A step whose loss or parameters are not finite; `step` is the first such."""

  def __init__(self, step: int):
    super().__init__(step)
    self.step = step


class _FiniteCheck:
  """The `finite` flag of every step since the last check, read from the device only when the
  loop is about to log, evaluate or save, so that checking costs no synchronisation per step."""

  def __init__(self, skip: bool):
    self.skip, self.skipped, self._flags = skip, 0, []

  def add(self, step: int, finite: jax.Array) -> None:
    self._flags.append((step, finite))

  def verify(self) -> None:
    """Raises _Diverged naming the first non-finite step, or counts it with `skip`."""
    flags = jax.device_get([f for _, f in self._flags])
    bad = [step for (step, _), ok in zip(self._flags, flags) if not ok]
    self._flags = []
    if not bad:
      return
    if not self.skip:
      raise _Diverged(bad[0])
    self.skipped += len(bad)
    logging.warning('Skipped %d non-finite updates (steps %s); %d in this run so far.',
                    len(bad), ', '.join(map(str, bad[:10])), self.skipped)


def _diverged_error(step: int, mgr, s: _Setup) -> UserError:
  mgr.wait_until_finished()
  good = mgr.latest_step()
  where = (f'The newest good checkpoint is step {good} in {s.workdir}/checkpoints; the same '
           'command resumes from it.' if good is not None else
           'No checkpoint had been written yet, so a rerun starts from the beginning.')
  return UserError(f'Training diverged at step {step}: the loss or the parameters became NaN '
                   f'or infinite, and nothing from that step on was saved. {where} Lower '
                   f'optim.base_lr (now {s.config.optim.base_lr}; a resumed run follows the new '
                   'value), or set --config.skip_nonfinite_updates=True to skip such steps.')


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
