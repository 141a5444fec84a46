"""Sphinx configuration of the optax_sbs documentation.

Build (from the repository root, with ``pip install -e ".[docs]"``)::

  python -m sphinx -W --keep-going -b html docs docs/_build/html

The notebooks under ``notebooks/`` are MyST markdown, executed on every build.
"""

import os
import pathlib
import sys

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

import optax_sbs  # noqa: E402

project = 'optax_sbs'
author = 'The optax_sbs developers'
copyright = 'the optax_sbs developers'
release = optax_sbs.__version__
version = release

extensions = [
  'myst_nb',
  'sphinx.ext.autodoc',
  'sphinx.ext.autosummary',
  'sphinx.ext.mathjax',
  'sphinx.ext.napoleon',
  'sphinx.ext.viewcode',
]

source_suffix = {'.rst': 'restructuredtext', '.md': 'myst-nb'}
exclude_patterns = ['_build', '**/.ipynb_checkpoints', 'README.md']
templates_path = []

# -- API reference -------------------------------------------------------------
autosummary_generate = False  # every entry is written out in api.rst
# Types go to the parameter lists: the signatures stay readable.
autodoc_typehints = 'description'
autodoc_typehints_description_target = 'documented_params'
autodoc_member_order = 'bysource'
add_module_names = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# A state's ``Attributes:`` become fields of its class entry: with attribute
# directives, a NamedTuple's fields would be documented twice.
napoleon_use_ivar = True


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
  """A NamedTuple field's accessor has only ``Alias for field number N``: the
  class's own docstring describes the field."""
  del app, what, name, options
  doc = getattr(obj, '__doc__', None) or ''
  if isinstance(obj, property) and doc.startswith('Alias for field number'):
    return True
  return skip


def setup(app):
  app.connect('autodoc-skip-member', _skip_namedtuple_fields)


# -- Notebooks -----------------------------------------------------------------
nb_execution_mode = 'force'
nb_execution_timeout = 120
nb_execution_raise_on_error = True
nb_merge_streams = True
myst_enable_extensions = ['dollarmath', 'colon_fence']
myst_heading_anchors = 3
# The notebook kernels inherit this process's environment: they import the
# checkout's package, and (their programs being tiny) XLA skips the backend
# optimisations that would cost more compile time than they save.
os.environ['PYTHONPATH'] = os.pathsep.join(
  p for p in (str(ROOT), os.environ.get('PYTHONPATH', '')) if p
)
os.environ['XLA_FLAGS'] = ' '.join(
  f for f in (os.environ.get('XLA_FLAGS', ''), '--xla_backend_optimization_level=0') if f
)
os.environ.setdefault('MPLBACKEND', 'Agg')

# -- HTML ----------------------------------------------------------------------
html_theme = 'sphinx_book_theme'
html_title = f'optax_sbs {release}'
html_theme_options = {
  'show_toc_level': 2,
  'navigation_with_keys': False,
}
# The committed figures of the studies are read from benchmarks/results/ where
# they are (the evidence page refers to them by a relative path).
