"""Where metrics go: the console, TensorBoard event files and `<workdir>/metrics.jsonl`.

Every record carries step, epoch, split and the split's metrics (loss, top1_err, top5_err, lr,
images_per_sec), so a run can be plotted from the JSON lines alone.
"""

import json
import os

import tensorboardX  # TensorBoard event files without a TensorFlow dependency
import tqdm


class MetricWriter:
  """Appends records to metrics.jsonl, writes TensorBoard scalars, and prints a line per record."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled, self.workdir = enabled, workdir
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')
      self._tb = tensorboardX.SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def write(self, split: str, step: int, epoch: float, metrics: dict) -> None:
    if not self.enabled:
      return
    metrics = {k: float(v) for k, v in metrics.items()}
    record = {'step': int(step), 'epoch': round(float(epoch), 4), 'split': split, **metrics}
    self._jsonl.write(json.dumps(record) + '\n')
    self._jsonl.flush()
    for key, value in metrics.items():
      self._tb.add_scalar(f'{split}/{key}', value, step)
    self._tb.flush()
    shown = ' '.join(f'{k}={v:.4g}' for k, v in metrics.items())
    tqdm.tqdm.write(f'[{split}] step {step} epoch {epoch:.2f} {shown}')

  def write_json(self, name: str, record: dict) -> None:
    """`<workdir>/<name>`: a run-level record (the model's size), replaced on every call."""
    if self.enabled:
      with open(os.path.join(self.workdir, name), 'w') as f:
        json.dump(record, f, indent=2)

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tb.close()
