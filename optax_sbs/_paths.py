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
  out = [key_name(entry) for entry in path]
  if len(out) > 1 and isinstance(path[-1], jax.tree_util.GetAttrKey) and out[-1] == 'value':
    out.pop()
  return out
