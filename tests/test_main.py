"""The command line: wrong input gets one paragraph naming the problem, and no traceback."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, env=None):
  return subprocess.run([sys.executable, '-m', 'alexnet_jax.main', *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=300,
                        env={**os.environ, **(env or {})})


@pytest.mark.parametrize('flag,field', [
    ('--config.model.activation=sigmoid', 'model.activation'),
    ('--config.data.crop_size=300', 'data.crop_size'),
    ('--config.data.crop_size=40', 'data.crop_size'),   # the maps shrink to nothing
    ('--config.optim.momentum=1.5', 'optim.momentum'),
    ('--config.model.towers=3', 'model.towers'),
    ('--config.model.skip_convs=(5,)', 'model.skip_convs'),
    ('--config.model.arch=vgg', 'model.arch'),
])
def test_bad_config_value_names_the_field(tmp_path, flag, field):
  result = _run('--config=configs/demo.py', f'--workdir={tmp_path}', flag)
  assert result.returncode != 0
  assert field in result.stderr and 'Traceback' not in result.stderr


@pytest.mark.parametrize('bug,error', [("config.data.trian_dir", "AttributeError"),
                                       ("{}['batch_size']", "KeyError")])
def test_a_bug_in_a_config_file_is_reported_as_itself_not_as_a_misspelled_field(tmp_path, bug,
                                                                                 error):
  config_file = tmp_path / 'buggy.py'
  config_file.write_text('from configs import demo\n\n\ndef get_config():\n'
                         f'  config = demo.get_config()\n  config.name = {bug}\n'
                         '  return config\n')
  result = _run(f'--config={config_file}', f'--workdir={tmp_path / "run"}',
                '--config.batch_size=8')
  assert result.returncode != 0
  assert 'has no field' not in result.stderr and 'names no config field' not in result.stderr
  assert f'File "{config_file}", line 6, in get_config' in result.stderr
  assert error in result.stderr and '_unknown_field' not in result.stderr  # not run twice
  assert f'a bug in the config file {config_file}' in result.stderr


def test_paper_config_without_imagenet_says_where_it_looked(tmp_path):
  result = _run('--config=configs/paper.py', f'--workdir={tmp_path}',
                env={'IMAGENET_DIR': str(tmp_path / 'nowhere')})
  assert result.returncode != 0
  assert str(tmp_path / 'nowhere' / 'train') in result.stderr
  assert '--config.data.train_dir' in result.stderr and 'Traceback' not in result.stderr
  assert 'set IMAGENET_DIR, which this config reads' in result.stderr


def test_imagenette_without_its_data_names_imagenette_dir(tmp_path, monkeypatch):
  result = _run('--config=configs/imagenette_small.py', f'--workdir={tmp_path / "run"}',
                env={'IMAGENETTE_DIR': str(tmp_path / 'nowhere')})
  assert result.returncode != 0 and 'Traceback' not in result.stderr
  assert str(tmp_path / 'nowhere' / 'train') in result.stderr
  assert 'set IMAGENETTE_DIR, which this config reads, to the folder holding train/ and val/' in (
      result.stderr)
  # Unset, the default is the copy beside the repository, whatever the working directory.
  monkeypatch.delenv('IMAGENETTE_DIR', raising=False)
  monkeypatch.chdir(tmp_path)
  from configs import imagenette, imagenette_small  # pylint: disable=g-import-not-at-top
  expected = os.path.join(os.path.dirname(ROOT), 'shared', 'data', 'imagenette', 'train')
  assert imagenette.get_config().data.train_dir == expected
  assert imagenette_small.get_config().data.train_dir == expected
  assert imagenette_small.get_config().data.tfds_name == 'imagenette'


_CACHE_PROBE = '''
import sys, jax, jax.numpy as jnp
from alexnet_jax import cli
print(cli.use_compilation_cache(*sys.argv[1:]))
jax.jit(lambda x: x * 2 + 1)(jnp.ones(3)).block_until_ready()
'''


def test_the_compilation_cache_is_on_by_default_movable_and_off_with_an_empty_path(tmp_path):
  from alexnet_jax import cli  # pylint: disable=g-import-not-at-top
  from configs import default  # pylint: disable=g-import-not-at-top
  assert default.get_config().compilation_cache_dir == cli.COMPILATION_CACHE_DIR
  env = {k: v for k, v in os.environ.items() if not k.startswith('JAX_')}
  env['HOME'] = str(tmp_path / 'home')

  def probe(*args, **extra):
    out = subprocess.run([sys.executable, '-c', _CACHE_PROBE, *args], cwd=ROOT, check=True,
                         capture_output=True, text=True, env={**env, **extra})
    return out.stdout.split()[-1]

  home_cache = tmp_path / 'home' / '.cache' / 'alexnet_jax' / 'jax'
  assert probe() == str(home_cache) and os.listdir(home_cache)  # even a tiny program is cached
  assert probe(str(tmp_path / 'moved')) == str(tmp_path / 'moved')
  assert os.listdir(tmp_path / 'moved')
  assert probe('') == 'None'
  # The environment wins, as in tests/conftest.py and experiments/gpu_report.py.
  assert probe('', JAX_COMPILATION_CACHE_DIR=str(tmp_path / 'env')) == str(tmp_path / 'env')
