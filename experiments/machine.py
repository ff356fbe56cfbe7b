"""The machine a benchmark ran on, as BENCHMARKS.md records it: device, CPU, versions.

"""

import datetime
import importlib.metadata
import os
import platform

PACKAGES = ('jax', 'jaxlib', 'jax-cuda12-plugin', 'jax-cuda13-plugin', 'flax', 'optax', 'grain',
            'numpy', 'torch')


def version(package: str) -> str:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return 'absent'


def cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      return next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
  except (OSError, StopIteration):
    return platform.processor() or platform.machine()


def describe(devices: bool = True) -> dict:
  """Device (unless `devices` is False: nothing touches an accelerator), CPU, load, versions."""
  info = {'date': datetime.date.today().isoformat(), 'device_kind': 'not probed',
          'platform': '?', 'device_count': 0, 'cpu': cpu_model(), 'cores': os.cpu_count(),
          'python': platform.python_version(),
          'load_average': os.getloadavg()[0] if hasattr(os, 'getloadavg') else None,
          'versions': {p: version(p) for p in PACKAGES}}
  if devices:
    import jax  # pylint: disable=g-import-not-at-top
    device = jax.devices()[0]
    info.update(device_kind=device.device_kind, platform=device.platform,
                device_count=jax.device_count())
    if getattr(device, 'compute_capability', None):
      info['compute_capability'] = str(device.compute_capability)
  return info


def one_line(info: dict) -> str:
  versions = ', '.join(f'{p} {v}' for p, v in info['versions'].items() if v != 'absent')
  device = f'{info["device_count"]} x {info["device_kind"]} ({info["platform"]})'
  load = info.get('load_average')
  load = f', load average {load:.1f}' if load is not None else ''
  return (f'{device}; CPU {info["cpu"]}, {info["cores"]} cores{load}; Python {info["python"]}, '
          f'{versions}; {info["date"]}')

