"""benchmarks/main_job.py: the main job's summary under its provenance."""

import main_job


def test_the_main_jobs_summary_is_written_with_its_provenance(tmp_path):
  out = tmp_path / 'main_job.md'
  # A short run of the same program (the default takes minutes).
  main_job.main(['--out', str(out), '--', '--epochs', '1', '--trials', '1'])
  text = out.read_text(encoding='utf-8')
  assert text.startswith('# The main job: SGD vs SBS on the CIFAR-10 sample')
  assert '- command: `python benchmarks/main_job.py -- --epochs 1 --trials 1`' in text
  assert '- machine: ' in text and '- versions: ' in text and 'flax ' in text
  assert '| sgd |' in text and '| sbs |' in text
