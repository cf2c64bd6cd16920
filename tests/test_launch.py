"""train_multi_gpu.sh: every preset's dry run is a torchrun command whose gopd.py arguments gopd's
own parser accepts, with the paper's values."""

import os
import re
import shlex
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
import gopd

SCRIPT = os.path.join(ROOT, "train_multi_gpu.sh")
LAUNCH_ENV = ["NNODES", "NPROC_PER_NODE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "DRY_RUN", "DATA", "DATA_DIR",
              "OUT", "STUDENT_4B", "STUDENT_1_7B", "MATH_TEACHER", "CODE_TEACHER", "STRONG_TEACHER"]

MATH_RL = "Keven16/Qwen3-4B-Non-Thinking-RL-Math-Step500"
CODE_RL = "Keven16/Qwen3-4B-Non-Thinking-RL-Code-Step300"
MATH_DATA = "DeepMath-103K/train_filtered_level6.parquet"
# preset -> (student, teachers, ref, lam, steps, data file under DATA_DIR): the paper's recipes
EXPECTED = {
    "opd-math": ("Qwen/Qwen3-4B", {None: MATH_RL}, None, 1.0, 50, MATH_DATA),
    "exopd-math": ("Qwen/Qwen3-4B", {None: MATH_RL}, None, 1.25, 50, MATH_DATA),
    "opd-code": ("Qwen/Qwen3-4B", {None: CODE_RL}, None, 1.0, 50, "Eurus/code_train.parquet"),
    "exopd-code": ("Qwen/Qwen3-4B", {None: CODE_RL}, None, 1.25, 50, "Eurus/code_train.parquet"),
    "opd-multi": ("Qwen/Qwen3-4B", {"math": MATH_RL, "code": CODE_RL}, None, 1.0, 50, "math_and_code/train.parquet"),
    "exopd-multi": ("Qwen/Qwen3-4B", {"math": MATH_RL, "code": CODE_RL}, None, 1.25, 50, "math_and_code/train.parquet"),
    "opd-s2w": ("Qwen/Qwen3-1.7B", {None: "Qwen/Qwen3-30B-A3B-Instruct-2507"}, None, 1.0, 100, MATH_DATA),
    "exopd-s2w": ("Qwen/Qwen3-1.7B", {None: "Qwen/Qwen3-30B-A3B-Instruct-2507"}, None, 1.25, 100, MATH_DATA),
    "opd-s2w-4b": ("Qwen/Qwen3-1.7B", {None: MATH_RL}, None, 1.0, 100, MATH_DATA),
    "exopd-s2w-4b": ("Qwen/Qwen3-1.7B", {None: MATH_RL}, None, 1.25, 100, MATH_DATA),
    "exopd-s2w-rc": ("Qwen/Qwen3-1.7B", {None: MATH_RL}, "Qwen/Qwen3-4B", 1.25, 100, MATH_DATA),
    "exopd-s2w-4b-code": ("Qwen/Qwen3-1.7B", {None: CODE_RL}, None, 1.25, 100, "Eurus/code_train.parquet"),
    "exopd-s2w-rc-code": ("Qwen/Qwen3-1.7B", {None: CODE_RL}, "Qwen/Qwen3-4B", 1.25, 100, "Eurus/code_train.parquet"),
}


def launch(*args, **env):
    """Run the script with a clean launch environment plus `env`; returns the CompletedProcess."""
    full = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    full.update(env)
    return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, env=full, timeout=30)


def split_command(stdout):
    """Dry-run output -> (torchrun options as a dict, gopd.py argv)."""
    argv = shlex.split(stdout)
    assert argv[0] == "torchrun", stdout
    script = next(i for i, a in enumerate(argv) if a.endswith("gopd.py"))
    assert os.path.samefile(argv[script], os.path.join(ROOT, "gopd.py"))
    options = dict(re.fullmatch(r"--(\w+)=(.*)", a).groups() for a in argv[1:script])
    return options, argv[script + 1:]


def listed_presets():
    help_text = launch("--help").stdout
    block = help_text.split("Presets")[1].split("Environment")[0]
    return re.findall(r"^  ([a-z0-9-]+)\s", block, flags=re.M)


def test_help_lists_every_preset():
    assert sorted(listed_presets()) == sorted(EXPECTED)


@pytest.mark.parametrize("preset", sorted(EXPECTED))
def test_dry_run_is_a_command_gopd_accepts(preset):
    env = dict(NNODES="2", NPROC_PER_NODE="4", NODE_RANK="1", MASTER_ADDR="10.1.2.3", MASTER_PORT="12345",
               DATA_DIR="/data/gopd")
    result = launch("--dry-run", preset, **env)
    assert result.returncode == 0, result.stderr
    options, argv = split_command(result.stdout)
    assert options == {"nnodes": "2", "nproc_per_node": "4", "node_rank": "1", "master_addr": "10.1.2.3",
                       "master_port": "12345"}

    args = gopd.parse_args(argv)
    student, teachers, ref, lam, steps, data = EXPECTED[preset]
    assert (args.student, args.teachers, args.ref) == (student, teachers, ref)
    assert (args.lam, args.steps, args.data) == (lam, steps, f"/data/gopd/{data}")
    # the paper's shared hyperparameters (G-OPD release, README examples)
    assert (args.lr, args.lr_schedule, args.warmup_steps, args.grad_clip) == (1e-5, "constant", 0, 1.0)
    assert (args.weight_decay, args.loss_agg) == (0.01, "seq-mean-token-mean")
    assert (args.prompts_per_step, args.samples_per_prompt, args.max_new_tokens, args.max_prompt_len) == \
        (1024, 1, 16384, 2048)
    assert (args.temperature, args.top_p, args.grad_checkpointing) == (1.0, 1.0, True)
    assert (args.fsdp, args.offload_frozen) == (True, False)  # the mode tests/memory.py says fits
    assert args.out == f"runs/{preset}"


def test_every_preset_fits_on_8_gpus_in_the_mode_it_uses():
    """tests/memory.py's plan: each preset's mode fits 8 x 80 GB with room for several rollouts; a
    replica per GPU (DDP) would not fit the 4B presets nor the 30B teacher."""
    import memory
    for preset in EXPECTED:
        plans, used = memory.preset_plan(preset)
        assert used == "fsdp" and memory.fits(plans[used]) and plans[used]["rollout_batch"] >= 8, preset
    for preset in ["exopd-multi", "exopd-s2w"]:
        assert not memory.fits(memory.preset_plan(preset)[0]["ddp"]), preset


def test_defaults_single_node():
    result = launch("exopd-math", DRY_RUN="1")
    assert result.returncode == 0, result.stderr
    options, _ = split_command(result.stdout)
    assert (options["nnodes"], options["node_rank"], options["master_addr"], options["master_port"]) == \
        ("1", "0", "127.0.0.1", "29500")
    assert int(options["nproc_per_node"]) >= 1
    if shutil.which("nvidia-smi") is None:
        assert options["nproc_per_node"] == "1"


def test_arguments_after_the_preset_reach_gopd_and_win():
    result = launch("--dry-run", "exopd-multi", "--steps", "3", "--lam", "1.5", "--out", "/tmp/x y",
                    DATA="/elsewhere/rows.jsonl")
    assert result.returncode == 0, result.stderr
    args = gopd.parse_args(split_command(result.stdout)[1])
    assert (args.steps, args.lam, args.out, args.data) == (3, 1.5, "/tmp/x y", "/elsewhere/rows.jsonl")


@pytest.mark.parametrize("argv", [["no-such-preset"], [], ["--bogus", "exopd-math"]])
def test_bad_invocation_is_a_one_line_error(argv):
    result = launch(*argv, DRY_RUN="1")
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--help" in lines[0], result.stderr
    if argv:
        assert argv[0].lstrip("-") in lines[0]
