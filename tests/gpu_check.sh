#!/usr/bin/env bash
# The GPU check, one command for a machine with a CUDA GPU (sized for under 8 minutes on one H100):
#   1. the CUDA tests (tests/test_gopd.py and tests/test_fsdp.py; they skip without a GPU),
#   2. python tests/bench.py --device cuda --json (gopd vs TRL vs the floor; needs `pip install trl`),
#   3. python tests/gpu_probe.py --json: one full step of a random Qwen3-1.7B-shaped model (rollout of
#      2,048 tokens per sequence, scoring, update) under DDP and --fsdp at world size 1: peak memory,
#      tokens/s, and the memory plan's prediction (tests/memory.py).
# Logs go to $OUT (default gpu_check/); the last line printed is one JSON object with all results.
#
#   bash tests/gpu_check.sh          # on a GPU
#   bash tests/gpu_check.sh --cpu    # the same three steps on CPU, small: checks that the script runs
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_check}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [[ "${1:-}" == "--cpu" ]]; then
  export CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS=1
  BENCH=(--device cpu --rounds 1 --steps 1 --max-new-tokens 16 --mem-vocab 32768 --mem-response 256)
  PROBE=(--tiny)
elif python -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  BENCH=(--device cuda)
  PROBE=()
else
  echo "gpu_check.sh: error: no CUDA GPU visible to torch; run on a GPU machine, or pass --cpu to check the script" >&2
  exit 2
fi
start=$SECONDS

python -m pytest -q -rs -p no:cacheprovider tests/test_gopd.py tests/test_fsdp.py -k "cuda or offload" \
  > "$OUT/cuda_tests.log" 2>&1
if python -c "import trl" 2>/dev/null; then
  python tests/bench.py "${BENCH[@]}" --json > "$OUT/bench.log" 2>&1
else
  echo "trl is not installed (pip install trl); the benchmark was skipped" > "$OUT/bench.log"
fi
python tests/gpu_probe.py "${PROBE[@]}" --json > "$OUT/probe.log" 2>&1

python - "$OUT" "$((SECONDS - start))" <<'EOF'
import json, re, sys
out, seconds = sys.argv[1], int(sys.argv[2])

def last_json(name):
    lines = open(f"{out}/{name}").read().strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        return {"error": lines[-1][:300] if lines else "no output", "log": f"{out}/{name}"}

tail = open(f"{out}/cuda_tests.log").read().strip().splitlines()[-1]
tests = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", tail)}
tests["summary"] = tail
print(json.dumps({"seconds": seconds, "cuda_tests": tests, "bench": last_json("bench.log"),
                  "probe": last_json("probe.log")}))
EOF
