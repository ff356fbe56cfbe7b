"""metrics.jsonl: a run killed while writing leaves its last line cut short, and nothing else."""

import json

import pytest

from alexnet_jax import metric_writer
from alexnet_jax.errors import UserError


def _write(tmp_path, lines):
  (tmp_path / metric_writer.METRICS_FILE).write_text('\n'.join(lines) + '\n')


def _record(step):
  return json.dumps({'step': step, 'split': 'train', 'loss': 1.0})


def test_a_last_line_cut_short_is_left_out(tmp_path):
  _write(tmp_path, [_record(1), _record(2), '{"step": 3, "spl'])
  assert [r['step'] for r in metric_writer.read_records(str(tmp_path))] == [1, 2]


def test_a_broken_line_before_the_last_is_an_error_naming_it(tmp_path):
  _write(tmp_path, [_record(1), 'not a record', _record(3)])
  with pytest.raises(UserError, match=r'metrics.jsonl, line 2, is not a metrics record'):
    metric_writer.read_records(str(tmp_path))


def test_a_resumed_run_drops_the_line_cut_short_before_appending(tmp_path):
  _write(tmp_path, [_record(1), _record(2), '{"step": 3, "spl'])
  writer = metric_writer.MetricWriter(str(tmp_path), resume_step=2)
  writer.write('train', 3, 0.1, {'loss': 0.5})
  writer.close()
  assert [r['step'] for r in metric_writer.read_records(str(tmp_path))] == [1, 2, 3]
