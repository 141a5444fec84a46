#!/usr/bin/env bash
# The checks to run on a machine with an accelerator, in one command.
#
#   benchmarks/device_check.sh [--smoke] [--out DIR] [--data NPZ]
#
# 1. the tests that exercise devices (tests/test_device.py: masks equal to the
#    CPU's bit for bit, determinism, p = 1 == inner, donation, NamedSharding,
#    pmap; two of tests/test_layers.py: stacked layers (layer_axes) per slice;
#    tests/test_reliability.py: Orbax round trip, ...; eager == jit and key
#    data round trips from tests/test_transform.py and tests/test_keys.py);
# 2. benchmarks/update_speed.py on the ResNet-18 and transformer trees: SBS,
#    with_stochastic_batch_size, masked_updates, magma vs optax.sgd / adam
#    (step time, compile time, state bytes, kernels per update);
# 3. the same script's full ResNet-18 training step at batch 128, SGD vs SBS;
#    and its section 5: compile time, kernels and step time vs the number of
#    leaves (50, 100, 400 small leaves of four shapes), with collectives;
# 4. benchmarks/paper_slice.py: Table 4's ResNet-18 slice (1/8 of CIFAR-10,
#    batch 128, SGD vs SBS, 3 paired trials) with the data on the device.
#
# On one GPU the whole run takes at most ~8 minutes (each part has its own
# time limit, so one that overruns leaves the others their time; parts 2-4
# write their results as they go, and part 4 stops both methods after the
# last epoch within its time budget) and writes
# *_<platform>.md under --out (default benchmarks/results/). --smoke runs the
# same pipeline at tiny sizes on a CPU in about 5 minutes and writes to a
# temporary folder unless --out is given. The machine's python3 is used
# (PYTHON=... to choose another); the package is imported from this checkout.
#
# Data for part 4: --data NPZ (a CIFAR-10 .npz; 1/8 drawn per trial), else
# .device_data/cifar10_eighth.npz (a class-balanced 1/8 made by
#   python benchmarks/paper_slice.py --dataset PATH/TO/cifar10.npz \
#       --export-subset .device_data/cifar10_eighth.npz
# and carried to the device machine), else part 4 is skipped with a message.
# Exit status: 0 if every part passed, 1 otherwise (the others still ran).
#
# On a remote machine that receives a copy of the checkout: run
# `bash benchmarks/device_check.sh --out DIR` with .device_data/ copied along and
# a 600 s limit, then copy DIR's *_gpu.md / *_gpu.json into benchmarks/results/.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CMDLINE="benchmarks/device_check.sh${*:+ $*}"
SMOKE=0
OUT=""
DATA=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) SMOKE=1; shift ;;
    --out) OUT=${2:?--out needs a folder}; shift 2 ;;
    --data) DATA=${2:?--data needs a .npz path}; shift 2 ;;
    -h|--help) sed -n '2,/^set /{/^#/p}' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument '$1' (usage: device_check.sh [--smoke] [--out DIR] [--data NPZ])" >&2; exit 2 ;;
  esac
done
if [[ -z "$OUT" ]]; then
  if ((SMOKE)); then OUT=$(mktemp -d); else OUT="$ROOT/benchmarks/results"; fi
fi
mkdir -p "$OUT" || { echo "error: cannot create --out folder '$OUT'" >&2; exit 2; }
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
command -v "$PY" >/dev/null || { echo "error: no '$PY' (set PYTHON=...)" >&2; exit 2; }
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
cd "$ROOT"

PLATFORM=$("$PY" -c 'import jax; print(jax.devices()[0].platform)') || {
  echo "error: JAX does not start with '$PY'" >&2; exit 1; }
echo "device_check: platform $PLATFORM, results in $OUT"
STATUS=0
START=$SECONDS

part() {  # part LIMIT_SECONDS NAME COMMAND...
  local limit=$1 name=$2
  shift 2
  local t0=$SECONDS
  echo "== $name (limit ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0)) s"
  if ((rc != 0)); then STATUS=1; fi
  return 0
}

if ((SMOKE)); then
  TEST_LIMIT=120; SPEED=(--smoke); SPEED_LIMIT=240
  LEAVES=(--smoke --sections 5); LEAVES_LIMIT=120
  SLICE=(--smoke); SLICE_LIMIT=90
else
  # 80 + 160 + 60 + 180 s = 8 minutes. Part 4 compiles a scan over vmapped
  # ResNet-18 steps twice (SGD, SBS) before its first epoch ends.
  TEST_LIMIT=80; SPEED=(--trees resnet18,transformer --sections 1,3 --train-cases resnet18:128)
  SPEED_LIMIT=160; LEAVES=(--sections 5 --leaf-counts 50,100,400 --reps 5); LEAVES_LIMIT=60
  SLICE=(--epochs 50 --time-budget 130); SLICE_LIMIT=180
fi

# 1. Tests on the device (the test log and a summary in markdown).
# Stacked layers (layer_axes, as examples/lm's --scan-layers passes them):
# SBS's jitted steps exact per slice, and one mask draw per slice (~8 s on CPU).
TESTS=(tests/test_device.py tests/test_layers.py::test_sbs_steps_and_mask_rates_per_slice
  tests/test_layers.py::test_leaf_masks_are_drawn_per_slice)
# The device-facing tests of the other modules (the rest need the CPU's 8
# virtual devices or the training program's flags library).
KEYWORDS='test_device or per_slice or round_trips or same_key or key_data or bit_identical'
((SMOKE)) || TESTS+=(tests/test_reliability.py tests/test_masked.py
  tests/test_transform.py::test_same_key_same_run_eager_and_jit_and_repeated
  tests/test_keys.py::test_key_data_tree_keeps_other_leaves_and_key_impls
  -k "$KEYWORDS or probability_one")
LOG="$OUT/device_tests_${PLATFORM}.log"
part "$TEST_LIMIT" tests "$PY" -m pytest -q -p no:cacheprovider -o addopts='-ra' "${TESTS[@]}" \
  >"$LOG" 2>&1
cat "$LOG"
{
  echo "# Device tests ($PLATFORM)"
  echo
  echo "- command: \`$CMDLINE\` (part 1: \`python -m pytest -q ${TESTS[*]}\`)"
  echo "- $("$PY" -c 'import jax, platform; d = jax.devices()[0]; print(f"machine: {platform.machine()}, {d.platform} ({d.device_kind}), {jax.device_count()} device(s); jax {jax.__version__}, python {platform.python_version()}")')"
  echo
  echo '```'
  tail -n 15 "$LOG"
  echo '```'
} > "$OUT/device_tests_${PLATFORM}.md"
rm -f "$LOG"

# 2 and 3. Update cost and the full training step.
part "$SPEED_LIMIT" update_speed "$PY" benchmarks/update_speed.py "${SPEED[@]}" \
  --out "$OUT/update_speed_${PLATFORM}.md"

# 2b. Compile time, kernels and step time vs the number of leaves (rows are
# written as they are measured: a part stopped by its limit keeps them).
part "$LEAVES_LIMIT" update_speed_leaves "$PY" benchmarks/update_speed.py "${LEAVES[@]}" \
  --out "$OUT/update_speed_leaves_${PLATFORM}.md"

# 4. The paper-scale slice.
if [[ -z "$DATA" ]]; then
  if ((SMOKE)); then DATA=synthetic
  elif [[ -f "$ROOT/.device_data/cifar10_eighth.npz" ]]; then
    DATA="$ROOT/.device_data/cifar10_eighth.npz"; SLICE+=(--train-fraction 1)
  fi
fi
if [[ -z "$DATA" ]]; then
  echo "== paper_slice: skipped, no CIFAR-10 .npz (pass --data; see the header of this script)"
  STATUS=1
elif [[ "$DATA" == synthetic ]]; then
  part "$SLICE_LIMIT" paper_slice "$PY" benchmarks/paper_slice.py "${SLICE[@]}" \
    --out "$OUT/paper_slice_${PLATFORM}.md"
else
  part "$SLICE_LIMIT" paper_slice "$PY" benchmarks/paper_slice.py "${SLICE[@]}" \
    --dataset "$DATA" --out "$OUT/paper_slice_${PLATFORM}.md"
fi

echo "device_check: done in $((SECONDS - START)) s, status $STATUS; files:"
ls -1 "$OUT"/*_"${PLATFORM}".* 2>/dev/null
exit "$STATUS"
