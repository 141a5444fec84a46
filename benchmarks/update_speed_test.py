"""benchmarks/update_speed.py and its timing package: the stand-in
generator, the leaf-count tree, the command line."""

import jax
import numpy as np
import pytest

from optax_sbs import _threefry

from timing import breakdown
from timing import trees
import update_speed


def test_cheap_bits_take_what_the_threefry_bits_take():
  """The stand-in replaces ``_threefry.random_bits`` in section 4: one
  offset gives a block of ``shape``, a sequence of offsets one block each."""
  key = jax.random.key(0)
  shape = (3, 4)
  offsets = [0, 12, 40]
  stacked = breakdown.cheap_bits(key, offsets, shape)
  assert stacked.shape == _threefry.random_bits(key, offsets, shape).shape == (3, *shape)
  for row, offset in enumerate(offsets):
    np.testing.assert_array_equal(stacked[row], breakdown.cheap_bits(key, offset, shape))
  assert len(np.unique(np.asarray(stacked))) == stacked.size


def test_the_stand_in_generator_replaces_the_private_name_and_puts_it_back():
  """Fails when the library's generator moves: section 4 would otherwise
  time the real generator twice."""
  original = _threefry.random_bits
  with breakdown.stand_in_generator():
    assert _threefry.random_bits is breakdown.cheap_bits
  assert _threefry.random_bits is original


def test_a_moved_generator_is_an_error(monkeypatch):
  monkeypatch.delattr(_threefry, 'random_bits')
  with pytest.raises(RuntimeError, match='random_bits has moved'):
    with breakdown.stand_in_generator():
      pass


def test_many_leaves_cycles_four_shapes():
  tree = trees.many_leaves(10, width=8)
  shapes = [x.shape for x in jax.tree.leaves(tree)]
  assert len(shapes) == 10
  assert set(shapes) == {(8, 24), (8, 32), (32,), (8,)}


def test_smoke_without_out_is_refused(capsys):
  # --smoke must not overwrite the committed table.
  with pytest.raises(SystemExit) as exit_info:
    update_speed.main(['--smoke'])
  assert exit_info.value.code == 2 and '--smoke needs --out' in capsys.readouterr().err


def test_an_unknown_tree_is_refused(capsys):
  with pytest.raises(SystemExit) as exit_info:
    update_speed.main(['--trees', 'resnet19', '--out', '/dev/null'])
  assert exit_info.value.code == 2 and "unknown tree 'resnet19'" in capsys.readouterr().err
