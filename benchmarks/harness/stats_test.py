"""harness.stats: paired intervals and the per-trial reductions of rows."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from harness import stats


def test_paired_difference_confidence_interval():
  a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.5, 1.0, 2.5, 2.0])
  mean, lo, hi, wins = stats.paired_difference(a, b)
  d = a - b  # 0.5, 1, 0.5, 2: mean 1, sd 0.7071, t(0.975, 3) = 3.1824
  half = 3.1824463 * np.std(d, ddof=1) / 2
  assert mean == pytest.approx(1.0)
  assert (lo, hi) == pytest.approx((1 - half, 1 + half), rel=1e-6)
  assert wins == 4
  # Losses: a wins where it is lower.
  assert stats.paired_difference(a, b, better='lower')[3] == 0
  assert stats.paired_difference(b, a, better='lower')[:3] == pytest.approx((-1, -hi, -lo))
  with pytest.raises(ValueError, match='better'):
    stats.paired_difference(a, b, better='smaller')


def test_paired_interval_is_scipys_and_one_trial_has_none():
  rng = np.random.default_rng(0)
  a, b = rng.normal(45, 1, 5), rng.normal(44, 1, 5)
  mean, lo, hi, _ = stats.paired_difference(a, b)
  half = scipy_stats.t.ppf(0.975, 4) * (a - b).std(ddof=1) / np.sqrt(5)  # by hand
  assert (lo, hi) == pytest.approx((mean - half, mean + half), rel=1e-12)
  assert np.isnan(stats.paired_difference(a[:1], b[:1])[1])
  assert stats.paired_difference(a, a + 1)[:3] == (-1.0, -1.0, -1.0)  # no spread
  assert stats.mean_std(np.array([41.0])) == '41.00'
  assert stats.mean_std(np.array([41.0, 43.0])) == '42.00 ± 1.41'
  assert stats.mean_std(np.array([1.0, 1.5]), 4) == '1.2500 ± 0.3536'


def test_reductions_order_each_trial_by_epoch():
  rows = [
    {'trial': t, 'epoch': e, 'train_loss': 10 * t + e, 'val_accuracy': 100 * t + e**2}
    for t in range(3)
    for e in (2, 1, 3)
  ]
  np.testing.assert_array_equal(stats.final(rows, 'train_loss'), [3, 13, 23])
  np.testing.assert_array_equal(stats.maximum(rows), [9, 109, 209])
  # The last 10% of 3 epochs is the last epoch.
  np.testing.assert_array_equal(stats.last_fraction_mean(rows), [9, 109, 209])
  np.testing.assert_array_equal(stats.mean_curve(rows), [101, 104, 109])


def test_last_fraction_mean_takes_the_last_tenth_of_epochs():
  rows = [{'trial': 0, 'epoch': e, 'val_accuracy': float(e)} for e in range(1, 21)]
  assert stats.last_fraction_mean(rows)[0] == 19.5  # epochs 19 and 20


def test_step_curves_and_final_by_step():
  rows = [{'trial': t, 'step': s, 'val_loss': s + t} for t in (1, 0) for s in (20, 10)]
  steps, values = stats.step_curves(rows)
  np.testing.assert_array_equal(steps, [10, 20])
  np.testing.assert_array_equal(values, [[10, 20], [11, 21]])
  np.testing.assert_array_equal(stats.final(rows, 'val_loss', order='step'), [20, 21])


def test_update_statistics_average_over_epochs_and_trials():
  rows = [
    {'trial': t, 'epoch': e, 'sbs_update_fraction': 0.1 * (t + e), 'sbs_mean_count': 1.0 + t * e}
    for t in range(2)
    for e in (1, 2)
  ]
  # fractions 0.1, 0.2, 0.2, 0.3 -> 0.2; counts 1, 1, 2, 3 -> 1.75
  assert stats.update_statistics(rows) == '0.200 / 1.75'
  assert stats.update_statistics([{'trial': 0, 'epoch': 1}]) == ''


def test_ratios_are_taken_within_each_round():
  # Round 2 is a slow spell for both: the median of the per-round ratios is
  # 0.5, the ratio of the medians (2 / 5 = 0.4) is not.
  per_round = {'base': [10.0, 4.0, 5.0], 'cell': [5.0, 2.0, 2.0]}
  out = stats.ratios_to_baseline(per_round, 'base')
  assert out['base'] == {'median': 5.0, 'ratio': 1.0, 'ratio_quartiles': [1.0, 1.0]}
  assert out['cell']['median'] == 2.0
  assert out['cell']['ratio'] == pytest.approx(0.5)
  assert out['cell']['ratio_quartiles'] == pytest.approx([0.45, 0.5])
