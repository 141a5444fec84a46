"""benchmarks/update_speed.py: the stand-in generator and the leaf-count tree."""

import jax
import numpy as np
import pytest

from optax_sbs import _threefry

import update_speed


def test_cheap_bits_take_what_the_threefry_bits_take():
  """The stand-in replaces ``_threefry.random_bits`` in section 4: one
  offset gives a block of ``shape``, a sequence of offsets one block each."""
  key = jax.random.key(0)
  shape = (3, 4)
  offsets = [0, 12, 40]
  stacked = update_speed.cheap_bits(key, offsets, shape)
  assert stacked.shape == _threefry.random_bits(key, offsets, shape).shape == (3, *shape)
  for row, offset in enumerate(offsets):
    np.testing.assert_array_equal(stacked[row], update_speed.cheap_bits(key, offset, shape))
  assert len(np.unique(np.asarray(stacked))) == stacked.size


def test_many_leaves_cycles_four_shapes():
  tree = update_speed.many_leaves(10, width=8)
  shapes = [x.shape for x in jax.tree.leaves(tree)]
  assert len(shapes) == 10
  assert set(shapes) == {(8, 24), (8, 32), (32,), (8,)}


def test_smoke_without_out_is_refused(capsys):
  # --smoke must not overwrite the committed table.
  with pytest.raises(SystemExit) as exit_info:
    update_speed.main(['--smoke'])
  assert exit_info.value.code == 2 and '--smoke needs --out' in capsys.readouterr().err
