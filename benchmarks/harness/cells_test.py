"""harness.cells: one cell type for every study."""

import pytest

from harness.cells import Cell
from harness.cells import by_name


def test_options_are_a_read_only_mapping_from_a_mapping_or_pairs():
  pairs = Cell('sbs', 'sbs', (('alpha', 0.1), ('lam', -4.0), ('lam', 0.0)))
  mapping = Cell('sbs', 'sbs', {'alpha': 0.1, 'lam': 0.0})
  assert dict(pairs.options) == {'alpha': 0.1, 'lam': 0.0}  # a later pair wins
  assert pairs == mapping and hash(pairs) == hash(mapping)
  with pytest.raises(TypeError):
    pairs.options['lam'] = 1.0  # type: ignore[index]


def test_cells_that_differ_in_any_field_differ():
  base = Cell('a', 'sbs', {'lam': 0.0})
  others = [
    Cell('b', 'sbs', {'lam': 0.0}),
    Cell('a', 'adamw', {'lam': 0.0}),
    Cell('a', 'sbs', {'lam': -4.0}),
    Cell('a', 'sbs', {'lam': 0.0}, table='3'),
    Cell('a', 'sbs', {'lam': 0.0}, kind='dropout'),
  ]
  assert len({base, *others}) == 6
  assert all(base != other for other in others)


def test_kind_defaults_to_the_method():
  assert Cell('x', 'adamw').kind == 'adamw'
  assert Cell('dropout', 'adamw', {'dropout': 0.1}, kind='dropout').kind == 'dropout'


def test_with_options_renames_and_overrides():
  cell = Cell('sbs', 'sbs', {'alpha': 0.1, 'lam': 0.0}, table='3')
  rate = cell.with_options('sbs, lr=0.2', learning_rate=0.2)
  assert rate.name == 'sbs, lr=0.2' and rate.table == '3' and rate.method == 'sbs'
  assert list(rate.options) == ['alpha', 'lam', 'learning_rate']
  assert dict(cell.with_options('x', {'lam': -4.0}).options) == {'alpha': 0.1, 'lam': -4.0}
  assert dict(cell.options) == {'alpha': 0.1, 'lam': 0.0}  # unchanged


def test_by_name_refuses_a_name_given_twice():
  assert list(by_name([Cell('a', 'sgd'), Cell('b', 'sbs')])) == ['a', 'b']
  with pytest.raises(ValueError, match="two cells are named 'a'"):
    by_name([Cell('a', 'sgd'), Cell('a', 'sbs')])
