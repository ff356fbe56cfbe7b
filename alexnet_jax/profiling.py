"""A `jax.profiler` trace of chosen training steps (`profile_steps = 'A-B'`), for TensorBoard's
profile plugin (`tensorboard --logdir <workdir>/profile`) or Perfetto (ui.perfetto.dev opens
its `perfetto_trace.json.gz`)."""

import os
import re

import jax
from absl import logging

_SPEC = re.compile(r'^\s*(\d+)\s*-\s*(\d+)\s*$')


def parse_steps(spec: str) -> tuple[int, int] | None:
  """'A-B' -> (A, B), the first and last step traced (1 <= A <= B); '' -> None. Raises
  ValueError saying what a valid value is."""
  if not spec:
    return None
  match = _SPEC.match(spec)
  if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
    raise ValueError("write the first and last step to trace as 'A-B', 1 <= A <= B, e.g. "
                     "'10-12' ('' for none)")
  return int(match.group(1)), int(match.group(2))


class StepProfile:
  """Traces steps A..B of a run into `<workdir>/profile/` (per process under several).

  `before(step)` comes before the step that makes the train state's step `step`, and
  `after(step, state)` after it; the trace stops once step B's device work is done, or when
  the run ends first (`close`).
  """

  def __init__(self, spec: str, workdir: str):
    self._steps = parse_steps(spec)
    self.log_dir = os.path.join(workdir, 'profile')
    if jax.process_count() > 1:
      self.log_dir = os.path.join(self.log_dir, f'process{jax.process_index()}')
    self._on = False

  def before(self, step: int) -> None:
    if self._steps and not self._on and self._steps[0] <= step <= self._steps[1]:
      jax.profiler.start_trace(self.log_dir, create_perfetto_trace=True)
      self._on = True

  def annotation(self, step: int):
    """The step's name in the trace, as TensorBoard's step view expects it."""
    return jax.profiler.StepTraceAnnotation('train', step_num=step)

  def after(self, step: int, state) -> None:
    if self._on and step >= self._steps[1]:
      jax.block_until_ready(state)  # the trace holds all of step B's device work
      self.close()

  def close(self) -> None:
    if self._on:
      jax.profiler.stop_trace()
      self._on = False
      logging.info('Wrote a profile of steps %d-%d to %s', *self._steps, self.log_dir)
