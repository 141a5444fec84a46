"""Typed PRNG keys in optimizer states, to and from raw key data for checkpoints."""

from typing import Any

import jax
import jax.numpy as jnp


def _is_typed_key(x: Any) -> bool:
  dtype = getattr(x, 'dtype', None)
  return dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)


def key_data_tree(tree: Any) -> Any:
  """Replaces every typed PRNG key in ``tree`` by its raw ``key_data``.

  Checkpointing libraries store arrays of numeric dtypes; a typed key
  (``jax.random.key``, as in :class:`StochasticBatchSizeState`) is not one
  (Orbax refuses or mangles it). Save ``key_data_tree(opt_state)`` and undo
  it after restoring with :func:`wrap_key_data_tree`. Works on abstract
  trees (``jax.eval_shape``) too, for restore templates.

  Args:
    tree: any pytree, e.g. an optimizer state.

  Returns:
    The same tree with each typed key replaced by its ``uint32`` key data.

  Examples:
    >>> import jax, jax.numpy as jnp, optax_sbs
    >>> state = optax_sbs.sbs(0.1, key=0).init({'w': jnp.ones(2)})
    >>> raw = optax_sbs.key_data_tree(state)
    >>> optax_sbs.find_state(raw).key.dtype
    dtype('uint32')
    >>> back = optax_sbs.wrap_key_data_tree(raw, like=state)
    >>> optax_sbs.find_state(back).key.dtype
    key<fry>
  """
  def to_data(x):
    if not _is_typed_key(x):
      return x
    if isinstance(x, jax.ShapeDtypeStruct):
      return jax.eval_shape(jax.random.key_data, x)
    return jax.random.key_data(x)

  return jax.tree.map(to_data, tree)


def wrap_key_data_tree(tree: Any, like: Any) -> Any:
  """Undoes :func:`key_data_tree`: wraps key data where ``like`` has typed keys.

  Args:
    tree: a tree made by :func:`key_data_tree` (e.g. restored from disk).
    like: a tree of the same structure with typed keys where ``tree`` has
      their data (the original state, or an abstract one); each key gets
      back its implementation (threefry, rbg, ...).

  Returns:
    ``tree`` with typed keys restored.

  Raises:
    ValueError: if the two trees are not structured alike.
  """
  if jax.tree.structure(tree) != jax.tree.structure(like):
    raise ValueError(
        'wrap_key_data_tree: the tree does not have the structure of `like`.'
        f'\n  tree: {jax.tree.structure(tree)}\n  like: '
        f'{jax.tree.structure(like)}')
  return jax.tree.map(
      lambda x, t: jax.random.wrap_key_data(x, impl=jax.random.key_impl(t))
      if _is_typed_key(t) else x, tree, like)
