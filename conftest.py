"""Fixtures shared by every test folder (the library's, the benchmarks', each example's)."""

import os

import pytest

DATA_DIR_VARIABLE = 'OPTAX_SBS_DATA_DIR'


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
