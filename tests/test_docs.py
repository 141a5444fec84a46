"""The README and the documentation: their code runs, the README's set-up is what
CI runs, every export has an API entry, and user-facing text speaks of the
product only (no paths outside the repository, no issue numbers)."""

import os
import pathlib
import re
import subprocess

import pytest

import optax_sbs
from optax_sbs import baselines

ROOT = pathlib.Path(__file__).resolve().parents[1]
GUIDES = sorted((ROOT / 'docs' / 'guides').glob('*.md'))


def python_blocks(markdown):
  return re.findall(r'```python\n(.*?)```', markdown, flags=re.DOTALL)


@pytest.mark.parametrize('path', [ROOT / 'README.md', *GUIDES], ids=lambda p: p.name)
def test_python_snippets_run(path):
  blocks = python_blocks(path.read_text())
  if path.name == 'README.md':
    assert blocks, 'README has no python snippet'
  for block in blocks:
    exec(compile(block, str(path.relative_to(ROOT)), 'exec'), {})  # pylint: disable=exec-used


def test_readme_has_two_setup_commands_that_match_ci():
  readme = (ROOT / 'README.md').read_text()
  setup = readme.split('## Set-up', 1)[1].split('\n## ', 1)[0]
  commands = [
    line
    for line in re.findall(r'```bash\n(.*?)```', setup, re.DOTALL)[0].splitlines()
    if line and not line.startswith('#')
  ]
  assert len(commands) == 2
  ci = (ROOT / '.ci' / 'run').read_text()
  assert commands[1] in ci
  assert 'python -m sphinx -W --keep-going -b html docs docs/_build/html' in commands[1]


def test_readme_is_short_and_cites_the_paper():
  readme = (ROOT / 'README.md').read_text()
  assert len(readme.splitlines()) <= 250
  assert 'arXiv:2004.06341' in readme


def api_entries():
  """The qualified names that ``docs/api.rst`` documents with an ``auto*`` directive."""
  module, names = None, set()
  for line in (ROOT / 'docs' / 'api.rst').read_text().splitlines():
    if m := re.match(r'\.\. currentmodule:: (\S+)', line):
      module = m.group(1)
    elif m := re.match(r'\.\. automodule:: (\S+)', line):
      names.add(m.group(1))
    elif m := re.match(r'\.\. auto(?:function|class|data):: (\S+)', line):
      names.add(f'{module}.{m.group(1)}')
  return names


def test_every_export_has_its_own_api_entry():
  exports = {f'optax_sbs.{name}' for name in optax_sbs.__all__}
  exports |= {f'optax_sbs.baselines.{name}' for name in baselines.__all__}
  entries = api_entries()
  assert sorted(exports - entries) == [], 'exports without an entry in docs/api.rst'
  assert sorted(entries - exports) == [], 'entries in docs/api.rst that are not exported'


def test_readme_api_table_lists_every_export_once():
  text = (ROOT / 'README.md').read_text()
  table = text.split('## The public API', 1)[1].split('\n## ', 1)[0]
  rows = [line for line in table.splitlines() if line.startswith('| ') and '`' in line]
  listed = []
  for row in rows:
    title, names = row.strip('| ').split(' | ', 1)
    prefix = 'optax_sbs.baselines.' if 'baselines' in title else 'optax_sbs.'
    listed += [prefix + name for name in re.findall(r'`(\w+)`', names)]
  exports = {f'optax_sbs.{name}' for name in optax_sbs.__all__ if name != 'baselines'}
  exports |= {f'optax_sbs.baselines.{name}' for name in baselines.__all__}
  assert len(listed) == len(set(listed)), 'a name listed twice in the README'
  assert sorted(set(listed) ^ exports) == [], 'README API table and __all__ differ'


# What user-facing text must not contain. Each pattern is written so that it
# does not match its own source line.
FORBIDDEN = {
  'a path outside the repository': (
    r'\.\./shared',
    r'/wor[k]/',
    r'shared/(?:data|paper)\b',
    r"'shared',\s*'data'",
  ),
  'an issue or pull-request number': (
    r'\b[Ii]ssues? #?\d+',
    r'\b(?:PR|[Pp]ull request) #?\d+',
  ),
}
# Whole folders that are not text for users: the benchmarks' trial caches.
NOT_SCANNED = ('benchmarks/results/trials/',)
BINARY_SUFFIXES = {'.png', '.npz', '.npy', '.jpg', '.gif', '.pdf', '.zip', '.gz'}
SKIPPED_DIRS = {'.git', '.venv', '__pycache__', '_build', 'build', 'dist', '.hypothesis'}


def tracked_files():
  """The repository's files as git lists them, or, outside a git checkout
  (an sdist), every file under the root but build outputs."""
  try:
    out = subprocess.run(
      ['git', 'ls-files', '-z'], cwd=ROOT, capture_output=True, check=True, timeout=60
    ).stdout
    return [name for name in out.decode().split('\0') if name]
  except (OSError, subprocess.SubprocessError):
    names = []
    for folder, dirs, files in os.walk(ROOT):
      dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS and not d.endswith('.egg-info')]
      names += [os.path.relpath(os.path.join(folder, f), ROOT) for f in files]
    return names


def test_user_facing_text_names_only_the_product():
  problems = []
  for name in tracked_files():
    name = name.replace(os.sep, '/')
    if name.startswith(NOT_SCANNED) or pathlib.PurePath(name).suffix in BINARY_SUFFIXES:
      continue
    try:
      text = (ROOT / name).read_text(encoding='utf-8')
    except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
      continue
    for what, patterns in FORBIDDEN.items():
      for number, line in enumerate(text.splitlines(), 1):
        if any(re.search(p, line) for p in patterns):
          problems.append(f'{name}:{number}: {what}: {line.strip()[:120]}')
  assert not problems, '\n'.join(problems)
