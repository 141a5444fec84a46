"""The CIFAR analyses on fabricated caches: pairing with SGD, rate checks,
unfinished cells."""

from harness import runner as runner_lib
from harness import store
from harness import testing
from harness.analyses import cells_vs_sgd
from harness.analyses import cifar_tables


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
  runner = testing.runner_for(tmp_path, 'momentum_semantics', scale='cpu')
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
  runner = testing.runner_for(tmp_path, 'paper_tables')
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
    testing.cache(runner, config, [testing.epochs(value + t) for t in range(2)])
  cells = cifar_tables._Cells(runner, runner.scale)  # pylint: disable=protected-access
  (line,) = cifar_tables._best_rates(todo, cells)  # pylint: disable=protected-access
  assert 'SGD 0.05: 40.50, 0.1: 45.50, 0.2: 42.50' in line
  assert 'SBS (alpha 0.1, lam -4) 0.05: 30.50, 0.1: 35.50, 0.2: 44.50' in line
  assert 'best rate (0.2) vs SGD at its best (0.1)' in line
  assert '-1.00 points' in line and 'better in 0/2' in line


def test_frozen_vs_chain_pairs_cells_that_differ_only_in_semantics(tmp_path):
  runner = testing.runner_for(tmp_path, 'momentum_semantics')
  todo = runner.study.cells(runner.scale, 'm')
  for cell in dict.fromkeys(todo + [cifar_tables.baseline(c) for c in todo]):
    config = _table_config(runner, cell)
    # Fabricated: frozen = chain + 1 + t/2 for the combined reading at the
    # large batch only; every other pair ties.
    bump = (
      config['sbs_momentum'] == 'frozen' and config['scale_by_count'] and config['batch_size'] == 16
    )
    testing.cache(
      runner, config, [testing.epochs(40.0 + t + (1 + t / 2 if bump else 0)) for t in range(2)]
    )
  cells = cifar_tables._Cells(runner, runner.scale)  # pylint: disable=protected-access
  lines = cifar_tables._frozen_vs_chain(todo, cells)  # pylint: disable=protected-access
  assert lines[0] == 'Frozen vs chain, paired by trial:'
  assert len(lines) == 1 + 3  # the small batch's paper setting + 1 fraction x 2 readings
  (bumped,) = [line for line in lines if 'combined, 1/100, batch 16' in line]
  assert 'frozen - chain +1.25 points' in bumped and 'in 2/2 trials' in bumped
  assert all('+0.00 points' in line for line in lines[1:] if line != bumped)


def test_table_rows_pair_with_sgd_and_unfinished_cells_say_so(tmp_path):
  runner = testing.runner_for(tmp_path, 'paper_tables', scale='smoke')
  todo = runner.study.cells(runner.scale, '4')
  sgd, sbs, combined = todo
  stats_rows = dict(sbs_update_fraction=0.25, sbs_mean_count=2.0)
  testing.cache(runner, _table_config(runner, sgd), [testing.epochs(40.0), testing.epochs(42.0)])
  testing.cache(
    runner, _table_config(runner, sbs), [testing.epochs(41.0, **stats_rows), testing.epochs(45.0)]
  )
  testing.cache(runner, _table_config(runner, combined), [testing.epochs(30.0)])  # 1 of 2 trials
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
  runner = testing.runner_for(tmp_path, 'overfit')
  sgd = runner.study.CELLS[0]
  config = runner.config(method='sgd', **_overfit_base(runner))
  testing.cache(runner, config, [testing.epochs(40.0)])
  run = dict(config, seed=config['seed'] + 1)
  other = dict(testing.PROVENANCE, versions='newer versions')
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
  runner = testing.runner_for(tmp_path, 'overfit')
  base = _overfit_base(runner)

  def cache(cell, accuracies, train_accuracy=100.0):
    config = runner.config(method=cell.method, **dict(base, **dict(cell.options)))
    testing.cache(
      runner, config, [testing.epochs(a, train_accuracy=train_accuracy) for a in accuracies]
    )

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
  report = cells_vs_sgd.report(testing.runner_for(tmp_path, 'overfit'))
  text = '\n'.join(report.lines)
  assert '| SGD | not run yet (0/2 trials cached) |' in text
  assert 'Learning-rate check: not finished yet.' in text
  assert report.payload == {'cells': []} and not report.figures
