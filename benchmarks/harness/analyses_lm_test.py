"""The LM analyses on fabricated caches: rate sweeps, confirmations, tuning,
verdicts."""

import json
import os

import pytest

from harness import runner as runner_lib
from harness import sweeps
from harness import testing
from harness import verdicts
from harness.analyses import rate_sweep
from harness.analyses import scale_confirmation


def test_rate_sweep_reports_each_method_at_its_best_rate(tmp_path):
  runner = testing.runner_for(tmp_path, 'lm')
  scale = runner.scale
  losses = {  # final validation loss per (cell, rate); trial t adds t / 100
    ('adamw', 3e-3): 2.0,
    ('adamw', 1e-2): 1.5,
    ('masked_updates', 3e-3): 1.4,
    ('masked_updates', 1e-2): 1.8,
  }
  for (cell, lr), loss in losses.items():
    c = runner.study.CELLS[cell]
    config = runner.config(
      method=c.method, **scale['config'], **c.options, learning_rate=lr, seed=scale['seed']
    )
    testing.cache(
      runner, config, [testing.steps(loss + t / 100) for t in range(2)], facts={'params': 1234}
    )
  report = rate_sweep.report(runner)
  cells = {c['method']: c for c in report.payload['cells']}
  assert set(cells) == {'adamw', 'masked_updates'}
  assert cells['adamw']['options'] == {'learning_rate': 1e-2} and cells['adamw']['vs_adamw'] is None
  versus = cells['masked_updates']['vs_adamw']
  assert versus['diff'] == pytest.approx(-0.1) and versus['wins'] == 2
  assert cells['masked_updates']['options']['learning_rate'] == 3e-3
  assert cells['masked_updates']['val_loss'] == pytest.approx(1.405)
  text = '\n'.join(report.lines)
  assert '| adamw | 0.01* | 1.5050 ± 0.0071 | 1.6050 ± 0.0071 | (baseline) | | ' in text
  assert 'seeds 0..1' in text and '1,234 parameters' in text
  assert '| magma | not run yet (lr 0.003: 0/2, lr 0.01: 0/2 trials cached) |' in ''.join(
    line.replace('magma (probability=0.5, tau=2.0, granularity=leaf)', 'magma')
    for line in report.lines
  )
  assert '| adamw | 1.5050 | 1.6050 |' not in text  # the sweep table holds validation losses
  assert '| masked_updates | 1.4050 | 1.8050 |' in text


def _medium_cache(runner, cell, lr, phase, finals, extra=None, steps=(10, 20)):
  """Caches ``cell`` at ``lr`` with final validation losses ``finals`` (one
  per trial); train loss 0.2 lower, test 0.1 higher."""
  scale = runner.scale
  c = runner.study.CELLS[cell]
  seed = scale['seed'] if phase == 'confirmation' else scale['sweep_seed']
  config = runner.config(
    method=c.method, **scale['config'], **c.options, **(extra or {}), learning_rate=lr, seed=seed
  )
  per_trial = []
  for val in finals:
    rows = testing.steps(val, steps)
    for r in rows:
      r['train_eval_loss'] = r['val_loss'] - 0.2
    per_trial.append(rows)
  testing.cache(runner, config, per_trial, facts={'params': 99, 'unigram_entropy': 3.0})


def test_scale_confirmation_runs_each_cell_at_the_rate_the_sweep_chose(tmp_path):
  runner = testing.runner_for(tmp_path, 'lm_medium')
  low, high = runner.scale['learning_rates']
  sweep = {('adamw', low): [2.0, 2.2], ('adamw', high): [1.5, 1.7]}
  sweep |= {('sbs_lam0', low): [1.4, 1.5], ('sbs_lam0', high): [float('nan'), 3.5]}
  for (cell, lr), finals in sweep.items():
    _medium_cache(runner, cell, lr, 'sweep', finals)
  # The confirmation: AdamW and dropout at AdamW's best (high), the rest at SBS's (low).
  at = {'adamw': high, 'dropout': high, 'sbs_lam0': low, 'sbs_p05': low}
  finals = {'adamw': [1.6, 1.8], 'dropout': [1.7, 1.7], 'sbs_lam0': [1.5, 1.6]}
  finals |= {'sbs_p05': [1.6, 1.9]}
  for cell, lr in at.items():
    _medium_cache(runner, cell, lr, 'confirmation', finals[cell])
  _medium_cache(runner, 'sbs_lam0', high, 'confirmation', [0.1, 0.1])  # never read
  report = scale_confirmation.report(runner)
  cells = {c['name']: c for c in report.payload['cells']}
  assert report.payload['model'] == {
    'params': 99,
    'num_layers': 2,
    'embed_dim': 16,
    'scan_layers': True,
  }
  confirm = {n.split()[1]: c for n, c in cells.items() if c['phase'] == 'confirmation'}
  assert {n: c['learning_rate'] for n, c in confirm.items()} == at
  assert confirm['sbs_lam0']['vs_adamw']['diff'] == pytest.approx(-0.15)
  assert confirm['sbs_lam0']['vs_adamw']['wins'] == 2
  assert confirm['adamw']['vs_adamw'] is None and confirm['adamw']['seeds'] == [100, 101]
  assert confirm['dropout']['method'] == 'dropout' and confirm['dropout']['options'] == {
    'rate': 0.1
  }
  assert confirm['sbs_p05']['options'] == {'lam': -4.0, 'alpha': 0.1, 'probability': 0.5}
  assert confirm['sbs_lam0']['options'] == {'lam': 0.0, 'alpha': 0.1, 'probability': None}
  assert confirm['sbs_lam0']['train_loss'] == pytest.approx(1.35)
  # Fixed p = 0.5 is also paired with SBS lam = 0 (the adaptive term's share).
  assert confirm['sbs_p05']['vs_cell']['cell'] == 'sbs_lam0'
  assert confirm['sbs_p05']['vs_cell']['diff'] == pytest.approx(0.2)
  assert confirm['adamw']['vs_cell'] is None and confirm['sbs_lam0']['vs_cell'] is None
  assert confirm['sbs_lam0']['test_loss'] == pytest.approx(1.65)
  # The sweep: paired with AdamW at its best rate on the sweep's seeds; a
  # NaN and a loss above the character entropy both count as stalled.
  diverged = [c for c in cells.values() if c['phase'] == 'sweep' and c['stalled']]
  assert [(c['method'], c['learning_rate'], c['stalled']) for c in diverged] == [('sbs', high, 2)]
  assert len(cells) == 8
  sbs_low = cells[f'sweep: sbs_lam0 lr={low:g}']
  assert sbs_low['vs_adamw']['diff'] == pytest.approx(-0.15) and sbs_low['seeds'] == [0, 1]
  text = '\n'.join(report.lines)
  assert '(best), 2 stalled' not in text and '1.4500 ± 0.0707 (best)' in text
  assert "adamw, dropout at adamw's; sbs_lam0, sbs_p05 at sbs_lam0's." in text
  assert 'nan ± nan, 2 stalled' in text or 'nan, 2 stalled' in text
  _assert_rows_fit_their_tables(report.lines)


def test_scale_confirmation_waits_for_the_sweep(tmp_path):
  runner = testing.runner_for(tmp_path, 'lm_medium')
  low, _ = runner.scale['learning_rates']
  _medium_cache(runner, 'adamw', low, 'sweep', [2.0, 2.1])
  report = scale_confirmation.report(runner)
  text = '\n'.join(report.lines)
  assert 'confirmation adamw (waits for the sweep of adamw)' in text
  assert 'sweep adamw lr=0.01 (0/2 trials cached)' in text
  assert report.payload['cells'][0]['vs_adamw'] is None  # AdamW's best rate not known yet
  _assert_rows_fit_their_tables(report.lines)


def _assert_rows_fit_their_tables(lines):
  """Every row of a markdown table has as many cells as the table's head."""
  head = None
  for line in lines:
    if not line.startswith('|'):
      head = None
    elif head is None:
      head = line.count('|')
    else:
      assert line.count('|') == head, line


class _FakeGrid:
  """Cells whose mean final validation loss is ``loss(rate)``; counts the cells asked for."""

  def __init__(self, loss, missing=()):
    self.loss, self.missing, self.asked = loss, missing, []

  def cell(self, name, rate, phase):
    self.asked.append(rate)
    if rate in self.missing:
      return None
    rows = [dict(testing.steps(self.loss(rate))[-1], trial=0)]
    return sweeps.Runs(name, rate, rows, {}, [0])


@pytest.mark.parametrize(
  'best, asked',
  [
    (4, [2, 3, 4, 5]),  # inside the first slice: nothing more
    (1, [2, 3, 4, 5, 1, 0]),  # below it: one step at a time, to the grid's end
    (6, [2, 3, 4, 5, 6, 7]),  # above it, to where the best lies inside
  ],
)
def test_sweep_widens_only_while_the_best_rate_is_at_an_edge(best, asked):
  rates = tuple(range(8))
  loss = (lambda r: abs(r - best)) if best != 6 else (lambda r: abs(r - 6.2))
  grid = _FakeGrid(lambda r: 1.0 + loss(r))
  cells, chosen = sweeps.sweep(grid, 'x', rates, (2, 6))  # pylint: disable=protected-access
  assert grid.asked == asked and chosen == best and list(cells) == sorted(asked)


def test_sweep_widens_until_it_spans_the_best_rate_divided_and_times_the_span():
  # Rates 1, 1.5, 2.25, ...: the best (3.375, index 3) is inside the first
  # slice (2, 6), but 2.25 > 3.375 / 2, so one more step below (1.5); 7.6 >=
  # 2 * 3.375 above: nothing more there.
  rates = tuple(1.5**i for i in range(8))
  grid = _FakeGrid(lambda r: 1.0 + abs(r - rates[3]))
  cells, chosen = sweeps.sweep(grid, 'x', rates, (2, 6), span=2.0)  # pylint: disable=protected-access
  assert chosen == rates[3] and grid.asked == [rates[i] for i in (2, 3, 4, 5, 1)]
  # Without a span, the first slice is enough.
  grid = _FakeGrid(lambda r: 1.0 + abs(r - rates[3]))
  sweeps.sweep(grid, 'x', rates, (2, 6))  # pylint: disable=protected-access
  assert grid.asked == [rates[i] for i in (2, 3, 4, 5)]


def test_sweep_waits_for_unfinished_cells():
  grid = _FakeGrid(lambda r: 1.0 + abs(r - 2), missing=(3,))
  cells, chosen = sweeps.sweep(grid, 'x', tuple(range(8)), (2, 6))  # pylint: disable=protected-access
  assert chosen is None and grid.asked == [2, 3, 4, 5] and cells[3] is None


@pytest.mark.parametrize(
  'diff, lo, hi, verdict',
  [
    (-0.02, -0.03, -0.01, 'held'),
    (-0.0104, -0.02, -0.001, 'held'),  # at least half of -0.0207
    (-0.005, -0.008, -0.002, 'shrank'),  # below 0, but less than half
    (-0.015, -0.03, 0.001, 'shrank'),  # at least half, but the interval reaches 0
    (-0.005, -0.012, 0.002, 'vanished'),
    (0.0, -0.01, 0.01, 'vanished'),
    (0.004, 0.001, 0.007, 'reversed'),
  ],
)
def test_verdict_applies_the_rule_stated_before_the_runs(diff, lo, hi, verdict):
  assert verdicts.verdict(diff, lo, hi, -0.0207) == verdict  # pylint: disable=protected-access


def test_breadth_studies_state_their_rule_and_lm_mediums_reference():
  with open(os.path.join(runner_lib.RESULTS, 'lm_medium_cpu.json'), encoding='utf-8') as f:
    cells = json.load(f)['cells']
  lead = next(c for c in cells if c['name'].startswith('confirmation: sbs_lam0'))
  for name in ('lm_corpus', 'lm_horizon', 'lm_tuned'):
    study = runner_lib.load_study(name)
    assert study.REFERENCE == round(lead['vs_adamw']['diff'], 4)
    for word in ('*held*', '*shrank*', '*vanished*', '*reversed*', 'before the runs'):
      assert word in study.__doc__, (name, word)


def test_scale_confirmation_tunes_the_baseline_and_wraps_the_winner(tmp_path):
  runner = testing.runner_for(tmp_path, 'lm_tuned')
  spec = runner.study.TUNE
  rate = spec['rate']
  # b2 0.999 and weight decay 0 are each the best of their setting; the best
  # two settings' values together beat both; the schedule's change is worse.
  finals = {'b2 0.95': 2.05, 'b2 0.999': 1.95, 'weight decay 0': 1.9, 'weight decay 0.3': 2.1}
  finals |= {'decay to 0': 2.2}
  _medium_cache(runner, 'adamw', rate, 'sweep', [2.0, 2.0])
  for tag, val in finals.items():
    _medium_cache(runner, 'adamw', rate, 'tune', [val, val + 0.01], spec['variants'][tag])
  text = '\n'.join(scale_confirmation.report(runner).lines)
  assert 'tune adamw (combined) lr=0.004 (0/2 trials cached)' in text
  combined = {'b2': 0.999, 'weight_decay': 0.0}
  _medium_cache(runner, 'adamw', rate, 'tune', [1.8, 1.8], combined)
  _medium_cache(runner, 'adamw', 0.003, 'tune', [1.85, 1.85], combined)
  _medium_cache(runner, 'adamw', 0.006, 'tune', [1.7, 1.75], combined)
  report = scale_confirmation.report(runner)
  assert report.payload['tuning'] == {
    'cell': 'adamw',
    'rate': rate,
    'winner': 'combined',
    'changes': combined,
    'best_rate': 0.006,
  }
  text = '\n'.join(report.lines)
  assert 'confirmation adamw_tuned (combined) lr=0.006 (0/2 trials cached)' in text
  assert 'confirmation sbs_tuned (combined) lr=0.006 (0/2 trials cached)' in text
  _medium_cache(runner, 'adamw', 0.006, 'confirmation', [1.6, 1.7], combined)
  _medium_cache(runner, 'sbs_tuned', 0.006, 'confirmation', [1.55, 1.655], combined)
  report = scale_confirmation.report(runner)
  cells = {c['name']: c for c in report.payload['cells']}
  tuned = cells['confirmation: sbs_tuned (combined) lr=0.006']
  assert tuned['options'] | combined == tuned['options']  # the winner's settings, around SBS
  assert tuned['vs_cell']['cell'] == 'adamw_tuned'
  assert tuned['vs_cell']['diff'] == pytest.approx(-0.0475)
  headline = report.payload['headline']
  assert headline['cells'] == ['sbs_tuned', 'adamw_tuned']
  assert headline['diff'] == pytest.approx(-0.0475) and headline['verdict'] == 'held'
  assert cells['tune: adamw (weight decay 0) lr=0.004']['vs_adamw']['diff'] == pytest.approx(-0.095)
  text = '\n'.join(report.lines)
  assert '| combined (winner) | weight_decay 0, b2 0.999 |' in text
  assert '**held**' in text
  _assert_rows_fit_their_tables(report.lines)


def test_scale_confirmation_shows_the_difference_over_a_long_run(tmp_path):
  runner = testing.runner_for(tmp_path, 'lm_horizon')
  low, high = runner.scale['learning_rates']
  steps = (10, 20, 30, 40)
  for cell, finals in {('adamw', low): [2.0], ('adamw', high): [1.5]}.items():
    _medium_cache(runner, *cell, 'sweep', finals, steps=steps)
  for cell, finals in {('sbs_lam0', low): [1.9], ('sbs_lam0', high): [1.4]}.items():
    _medium_cache(runner, *cell, 'sweep', finals, steps=steps)
  _medium_cache(runner, 'adamw', high, 'confirmation', [1.5, 1.6], steps=steps)
  _medium_cache(runner, 'sbs_lam0', high, 'confirmation', [1.5, 1.61], steps=steps)
  report = scale_confirmation.report(runner)
  text = '\n'.join(report.lines)
  assert report.payload['headline']['verdict'] == 'vanished'
  assert '| 10 (mid-schedule) | +0.0050 |' in text and '| 40 (end of the run) | +0.0050 |' in text
  # The best validation loss of a run is its lowest over the evaluations.
  confirm = [c for c in report.payload['cells'] if c['phase'] == 'confirmation']
  assert confirm[0]['best_val_loss'] == pytest.approx(1.55)
  assert '_steps.png' in report.figures and '_curves.png' in report.figures
  report.figures['_steps.png'](str(tmp_path / 'steps.png'))
  assert (tmp_path / 'steps.png').stat().st_size > 0
  _assert_rows_fit_their_tables(report.lines)
