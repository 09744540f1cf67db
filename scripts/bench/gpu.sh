#!/usr/bin/env bash
# The GPU benchmark suite of issue 24, within 8 minutes on one GPU; every part writes JSON into OUT_DIR.
#
#   sac.json      updates/s of our SAC-N (2 and 10 critics, RAVL's 3 x 256, batch 256; eager and compiled with
#                 CUDA graphs, fp32 and bf16) beside stable_baselines3.SAC on the same device, in the same run
#   models.json   ensemble (7 x 4 x 200, 256 rows per member) training minibatches/s and rollout transitions/s
#   offline.json  RAVL's full update with rollouts (updates/s) at its paper preset, and its split
#   machine.json  the GPU, torch and CPU the figures were measured on
#
# Usage: scripts/bench/gpu.sh OUT_DIR [--device cuda|auto|cpu] [--quick]
#   --quick runs tiny sizes (a smoke check; numbers meaningless). PYTHON picks the interpreter (default python).
set -uo pipefail
OUT=${1:?usage: scripts/bench/gpu.sh OUT_DIR [--device cuda|auto|cpu] [--quick]}
shift
DEVICE=cuda
QUICK=()
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --quick) QUICK=(--quick); shift ;;
    *) echo "gpu.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python}
HERE=$(cd "$(dirname "$0")" && pwd)
export PYTHONPATH="$(cd "$HERE/../.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT"
if [ ${#QUICK[@]} -gt 0 ]; then
  COMPILE=(none); PRESET=quick; UPDATES=(); LIMIT_SAC=240; LIMIT=120
else
  COMPILE=(none reduce-overhead); PRESET=paper; UPDATES=(--updates 500); LIMIT_SAC=300; LIMIT=90
fi
failed=0

run() {  # run NAME SECONDS SCRIPT ARGS...: SCRIPT --json > OUT/NAME.json within SECONDS (stderr to NAME.log)
  local name=$1 limit=$2 start
  shift 2
  start=$(date +%s)
  if timeout "$limit" "$PY" "$@" --json >"$OUT/$name.json" 2>"$OUT/$name.log"; then
    echo "$name: ok in $(($(date +%s) - start)) s -> $OUT/$name.json"
  else
    echo "$name: FAILED or over ${limit} s (see $OUT/$name.log)" >&2
    failed=1
  fi
}

"$PY" - "$DEVICE" >"$OUT/machine.json" <<'PYEOF'
import json, os, sys
import torch
from mbrl.utils import cpu_name, resolve_device
device = resolve_device(sys.argv[1])
print(json.dumps({
    "device": str(device),
    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    "torch": torch.__version__, "cuda": torch.version.cuda, "cpu": cpu_name(), "cores": os.cpu_count(),
}, indent=2))
PYEOF

run sac "$LIMIT_SAC" "$HERE/sac.py" --device "$DEVICE" --depth 3 --threads 1 --critics 2 10 --no-stock \
  --compile "${COMPILE[@]}" "${UPDATES[@]}" "${QUICK[@]}"
run models "$LIMIT" "$HERE/models.py" --device "$DEVICE" --threads 1 "${QUICK[@]}"
run offline "$LIMIT" "$HERE/offline.py" --device "$DEVICE" --agents ravl --preset "$PRESET" "${QUICK[@]}"
exit $failed
