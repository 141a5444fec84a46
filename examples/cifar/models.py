"""The paper's networks in Flax Linen: VGG11-BN, ResNet18/50 (CIFAR variants), a small CNN.

CIFAR variants: a 3x3 stride-1 stem and no max-pool, so 32x32 inputs keep
their resolution in the first stage. Every model takes NHWC float images and
``train`` (batch statistics and dropout on).

Regularisers of the paper's comparison (§5.4): ``dropout_rate`` drops the
features before the classifier (Dropout, rate 0.5 in the paper);
``depth_dropout`` is the adaptive dropout the paper cites (Huang et al. 2016):
rates that grow linearly with depth, ``depth_dropout * l / L`` for layer or
block ``l`` of ``L``. In the ResNets it is stochastic depth (a residual
branch is dropped for a whole example); in the plain CNNs it is dropout on
the output of each convolution layer. BatchNorm reduces over the batch
axis of the array it sees: under ``jax.jit`` with a batch sharded over
devices that is the global batch; under ``jax.pmap`` pass ``axis_name``.
"""

from collections.abc import Callable
from collections.abc import Sequence
import functools
from typing import Any
from typing import Literal

import flax.linen as nn
import jax.numpy as jnp

ModuleDef = Any


def _norm(train: bool, axis_name: str | None) -> ModuleDef:
  return functools.partial(
    nn.BatchNorm,
    use_running_average=not train,
    momentum=0.9,
    epsilon=1e-5,
    axis_name=axis_name,
  )


def depth_rates(num_layers: int, final_rate: float) -> list[float]:
  """Huang et al.'s linear decay rule: ``final_rate * l / L`` for l = 1..L."""
  return [final_rate * (i + 1) / num_layers for i in range(num_layers)]


def _drop(rate: float, train: bool, broadcast_dims=()):
  """Inverted dropout (identity when ``rate`` is 0 or not training)."""
  return nn.Dropout(rate, broadcast_dims=broadcast_dims, deterministic=not train or rate == 0.0)


class SmallCNN(nn.Module):
  """Conv-BN-ReLU stages, each after the first downsampling by a stride-2 conv.

  With the default widths (16, 32, 64): 24k parameters. It uses
  strided convolutions instead of max-pooling because XLA:CPU's max-pool
  gradient is an order of magnitude slower than the pooling itself: this
  model is the one meant to train at useful speed on 2 CPU cores.
  """

  num_classes: int = 10
  widths: Sequence[int] = (16, 32, 64)
  # 'pool': global average pooling before the classifier; 'flatten': the
  # classifier sees every position of the last feature map (a large dense
  # layer that memorises its training set quickly).
  head: Literal['pool', 'flatten'] = 'pool'
  dropout_rate: float = 0.0
  depth_dropout: float = 0.0
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool = True):
    if self.head not in ('pool', 'flatten'):
      raise ValueError(f"head must be 'pool' or 'flatten', got {self.head!r}")
    norm = _norm(train, self.axis_name)
    rates = depth_rates(len(self.widths), self.depth_dropout)
    for i, (width, rate) in enumerate(zip(self.widths, rates)):
      strides = 1 if i == 0 else 2
      x = nn.Conv(width, (3, 3), strides, use_bias=False)(x)
      x = _drop(rate, train)(nn.relu(norm()(x)))
    x = jnp.mean(x, axis=(1, 2)) if self.head == 'pool' else x.reshape(x.shape[0], -1)
    x = _drop(self.dropout_rate, train)(x)
    return nn.Dense(self.num_classes)(x)


_VGG11 = (64, 'M', 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M')


class VGG11(nn.Module):
  """VGG11 with batch normalisation after every convolution (CIFAR head)."""

  num_classes: int = 10
  dropout_rate: float = 0.0
  depth_dropout: float = 0.0
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool = True):
    norm = _norm(train, self.axis_name)
    convs = [layer for layer in _VGG11 if layer != 'M']
    rates = iter(depth_rates(len(convs), self.depth_dropout))
    for layer in _VGG11:
      if layer == 'M':
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      else:
        x = nn.Conv(layer, (3, 3), use_bias=False)(x)
        x = _drop(next(rates), train)(nn.relu(norm()(x)))
    x = x.reshape((x.shape[0], -1))
    x = _drop(self.dropout_rate, train)(x)
    return nn.Dense(self.num_classes)(x)


def _add_shortcut(x, y, strides: int, norm: ModuleDef, drop_rate: float, train: bool):
  """``relu(shortcut(x) + y)``: identity, or a 1x1 projection when shapes differ.

  With ``drop_rate``, the residual branch ``y`` of an example is dropped with
  that probability and scaled by ``1 / (1 - drop_rate)`` otherwise
  (stochastic depth, inverted). Called inside a block's compact
  ``__call__``, so the projection's modules belong to that block.
  """
  y = _drop(drop_rate, train, broadcast_dims=tuple(range(1, y.ndim)))(y)
  if x.shape != y.shape:
    x = norm()(nn.Conv(y.shape[-1], (1, 1), strides, use_bias=False)(x))
  return nn.relu(x + y)


class _Block(nn.Module):
  """The fields every residual block has; subclasses define ``__call__``."""

  filters: int
  norm: ModuleDef
  strides: int = 1
  drop_rate: float = 0.0
  train: bool = False


class BasicBlock(_Block):
  """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

  @nn.compact
  def __call__(self, x):
    y = nn.Conv(self.filters, (3, 3), self.strides, use_bias=False)(x)
    y = nn.relu(self.norm()(y))
    y = nn.Conv(self.filters, (3, 3), use_bias=False)(y)
    y = self.norm(scale_init=nn.initializers.zeros_init())(y)
    return _add_shortcut(x, y, self.strides, self.norm, self.drop_rate, self.train)


class Bottleneck(_Block):
  """1x1 reduce, 3x3, 1x1 expand (x4), with a projection shortcut if needed."""

  @nn.compact
  def __call__(self, x):
    y = nn.relu(self.norm()(nn.Conv(self.filters, (1, 1), use_bias=False)(x)))
    y = nn.Conv(self.filters, (3, 3), self.strides, use_bias=False)(y)
    y = nn.relu(self.norm()(y))
    y = nn.Conv(self.filters * 4, (1, 1), use_bias=False)(y)
    y = self.norm(scale_init=nn.initializers.zeros_init())(y)
    return _add_shortcut(x, y, self.strides, self.norm, self.drop_rate, self.train)


class ResNet(nn.Module):
  """ResNet for 32x32 inputs: 3x3 stem, no max-pool, four stages."""

  stage_sizes: Sequence[int]
  block: Callable[..., nn.Module]
  num_classes: int = 10
  dropout_rate: float = 0.0
  depth_dropout: float = 0.0
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool = True):
    norm = _norm(train, self.axis_name)
    x = nn.Conv(64, (3, 3), use_bias=False, name='stem_conv')(x)
    x = nn.relu(norm(name='stem_norm')(x))
    rates = iter(depth_rates(sum(self.stage_sizes), self.depth_dropout))
    for stage, size in enumerate(self.stage_sizes):
      for b in range(size):
        strides = 2 if stage > 0 and b == 0 else 1
        x = self.block(64 * 2**stage, norm, strides, next(rates), train)(x)
    x = jnp.mean(x, axis=(1, 2))
    x = _drop(self.dropout_rate, train)(x)
    return nn.Dense(self.num_classes)(x)


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block=BasicBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=Bottleneck)

# Twice the small CNN's widths and a classifier on the flattened last
# feature map (175k parameters, 82k of them in the classifier): it fits 500
# CIFAR-10 images completely within a dozen epochs, the overfitting regime
# of the overfitting study (benchmarks/studies/overfit.py).
WideCNN = functools.partial(SmallCNN, widths=(32, 64, 128), head='flatten')

MODELS = {
  'small_cnn': SmallCNN,
  'wide_cnn': WideCNN,
  'vgg11': VGG11,
  'resnet18': ResNet18,
  'resnet50': ResNet50,
}


def create_model(name: str, num_classes: int, **kwargs) -> nn.Module:
  """The model registered under ``name``; raises ValueError listing names."""
  if name not in MODELS:
    raise ValueError(f'unknown model {name!r}; choose one of {", ".join(MODELS)}')
  return MODELS[name](num_classes=num_classes, **kwargs)
