#!/usr/bin/env bash
# Launch gopd.py with torchrun on one node or many, with the paper's recipes as named presets.
#
#   bash train_multi_gpu.sh --help                  # presets and environment variables
#   bash train_multi_gpu.sh exopd-multi             # run a preset on this node's GPUs
#   bash train_multi_gpu.sh --dry-run exopd-math    # print the exact torchrun command, run nothing
#   bash train_multi_gpu.sh exopd-math --steps 10   # arguments after the preset go to gopd.py
#
# Multi-node: run the same command on every node with NNODES, NODE_RANK (0 on the master) and
# MASTER_ADDR (the master's address, reachable from all nodes) set, e.g. on 2 nodes x 8 GPUs:
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 bash train_multi_gpu.sh exopd-multi   # node 0
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 bash train_multi_gpu.sh exopd-multi   # node 1
#
# Sources: "G-OPD release" is the authors' public code (a fork of verl 0.6.1), its README and
# examples; sections refer to the paper (Yang et al., 2026, arXiv 2602.12125).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

NNODES="${NNODES:-1}"
NPROC_PER_NODE="${NPROC_PER_NODE:-$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true)}"
[[ "$NPROC_PER_NODE" =~ ^[1-9][0-9]*$ ]] || NPROC_PER_NODE=1  # no GPU visible: one process
NODE_RANK="${NODE_RANK:-0}"
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
MASTER_PORT="${MASTER_PORT:-29500}"
DRY_RUN="${DRY_RUN:-0}"

# Training data: the release's hub dataset, downloaded once as files:
#   hf download Keven16/G-OPD-Training-Data --repo-type dataset --local-dir G-OPD-Training-Data
DATA_DIR="${DATA_DIR:-G-OPD-Training-Data}"
MATH_DATA="$DATA_DIR/DeepMath-103K/train_filtered_level6.parquet"  # DeepMath-103K, difficulty >= 6 (57,046 rows; G-OPD release, README single-teacher example)
CODE_DATA="$DATA_DIR/Eurus/code_train.parquet"                     # Eurus-RL-Code (25,276 rows; the release's data. The release has no
                                                                   # code single-teacher script: the code presets mirror the math one)
MULTI_DATA="$DATA_DIR/math_and_code/train.parquet"                 # both domains, rows tagged math/code (G-OPD release, README multi-teacher example;
                                                                   # paper Sec. 4.1.1: DeepMath down-sampled to the size of Eurus-RL-Code)
# Validation sets of the same download, evaluated before training and every 10 steps (--eval-every 10: the release's
# trainer.test_freq=10 and val_before_train); gold answers and tests are read from reward_model.ground_truth
MATH_EVAL=(--eval-data "$DATA_DIR/AIME2024/test.parquet" --eval-data "$DATA_DIR/AIME2025/test.parquet")
CODE_EVAL=(--eval-data "$DATA_DIR/Eurus/code_validation.parquet")

# Models (hub ids; set these variables to local copies if you have them).
STUDENT_4B="${STUDENT_4B:-Qwen/Qwen3-4B}"                                         # same-size student, non-thinking mode (paper Sec. 4.1.1)
STUDENT_1_7B="${STUDENT_1_7B:-Qwen/Qwen3-1.7B}"                                   # strong-to-weak student (paper Sec. 4.2)
MATH_TEACHER="${MATH_TEACHER:-Keven16/Qwen3-4B-Non-Thinking-RL-Math-Step500}"     # Qwen3-4B after 500 GRPO steps on math (the authors'
CODE_TEACHER="${CODE_TEACHER:-Keven16/Qwen3-4B-Non-Thinking-RL-Code-Step300}"     # and 300 on code: hub models, not named in the release's scripts)
STRONG_TEACHER="${STRONG_TEACHER:-Qwen/Qwen3-30B-A3B-Instruct-2507}"              # strong-to-weak teacher (paper Sec. 4.2)

# The paper's hyperparameters (1024 prompts a step, 1 sample each, lr 1e-5 constant, responses up to
# 16384 tokens, temperature 1, ...) are gopd.py's own defaults for a --student run: see PAPER_DEFAULTS
# and `python gopd.py --help`. What every preset adds:
COMMON=(
  --grad-checkpointing      # model.enable_gradient_checkpointing=True
  --fsdp                    # shard the student's training state and the frozen models over the GPUs, as the
                            # release does (verl FSDP): a replica per GPU (DDP) fits no 4B or 30B-teacher
                            # preset on 80 GB; python tests/memory.py has the arithmetic
  --seed 42                 # data.seed=42
  --save-every 50           # trainer.save_freq=50
  --eval-every 10           # trainer.test_freq=10
)

usage() {
  cat <<EOF
usage: bash train_multi_gpu.sh [--dry-run] PRESET [gopd.py arguments ...]

Presets (the paper's recipes; lam = reward scale, 1 = OPD, 1.25 = ExOPD):
  opd-math       single teacher, same size: Qwen3-4B <- math RL teacher, lam 1, 50 steps
  exopd-math     same, lam 1.25
  opd-code       single teacher, same size: Qwen3-4B <- code RL teacher, lam 1, 50 steps
  exopd-code     same, lam 1.25
  opd-multi      multi-teacher: Qwen3-4B <- math and code RL teachers by row domain, lam 1, 50 steps
  exopd-multi    same, lam 1.25
  opd-s2w        strong-to-weak: Qwen3-1.7B <- Qwen3-30B-A3B-Instruct-2507, lam 1, 100 steps
  exopd-s2w      same, lam 1.25
  opd-s2w-4b     strong-to-weak, the release's example: Qwen3-1.7B <- 4B math RL teacher, reference =
                 the student, lam 1, 100 steps
  exopd-s2w-4b   same, lam 1.25 (the baseline of exopd-s2w-rc)
  exopd-s2w-rc   the same with reward correction: reference = the teacher's pre-RL base Qwen3-4B
  exopd-s2w-4b-code  code: Qwen3-1.7B <- 4B code RL teacher, reference = the student, lam 1.25
  exopd-s2w-rc-code  the same with reward correction: reference = Qwen3-4B

Environment (defaults in brackets):
  NNODES [1]  NPROC_PER_NODE [GPUs seen by nvidia-smi, else 1]  NODE_RANK [0]
  MASTER_ADDR [127.0.0.1]  MASTER_PORT [29500]  DRY_RUN [0]: 1 prints the command only
  DATA_DIR [G-OPD-Training-Data]  DATA [the preset's file under DATA_DIR]  OUT [runs/PRESET]
  STUDENT_4B STUDENT_1_7B MATH_TEACHER CODE_TEACHER STRONG_TEACHER: model ids or folders
EOF
}

die() { echo "train_multi_gpu.sh: error: $*" >&2; exit 2; }

while [[ $# -gt 0 && "$1" == -* ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1; shift ;;
    *) die "unknown option '$1' before the preset; run with --help for usage" ;;
  esac
done
[[ $# -gt 0 ]] || die "no preset given; run with --help for the list"
PRESET="$1"; shift

case "$PRESET" in
  opd-math|exopd-math)  # 50 steps same-size: the paper's (Sec. 4.1.1); the release's example scripts say 3 epochs
    RECIPE=(--student "$STUDENT_4B" --teacher "$MATH_TEACHER" --data "${DATA:-$MATH_DATA}" --steps 50) ;;
  opd-code|exopd-code)
    RECIPE=(--student "$STUDENT_4B" --teacher "$CODE_TEACHER" --data "${DATA:-$CODE_DATA}" --steps 50) ;;
  opd-multi|exopd-multi)  # each row is scored by its domain's teacher; the reference is the student's start (paper Sec. 4.1.3)
    RECIPE=(--student "$STUDENT_4B" --teacher "math=$MATH_TEACHER" --teacher "code=$CODE_TEACHER"
            --data "${DATA:-$MULTI_DATA}" --steps 50) ;;
  opd-s2w|exopd-s2w)  # 100 steps strong-to-weak (paper Sec. 4.2). The 2507 Instruct teacher shares Qwen3's vocabulary
                      # and EOS but has its own chat template: it scores its own rendering of each prompt, as the release does
    RECIPE=(--student "$STUDENT_1_7B" --teacher "$STRONG_TEACHER" --data "${DATA:-$MATH_DATA}" --steps 100) ;;
  opd-s2w-4b|exopd-s2w-4b)  # the release's README strong-to-weak example: 1.7B student, 4B math RL teacher, pi_ref = student
    RECIPE=(--student "$STUDENT_1_7B" --teacher "$MATH_TEACHER" --data "${DATA:-$MATH_DATA}" --steps 100) ;;
  exopd-s2w-rc)  # reward correction: pi_ref = the teacher's pre-RL base (paper Sec. 3.2 and 4.2.3)
    RECIPE=(--student "$STUDENT_1_7B" --teacher "$MATH_TEACHER" --ref "$STUDENT_4B"
            --data "${DATA:-$MATH_DATA}" --steps 100) ;;
  exopd-s2w-4b-code)  # the code half: the 4B code RL teacher, pi_ref = student
    RECIPE=(--student "$STUDENT_1_7B" --teacher "$CODE_TEACHER" --data "${DATA:-$CODE_DATA}" --steps 100) ;;
  exopd-s2w-rc-code)  # ... and with reward correction
    RECIPE=(--student "$STUDENT_1_7B" --teacher "$CODE_TEACHER" --ref "$STUDENT_4B"
            --data "${DATA:-$CODE_DATA}" --steps 100) ;;
  *) die "unknown preset '$PRESET'; run with --help for the list" ;;
esac
case "$PRESET" in
  *-multi) EVAL=("${MATH_EVAL[@]}" "${CODE_EVAL[@]}") ;;
  *-code) EVAL=("${CODE_EVAL[@]}") ;;
  *) EVAL=("${MATH_EVAL[@]}") ;;
esac
case "$PRESET" in
  exopd-*) LAM=1.25 ;;  # actor.policy_loss.lambda_vals=1.25 (G-OPD release, README; paper Sec. 4.1.1)
  *) LAM=1.0 ;;         # standard OPD
esac

CMD=(torchrun --nnodes="$NNODES" --nproc_per_node="$NPROC_PER_NODE" --node_rank="$NODE_RANK"
     --master_addr="$MASTER_ADDR" --master_port="$MASTER_PORT"
     "$HERE/gopd.py" "${RECIPE[@]}" --lam "$LAM" "${EVAL[@]}" "${COMMON[@]}" --out "${OUT:-runs/$PRESET}" "$@")

if [[ "$DRY_RUN" == 1 ]]; then
  printf '%q ' "${CMD[@]}"; echo
else
  exec "${CMD[@]}"
fi
