"""The family computes what it computed when the golden values were written.

``golden.py`` holds the cases (SBS, the wrapper, ``masked_updates``,
``magma``; element and leaf masks; stacked and unstacked trees; fixed and
adaptive p) and writes ``golden_values.json``. On the jax version (and XLA
optimisation setting) that wrote them every mask, state field and param is
bit for bit the same; on another,
the masks drawn at a fixed p still are (they depend on the key and the
shapes alone), and every state field's per-leaf sums agree to 1e-4.
"""

import json
import os

import jax
import numpy as np
import pytest

import golden

with open(golden.PATH, encoding='utf-8') as f:
  GOLDEN = json.load(f)
# Bit for bit only where the floats are computed as they were: the same jax,
# and XLA's backend optimisations on or off as they were (they fuse
# multiply-adds).
SAME_JAX = GOLDEN['jax'] == jax.__version__ and GOLDEN['xla_optimized'] == (
  golden.FAST_COMPILE not in os.environ.get('XLA_FLAGS', '')
)


def test_every_case_has_golden_values():
  assert set(GOLDEN['cases']) == set(golden.CASES)


@pytest.mark.parametrize('name', sorted(golden.CASES))
def test_golden_values(name):
  expected, found = GOLDEN['cases'][name], golden.run_case(name)
  fixed_p = not name.startswith(('sbs/adaptive', 'wrapper/adaptive'))
  if SAME_JAX or fixed_p:
    assert found['masks'] == expected['masks']
  if SAME_JAX:
    # Fields added since the values were written (a recorded layout) are new.
    assert {f: found['state'].get(f) for f in expected['state']} == expected['state']
    assert found['params'] == expected['params']
  for field, sums in expected['sums'].items():
    np.testing.assert_allclose(found['sums'][field], sums, rtol=1e-4, atol=1e-6, err_msg=field)


def test_a_changed_mask_or_state_changes_its_hash():
  tree = {'a': np.zeros(3, np.float32), 'b': np.ones((2, 2), np.int32)}
  changed = {'a': np.asarray([0, 0, 1e-7], np.float32), 'b': tree['b']}
  reshaped = {'a': tree['a'], 'b': tree['b'].reshape(4)}
  assert len({golden.digest(t) for t in (tree, changed, reshaped)}) == 3
