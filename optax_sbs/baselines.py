"""The optimisers the paper compares SBS with (§5.4), as Optax transformations.

Dropout and adaptive dropout (stochastic depth) are model changes, not
optimisers: see ``examples/cifar/models.py``.
"""

from optax_sbs._accelerated_sgd import AcceleratedSGDState
from optax_sbs._accelerated_sgd import accelerated_sgd
from optax_sbs._entropy_sgd import ScaleByEntropySGDState
from optax_sbs._entropy_sgd import entropy_sgd
from optax_sbs._entropy_sgd import scale_by_entropy_sgd

__all__ = (
  'accelerated_sgd',
  'AcceleratedSGDState',
  'entropy_sgd',
  'scale_by_entropy_sgd',
  'ScaleByEntropySGDState',
)
