"""The MaxText recipe: each family member trains a tiny MaxText decoder on CPU.

Every run is ``python examples/maxtext/launcher.py`` in its own process, on
MaxText's synthetic data (one fixed batch, so the loss falls fast), reading
the losses and the family's statistics back from MaxText's ``metrics_file``.
Skipped where MaxText is not installed, unless ``OPTAX_SBS_REQUIRE_MAXTEXT=1``.
"""

import concurrent.futures
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

if os.environ.get('OPTAX_SBS_REQUIRE_MAXTEXT') == '1':
  try:
    import maxtext  # noqa: F401
  except ImportError as e:
    pytest.fail(f'OPTAX_SBS_REQUIRE_MAXTEXT=1 but MaxText does not import: {e}', pytrace=False)
else:
  pytest.importorskip('maxtext')

LAUNCHER = pathlib.Path(__file__).with_name('launcher.py')
LAYERS = 3
STEPS = 10
CHECKPOINT_STEP = 5  # the resumed run restarts from the checkpoint of this step
# A tiny llama2-style decoder; the schedule's length is fixed so that it does not
# depend on `steps` (the resumed run is the uninterrupted one, cut and restarted).
TINY = [
  'dataset_type=synthetic',
  f'base_num_decoder_layers={LAYERS}',
  'base_emb_dim=64',
  'base_mlp_dim=128',
  'base_num_query_heads=2',
  'base_num_kv_heads=2',
  'head_dim=32',
  'vocab_size=256',
  'max_target_length=64',
  'attention=dot_product',
  'learning_rate=3e-3',
  f'learning_rate_schedule_steps={STEPS}',
  'enable_tensorboard=false',
  'skip_jax_distributed_system=true',
]

# A tiny DeepSeek-style decoder: 2 dense layers, then 2 mixture-of-experts layers.
DEEPSEEK = [
  'model_name=deepseek3-tiny',
  'override_model_config=true',
  'base_num_decoder_layers=4',
  'first_num_dense_layers=2',
  'num_experts=4',
  'num_experts_per_tok=2',
  'qk_nope_head_dim=16',
  'qk_rope_head_dim=16',
  'v_head_dim=16',
  'sparse_matmul=false',
]


def launch(workdir, name, method, *overrides, devices=1):
  """Runs the launcher; returns its metrics, one dict per step."""
  metrics = workdir / f'{name}.jsonl'
  env = dict(os.environ)
  if devices > 1:
    env['XLA_FLAGS'] = (
      f'{env.get("XLA_FLAGS", "")} --xla_force_host_platform_device_count={devices}'
    )
  command = [
    sys.executable,
    str(LAUNCHER),
    f'--method={method}',
    *TINY,
    f'run_name={name}',
    f'base_output_directory={workdir}',
    f'metrics_file={metrics}',
    f'steps={STEPS}',
    *overrides,
  ]
  done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
  if done.returncode:
    raise AssertionError(f'{name} failed ({done.returncode}):\n{done.stderr[-6000:]}')
  return [json.loads(line) for line in metrics.read_text().splitlines()]


def losses(metrics):
  return [m['learning/loss'] for m in metrics]


def statistics(metrics, name):
  """``{parameter/layer: [value per step]}`` of statistic ``name``."""
  keys = [k for k in metrics[0] if k.startswith(name + '/')]
  return {k[len(name) + 1 :]: [m[k] for m in metrics] for k in keys}


def checkpointed_and_resumed(workdir):
  """The SBS run, checkpointed every CHECKPOINT_STEP steps, then restarted
  after its checkpoint of step CHECKPOINT_STEP (the later ones removed, the
  same command run again: MaxText resumes from the latest checkpoint)."""
  checkpointing = [
    'per_device_batch_size=4',
    'enable_checkpointing=true',
    'async_checkpointing=false',
    f'checkpoint_period={CHECKPOINT_STEP}',
  ]
  whole = launch(workdir, 'sbs', 'sbs', *checkpointing)
  checkpoints = workdir / 'sbs' / 'checkpoints'
  saved = sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
  assert CHECKPOINT_STEP in saved, saved
  for step in saved:
    if step > CHECKPOINT_STEP:
      shutil.rmtree(checkpoints / str(step))
  (workdir / 'sbs.jsonl').rename(workdir / 'sbs_uninterrupted.jsonl')
  return whole, launch(workdir, 'sbs', 'sbs', *checkpointing)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Every run of this file, two at a time: ``{name: metrics}``."""
  workdir = tmp_path_factory.mktemp('maxtext')
  one_device = ['per_device_batch_size=4', 'enable_checkpointing=false']
  four_devices = ['per_device_batch_size=1', 'enable_checkpointing=false']  # the same global batch
  data_parallel = ['ici_fsdp_parallelism=1', 'ici_data_parallelism=4']
  jobs = {  # the longest first
    'deepseek': lambda: launch(workdir, 'deepseek', 'sbs', *DEEPSEEK, *one_device),
    'sbs': lambda: checkpointed_and_resumed(workdir),
    'fsdp': lambda: launch(workdir, 'fsdp', 'sbs', *four_devices, devices=4),
    'dp': lambda: launch(workdir, 'dp', 'sbs', *four_devices, *data_parallel, devices=4),
    'magma': lambda: launch(workdir, 'magma', 'magma', *one_device),
    'masked_updates': lambda: launch(workdir, 'masked_updates', 'masked_updates', *one_device),
    'sbs_seed_1': lambda: launch(workdir, 'sbs_seed_1', 'sbs', '--seed=1', *one_device),
    # A spike threshold far below the mean: every step whose loss and gradient norm
    # do not fall far below their recent spread is skipped.
    'skip': lambda: launch(
      workdir,
      'skip',
      'sbs',
      *one_device,
      'skip_step_on_spikes=true',
      'skip_step_interval=4',
      'skip_step_scaling_factor=-100',
    ),
    'trainable': lambda: launch(
      workdir, 'trainable', 'sbs', *one_device, 'trainable_parameters_mask=[.*mlp.*]'
    ),
  }
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    futures = {name: pool.submit(job) for name, job in jobs.items()}
    out = {name: future.result() for name, future in futures.items()}
  out['sbs'], out['resumed'] = out['sbs']
  return out


FAMILY = {
  'sbs': 'sbs/update_fraction',
  'magma': 'magma/score',
  'masked_updates': 'masked_updates/kept_fraction',
}


@pytest.mark.parametrize('method', FAMILY)
def test_loss_falls(runs, method):
  loss = losses(runs[method])
  assert len(loss) == STEPS
  assert loss[-1] < loss[0] - 0.1, loss


@pytest.mark.parametrize('method', FAMILY)
def test_one_statistic_per_layer(runs, method):
  stats = statistics(runs[method], FAMILY[method])
  assert not [k for k in stats if '/layers/' in k], 'a stacked parameter reported as one'
  per_parameter = {}
  for key in stats:
    if m := re.fullmatch(r'(.*)/layers_(\d+)/(.*)', key):
      per_parameter.setdefault((m[1], m[3]), set()).add(int(m[2]))
  assert per_parameter, sorted(stats)
  for parameter, layers in per_parameter.items():
    assert layers == set(range(LAYERS)), parameter
  assert 'decoder/layers_0/mlp/wo/kernel' in stats


def test_sbs_freezes_no_layer_with_the_default_lam(runs):
  fractions = statistics(runs['sbs'], 'sbs/update_fraction')
  frozen = [name for name, f in fractions.items() if max(f) == 0.0]
  assert not frozen
  mean = {name: sum(f) / len(f) for name, f in fractions.items()}
  assert min(mean.values()) > 0.1, mean


def test_resumed_run_repeats_the_uninterrupted_one(runs):
  """The run restarted from a mid-run checkpoint gives the same losses and
  statistics as the uninterrupted run, bit for bit (same programs, same
  device, the optimiser state and its key restored exactly)."""
  whole, resumed = runs['sbs'], runs['resumed']
  assert [m['step'] for m in resumed] == list(range(CHECKPOINT_STEP + 1, STEPS))
  tail = whole[CHECKPOINT_STEP + 1 :]
  assert losses(resumed) == losses(tail)
  fraction = lambda ms: statistics(ms, 'sbs/update_fraction')
  assert fraction(resumed) == fraction(tail)


def test_fsdp_and_data_parallel_draw_the_same_masks(runs):
  """4-way FSDP and 4-way data parallelism, one global batch, one key: the
  same draws. The update fractions agree to 2e-3 per layer and step, not
  bit for bit: the two layouts reduce the gradients in different orders, and
  an element whose adaptive probability moves with that rounding across its
  draw flips (a few in thousands). Independent draws (another seed) differ
  several times more."""
  fsdp, dp = runs['fsdp'], runs['dp']
  assert {m['perf/per_device_tokens'] for m in fsdp + dp} == {64.0}  # 4 devices, batch 1 each
  for a, b in zip(losses(fsdp), losses(dp), strict=True):
    assert abs(a - b) <= 2e-3
  assert losses(fsdp)[-1] < losses(fsdp)[0] - 0.1
  tolerance = 2e-3
  a, b = statistics(fsdp, 'sbs/update_fraction'), statistics(dp, 'sbs/update_fraction')
  assert a.keys() == b.keys()
  assert max(abs(x - y) for k in a for x, y in zip(a[k], b[k])) <= tolerance
  # Step 0, seed 0 against seed 1 (one device, the same batch): other draws.
  seed_0 = statistics(runs['sbs'][:1], 'sbs/update_fraction')
  seed_1 = statistics(runs['sbs_seed_1'][:1], 'sbs/update_fraction')
  assert max(abs(seed_0[k][0] - seed_1[k][0]) for k in seed_0) > 3 * tolerance


def test_a_skipped_step_leaves_the_sbs_state_as_it_was(runs):
  """With skip_step_on_spikes, SBS runs inside the spike skipper: a skipped
  step changes neither the parameters nor SBS's counts."""
  steps = runs['skip']
  skipped = [t for t, m in enumerate(steps) if m['optim/step_skipped'] == 1.0]
  assert skipped and skipped[0] > 0, skipped
  assert len(skipped) < len(steps) - 1, skipped
  counts = lambda m: {k: v for k, v in m.items() if k.startswith('sbs/')}
  for t in skipped:
    assert steps[t]['learning/param_norm'] == steps[t - 1]['learning/param_norm']
    assert counts(steps[t]) == counts(steps[t - 1])
  taken = [t for t in range(1, len(steps)) if t not in skipped]
  assert any(counts(steps[t]) != counts(steps[t - 1]) for t in taken)


def test_trainable_parameters_mask(runs):
  """With trainable_parameters_mask, SBS wraps MaxText's multi_transform: the
  loss falls, and SBS keeps state (and statistics) for the frozen
  parameters too."""
  steps = runs['trainable']
  assert losses(steps)[-1] < losses(steps)[0] - 0.1
  stats = statistics(steps, 'sbs/update_fraction')
  assert 'decoder/layers_2/mlp/wo/kernel' in stats
  assert 'decoder/layers_2/self_attention/query/kernel' in stats  # frozen


def test_deepseek_stacks(runs):
  """DeepSeek-style models stack dense_layers and moe_layers: each layer of
  each stack gets its own statistics, named as in the unrolled model."""
  steps = runs['deepseek']
  assert losses(steps)[-1] < losses(steps)[0] - 0.1
  stats = statistics(steps, 'sbs/update_fraction')
  assert not [k for k in stats if re.search(r'/(dense_|moe_)?layers/', k)]
  for stack in ('dense_layers', 'moe_layers'):
    layers = {int(m[1]) for k in stats if (m := re.search(rf'/{stack}_(\d+)/', k))}
    assert layers == {0, 1}, (stack, sorted(stats))
  assert 'decoder/moe_layers_1/DeepSeekMoeBlock_0/MoeBlock_0/wo' in stats


ABSTRACT_PARAMS = """
import json, os, sys
import jax
from maxtext.configs import pyconfig
from maxtext.utils import maxtext_utils, model_creation_utils
from maxtext.utils.globals import MAXTEXT_CONFIGS_DIR
import optax_sbs

config = pyconfig.initialize([None, os.path.join(MAXTEXT_CONFIGS_DIR, 'base.yml'), *sys.argv[1:]])
params = maxtext_utils.get_abstract_param(model_creation_utils.from_config(config), config)['params']
layer_axes = optax_sbs.layers_under(('dense_layers', 'moe_layers'), axis=config.param_scan_axis)
out = {}
for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
  leaf = getattr(leaf, 'value', leaf)
  axes = layer_axes(path, leaf)
  one = jax.ShapeDtypeStruct([n for d, n in enumerate(leaf.shape) if d not in axes], leaf.dtype)
  names = [str(getattr(k, 'key', k)) for k in path if str(k) != '.value']
  out['/'.join(names)] = optax_sbs.parameter_type(path, one)
print(json.dumps(out))
"""


def test_deepseek_expert_kernels_group_with_the_dense_kernels(tmp_path):
  """The abstract params of a DeepSeek-style model (jax.eval_shape, nothing
  trained): the experts' kernels, which have no 'kernel' entry, are 'dense'."""
  done = subprocess.run(
    [
      sys.executable,
      '-c',
      ABSTRACT_PARAMS,
      *TINY,
      *DEEPSEEK,
      'run_name=abstract',
      f'base_output_directory={tmp_path}',
      'enable_checkpointing=false',
    ],
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert done.returncode == 0, done.stderr[-6000:]
  types = json.loads(done.stdout.strip().splitlines()[-1])
  experts = [k for k in types if re.search(r'MoeBlock_0/(wi_0|wi_1|wo)$', k)]
  assert len(experts) == 3, sorted(types)
  assert {types[k] for k in experts} == {'dense'}
  assert {t for k, t in types.items() if k.endswith('kernel')} == {'dense'}
  assert {t for k, t in types.items() if 'norm' in k} == {'norm'}
