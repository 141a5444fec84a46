"""Test set-up: 8 virtual CPU devices for the data-parallel tests.

The flag must be set before JAX initialises its backends, so it is set here,
at collection time, for the whole run. Single-device tests are unaffected:
they run on the default device.
"""

import os

_FLAG = '--xla_force_host_platform_device_count=8'
if _FLAG not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' + _FLAG).strip()

import sys  # pylint: disable=g-import-not-at-top,g-bad-import-order

# The Flax example is a folder of modules a user can fork (Flax's layout):
# its tests import them the way main.py does.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), 'examples', 'cifar'))
