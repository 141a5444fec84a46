"""Flax NNX: nnx.Optimizer with SBS under nnx.jit, per-layer statistics from
NNX states, and Orbax checkpoints restored into an nnx.eval_shape template."""

from flax import nnx
import helpers
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import optax_sbs


class GPTBlock(nnx.Module):
  """A GPT-style block's parameter names: ln_1, attention-like dense, ln_f."""

  def __init__(self, rngs: nnx.Rngs):
    self.wte = nnx.Embed(16, 8, rngs=rngs)
    self.ln_1 = nnx.LayerNorm(8, rngs=rngs)
    self.c_fc = nnx.Linear(8, 16, rngs=rngs)
    self.c_proj = nnx.Linear(16, 8, rngs=rngs)
    self.ln_f = nnx.LayerNorm(8, rngs=rngs)
    self.lm_head = nnx.Linear(8, 16, use_bias=False, rngs=rngs)

  def __call__(self, tokens):
    x = self.wte(tokens)
    x = x + self.c_proj(nnx.gelu(self.c_fc(self.ln_1(x))))
    return self.lm_head(self.ln_f(x))


def make(tx_fn, seed=0):
  model = GPTBlock(nnx.Rngs(seed))
  return model, nnx.Optimizer(model, tx_fn(), wrt=nnx.Param)


@nnx.jit
def train_step(model, optimizer, tokens):
  def loss_fn(model):
    logits = model(tokens[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

  loss, grads = nnx.value_and_grad(loss_fn)(model)
  optimizer.update(model, grads)
  return loss


TOKENS = jnp.asarray(np.random.default_rng(0).integers(0, 16, (8, 12)))
TXS = {
  'sbs': lambda: optax_sbs.sbs(0.3, key=0, momentum=0.9),
  'wrapped_adamw': lambda: optax_sbs.with_stochastic_batch_size(optax.adamw(3e-2), key=0, lam=0.0),
}


@pytest.mark.parametrize('name', sorted(TXS))
def test_nnx_optimizer_trains_under_nnx_jit_like_the_linen_style_update(name):
  model, optimizer = make(TXS[name])
  losses = [float(train_step(model, optimizer, TOKENS)) for _ in range(30)]
  assert losses[-1] < 0.8 * losses[0]
  # The same steps written with plain Optax on the params pytree.
  ref_model, _ = make(TXS[name])
  graphdef, params, rest = nnx.split(ref_model, nnx.Param, ...)
  tx = TXS[name]()
  state = tx.init(params)

  def loss_fn(p):
    m = nnx.merge(graphdef, p, rest)
    logits = m(TOKENS[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, TOKENS[:, 1:]).mean()

  @jax.jit
  def step(params, state):
    updates, state = tx.update(jax.grad(loss_fn)(params), state, params)
    return optax.apply_updates(params, updates), state

  for _ in range(30):
    params, state = step(params, state)
  for a, b in zip(jax.tree.leaves(nnx.state(model, nnx.Param)), jax.tree.leaves(params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_layer_statistics_from_every_form_of_an_nnx_state():
  model, optimizer = make(TXS['sbs'])
  for _ in range(3):
    train_step(model, optimizer, TOKENS)
  want = optax_sbs.layer_statistics(optimizer.opt_state)
  whole = nnx.state(optimizer)
  for form in (whole, whole['opt_state'], nnx.to_pure_dict(whole)):
    got = optax_sbs.layer_statistics(form)
    assert got.keys() == want.keys()
    for k in want:
      assert float(got[k]) == float(want[k])
    # find_state gives the NamedTuple with plain arrays, whatever the form.
    found = optax_sbs.find_state(form)
    assert isinstance(found, optax_sbs.StochasticBatchSizeState)
    assert isinstance(found.count['c_fc']['kernel'], jax.Array)
    # No stacked leaves: an empty layout (which nnx.state drops).
    assert not found.layout
  assert 'sbs/update_fraction/ln_f/scale' in want
  assert 'sbs/mean_count/c_fc/kernel' in want
  sbs_state = optax_sbs.find_state(optimizer.opt_state)
  np.testing.assert_allclose(
    float(want['sbs/mean_count/c_fc/kernel']), float(sbs_state.mean_count()['c_fc']['kernel'])
  )
  # GPT-style names group as their types.
  types = {
    jax.tree_util.keystr(p): optax_sbs.parameter_type(p, x)
    for p, x in jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(nnx.state(model, nnx.Param)))[
      0
    ]
  }
  assert types["['ln_1']['scale']"] == types["['ln_f']['bias']"] == 'norm'
  assert types["['wte']['embedding']"] == 'embedding'
  assert types["['c_fc']['kernel']"] == 'dense'
  with pytest.raises(ValueError, match='no stochastic batch size'):
    optax_sbs.layer_statistics(nnx.state(model))


@pytest.mark.parametrize('kind', ['masked_updates', 'magma'])
def test_kept_fractions_from_every_form_of_an_nnx_state(kind):
  make_tx = getattr(optax_sbs, kind)
  model, optimizer = make(lambda: make_tx(optax.adam(1e-2), key=0, probability=0.5))
  for _ in range(2):
    train_step(model, optimizer, TOKENS)
  want = optax_sbs.layer_statistics(optimizer.opt_state)
  kept = [k for k in want if '/kept_fraction/' in k]
  assert f'{kind}/kept_fraction/c_fc/kernel' in kept
  assert any(0 < float(want[k]) for k in kept)
  whole = nnx.state(optimizer)
  for form in (whole, whole['opt_state'], nnx.to_pure_dict(whole)):
    got = optax_sbs.layer_statistics(form)
    assert {k: float(v) for k, v in got.items()} == {k: float(v) for k, v in want.items()}
    found = optax_sbs.find_state(form, kind=kind)
    assert isinstance(found.kept, jax.Array) and found.kept.shape == (len(kept),)


def test_nnx_optimizer_state_round_trips_through_orbax_into_an_abstract_template(tmp_path):
  model, optimizer = make(TXS['wrapped_adamw'])
  for _ in range(3):
    train_step(model, optimizer, TOKENS)
  state = nnx.state(optimizer)
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(tmp_path / 'ckpt', state)
  # A fresh optimizer, restored from the template of an abstract one.
  abstract = nnx.eval_shape(lambda: make(TXS['wrapped_adamw'], seed=1)[1])
  with ocp.StandardCheckpointer() as ckpt:
    restored = ckpt.restore(tmp_path / 'ckpt', nnx.state(abstract))
  fresh_model, fresh = make(TXS['wrapped_adamw'], seed=1)
  nnx.update(fresh, restored)
  nnx.update(fresh_model, nnx.state(model))
  key = optax_sbs.find_state(fresh.opt_state).key
  assert jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
  for a, b in zip(
    helpers.numeric_leaves(nnx.state(fresh)), helpers.numeric_leaves(nnx.state(optimizer))
  ):
    np.testing.assert_array_equal(a, b)
  # Both go on identically.
  train_step(model, optimizer, TOKENS)
  train_step(fresh_model, fresh, TOKENS)
  for a, b in zip(
    jax.tree.leaves(nnx.state(fresh_model, nnx.Param)), jax.tree.leaves(nnx.state(model, nnx.Param))
  ):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_user_callables_see_one_path_form_in_init_and_update():
  """Under nnx.Optimizer, init flattens NNX variables (paths ending in
  ``.value``) and update plain gradients: the callables see the same paths."""
  seen = {'init': set(), 'update': set()}
  phase = ['init']

  def layer_axes(path, leaf):
    del leaf
    seen[phase[0]].add(jax.tree_util.keystr(path))
    return ()

  def group_fn(path, leaf):
    seen[phase[0]].add('group ' + jax.tree_util.keystr(path))
    return optax_sbs.parameter_type(path, leaf)

  def tx():
    return optax.chain(
      optax_sbs.magma(optax.adam(1e-2), key=0, layer_axes=layer_axes),
      optax_sbs.stochastic_batch_size(1, layer_axes=layer_axes, group_fn=group_fn),
    )

  model, optimizer = make(tx)
  phase[0] = 'update'
  train_step(model, optimizer, TOKENS)
  assert seen['init'] and not any(p.endswith('.value') for p in seen['init'] | seen['update'])
  assert seen['init'] <= seen['update']
  assert "['c_fc']['kernel']" in seen['init'] and "group ['c_fc']['kernel']" in seen['update']


def test_layers_from_axis_names_takes_nnx_partition_specs_as_they_come():
  """nnx.get_partition_spec(nnx.state(model, nnx.Param)) holds Variables of
  PartitionSpecs (logical names, MaxText's layer axis 1): accepted directly."""
  from jax.sharding import AxisType  # noqa: PLC0415

  class Block(nnx.Module):
    def __init__(self):
      self.w = nnx.Param(jnp.zeros((8, 4, 16)), sharding_names=('embed', 'layers', 'mlp'))
      self.b = nnx.Param(jnp.zeros((16,)))

  mesh = jax.make_mesh((1, 1, 1), ('embed', 'layers', 'mlp'), axis_types=(AxisType.Auto,) * 3)
  with jax.set_mesh(mesh):
    abstract = nnx.eval_shape(Block)
  params = nnx.state(abstract, nnx.Param)
  layer_axes = optax_sbs.layers_from_axis_names(nnx.get_partition_spec(params), num_layers=4)
  found = {
    jax.tree_util.keystr(p): layer_axes(p, x)
    for p, x in jax.tree_util.tree_flatten_with_path(params)[0]
  }
  assert found == {"['b'].value": (), "['w'].value": (1,)}
