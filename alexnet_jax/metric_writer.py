"""Where metrics go: the console, TensorBoard event files and `<workdir>/metrics.jsonl`.

Every record carries step, epoch, split, the split's metrics (loss, top1_err, top5_err, lr,
images_per_sec, steps_per_sec; eta_s for training) and the wall-clock time (`time`, Unix
seconds), so a run can be plotted from the JSON lines alone. A resumed run first drops what the
interrupted one logged after its checkpoint, so each step and split has exactly one record.
"""

import contextlib
import json
import os
import time

import tensorboardX  # TensorBoard event files without a TensorFlow dependency
import tqdm

from alexnet_jax.errors import UserError

METRICS_FILE = 'metrics.jsonl'


def _read(path: str) -> tuple[list[dict], bool]:
  """(the records of a metrics file, whether its last line was cut short). A run killed while
  writing leaves at most its last line broken; a broken line before it is an error."""
  if not os.path.exists(path):
    return [], False
  with open(path) as f:
    lines = f.read().splitlines()
  records = []
  for number, line in enumerate(lines, 1):
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError as e:
      if number < len(lines):
        raise UserError(f'{path}, line {number}, is not a metrics record ({e.msg}); only the '
                        'last line may be cut short. Repair or remove that line.') from e
      return records, True
  return records, False


def read_records(workdir: str, split: str | None = None) -> list[dict]:
  """The records of `<workdir>/metrics.jsonl` (of one split, if given), in order."""
  records, _ = _read(os.path.join(workdir, METRICS_FILE))
  return [r for r in records if split is None or r['split'] == split]


def read_by_split(workdir: str) -> dict[str, list[dict]]:
  """The records by split, one per step in step order (a resumed run's repeats: the last wins)."""
  by_split: dict[str, dict[int, dict]] = {}
  for r in read_records(workdir):
    by_split.setdefault(r['split'], {})[r['step']] = r
  return {split: [steps[s] for s in sorted(steps)] for split, steps in by_split.items()}


def _duration(seconds: float) -> str:
  minutes, _ = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f'{hours}h{minutes:02d}m' if hours else f'{minutes}m{int(seconds) % 60:02d}s'


class MetricWriter:
  """Appends records to metrics.jsonl, writes TensorBoard scalars, and prints a line per record.

  With `resume_step`, records of later steps (logged by an interrupted run after its last
  checkpoint) are removed first, from both the JSON lines and TensorBoard's view.
  """

  def __init__(self, workdir: str, enabled: bool = True, resume_step: int | None = None):
    self.enabled, self.workdir = enabled, workdir
    if not enabled:
      return
    with self._reporting_errors():
      os.makedirs(workdir, exist_ok=True)
      if resume_step is not None:
        self._keep_until(resume_step)
      self._jsonl = open(os.path.join(workdir, METRICS_FILE), 'a')
      # purge_step: TensorBoard hides the events an earlier run wrote from this step on.
      self._tb = tensorboardX.SummaryWriter(
          os.path.join(workdir, 'tensorboard'),
          purge_step=None if resume_step is None else resume_step + 1)

  def _keep_until(self, step: int) -> None:
    path = os.path.join(self.workdir, METRICS_FILE)
    records, cut_short = _read(path)
    kept = [r for r in records if r['step'] <= step]
    if len(kept) == len(records) and not cut_short:
      return
    with open(f'{path}.tmp', 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in kept)
    os.replace(f'{path}.tmp', path)  # never a half-written metrics file

  @contextlib.contextmanager
  def _reporting_errors(self):
    try:
      yield
    except OSError as e:  # a full disk, a read-only folder: one line, not a traceback
      raise UserError(f'Cannot write the metrics in {self.workdir}: {e.strerror}. Free space or '
                      'fix the permissions, then rerun the same command: it resumes from the '
                      'newest checkpoint.') from None

  def write(self, split: str, step: int, epoch: float, metrics: dict) -> None:
    if not self.enabled:
      return
    metrics = {k: float(v) for k, v in metrics.items()}
    record = {'step': int(step), 'epoch': round(float(epoch), 4), 'split': split, **metrics,
              'time': round(time.time(), 3)}
    with self._reporting_errors():
      self._jsonl.write(json.dumps(record) + '\n')
      self._jsonl.flush()
      for key, value in metrics.items():
        self._tb.add_scalar(f'{split}/{key}', value, step)
      self._tb.flush()
    shown = ' '.join(f'{k}={v:.4g}' for k, v in metrics.items() if k != 'eta_s')
    if 'eta_s' in metrics:
      shown += f' eta={_duration(metrics["eta_s"])}'
    tqdm.tqdm.write(f'[{split}] step {step} epoch {epoch:.2f} {shown}')

  def write_json(self, name: str, record: dict) -> None:
    """`<workdir>/<name>`: a run-level record (the model's size), replaced on every call."""
    if self.enabled:
      with self._reporting_errors(), open(os.path.join(self.workdir, name), 'w') as f:
        json.dump(record, f, indent=2)

  def final_records(self) -> dict:
    """The last record of each split: a finished run's final metrics."""
    return {r['split']: {k: v for k, v in r.items() if k not in ('step', 'epoch', 'split')}
            for r in read_records(self.workdir)}

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tb.close()
