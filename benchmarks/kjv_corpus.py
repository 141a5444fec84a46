"""Writes the King James Bible as one plain text file: the ``lm_corpus`` study's corpus.

  apt-get install bible-kjv                # Debian's package: the `bible` program
  python benchmarks/kjv_corpus.py --out PATH/kjv.txt

``bible -f "Gen1:1-Rev22:21"`` prints the 31,102 verses of Debian's
bible-kjv, one a line, each after its reference (``Ge1:1 In the beginning
...``). This script keeps the verses and drops the references, so the model
learns the text and not a numbering: about 4.14M characters, 63 distinct. The
lm example reads the file through its text-file path (the first 90% of the
characters train, the next 5% validate, the last 5% test): training sees
Genesis to Acts 21:40, validation Acts 21:40 to Colossians 1:11 (the end of
Acts and the first epistles), test the rest to Revelation 22:21, a shift of
genre from narrative, law, poetry and prophecy to letters.
"""

import argparse
import hashlib
import re
import shutil
import subprocess

# The whole book, Genesis 1:1 to Revelation 22:21, in `bible`'s reference syntax.
WHOLE = 'Gen1:1-Rev22:21'
VERSES = 31_102
# A verse's reference: an optional book number, the book's abbreviation, chapter:verse.
_REFERENCE = re.compile(r'^[1-3]?[A-Za-z]+\d+:\d+ ')


def strip_references(lines: list[str]) -> str:
  """The verses of ``bible -f`` output without their references, one a line.

  Raises:
    ValueError: a line that does not start with a reference (the output is
      not what this script was written for).
  """
  verses = []
  for number, line in enumerate(lines, 1):
    match = _REFERENCE.match(line)
    if match is None:
      raise ValueError(f'line {number} does not start with a verse reference: {line[:40]!r}')
    verses.append(line[match.end() :])
  return ''.join(verse + '\n' for verse in verses)


def bible_text(program: str = 'bible') -> str:
  """The whole KJV from Debian's ``bible`` program, references removed."""
  path = shutil.which(program)
  if path is None:
    raise SystemExit(
      f"no {program!r} program: install Debian's bible-kjv (apt-get install bible-kjv)"
    )
  output = subprocess.run(
    [path, '-f', WHOLE], check=True, capture_output=True, text=True, encoding='utf-8'
  ).stdout
  lines = output.splitlines()
  if len(lines) != VERSES:
    raise SystemExit(f'{program} -f {WHOLE} printed {len(lines)} lines, not {VERSES} verses')
  return strip_references(lines)


def main(argv: list[str] | None = None) -> str:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', required=True, help='the text file to write')
  args = parser.parse_args(argv)
  text = bible_text()
  with open(args.out, 'w', encoding='utf-8', newline='\n') as f:
    f.write(text)
  digest = hashlib.sha256(text.encode('utf-8')).hexdigest()
  print(f'{args.out}: {len(text):,} characters, {len(set(text))} distinct, sha256 {digest}')
  return digest


if __name__ == '__main__':
  main()
