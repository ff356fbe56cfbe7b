"""One command for a GPU machine: what the step, the input and the recipe do there, in at most
--minutes (10), written to DIR/report.md and DIR/report.json.

    python -m experiments.gpu_report --out=gpu_report
    python -m experiments.gpu_report --out=report --imagenette=/data/imagenette --train_minutes=3

Stages, in order, each a child process with its own time budget; a stage that fails or runs out
of time is reported with its error and the report still completes:

  step        experiments/step_benchmark.py: float32 and bf16, the backend's implementation,
              all-plain and each operation in its other form (alexnet_jax/ops.py), PyTorch
              eager and compile when torch is importable; batch 128, 5 runs of 10 steps. The
              report prints the `implementations.MEASURED` entry these figures support
              (`entry_to_adopt`)
  pack        alexnet_jax.prepare: Imagenette as packed shards, unless --packed holds them
  input       experiments/input_benchmark.py with every core as a worker, over the JPEGs and
              the packed shards
  end_to_end  step_benchmark --data: each dtype's step fed by the real input pipeline from the
              packed shards (all cores but one), against the synthetic batch in the same run
  train       alexnet_jax.main --config=configs/imagenette.py (the paper's recipe and network,
              10 classes) with a profile of a few steps (PROFILE_STEPS, in the run's
              profile/), for the time that is left, sent SIGTERM at the deadline, upon which
              it finishes the step, writes a checkpoint and exits 0; a run that exits otherwise,
              or not within --grace seconds (then killed), is reported as such and its newest
              periodic checkpoint is evaluated
  evaluate    alexnet_jax.evaluate: center-patch and ten-patch error of that checkpoint

Imagenette (`train/` and `val/` of JPEGs) is read from --imagenette, by default
$IMAGENETTE_DIR or ../shared/data/imagenette. The model runs the backend's implementation
everywhere; the step stage shows whether another would be faster on this device. --tiny runs every
stage at CPU test size (a narrow net on 67x67 crops, a few steps) to check the command itself.
"""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
# pylint: disable=g-import-not-at-top
from alexnet_jax import flops, implementations, metric_writer
from alexnet_jax.model import create_model
from configs import default
from experiments import machine
# pylint: enable=g-import-not-at-top

STAGES = ('step', 'pack', 'input', 'end_to_end', 'train', 'evaluate')
# Each stage's share of --minutes, an upper bound on its time; training gets what is left.
SHARES = {'step': 0.25, 'pack': 0.10, 'input': 0.20, 'end_to_end': 0.08, 'train': 0.0,
          'evaluate': 0.08}
_MARGIN_S = 10  # for writing the report


# ---------------------------------------------------------------------------------------------
# Running a stage.
# ---------------------------------------------------------------------------------------------


def run(command: list[str], log_path: str, deadline: float, grace_s: float,
        env: dict | None = None) -> dict:
  """Runs `command` (from the repository root, output to `log_path`) until it exits or
  `deadline` (time.monotonic()) passes; then SIGTERM, and after `grace_s` SIGKILL to its
  process group. Returns the exit code, the seconds taken and how it was stopped, if it was."""
  start = time.monotonic()
  stopped = None
  with open(log_path, 'w') as log:
    log.write('$ ' + ' '.join(command) + '\n')
    log.flush()
    proc = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)  # its own process group, with its workers
    try:
      returncode = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
      stopped = 'sigterm'
      proc.send_signal(signal.SIGTERM)
      try:
        returncode = proc.wait(timeout=grace_s)
      except subprocess.TimeoutExpired:
        stopped = 'killed'
        os.killpg(proc.pid, signal.SIGKILL)
        returncode = proc.wait()
    try:
      os.killpg(proc.pid, signal.SIGKILL)  # input workers it may have left behind
    except (ProcessLookupError, PermissionError):
      pass
  return {'returncode': returncode, 'seconds': round(time.monotonic() - start, 1),
          'stopped': stopped, 'command': ' '.join(command), 'log': log_path}


def _tail(path: str, lines: int = 12) -> str:
  with open(path, errors='replace') as f:
    text = f.read().splitlines()
  return '\n'.join(text[-lines:])


def _failure(result: dict) -> str | None:
  if result['stopped']:
    return (f'did not finish in its {result["budget_s"]:.0f} s '
            f'({"killed" if result["stopped"] == "killed" else "stopped by SIGTERM"})')
  if result['returncode'] != 0:
    return f'exit code {result["returncode"]}:\n{_tail(result["log"])}'
  return None


# ---------------------------------------------------------------------------------------------
# The stages' command lines.
# ---------------------------------------------------------------------------------------------


def model_flags(tiny: bool) -> list[str]:
  """Config overrides of the network and image size: the paper's, or --tiny's narrow net."""
  if not tiny:
    return []
  return ['--config.model.width=0.125', '--config.model.num_classes=10',
          '--config.model.init_scheme=he', '--config.model.input_scale=0.015625',
          '--config.data.crop_size=67']


def _defined_flags(script: str) -> set[str]:
  """The absl flags a script defines, read from its source (another engineer's CLI may change)."""
  with open(os.path.join(REPO, script)) as f:
    return set(re.findall(r"DEFINE_\w+\(\s*['\"](\w+)['\"]", f.read()))


def _torch_importable() -> bool:
  return machine.version('torch') != 'absent'


def step_command(tiny: bool, json_path: str, budget_s: float) -> list[str]:
  torch = 'eager,compile' if _torch_importable() and not tiny else (
      'eager' if _torch_importable() else '')
  sizes = (['--batch=8', '--runs=2', '--steps=2', '--warmup=1', '--dtypes=float32'] if tiny else
           ['--batch=128', '--runs=5', '--steps=10', '--dtypes=float32,bfloat16',
            '--implementation=each'])
  # Contenders not ready by then are left out, keeping time for the timed runs.
  return [sys.executable, 'experiments/step_benchmark.py', *sizes, f'--torch={torch}',
          f'--budget_s={0.75 * budget_s:.0f}', f'--json={json_path}', *model_flags(tiny)]


def pack_command(imagenette_dir: str, packed: str, workers: int) -> list[str]:
  return [sys.executable, '-m', 'alexnet_jax.prepare', '--config=configs/imagenette.py',
          f'--out={packed}', f'--config.data.train_dir={imagenette_dir}/train',
          f'--config.data.val_dir={imagenette_dir}/val', f'--config.data.workers={workers}']


def input_command(tiny: bool, imagenette_dir: str, packed: str, workers: int,
                  json_path: str) -> list[str]:
  script = 'experiments/input_benchmark.py'
  wanted = {'data': f'{imagenette_dir}/train', 'packed': packed, 'workers': workers,
            'json': json_path}
  if tiny:
    wanted.update(batch_size=8, batches=2, warmup=1, repeats=1, decoders=False,
                  loaders='baseline,packed')
  defined = _defined_flags(script)
  args = []
  for name, value in wanted.items():
    if name in defined:
      args.append(f'--{name}={value}' if not isinstance(value, bool) else
                  f'--{"" if value else "no"}{name}')
  return [sys.executable, script, *args]


def end_to_end_command(tiny: bool, data: str, workers: int, json_path: str) -> list[str]:
  sizes = (['--batch=8', '--runs=2', '--steps=2', '--warmup=1', '--dtypes=float32'] if tiny else
           ['--batch=128', '--runs=5', '--steps=50', '--dtypes=float32,bfloat16'])
  return [sys.executable, 'experiments/step_benchmark.py', *sizes, '--torch=',
          f'--data={data}', f'--workers={workers}', f'--json={json_path}', *model_flags(tiny)]


# The training steps traced (jax.profiler, into the run's profile/): past compiling and warm-up.
PROFILE_STEPS = {False: '101-103', True: '2-3'}


def train_command(tiny: bool, imagenette_dir: str, packed: str | None, workers: int,
                  workdir: str) -> list[str]:
  data = (['--config.data.source=packed', f'--config.data.packed_dir={packed}'] if packed else
          [f'--config.data.train_dir={imagenette_dir}/train',
           f'--config.data.val_dir={imagenette_dir}/val'])
  sizes = (['--config.batch_size=8', '--config.num_train_steps=6', '--config.log_every_steps=1',
            '--config.eval_every_steps=6', '--config.checkpoint_every_steps=3',
            '--config.diagnostics_every_steps=3', '--config.data.threads=2'] if tiny else [])
  return [sys.executable, '-m', 'alexnet_jax.main', '--config=configs/imagenette.py',
          f'--workdir={workdir}', *data, f'--config.data.workers={workers}', *sizes,
          f'--config.profile_steps={PROFILE_STEPS[tiny]}', *model_flags(tiny)]


def evaluate_command(workdir: str, json_path: str) -> list[str]:
  return [sys.executable, '-m', 'alexnet_jax.evaluate', f'--workdir={workdir}',
          '--views=center,ten', f'--out={json_path}']


# ---------------------------------------------------------------------------------------------
# Reading what the stages wrote.
# ---------------------------------------------------------------------------------------------


def _read_json(path: str):
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  return None


def input_rows(json_path: str, log_path: str) -> list[dict]:
  """[{loader, images_per_sec_per_core, vs_baseline}] from the input benchmark's JSON, in
  whichever shape it comes, or else from the table it prints."""
  data = _read_json(json_path)
  if isinstance(data, dict):
    data = next((data[k] for k in ('rows', 'results', 'loaders') if k in data), data)
  if isinstance(data, dict):
    data = [{'loader': k, **v} for k, v in data.items() if isinstance(v, dict)]
  rows = [r for r in data or [] if isinstance(r, dict) and 'loader' in r]
  if rows:
    return rows
  table = re.compile(r'^(\S.*?)\s+(\d+)\s+(\d+\.\d+x|-)\s+\d+\.\d+ min$')
  with open(log_path, errors='replace') as f:
    for line in f:
      if match := table.match(line.strip()):
        ratio = match.group(3)
        rows.append({'loader': match.group(1), 'images_per_sec_per_core': float(match.group(2)),
                     'vs_baseline': float(ratio[:-1]) if ratio != '-' else None})
  return rows


# A form replaces the backend's choice only when it is faster than that by more than the spread
# of a few timed runs, in every dtype timed.
ADOPT_MARGIN = 1.03


def entry_to_adopt(step: dict) -> dict:
  """The `implementations.MEASURED` entry the step stage supports for its backend: the backend's
  choice with every operation switched whose other form ran faster by more than ADOPT_MARGIN.

  Each form is timed against the backend's choice with that one operation changed; the
  combination is what `implementation` (the config field's spec) lets a run confirm.
  """
  results, backend = step.get('results') or {}, step.get('backend', 'gpu')
  base = step.get('auto') or dataclasses.asdict(implementations.PLAIN)
  dtypes = sorted({r['dtype'] for r in results.values()
                   if r.get('framework') == 'jax' and r.get('input', 'synthetic') == 'synthetic'})
  chosen, ratios = dict(base), {}
  for name, forms in implementations.FORMS.items():
    for form in forms:
      row = [results.get(f'jax {d} auto,{name}={form}', {}).get('vs_default') for d in dtypes]
      if form != base[name] and row and None not in row:
        ratios[f'{name}={form}'] = row
        if min(row) > ADOPT_MARGIN:
          chosen[name] = form
  fields = {k: v for k, v in chosen.items() if v != getattr(implementations.PLAIN, k)}
  args = ', '.join(f'{k}={v!r}' for k, v in fields.items())
  return {'backend': backend, 'dtypes': dtypes, 'ratios': ratios, 'implementation': chosen,
          'spec': ','.join(['plain', *(f'{k}={v}' for k, v in fields.items())]),
          'entry': f'{backend!r}: Implementation({args}),' if fields else None}


def _adopt_lines(adopt: dict) -> list[str]:
  if not adopt['ratios']:
    return ['No operation was timed in its other form: nothing to adopt.']
  timed = ', '.join(f'`{form}` {"/".join(f"{r:.2f}x" for r in row)}'
                    for form, row in adopt['ratios'].items())
  lines = [f'Each other form against the backend\'s choice ({"/".join(adopt["dtypes"])}): '
           f'{timed}.', '']
  if adopt['entry']:
    return lines + [f'Entry to adopt in `implementations.MEASURED`: `{adopt["entry"]}` (as a '
                    f'config field, to confirm the combination: '
                    f'`--config.implementation={adopt["spec"]}`).']
  return lines + [f'Entry to adopt: none; no form beat the plain ones by {ADOPT_MARGIN - 1:.0%}, '
                  f'so `{adopt["backend"]}` stays out of `implementations.MEASURED` and runs the '
                  'plain forms.']


def training_summary(workdir: str) -> dict:
  """The last training and validation records of metrics.jsonl, the newest checkpoint and the
  profile's trace files."""
  records = metric_writer.read_records(workdir)
  last = lambda split: next((r for r in reversed(records) if r.get('split') == split), None)
  ckpts = os.path.join(workdir, 'checkpoints')
  steps = sorted(int(d) for d in os.listdir(ckpts) if d.isdigit()) if os.path.isdir(ckpts) else []
  traces = sorted(os.path.join(d, f) for d, _, files in os.walk(os.path.join(workdir, 'profile'))
                  for f in files)
  return {'train': last('train'), 'val': last('val'), 'diag': last('diag'), 'checkpoints': steps,
          'profile': traces}


# ---------------------------------------------------------------------------------------------
# The report.
# ---------------------------------------------------------------------------------------------


def _num(value, spec: str = '.1f', missing: str = '-') -> str:
  return missing if value is None else format(value, spec)


def _flops_section(report: dict) -> list[str]:
  counted = report['flops']
  lines = [f'The network of stages 1 and 3: {counted["network"]}.', '',
           '| layer | maps out | multiply-adds |', '| --- | --- | ---: |']
  lines += [f'| {l["name"]} | {l["out"]} | {l["macs"]:,} |' for l in counted['layers']]
  return lines + ['', f'Forward {counted["forward_gflops"]:.3f} GFLOP; training step '
                  f'{counted["train_gflops"]:.3f} GFLOP per image ({counted["convention"]}).',
                  f'float32 convolutions and matmuls: jax_default_matmul_precision '
                  f'{report.get("matmul_precision")!r} -> {report.get("float32_math")}.']


def _step_section(stage: dict) -> list[str]:
  step = stage.get('result') or {}
  if not step.get('results'):
    return []
  lines = [f'Batch {step["batch"]}, {step["crop"]}x{step["crop"]}, median of {step["runs"]} runs '
           f'of {step["steps"]} steps.', '',
           '| contender | images/s | vs PyTorch eager | vs implementation auto | TFLOP/s | '
           'fraction of peak | math (peak TFLOP/s) | compile s |',
           '| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |']
  for name, r in step['results'].items():
    lines.append(f'| {name} | {r["images_per_sec"]:.1f} | {_num(r.get("vs_torch_eager"), ".2f")} '
                 f'| {_num(r.get("vs_default"), ".2f")} | {r["tflops_per_sec"]:.3f} | '
                 f'{_num(r.get("fraction_of_peak"), ".1%")} | {r["math"]} '
                 f'({_num(r.get("peak_tflops"), "g", "no documented peak")}) | '
                 f'{r["compile_s"]:.1f} |')
  lines += [f'\n{name} left out: `{error}`' for name, error in step.get('errors', {}).items()]
  return lines + ['', *_adopt_lines(entry_to_adopt(step))]


def _input_section(stages: dict) -> list[str]:
  lines = [f'Packing: {stages["pack"]["status"]} ({stages["pack"].get("note", "")}).', '']
  rows = stages['input'].get('result') or []
  if rows:
    lines += ['| loader | images/s per core | vs baseline (same run) |', '| --- | ---: | ---: |']
    lines += [f'| {r["loader"]} | {_num(r.get("images_per_sec_per_core"), ".0f")} | '
              f'{_num(r.get("vs_baseline"), ".2f")} |' for r in rows]
  return lines


def _end_to_end_section(stage: dict) -> list[str]:
  results = (stage.get('result') or {}).get('results', {})
  real = [r for r in results.values() if r.get('input') == 'real']
  if not real:
    return []
  lines = ['| dtype | synthetic images/s | real input images/s | real / synthetic |',
           '| --- | ---: | ---: | ---: |']
  for r in real:
    synthetic = results.get(f'jax {r["dtype"]}', {}).get('images_per_sec')
    lines.append(f'| {r["dtype"]} | {_num(synthetic)} | {r["images_per_sec"]:.1f} | '
                 f'{_num(r.get("vs_synthetic"), ".2f")} |')
  return lines + ['', f'Input: {stage.get("data")}; worker processes: {stage.get("workers")}.']


def _train_section(stage: dict) -> list[str]:
  run = stage.get('result') or {}
  if not run.get('train'):
    return []
  tr, val = run['train'], run.get('val') or {}
  return [f'{tr["step"]} steps ({tr.get("epoch", 0):.1f} epochs) in {stage["seconds"] / 60:.1f} '
          f'minutes; last logged training loss {_num(tr.get("loss"), ".3f")} at '
          f'{_num(tr.get("images_per_sec"), ".0f")} images/s; last validation top-1 error '
          f'{_num(val.get("top1_err"), ".1%")}.', *_dead_units(run.get('diag')), '',
          f'Stopping: {stage.get("note", "")}.', '', _profile_line(run.get('profile') or [])]


def _profile_line(traces: list[str]) -> str:
  if not traces:
    return 'Profile: none written (training stopped before the traced steps).'
  folder = traces[0].split(f'{os.sep}plugins{os.sep}')[0]
  return (f'Profile of steps {PROFILE_STEPS[False]} (--tiny: {PROFILE_STEPS[True]}): '
          f'`tensorboard --logdir {folder}`, or open '
          f'`{next((t for t in traces if t.endswith("perfetto_trace.json.gz")), traces[0])}` '
          'in ui.perfetto.dev.')


def _dead_units(diag: dict | None) -> list[str]:
  """The last diagnostics row's dead ReLUs per layer: a layer near 100% has stopped learning."""
  if not diag:
    return []
  dead = ', '.join(f'{k[len("dead_"):]} {v:.0%}' for k, v in diag.items() if k.startswith('dead_'))
  return ['', f'Dead units at step {diag["step"]} (<= 0 for the whole batch): {dead}.']


def _evaluate_section(stage: dict) -> list[str]:
  if not stage.get('result'):
    return []
  member = stage['result']['members'][0]
  lines = [f'Checkpoint step {member["step"]}, {member["center"]["images"]} validation images.',
           '',
           '| view | top-1 error | top-5 error |', '| --- | ---: | ---: |']
  return lines + [f'| {v} | {member[v]["top1_err"]:.2%} | {member[v]["top5_err"]:.2%} |'
                  for v in ('center', 'ten') if v in member]


def _stages_section(stages: dict) -> list[str]:
  lines = ['| stage | status | seconds | budget s | command |', '| --- | --- | ---: | ---: | --- |']
  for name in STAGES:
    entry = stages[name]
    lines.append(f'| {name} | {entry["status"]} | {_num(entry.get("seconds"))} | '
                 f'{_num(entry.get("budget_s"), ".0f")} | `{entry.get("command", "")}` |')
  return lines


def _stage_note(result: dict) -> list[str]:
  if result['status'] in ('ok', 'skipped'):
    return []
  error = result.get('error') or ''
  return ['', f'**{result["status"]}**: ' + (f'\n```\n{error}\n```' if '\n' in error else error)]


def write_markdown(report: dict, path: str) -> None:
  stages = report['stages']
  tiny = ' **--tiny: CPU test sizes, not a measurement.**' if report['tiny'] else ''
  lines = [f'# GPU report: AlexNet on {report["machine"].get("device_kind")}', '',
           f'Machine: {machine.one_line(report["machine"])}.', '',
           f'Command: `{report["command"]}`; {report["seconds"] / 60:.1f} of '
           f'{report["minutes"]:g} minutes.{tiny}']
  sections = [
      ('FLOPs per image, counted from the layer shapes', lambda: _flops_section(report), None),
      ('1. Train step, synthetic batch on the device', lambda: _step_section(stages['step']),
       'step'),
      ('2. Input pipeline, images per second per worker core', lambda: _input_section(stages),
       'input'),
      ('3. End to end: the step fed by the real input pipeline',
       lambda: _end_to_end_section(stages['end_to_end']), 'end_to_end'),
      ('4. The paper\'s recipe on Imagenette', lambda: _train_section(stages['train']), 'train'),
      ('5. Center and ten-patch error', lambda: _evaluate_section(stages['evaluate']), 'evaluate'),
      ('Stages', lambda: _stages_section(stages), None)]
  for title, body, name in sections:
    lines += ['', f'## {title}', '']
    try:
      lines += body()
    except Exception as e:  # pylint: disable=broad-except  (a stage wrote something unexpected)
      lines.append(f'(could not be shown: {type(e).__name__}: {e})')
    if name:
      lines += _stage_note(stages[name])
  with open(path, 'w') as fh:
    fh.write('\n'.join(lines) + '\n')


def benchmark_config(tiny: bool):
  """The config whose network stages 1 and 3 time: the paper's, or --tiny's narrow one."""
  config = default.get_config()
  for override in model_flags(tiny):
    key, value = override[len('--config.'):].split('=')
    section, field = key.split('.')
    config[section][field] = type(config[section][field])(value)
  return config


def flop_summary(tiny: bool) -> dict:
  config = benchmark_config(tiny)
  model, crop = create_model(config.model), config.data.crop_size
  return {'network': ('--tiny\'s narrow net, 10 classes' if tiny else
                      'the paper\'s, 1000 classes (stage 4 trains it with 10)'),
          'layers': [{'name': l.name, 'out': f'{l.out_size}x{l.out_size}x{l.out_channels}',
                      'macs': l.macs} for l in flops.layers(model, crop)],
          'forward_gflops': flops.forward_flops(model, crop) / 1e9,
          'train_gflops': flops.train_flops(model, crop) / 1e9,
          'convention': '2 FLOPs per multiply-add of conv1..fc8, every kernel tap; a step is '
                        '3 x forward - conv1 forward (no input gradient for the images); bias, '
                        'ReLU, LRN, pooling, dropout, softmax and the optimizer not counted'}


def report(out: str, *, minutes: float = 10, train_minutes: float = -1,
           imagenette_dir: str = '../shared/data/imagenette', packed: str = '',
           workers: int = os.cpu_count(), grace_s: float = 60, tiny: bool = False) -> dict:
  """Runs the stages into `out` within `minutes`; writes and returns the report."""
  start = time.monotonic()
  deadline = start + 60 * minutes - _MARGIN_S
  workers = max(1, workers)
  out = os.path.abspath(out)
  logs = os.path.join(out, 'logs')
  os.makedirs(logs, exist_ok=True)
  imagenette_dir = os.path.abspath(os.path.expanduser(imagenette_dir))
  packed = os.path.abspath(packed or os.path.join(out, 'imagenette_packed'))
  workdir = os.path.join(out, 'imagenette_run')
  path = lambda name: os.path.join(out, name)
  budget = lambda name: SHARES[name] * 60 * minutes
  stages = {name: {'status': 'not run'} for name in STAGES}
  # One persistent compilation cache: the end-to-end stage reuses the step stage's programs.
  env = {**os.environ, 'JAX_COMPILATION_CACHE_DIR': os.path.join(out, 'jax_cache')}

  def later(name):  # time kept for the stages after `name` (training needs at least a minute)
    rest = STAGES[STAGES.index(name) + 1:]
    return sum(budget(n) for n in rest) + (60 if 'train' in rest and not tiny else 0)

  def stage(name, command, *, stop_at=None, grace=30.0):
    stop_at = stop_at or min(time.monotonic() + budget(name), deadline - later(name))
    if stop_at - time.monotonic() < 1:
      stages[name] = {'status': 'skipped', 'error': 'no time left', 'command': ' '.join(command)}
      return stages[name]
    print(f'[{time.monotonic() - start:5.0f} s] {name}: {" ".join(command)}', flush=True)
    result = run(command, os.path.join(logs, f'{name}.log'), stop_at, grace, env)
    result['budget_s'] = round(stop_at - time.monotonic() + result['seconds'], 1)
    error = _failure(result)
    result.update(status='failed' if error else 'ok', error=error)
    stages[name] = result
    return result

  # (a) The step on synthetic batches: dtypes, implementations, PyTorch.
  r = stage('step', step_command(tiny, path('step.json'), budget('step')))
  r['result'] = _read_json(path('step.json'))

  # (b) The input pipeline on packed Imagenette, packed first if need be.
  if os.path.exists(os.path.join(packed, 'info.json')):
    stages['pack'] = {'status': 'skipped', 'note': f'{packed} holds the packed shards'}
  else:
    r = stage('pack', pack_command(imagenette_dir, packed, workers))
    r['note'] = f'written to {packed}' if r['status'] == 'ok' else 'failed'
  has_packed = os.path.exists(os.path.join(packed, 'info.json'))
  stages['pack'].setdefault('note', '')
  r = stage('input', input_command(tiny, imagenette_dir, packed, workers, path('input.json')))
  r['result'] = input_rows(path('input.json'), r['log']) if 'log' in r else []
  if r['status'] == 'ok' and not r['result']:
    r.update(status='failed', error='no loader rows in its JSON or output')

  # (c) The step fed by real input against the synthetic batch.
  data = packed if has_packed else os.path.join(imagenette_dir, 'train')
  feeders = max(1, workers - 1)  # as in training: one core drives the device
  r = stage('end_to_end', end_to_end_command(tiny, data, feeders, path('end_to_end.json')))
  r.update(result=_read_json(path('end_to_end.json')), data=data, workers=feeders)

  # (d) The recipe for the time that is left, stopped by SIGTERM; then its errors.
  stop_at = deadline - later('train') - (0 if tiny else 20)  # 20 s to stop after SIGTERM
  if train_minutes >= 0:
    stop_at = min(stop_at, time.monotonic() + 60 * train_minutes)
  r = stage('train', train_command(tiny, imagenette_dir, packed if has_packed else None,
                                   feeders, workdir),
            stop_at=stop_at, grace=grace_s)
  r['result'] = summary = training_summary(workdir)
  if r.get('stopped') == 'sigterm' and r['returncode'] == 0:
    r.update(status='ok', error=None, note='stopped by SIGTERM at the deadline; it finished the '
             'step, wrote a checkpoint and exited 0')
  elif r.get('stopped'):
    how = (f'did not exit within {grace_s:.0f} s of SIGTERM and was killed'
           if r['stopped'] == 'killed' else f'exited with code {r["returncode"]} after SIGTERM')
    fallback = (f'the newest checkpoint, step {summary["checkpoints"][-1]}, is evaluated'
                if summary['checkpoints'] else 'no checkpoint was written')
    r.update(status='stopped' if summary['checkpoints'] else 'failed', note=f'{how}; {fallback}',
             error=f'{how}; {fallback}')
  elif r['status'] == 'ok':
    r['note'] = 'finished its configured steps before the deadline'
  if summary['checkpoints']:
    r = stage('evaluate', evaluate_command(workdir, path('evaluate.json')),
              stop_at=deadline + _MARGIN_S / 2)
    r['result'] = _read_json(path('evaluate.json'))
  else:
    stages['evaluate'] = {'status': 'failed', 'error': 'no checkpoint to evaluate'}

  step_json = stages['step'].get('result') or stages['end_to_end'].get('result') or {}
  result = {'command': ' '.join(['python -m experiments.gpu_report'] + sys.argv[1:]),
            'minutes': minutes, 'tiny': tiny, 'seconds': time.monotonic() - start,
            'machine': step_json.get('machine') or machine.describe(devices=False),
            'matmul_precision': step_json.get('matmul_precision'),
            'float32_math': step_json.get('float32_math'), 'flops': flop_summary(tiny),
            'adopt': entry_to_adopt(stages['step'].get('result') or {}), 'stages': stages}
  with open(path('report.json'), 'w') as fh:
    json.dump(result, fh, indent=2)
  write_markdown(result, path('report.md'))
  print(*_adopt_lines(result['adopt']), sep='\n')
  print(f'wrote {path("report.md")} and report.json in {result["seconds"]:.0f} s')
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  options = flags.FLAGS
  report(options.out, minutes=options.minutes, train_minutes=options.train_minutes,
         imagenette_dir=options.imagenette, packed=options.packed, workers=options.workers,
         grace_s=options.grace, tiny=options.tiny)


if __name__ == '__main__':
  flags.DEFINE_string('out', None, 'Folder for report.md, report.json, logs and runs.')
  flags.DEFINE_float('minutes', 10, 'Wall-clock budget for the whole report.')
  flags.DEFINE_float('train_minutes', -1, 'Training time; -1: what is left of --minutes after '
                     'the other stages.')
  flags.DEFINE_string('imagenette', os.environ.get('IMAGENETTE_DIR', '../shared/data/imagenette'),
                      'Imagenette: a folder with train/ and val/ ImageFolders.')
  flags.DEFINE_string('packed', '', 'Packed Imagenette (made there if absent); default: '
                      'OUT/imagenette_packed.')
  flags.DEFINE_integer('workers', os.cpu_count(), 'Input worker processes (all cores).')
  flags.DEFINE_float('grace', 60, 'Seconds training may take to exit after SIGTERM.')
  flags.DEFINE_bool('tiny', False, 'CPU test sizes: a narrow net on 67x67 crops, a few steps.')
  flags.mark_flags_as_required(['out'])
  app.run(main)
