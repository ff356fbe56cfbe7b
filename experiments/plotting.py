"""Matplotlib without a screen, and one way to write a figure."""

import os


def pyplot():
  """matplotlib.pyplot on the Agg backend (headless machines, tests, CI)."""
  import matplotlib  # pylint: disable=g-import-not-at-top  (only the figure scripts need it)
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def save(fig, out: str, dpi: int = 130) -> str:
  """Writes `fig` to the PNG `out` (creating its folder) and closes it; returns `out`."""
  fig.tight_layout()
  os.makedirs(os.path.dirname(out) or '.', exist_ok=True)
  fig.savefig(out, dpi=dpi)
  pyplot().close(fig)
  return out
