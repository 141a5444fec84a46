"""PRNG keys of the optimizers: canonicalisation, checks, checkpoint helpers.

An int seed and a raw ``uint32[2]`` key (``jax.random.PRNGKey`` under JAX's
default) become threefry keys whatever ``jax_default_prng_impl`` says, so a
seed gives the same masks in every program (MaxText, for one, sets
``unsafe_rbg`` globally). A typed key keeps its implementation. A raw key of
another shape is the data of another implementation (``rbg`` and
``unsafe_rbg`` keys are both ``uint32[4]``), which its data cannot tell apart:
it is refused, with what to pass instead.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

THREEFRY = 'threefry2x32'


def check_key(key: Any) -> None:
  """Raises if ``key`` is not one key: a typed key, a raw key or an int seed.

  Called when a transformation is built, so a wrong key fails there with a
  message, not inside the first ``update`` with JAX's own error.

  Args:
    key: what the user passed as ``key``.

  Raises:
    TypeError: for something that is not a key or an integer seed.
    ValueError: for a batch of keys (e.g. ``jax.random.split(key, 2)``).
  """
  if isinstance(key, (jax.Array, np.ndarray)):
    dtype, shape = key.dtype, tuple(key.shape)
    if jnp.issubdtype(dtype, jax.dtypes.prng_key):
      if shape:
        raise ValueError(
          f'key must be a single PRNG key, got a batch of keys of shape '
          f'{shape} (from jax.random.split?): pass one of them, e.g. '
          'keys[0].'
        )
      return
    if dtype == jnp.uint32 and shape[-1:] == (2,):
      if len(shape) > 1:
        raise ValueError(
          f'key must be a single raw PRNG key of shape (2,), got a batch of '
          f'shape {shape} (from jax.random.split?): pass one of them.'
        )
      return
    if dtype == jnp.uint32 and shape:
      raise TypeError(
        'key must be an int seed (a threefry key, whatever jax_default_prng_impl says), a '
        'typed key (jax.random.key(seed, impl=...)) or a raw threefry key (uint32 of shape '
        f'(2,)); a raw uint32 key of shape {shape} is the data of a key whose implementation '
        'its data does not tell (jax.random.PRNGKey gives one under jax_default_prng_impl='
        "'rbg' or 'unsafe_rbg'): wrap it with jax.random.wrap_key_data(data, impl=...)."
      )
    if shape or not jnp.issubdtype(dtype, jnp.integer):
      raise TypeError(
        'key must be an int seed, a typed key (jax.random.key) or a raw threefry key '
        f'(uint32 of shape (2,)); got an array of dtype {dtype} and shape {shape}.'
      )
    return
  if isinstance(key, bool) or not isinstance(key, (int, np.integer)):
    raise TypeError(f'key must be a JAX key or an int seed, got {key!r}.')


def canonicalize_key(key: jax.Array | int) -> jax.Array:
  """A typed key from a typed key (kept as it is), a raw threefry key or an
  int seed (threefry keys, whatever ``jax_default_prng_impl`` says)."""
  check_key(key)
  if isinstance(key, (jax.Array, np.ndarray)):
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
      return key
    if key.dtype == jnp.uint32:
      return jax.random.wrap_key_data(key, impl=THREEFRY)
  return jax.random.key(key, impl=THREEFRY)


def _is_typed_key(x: Any) -> bool:
  dtype = getattr(x, 'dtype', None)
  return dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)


def key_data_tree(tree: Any) -> Any:
  """Replaces every typed PRNG key in ``tree`` by its raw ``key_data``.

  Checkpointing libraries store arrays of numeric dtypes; a typed key
  (``jax.random.key``, as in :class:`StochasticBatchSizeState`) is not one
  for serialisers that know only numeric arrays (``flax.serialization``,
  ``numpy.savez``, orbax-checkpoint before 0.12). Save
  ``key_data_tree(opt_state)`` and undo it after restoring with
  :func:`wrap_key_data_tree`. Works on abstract trees (``jax.eval_shape``)
  too, for restore templates. Orbax 0.12 and later saves and restores typed
  keys itself: there, save the state as it is.

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
      their data: the original state, or an abstract one from
      ``jax.eval_shape``; each key gets back its implementation (threefry,
      rbg, ...).

  Returns:
    ``tree`` with typed keys restored.

  Raises:
    ValueError: if the two trees are not structured alike.
  """
  if jax.tree.structure(tree) != jax.tree.structure(like):  # type: ignore[operator]
    raise ValueError(
      'wrap_key_data_tree: the tree does not have the structure of `like`.'
      f'\n  tree: {jax.tree.structure(tree)}\n  like: '
      f'{jax.tree.structure(like)}'
    )
  return jax.tree.map(
    lambda x, t: jax.random.wrap_key_data(x, impl=_key_impl(t)) if _is_typed_key(t) else x,
    tree,
    like,
  )


def _key_impl(key: Any) -> Any:
  """The implementation of a typed key, concrete or abstract
  (``jax.ShapeDtypeStruct`` from ``jax.eval_shape``)."""
  if not isinstance(key, jax.ShapeDtypeStruct):
    return jax.random.key_impl(key)
  found = []

  def record(k):
    found.append(jax.random.key_impl(k))
    return jnp.zeros(())

  jax.eval_shape(record, key)
  return found[0]
