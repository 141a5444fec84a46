"""The analyses, on fabricated caches: pairing, rate checks, unfinished cells."""

import json
import os

import pytest

from harness import runner as runner_lib
from harness import store
from harness.analyses import cells_vs_sgd
from harness.analyses import cifar_tables
from harness.analyses import rate_sweep
from harness.analyses import scale_confirmation

PROVENANCE = {'machine': 'a machine', 'versions': 'some versions', 'command': 'a command'}


def _runner(tmp_path, study, scale='smoke'):
  options = runner_lib.Options(
    study=study, scale=scale, cached_only=True, workdir=str(tmp_path), out=str(tmp_path / 'r.md')
  )
  return runner_lib.Runner(runner_lib.load_study(study), options)


def _cache(runner, config, per_trial_rows, facts=None, provenance=PROVENANCE):
  """Caches one run per entry of ``per_trial_rows`` (trial t: seed + t)."""
  for trial, rows in enumerate(per_trial_rows):
    run = dict(config, seed=config['seed'] + trial)
    runner.store.add(
      {
        'key': store.run_key(run, runner.data_id),
        'config': store.run_config(run),
        'data': runner.data_id,
        'facts': facts or {'test_images': 100},
        'rows': rows,
        'seconds': 1.0,
        'provenance': provenance,
      }
    )


def _epochs(accuracy, epochs=2, train_accuracy=100.0, **extra):
  return [
    dict(
      method='m',
      epoch=e,
      train_loss=0.01,
      train_accuracy=train_accuracy,
      val_loss=2.0,
      val_accuracy=accuracy,
      **extra,
    )
    for e in range(1, epochs + 1)
  ]


def _table_config(runner, cell):
  return cifar_tables._Cells(runner, runner.scale).config(cell)  # pylint: disable=protected-access


def test_paper_tables_cells_and_pairing():
  study = runner_lib.load_study('paper_tables')
  scale = study.SCALES['cpu']
  t3, t4, t5 = (study.cells(scale, t) for t in '345')
  assert len(t3) == 18 and len(t4) == 18
  assert {dict(c.options).get('alpha') for c in t3 if 'local' in c.name} == {-0.1, 0.0, 0.1, 1.0}
  assert [c.method for c in t5] == ['sgd', 'dropout', 'adrop', 'esgd', 'asgd', 'sbs']
  # Every cell is paired with the SGD cell of its data, batch and rate.
  lr_cell = next(
    c for c in t3 if c.name.startswith('lr check: SBS') and dict(c.options)['learning_rate'] == 0.2
  )
  baseline = dict(cifar_tables.baseline(lr_cell).options)
  assert cifar_tables.baseline(lr_cell).method == 'sgd'
  assert baseline == {'learning_rate': 0.2, 'train_fraction': 1 / 32, 'batch_size': 16}
  # Table 4 under momentum ran SBS chained before SGD at the CPU scale; at
  # batch 16 (momentum 0) the two semantics are one method.
  by_label = {c.name: dict(c.options) for c in t4}
  assert by_label['SBS, 1/16, batch 128 (chain)']['sbs_momentum'] == 'chain'
  assert 'sbs_momentum' not in by_label['SBS, 1/16, batch 16']
  assert 'sbs_momentum' not in dict(study.cells(study.SCALES['paper'], '4')[-1].options)


def test_momentum_cells_pair_frozen_and_chain_with_sgd(tmp_path):
  runner = _runner(tmp_path, 'momentum_semantics', scale='cpu')
  cells = runner.study.cells(runner.scale, 'm')
  by_label = {c.name: c for c in cells}
  assert len(cells) == 18
  chain, frozen = (by_label[f'SBS {s}, 1/32, batch 32'] for s in ('chain', 'frozen'))
  assert _table_config(runner, chain)['sbs_momentum'] == 'chain'
  assert _table_config(runner, frozen)['sbs_momentum'] == 'frozen'
  assert (
    cifar_tables.baseline(chain)
    == cifar_tables.baseline(frozen)
    == cifar_tables.baseline(by_label['SGD, 1/32, batch 32'])
  )
  combined = _table_config(runner, by_label['SBS combined frozen, 1/64, batch 128'])
  assert (combined['batch_size'], combined['lam'], combined['scale_by_count']) == (128, 0.0, True)


def test_best_rates_compares_each_method_at_its_own_best_rate(tmp_path):
  runner = _runner(tmp_path, 'paper_tables')
  todo = runner.study.cells(runner.scale, '3')
  # Fabricated accuracies: SGD best at 0.1, SBS (paper setting) best at 0.2;
  # every other SBS reading at 99 must not count (it is not the paper
  # setting at another rate).
  acc = {
    ('sgd', 0.05): 40.0,
    ('sgd', 0.1): 45.0,
    ('sgd', 0.2): 42.0,
    ('sbs', 0.05): 30.0,
    ('sbs', 0.1): 35.0,
    ('sbs', 0.2): 44.0,
  }
  for cell in dict.fromkeys(todo + [cifar_tables.baseline(c) for c in todo]):
    config = _table_config(runner, cell)
    value = acc.get((cell.method, config['learning_rate']), 99.0)
    reading = tuple(config[k] for k in ('alpha', 'lam', 'group', 'magnitude', 'scale_by_count'))
    if cell.method == 'sbs' and reading != (0.1, -4.0, 'type', 'cma', False):
      value = 99.0
    _cache(runner, config, [_epochs(value + t) for t in range(2)])
  cells = cifar_tables._Cells(runner, runner.scale)  # pylint: disable=protected-access
  (line,) = cifar_tables._best_rates(todo, cells)  # pylint: disable=protected-access
  assert 'SGD 0.05: 40.50, 0.1: 45.50, 0.2: 42.50' in line
  assert 'SBS (alpha 0.1, lam -4) 0.05: 30.50, 0.1: 35.50, 0.2: 44.50' in line
  assert 'best rate (0.2) vs SGD at its best (0.1)' in line
  assert '-1.00 points' in line and 'better in 0/2' in line


def test_frozen_vs_chain_pairs_cells_that_differ_only_in_semantics(tmp_path):
  runner = _runner(tmp_path, 'momentum_semantics')
  todo = runner.study.cells(runner.scale, 'm')
  for cell in dict.fromkeys(todo + [cifar_tables.baseline(c) for c in todo]):
    config = _table_config(runner, cell)
    # Fabricated: frozen = chain + 1 + t/2 for the combined reading at the
    # large batch only; every other pair ties.
    bump = (
      config['sbs_momentum'] == 'frozen' and config['scale_by_count'] and config['batch_size'] == 16
    )
    _cache(runner, config, [_epochs(40.0 + t + (1 + t / 2 if bump else 0)) for t in range(2)])
  cells = cifar_tables._Cells(runner, runner.scale)  # pylint: disable=protected-access
  lines = cifar_tables._frozen_vs_chain(todo, cells)  # pylint: disable=protected-access
  assert lines[0] == 'Frozen vs chain, paired by trial:'
  assert len(lines) == 1 + 3  # the small batch's paper setting + 1 fraction x 2 readings
  (bumped,) = [line for line in lines if 'combined, 1/100, batch 16' in line]
  assert 'frozen - chain +1.25 points' in bumped and 'in 2/2 trials' in bumped
  assert all('+0.00 points' in line for line in lines[1:] if line != bumped)


def test_table_rows_pair_with_sgd_and_unfinished_cells_say_so(tmp_path):
  runner = _runner(tmp_path, 'paper_tables', scale='smoke')
  todo = runner.study.cells(runner.scale, '4')
  sgd, sbs, combined = todo
  stats_rows = dict(sbs_update_fraction=0.25, sbs_mean_count=2.0)
  _cache(runner, _table_config(runner, sgd), [_epochs(40.0), _epochs(42.0)])
  _cache(runner, _table_config(runner, sbs), [_epochs(41.0, **stats_rows), _epochs(45.0)])
  _cache(runner, _table_config(runner, combined), [_epochs(30.0)])  # 1 of 2 trials
  report = cifar_tables.report(runner)
  text = '\n'.join(report.lines)
  assert (
    '| SGD, 1/100, batch 16 | 41.00 ± 1.41 | 41.00 ± 1.41 | (baseline) | |  | 0.010 |  |' in text
  )
  assert '| SBS, 1/100, batch 16 | 43.00 ± 2.83 | 43.00 ± 2.83 | +2.00 | ' in text
  assert '| 2/2 | 0.010 | 0.250 / 2.00 |' in text
  assert (
    '| SBS combined, 1/100, batch 16 | not run yet (trials cached, cell and its SGD: 1/2, 2/2) |'
    in text
  )
  assert '- machine: a machine' in text and '- versions: some versions' in text
  assert 'class-balanced subset of 100 test images' in text
  assert 'JPEG' not in text  # said only of the copy the CPU scale used
  assert '_curves.png' in report.figures


def test_provenance_counts_runs_when_they_differ(tmp_path):
  runner = _runner(tmp_path, 'overfit')
  sgd = runner.study.CELLS[0]
  config = runner.config(method='sgd', **_overfit_base(runner))
  _cache(runner, config, [_epochs(40.0)])
  run = dict(config, seed=config['seed'] + 1)
  other = dict(PROVENANCE, versions='newer versions')
  runner.store.add(
    dict(
      runner.store.get(store.run_key(dict(config, seed=config['seed']), runner.data_id)),
      key=store.run_key(run, runner.data_id),
      provenance=other,
    )
  )
  assert runner.rows(config, 2, sgd.name) is not None
  assert runner.provenance_lines() == [
    '- machine: a machine',
    '- versions: some versions (1 runs); newer versions (1 runs)',
    '- training time of all cells (sum over their cached trials): 0.00 h',
  ]


def _overfit_base(runner):
  return cells_vs_sgd.base_config(runner.scale)


def test_overfit_pairs_cells_and_checks_rates(tmp_path):
  runner = _runner(tmp_path, 'overfit')
  base = _overfit_base(runner)

  def cache(cell, accuracies, train_accuracy=100.0):
    config = runner.config(method=cell.method, **dict(base, **dict(cell.options)))
    _cache(runner, config, [_epochs(a, train_accuracy=train_accuracy) for a in accuracies])

  sgd, dropout, *others = runner.study.CELLS
  cache(sgd, [40.0, 42.0])
  cache(dropout, [43.0, 44.0], train_accuracy=95.0)
  for i, cell in enumerate(others):
    cache(cell, [30.0 + i, 31.0 + i])
  best_sbs = others[-1]  # the highest of the SBS cells (the last one)
  for reference, at_half, at_double in ((sgd, 39.0, 45.0), (best_sbs, 20.0, 50.0)):
    cache(cells_vs_sgd.with_rate(reference, 0.05), [at_half, at_half])
    cache(cells_vs_sgd.with_rate(reference, 0.2), [at_double, at_double + 2])
  report = cells_vs_sgd.report(runner)
  cells = {c['name']: c for c in report.payload['cells']}
  assert cells['SGD']['vs_sgd'] is None and cells['SGD']['test_accuracy'] == 41.0
  drop = cells['Dropout (0.5)']
  assert drop['train_accuracy'] == 95.0 and drop['trials'] == 2
  assert drop['vs_sgd']['diff'] == 2.5 and drop['vs_sgd']['wins'] == 2
  lo, hi = drop['vs_sgd']['ci95']
  assert lo < 2.5 < hi
  assert drop['method'] == 'dropout' and drop['options'] == {}
  # A rate cell is paired with SGD at its own rate.
  sbs_double = cells[f'{best_sbs.name}, lr=0.2']
  assert sbs_double['vs_sgd']['diff'] == 5.0 and sbs_double['options']['learning_rate'] == 0.2
  assert cells['SGD, lr=0.2']['vs_sgd'] is None  # SGD at a rate is that rate's baseline
  text = '\n'.join(report.lines)
  assert f'{best_sbs.name} 0.05: 20.00, 0.1: ' in text
  assert 'The SBS cell at its best rate (0.2) vs SGD at its best (0.2), paired: +5.00' in text


def test_overfit_unfinished_cells_are_reported_as_such(tmp_path):
  report = cells_vs_sgd.report(_runner(tmp_path, 'overfit'))
  text = '\n'.join(report.lines)
  assert '| SGD | not run yet (0/2 trials cached) |' in text
  assert 'Learning-rate check: not finished yet.' in text
  assert report.payload == {'cells': []} and not report.figures


def _steps(val, steps=(10, 20), test=None):
  rows = [
    dict(method='m', step=s, val_loss=val + (steps[-1] - s) / 1000, tokens_per_sec=100.0)
    for s in steps
  ]
  rows[-1]['test_loss'] = val + 0.1 if test is None else test
  return rows


def test_rate_sweep_reports_each_method_at_its_best_rate(tmp_path):
  runner = _runner(tmp_path, 'lm')
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
    _cache(runner, config, [_steps(loss + t / 100) for t in range(2)], facts={'params': 1234})
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
    rows = _steps(val, steps)
    for r in rows:
      r['train_eval_loss'] = r['val_loss'] - 0.2
    per_trial.append(rows)
  _cache(runner, config, per_trial, facts={'params': 99, 'unigram_entropy': 3.0})


def test_scale_confirmation_runs_each_cell_at_the_rate_the_sweep_chose(tmp_path):
  runner = _runner(tmp_path, 'lm_medium')
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
  runner = _runner(tmp_path, 'lm_medium')
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
    rows = [dict(_steps(self.loss(rate))[-1], trial=0)]
    return scale_confirmation.Runs(name, rate, rows, {}, [0])


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
  cells, chosen = scale_confirmation._sweep(grid, 'x', rates, (2, 6))  # pylint: disable=protected-access
  assert grid.asked == asked and chosen == best and list(cells) == sorted(asked)


def test_sweep_widens_until_it_spans_the_best_rate_divided_and_times_the_span():
  # Rates 1, 1.5, 2.25, ...: the best (3.375, index 3) is inside the first
  # slice (2, 6), but 2.25 > 3.375 / 2, so one more step below (1.5); 7.6 >=
  # 2 * 3.375 above: nothing more there.
  rates = tuple(1.5**i for i in range(8))
  grid = _FakeGrid(lambda r: 1.0 + abs(r - rates[3]))
  cells, chosen = scale_confirmation._sweep(grid, 'x', rates, (2, 6), span=2.0)  # pylint: disable=protected-access
  assert chosen == rates[3] and grid.asked == [rates[i] for i in (2, 3, 4, 5, 1)]
  # Without a span, the first slice is enough.
  grid = _FakeGrid(lambda r: 1.0 + abs(r - rates[3]))
  scale_confirmation._sweep(grid, 'x', rates, (2, 6))  # pylint: disable=protected-access
  assert grid.asked == [rates[i] for i in (2, 3, 4, 5)]


def test_sweep_waits_for_unfinished_cells():
  grid = _FakeGrid(lambda r: 1.0 + abs(r - 2), missing=(3,))
  cells, chosen = scale_confirmation._sweep(grid, 'x', tuple(range(8)), (2, 6))  # pylint: disable=protected-access
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
  assert scale_confirmation._verdict(diff, lo, hi, -0.0207) == verdict  # pylint: disable=protected-access


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
  runner = _runner(tmp_path, 'lm_tuned')
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
  runner = _runner(tmp_path, 'lm_horizon')
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
