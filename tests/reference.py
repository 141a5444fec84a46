"""Independent NumPy reference of Algorithm 2 and eqs. (17)-(21), in float64.

Written from the paper, not from the library: no JAX in here.
"""

import numpy as np

STD_RTOL = 1e-5  # the documented "zero up to rounding" threshold


def _standardize(x, mean, std):
  if std <= STD_RTOL * abs(mean):
    return np.zeros_like(x)
  return (x - mean) / std


def probabilities(magnitudes, groups, alpha, lam, global_normalization='std'):
  """p per leaf for lists of magnitude arrays and group labels.

  ``global_normalization``: 'std' standardises each leaf's mean over its
  group (eq. 19); 'mean' divides its difference by the group's mean."""
  means = [a.mean() if a.size else 0.0 for a in magnitudes]
  stds = [a.std() if a.size else 0.0 for a in magnitudes]
  mu_tilde = {}
  for group in set(groups):
    idx = [i for i, g in enumerate(groups) if g == group]
    n = np.array([magnitudes[i].size for i in idx], dtype=np.float64)
    m = np.array([means[i] for i in idx], dtype=np.float64)
    if n.sum() == 0:
      for i in idx:
        mu_tilde[i] = 0.0
      continue
    gm = np.sum(n * m) / n.sum()
    gs = np.sqrt(np.sum(n * (m - gm) ** 2) / n.sum())
    for i in idx:
      if global_normalization == 'std':
        mu_tilde[i] = _standardize(np.float64(means[i]), gm, gs)
      else:
        mu_tilde[i] = (means[i] - gm) / gm if gm > 0 else 0.0
  out = []
  for i, a in enumerate(magnitudes):
    v = _standardize(a, means[i], stds[i])
    out.append(1.0 / (1.0 + np.exp(-(alpha * v + lam * mu_tilde[i]))))
  return out


def sbs_step(grads, cmas, counts, chis, scale_by_count=False):
  """One step of Algorithm 2 given the masks. Returns updates, cmas, counts."""
  updates, new_cmas, new_counts = [], [], []
  for g, cma, k, chi in zip(grads, cmas, counts, chis):
    g_tilde = cma + (g - cma) / k
    chi = chi.astype(np.float64)
    step = g_tilde * k if scale_by_count else g_tilde
    updates.append(chi * step)
    new_cmas.append((1 - chi) * g_tilde)
    new_counts.append((1 - chi) * (k + 1) + chi)
  return updates, new_cmas, new_counts


def frozen_momentum_step(sbs_out, trace, chis, lr, momentum):
  """optax.sgd(lr, momentum) under Algorithm 2: only released elements
  (chi = 1) update their trace and move. Returns updates, traces."""
  updates, new_traces = [], []
  for u, t, chi in zip(sbs_out, trace, chis):
    moved = u + momentum * t
    new_traces.append(np.where(chi, moved, t))
    updates.append(np.where(chi, -lr * moved, 0.0))
  return updates, new_traces


def frozen_adam_step(sbs_out, mu, nu, step, chis, params, lr, b1, b2, eps, weight_decay=0.0):
  """optax.adam / adamw under Algorithm 2: released elements update their
  moments and move; the bias correction uses the global step ``step``
  (1-based, advanced every step). Returns updates, mus, nus."""
  updates, new_mu, new_nu = [], [], []
  for u, m, v, chi, w in zip(sbs_out, mu, nu, chis, params):
    m_new = b1 * m + (1 - b1) * u
    v_new = b2 * v + (1 - b2) * u * u
    m_hat = m_new / (1 - b1**step)
    v_hat = v_new / (1 - b2**step)
    step_dir = m_hat / (np.sqrt(v_hat) + eps) + weight_decay * w
    updates.append(np.where(chi, -lr * step_dir, 0.0))
    new_mu.append(np.where(chi, m_new, m))
    new_nu.append(np.where(chi, v_new, v))
  return updates, new_mu, new_nu


def unstack(array, axes):
  """The slices of ``array`` along its stacked ``axes``, in row-major order."""
  if not axes:
    return [array]
  moved = np.moveaxis(array, axes, range(len(axes)))
  stacked = moved.shape[: len(axes)]
  return [moved[idx] for idx in np.ndindex(*stacked)]


def restack(slices, shape, axes):
  """Inverse of :func:`unstack` for an array of ``shape``."""
  if not axes:
    return slices[0]
  stacked = tuple(shape[a] for a in axes)
  moved = np.stack(slices).reshape(stacked + slices[0].shape)
  return np.moveaxis(moved, range(len(axes)), axes)


def stacked_probabilities(magnitudes, groups, axes, alpha, lam, global_normalization='std'):
  """:func:`probabilities` with every slice of a stacked leaf a layer of its own:
  the leaves are cut into their slices, each slice gets the leaf's group, and
  the probabilities are put back in the leaves' shapes."""
  slices, slice_groups, counts = [], [], []
  for a, g, ax in zip(magnitudes, groups, axes):
    parts = unstack(a, ax)
    slices += parts
    slice_groups += [g] * len(parts)
    counts.append(len(parts))
  flat = probabilities(slices, slice_groups, alpha, lam, global_normalization)
  out, start = [], 0
  for a, ax, n in zip(magnitudes, axes, counts):
    out.append(restack(flat[start : start + n], a.shape, ax))
    start += n
  return out
