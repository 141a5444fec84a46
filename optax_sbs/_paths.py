"""Names of pytree key paths, as the groupings and diagnostics read them."""

from typing import Any

import jax


def key_name(entry: Any) -> str:
  """The name of one key-path entry (dict key, attribute name or index)."""
  for attr in ('key', 'name', 'idx'):
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def names(path: tuple[Any, ...]) -> list[str]:
  """The names of a key path's entries, without a Flax NNX variable's final
  ``.value`` (an attribute holding the array, not part of the name)."""
  return [key_name(entry) for entry in user_path(path)]


def user_path(path: tuple[Any, ...]) -> tuple[Any, ...]:
  """The key path a user's callable (``layer_axes``, ``group_fn``) is given:
  without a Flax NNX variable's final ``.value``, so the paths of ``init``
  (over ``nnx.state``'s variables) and ``update`` (over plain gradients) are
  the same."""
  if len(path) > 1 and isinstance(path[-1], jax.tree_util.GetAttrKey) and path[-1].name == 'value':
    return path[:-1]
  return path
