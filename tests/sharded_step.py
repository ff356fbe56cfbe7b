"""Runs in its own process with N forced CPU devices (the flag must precede importing jax).

    python -m tests.sharded_step N DATAxMODEL [DATAxMODEL ...]

For each layout (on the first DATA x MODEL of the N devices) prints one JSON line: the
collectives of the compiled train step (op, shape, the JAX op they came from, the device groups)
and the largest difference between the parameters after a few sharded steps and those after the
same steps on one device.
"""

import functools
import json
import os
import re
import sys

os.environ['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={sys.argv[1]}'

import jax  # noqa: E402
import numpy as np  # noqa: E402

from alexnet_jax import augment, sharding, stats, train  # noqa: E402
from alexnet_jax.model import create_model  # noqa: E402
from tests.conftest import small_config  # noqa: E402

STEPS = 3
COLLECTIVE = re.compile(r'= (.+?) (all-gather|all-reduce|reduce-scatter|collective-permute|'
                        r'all-to-all)(?:-start)?\(')


def collectives(hlo: str) -> list[dict]:
  """Every collective instruction: its op, result shape and the JAX op it came from."""
  found = []
  for line in hlo.splitlines():
    if m := COLLECTIVE.search(line):
      name = re.search(r'op_name="([^"]*)"', line)
      groups = re.search(r'replica_groups=(\S+(?: \{[^}]*\})?)', line)
      found.append({'op': m[2], 'shape': m[1], 'from': name[1] if name else '',
                    'groups': groups[1] if groups else ''})
  return found


def batches(batch_size: int):
  """Drawn patches as the pipeline makes them: the draws travel with the rows of the batch."""
  rng = np.random.default_rng(0)
  return [augment.drawn_batch(rng.integers(0, 256, (batch_size, 72, 72, 3), np.uint8),
                              rng.integers(0, 10, batch_size), 67, seed=step)
          for step in range(STEPS)]


def normalization() -> stats.Normalization:
  rng = np.random.default_rng(1)
  eigvecs = np.linalg.qr(rng.normal(size=(3, 3)))[0].astype(np.float32)
  return stats.Normalization(
      mean_image=rng.uniform(80, 160, (72, 72, 3)).astype(np.float32),
      eigvals=np.array([900.0, 100.0, 16.0], np.float32), eigvecs=eigvecs)


def run(config, mesh, data):
  """Parameters after STEPS train steps on `mesh`, and the compiled step's HLO text."""
  model = create_model(config.model)
  state = train.create_train_state(jax.random.key(0), model, 67, config.optim)
  state_sharding = sharding.state_shardings(state, mesh)
  batch_sharding, replicated = sharding.batch_sharding(mesh), sharding.replicated(mesh)
  # The augmentation's float part runs in the step, each row with its own draws.
  step = sharding.jit(functools.partial(train.train_step, augment_fn=augment.train_inputs), mesh,
                      (state_sharding, batch_sharding, replicated, replicated, replicated),
                      (state_sharding, replicated), model.implementation)
  state = jax.device_put(state, state_sharding)
  rng, norm = jax.random.key(1), jax.device_put(normalization(), replicated)
  lr = config.optim.base_lr
  hlo = step.lower(state, sharding.shard_batch(data[0], batch_sharding), rng, norm,
                   lr).compile().as_text()
  for batch in data:
    state, _ = step(state, sharding.shard_batch(batch, batch_sharding), rng, norm, lr)
  return jax.device_get(state.params), hlo


def main():
  config = small_config('/unused', '/unused')
  data = batches(config.batch_size)
  config.mesh.model = 1
  reference, _ = run(config, sharding.create_mesh(config, jax.devices()[:1]), data)
  initial = jax.device_get(train.create_train_state(
      jax.random.key(0), create_model(config.model), 67, config.optim).params)
  for layout in sys.argv[2:]:
    data_rows, config.mesh.model = map(int, layout.split('x'))
    mesh = sharding.create_mesh(config, jax.devices()[:data_rows * config.mesh.model])
    assert dict(mesh.shape) == {'data': data_rows, 'model': config.mesh.model}, mesh.shape
    params, hlo = run(config, mesh, data)
    diff = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), params, reference)
    moved = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), params, initial)
    print(json.dumps({'layout': layout, 'collectives': collectives(hlo),
                      'max_abs_diff': max(jax.tree.leaves(diff)),
                      'min_param_change': min(jax.tree.leaves(moved))}))


if __name__ == '__main__':
  main()
