import hashlib
import shutil

import pytest

import kjv_corpus
from studies import lm_corpus


def test_references_are_removed_and_verses_kept():
  lines = [
    'Ge1:1 In the beginning God created the heaven and the earth.',
    '1Sm3:10 And the LORD came, and stood, and called as at other times, Samuel, Samuel.',
    'Rev22:21 The grace of our Lord Jesus Christ be with you all. Amen.',
  ]
  assert kjv_corpus.strip_references(lines) == (
    'In the beginning God created the heaven and the earth.\n'
    'And the LORD came, and stood, and called as at other times, Samuel, Samuel.\n'
    'The grace of our Lord Jesus Christ be with you all. Amen.\n'
  )


def test_a_line_without_a_reference_is_an_error():
  with pytest.raises(ValueError, match='line 2 does not start with a verse reference'):
    kjv_corpus.strip_references(['Ge1:1 In the beginning.', 'In the beginning.'])


@pytest.mark.skipif(shutil.which('bible') is None, reason="Debian's bible-kjv is not installed")
def test_the_corpus_is_the_one_the_study_names(tmp_path):
  out = tmp_path / 'kjv.txt'
  digest = kjv_corpus.main(['--out', str(out)])
  text = out.read_text(encoding='utf-8')
  assert (len(text), len(set(text)), text.count('\n')) == (4_137_850, 63, kjv_corpus.VERSES)
  assert hashlib.sha256(out.read_bytes()).hexdigest() == digest
  data = lm_corpus.SCALES[lm_corpus.DEFAULT_SCALE]['data']
  assert digest.startswith(data['sha256']) and data['name'] == 'kjv.txt'
