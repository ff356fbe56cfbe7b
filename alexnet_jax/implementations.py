"""Which form of each operation runs: alexnet_jax/ops.py holds the forms, this the choice.

`Implementation` holds one choice per operation, and `for_backend` returns the choice measured
fastest on a backend, the way nanoGPT picks its attention. On the CPU that includes which
kernels XLA calls for convolutions, a compiler option that `Implementation.jit` gives every
function that runs the network. `create_model` (alexnet_jax/model.py) resolves a config's
`implementation` field once, and the network computes with what it is given.

Measured so far: the CPU backend only, on two x86 CPUs, an AMD EPYC with AVX2 and an Intel Xeon
with AVX-512 and AMX (BENCHMARKS.md, "Implementations"). Every other backend, GPUs and TPUs
included, runs the plain forms (`PLAIN`: grouped convolutions with `feature_group_count=2`,
autodiff of the LRN formula, reduce_window pooling) until this code measures it there;
`experiments/gpu_report.py` times every form on the GPU it runs on and prints the entry to
adopt (BENCHMARKS.md, "On a GPU").
Which form runs never changes the parameters or the outputs beyond float rounding, so it is not
part of a model's identity: a checkpoint written with one resumes and evaluates with another.
"""

import dataclasses
import functools
from typing import Callable, Literal

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from alexnet_jax import ops

# The device-mesh axis that holds one tower per device (alexnet_jax.sharding builds the mesh).
TOWER_AXIS = 'model'


def _towers_on_devices(groups: int) -> bool:
  """Whether the surrounding device mesh holds one tower per device, as the paper's GPUs did."""
  return groups > 1 and jax.sharding.get_abstract_mesh().shape.get(TOWER_AXIS) == groups


# ---------------------------------------------------------------------------------------------
# The kernels XLA:CPU calls for convolutions: its own, or YNNPACK's (a compiler option of each
# jitted function, so it needs no environment variable and touches nothing else).
# ---------------------------------------------------------------------------------------------

_YNNPACK = {'xla_cpu_experimental_ynn_fusion_type': 'LIBRARY_FUSION_TYPE_DOT'}


def _cpu_features() -> set[str]:
  try:
    with open('/proc/cpuinfo') as f:
      return set(next((line for line in f if line.startswith('flags')), '').split())
  except OSError:
    return set()


@functools.cache
def _ynnpack_measured_here() -> bool:
  """YNNPACK's convolutions were measured faster on both x86 CPUs CI runs on, an AMD EPYC with
  AVX2 and an Intel Xeon with AVX-512 and AMX (BENCHMARKS.md, "Implementations"); other CPUs
  (Arm, x86 without AVX2) have not been measured, and a jaxlib without the option cannot use
  them."""
  if 'avx2' not in _cpu_features():
    return False
  try:
    probe = jax.device_put(jnp.ones(2), jax.devices('cpu')[0])
    jax.jit(lambda x: x @ x).lower(probe).compile(compiler_options=_YNNPACK)
  except Exception:  # pylint: disable=broad-except  (an option this jaxlib does not know)
    return False
  return True


# ---------------------------------------------------------------------------------------------
# One form per operation, and the one each backend runs.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Implementation:
  """One implementation per operation; the defaults are the plain forms."""
  grouped_conv: Literal['feature_groups', 'per_tower'] = 'feature_groups'
  strided_conv: Literal['direct', 'space_to_depth'] = 'direct'
  lrn: Literal['autodiff', 'custom_gradient'] = 'autodiff'
  pooling: Literal['reduce_window', 'strided_views'] = 'reduce_window'
  cpu_conv_kernels: Literal['xla', 'ynnpack'] = 'xla'
  bias: Literal['autodiff', 'matmul_gradient'] = 'autodiff'

  @property
  def compiler_options(self) -> dict[str, str]:
    """XLA options for every jitted function that runs the network; they apply to the CPU
    backend only."""
    return dict(_YNNPACK) if self.cpu_conv_kernels == 'ynnpack' else {}

  def jit(self, fn: Callable, **jit_kwargs) -> Callable:
    """`jax.jit(fn, **jit_kwargs)` with this implementation's compiler options: every function
    that runs the network is jitted here, so that none runs without them."""
    return jax.jit(fn, compiler_options=self.compiler_options, **jit_kwargs)

  def conv(self, x: jax.Array, kernel: jax.Array, stride: int = 1, padding: int = 0,
           groups: int = 1) -> jax.Array:
    if _towers_on_devices(groups):
      # XLA's partitioner would gather a grouped conv's operands; shard_map keeps each tower on
      # its own device, which convolves its own maps with its own kernels.
      channels = P(None, None, None, TOWER_AXIS)
      return jax.shard_map(functools.partial(ops.conv, stride=stride, padding=padding),
                           in_specs=(channels, channels), out_specs=channels,
                           axis_names={TOWER_AXIS})(x, kernel)
    if groups > 1 and self.grouped_conv == 'per_tower':
      return ops.conv_per_tower(x, kernel, stride, padding, groups)
    if groups == 1 and stride > 1 and self.strided_conv == 'space_to_depth':
      return ops.conv_space_to_depth(x, kernel, stride, padding)
    return ops.conv(x, kernel, stride, padding, groups)

  def add_bias(self, y: jax.Array, bias: jax.Array) -> jax.Array:
    add = ops.add_bias_matmul_gradient if self.bias == 'matmul_gradient' else ops.add_bias
    return add(y, bias)

  def local_response_norm(self, x: jax.Array, **constants) -> jax.Array:
    return ops.local_response_norm(x, custom_gradient=self.lrn == 'custom_gradient', **constants)

  def max_pool(self, x: jax.Array, window: int, stride: int) -> jax.Array:
    pool = ops.max_pool_strided_views if self.pooling == 'strided_views' else ops.max_pool
    return pool(x, window, stride)


PLAIN = Implementation()
# Each operation's forms, the plain one first, and those only the CPU backend has.
FORMS = {f.name: f.type.__args__ for f in dataclasses.fields(Implementation)}
CPU_ONLY = ('cpu_conv_kernels',)
# Measured per backend (see the module docstring); a backend not listed runs PLAIN. 'cpu' is
# XLA's own convolutions, 'cpu+ynnpack' an x86 CPU where YNNPACK's were measured faster, which
# also makes conv1's direct form faster than its space-to-depth form there.
MEASURED = {
    'cpu': Implementation('per_tower', 'space_to_depth', 'custom_gradient', 'reduce_window'),
    'cpu+ynnpack': Implementation('per_tower', 'direct', 'custom_gradient', 'reduce_window',
                                  'ynnpack', 'matmul_gradient'),
}


def for_backend(backend: str | None = None) -> Implementation:
  """The implementation measured fastest on `backend` (default: JAX's), PLAIN if unmeasured."""
  backend = backend or jax.default_backend()
  if backend == 'cpu' and _ynnpack_measured_here():
    backend = 'cpu+ynnpack'
  return MEASURED.get(backend, PLAIN)


def choose(spec: str = 'auto', backend: str | None = None) -> Implementation:
  """The implementation a config's `implementation` field names.

  'auto' is the backend's measured choice and 'plain' the plain forms; either may be followed by
  `operation=form` pairs that override it, e.g. 'auto,pooling=reduce_window'. Raises
  ValueError saying what is wrong.
  """
  base, *pairs = [part.strip() for part in spec.split(',')]
  if base not in ('auto', 'plain'):
    raise ValueError(f"start with 'auto' or 'plain', not {base!r}")
  impl = for_backend(backend) if base == 'auto' else PLAIN
  for pair in pairs:
    name, _, form = pair.partition('=')
    if name not in FORMS:
      raise ValueError(f'{name!r} is not an operation; the operations are {", ".join(FORMS)}')
    if form not in FORMS[name]:
      raise ValueError(f'{name} is one of {", ".join(FORMS[name])}, not {form!r}')
    if name in CPU_ONLY and form != FORMS[name][0] and (backend or jax.default_backend()) != 'cpu':
      raise ValueError(f'{name}={form} is for the CPU backend only')
    impl = dataclasses.replace(impl, **{name: form})
  return impl
