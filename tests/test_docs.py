"""The README's code runs, and the README's main-job command works."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def python_blocks(markdown):
  return re.findall(r'```python\n(.*?)```', markdown, flags=re.DOTALL)


def test_readme_python_snippets_run():
  blocks = python_blocks((ROOT / 'README.md').read_text())
  assert blocks, 'README has no python snippet'
  for block in blocks:
    exec(compile(block, 'README.md', 'exec'), {})  # pylint: disable=exec-used


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
