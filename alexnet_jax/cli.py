"""What every command shares: one syntax for changing a config field, `--config.FIELD=VALUE`,
and one line, not a traceback, for a mistake in the flags.

Training and packing (`alexnet_jax.main`, `alexnet_jax.prepare`, `experiments.sweep`) read a
config file, `--config=FILE`, and any of its fields can be overridden. Evaluation and the figures
(`alexnet_jax.evaluate`, `experiments.figure4`) read the config saved in a checkpoint; there only
where its images are can change, `--config.data.FIELD=VALUE`, never the model.
"""

import contextlib
import difflib
import os
import runpy
import sys
import traceback
from typing import Any, Mapping

import jax
import ml_collections
from absl import app, flags
from ml_collections import config_flags

from alexnet_jax import logs
from alexnet_jax.errors import UserError


# Where training and evaluation keep JAX's persistent compilation cache, so that a restarted run
# loads its compiled programs instead of compiling them again (a config's
# `compilation_cache_dir` moves it; '' turns it off).
COMPILATION_CACHE_DIR = '~/.cache/alexnet_jax/jax'

_ONLY_DATA = ("only where the images are can change (--config.data.FIELD=VALUE, e.g. "
              "--config.data.val_dir=/data/val); the model and its recipe are the checkpoint's.")


def start(argv: list[str]) -> None:
  """What every command does first: refuses stray arguments, and keeps the libraries' routine
  log lines out of the user's way (alexnet_jax.logs)."""
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logs.quiet_library_logs()


@contextlib.contextmanager
def one_line_errors():
  """A mistake of the user's (UserError) inside the block ends the command with one line."""
  try:
    yield
  except UserError as e:
    sys.exit(f'error: {e}')


def define_config_file(default: str | None, help_string: str) -> flags.FlagHolder:
  """`--config=FILE` and its `--config.FIELD=VALUE` overrides (ml_collections' config_flags).
  A default file is read, and the overrides checked against it, here and now."""
  try:
    return config_flags.DEFINE_config_file('config', default, help_string, lock_config=True)
  except (AttributeError, KeyError) as e:  # an override of a field that is not there, or a bug
    _raise_if_from_config_file(e, sys.argv, default)
    sys.exit(f'error: {_unknown_field(sys.argv, default)}')


def define_data_overrides(help_string: str) -> flags.FlagHolder:
  """`--config.data.FIELD=VALUE` for a command whose config comes from a checkpoint: the
  fields are checked against that config when it is read (`apply_data_overrides`)."""
  placeholder = ml_collections.ConfigDict({'data': ml_collections.ConfigDict()})
  try:
    return config_flags.DEFINE_config_dict('config', placeholder, help_string, lock_config=False,
                                           accept_new_attributes=True)
  except (AttributeError, KeyError):  # an override outside `data`
    bad = next(a.split('=')[0] for a in sys.argv if a.startswith('--config.')
               and not a.startswith('--config.data.'))
    sys.exit(f'error: {bad}: {_ONLY_DATA}')


def use_compilation_cache(directory: str = COMPILATION_CACHE_DIR) -> str | None:
  """Turns on JAX's persistent compilation cache in `directory` ('': off) for every program,
  however small or quick to compile; call it before the first compile. JAX_COMPILATION_CACHE_DIR,
  where set, wins, as JAX reads it itself. Returns the folder in use, or None."""
  if os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    return jax.config.jax_compilation_cache_dir
  if not directory:
    return None
  path = os.path.abspath(os.path.expanduser(directory))
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  return path


def overrides() -> dict[str, Any]:
  """The `--config.FIELD=VALUE` overrides given, as {'data.val_dir': '/data/val', ...}."""
  return dict(config_flags.get_override_values(flags.FLAGS['config']))


def config_file() -> str:
  """The config file `--config` names (or its default)."""
  return config_flags.get_config_filename(flags.FLAGS['config'])


def apply_data_overrides(config: ml_collections.ConfigDict, values: Mapping[str, Any]) -> None:
  """Sets `data.FIELD` values (where a checkpoint's images are now) in `config`, each as the
  field's type; a field outside `data`, or one the config does not have, is refused."""
  for key, value in values.items():
    section, _, field = key.partition('.')
    if section != 'data' or not field:
      raise UserError(f'--config.{key}: {_ONLY_DATA}')
    if field not in config.data:
      near = difflib.get_close_matches(field, list(config.data), n=1)
      raise UserError(f'--config.{key}: the config has no field data.{field}'
                      f'{f"; the nearest is data.{near[0]}" if near else ""}.')
    old = config.data[field]
    config.data[field] = value if isinstance(old, bool) or old is None else type(old)(value)


def _named_config(argv: list[str], default=None):
  """What --config names: a config file's path (perhaps with ':ARGUMENT'), or a ConfigDict."""
  given = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), None)
  return given or default or (flags.FLAGS['config'].default if 'config' in flags.FLAGS
                              else None)


def _raise_if_from_config_file(error: Exception, argv: list[str], default=None) -> None:
  """Raises `error` again, traceback and all, where the config file's own code raised it: a bug
  in the file is not a misspelled --config.FIELD, and is found where the traceback points."""
  config = _named_config(argv, default)
  if not isinstance(config, str):
    return
  path = os.path.realpath(config.split(':', 1)[0])
  if any(os.path.realpath(frame.f_code.co_filename) == path
         for frame, _ in traceback.walk_tb(error.__traceback__)):
    error.add_note(f'(a bug in the config file {config.split(":", 1)[0]}, not a misspelled '
                   '--config.FIELD)')
    raise error


def _unknown_field(argv: list[str], default=None) -> str:
  """The first --config.X=V override that names no field of the config, and the nearest."""
  config = _named_config(argv, default)
  if isinstance(config, str):  # a config file
    config = runpy.run_path(config)['get_config']()
  for arg in argv:
    if not arg.startswith('--config.') or not isinstance(config, ml_collections.ConfigDict):
      continue
    parts, node = arg[len('--config.'):].split('=', 1)[0].split('.'), config
    for i, part in enumerate(parts):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        section = '.'.join(parts[:i]) or 'the top level'
        fields = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
        near = difflib.get_close_matches(part, fields, n=1, cutoff=0.0)
        return (f'{arg.split("=")[0]}: {section} has no field {part!r}'
                f'{f"; the nearest is {near[0]!r}" if near else ""} (its fields: '
                f'{", ".join(fields)}).')
      node = node[part]
  return f'a --config.FIELD=VALUE override in {" ".join(argv[1:])} names no config field.'


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing (`app.run(main, flags_parser=cli.parse_flags)`), with one line
  instead of a traceback for a wrong flag or a misspelled config field."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f'error: {e}. Pass --helpfull to list the flags.')
  except (AttributeError, KeyError) as e:  # ml_collections: an override of a missing field
    _raise_if_from_config_file(e, argv)
    sys.exit(f'error: {_unknown_field(argv)}')
