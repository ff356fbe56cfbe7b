"""constraints.txt, the known-good versions, pins every package the project and its tests need."""

import os
import re

import pytest

tomllib = pytest.importorskip('tomllib')  # Python 3.11+

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _name(requirement: str) -> str:
  return re.split(r'[\s<>=!~;\[]', requirement, maxsplit=1)[0].lower().replace('_', '-')


def test_constraints_pin_every_dependency_of_the_project_and_its_tests():
  with open(os.path.join(REPO, 'pyproject.toml'), 'rb') as f:
    project = tomllib.load(f)['project']
  needed = {_name(r) for r in project['dependencies'] + project['optional-dependencies']['test']}
  with open(os.path.join(REPO, 'constraints.txt')) as f:
    pins = dict(line.strip().split('==') for line in f if line.strip() and line[0] != '#')
  pinned = {_name(name) for name in pins}
  assert needed - pinned == set()
  assert all(re.fullmatch(r'[\w.+!]+', version) for version in pins.values()), pins
