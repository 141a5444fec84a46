"""Parameter groups: which layers the global term of the probability compares.

The paper normalises a layer's mean gradient magnitude across the layers of
the same *type* (eq. 19), since types have different ranges of magnitudes.
A ``group_fn(path, leaf) -> hashable`` names each leaf's group;
:func:`parameter_type` guesses the type from the path and then the shape,
:func:`single_group` puts every leaf in one group.
"""

from collections.abc import Callable
from collections.abc import Hashable
import re
from typing import Any

import jax
import numpy as np

from optax_sbs import _paths

GroupFn = Callable[[tuple[Any, ...], jax.Array], Hashable]

# Normalisation layers: Flax's BatchNorm_0 / LayerNorm_0 / RMSNorm, Haiku's
# layer_norm, Llama's input_layernorm, torchvision-style bn1 / conv_bn, and
# GPT-style ln_1 / ln_2 / ln_f (also gn for group norm).
_NORM_PATTERN = re.compile(r'norm|(^|[_./])(bn|ln|gn)(_?(\d+|f))?($|[_./])', re.IGNORECASE)
# Embedding tables: Flax's Embed_0 / embedding, tok_embeddings, GPT-2's wte
# (tokens) and wpe (positions).
_EMBED_PATTERN = re.compile(r'embed|(^|[_./])(wte|wpe)($|[_./])', re.IGNORECASE)


# Convolutions: Flax's Conv_0 / ConvTranspose_0 / ConvLocal_0, conv1,
# stem_conv, downsample_conv, Mamba's conv1d.
_CONV_PATTERN = re.compile(r'conv', re.IGNORECASE)
# Dense-like projections: Flax's Dense_0 / DenseGeneral_0 / Einsum_0,
# attention's query / key / value / out (Linen MultiHeadDotProductAttention,
# NNX MultiHeadAttention), NNX Linear / LinearGeneral under the usual
# attribute names (qkv, q_proj, o_proj, wq, fc1, mlp, ffn, head, ...), and
# mixture-of-experts kernels (MaxText's MoeBlock_0/wi_0, Flax-style experts).
_DENSE_PATTERN = re.compile(
  r'dense|linear|einsum|attn|attention|qkv|proj|mlp|ffn|feed_?forward|head|logits|moe|expert|'
  r'^(query|key|value|out|q|k|v|o|kv|wq|wk|wv|wo|wi|wi_\d|fc\d*|c_fc|c_proj|c_attn|'
  r'gate|up|down|w\d|lm_head)$',
  re.IGNORECASE,
)
_BIAS_NAMES = frozenset({'bias', 'b', 'bias_hh', 'bias_ih'})


def _ndim(leaf: Any) -> int:
  shape = getattr(leaf, 'shape', None)
  return len(shape) if shape is not None else int(np.ndim(leaf))


def parameter_type(path: tuple[Any, ...], leaf: Any) -> str:
  """Default grouping: the parameter *type* of a leaf, from its path, then its shape.

  The paper normalises gradient magnitudes across layers of the same type
  (convolution, fully connected, bias, batch normalisation), because types
  have different ranges of gradient magnitudes. The type is decided in this
  order (the first rule that applies wins):

  1. ``'norm'``: every parameter of a normalisation layer, whatever its name
     or shape: a path entry (other than the leaf's own name) containing
     ``norm`` (Flax's ``LayerNorm_0``, ``BatchNorm_0``, ``RMSNorm_0``,
     ``GroupNorm_0``, NNX attributes ``norm``, ``final_norm``, Llama's
     ``input_layernorm``), or named ``bn``/``bn1``/``..._bn``, GPT-style
     ``ln_1``/``ln_f``/``ln1``, or ``gn``;
  2. ``'embedding'``: a path entry containing ``embed`` (``Embed_0``,
     ``embedding``, ``tok_embeddings``, ``pos_embedding``) or GPT-2's
     ``wte``/``wpe``;
  3. ``'bias'``: a leaf named ``bias`` (or ``b``), whatever its shape (the
     ``(heads, head_dim)`` biases of attention too), and any other leaf with
     fewer than 2 dimensions;
  4. kernels and other leaves of 2 or more dimensions: ``'conv'`` if a path
     entry contains ``conv`` (``Conv_0``, ``ConvTranspose_0``, ``conv1``,
     ``conv1d``); ``'dense'`` if one names a dense-like projection
     (``Dense_0``, ``DenseGeneral_0``, ``Einsum_0``, attention's
     ``query``/``key``/``value``/``out``, ``qkv``, ``q_proj``, ``mlp``,
     ``fc1``, ``head``, ...) or a mixture of experts (MaxText's
     ``MoeBlock_0/wi_0``, whose ``(experts, embed, mlp)`` kernels have no
     ``kernel`` entry; ``experts``); otherwise by shape: ``'dense'`` for 2
     dimensions and ``'conv'`` for 3 or more.

  Where the default guesses: the last rule. A 3-D kernel under a name it does
  not know (an ``nnx.LinearGeneral`` attribute called ``w_in``, say) is
  grouped ``'conv'``; a 2-D kernel of a convolution not named ``conv`` is
  grouped ``'dense'``. Flax Linen's automatic module names and the names of
  Flax's attention modules are all covered. To decide otherwise, pass your
  own ``group_fn`` that handles your names and falls back on this one::

    def group_fn(path, leaf):
      if 'w_in' in jax.tree_util.keystr(path):
        return 'dense'
      return optax_sbs.parameter_type(path, leaf)

  With stacked layers (``layer_axes``) the leaf given is one slice (a
  ``jax.ShapeDtypeStruct``), so a stacked Dense kernel is ``'dense'``.

  Args:
    path: the leaf's key path, as given by ``jax.tree_util`` (tuple of keys).
    leaf: the leaf, or a ``jax.ShapeDtypeStruct`` (only its number of
      dimensions is used).

  Returns:
    One of ``'norm'``, ``'embedding'``, ``'conv'``, ``'dense'``, ``'bias'``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from optax_sbs import parameter_type
    >>> params = {'Conv_0': {'kernel': jnp.zeros((3, 3, 3, 8))},
    ...           'BatchNorm_0': {'scale': jnp.zeros(8)},
    ...           'attn': {'query': {'kernel': jnp.zeros((8, 2, 4)),
    ...                              'bias': jnp.zeros((2, 4))}},
    ...           'Dense_0': {'kernel': jnp.zeros((8, 10)), 'bias': jnp.zeros(10)}}
    >>> {jax.tree_util.keystr(p): parameter_type(p, x)
    ...  for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
    ... # doctest: +NORMALIZE_WHITESPACE
    {"['BatchNorm_0']['scale']": 'norm', "['Conv_0']['kernel']": 'conv',
     "['Dense_0']['bias']": 'bias', "['Dense_0']['kernel']": 'dense',
     "['attn']['query']['bias']": 'bias', "['attn']['query']['kernel']": 'dense'}
  """
  names = _paths.names(path)
  if any(_NORM_PATTERN.search(name) for name in names[:-1]):
    return 'norm'
  if any(_EMBED_PATTERN.search(name) for name in names):
    return 'embedding'
  ndim = _ndim(leaf)
  if (names and names[-1].lower() in _BIAS_NAMES) or ndim < 2:
    return 'bias'
  modules = names[:-1] if len(names) > 1 else names
  if any(_CONV_PATTERN.search(name) for name in modules):
    return 'conv'
  if any(_DENSE_PATTERN.search(name) for name in modules):
    return 'dense'
  return 'dense' if ndim == 2 else 'conv'


def single_group(path: tuple[Any, ...], leaf: jax.Array) -> Hashable:
  """Puts every leaf in one group: global statistics over all leaves."""
  del path, leaf
  return 0
