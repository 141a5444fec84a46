"""Checks of hyperparameters and pytrees that fail early with a clear message.

Every error a user can meet reads by one of two rules:

* at construction, a factory's own argument: ``'<argument> must <rule>, got
  <value>.'`` (``TypeError`` for a wrong type, ``ValueError`` for a wrong
  value). The traceback ends in the factory the user called, so the message
  need not name it.
* at ``init`` and ``update`` (trace time, often deep inside a user's jitted
  train step): ``'<function>: <what is wrong, naming the leaf by its path or
  name>, <what was given>[: <what to do>].'``, led by the public function's
  name, since the traceback ends inside the library.
"""

import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_sbs import _granularity

NO_PARAMS_MESSAGE = (
  '{name}: update needs the current parameters: call tx.update(updates, state, params).'
)


def _concrete_value(name: str, value: Any) -> float | None:
  """Returns ``value`` as a float, or None when it is traced (unknowable)."""
  if isinstance(value, (bool, np.bool_)):
    raise TypeError(f'{name} must be a real number, got the bool {value!r}.')
  if isinstance(value, numbers.Real):
    return float(value)
  if isinstance(value, (np.ndarray, np.generic, jax.Array)):
    dtype = value.dtype
    if (
      jnp.issubdtype(dtype, jax.dtypes.prng_key)
      or jnp.issubdtype(dtype, jnp.bool_)
      or not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer))
    ):
      raise TypeError(f'{name} must be a real number, got an array of dtype {dtype}.')
    if np.ndim(value) != 0:
      raise TypeError(f'{name} must be a scalar, got an array of shape {np.shape(value)}.')
    if isinstance(value, jax.core.Tracer):
      return None
    return float(value)
  raise TypeError(f'{name} must be a real number, got {type(value).__name__}: {value!r}.')


def check_real(name: str, value: Any) -> None:
  """Raises if ``value`` is not a finite real scalar (traced values pass)."""
  concrete = _concrete_value(name, value)
  if concrete is not None and not math.isfinite(concrete):
    raise ValueError(f'{name} must be finite, got {concrete}.')


def check_probability(name: str, value: Any) -> None:
  """Raises if ``value`` is not a real scalar in [0, 1] (traced values pass)."""
  concrete = _concrete_value(name, value)
  if concrete is not None and not 0.0 <= concrete <= 1.0:
    raise ValueError(f'{name} must lie in [0, 1], got {concrete}.')


def check_float_leaves(tree: Any, what: str, who: str = 'stochastic_batch_size') -> None:
  """Raises TypeError naming the first leaf of ``tree`` that is not real float."""
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    dtype = getattr(leaf, 'dtype', None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
      found = dtype if dtype is not None else type(leaf).__name__
      raise TypeError(
        f'{who}: {what} leaf at '
        f'{jax.tree_util.keystr(path)} has dtype {found}; every leaf must '
        'be a real floating-point array (float16, bfloat16, float32 or '
        'float64). Freeze or mask integer leaves (optax.masked) instead.'
      )


def check_same_structure(
  tree: Any, reference: Any, what: str, who: str = 'stochastic_batch_size'
) -> None:
  """Raises ValueError if ``tree`` is not structured like ``reference``."""
  got, want = jax.tree.structure(tree), jax.tree.structure(reference)
  if got != want:  # type: ignore[operator]  # PyTreeDef compares
    raise ValueError(
      f'{who}: the {what} tree does not have the structure '
      f'of the optimizer state (built from the params given to init).\n'
      f'  {what}: {got}\n  state: {want}'
    )
  for path_leaf, ref_leaf in zip(
    jax.tree_util.tree_flatten_with_path(tree)[0],
    jax.tree.leaves(reference),
  ):
    path, leaf = path_leaf
    if np.shape(leaf) != np.shape(ref_leaf):
      raise ValueError(
        f'{who}: {what} leaf at {jax.tree_util.keystr(path)}'
        f' has shape {np.shape(leaf)} but the state expects '
        f'{np.shape(ref_leaf)}.'
      )


def check_masking_arguments(who: str, inner: Any, probability: Any, granularity: Any) -> None:
  """The arguments every update-masking wrapper shares."""
  if not isinstance(inner, optax.GradientTransformation):
    raise TypeError(
      f'{who}: inner must be an optax.GradientTransformation, got {type(inner).__name__}.'
    )
  check_probability('probability', probability)
  _granularity.check(granularity, who)
