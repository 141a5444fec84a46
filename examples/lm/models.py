"""A small decoder-only transformer in Flax NNX (GPT-2's layout, pre-LayerNorm).

Token and learned position embeddings, ``num_layers`` blocks of causal
self-attention and an MLP, each behind a LayerNorm on a residual branch, a
final LayerNorm, and an output head (or the token embedding, tied).

Parameter names are chosen so that ``optax_sbs.parameter_type`` groups them
by what they are: ``token_embed``/``position_embed`` -> 'embedding',
``ln_1``/``ln_2``/``ln_f`` -> 'norm', kernels -> 'dense', biases -> 'bias'.
The attention's query, key and value come from one 2-D ``qkv`` kernel, one
matmul for the three (the library's grouping would put the 3-D kernels of
Flax's ``nnx.MultiHeadAttention`` with the dense kernels too).

With ``dropout`` > 0, GPT-2's dropout of the attention weights and of both
residual branches (before they are added), at that rate, in training only:
evaluation runs the model through ``nnx.view(model, deterministic=True)``
(:func:`deterministic`). Every block's dropout has its own PRNG stream, split
from the ``dropout`` stream of the ``rngs`` it is built with (per layer, also
when the blocks are stacked).

With ``scan_layers`` the blocks are one ``Block`` whose parameters all have a
leading axis of ``num_layers`` (``nnx.vmap`` creates it, ``nnx.scan`` runs
it), stored as ``layers``: ``optax_sbs.layers_under('layers')`` (see
:func:`layer_axes`) tells the methods' txs that each slice along that axis is a
layer. ``stack_blocks`` and ``unstack_layers`` convert parameters between the
two layouts.
"""

import math

from flax import nnx
import jax
import jax.numpy as jnp

import optax_sbs


class CausalSelfAttention(nnx.Module):
  """Multi-head self-attention in which position t sees positions <= t."""

  def __init__(
    self, embed_dim: int, num_heads: int, residual_std: float, dropout: float, *, rngs: nnx.Rngs
  ):
    if embed_dim % num_heads:
      raise ValueError(f'num_heads {num_heads} does not divide embed_dim {embed_dim}')
    self.num_heads = num_heads
    init = nnx.initializers.normal(0.02)
    self.qkv = nnx.Linear(embed_dim, 3 * embed_dim, kernel_init=init, rngs=rngs)
    self.proj = nnx.Linear(
      embed_dim, embed_dim, kernel_init=nnx.initializers.normal(residual_std), rngs=rngs
    )
    self.dropout = _dropout(dropout, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    b, t, d = x.shape
    h = self.num_heads
    q, k, v = jnp.split(self.qkv(x).reshape(b, t, 3, h, d // h), 3, axis=2)
    q, k, v = q[:, :, 0], k[:, :, 0], v[:, :, 0]  # (b, t, h, d / h)
    scores = jnp.einsum('bthd,bshd->bhts', q, k) / math.sqrt(d // h)
    causal = jnp.tril(jnp.ones((t, t), bool))
    scores = jnp.where(causal, scores, jnp.finfo(scores.dtype).min)
    weights = self.dropout(jax.nn.softmax(scores, axis=-1))
    out = jnp.einsum('bhts,bshd->bthd', weights, v).reshape(b, t, d)
    return self.proj(out)


def _dropout(rate: float, rngs: nnx.Rngs) -> nnx.Dropout:
  """Dropout at ``rate`` with its own stream forked from ``rngs.dropout``; at
  rate 0 the identity, with no stream (the model's state is then that of a
  model without dropout)."""
  return nnx.Dropout(rate, rngs=rngs if rate > 0 else None)


class MLP(nnx.Module):
  def __init__(self, embed_dim: int, hidden_dim: int, residual_std: float, *, rngs: nnx.Rngs):
    self.fc = nnx.Linear(
      embed_dim, hidden_dim, kernel_init=nnx.initializers.normal(0.02), rngs=rngs
    )
    self.proj = nnx.Linear(
      hidden_dim, embed_dim, kernel_init=nnx.initializers.normal(residual_std), rngs=rngs
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.proj(nnx.gelu(self.fc(x)))


class Block(nnx.Module):
  """Pre-LayerNorm: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``."""

  def __init__(
    self,
    embed_dim: int,
    num_heads: int,
    mlp_ratio: int,
    num_layers: int,
    dropout: float = 0.0,
    *,
    rngs: nnx.Rngs,
  ):
    # GPT-2: residual projections start smaller, by 1/sqrt(2 * layers).
    residual_std = 0.02 / math.sqrt(2 * num_layers)
    self.ln_1 = nnx.LayerNorm(embed_dim, rngs=rngs)
    self.attention = CausalSelfAttention(embed_dim, num_heads, residual_std, dropout, rngs=rngs)
    self.ln_2 = nnx.LayerNorm(embed_dim, rngs=rngs)
    self.mlp = MLP(embed_dim, mlp_ratio * embed_dim, residual_std, rngs=rngs)
    self.residual_dropout = _dropout(dropout, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + self.residual_dropout(self.attention(self.ln_1(x)))
    return x + self.residual_dropout(self.mlp(self.ln_2(x)))


class Transformer(nnx.Module):
  """Decoder-only character model: ``(batch, time)`` ids -> ``(batch, time, vocab)`` logits."""

  def __init__(
    self,
    vocab_size: int,
    *,
    num_layers: int,
    num_heads: int,
    embed_dim: int,
    mlp_ratio: int,
    context_length: int,
    tie_embeddings: bool = False,
    scan_layers: bool = False,
    dropout: float = 0.0,
    rngs: nnx.Rngs,
  ):
    self.context_length = context_length
    self.scan_layers = scan_layers
    init = nnx.initializers.normal(0.02)
    self.token_embed = nnx.Embed(vocab_size, embed_dim, embedding_init=init, rngs=rngs)
    self.position_embed = nnx.Embed(context_length, embed_dim, embedding_init=init, rngs=rngs)
    if scan_layers:
      # Flax's scan over layers: every layer gets its own split of the rngs,
      # and nnx.vmap stacks the blocks' parameters along a new axis 0.
      @nnx.split_rngs(splits=num_layers)
      @nnx.vmap(in_axes=0, out_axes=0)
      def create_blocks(rngs):
        return Block(embed_dim, num_heads, mlp_ratio, num_layers, dropout, rngs=rngs)

      self.layers = create_blocks(rngs)
    else:
      self.blocks = nnx.List(
        [
          Block(embed_dim, num_heads, mlp_ratio, num_layers, dropout, rngs=rngs)
          for _ in range(num_layers)
        ]
      )
    self.ln_f = nnx.LayerNorm(embed_dim, rngs=rngs)
    self.head = (
      None
      if tie_embeddings
      else nnx.Linear(embed_dim, vocab_size, use_bias=False, kernel_init=init, rngs=rngs)
    )

  def __call__(self, tokens: jax.Array) -> jax.Array:
    t = tokens.shape[-1]
    if t > self.context_length:
      raise ValueError(f'{t} tokens exceed the context length {self.context_length}')
    x = self.token_embed(tokens) + self.position_embed(jnp.arange(t))
    if self.scan_layers:
      x = _run_stacked(x, self.layers)
    else:
      for block in self.blocks:
        x = block(x)
    x = self.ln_f(x)
    if self.head is None:
      return self.token_embed.attend(x)
    return self.head(x)


@nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
def _run_stacked(x: jax.Array, block: Block) -> jax.Array:
  """The stacked blocks in turn: ``block`` is one slice of them, ``x`` the carry."""
  return block(x)


def create_model(config, vocab_size: int, rngs: nnx.Rngs) -> Transformer:
  """The configuration's transformer."""
  return Transformer(
    vocab_size,
    num_layers=config.num_layers,
    num_heads=config.num_heads,
    embed_dim=config.embed_dim,
    mlp_ratio=config.mlp_ratio,
    context_length=config.context_length,
    tie_embeddings=config.tie_embeddings,
    scan_layers=config.scan_layers,
    dropout=config.dropout,
    rngs=rngs,
  )


def deterministic(model: Transformer) -> Transformer:
  """The model with its dropout off (evaluation), sharing its arrays."""
  return nnx.view(model, deterministic=True)


def layer_axes(config):
  """The txs' ``layer_axes`` for the configuration's model: axis 0 of
  every leaf under ``layers`` with ``scan_layers``, else None (no stacked leaves)."""
  return optax_sbs.layers_under('layers') if config.scan_layers else None


def stack_blocks(params: dict) -> dict:
  """An unrolled model's parameters (``nnx.to_pure_dict``) in the scanned
  model's layout: ``blocks[0..L-1]`` stacked along axis 0 as ``layers``."""
  params = dict(params)
  blocks = params.pop('blocks')
  params['layers'] = jax.tree.map(lambda *x: jnp.stack(x), *(blocks[i] for i in sorted(blocks)))
  return params


def unstack_layers(params: dict) -> dict:
  """The inverse of :func:`stack_blocks`: ``layers`` sliced into ``blocks``."""
  params = dict(params)
  layers = params.pop('layers')
  num_layers = len(jax.tree.leaves(layers)[0])
  params['blocks'] = {i: jax.tree.map(lambda x, i=i: x[i], layers) for i in range(num_layers)}
  return params


def count_params(model: nnx.Module) -> int:
  """Parameters of a model (concrete or from ``nnx.eval_shape``)."""
  return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def num_params(config, vocab_size: int) -> int:
  """Parameters of the configuration's transformer, without initialising it."""
  return count_params(nnx.eval_shape(lambda: create_model(config, vocab_size, nnx.Rngs(0))))
