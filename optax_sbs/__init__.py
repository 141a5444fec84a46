"""optax_sbs: stochastic batch size (SBS) as an Optax gradient transformation."""

from optax_sbs._alias import sbs
from optax_sbs._probability import parameter_type
from optax_sbs._probability import single_group
from optax_sbs._probability import update_probability
from optax_sbs._schedules import sigmoid_schedule
from optax_sbs._transform import find_state
from optax_sbs._transform import reset_accumulators
from optax_sbs._transform import stochastic_batch_size
from optax_sbs._transform import StochasticBatchSizeState

__version__ = '0.1.0'

__all__ = (
    'find_state',
    'parameter_type',
    'reset_accumulators',
    'sbs',
    'sigmoid_schedule',
    'single_group',
    'stochastic_batch_size',
    'StochasticBatchSizeState',
    'update_probability',
)
