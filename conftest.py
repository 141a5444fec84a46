"""Set-up shared by every test folder (the library's, the benchmarks', each example's).

The tests compile hundreds of tiny programs, for which XLA's backend (LLVM)
optimisations cost more compile time than they save in running time: they
are off unless ``OPTAX_SBS_TEST_XLA_OPTIMIZE=1``. What is compiled (the HLO
and its fusions) is the same either way; the flag is set before JAX starts,
and the processes the tests start inherit it.
"""

import os

import pytest

DATA_DIR_VARIABLE = 'OPTAX_SBS_DATA_DIR'

_FAST_COMPILE = '--xla_backend_optimization_level=0'
if os.environ.get('OPTAX_SBS_TEST_XLA_OPTIMIZE') != '1':
  if _FAST_COMPILE not in os.environ.get('XLA_FLAGS', ''):
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' + _FAST_COMPILE).strip()


@pytest.fixture(scope='session')
def local_data():
  """``local_data(name) -> path`` of a local copy of a dataset file.

  The copy is looked for in the folder named by the ``OPTAX_SBS_DATA_DIR``
  environment variable; a test that asks for a file that is not there is
  skipped, with a message saying what to set.
  """

  def find(name: str) -> str:
    folder = os.environ.get(DATA_DIR_VARIABLE, '')
    path = os.path.join(folder, name)
    if not folder or not os.path.isfile(path):
      pytest.skip(f'needs a local copy of {name}: set {DATA_DIR_VARIABLE} to the folder holding it')
    return path

  return find
