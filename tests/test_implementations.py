"""How an implementation is chosen for a backend and from a config's field, that each operation
runs the form it names, and that the network is jitted with its compiler options."""

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from alexnet_jax import implementations, ops
from alexnet_jax.model import AlexNet, create_model


def test_implementation_dispatches_each_operation_to_its_form(monkeypatch):
  calls = []
  for name in ('conv', 'conv_per_tower', 'conv_space_to_depth'):
    monkeypatch.setattr(ops, name, lambda *a, name=name, **k: calls.append(name))
  fast = implementations.Implementation('per_tower', 'space_to_depth')
  x, kernel = jnp.zeros((1, 8, 8, 4)), jnp.zeros((3, 3, 2, 4))
  fast.conv(x, kernel, 1, 1, 2)  # grouped
  fast.conv(x, kernel, 4, 0, 1)  # strided, one group
  fast.conv(x, kernel, 1, 1, 1)  # neither
  implementations.PLAIN.conv(x, kernel, 4, 0, 1)
  assert calls == ['conv_per_tower', 'conv_space_to_depth', 'conv', 'conv']
  for name in ('add_bias', 'add_bias_matmul_gradient'):
    monkeypatch.setattr(ops, name, lambda *a, name=name: calls.append(name))
  implementations.PLAIN.add_bias(x, kernel)
  implementations.Implementation(bias='matmul_gradient').add_bias(x, kernel)
  assert calls[-2:] == ['add_bias', 'add_bias_matmul_gradient']


def test_choose_reads_a_config_field():
  assert implementations.choose('plain') == implementations.PLAIN
  measured = implementations.MEASURED
  assert implementations.choose('auto', backend='cpu') in (measured['cpu'], measured['cpu+ynnpack'])
  assert implementations.choose('auto', backend='a backend never measured') == implementations.PLAIN
  mixed = implementations.choose('auto, pooling=strided_views', backend='cpu')
  assert mixed.pooling == 'strided_views' and mixed.lrn == 'custom_gradient'
  mixed = implementations.choose('auto, lrn=autodiff', backend='cpu')
  assert mixed.lrn == 'autodiff' and mixed.grouped_conv == measured['cpu'].grouped_conv
  assert implementations.choose('plain,lrn=custom_gradient').lrn == 'custom_gradient'
  with pytest.raises(ValueError, match="start with 'auto' or 'plain'"):
    implementations.choose('fast')
  with pytest.raises(ValueError, match='not an operation; the operations are grouped_conv'):
    implementations.choose('auto,pool=strided_views')
  with pytest.raises(ValueError, match="pooling is one of reduce_window, strided_views, not 'x'"):
    implementations.choose('auto,pooling=x')


def test_a_backend_never_measured_runs_the_plain_forms():
  # Without a measurement by this code on a backend, an entry for it would be a guess.
  assert set(implementations.MEASURED) == {'cpu', 'cpu+ynnpack'}
  for backend in ('gpu', 'cuda', 'rocm', 'tpu'):
    assert (implementations.for_backend(backend) == implementations.PLAIN
            == implementations.choose('auto', backend=backend))
  assert implementations.PLAIN.grouped_conv == 'feature_groups'


def _ynnpack_option_known() -> bool:
  try:
    ynnpack = implementations.Implementation(cpu_conv_kernels='ynnpack')
    jax.jit(lambda x: x + 1).lower(1.0).compile(compiler_options=ynnpack.compiler_options)
  except Exception:  # pylint: disable=broad-except
    return False
  return True


def test_ynnpack_is_chosen_only_on_the_cpus_it_was_measured_on(monkeypatch):
  def chosen(features):
    monkeypatch.setattr(implementations, '_cpu_features', lambda: features)
    implementations._ynnpack_measured_here.cache_clear()  # pylint: disable=protected-access
    return implementations.for_backend('cpu')
  try:
    assert chosen({'avx2', 'fma'}) == implementations.MEASURED[
        'cpu+ynnpack' if _ynnpack_option_known() else 'cpu']
    assert chosen({'avx2', 'fma', 'avx512f', 'amx_tile'}) == implementations.MEASURED[  # Intel Xeon
        'cpu+ynnpack' if _ynnpack_option_known() else 'cpu']
    assert chosen({'asimd'}) == implementations.MEASURED['cpu']  # Arm: unmeasured
  finally:
    implementations._ynnpack_measured_here.cache_clear()  # pylint: disable=protected-access
  assert implementations.Implementation(cpu_conv_kernels='ynnpack').compiler_options == {
      'xla_cpu_experimental_ynn_fusion_type': 'LIBRARY_FUSION_TYPE_DOT'}
  assert implementations.for_backend('gpu').compiler_options == {}
  assert implementations.PLAIN.compiler_options == {}
  with pytest.raises(ValueError, match='for the CPU backend only'):
    implementations.choose('auto,cpu_conv_kernels=ynnpack', backend='gpu')


def test_jit_passes_the_compiler_options(monkeypatch):
  seen = []
  monkeypatch.setattr(jax, 'jit', lambda fn, **kwargs: seen.append(kwargs) or fn)
  ynn = implementations.Implementation(cpu_conv_kernels='ynnpack')
  ynn.jit(abs, donate_argnums=0)
  implementations.PLAIN.jit(abs)
  assert seen == [{'compiler_options': ynn.compiler_options, 'donate_argnums': 0},
                  {'compiler_options': {}}]


def test_create_model_resolves_the_implementation_once():
  model_config = ml_collections.ConfigDict({'arch': 'cifar_cnn', 'dtype': 'float32'})
  assert create_model(model_config, 'plain').implementation == implementations.PLAIN
  assert create_model(model_config).implementation == implementations.for_backend()
  with pytest.raises(TypeError, match='implementation'):
    AlexNet()  # a network never chooses its own
