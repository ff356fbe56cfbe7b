"""The dense peak a benchmark's FLOP/s are a fraction of: the device's, for the arithmetic its
float32 or bf16 products actually run in.

Peaks are FLOP/s without 2:4 sparsity, from the vendors' datasheets, by device kind; the FLOPs
themselves are counted by alexnet_jax/flops.py.
"""

import re

import jax

T = 1e12
# (tokens that must all occur in the device kind, peaks, source). The first match wins, so a
# more specific entry comes before the general one (H100 PCIe before H100).
PEAKS = [
    # NVIDIA H100 datasheet: PCIe 51 FP32, 756* TF32, 1,513* BF16 (* = with sparsity, 2x dense).
    (('h100', 'pcie'), {'float32': 51 * T, 'tensorfloat32': 378 * T, 'bfloat16': 756 * T},
     'NVIDIA H100 datasheet, PCIe'),
    # NVIDIA H100 datasheet: NVL 60 FP32, 835* TF32, 1,671* BF16.
    (('h100', 'nvl'), {'float32': 60 * T, 'tensorfloat32': 417.5 * T, 'bfloat16': 835.5 * T},
     'NVIDIA H100 datasheet, NVL'),
    # NVIDIA H100 datasheet: SXM 67 FP32, 989* TF32, 1,979* BF16 ('NVIDIA H100 80GB HBM3').
    (('h100',), {'float32': 67 * T, 'tensorfloat32': 495 * T, 'bfloat16': 989 * T},
     'NVIDIA H100 datasheet, SXM'),
    # NVIDIA GH200 datasheet: 67 FP32, 494 | 989* TF32, 990 | 1,979* BF16.
    (('gh200',), {'float32': 67 * T, 'tensorfloat32': 494 * T, 'bfloat16': 990 * T},
     'NVIDIA GH200 datasheet'),
    # NVIDIA H200 datasheet: NVL 60 FP32, 835* TF32, 1,671* BF16.
    (('h200', 'nvl'), {'float32': 60 * T, 'tensorfloat32': 417.5 * T, 'bfloat16': 835.5 * T},
     'NVIDIA H200 datasheet, NVL'),
    # NVIDIA H200 datasheet: SXM 67 FP32, 989* TF32, 1,979* BF16.
    (('h200',), {'float32': 67 * T, 'tensorfloat32': 495 * T, 'bfloat16': 989 * T},
     'NVIDIA H200 datasheet, SXM'),
    # NVIDIA A100 datasheet (SXM and PCIe alike): 19.5 FP32, 156 TF32, 312 BF16.
    (('a100',), {'float32': 19.5 * T, 'tensorfloat32': 156 * T, 'bfloat16': 312 * T},
     'NVIDIA A100 datasheet'),
    # NVIDIA A10 datasheet: 31.2 FP32, 62.5 TF32, 125 BF16. (AWS's A10G is another part with
    # no NVIDIA datasheet; it is left out rather than guessed.)
    (('a10',), {'float32': 31.2 * T, 'tensorfloat32': 62.5 * T, 'bfloat16': 125 * T},
     'NVIDIA A10 datasheet'),
    # NVIDIA L40S datasheet: 91.6 FP32, 183 TF32, 362.05 BF16.
    (('l40s',), {'float32': 91.6 * T, 'tensorfloat32': 183 * T, 'bfloat16': 362.05 * T},
     'NVIDIA L40S datasheet'),
    # NVIDIA L4 datasheet: 30.3 FP32, 120* TF32, 242* BF16.
    (('l4',), {'float32': 30.3 * T, 'tensorfloat32': 60 * T, 'bfloat16': 121 * T},
     'NVIDIA L4 datasheet'),
    # NVIDIA V100 datasheet: 15.7 FP32 (SXM2), 14 (PCIe), 16.4 (V100S); no TF32 or BF16 units.
    (('v100s',), {'float32': 16.4 * T}, 'NVIDIA V100 datasheet, V100S PCIe'),
    (('v100', 'pcie'), {'float32': 14 * T}, 'NVIDIA V100 datasheet, PCIe'),
    (('v100',), {'float32': 15.7 * T}, 'NVIDIA V100 datasheet, SXM2'),
    # NVIDIA T4 datasheet: 8.1 FP32; its tensor cores have no BF16 or TF32.
    (('t4',), {'float32': 8.1 * T}, 'NVIDIA T4 datasheet'),
]


def peak(device_kind: str, math: str) -> tuple[float | None, str]:
  """(dense peak FLOP/s, its source) of `device_kind` (jax.Device.device_kind) for `math`:
  'bfloat16', 'tensorfloat32' or 'float32'. (None, reason) where no peak is documented."""
  tokens = set(re.findall(r'[a-z0-9]+', device_kind.lower()))
  for needed, peaks, source in PEAKS:
    if set(needed) <= tokens:
      if math in peaks:
        return peaks[math], source
      return None, f'{source}: no {math} peak'
  return None, f'no documented peak for {device_kind!r}'


# How float32 convolutions and matrix products run on an NVIDIA GPU, from JAX's documentation
# of lax.Precision: DEFAULT and HIGH use TensorFloat-32 where the GPU has it (compute
# capability 8.0 and up: A100, H100), HIGHEST full float32. The jax_default_matmul_precision
# names map onto those levels or name an algorithm (lhs_rhs_accumulation, passes) directly.
_LEVELS = {None: 'default', 'default': 'default', 'fastest': 'default', 'bfloat16': 'default',
           'high': 'high', 'tensorfloat32': 'high', 'highest': 'highest', 'float32': 'highest'}
_ALGORITHMS = {'TF32_TF32_F32': ('tensorfloat32', 1), 'TF32_TF32_F32_X3': ('tensorfloat32', 3),
               'F32_F32_F32': ('float32', 1), 'BF16_BF16_F32': ('bfloat16', 1),
               'BF16_BF16_F32_X3': ('bfloat16', 3), 'BF16_BF16_F32_X6': ('bfloat16', 6),
               'BF16_BF16_F32_X9': ('bfloat16', 9)}


def float32_math(device: jax.Device, setting: str | None = None) -> tuple[str, int]:
  """(math, passes): the arithmetic float32 convolutions and matmuls use on `device` under
  the matmul-precision `setting` (default: jax.config.jax_default_matmul_precision), and how
  many passes of it each product takes. The peak to divide by is peak(...) / passes."""
  if setting is None:
    setting = jax.config.jax_default_matmul_precision
  if device.platform != 'gpu':
    return 'float32', 1  # lax.Precision has no effect on CPU
  if setting in _ALGORITHMS:
    return _ALGORITHMS[setting]
  capability = getattr(device, 'compute_capability', None)
  if capability:
    has_tf32 = int(str(capability).split('.')[0]) >= 8
  else:  # the peak table knows which GPUs have TF32 units
    has_tf32 = peak(device.device_kind, 'tensorfloat32')[0] is not None
  if _LEVELS.get(setting, 'default') != 'highest' and has_tf32:
    return 'tensorfloat32', 1
  return 'float32', 1


def fraction_of_peak(flops_per_sec: float, device: jax.Device, dtype: str,
                     setting: str | None = None) -> dict:
  """The achieved FLOP/s as a fraction of `device`'s dense peak for compute `dtype`, with the
  math and peak used; fraction is None where no peak is documented."""
  math, passes = ('bfloat16', 1) if dtype == 'bfloat16' else float32_math(device, setting)
  value, source = peak(device.device_kind, math)
  value = value / passes if value else None
  return {'math': math if passes == 1 else f'{math} x{passes}',
          'peak_tflops': value / T if value else None, 'peak_source': source,
          'fraction_of_peak': flops_per_sec / value if value else None}
