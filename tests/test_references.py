"""Every file that the Markdown, docstrings and comments name is one the repository holds."""

import ast
import io
import os
import re
import subprocess
import tokenize

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# To be pointed to docs/paper.md with that file's next change; then this set is empty.
_PENDING = set()

# URLs and paths rooted outside the repository ('~/.cache/x', '$IMAGENET_DIR/train', '<workdir>/x',
# '/data/x', '../shared/x') are removed before looking for repository paths.
_URL = re.compile(r'\b[a-z][\w+.-]*://\S*')
# A path-like token: words joined by '/', not continuing one rooted elsewhere, nor a file that
# a command in an example writes (--out=, --json=, --workdir=).
_TOKEN = re.compile(r'(?<![\w./~$<>@%{}*-])(?<!--out=)(?<!--json=)(?<!--workdir=)'
                    r'[A-Za-z_][\w.-]*(?:/[\w.*-]+)*/?')
# Bare names: a top-level document (README.md) or a module (ops.py). Lowercase .md
# names (report.md, results.md) are what commands write.
_BARE_DOC = re.compile(r'^[A-Z][A-Z0-9_-]*\.md$')
_BARE_MODULE = re.compile(r'^\w+\.py$')


def _is_repo_path(token: str, top_level: set[str]) -> bool:
  """Whether `token` names a path inside the repository: its first part is a top-level entry."""
  first, _, rest = token.partition('/')
  return bool(rest) and first in top_level


def named_paths(text: str, top_level: set[str]) -> set[str]:
  """The repository-relative paths, and bare names ending in .md or .py, that `text` names."""
  text = _URL.sub(' ', text)
  found = set()
  for token in _TOKEN.findall(text):
    token = token.rstrip('.')
    if '*' in token or '<' in token:  # a pattern or a placeholder, not one file
      continue
    if _is_repo_path(token, top_level) or _BARE_DOC.match(token) or _BARE_MODULE.match(token):
      found.add(token)
  return found


def python_prose(source: str) -> str:
  """The docstrings and comments of a Python file, one per line."""
  parts = []
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
      if (doc := ast.get_docstring(node, clean=False)) is not None:
        parts.append(doc)
  for tok in tokenize.generate_tokens(io.StringIO(source).readline):
    if tok.type == tokenize.COMMENT:
      parts.append(tok.string)
  return '\n'.join(parts)


def _held(root: str, path: str, modules: set[str]) -> bool:
  """Whether `root` holds `path`: a file or folder, a module written as a path
  (experiments/gpu_report, alexnet_jax/implementations.choose), or, bare, a module anywhere
  (ops.py)."""
  if '/' not in path and path.endswith('.py'):
    return path in modules
  stem = path.rsplit('.', 1)[0] if '.' in path.rsplit('/', 1)[-1] else path
  return any(os.path.exists(os.path.join(root, p)) for p in (path, path + '.py', stem + '.py'))


def dangling(root: str, files: list[str]) -> list[str]:
  """'file: name' for each path named in `files` (relative to `root`) that `root` does not hold."""
  top_level = set(os.listdir(root)) - {'.git'}
  modules = {os.path.basename(f) for f in files if f.endswith('.py')}
  missing = []
  for rel in files:
    with open(os.path.join(root, rel), encoding='utf-8') as f:
      text = f.read()
    if rel.endswith('.py'):
      text = python_prose(text)
    for name in sorted(named_paths(text, top_level)):
      if not _held(root, name.partition('#')[0].rstrip('/') or '.', modules):
        missing.append(f'{rel}: {name}')
  return missing


def _tracked(root: str) -> list[str]:
  out = subprocess.run(['git', 'ls-files', '--cached', '--others', '--exclude-standard'],
                       cwd=root, capture_output=True, text=True, check=True).stdout
  return [p for p in out.splitlines()
          if p.endswith(('.md', '.py')) and os.path.exists(os.path.join(root, p))]


def test_the_repository_holds_every_file_it_names():
  files = _tracked(REPO)
  assert 'README.md' in files and 'alexnet_jax/ops.py' in files
  assert set(dangling(REPO, files)) <= _PENDING


def test_a_dangling_reference_is_caught(tmp_path):
  (tmp_path / 'docs').mkdir()
  (tmp_path / 'docs' / 'paper.md').write_text('# The paper\n')
  (tmp_path / 'pkg').mkdir()
  (tmp_path / 'pkg' / 'ops.py').write_text(
      '"""How it runs; docs/paper.md says what, docs/missing.md does not exist."""\n'
      'X = "docs/gone.md"  # a string, not prose\n'
      '# PAPER.md, "Two towers": the towers.\n')
  (tmp_path / 'README.md').write_text(
      'See `docs/paper.md#data`, pkg/ops.py, [results](pkg/results.md) and BENCHMARKS.md;\n'
      'ops.py, pkg/ops.choose and `python -m pkg.ops` hold; gone.py does not.\n'
      'python -m pkg.ops --out=docs/figure.png --workdir=runs/x writes report.md.\n'
      'Not ours: runs/demo/metrics.jsonl, ~/.cache/alexnet_jax/stats, $DATA/train/x.JPEG,\n'
      '<workdir>/profile/, gs://bucket/runs/paper, https://example.org/pkg/x.py, cat.jpg,\n'
      'bvlc_alexnet.caffemodel, /data/imagenet/train, ../shared/data/imagenette.\n')
  assert dangling(str(tmp_path), ['README.md', 'pkg/ops.py']) == [
      'README.md: BENCHMARKS.md', 'README.md: gone.py', 'README.md: pkg/results.md',
      'pkg/ops.py: PAPER.md', 'pkg/ops.py: docs/missing.md']
