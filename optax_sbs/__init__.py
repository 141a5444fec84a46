"""optax_sbs: stochastic batch size (SBS) as an Optax gradient transformation."""

from optax_sbs import baselines
from optax_sbs._alias import sbs
from optax_sbs._diagnostics import find_state
from optax_sbs._diagnostics import layer_statistics
from optax_sbs._diagnostics import maxtext_slice_names
from optax_sbs._diagnostics import slice_names
from optax_sbs._granularity import columns
from optax_sbs._granularity import rows
from optax_sbs._groups import parameter_type
from optax_sbs._groups import single_group
from optax_sbs._keys import key_data_tree
from optax_sbs._keys import wrap_key_data_tree
from optax_sbs._layers import layers_from_axis_names
from optax_sbs._layers import layers_under
from optax_sbs._magma import MagmaState
from optax_sbs._magma import magma
from optax_sbs._masked_updates import MaskedUpdatesState
from optax_sbs._masked_updates import masked_updates
from optax_sbs._probability import update_probability
from optax_sbs._schedules import sigmoid_schedule
from optax_sbs._transform import StochasticBatchSizeState
from optax_sbs._transform import reset_accumulators
from optax_sbs._transform import stochastic_batch_size
from optax_sbs._wrapper import WithStochasticBatchSizeState
from optax_sbs._wrapper import with_stochastic_batch_size

__version__ = '0.2.0.dev0'

__all__ = (
  'baselines',
  'columns',
  'find_state',
  'key_data_tree',
  'layer_statistics',
  'layers_from_axis_names',
  'layers_under',
  'magma',
  'MagmaState',
  'masked_updates',
  'maxtext_slice_names',
  'MaskedUpdatesState',
  'parameter_type',
  'reset_accumulators',
  'rows',
  'sbs',
  'sigmoid_schedule',
  'single_group',
  'slice_names',
  'stochastic_batch_size',
  'StochasticBatchSizeState',
  'update_probability',
  'with_stochastic_batch_size',
  'WithStochasticBatchSizeState',
  'wrap_key_data_tree',
)
