"""models.py: the networks' sizes, parameter types and names."""

import jax
import jax.numpy as jnp
import pytest

import models


@pytest.mark.parametrize(
  'name,num_params',
  [
    ('small_cnn', 24_346),
    ('wide_cnn', 175_402),
    ('vgg11', 9_228_362),
    ('resnet18', 11_173_962),
    ('resnet50', 23_520_842),
  ],
)
def test_model_shapes_and_sizes(name, num_params):
  model = models.create_model(name, num_classes=10)
  x = jnp.zeros((2, 32, 32, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  assert sum(v.size for v in jax.tree.leaves(variables['params'])) == num_params
  assert 'batch_stats' in variables
  out = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
  assert out.shape == (2, 10)
  # CIFAR variants: a 3x3 stem on the RGB input.
  stem = variables['params'].get('stem_conv') or variables['params']['Conv_0']
  assert stem['kernel'].shape[:3] == (3, 3, 3)


def test_model_parameter_types_for_sbs_grouping():
  import optax_sbs  # pylint: disable=g-import-not-at-top

  variables = jax.eval_shape(
    lambda: models.ResNet18().init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
  )
  kinds = {
    optax_sbs.parameter_type(p, x)
    for p, x in jax.tree_util.tree_flatten_with_path(variables['params'])[0]
  }
  assert kinds == {'conv', 'norm', 'dense', 'bias'}


def test_unknown_model():
  with pytest.raises(ValueError, match="unknown model 'vgg19'"):
    models.create_model('vgg19', 10)
