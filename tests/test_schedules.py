"""optax_sbs.sigmoid_schedule."""

import jax
import numpy as np
import pytest

import optax_sbs


def reference(t, init, end, total, steepness, midpoint):
  s = lambda f: 1 / (1 + np.exp(steepness * (f - midpoint)))
  f = np.clip(t / total, 0, 1)
  return end + (init - end) * (s(f) - s(1.0)) / (s(0.0) - s(1.0))


@pytest.mark.parametrize('steepness,midpoint', [(10.0, 0.5), (4.0, 0.3)])
def test_matches_formula_and_endpoints(steepness, midpoint):
  sched = optax_sbs.sigmoid_schedule(0.1, 0.001, 1000, steepness, midpoint)
  steps = np.arange(0, 1500, 7)
  got = np.asarray(jax.jit(jax.vmap(sched))(steps))
  np.testing.assert_allclose(
    got, reference(steps, 0.1, 0.001, 1000, steepness, midpoint), rtol=1e-5
  )
  np.testing.assert_allclose(float(sched(0)), 0.1, rtol=1e-6)
  np.testing.assert_allclose(float(sched(1000)), 0.001, rtol=1e-6)
  np.testing.assert_allclose(float(sched(5000)), 0.001, rtol=1e-6)
  assert np.all(np.diff(got) <= 0)
  # The drop is fastest at the midpoint.
  assert np.argmin(np.diff(got)) == pytest.approx(midpoint * 1000 / 7, abs=2)


@pytest.mark.parametrize(
  'kwargs,error',
  [
    (dict(total_steps=0), ValueError),
    (dict(total_steps=10.5), TypeError),
    (dict(total_steps=10, steepness=0.0), ValueError),
    (dict(total_steps=10, midpoint=1.0), ValueError),
    (dict(total_steps=10, init_value=float('nan')), ValueError),
    (dict(total_steps=10, end_value='x'), TypeError),
  ],
)
def test_bad_arguments(kwargs, error):
  args = dict(init_value=0.1, end_value=0.001)
  args.update(kwargs)
  with pytest.raises(error):
    optax_sbs.sigmoid_schedule(**args)
