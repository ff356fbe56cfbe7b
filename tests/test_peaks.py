"""The peak table's matching of device kinds, and the arithmetic float32 products run in."""

import types

import jax
import pytest

from experiments import peaks


def _gpu(kind, capability='9.0'):
  return types.SimpleNamespace(platform='gpu', device_kind=kind, compute_capability=capability)


@pytest.mark.parametrize('kind,math,tflops', [
    ('NVIDIA H100 80GB HBM3', 'bfloat16', 989), ('NVIDIA H100 80GB HBM3', 'tensorfloat32', 495),
    ('NVIDIA H100 80GB HBM3', 'float32', 67), ('NVIDIA H100 PCIe', 'bfloat16', 756),
    ('NVIDIA H100 NVL', 'bfloat16', 835.5), ('NVIDIA H200', 'bfloat16', 989),
    ('NVIDIA H200 NVL', 'float32', 60), ('NVIDIA GH200 480GB', 'bfloat16', 990),
    ('NVIDIA A100-SXM4-80GB', 'bfloat16', 312), ('NVIDIA A100-PCIE-40GB', 'tensorfloat32', 156),
    ('NVIDIA A100 80GB PCIe', 'float32', 19.5), ('NVIDIA A10', 'bfloat16', 125),
    ('NVIDIA L4', 'tensorfloat32', 60), ('NVIDIA L40S', 'bfloat16', 362.05),
    ('Tesla V100-SXM2-16GB', 'float32', 15.7), ('Tesla V100-PCIE-32GB', 'float32', 14),
    ('Tesla V100-SXM2-16GB', 'bfloat16', None), ('NVIDIA A10G', 'bfloat16', None),
    ('cpu', 'float32', None), ('TFRT_CPU_0', 'float32', None)])
def test_peaks_by_device_kind(kind, math, tflops):
  value, source = peaks.peak(kind, math)
  assert value == (tflops * 1e12 if tflops else None), source


@pytest.mark.parametrize('setting,capability,math', [
    (None, '9.0', ('tensorfloat32', 1)), ('default', '8.0', ('tensorfloat32', 1)),
    ('high', '9.0', ('tensorfloat32', 1)), ('tensorfloat32', '9.0', ('tensorfloat32', 1)),
    ('highest', '9.0', ('float32', 1)), ('float32', '8.6', ('float32', 1)),
    (None, '7.0', ('float32', 1)), ('F32_F32_F32', '9.0', ('float32', 1)),
    ('BF16_BF16_F32_X3', '9.0', ('bfloat16', 3))])
def test_float32_math_follows_the_precision_setting(setting, capability, math):
  assert peaks.float32_math(_gpu('NVIDIA H100 80GB HBM3', capability), setting) == math


def test_float32_math_without_a_compute_capability():
  assert peaks.float32_math(_gpu('NVIDIA A100-SXM4-40GB', None)) == ('tensorfloat32', 1)
  assert peaks.float32_math(_gpu('Tesla V100-SXM2-16GB', None)) == ('float32', 1)
  assert peaks.float32_math(jax.devices('cpu')[0], 'default') == ('float32', 1)


def test_fraction_of_peak():
  h100 = _gpu('NVIDIA H100 80GB HBM3')
  assert peaks.fraction_of_peak(98.9e12, h100, 'bfloat16')['fraction_of_peak'] == pytest.approx(0.1)
  f32 = peaks.fraction_of_peak(49.5e12, h100, 'float32')
  assert f32['math'] == 'tensorfloat32' and f32['fraction_of_peak'] == pytest.approx(0.1)
  highest = peaks.fraction_of_peak(6.7e12, h100, 'float32', setting='highest')
  assert highest['math'] == 'float32' and highest['fraction_of_peak'] == pytest.approx(0.1)
  assert peaks.fraction_of_peak(1e12, jax.devices('cpu')[0], 'float32')['fraction_of_peak'] is None
