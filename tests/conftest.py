"""Test set-up: 8 virtual CPU devices for the data-parallel tests.

The flag must be set before JAX initialises its backends, so it is set here,
at collection time, for the whole run. Single-device tests are unaffected:
they run on the default device.
"""

import os

_FLAG = '--xla_force_host_platform_device_count=8'
if _FLAG not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' + _FLAG).strip()
