"""Errors that a user can fix. The CLI prints them as one paragraph, without a traceback."""


class UserError(Exception):
  """Something in the user's config, data or workdir is wrong; the message says what to do."""


class ConfigError(UserError):
  """A config field has a value the project cannot run with."""


class DataError(UserError):
  """A dataset is missing, empty or laid out in a way the project cannot read."""


class CheckpointError(UserError):
  """A checkpoint in the workdir cannot be resumed with the given config."""


def require(ok: bool, field: str, value, what: str) -> None:
  """Raises ConfigError naming config `field`, its `value` and `what` a valid one is."""
  if not ok:
    raise ConfigError(f'Config field {field} = {value!r} is invalid: {what}. Set it with '
                      f'--config.{field}=VALUE or in the config file.')
