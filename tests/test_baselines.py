"""The paper's baseline optimisers against NumPy references of their papers' rules."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optax_sbs import baselines

# A quadratic f(w) = 0.5 sum(a w^2) - sum(b w) with a known gradient.
A = np.array([0.5, 1.0, 2.0, 4.0, 0.1, 3.0])
B = np.array([1.0, -1.0, 0.5, 0.0, 2.0, -0.3])


def loss(w):
  return 0.5 * jnp.sum(A * w**2) - jnp.sum(B * w)


def grad_np(w):
  return A * w - B


def asgd_reference(w, steps, delta, kappa, xi, c):
  """Algorithm 1 of Kidambi et al. (2018), float64, exact gradients."""
  bar = w.copy()
  a = 1 - c**2 * xi / kappa
  out = []
  for _ in range(steps):
    g = grad_np(w)
    bar = a * bar + (1 - a) * (w - kappa * delta / c * g)
    w = c / (c + 1 - a) * (w - delta * g) + (1 - a) / (c + 1 - a) * bar
    out.append(w.copy())
  return out


@pytest.mark.parametrize('kappa,xi', [(1000.0, 10.0), (10.0, 2.0)])
def test_accelerated_sgd_matches_algorithm_1(kappa, xi):
  w0 = np.linspace(-1, 1, 6)
  want = asgd_reference(w0, 20, 0.05, kappa, xi, 0.7)
  tx = baselines.accelerated_sgd(0.05, kappa=kappa, xi=xi)
  params = jnp.asarray(w0, jnp.float32)
  state = tx.init(params)
  step = jax.jit(tx.update)
  for t in range(20):
    updates, state = step(jax.grad(loss)(params), state, params)
    params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(np.asarray(params), want[t], rtol=2e-4, atol=2e-5)


def test_accelerated_sgd_schedule_and_tree():
  sched = optax.linear_schedule(0.1, 0.01, 10)
  tx = baselines.accelerated_sgd(sched)
  params = {'a': jnp.ones(3), 'b': [jnp.zeros((2, 2))]}
  state = tx.init(params)
  updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
  assert jax.tree.structure(updates) == jax.tree.structure(params)
  assert int(state.count) == 1


@pytest.mark.parametrize(
  'kwargs,match',
  [
    ({'kappa': 0.5}, 'kappa'),
    ({'xi': 100.0}, 'xi'),
    ({'small_constant': 0.0}, 'small_constant'),
    ({'kappa': float('nan')}, 'kappa'),
  ],
)
def test_accelerated_sgd_bad_hyperparameters(kwargs, match):
  with pytest.raises(ValueError, match=match):
    baselines.accelerated_sgd(0.1, **kwargs)


def test_accelerated_sgd_needs_params():
  tx = baselines.accelerated_sgd(0.1)
  state = tx.init(jnp.ones(2))
  with pytest.raises(ValueError):
    tx.update(jnp.ones(2), state)


def entropy_sgd_reference(x, steps, eta, num_inner, eta_inner, gamma, rate, outer_step='paper'):
  """Algorithm 1 of Chaudhari et al. (2017) without noise, float64; with
  ``outer_step='authors'`` the outer step of their code, eta (x - mu)."""
  out = []
  for _ in range(steps):
    xp, mu = x.copy(), x.copy()
    for _ in range(num_inner):
      dxp = grad_np(xp) - gamma * (x - xp)
      xp = xp - eta_inner * dxp
      mu = (1 - rate) * mu + rate * xp
    x = x - eta * (gamma if outer_step == 'paper' else 1.0) * (x - mu)
    out.append(x.copy())
  return out


@pytest.mark.parametrize('outer_step', ['paper', 'authors'])
@pytest.mark.parametrize('num_inner', [1, 5])
def test_entropy_sgd_matches_algorithm_1_without_noise(num_inner, outer_step):
  x0 = np.linspace(-1, 1, 6)
  want = entropy_sgd_reference(x0, 15, 2.0, num_inner, 0.1, 0.5, 0.75, outer_step)
  tx = baselines.entropy_sgd(
    2.0,
    key=0,
    num_inner_steps=num_inner,
    inner_learning_rate=0.1,
    gamma=0.5,
    noise=0.0,
    outer_step=outer_step,
  )
  params = jnp.asarray(x0, jnp.float32)
  state = tx.init(params)
  step = jax.jit(lambda g, s, p: tx.update(g, s, p, value_fn=loss))
  for t in range(15):
    updates, state = step(jax.grad(loss)(params), state, params)
    params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(np.asarray(params), want[t], rtol=1e-4, atol=1e-5)


def test_entropy_sgd_langevin_noise_has_the_right_scale():
  """With f = 0 the output is Gaussian with a variance known in closed form."""
  n, num_inner, eta_in, gamma, eps, rate = 200_000, 5, 0.1, 0.5, 0.3, 0.75
  tx = baselines.scale_by_entropy_sgd(
    3, num_inner_steps=num_inner, inner_learning_rate=eta_in, gamma=gamma, noise=eps, mean_rate=rate
  )
  params = jnp.zeros(n)
  updates, _ = tx.update(jnp.zeros(n), tx.init(params), params, value_fn=lambda w: 0.0 * jnp.sum(w))
  # d_l = x'_l - x = sum_j (1 - eta' gamma)^(l - j) s n_j, mu - x =
  # sum_l rate (1 - rate)^(L - l) d_l, output = gamma (x - mu).
  s, decay = np.sqrt(eta_in) * eps, 1 - eta_in * gamma
  weights = [rate * (1 - rate) ** (num_inner - i) for i in range(1, num_inner + 1)]
  c = [
    sum(weights[i - 1] * decay ** (i - j) for i in range(j, num_inner + 1))
    for j in range(1, num_inner + 1)
  ]
  want_std = gamma * s * np.sqrt(np.sum(np.square(c)))
  got = np.asarray(updates)
  assert abs(got.mean()) < 5 * want_std / np.sqrt(n)
  assert abs(got.std() / want_std - 1) < 0.02


def test_entropy_sgd_key_and_errors():
  tx = baselines.scale_by_entropy_sgd(0, noise=1.0)
  params = jnp.zeros(10)
  state = tx.init(params)
  zero = lambda w: 0.0 * jnp.sum(w)
  u1, state = tx.update(jnp.zeros(10), state, params, value_fn=zero)
  u2, _ = tx.update(jnp.zeros(10), state, params, value_fn=zero)
  assert not np.allclose(u1, u2)  # the key moves on
  with pytest.raises(ValueError, match='value_fn'):
    tx.update(jnp.zeros(10), state, params)
  with pytest.raises(ValueError, match='num_inner_steps'):
    baselines.scale_by_entropy_sgd(0, num_inner_steps=0)
  with pytest.raises(TypeError, match='num_inner_steps'):
    baselines.scale_by_entropy_sgd(0, num_inner_steps=2.5)
  with pytest.raises(ValueError, match='mean_rate'):
    baselines.scale_by_entropy_sgd(0, mean_rate=1.5)
  with pytest.raises(ValueError, match='outer_step'):
    baselines.scale_by_entropy_sgd(0, outer_step='gamma')
  with pytest.raises(ValueError, match='batch of keys'):
    baselines.scale_by_entropy_sgd(jax.random.split(jax.random.key(0), 2))


def test_entropy_sgd_chains_and_ignores_other_extra_args():
  tx = optax.chain(optax.clip_by_global_norm(1.0), baselines.entropy_sgd(0.1, key=0, momentum=0.9))
  params = {'w': jnp.ones((3, 2)), 'b': jnp.zeros(2)}
  value_fn = lambda p: jnp.sum(p['w'] ** 2) + jnp.sum(p['b'])
  state = tx.init(params)
  updates, state = jax.jit(lambda g, s, p: tx.update(g, s, p, value_fn=value_fn, other=1.0))(
    jax.grad(value_fn)(params), state, params
  )
  assert jax.tree.structure(updates) == jax.tree.structure(params)
