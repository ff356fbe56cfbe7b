"""experiments/gpu_report as a GPU machine's user runs it, at CPU test size."""

import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from alexnet_jax import flops
from alexnet_jax.model import create_model
from experiments import gpu_report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tiny_report_has_every_section_with_numbers(shapes_dir, tmp_path):
  # LLVM's cheapest code generation halves XLA:CPU's compile times; nothing here is a timing.
  env = {**os.environ, 'XLA_FLAGS': '--xla_backend_optimization_level=0'}
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.gpu_report', f'--out={tmp_path}', '--tiny',
       f'--imagenette={shapes_dir}', '--workers=1', '--grace=20'],
      cwd=REPO, env=env, capture_output=True, text=True, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads((tmp_path / 'report.json').read_text())
  s = report['stages']
  assert {name: s[name]['status'] for name in gpu_report.STAGES} == {
      name: 'ok' for name in gpu_report.STAGES}, {n: s[n].get('error') for n in s}

  config = gpu_report.benchmark_config(tiny=True)
  model, crop = create_model(config.model), config.data.crop_size
  per_image = flops.train_flops(model, crop) / 1e9
  assert report['flops']['train_gflops'] == per_image
  step = s['step']['result']['results']['jax float32']
  assert step['images_per_sec'] > 0 and step['gflops_per_image'] == per_image
  assert step['tflops_per_sec'] == pytest.approx(per_image * step['images_per_sec'] / 1e3)
  assert [r['images_per_sec_per_core'] > 0 for r in s['input']['result']] == [True, True]
  e2e = s['end_to_end']['result']['results']['jax float32 + input']
  assert e2e['input'] == 'real' and e2e['vs_synthetic'] > 0
  assert s['train']['result']['train']['step'] == 6
  assert any(t.endswith('perfetto_trace.json.gz') for t in s['train']['result']['profile'])
  member = s['evaluate']['result']['members'][0]
  assert member['step'] == 6
  assert 0 <= member['center']['top1_err'] <= 1 and 0 <= member['ten']['top5_err'] <= 1

  text = (tmp_path / 'report.md').read_text()
  sections = re.split(r'^## ', text, flags=re.M)[1:]
  assert [x.split('\n')[0][:2] for x in sections] == ['FL', '1.', '2.', '3.', '4.', '5.', 'St']
  for section in sections:  # a table row (or sentence) with a number in every section
    assert re.search(r'\| [\d.,]+%? \|', section) or re.search(r'\d+ steps', section), section


def test_a_stage_is_stopped_at_its_deadline(tmp_path):
  """SIGTERM at the deadline; a process that ignores it is killed after the grace period."""
  handles = ('import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); '
             'print("up", flush=True); time.sleep(60)')
  ignores = ('import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); '
             'print("up", flush=True); time.sleep(60)')
  r = gpu_report.run([sys.executable, '-c', handles], str(tmp_path / 'a.log'),
                     time.monotonic() + 2, grace_s=20)
  assert (r['stopped'], r['returncode']) == ('sigterm', 0) and r['seconds'] < 15
  r = gpu_report.run([sys.executable, '-c', ignores], str(tmp_path / 'b.log'),
                     time.monotonic() + 2, grace_s=1)
  assert (r['stopped'], r['returncode']) == ('killed', -9) and r['seconds'] < 15
  assert 'up' in (tmp_path / 'b.log').read_text()


def test_input_rows_read_json_or_the_printed_table(tmp_path):
  rows = [{'loader': 'baseline', 'images_per_sec_per_core': 170.0, 'vs_baseline': 1.0}]
  (tmp_path / 'a.json').write_text(json.dumps({'rows': rows}))
  assert gpu_report.input_rows(str(tmp_path / 'a.json'), '') == rows
  (tmp_path / 'b.log').write_text(
      'loader   img/s per core   vs baseline (same run)   ImageNet epoch, 16 cores\n'
      'torch DataLoader + PIL               170                   1.00x                7.9 min\n'
      'Grain packed                         488                   2.72x                2.7 min\n')
  assert gpu_report.input_rows(str(tmp_path / 'none.json'), str(tmp_path / 'b.log')) == [
      {'loader': 'torch DataLoader + PIL', 'images_per_sec_per_core': 170.0, 'vs_baseline': 1.0},
      {'loader': 'Grain packed', 'images_per_sec_per_core': 488.0, 'vs_baseline': 2.72}]


def test_input_measure_has_no_cpu_figure_when_the_cpu_clock_did_not_tick(monkeypatch):
  # A tiny run can use less CPU time than the tick that counts it (CI's input stage did).
  from experiments import input_benchmark  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(input_benchmark, 'cpu_seconds', lambda: 3.0)
  batches = iter([{'image': np.zeros((2, 4, 4, 3), np.uint8)}] * 3)
  rate, per_cpu, per_image = input_benchmark.measure(batches, warmup=1, n=2, batch_size=2,
                                                     shape=(4, 4, 3))
  assert rate > 0 and np.isnan(per_cpu) and per_image == 4 * 4 * 3


def test_the_entry_to_adopt_takes_each_form_faster_in_every_dtype():
  def row(dtype, ratio):
    return {'framework': 'jax', 'dtype': dtype, 'input': 'synthetic', 'vs_default': ratio}
  results = {'jax float32': row('float32', None), 'jax bfloat16': row('bfloat16', None)}
  speedups = {'grouped_conv=per_tower': (1.30, 1.10), 'strided_conv=space_to_depth': (1.20, 0.90),
              'lrn=custom_gradient': (1.01, 1.02), 'pooling=strided_views': (1.05, 1.04)}
  for form, ratios in speedups.items():
    for dtype, ratio in zip(('float32', 'bfloat16'), ratios):
      results[f'jax {dtype} auto,{form}'] = row(dtype, ratio)
  adopt = gpu_report.entry_to_adopt({'backend': 'gpu', 'results': results})
  assert adopt['entry'] == ("'gpu': Implementation(grouped_conv='per_tower', "
                            "pooling='strided_views'),")
  assert adopt['spec'] == 'plain,grouped_conv=per_tower,pooling=strided_views'
  assert set(adopt['ratios']) == set(speedups) and adopt['dtypes'] == ['bfloat16', 'float32']
  assert 'Entry to adopt in `implementations.MEASURED`' in '\n'.join(gpu_report._adopt_lines(adopt))

  slower = {k: {**v, 'vs_default': 0.9} if v['vs_default'] else v for k, v in results.items()}
  adopt = gpu_report.entry_to_adopt({'backend': 'gpu', 'results': slower})
  assert adopt['entry'] is None and adopt['spec'] == 'plain'
  assert 'runs the plain forms' in gpu_report._adopt_lines(adopt)[-1]
  assert gpu_report._adopt_lines(gpu_report.entry_to_adopt({})) == [
      'No operation was timed in its other form: nothing to adopt.']
