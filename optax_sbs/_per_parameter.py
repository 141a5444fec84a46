"""Which leaves of an optimizer state are per-parameter, and holding them.

A wrapper that holds some parameter elements back (their update is 0 this
step) must also hold back the inner optimizer's per-parameter state at those
elements (momentum, Adam's moments, ...), while scalars such as step counts
advance. The per-parameter leaves are found as Optax finds them for
:func:`optax.tree_utils.tree_map_params`: the inner optimizer is initialised
on a placeholder pytree without leaves, and every subtree of its state that
comes out as the placeholder is a copy of the params tree. This sees through
``optax.chain``, ``optax.inject_hyperparams``, ``optax.masked`` (whose states
hold ``optax.MaskedNode`` where a parameter is masked out) and
``optax.multi_transform``.
"""

from typing import Any

import jax
import jax.numpy as jnp
import optax


class _NotPerParameter:
  """Marks a state leaf that is not a copy of a parameter (counts, ...)."""

  def __repr__(self):
    return 'NOT_PER_PARAMETER'


NOT_PER_PARAMETER = _NotPerParameter()


def _is_masked_out(x: Any) -> bool:
  return x is None or isinstance(x, optax.MaskedNode)


def parameter_masks(inner: optax.GradientTransformation, state: Any, masks: Any, who: str) -> Any:
  """A tree like ``state``: per-parameter leaves replaced by their mask.

  Args:
    inner: the transformation whose state ``state`` is.
    state: a state of ``inner``.
    masks: a tree like the params of boolean arrays.
    who: the caller's name, for error messages.

  Returns:
    A tree with the structure of ``state`` in which each per-parameter leaf
    is its parameter's mask and every other leaf is ``NOT_PER_PARAMETER``
    (``MaskedNode`` and ``None`` are kept).

  Raises:
    ValueError: if ``inner.init`` cannot run on Optax's params placeholder
      (it reads the params' values or shapes) or a per-parameter leaf does
      not have its parameter's shape (factored statistics, e.g. Adafactor's).
  """

  def mask_of(leaf, mask):
    if _is_masked_out(leaf):
      return leaf
    if jnp.shape(leaf) != jnp.shape(mask):
      raise ValueError(
        f'{who}: a per-parameter leaf of the inner optimizer state has '
        f'shape {jnp.shape(leaf)} where its parameter has shape '
        f"{jnp.shape(mask)}. Only elementwise state (momentum, Adam's "
        'moments, ...) can be held per element; factored statistics (e.g. '
        "Adafactor's) cannot. Chain stochastic_batch_size before such an "
        'optimizer instead.'
      )
    return mask

  error: Exception
  try:
    return optax.tree_utils.tree_map_params(
      inner,
      mask_of,
      state,
      masks,
      transform_non_params=lambda _: NOT_PER_PARAMETER,
      is_leaf=_is_masked_out,
    )
  except ValueError as e:
    if str(e).startswith(who):
      raise
    error = e
  except (TypeError, AttributeError, KeyError, IndexError) as e:
    error = e
  raise ValueError(
    f'{who}: cannot tell which leaves of the inner optimizer state are '
    'per-parameter. They are found as optax.tree_utils.tree_map_params '
    'finds them, by running inner.init on a placeholder without leaves; '
    'that failed, so inner.init reads its params (values, shapes or '
    f'attributes) in a way this cannot support. ({type(error).__name__}: '
    f'{error})'
  ) from error


def hold(
  inner: optax.GradientTransformation, new_state: Any, old_state: Any, masks: Any, who: str
) -> Any:
  """``new_state``, with per-parameter leaves kept at ``old_state`` where
  ``masks`` is False; every other leaf is taken from ``new_state``."""
  marks = parameter_masks(inner, new_state, masks, who)

  def select(mark, new, old):
    if mark is NOT_PER_PARAMETER or _is_masked_out(mark):
      return new
    return jnp.where(mark, new, old)

  return jax.tree.map(select, marks, new_state, old_state, is_leaf=_is_masked_out)
