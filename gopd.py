"""
gopd.py: Generalized On-Policy Distillation (G-OPD) and ExOPD in one file.

Paper: "Learning beyond Teacher: Generalized On-Policy Distillation with Reward Extrapolation"
(Yang et al., 2026, arXiv 2602.12125). The student samples its own responses; a teacher and a
fixed reference model score every sampled token; the student is trained by dense KL-constrained RL

    J(theta) = E_{y~pi_theta} [ lam * log(pi_T(y|x) / pi_ref(y|x)) ] - KL(pi_theta || pi_ref)

whose sequence-level optimum is pi* ~ pi_T^lam * pi_ref^(1-lam). The per-token update used here
(and by the paper's release) pushes each state's next-token distribution toward the per-state
blend pi_T(.|s)^lam * pi_ref(.|s)^(1-lam) instead. lam = 1 is standard OPD, lam > 1 is ExOPD.
The paper writes the per-token signal as a cost to minimise; the advantage A_t here is its
negative, maximised.

    python gopd.py --lam 1.25                       # the bundled toy world, one process
    torchrun --nproc_per_node=8 gopd.py --student Qwen/Qwen3-4B --fsdp --grad-checkpointing \\
        --teacher math=PATH_A --teacher code=PATH_B --data FILE --lam 1.25

The file reads in the order of the method: arguments, setup, data, rollout, scoring, objective,
checkpoints, metrics and evaluation, and the training loop, whose step is three numbered phases
(rollout, scoring, update) and one call for the bookkeeping. What a reader would copy, on plain
tensors ([B, R]: B responses of R tokens; the contracts are in the docstrings):

  gopd_loss        the G-OPD loss of a micro-batch, from its sampled tokens' log-probs
  exact_loss       the same objective from the exact per-state KL of target_kl
  target_kl        KL(pi_theta(.|s) || p*(.|s)) at response states, p* ~ pi_T^lam pi_ref^(1-lam)
  token_logprobs   log pi(y_t|s_t) of a model's response tokens, with no [B, R, vocab] tensor
  frozen_logprobs  the same under each row's domain's frozen model (teacher or reference)
  rollout          the student's sampled responses: (sequences, attention mask, response mask)

A leading underscore marks a helper with no contract of its own (bookkeeping, I/O, collectives).
"""

import argparse
import errno
import fcntl
import hashlib
import importlib
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.fsdp import (CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy,
                                    OffloadPolicy, fully_shard)
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.checkpoint import checkpoint
from tqdm import tqdm

import evaluate

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # quiet fork warnings; we batch ourselves

# -----------------------------------------------------------------------------
# Arguments

HERE = os.path.dirname(os.path.abspath(__file__))
TOY = os.path.join(HERE, "toy")

# The paper's hyperparameters where they differ from the toy's (G-OPD release, README and example
# scripts, verl config names; paper Sec. 4). The others are the argparse defaults below, the same
# for both: temperature and top-p 1 (rollout.temperature, top_p), constant lr with no warmup,
# AdamW weight decay 0.01 (verl's default), grad clip 1 (actor.grad_clip), prompts up to 2048
# tokens (data.max_prompt_length), and seq-mean-token-mean: the release's config says token-mean,
# but takes it per micro-batch of one sequence.
PAPER_DEFAULTS = dict(
    prompts_per_step=1024,   # data.train_batch_size, one update per batch (ppo_mini_batch_size)
    samples_per_prompt=1,    # rollout.n
    max_new_tokens=16384,    # data.max_response_length
    lr=1e-5,                 # actor.optim.lr
    steps=50,                # the paper's same-size runs (Sec. 4.1.1); strong-to-weak runs 100
    micro_batch=1,           # ppo_micro_batch_size_per_gpu
    estimator="sampled",     # one sampled token per state, as every G-OPD implementation
)
# A --student run: the paper's hyperparameters, where it writes, and how often it grades rollouts.
RUN_DEFAULTS = dict(PAPER_DEFAULTS, out="out", grade_every=1)
# With no --student, everything points at the bundled toy world (a CPU demo of minutes).
TOY_DEFAULTS = dict(student=os.path.join(TOY, "models", "student"),
                    teacher=[f"math={os.path.join(TOY, 'models', 'math_expert')}",
                             f"code={os.path.join(TOY, 'models', 'code_expert')}"],
                    data=os.path.join(TOY, "data", "train.jsonl"),
                    eval_data=[os.path.join(TOY, "data", "quick_math.jsonl"),
                               os.path.join(TOY, "data", "quick_code.jsonl")],
                    prompts_per_step=64, samples_per_prompt=1, max_new_tokens=96,
                    lr=3e-4, steps=40, micro_batch=64, out="out/toy", grade_every=10,
                    estimator="exact")  # the toy's vocabulary is small: it trains faster (README)
# Flags that may change on --resume: they do not change what is optimised.
RESUMABLE = {"steps", "save_every", "eval_data", "eval_n", "eval_every", "log_samples_every",
             "grade_every", "out", "resume", "resume_override", "dist_timeout", "micro_batch",
             "rollout_batch", "grad_checkpointing", "offload_frozen", "report_to",
             "require_isolation"}
# --report-to's trackers: the module each needs, and the package that provides it.
TRACKERS = {"wandb": ("wandb", "wandb"), "tensorboard": ("torch.utils.tensorboard", "tensorboard")}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="G-OPD / ExOPD on-policy distillation. Without "
                                "--student, every default points at the bundled toy world.")

    def default(key):  # defaults that differ between a real run (the paper's) and the toy demo
        return f" (default: {RUN_DEFAULTS[key]}; toy: {TOY_DEFAULTS[key]})"
    add = p.add_argument
    # what is distilled, into what
    add("--student", help="student model: local folder or hub id (default: the toy student)")
    add("--teacher", action="append",
        help="teacher: PATH, or DOMAIN=PATH once per domain (repeatable)")
    add("--ref", help="reference pi_ref (default: a frozen copy of the student's initial weights)")
    add("--lam", type=float, default=1.0,
        help="reward scale lambda: 1 = OPD (default), >1 = ExOPD (the paper's 1.25)")
    add("--data", help="JSONL/JSON/parquet file or datasets hub name; rows have 'prompt', optional "
                       "'domain', and 'answer' or 'tests' for the outcome accuracy metric")
    # rollout
    add("--prompts-per-step", type=int,
        help="prompts per optimizer step, over all ranks" + default("prompts_per_step"))
    add("--samples-per-prompt", type=int,
        help="responses sampled per prompt" + default("samples_per_prompt"))
    add("--max-new-tokens", type=int, help="response length limit" + default("max_new_tokens"))
    add("--max-prompt-len", type=int, default=2048,
        help="longer prompts are skipped (default: 2048)")
    add("--enable-thinking", action="store_true",
        help="Qwen3 thinking mode in the chat template (default: off, the paper's non-thinking)")
    add("--temperature", type=float, default=1.0,
        help="sampling temperature; 0 = greedy, for debugging (default: 1.0)")
    add("--top-p", type=float, default=1.0,
        help="nucleus sampling threshold: must be 1 (the default, the paper's), since the loss "
             "scores the untruncated softmax; the in-training evaluation samples the same way, and "
             "evaluate.py --top-p evaluates a checkpoint at any other")
    # optimisation
    add("--lr", type=float, help="AdamW peak learning rate" + default("lr"))
    add("--lr-schedule", choices=["constant", "linear", "cosine"], default="constant",
        help="decay after warmup (default: constant, as in the paper)")
    add("--warmup-steps", type=int, default=0, help="linear warmup steps (default: 0)")
    add("--weight-decay", type=float, default=0.01,
        help="AdamW weight decay (default: 0.01, verl's, which the paper's release uses)")
    add("--estimator",
        help="sampled: the advantage of each sampled token, as the paper; exact: at every response "
             "state, the KL from the student's whole next-token distribution to the per-state "
             "target, the same gradient in expectation without the sampling noise (needs --top-p "
             "1)" + default("estimator"))
    add("--loss-agg", choices=["seq-mean-token-mean", "token-mean"], default="seq-mean-token-mean",
        help="seq-mean-token-mean: every response weighs the same, as the paper's release runs; "
             "token-mean: every token does (default: seq-mean-token-mean)")
    add("--grad-clip", type=float, default=1.0,
        help="max global gradient norm; 0 turns clipping off (default: 1.0)")
    add("--steps", type=int, help="optimizer steps" + default("steps"))
    add("--seed", type=int, default=0, help="random seed (default: 0)")
    # memory and scale
    add("--micro-batch", type=int, help="sequences per forward/backward" + default("micro_batch"))
    add("--rollout-batch", type=int,
        help="the rollout's memory budget, in full-length sequences (prompt + --max-new-tokens): "
             "a generate call holds that many such sequences, or more shorter ones (default: as "
             "many as the free memory holds in KV cache, logged)")
    add("--grad-checkpointing", action="store_true", help="trade compute for activation memory")
    add("--fsdp", action="store_true",
        help="shard the student, its gradients and optimizer state, and the frozen models over the "
             "ranks (FSDP2) instead of a full copy per rank (DDP): for models too big to "
             "replicate, e.g. the paper's recipes on 8 GPUs (python tests/memory.py prints the "
             "arithmetic)")
    add("--offload-frozen", action="store_true",
        help="keep the teachers and reference in CPU memory; each moves to the GPU only to score")
    add("--dist-timeout", type=float, default=60,
        help="minutes a collective may wait for the other ranks (default: 60)")
    # evaluation and logging
    add("--eval-data", action="append",
        help="evaluate on this before and after training (repeatable): a file (gopd's rows, the "
             "release's validation parquets, a benchmark's own file) or a benchmark name "
             f"({', '.join(evaluate.BENCHMARKS)})")
    add("--eval-n", type=int, default=1, help="samples per evaluation problem, avg@n (default: 1)")
    add("--eval-every", type=int, default=0,
        help="also evaluate every N steps, logged in metrics.jsonl (default: 0, never)")
    add("--log-samples-every", type=int, default=10,
        help="write a few decoded rollouts to samples.jsonl at step 1 and every N steps "
             "(default: 10; 0: never)")
    add("--report-to", action="append", metavar="TRACKER",
        help="also log each metrics.jsonl record to wandb or tensorboard (rank 0; repeatable or "
             "comma-separated; the package must be installed; tensorboard writes to "
             "OUT/tensorboard; default: none)")
    add("--grade-every", type=int,
        help="grade the rollouts of rows with an 'answer' or 'tests' with evaluate.check every N "
             "steps, logged as outcome_accuracy; code checks run sandboxed programs, so small "
             "machines grade less often (0: never)" + default("grade_every"))
    add("--require-isolation", action="store_true",
        help="refuse to run model code (graded code rollouts, code evaluation) in a sandbox weaker "
             "than evaluate.py's isolated mode (also: GOPD_REQUIRE_ISOLATION=1)")
    # output and resuming
    add("--out", help="output folder: metrics.jsonl, checkpoints, eval.json" + default("out"))
    add("--save-every", type=int, default=0,
        help="checkpoint every N steps (default: 0, only at the end)")
    add("--resume", action="store_true",
        help="continue from the newest intact checkpoint in --out")
    add("--resume-override", action="store_true",
        help="with --resume, accept flags that differ from the checkpoint's run (they take effect)")
    args = p.parse_args(argv)

    defaults = TOY_DEFAULTS if args.student is None else RUN_DEFAULTS
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    validate_args(args)
    args.teachers = _parse_teachers(args.teacher)
    args.report_to = _parse_trackers(args.report_to or [])
    return args


def validate_args(args):
    """Refuse, at parse time, values that would crash later or silently train nothing."""
    def flag(name):
        return "--" + name.replace("_", "-")
    if not args.teacher:
        die("no teacher given; pass --teacher PATH (or --teacher DOMAIN=PATH per domain)")
    if args.data is None:
        die("no training data given; pass --data FILE (rows with a 'prompt' field)")
    for name in ["lam", "temperature", "top_p", "lr", "weight_decay", "grad_clip", "dist_timeout"]:
        if not math.isfinite(getattr(args, name)):
            die(f"{flag(name)} must be a finite number (got {getattr(args, name)})")
    if not 0 < args.lam <= 100:
        die(f"--lam must be > 0 and <= 100 (got {args.lam}; at 0 the optimum is pi_ref itself, "
            f"no teacher signal); 1 is OPD, 1.25 the paper's ExOPD")
    if args.temperature != 0 and not 0.01 <= args.temperature <= 100:
        die(f"--temperature must be 0 (greedy) or in [0.01, 100] (got {args.temperature}); "
            f"the paper samples at 1")
    if args.top_p != 1:
        die(f"--top-p {args.top_p}: sample with --top-p 1, as the paper does. The loss scores "
            f"every sampled token under the untruncated softmax at the temperature (student, "
            f"teacher and reference alike), so a nucleus-truncated sampling distribution would not "
            f"be the one scored; evaluate a checkpoint at another top-p with evaluate.py --top-p")
    if args.estimator not in ("sampled", "exact"):
        die(f"--estimator must be sampled (one token per state, the paper's) or exact (the whole "
            f"next-token distribution) (got {args.estimator!r})")
    if not args.lr > 0:
        die(f"--lr must be > 0 (got {args.lr})")
    for name in ["weight_decay", "grad_clip", "warmup_steps", "save_every", "eval_every",
                 "log_samples_every", "grade_every"]:
        if getattr(args, name) < 0:
            die(f"{flag(name)} must be >= 0 (got {getattr(args, name)})")
    for name in ["prompts_per_step", "samples_per_prompt", "max_new_tokens", "max_prompt_len",
                 "steps", "micro_batch", "rollout_batch", "eval_n"]:
        if getattr(args, name) is not None and getattr(args, name) < 1:
            die(f"{flag(name)} must be >= 1 (got {getattr(args, name)})")
    if not args.dist_timeout > 0:
        die(f"--dist-timeout must be > 0 minutes (got {args.dist_timeout})")


def _parse_teachers(specs):
    """['PATH'] or ['math=PATH', 'code=PATH'] -> {domain or None: path}; None: the default one."""
    teachers = {}
    for spec in specs:
        m = re.fullmatch(r"(\w+)=(.+)", spec)
        domain, path = (None, spec)
        if m and not os.path.exists(spec):
            domain, path = m.group(1), m.group(2)
        if domain in teachers:
            die(f"two teachers for domain {domain!r}; pass one --teacher per domain")
        teachers[domain] = path
    return teachers


def _parse_trackers(specs):
    """--report-to values (repeatable, comma-separated) -> sorted tracker names. Each tracker's
    module is imported now, on every rank, so a missing package is one line before any model
    loads and no rank waits in a collective for one that stopped."""
    names = {name.strip() for spec in specs for name in spec.split(",")} - {"none", ""}
    for name in sorted(names):
        if name not in TRACKERS:
            die(f"--report-to {name!r}: unknown tracker; choose from none, wandb, tensorboard")
        module, package = TRACKERS[name]
        try:
            importlib.import_module(module)
        except ImportError:
            die(f"--report-to {name} needs the {package} package: pip install {package}")
    return sorted(names)


def die(msg):
    """Bad input ends the run with one line naming the problem and the fix."""
    raise SystemExit(f"gopd: error: {msg}")

# -----------------------------------------------------------------------------
# Setup: processes, devices, models


# The oldest and newest releases the test suite passes on; requirements.txt states the same range.
TESTED = {"torch": ((2, 11), (2, 13)), "transformers": ((5, 17), (5, 25))}


def validate_versions():
    """Stop on a torch or transformers older than the oldest tested (calls gopd makes would be
    missing); warn on one newer than the newest tested."""
    import transformers
    found_versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    for package, found in found_versions.items():
        release = tuple(map(int, re.match(r"(\d+)\.(\d+)", found).groups()))  # 2.11.0a0+git: 2.11
        oldest, newest = (".".join(map(str, v)) for v in TESTED[package])
        if release < TESTED[package][0]:
            die(f"{package} {found} is too old: gopd needs {package}>={oldest} (tested {oldest} to "
                f"{newest}); pip install -r requirements.txt")
        if release > TESTED[package][1] and os.environ.get("RANK", "0") == "0":
            print(f"gopd: warning: {package} {found} is newer than the newest tested ({newest})",
                  file=sys.stderr)


def setup_distributed(timeout_minutes=60, fsdp=False):
    """One process (python gopd.py) or one rank per device (torchrun). Returns rank, world, device.
    FSDP needs a process group even in one process: a group of one, with an in-memory store."""
    validate_versions()
    gpu = torch.cuda.is_available()
    if "RANK" not in os.environ and not fsdp:
        return 0, 1, torch.device("cuda" if gpu else "cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if gpu else torch.device("cpu")
    options = dict(backend="nccl" if gpu else "gloo", timeout=timedelta(minutes=timeout_minutes))
    if gpu:
        torch.cuda.set_device(local_rank)
        options["device_id"] = device
    if "RANK" not in os.environ:
        options.update(store=dist.HashStore(), rank=0, world_size=1)
    dist.init_process_group(**options)
    return dist.get_rank(), dist.get_world_size(), device


def all_reduce_sum(t):
    if dist.is_initialized():
        dist.all_reduce(t)
    return t


def _all_gather_cat(t):
    """Every rank's 1-D tensor t, concatenated (the lengths may differ between ranks)."""
    if not dist.is_initialized():
        return t
    sizes = [torch.zeros(1, dtype=torch.long, device=t.device)
             for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([t.numel()], device=t.device))
    width = int(max(sizes))
    parts = [t.new_zeros(width) for _ in sizes]
    dist.all_gather(parts, torch.cat([t, t.new_zeros(width - t.numel())]))
    return torch.cat([part[:int(n)] for part, n in zip(parts, sizes)])


def barrier():
    if dist.is_initialized():
        dist.barrier()


def synced_time(device):
    """Wall time after the device's queued work is done, so phase timings are honest on GPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.time()


def compute_dtype(device):
    """What the frozen models are stored in and the student computes in: bf16 on GPU (the student
    keeps float32 master weights, under autocast), float32 on CPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def autocast(device):
    """The student's forwards in compute_dtype: autocast on GPU, nothing to do on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=compute_dtype(device))
    return nullcontext()


def validate_out_dir(out):
    """--out must be a folder this process can write to: checked before any model loads."""
    if os.path.exists(out) and not os.path.isdir(out):
        die(f"--out {out!r} is a file; pass a folder")
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, f".gopd_write_test_{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        die(f"--out {out!r} is not writable ({e.strerror}); pass a folder you can write to")


def validate_model_path(path):
    """A path that is clearly local (not an 'org/name' hub id) must exist: fail now, not after
    the hub client's retries."""
    looks_local = os.path.isabs(path) or path.startswith(".") or path.count("/") > 1
    if (looks_local or path.endswith("/")) and not os.path.isdir(path):
        die(f"model folder {path!r} does not exist; pass a folder with config.json, or a hub id "
            f"like org/name")


def load_tokenizer(path):
    from transformers import AutoTokenizer
    validate_model_path(path)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as e:  # the library's own errors are pages long; name the path and the fix
        die(f"cannot load a tokenizer from {path!r} ({type(e).__name__}); pass a local model "
            f"folder or a hub id that is downloaded (offline runs need the folder)")
    if tok.eos_token_id is None:
        die(f"tokenizer at {path!r} has no EOS token; the student must learn to stop, so set one")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token  # padding is masked out; EOS is a safe filler
    return tok


def load_model(path, dtype, device, trainable=False, fsdp=False, offload=False,
               checkpointing=False):
    """A causal LM from a folder of safetensors weights (or a downloaded hub id) in `dtype`, built
    on the meta device (nothing allocated), sharded over the ranks with fsdp (`shard`), then each
    rank allocates only its own part, on `device` (in CPU memory with offload), and fills it from
    the files (`_fill_weights`). So no rank holds a whole model in host memory: under DDP one tensor
    at a time passes through it, under FSDP this rank's rows of one tensor. A collective: a rank
    that fails (a missing shard file, an unreadable one) stops every rank with its line."""
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig
    validate_model_path(path)
    model, error = None, None
    try:
        folder = path if os.path.isdir(path) else snapshot(path)
        config = AutoConfig.from_pretrained(folder)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        if checkpointing:
            _enable_checkpointing(model)
        if fsdp:
            shard(model, device, trainable=trainable, offload=offload)
        model.to_empty(device="cpu" if offload else device)
        if fsdp and offload:  # FSDP offloads weights only: buffers go where fully_shard puts them
            for module in model.modules():
                for name, buffer in module.named_buffers(recurse=False):
                    setattr(module, name, buffer.to(device))
        model.tie_weights()  # to_empty may give a tied output layer a tensor of its own
        _rebuild_buffers(model)
        _fill_weights(model, folder)
        if os.path.exists(os.path.join(folder, "generation_config.json")):  # its stop tokens
            model.generation_config = GenerationConfig.from_pretrained(folder)
    except Exception as e:  # the library's errors are pages long: the first line names the cause
        error = _first_line(e, 300)
    failed = _first_error(error)
    if failed:
        die(f"cannot load a causal LM from {path!r} ({failed}); pass a folder with config.json and "
            f"complete safetensors weights, readable on every rank, or a downloaded hub id")
    model.eval()  # as from_pretrained returns it
    if not trainable:  # teacher and reference: frozen, no grads, no optimizer state
        model.requires_grad_(False)
    return model


def snapshot(repo_id):
    """The local folder of a hub model (downloaded first unless HF_HUB_OFFLINE)."""
    from huggingface_hub import snapshot_download
    return snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.jinja"])


def _enable_checkpointing(model):
    """--grad-checkpointing: each decoder layer recomputes its forward in the backward.
    transformers 5.23 renamed the call (the old name still works there, with a warning)."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable({"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _rebuild_buffers(model):
    """to_empty leaves buffers uninitialised. Persistent ones come from the checkpoint; the others
    (rotary frequencies) are computed by transformers' own initialisation, as from_pretrained
    does. One it does not compute is an error, not garbage (it stays NaN)."""
    for module in model.modules():
        names = [n for n in module._non_persistent_buffers_set if getattr(module, n) is not None]
        for name in names:
            if not getattr(module, name).is_floating_point():
                raise ValueError(f"cannot rebuild the buffer {name} of {type(module).__name__}")
            getattr(module, name).fill_(float("nan"))
        if names:
            model._init_weights(module)
        if any(getattr(module, n).isnan().any() for n in names):
            raise ValueError(f"cannot rebuild the buffers {names} of {type(module).__name__}")


# Mixture-of-experts layers that transformers 5 fuses into one [experts, ...] tensor, stored one
# tensor per expert in the checkpoints (Qwen2/Qwen3-MoE, OLMoE, DeepSeek, GLM-MoE, ...).
FUSED_EXPERTS = re.compile(r"(.+\.experts)\.(gate_up_proj|down_proj)")


def _fill_weights(model, folder):
    """Copy every parameter and persistent buffer of `model` from the safetensors files in folder
    (one file, or the shards of model.safetensors.index.json), this rank's rows only: FSDP2 keeps
    rows start:end of dim 0 (split as torch.chunk does) on each rank. A tied output layer is the
    embedding (read once). Raises on a missing file or tensor, or a shape that differs."""
    from safetensors import safe_open
    files = _weight_files(folder)
    state = model.state_dict(keep_vars=True)
    first = {}
    for name, tensor in state.items():
        first.setdefault(id(tensor), name)  # a tied output layer: the embedding's name
    for name, tensor in state.items():
        if first[id(tensor)] != name:
            continue
        local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
        n = tensor.shape[0] if tensor.dim() else 1
        ranks, rank = (tensor.device_mesh.size(), tensor.device_mesh.get_local_rank()) \
            if hasattr(tensor, "device_mesh") else (1, 0)
        chunk = -(-n // ranks)
        start, end = min(n, rank * chunk), min(n, (rank + 1) * chunk)
        if (local.shape[0] if local.dim() else 1) != end - start:
            raise ValueError(f"{name}: unexpected shard shape {tuple(local.shape)}")
        if end == start:
            continue
        with ExitStack() as stack:  # this tensor's files, mapped only while it is read
            opened = {}

            def read(key, span=None):
                if key not in files:
                    raise KeyError(f"{name} is not in the checkpoint (no {key})")
                if files[key] not in opened:
                    opened[files[key]] = stack.enter_context(safe_open(files[key], "pt"))
                if span is None:
                    return opened[files[key]].get_tensor(key)
                return opened[files[key]].get_slice(key)[span[0]:span[1]]

            stored = _checkpoint_slice(read, name, start, end, n, files)
            if stored.shape != local.shape:
                raise ValueError(f"{name} has shape {tuple(stored.shape)} in the checkpoint, the "
                                 f"model expects {tuple(local.shape)}")
            with torch.no_grad():
                local.copy_(stored)


def _checkpoint_slice(read, name, start, end, n, files):
    """Rows start:end of the model's tensor `name` (n rows) as stored in the checkpoint: the
    tensor of that name, or the experts start:end of a fused MoE layer, each expert's gate and up
    projections concatenated (how transformers fuses them)."""
    fused = FUSED_EXPERTS.fullmatch(name)
    if name in files or not fused:
        return read(name, (start, end) if (start, end) != (0, n) else None)
    experts, part = fused.groups()
    if part == "down_proj":
        return torch.stack([read(f"{experts}.{e}.down_proj.weight") for e in range(start, end)])
    return torch.stack([torch.cat([read(f"{experts}.{e}.gate_proj.weight"),
                                   read(f"{experts}.{e}.up_proj.weight")])
                        for e in range(start, end)])


def _weight_files(folder):
    """{tensor name: file} of a folder's safetensors weights: model.safetensors, or the shard
    files model.safetensors.index.json lists (every one must exist)."""
    from safetensors import safe_open
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = {k: os.path.join(folder, v) for k, v in json.load(f)["weight_map"].items()}
    else:
        single = os.path.join(folder, "model.safetensors")
        if not os.path.exists(single):
            raise FileNotFoundError(f"no model.safetensors or model.safetensors.index.json in "
                                    f"{folder}")
        with safe_open(single, "pt") as f:
            files = dict.fromkeys(f.keys(), single)
    missing = sorted({os.path.basename(f) for f in files.values() if not os.path.exists(f)})
    if missing:
        raise FileNotFoundError(f"shard file(s) {', '.join(missing)} listed in "
                                f"model.safetensors.index.json are missing")
    return files


def _first_line(error, width):
    """An exception in one line: its type and the first `width` characters of its first line."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:width] if text else ''}"


def _first_error(error):
    """A collective: every rank's error (a string, or None), and the first rank's that failed
    (\"rank R: ...\" when several ranks run), on every rank: all stop together, none waits."""
    if not dist.is_initialized():
        return error
    errors = [None] * dist.get_world_size()
    dist.all_gather_object(errors, error)
    failed = [(rank, e) for rank, e in enumerate(errors) if e]
    if not failed:
        return None
    return failed[0][1] if len(errors) == 1 else f"rank {failed[0][0]}: {failed[0][1]}"


def _peak_host_memory(device):
    """(the largest peak resident memory, VmHWM, over the ranks in bytes, its rank)."""
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    peaks = _all_gather_cat(torch.tensor([peak], dtype=torch.float64, device=device))
    return int(peaks.max()), int(peaks.argmax())


def uses_reference(lam):
    """Whether pi_ref is loaded and scored: at lam = 1 it cancels out of the advantage."""
    return lam != 1


def reference_path(args):
    """The reference pi_ref: --ref, else the student's initial weights."""
    return args.ref or args.student


def load_models(args, device, weights=None):
    """The student (float32 master weights, from `weights` when resuming), the teachers by domain,
    and the reference (None unless uses_reference). Frozen models are in compute_dtype. With
    --fsdp every model is sharded over the ranks (`shard`) before any weight is read; with
    --offload-frozen the frozen ones stay in CPU memory (see `resident`). Logs the peak host
    memory over the ranks."""
    frozen_dtype = compute_dtype(device)
    student = load_model(weights or args.student, torch.float32, device, trainable=True,
                         fsdp=args.fsdp, checkpointing=args.grad_checkpointing)
    loaded = {}
    for path in args.teachers.values():  # one copy of a model that teaches several domains
        if path not in loaded:
            loaded[path] = load_model(path, frozen_dtype, device, fsdp=args.fsdp,
                                      offload=args.offload_frozen)
    teachers = {domain: loaded[path] for domain, path in args.teachers.items()}
    ref = None
    if uses_reference(args.lam):
        ref = load_model(reference_path(args), frozen_dtype, device, fsdp=args.fsdp,
                         offload=args.offload_frozen)
    peak, rank = _peak_host_memory(device)
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(f"gopd: models loaded: peak host RSS {peak / 2**30:.2f} GiB (rank {rank})")
    return student, teachers, ref


def shard(model, device, trainable=False, offload=False):
    """FSDP2: each decoder layer, then the rest (embeddings, final norm, output layer), is split
    over the ranks and gathered one unit at a time when it runs. The trainable student keeps float32
    shards (the master weights AdamW updates) and, on GPU, computes in bf16 with gradients reduced
    in float32; frozen models are bf16 on GPU already; on CPU all is float32. offload: the shards
    stay in CPU memory and each unit is copied to the GPU for its own forward only. The root unit
    stays gathered from its forward to its backward (reshard_after_forward=False): token_logprobs
    runs the output layer in chunks after the forward, and recomputes them in the backward."""
    mp = MixedPrecisionPolicy()
    if trainable and device.type == "cuda":
        mp = MixedPrecisionPolicy(param_dtype=compute_dtype(device), reduce_dtype=torch.float32)
    policy = CPUOffloadPolicy(pin_memory=device.type == "cuda") if offload else OffloadPolicy()
    for layer in model.get_decoder().layers:
        fully_shard(layer, mp_policy=mp, offload_policy=policy)
    fully_shard(model, mp_policy=mp, offload_policy=policy, reshard_after_forward=False)
    return model


@contextmanager
def gathered(model):
    """Generate with an FSDP student gathered once: through the sharded model, every decoded token
    would all-gather every layer, and ranks that stop at different lengths would wait on each
    other. So every rank gathers all units here (the same collectives in the same order) and
    generate runs with no collective. Costs one whole copy of the student for the rollout, next to
    its shards: 2 bytes a parameter in bf16 on GPU (3.4 GB for Qwen3-1.7B, 8 GB for Qwen3-4B)."""
    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()
            unit.set_reshard_after_forward(unit is not model, recurse=False)


@contextmanager
def cast_weights(model, dtype):
    """Generate from the student's weights cast once to `dtype` (bf16 on GPU), not from its float32
    masters under autocast, which casts every weight again at every decoded token (no_grad has no
    cast cache): on an H200, a Qwen3-1.7B shape, 8 rows, 28.3 ms a token cast vs 101.6 under
    autocast. The copies stand in for the parameters in their modules (a tied weight stays one
    tensor) and the parameters themselves come back untouched: setting `.data` to another dtype
    would drop the gradient hooks DDP put on them. Costs a copy of the student in `dtype` during
    the rollout, as `gathered` does under FSDP (where this has nothing to do)."""
    swapped, copies = [], {}
    for module in [] if isinstance(model, FSDPModule) else model.modules():
        for name, param in module._parameters.items():
            if param is not None and param.dtype != dtype:
                if id(param) not in copies:
                    copies[id(param)] = torch.nn.Parameter(param.detach().to(dtype), requires_grad=False)
                module._parameters[name] = copies[id(param)]
                swapped.append((module, name, param))
    try:
        yield
    finally:
        for module, name, param in swapped:
            module._parameters[name] = param


@contextmanager
def resident(model, device, offload):
    """--offload-frozen: a frozen model lives in CPU memory and is on the GPU only inside this block
    (a whole copy: once per step, see score_batches). A sharded one is left to FSDP, which keeps its
    shards in CPU memory and copies each unit to the GPU for its forward (`shard`)."""
    move = offload and not isinstance(model, FSDPModule)
    if move:
        model.to(device)
    try:
        yield
    finally:
        if move:
            model.to("cpu")


def validate_same_tokenizer(student_tok, other_tok, name):
    """G-OPD compares log-probs of the same token ids under two models, so the tokenizers (not the
    embedding sizes, which families pad differently) must agree on vocabulary and EOS. A different
    chat template is fine: each model scores the prompt rendered in its own template."""
    a, b = student_tok.get_vocab(), other_tok.get_vocab()
    if a != b:
        n = len(set(a.items()) ^ set(b.items()))
        die(f"{name} tokenizer differs from the student's ({n} vocabulary entries differ); "
            f"use a {name} from the student's model family, with the same tokenizer")
    if student_tok.eos_token_id != other_tok.eos_token_id:
        die(f"{name} EOS id {other_tok.eos_token_id} != student EOS id {student_tok.eos_token_id}; "
            f"the student would learn to stop where the {name} does not")

# -----------------------------------------------------------------------------
# Data


def load_train_rows(data):
    """Rows {'prompt': str or chat messages, 'domain': optional str, and 'answer' or 'tests' for
    the outcome metric} from a file or the hub: gopd's own rows, or any schema evaluate.py knows
    (the release's parquets: gold in reward_model.ground_truth, the domain in
    extra_info.opd_teacher)."""
    try:
        rows = evaluate.as_rows(evaluate.read_rows(data, split="train"), "train", data)
    except ValueError as e:
        die(f"--data: {e}")
    if not rows:
        die(f"--data {data!r} has no rows; give a dataset with at least one prompt")
    for i, row in enumerate(rows):
        if "prompt" not in row:
            die(f"row {i} of {data!r} has no 'prompt' field; each row needs 'prompt' (a string or "
                f"a list of chat messages) and optionally 'domain'")
        try:
            evaluate.validate_prompt(row["prompt"])
        except ValueError as e:
            die(f"row {i} of {data!r}: {e}")
        extra = row.get("extra_info")
        if "domain" not in row and isinstance(extra, dict) and "opd_teacher" in extra:
            row["domain"] = extra["opd_teacher"]  # how the release's rows name it, in any schema
        if not isinstance(row.get("domain", ""), (str, type(None))):
            die(f"row {i} of {data!r}: domain {row['domain']!r} is not a string; name it like its "
                f"--teacher DOMAIN=PATH")
    return rows


def validate_domains(rows, teachers):
    """Every row's domain needs its own teacher or the default one (key None)."""
    missing = sorted({r.get("domain") for r in rows if r.get("domain") not in teachers}, key=str)
    if missing and None not in teachers:
        missing = ["(no domain)" if d is None else d for d in missing]
        die(f"rows of domain(s) {missing} have no teacher; add --teacher DOMAIN=PATH for each, or "
            f"a default --teacher PATH (have: {sorted(map(str, teachers))})")


def _frozen_paths(args):
    """{name: path} of the models that score the student's tokens."""
    paths = {f"teacher {d}" if d else "teacher": path for d, path in args.teachers.items()}
    if uses_reference(args.lam):
        paths["reference"] = reference_path(args)
    return paths


def _encode_prompts(rows, tokenizer, own_tokenizers, args, log):
    """Token ids of every prompt rendered for the student and, for each frozen model whose chat
    template differs ({path: tokenizer}), in that model's own template. Rows whose longest rendering
    leaves no room for a response are skipped and counted."""
    from transformers import AutoConfig
    context = 1 << 30
    for path in {args.student, *_frozen_paths(args).values()}:
        try:
            config = AutoConfig.from_pretrained(path)
        except Exception as e:
            die(f"cannot read the model config in {path!r} ({type(e).__name__}); pass a folder "
                f"with config.json")
        context = min(context, getattr(config, "max_position_embeddings", context))
    limit = min(args.max_prompt_len, context - args.max_new_tokens)
    try:  # evaluate.py's rendering rule, so that training and evaluation show the same format
        encoded = [evaluate.prompt_ids(tokenizer, r["prompt"], args.enable_thinking) for r in rows]
        own = {path: [evaluate.prompt_ids(tok, r["prompt"], args.enable_thinking) for r in rows]
               for path, tok in own_tokenizers.items()}
    except ValueError as e:  # chat messages for a tokenizer without a chat template
        die(str(e))
    keep = [i for i in range(len(rows))
            if max(len(ids[i]) for ids in [encoded, *own.values()]) <= limit]
    if len(keep) < len(rows):
        log(f"gopd: skipped {len(rows) - len(keep)} of {len(rows)} prompts longer than {limit} "
            f"tokens (context {context} - max new tokens {args.max_new_tokens}, or "
            f"--max-prompt-len)")
    if not keep:
        die(f"every prompt is longer than {limit} tokens; raise --max-prompt-len or lower "
            f"--max-new-tokens")
    own = {path: [ids[i] for i in keep] for path, ids in own.items()}
    return [rows[i] for i in keep], [encoded[i] for i in keep], own


def load_data(args, log):
    """Everything that can fail cheaply, before any weights load: training rows and their prompts as
    token ids (the student's rendering, and each differently-templated frozen model's own), the
    tokenizers' agreement, the evaluation rows, and the sandbox that will run model code."""
    rows = load_train_rows(args.data)
    validate_domains(rows, args.teachers)
    tokenizer = load_tokenizer(args.student)
    own_tokenizers = {}
    for name, path in _frozen_paths(args).items():
        tok = load_tokenizer(path)
        validate_same_tokenizer(tokenizer, tok, name)
        if tok.chat_template != tokenizer.chat_template:
            own_tokenizers[path] = tok
            log(f"gopd: the {name} has its own chat template; it scores its own rendering of each "
                f"prompt")
    rows, prompts, own_prompts = _encode_prompts(rows, tokenizer, own_tokenizers, args, log)
    eval_sets = {}
    for path in args.eval_data or []:
        try:
            eval_sets[path] = evaluate.load_benchmark(path)
        except ValueError as e:
            die(f"--eval-data: {e}")
    checked = (rows if args.grade_every else []) + [r for s in eval_sets.values() for r in s]
    if any("tests" in row for row in checked):  # model code will run: say how it is contained
        try:
            log("gopd: code checks run in the sandbox's %s mode (%s)"
                % evaluate.sandbox_status(require=args.require_isolation))
        except RuntimeError as e:
            die(str(e))
    if args.ref and not uses_reference(args.lam):
        log("gopd: --lam 1: the reference cancels out of the advantage, so --ref is not loaded")
    return rows, tokenizer, prompts, own_prompts, eval_sets


def _hash_rows(rows):
    """What a resumed run's training rows are compared by: a hash of every prompt and domain."""
    text = json.dumps([[r["prompt"], r.get("domain")] for r in rows])
    return hashlib.sha256(text.encode()).hexdigest()


def step_indices(n_rows, step, n, seed):
    """Indices of the n prompts of a global step: consecutive slices of per-epoch seeded shuffles.
    A pure function of the step, so resuming needs no data-loader state."""
    idx, perms = [], {}
    for i in range(step * n, (step + 1) * n):
        epoch, j = divmod(i, n_rows)
        if epoch not in perms:
            generator = torch.Generator().manual_seed(seed + epoch)
            perms[epoch] = torch.randperm(n_rows, generator=generator)
        idx.append(perms[epoch][j].item())
    return idx

# -----------------------------------------------------------------------------
# Rollout: the student samples its own responses


def left_pad(seqs, pad_id):
    """List of id lists -> (ids [B, P], attention_mask [B, P]), left-padded for generation."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s)
        mask[i, width - len(s):] = 1
    return ids, mask


def response_mask(responses, stop_ids):
    """1 for generated tokens up to and including the first stop token (stop_ids: a list, as
    evaluate.stop_ids gives it), 0 after it. pad may equal EOS, so the first EOS is kept (the
    student must learn to stop) and only what follows is masked."""
    is_stop = torch.isin(responses, torch.tensor(stop_ids, device=responses.device)).long()
    return (is_stop.cumsum(-1) - is_stop == 0).long()


@torch.no_grad()
def rollout(model, prompts, pad_id, stop_ids, max_new_tokens, temperature, top_p):
    """Sample one response per prompt (lists of ids) with evaluate.sample, the one sampling rule of
    training and evaluation: softmax(logits / temperature) with top-p and nothing else, whatever the
    checkpoint's generation_config says. Training samples at top-p 1 (validate_args), so the sampled
    distribution is the one the loss scores.
    Returns sequences [B, P+R] (left-padded prompt, response), attention mask [B, P+R] and
    response mask [B, R]."""
    ids, attn = left_pad(prompts, pad_id)
    ids, attn = ids.to(model.device), attn.to(model.device)
    seq = evaluate.sample(model, ids, attn, max_new_tokens=max_new_tokens, temperature=temperature,
                          top_p=top_p, stop_ids=stop_ids, pad_id=pad_id)
    mask = response_mask(seq[:, ids.shape[1]:], stop_ids)
    return seq, torch.cat([attn, mask], dim=1), mask


def _drop_padding_columns(seq, attn, mask):
    """Drop the columns that are padding in every row of a micro-batch: leading prompt padding,
    and response positions after every row has stopped."""
    n_prompt = seq.shape[1] - mask.shape[1]
    first = int((attn[:, :n_prompt].sum(0) > 0).nonzero()[0])
    end = n_prompt + int(mask.sum(0).nonzero().max()) + 1
    return seq[:, first:end], attn[:, first:end], mask[:, :end - n_prompt]


@dataclass
class MicroBatch:
    """The rollouts of one forward and backward, in rollout's layout. rollout_batches builds it,
    score_batches fills the frozen models' fields, update reads them."""
    seq: torch.Tensor         # [B, P+R] left-padded prompts, each followed by its response
    attn: torch.Tensor        # [B, P+R] attention mask
    mask: torch.Tensor        # [B, R] response mask (response_mask)
    idx: list                 # each row's dataset index
    domains: list             # each row's domain (None: the default teacher's)
    row_steps: float = 0.0    # decode steps its rows held a slot in generate (useful_fraction)
    logp_t: torch.Tensor = None  # [B, R] each sampled token under its row's teacher
    logp_r: torch.Tensor = None  # [B, R] and under the reference; None without one
    states: dict = None       # the frozen models' final hidden states kept for target_kl


def rollout_batches(model, prompts, idx, domains, sampling, rollout_batch, micro_batch,
                    staged=True):
    """Rollouts of this rank's prompts (idx: their dataset indices, domains: theirs), cut into
    MicroBatches. sampling: evaluate.sample's settings (max_new_tokens, temperature, top_p,
    stop_ids, pad_id). staged (the default): evaluate.sample_staged over all of them, finished
    rows leaving the batch, each call sized by the memory of rollout_batch sequences of prompt +
    max_new_tokens (see sequences_per_call); else one evaluate.sample call per rollout_batch rows
    (rollout). Either way a micro-batch is micro_batch consecutive rows (for the one-call path, of
    one call), and every rank has as many: update and the frozen models' passes are collectives."""
    if not staged:
        batches = []
        for s in range(0, len(prompts), rollout_batch):
            seq, attn, mask = rollout(model, prompts[s:s + rollout_batch], **sampling)
            for m in range(0, len(seq), micro_batch):
                part = slice(m, m + micro_batch)
                seq_m, attn_m, mask_m = _drop_padding_columns(seq[part], attn[part], mask[part])
                batches.append(MicroBatch(seq_m, attn_m, mask_m, idx[s:s + rollout_batch][part],
                                          domains[s:s + rollout_batch][part],
                                          float(len(mask_m) * mask.shape[1])))
        return batches
    dtype_bytes = compute_dtype(model.device).itemsize
    budget = sequences_per_call(model.config, rollout_batch, max(map(len, prompts)),
                                sampling["max_new_tokens"], dtype_bytes)
    responses, stats = evaluate.sample_staged(model, prompts, **sampling, rows_per_call=budget)
    batches = []
    for s in range(0, len(prompts), micro_batch):
        part = slice(s, s + micro_batch)
        seq, attn, mask = _with_responses(prompts[part], responses[part], sampling["pad_id"],
                                         sampling["stop_ids"])
        batches.append(MicroBatch(seq.to(model.device), attn.to(model.device),
                                  mask.to(model.device), idx[part], domains[part],
                                  float(sum(stats["row_steps"][part]))))
    return batches


def _with_responses(prompts, responses, pad_id, stop_ids):
    """(seq, attn, mask) of prompts and their responses (lists of ids) in rollout's layout:
    left-padded prompts, each response right after its prompt, padded with pad_id after it."""
    ids, prompt_attn = left_pad(prompts, pad_id)
    width = max(len(r) for r in responses)
    tail = torch.tensor([r + [pad_id] * (width - len(r)) for r in responses], dtype=torch.long)
    mask = response_mask(tail, stop_ids)
    return torch.cat([ids, tail], 1), torch.cat([prompt_attn, mask], 1), mask


def sequences_per_call(config, batch, prompt_len, new_tokens, dtype_bytes):
    """rows_per_call for evaluate.sample_staged: a call whose rows span `width` columns and
    generate up to `new` tokens holds as many rows as fit in the memory (rollout_budget's cost of
    a sequence) of `batch` sequences of prompt_len + new_tokens. So --rollout-batch sizes the
    longest stage, and shorter stages hold more rows."""
    budget = batch * rollout_budget(config, prompt_len, new_tokens, 1, dtype_bytes)[1]
    return lambda width, new: rollout_budget(config, width, new, budget, dtype_bytes, 1.0)[0]


def useful_fraction(batches):
    """Real response tokens / the row-steps generate computed for them, over all ranks: 1 when no
    row ever waited for another to finish."""
    tokens = sum(b.mask.sum().item() for b in batches)
    steps = sum(b.row_steps for b in batches)
    totals = torch.tensor([tokens, steps], dtype=torch.float, device=batches[0].mask.device)
    tokens, steps = all_reduce_sum(totals).tolist()
    return tokens / max(steps, 1)


def kv_bytes_per_token(config, dtype_bytes):
    """KV cache of one token: a key and a value vector per KV head, in every layer."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return 2 * config.num_hidden_layers * kv_heads * head_dim * dtype_bytes


def rollout_budget(config, prompt_len, new_tokens, free_bytes, dtype_bytes, fraction=0.8):
    """(sequences one generate call can hold in `fraction` of free_bytes, bytes per sequence). A
    sequence costs its KV cache for prompt + response, the prefill's activations of one layer over
    the prompt, and generate's float32 logits with top-p's sorted copy and indices over the
    vocabulary. The rest of `free_bytes` is slack for the allocator (the cache grows by concat)."""
    intermediate = getattr(config, "intermediate_size", None) or 4 * config.hidden_size
    kv_cache = (prompt_len + new_tokens) * kv_bytes_per_token(config, dtype_bytes)
    prefill = prompt_len * (4 * config.hidden_size + 3 * intermediate) * dtype_bytes
    per_seq = kv_cache + prefill + 16 * config.vocab_size
    return max(1, int(fraction * free_bytes // per_seq)), per_seq


def _free_memory(device):
    """Bytes free for new tensors: on the GPU, else this rank's share of the machine's memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    with open("/proc/meminfo") as f:
        available = next(int(line.split()[1]) * 1024 for line in f
                         if line.startswith("MemAvailable:"))
    return available // int(os.environ.get("LOCAL_WORLD_SIZE", 1))


def choose_rollout_batch(student, optimizer, prompts, args, world, device, log):
    """--rollout-batch when not given: as many sequences as the KV-cache budget of the free memory
    holds, less what the rollout and the update will still allocate (AdamW's two moments before the
    first step, the gathered copy under --fsdp or autocast's bf16 weight cache under DDP on GPU):
    all of this rank's sequences of a step if they fit, else a multiple of --micro-batch; the
    smallest over the ranks, since micro-batches, and so the update's collectives, must line up."""
    dtype_bytes = compute_dtype(device).itemsize
    params = list(student.parameters())
    n_params = sum(p.numel() for p in params)  # a DTensor counts the whole parameter
    local = sum((p.to_local() if hasattr(p, "to_local") else p).numel() for p in params)
    pending = 0 if optimizer.state else 8 * local
    if args.fsdp or device.type == "cuda":
        pending += dtype_bytes * n_params
    prompt_len = min(args.max_prompt_len, max(len(p) for p in prompts))
    free = _free_memory(device)
    batch, per_seq = rollout_budget(student.config, prompt_len, args.max_new_tokens, free - pending,
                                    dtype_bytes)
    per_rank = args.prompts_per_step // world * args.samples_per_prompt
    if batch >= per_rank:
        batch = per_rank
    elif batch > args.micro_batch:
        batch -= batch % args.micro_batch
    if dist.is_initialized():
        batch = torch.tensor(batch, device=device)
        dist.all_reduce(batch, op=dist.ReduceOp.MIN)
        batch = int(batch)
    log(f"gopd: rollout batch {batch} sequences: {per_seq / 2**30:.2f} GiB each (KV cache of "
        f"{prompt_len} + {args.max_new_tokens} tokens), {free / 2**30:.1f} GiB free, "
        f"{pending / 2**30:.1f} GiB of it still to be allocated; --rollout-batch overrides")
    return batch


def rollout_batch_for(args, checkpoint, student, optimizer, prompts, world, device, log):
    """The run's rollout batch, which run.json records: --rollout-batch; else, resuming, the
    checkpoint's (the same batches sample the same responses); else choose_rollout_batch's."""
    if args.rollout_batch is not None:
        return args.rollout_batch
    if checkpoint:
        batch = checkpoint.record["args"]["rollout_batch"]
        log(f"gopd: rollout batch {batch} sequences, as in {checkpoint.folder} (a resume is exact "
            f"only with the same); --rollout-batch overrides")
        return batch
    return choose_rollout_batch(student, optimizer, prompts, args, world, device, log)

# -----------------------------------------------------------------------------
# Scoring: log-probs of the sampled tokens, and the frozen models' final hidden states

# The sampled estimator logs the exact per-state KL to the target, what both estimators minimise, on
# every KL_STRIDE-th response position (the offset moves with the step): the frozen models' hidden
# states it keeps for that cost 1/KL_STRIDE of what the exact estimator keeps.
KL_STRIDE = 16


def response_hidden(model, sequences, attention_mask, n_response):
    """(final hidden states [B, n_response, hidden] at the positions that predict the last
    n_response tokens of each row, the output layer). The model runs through its own forward
    (logits for one position only), so the wrappers' hooks run; a hook on the decoder body keeps
    its final states."""
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # left padding shifts nothing
    bare = getattr(model, "module", model)
    kept = []
    hook = bare.get_decoder().register_forward_hook(lambda module, args, out: kept.append(out[0]))
    try:
        model(input_ids=sequences, attention_mask=attention_mask, position_ids=position_ids,
              use_cache=False, logits_to_keep=1)
    finally:
        hook.remove()
    return kept[0][:, -n_response - 1:-1], bare.get_output_embeddings()


def token_logprobs(model, sequences, attention_mask, n_response, temperature=1.0, chunk=128,
                   entropy=False, keep=None):
    """log pi(y_t | s_t) for the last n_response tokens of each row, float32 [B, n_response]; with
    entropy=True also the entropy of each of those next-token distributions (no gradient); with
    `keep` (a slice of response positions) also the final hidden states there, [B, P, hidden] (no
    gradient), from which target_kl computes whole next-token distributions later.

    The model runs on the whole rows but yields final hidden states, not logits; the output layer
    then runs on `chunk` response tokens at a time, and each chosen token's log-prob is its logit
    minus its row's logsumexp. So no [B, R, vocab] tensor ever exists (with a 150k vocabulary and
    long responses, that tensor, not the model, runs out of memory); with gradients on, each chunk
    is recomputed in backward. All models are scored at the sampling temperature (logits / T), so
    the student's log-probs are those of the distribution it sampled from.
    Copying it: rows are left-padded with the responses right-aligned (the last n_response
    columns); the model is an HF causal LM (decoder body with final norm, then the output layer, no
    logit post-processing: Qwen, Llama, Mistral; not Gemma 2's soft-capping), bare, in DDP, or
    sharded by `shard` (response_hidden)."""
    states, head = response_hidden(model, sequences, attention_mask, n_response)
    hidden = states.reshape(-1, states.shape[-1])
    targets = sequences[:, -n_response:].reshape(-1)
    parts = []
    for h, y in zip(hidden.split(chunk), targets.split(chunk)):
        if torch.is_grad_enabled():
            parts.append(checkpoint(chosen_logprobs, head, h, y, temperature, entropy,
                                    use_reentrant=False))
        else:
            parts.append(chosen_logprobs(head, h, y, temperature, entropy))
    if isinstance(model, FSDPModule) and not torch.is_grad_enabled():
        model.reshard()  # no backward will free a frozen model's gathered root unit: free it now
    logps, entropies = zip(*parts)
    logp = torch.cat(logps).view(sequences.shape[0], n_response)
    out = [logp] + ([torch.cat(entropies).view_as(logp)] if entropy else [])
    if keep is not None:
        out.append(states[:, keep].detach().clone())  # a copy: the whole rows' states are freed
    return out[0] if len(out) == 1 else tuple(out)


def chosen_logprobs(head, hidden, targets, temperature, entropy=False):
    """log-softmax of the target tokens only (logit minus logsumexp, float32), and when asked the
    entropy of each row's distribution (a metric: no gradient)."""
    logits = head(hidden).float() / temperature
    lse = logits.logsumexp(-1)
    logp = logits.gather(-1, targets[:, None])[:, 0] - lse
    if not entropy:
        return logp, None
    with torch.no_grad():
        return logp, lse - (logits.softmax(-1) * logits).sum(-1)


def target_kl(head, hidden, targets, states, heads, lam, temperature, chunk=128):
    """KL(pi_theta(.|s) || p*(.|s)) at P response positions of each row, float32 [B, P], with
    p*(.|s) = softmax((lam * z_T + (1 - lam) * z_ref) / T), z the frozen models' logits there; also
    the sampled tokens' log-probs and the entropies (no gradient), as token_logprobs gives them.

    hidden [B, P, H] and head: the student's final hidden states there and its output layer;
    targets [B, P]: the sampled tokens; states: the frozen models' final hidden states at the same
    positions (score_batches), {"teacher": [(routed, model, [len(routed), P, H])], "ref": [B, P, H]
    or None without a reference}, each row's from its own domain's teacher (routed: its rows);
    heads: {frozen model: its output layer on this device} (frozen_heads). As in token_logprobs,
    the three output layers run on `chunk` positions at a time, recomputed in backward: no
    [B, P, vocab] tensor exists. Ids past the narrowest output layer (padding rows, which no
    tokenizer produces) are left out: the distributions are compared over the vocabulary all the
    models share."""
    kl, logp, entropy = (hidden.new_zeros(targets.shape, dtype=torch.float32) for _ in range(3))
    ref = states["ref"]
    ref_head = heads[states["ref_model"]] if ref is not None else None
    for routed, teacher, teacher_hidden in states["teacher"]:
        chunks = [x.flatten(0, 1).split(chunk)
                  for x in [hidden[routed], targets[routed], teacher_hidden]]
        chunks.append(ref[routed].flatten(0, 1).split(chunk) if ref is not None
                      else [None] * len(chunks[0]))
        parts = []
        for h, y, h_t, h_r in zip(*chunks):
            args = (head, h, y, heads[teacher], h_t, ref_head, h_r, lam, temperature)
            if torch.is_grad_enabled():
                parts.append(checkpoint(chunk_kl, *args, use_reentrant=False))
            else:
                parts.append(chunk_kl(*args))
        for out, part in zip([kl, logp, entropy], zip(*parts)):
            out[routed] = torch.cat(part).view(len(routed), -1)
    return kl, logp, entropy


def chunk_kl(head, hidden, targets, teacher_head, teacher_hidden, ref_head, ref_hidden, lam,
             temperature):
    """target_kl on one chunk of states: (KL to p*, the sampled tokens' log-probs, entropies)."""
    logits = head(hidden).float()
    with torch.no_grad():  # the target: no gradient, recomputed in backward like the logits
        frozen = [teacher_head(teacher_hidden).float()]
        if ref_head is not None:
            frozen.append(ref_head(ref_hidden).float())
        vocab = min(z.shape[-1] for z in [logits, *frozen])
        z = lam * frozen[0][:, :vocab]
        if ref_head is not None:
            z = z + (1 - lam) * frozen[1][:, :vocab]
        log_target = (z / temperature).log_softmax(-1)
    logp = (logits[:, :vocab] / temperature).log_softmax(-1)
    kl = (logp.exp() * (logp - log_target)).sum(-1)
    with torch.no_grad():
        return kl, logp.gather(-1, targets[:, None])[:, 0], -(logp.exp() * logp).sum(-1)


@contextmanager
def frozen_heads(models, device, offload):
    """{model: its output layer, usable on `device`}, for target_kl in the update (the frozen
    models', and the student's for _kept_kl). A sharded (FSDP) model's root unit (embeddings, final
    norm, output layer) is gathered on entry and freed on exit: collectives, so every rank passes
    the same models in the same order, whatever its rows' domains. With --offload-frozen, a frozen
    model in CPU memory lends a copy of its output layer's weights on the device."""
    heads = {}
    for model in models:
        head = model.get_output_embeddings()
        if isinstance(model, FSDPModule):
            model.unshard()
        elif offload:
            bias = None if head.bias is None else head.bias.to(device)
            head = partial(torch.nn.functional.linear, weight=head.weight.to(device), bias=bias)
        heads[model] = head
    try:
        yield heads
    finally:
        for model in models:
            if isinstance(model, FSDPModule):
                model.reshard()


def kept_positions(estimator, step):
    """The response positions whose frozen hidden states scoring keeps: all of them for the exact
    estimator (its loss), every KL_STRIDE-th for the sampled one (its metric)."""
    return slice(None) if estimator == "exact" else slice(step % KL_STRIDE, None, KL_STRIDE)


def _with_prompts(prompts, sequences, attention_mask, n_response, pad_id):
    """The same responses (the last n_response columns) after other prompts (lists of ids):
    another model's rendering of them in its own chat template, left-padded again."""
    ids, attn = left_pad(prompts, pad_id)
    return (torch.cat([ids.to(sequences.device), sequences[:, -n_response:]], 1),
            torch.cat([attn.to(attention_mask.device), attention_mask[:, -n_response:]], 1))


@torch.no_grad()  # not inference_mode: FSDP's gather buffers made there fail later version checks
def frozen_logprobs(models, domains, sequences, attention_mask, n_response, temperature,
                    own_prompts=None, pad_id=None, only=None, keep=None):
    """Log-probs [B, n_response] of the sampled tokens under frozen models: each row under its
    domain's model ({domain: model}; key None is the default one). own_prompts[domain], when given,
    is that model's own rendering of each row's prompt (its chat template differs from the
    student's): it reads those ids followed by the same response ids, as the paper's release does.
    With `only`, just the rows of that model are scored (the others stay 0). With `keep` (a slice of
    response positions), also [(routed, final hidden states [len(routed), P, hidden])] per domain,
    routed being its rows: the responses end every rendering, so the positions line up whatever the
    template.
    A sharded (FSDP) model's forward is a collective, so every rank must call it as often, whatever
    its rows' domains: a rank with no row for it runs it on a stand-in row (row 0)."""
    out = torch.zeros(sequences.shape[0], n_response, device=sequences.device)
    route = [d if d in models else None for d in domains]
    kept = []
    for domain, model in models.items():
        routed = [i for i, d in enumerate(route) if d == domain]
        skip_empty = not routed and not isinstance(model, FSDPModule)
        if skip_empty or (only is not None and model is not only):
            continue
        run = routed or [0]
        seq, attn = sequences[run], attention_mask[run]
        if own_prompts and own_prompts.get(domain) is not None:
            own = [own_prompts[domain][i] for i in run]
            seq, attn = _with_prompts(own, seq, attn, n_response, pad_id)
        logp = token_logprobs(model, seq, attn, n_response, temperature, keep=keep)
        if keep is not None:
            logp, hidden = logp
            if routed:
                kept.append((routed, hidden))
        if routed:
            out[routed] = logp
    return out if keep is None else (out, kept)


def score_batches(batches, teachers, ref, teacher_prompts, ref_prompts, temperature, pad_id, device,
                  offload, keep=None):
    """Fill every MicroBatch's logp_t and logp_r (None when ref is None): each sampled token under
    its row's teacher, and under the reference. One frozen model at a time over all micro-batches,
    so that with --offload-frozen each is on the GPU once per step, for its own pass only.
    teacher_prompts / ref_prompts: {domain: every row's prompt ids in that model's own template}.
    With `keep` (kept_positions), b.states holds the frozen models' final hidden states at those
    response positions, for target_kl: B x P x hidden values per frozen model, in its dtype."""
    for b in batches:
        b.logp_t = torch.zeros(b.mask.shape, device=b.mask.device)
        b.logp_r = None if ref is None else torch.zeros(b.mask.shape, device=b.mask.device)
        b.states = None if keep is None else {"keep": keep, "teacher": [], "ref": None,
                                              "ref_model": ref}
    passes = [(model, teachers, teacher_prompts, False)
              for model in dict.fromkeys(teachers.values())]
    if ref is not None:
        passes.append((ref, {None: ref}, ref_prompts, True))
    for model, models, prompts, is_ref in passes:
        with resident(model, device, offload):
            for b in batches:
                own = {d: [p[i] for i in b.idx] for d, p in prompts.items() if p is not None}
                logp = frozen_logprobs(models, b.domains, b.seq, b.attn, b.mask.shape[1],
                                       temperature, own, pad_id, only=model, keep=keep)
                if keep is not None:
                    logp, kept = logp
                    if is_ref:
                        b.states["ref"] = kept[0][1]
                    else:
                        b.states["teacher"] += [(routed, model, h) for routed, h in kept]
                (b.logp_r if is_ref else b.logp_t).add_(logp)

# -----------------------------------------------------------------------------
# Objective


def gopd_loss(logp_student, logp_teacher, logp_ref, mask, lam, n_global,
              loss_agg="seq-mean-token-mean"):
    """The G-OPD loss on one micro-batch of response tokens ([B, R] tensors, mask 1 on response).

        A_t  = lam * (log pi_T - log pi_ref) - (log pi_theta - log pi_ref)    advantage, no gradient
        loss = - mean over responses of ( mean over its tokens of A_t * log pi_theta(y_t|s_t) )

    Its gradient is on-policy REINFORCE with a per-token advantage: the paper's update, up to the
    release's truncated importance weight min(pi_train / pi_rollout, 5), which is 1 when one engine
    samples and scores. loss_agg="token-mean" weighs every token the same, not every response.
    Copying it: n_global counts responses (tokens, for token-mean) in the whole global batch, all
    micro-batches and ranks, so the micro-batch losses add up to the same update however the batch
    is split; under DDP or FSDP, which average gradients over ranks, multiply by the world size.
    At lam = 1 pi_ref cancels (A_t = log pi_T - log pi_theta): pass logp_ref=None to skip it."""
    if logp_ref is None:
        if lam != 1:
            raise ValueError("logp_ref is needed when lam != 1")
        logp_ref = torch.zeros_like(logp_teacher)
    advantage = (lam * (logp_teacher - logp_ref) - (logp_student - logp_ref)).detach()
    return aggregate(-advantage * logp_student * mask, mask, n_global, loss_agg)


def exact_loss(kl, mask, n_global, loss_agg="seq-mean-token-mean"):
    """The same objective with the exact per-state estimator (--estimator exact): at every response
    state s_t the student's whole next-token distribution, not one sampled token ([B, R] tensors;
    kl from target_kl, with z_T, z_ref the frozen models' logits at s_t and tau the temperature).

        log p*(.|s_t) = log_softmax((lam * z_T + (1 - lam) * z_ref) / tau)    per-state target
        KL_t = sum_v pi_theta(v|s_t) * (log pi_theta(v|s_t) - log p*(v|s_t))
        loss = mean over responses of ( mean over its tokens of KL_t )

    Both losses have the same gradient in expectation at every state, so the estimators are
    interchangeable: gopd_loss's A_t = log p*(y_t|s_t) + log Z_t - log pi_theta(y_t|s_t), Z_t being
    p*'s normaliser, and

        E_{y~pi_theta}[A_t grad log pi_theta(y)]
            = -E[(log pi_theta(y) - log p*(y)) grad log pi_theta(y)] + log Z_t E[grad log pi(y)]
            = -grad KL_t

    since E[grad log pi_theta] = grad sum_y pi_theta(y) = 0 kills the normaliser. gopd_loss is the
    one-sample estimate of this gradient; this one has none of its sampling noise, for a pass over
    the vocabulary at every state. Aggregated as gopd_loss (n_global, loss_agg)."""
    return aggregate(kl * mask, mask, n_global, loss_agg)


def aggregate(per_token, mask, n_global, loss_agg):
    """A micro-batch's per-token loss terms (0 off the response), normalised over the global batch:
    the token mean of each response, summed over responses (or the sum over tokens, for token-mean),
    divided by the global batch's responses (or tokens)."""
    if loss_agg == "token-mean":
        return per_token.sum() / n_global
    return (per_token.sum(-1) / mask.sum(-1).clamp(min=1)).sum() / n_global

# -----------------------------------------------------------------------------
# Checkpoints: save_pretrained folders, written atomically, with everything --resume needs


@contextmanager
def out_lock(out, rank, device):
    """One run at a time in --out: rank 0 holds an OS lock on OUT/.gopd.lock for the whole run and
    writes its pid and host there, for the line a second run stops with. The kernel frees the lock
    when the process ends, however it ends (a kill -9 included), so a lock file left behind blocks
    nothing; a POSIX lock (lockf), not flock, so that no forked child holds it. Every rank learns
    the verdict in one collective and all stop with the same line, before any model loads."""
    validate_out_dir(out)
    path = os.path.join(out, ".gopd.lock")
    held, busy = None, None
    if rank == 0:
        held = open(path, "a+")
        try:
            fcntl.lockf(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held.truncate(0)
            held.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                   "started": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
            held.flush()
        except OSError as e:
            held.close()
            held = None
            if e.errno not in (errno.EACCES, errno.EAGAIN):  # a filesystem without locks
                print(f"gopd: warning: cannot lock {path} ({e.strerror}): nothing stops a second "
                      f"run from writing into {out}")
            else:
                busy = e
    try:
        if _any_rank_failed(busy, device):
            try:
                with open(path) as f:
                    owner = json.loads(f.read())
                who = f"pid {int(owner['pid'])} on host {str(owner['host'])[:100]}"
            except (OSError, ValueError, KeyError, TypeError):  # not written yet, or not gopd's
                who = "a process whose pid is not written there"
            die(f"{out} is in use by another gopd run ({who}, holding {path}); wait for it or stop "
                f"it, or pass another --out. The lock dies with its process: if that process is "
                f"gone and this persists (a network filesystem), delete {path}")
        yield
    finally:
        if held is not None:
            held.close()  # unlocks


def _rng_state():
    """This rank's random streams as tensors and plain values, which torch.load reads back with
    weights_only=True (numpy's own state holds an array, which it would refuse)."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(), "numpy": [kind, key.tolist(), pos, has_gauss, gauss],
            "torch": torch.get_rng_state(), "cuda": cuda}


def _set_rng_state(state):
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(key, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None:
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoints(out):
    """Checkpoint folders in out, oldest first (temp folders of interrupted saves ignored)."""
    if not os.path.isdir(out):
        return []
    names = [d for d in os.listdir(out) if re.fullmatch(r"step_\d{6}", d)]
    return sorted(os.path.join(out, d) for d in names)


def _run_flags(args, rollout_batch):
    """The flags as run.json and the trackers record them, with the rollout batch the run uses."""
    flags = {k: v for k, v in vars(args).items() if k != "teachers"}
    return {**flags, "rollout_batch": rollout_batch}


def run_record(args, rollout_batch, world, step, data_hash):
    """What a resumed run must agree with: the flags, the number of ranks and the training rows."""
    return {"step": step, "world": world, "args": _run_flags(args, rollout_batch),
            "data": data_hash}


def _any_rank_failed(error, device):
    """A collective: True on every rank if any rank caught an error (all stop, none hangs)."""
    failed = torch.tensor(float(error is not None), device=device)
    return all_reduce_sum(failed).item() > 0


def save_sharded(model, optimizer, folder):
    """FSDP: every rank sends its weight shards to rank 0, which gets the whole state dict in CPU
    memory (for save_pretrained; the other ranks get {}), and writes its own optimizer shard to
    folder/optimizer_rankR.pt as plain tensors (torch.distributed.checkpoint would unpickle its
    metadata on load). A collective: every rank calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=options)
    # a tied output layer arrives as a second copy of the embeddings: keep one name, as
    # save_pretrained does
    first = {}
    for name, param in model.state_dict(keep_vars=True).items():
        first.setdefault(id(param), name)
    weights = {name: w for name, w in weights.items() if name in set(first.values())}
    state = optimizer.state_dict()  # this rank's shards, as DTensors: keep their local parts
    state["state"] = {i: {k: v.to_local() if isinstance(v, DTensor) else v for k, v in s.items()}
                      for i, s in state["state"].items()}
    torch.save(state, os.path.join(folder, f"optimizer_rank{dist.get_rank()}.pt"))
    return weights


def _load_sharded_optimizer(optimizer, state):
    """The mirror of save_sharded for the optimizer (the weights load with from_pretrained): each
    local shard becomes a DTensor laid out as its parameter is (the same ranks wrote it)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for i, s in state["state"].items():
        p = params[i]
        for k, v in s.items():
            if v.shape == p.to_local().shape and v.dim() > 0:  # a moment, not AdamW's step count
                s[k] = DTensor.from_local(v, p.device_mesh, p.placements, run_check=False,
                                          shape=p.shape, stride=p.stride())
    optimizer.load_state_dict(state)


def save_checkpoint(out, record, student, tokenizer, optimizer, scheduler, rank, device):
    """Write step_N/ into a temp folder renamed when complete: a crash mid-save never leaves a half
    checkpoint. A failed write (a full disk) removes the temp folder and stops every rank with one
    line; the previous checkpoint stays intact. Under FSDP the weights are gathered to rank 0 (the
    same save_pretrained folder) and each rank saves its optimizer shard (optimizer_rankR.pt)."""
    final = os.path.join(out, f"step_{record['step']:06d}")
    tmp = final + ".tmp"
    sharded = isinstance(student, FSDPModule)
    full_weights = {}

    def make_folder():
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)

    def write_rank_state():  # each rank samples from its own random streams (and holds its shards)
        torch.save(_rng_state(), os.path.join(tmp, f"rng_rank{rank}.pt"))
        if sharded:
            full_weights.update(save_sharded(student, optimizer, tmp))

    def write_model():
        if rank == 0:
            student.save_pretrained(tmp, state_dict=full_weights if sharded else None)
            tokenizer.save_pretrained(tmp)
            state = {"step": record["step"], "scheduler": scheduler.state_dict(),
                     "optimizer": None if sharded else optimizer.state_dict()}
            torch.save(state, os.path.join(tmp, "trainer_state.pt"))
            with open(os.path.join(tmp, "run.json"), "w") as f:
                json.dump(record, f, indent=1)
            os.rename(tmp, final)

    error = None
    for part in (make_folder, write_rank_state, write_model):
        try:
            part()
        except Exception as e:  # whatever the writer raises: OSError, torch's, safetensors' errors
            error = e
        if _any_rank_failed(error, device):
            if rank == 0:
                shutil.rmtree(tmp, ignore_errors=True)
            previous = checkpoints(out)[-1] if checkpoints(out) else "none"
            die(f"could not write checkpoint {final} ({_save_error(error)}); removed the partial "
                f"folder, the last intact checkpoint is {previous}. Fix that, then rerun with "
                f"--resume")


def _save_error(error):
    """What went wrong in a save, in a few words (torch reports a full disk as 'unexpected pos')."""
    if error is None:
        return "failed on another rank"
    text = str(error).strip()
    full = getattr(error, "errno", None) == errno.ENOSPC
    if full or "No space left" in text or "unexpected pos" in text:
        return "no space left on device"
    return _first_line(error, 200)


def validate_weights(folder):
    """Raise unless folder holds complete safetensors weights (each file as long as its header
    says)."""
    files = [f for f in os.listdir(folder) if f.endswith(".safetensors")]
    if not files:
        raise FileNotFoundError("no model weights")
    for name in files:
        path = os.path.join(folder, name)
        with open(path, "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(header_len))
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
        end = max(ends, default=0)
        if os.path.getsize(path) < 8 + header_len + end:
            raise ValueError(f"{name} is truncated")


def validate_record(record, folder):
    """Raise (naming the field) unless run.json holds, with the right types, what a resume reads.
    The folder's name orders the checkpoints, so its step must be run.json's."""
    if not isinstance(record, dict):
        raise ValueError("run.json is not a JSON object")
    for name, kind in [("step", int), ("world", int), ("args", dict), ("data", str)]:
        if not isinstance(record.get(name), kind) or isinstance(record.get(name), bool):
            raise ValueError(f"run.json field {name!r} is missing or not a {kind.__name__}")
    if record["step"] != int(os.path.basename(folder)[len("step_"):]):
        raise ValueError(f"run.json field 'step' is {record['step']}, not the folder's")
    if record["world"] < 1:
        raise ValueError(f"run.json field 'world' is {record['world']}, not >= 1")
    batch = record["args"].get("rollout_batch")
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ValueError("run.json field 'args.rollout_batch' is missing or not an integer >= 1")


class Checkpoint(NamedTuple):
    """A checkpoint to resume from, read and checked by read_checkpoint."""
    folder: str
    record: dict  # run.json: the step, the number of ranks, the flags, the training rows' hash
    state: dict   # trainer_state.pt (and under --fsdp this rank's optimizer shard, as "shard")
    rng: dict     # this rank's random streams


def read_checkpoint(folder, world, rank):
    """The Checkpoint in folder, for this rank; raises if any part is missing, unreadable or not
    what gopd writes. Nothing here can run code: JSON, safetensors
    headers, and torch.load with weights_only=True (tensors and plain values only); a pickle
    weights file, which gopd never writes, is refused. A different number of ranks is refused
    outright."""
    with open(os.path.join(folder, "run.json")) as f:
        record = json.load(f)
    validate_record(record, folder)
    if record["world"] != world:
        die(f"--resume: {folder} was written by {record['world']} rank(s) and this run has "
            f"{world}; each rank's sampling stream is saved apart, so resume with "
            f"--nproc_per_node={record['world']}")
    validate_weights(folder)
    pickled = [f for f in os.listdir(folder) if f.endswith((".bin", ".pth", ".pkl", ".ckpt"))]
    if pickled:
        raise ValueError(f"{pickled[0]} is a pickle, which gopd never writes and loading could run")
    # into CPU memory: saved from rank 0's GPU, the optimizer state would land on it for every rank
    state = torch.load(os.path.join(folder, "trainer_state.pt"), map_location="cpu",
                       weights_only=True)
    rng = torch.load(os.path.join(folder, f"rng_rank{rank}.pt"), map_location="cpu",
                     weights_only=True)
    if state["step"] != record["step"]:
        raise ValueError(f"trainer_state.pt is of step {state['step']}, run.json of another")
    _set_rng_state(rng)  # checks it; the run seeds, or sets it again, after the scan
    if state["optimizer"] is None:  # --fsdp: this rank's shard of the optimizer state
        state["shard"] = torch.load(os.path.join(folder, f"optimizer_rank{rank}.pt"),
                                    map_location="cpu", weights_only=True)
    return Checkpoint(folder, record, state, rng)


def find_checkpoint(out, resume, world, rank, device, log):
    """The Checkpoint that --resume continues from, None for a fresh run (whose --out must have
    no checkpoint)."""
    if checkpoints(out) and not resume:
        die(f"{out} already has checkpoints; pass --resume to continue, or a new --out")
    if resume and not checkpoints(out):
        die(f"--resume: no checkpoint in {out}; drop --resume to start fresh")
    return _newest_intact_checkpoint(out, world, rank, device, log) if resume else None


def _newest_intact_checkpoint(out, world, rank, device, log):
    """The newest Checkpoint in out that is complete on every rank.
    Newer ones that are incomplete or not gopd's (a run.json of the wrong shape, a pickle) are
    named and kept aside as step_N.incomplete-K, so the resumed run can write its own; nothing is
    deleted. Skipping is safer than stopping: such a folder cannot be resumed from in any case,
    and moving it aside is what the user would do by hand (editing a run.json gopd cannot trust is
    not a fix)."""
    skipped = []
    for folder in reversed(checkpoints(out)):
        error = None
        try:
            checkpoint = read_checkpoint(folder, world, rank)
        except Exception as e:  # any unreadable part means: not this one
            error = e
        if not _any_rank_failed(error, device):
            barrier()
            if rank == 0:
                for bad in skipped:
                    n = 1
                    while os.path.exists(f"{bad}.incomplete-{n}"):
                        n += 1
                    os.rename(bad, f"{bad}.incomplete-{n}")
            barrier()
            return checkpoint
        why = _first_line(error, 150) if error else "on another rank"
        log(f"gopd: skipping {folder}: incomplete or not gopd's ({why})")
        skipped.append(folder)
    die(f"--resume: no intact checkpoint in {out}; drop --resume to start fresh (nothing was "
        f"deleted)")


def validate_resume_flags(record, args, data_hash, folder, log):
    """Refuse to resume with flags that change what is optimised, unless --resume-override."""
    old, new = record["args"], _run_flags(args, args.rollout_batch)
    differ = [k for k in sorted(set(old) | set(new))
              if k not in RESUMABLE and old.get(k) != new.get(k)]
    changed = [f"--{k.replace('_', '-')} {old.get(k)} (now {new.get(k)})" for k in differ]
    if record["data"] != data_hash:
        changed.append("other training rows (--data)")
    if changed and not args.resume_override:
        die(f"--resume: {folder} was trained with {'; '.join(changed)}; resume with the original "
            f"flags, or add --resume-override to continue with the new ones")
    if changed:
        log(f"gopd: --resume-override: continuing with {'; '.join(changed)}")
    if args.rollout_batch not in (None, old["rollout_batch"]):
        log(f"gopd: --rollout-batch {args.rollout_batch}, not the checkpoint's "
            f"{old['rollout_batch']}: the resumed run samples other responses than an "
            f"uninterrupted one would")


def resume(checkpoint, student, optimizer, scheduler, args, rank, log):
    """Continue from `checkpoint` (the student's weights were loaded from its folder already):
    load_checkpoint, and drop what the logs hold past its step. Returns the step to continue
    from."""
    start = load_checkpoint(checkpoint, student, optimizer, scheduler, args)
    if start > args.steps:
        die(f"--steps {args.steps} is below the step of the checkpoint resumed ({start}); "
            f"pass --steps >= {start}")
    log(f"gopd: resumed from {checkpoint.folder} at step {start}")
    if rank == 0:
        for name in ["metrics.jsonl", "samples.jsonl"]:
            _truncate_log(os.path.join(args.out, name), start)
    return start


def load_checkpoint(checkpoint, student, optimizer, scheduler, args):
    """The mirror of save_checkpoint (the student's weights were loaded from the folder already):
    optimizer, schedule and this rank's random state. The flags' lr and weight decay apply from
    here (the saved ones unless --resume-override changed them). Returns the step to continue
    from."""
    state = checkpoint.state
    if (state["optimizer"] is None) != isinstance(student, FSDPModule):
        how = "with" if state["optimizer"] is None else "without"
        die(f"--resume: {checkpoint.folder} was written {how} --fsdp, and its optimizer state is "
            f"stored that way; resume {how} --fsdp")
    if state["optimizer"] is None:
        _load_sharded_optimizer(optimizer, state["shard"])
    else:
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(checkpoint.rng)
    factor = lr_lambda(args)(scheduler.last_epoch)
    for group in optimizer.param_groups:
        group.update(initial_lr=args.lr, lr=args.lr * factor, weight_decay=args.weight_decay)
    scheduler.base_lrs = [args.lr] * len(optimizer.param_groups)
    return state["step"]


def _truncate_log(path, step):
    """Drop the rows of a JSONL log that a resumed run writes again (those after `step`)."""
    if not os.path.exists(path):
        return
    kept = []
    with open(path) as f:
        for line in f:
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):  # a line cut short by a kill
                pass
    with open(path + ".tmp", "w") as f:
        f.writelines(kept)
    os.replace(path + ".tmp", path)


def lr_lambda(args):
    """Learning-rate multiplier: linear warmup, then constant, linear or cosine decay to 0."""
    def factor(step):
        if step < args.warmup_steps:
            return (step + 1) / args.warmup_steps
        progress = (step - args.warmup_steps) / max(1, args.steps - args.warmup_steps)
        if args.lr_schedule == "linear":
            return 1 - progress
        if args.lr_schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0
    return factor

# -----------------------------------------------------------------------------
# Metrics and evaluation


@torch.no_grad()
def _batch_sums(batch, logp_s, entropy, lam, stop_ids, report_domains):
    """Named sums over one MicroBatch; the step's metrics are ratios of their totals over all
    ranks. Reference terms only when it is scored; per-domain terms for each of report_domains (the
    teachers' domains when there are several), so every rank has every key, whatever its rows."""
    mask, logp_t, logp_r = batch.mask, batch.logp_t, batch.logp_r
    stops = torch.tensor(stop_ids, device=mask.device)
    stopped = (torch.isin(batch.seq[:, -mask.shape[1]:], stops) & mask.bool()).any(1)
    terms = {"kl_teacher": logp_s - logp_t, "entropy": entropy}
    if uses_reference(lam):
        terms.update(implicit_reward=lam * (logp_t - logp_r), kl_ref=logp_s - logp_r,
                     ref_gap=(logp_s - logp_r).abs())
    sums = {name: (value * mask).sum() for name, value in terms.items()}
    sums.update(tokens=mask.sum().float(), responses=mask.new_tensor(len(mask)).float(),
                truncated=(~stopped).sum().float())
    for domain in report_domains:
        in_domain = torch.tensor([(d if d in report_domains else None) == domain
                                  for d in batch.domains], device=mask.device)
        name = domain or "default"
        for term in ["kl_teacher", "implicit_reward"]:
            if term in terms:
                sums[f"{name}/{term}"] = (terms[term] * mask)[in_domain].sum()
        sums[f"{name}/tokens"] = mask[in_domain].sum().float()
        sums[f"{name}/responses"] = in_domain.sum().float()
    return sums


def _reduce_sums(sums):
    """Sum every named total over the ranks in one collective (sorted keys: one order on all)."""
    keys = sorted(sums)
    return dict(zip(keys, all_reduce_sum(torch.stack([sums[k].float() for k in keys]))))


def _step_metrics(sums, batches, lam):
    """The step's metrics from the global totals: per-token means (overall and per domain), and
    the quantiles of the response lengths and of log pi_T - log pi_ref over all ranks."""
    tokens, responses = sums["tokens"], sums["responses"]
    names = ["implicit_reward", "kl_ref", "ref_gap", "kl_teacher", "entropy"]
    metrics = {name: (sums[name] / tokens).item() for name in names if name in sums}
    # what both estimators minimise: at every state (exact) or the kept ones (sampled)
    metrics["kl_target"] = (sums["kl_target"] / sums["kl_target_tokens"]).item()
    lengths = _all_gather_cat(torch.cat([b.mask.sum(1) for b in batches])).float()
    metrics.update(response_len=(tokens / responses).item(),
                   response_len_p90=lengths.quantile(0.9).item(),
                   response_len_max=lengths.max().item(),
                   truncated=(sums["truncated"] / responses).item())
    for domain in [k.split("/")[0] for k in sums if k.endswith("/responses")]:
        per = {k.split("/")[1]: v for k, v in sums.items() if k.startswith(domain + "/")}
        for name in ["kl_teacher", "implicit_reward"]:
            if name in per:
                metrics[f"{domain}/{name}"] = (per[name] / per["tokens"].clamp(min=1)).item()
        metrics[f"{domain}/response_len"] = (per["tokens"] / per["responses"].clamp(min=1)).item()
    if uses_reference(lam):
        # log pi_T - log pi_ref: a spike here is what extrapolation (lam > 1) amplifies first
        ratio = torch.cat([(b.logp_t - b.logp_r)[b.mask.bool()] for b in batches])
        ratio = _all_gather_cat(ratio[::max(1, math.ceil(len(ratio) / 32768))])  # a spread sample
        q = ratio.quantile(torch.tensor([0.01, 0.5, 0.99], device=ratio.device))
        metrics.update(log_ratio_p1=q[0].item(), log_ratio_p50=q[1].item(),
                       log_ratio_p99=q[2].item(), log_ratio_max=ratio.max().item())
    return metrics


def _outcome_idx(rows):
    """Indices of the rows evaluate.check can grade: a math 'answer' or code 'tests'."""
    checkable = []
    for i, row in enumerate(rows):
        try:
            evaluate.validate_row(row)
            checkable.append(i)
        except ValueError:
            pass
    return checkable


def check_outcomes(rows, responses):
    """(correct, checked) counts of evaluate.check over (row, response text) pairs: the outcome
    accuracy the paper plots as training reward."""
    results = evaluate.check_many(rows, responses) if rows else []
    return sum(results), len(results)


def _decoded_responses(batches, rows, idx, tokenizer, skip_special_tokens=True):
    """(row, decoded response) of this rank's rollouts whose dataset index is in the set idx."""
    picked = [(rows[r], b.seq[i, -b.mask.shape[1]:][b.mask[i].bool()])
              for b in batches for i, r in enumerate(b.idx) if r in idx]
    texts = tokenizer.batch_decode([ids for _, ids in picked],
                                   skip_special_tokens=skip_special_tokens)
    return [row for row, _ in picked], texts


def _append_jsonl(path, *records):
    with open(path, "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)


def run_eval(run):
    """avg@n per benchmark of the student now, with evaluate.py, the run's rollout batch of
    sequences a generate call. Each rank evaluates every world-th problem and the counts are
    summed, so no rank idles in a collective while another evaluates alone."""
    args, device, result = run.args, run.device, {}
    for rows in run.eval_sets.values():
        names = sorted({evaluate.benchmark_of(row) for row in rows})
        counts = torch.zeros(len(names), 2, device=device)  # correct samples, samples
        mine = rows[run.rank::run.world]
        records = []
        # every rank gathers, even one with no problem to evaluate; generate as the rollout does
        with gathered(run.student), cast_weights(run.student, compute_dtype(device)):
            if mine:
                _, records = evaluate.evaluate_model(
                    run.student, run.tokenizer, mine, n=args.eval_n,
                    max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                    top_p=args.top_p, batch_size=run.rollout_batch,
                    enable_thinking=args.enable_thinking)
        for r in records:
            counts[names.index(r["benchmark"])] += torch.tensor([float(r["correct"]), 1.0],
                                                               device=device)
        all_reduce_sum(counts)
        result.update({name: (c / n).item() for name, (c, n) in zip(names, counts)})
    return result


def _write_samples(path, step, batches, rows, tokenizer, k=4):
    """A few decoded rollouts of this rank, special tokens shown, to read what the student says."""
    idx = set([i for b in batches for i in b.idx][:k])
    picked, texts = _decoded_responses(batches, rows, idx, tokenizer, skip_special_tokens=False)
    _append_jsonl(path, *[{"step": step, "domain": row.get("domain"), "prompt": row["prompt"],
                          "response": text} for row, text in list(zip(picked, texts))[:k]])


def _start_trackers(args, rollout_batch, start):
    """--report-to: the trackers of this run, by name (rank 0 only; the modules were imported at
    parse time). A resumed TensorBoard log drops what an interrupted run logged after `start`, as
    metrics.jsonl does."""
    trackers = {}
    if "wandb" in args.report_to:
        import wandb
        trackers["wandb"] = wandb.init(name=os.path.basename(os.path.abspath(args.out)),
                                       config=_run_flags(args, rollout_batch))
    if "tensorboard" in args.report_to:
        from torch.utils.tensorboard import SummaryWriter
        trackers["tensorboard"] = SummaryWriter(os.path.join(args.out, "tensorboard"),
                                                purge_step=start + 1 if start else None)
    return trackers


def report(trackers, record):
    """Log one metrics.jsonl record to the trackers: its numbers, evaluations as eval/NAME, at its
    step (non-finite values are None in the record, and left out here)."""
    flat = {f"eval/{k}": v for k, v in record.get("eval", {}).items()}
    flat.update({k: v for k, v in record.items() if k not in ("step", "eval")})
    flat = {k: v for k, v in flat.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if "wandb" in trackers:
        trackers["wandb"].log(flat, step=record["step"])
    if "tensorboard" in trackers:
        for name, value in flat.items():
            trackers["tensorboard"].add_scalar(name, value, record["step"])
        trackers["tensorboard"].flush()  # a killed run keeps what it logged


def _close_trackers(trackers):
    if "wandb" in trackers:
        trackers["wandb"].finish()
    if "tensorboard" in trackers:
        trackers["tensorboard"].close()

# -----------------------------------------------------------------------------
# Training loop


@torch.no_grad()
def _kept_kl(student, kept, frozen, lam, temperature, device, offload):
    """The sampled estimator's kl_target: the exact per-state KL to the target at the states whose
    hidden states were kept, [(mask, sampled tokens, student's hidden states, frozen states)] per
    micro-batch, once the update's backward passes have freed their activations; the student's and
    the frozen models' output layers are gathered for it once (collectives: every rank, one order).
    Returns (the KL summed over the kept response tokens, their number)."""
    total, count = torch.zeros((), device=device), torch.zeros((), device=device)
    with frozen_heads([student, *frozen], device, offload) as heads:
        for mask, targets, hidden, states in kept:
            kl = target_kl(heads[student], hidden, targets, states, heads, lam, temperature)[0]
            total += (kl * mask).sum()
            count += mask.sum()
    return total, count


def update(model, batches, optimizer, scheduler, args, stop_ids, report_domains, step, frozen=()):
    """One optimizer step on the whole batch: the loss of --estimator on every micro-batch
    (gopd_loss on the sampled tokens, or exact_loss over the vocabulary at every state), normalised
    over the global batch, then clipping and AdamW. frozen: the distinct frozen models, in the same
    order on every rank (their output layers give the per-state target, frozen_heads). Returns the
    step's named sums over all ranks (the loss, _batch_sums, and the exact per-state KL to the
    target: all states for exact, the kept ones for sampled) and the gradient norm. A non-finite
    loss or gradient stops before the step."""
    student = getattr(model, "module", model)  # under DDP, the wrapped model
    world = dist.get_world_size() if dist.is_initialized() else 1
    device = batches[0].mask.device
    temperature = args.temperature or 1.0
    exact = args.estimator == "exact"
    student.train()
    if args.loss_agg == "token-mean":
        count = sum(b.mask.sum() for b in batches)
    else:
        count = sum(len(b.mask) for b in batches)
    n_global = all_reduce_sum(torch.tensor(float(count), device=device))
    sums, kept = {}, []
    # exact: the frozen output layers stay gathered through every backward, which recomputes each
    # chunk's target; sampled: they are gathered afterwards, for the metric only
    with frozen_heads(frozen if exact else [], device, args.offload_frozen) as heads:
        for k, b in enumerate(batches):
            # DDP syncs gradients on the last micro-batch only; FSDP reduce-scatters each one,
            # which keeps only gradient shards between micro-batches
            no_sync = isinstance(model, DDP) and k < len(batches) - 1
            n, states, b.states = b.mask.shape[1], b.states, None  # exact: freed after backward
            with (model.no_sync() if no_sync else nullcontext()), autocast(device):
                if exact:
                    hidden, head = response_hidden(model, b.seq, b.attn, n)
                    kl, logp_s, entropy = target_kl(head, hidden, b.seq[:, -n:], states, heads,
                                                    args.lam, temperature)
                    loss = exact_loss(kl, b.mask, n_global, args.loss_agg)
                else:
                    logp_s, entropy, hidden = token_logprobs(
                        model, b.seq, b.attn, n, temperature, entropy=True, keep=states["keep"])
                    loss = gopd_loss(logp_s, b.logp_t, b.logp_r, b.mask, args.lam, n_global,
                                     args.loss_agg)
                    kept.append((b.mask[:, states["keep"]], b.seq[:, -n:][:, states["keep"]],
                                 hidden, states))
            (loss * world).backward()  # DDP and FSDP average gradients over ranks: undo it
            micro = {"loss": loss.detach(),
                     **_batch_sums(b, logp_s.detach(), entropy, args.lam, stop_ids, report_domains)}
            if exact:  # the metric is the loss's own KL, at every state
                micro.update(kl_target=(kl.detach() * b.mask).sum(),
                             kl_target_tokens=b.mask.sum().float())
            for name, value in micro.items():
                sums[name] = sums.get(name, 0) + value
    if not exact:
        with autocast(device):
            sums["kl_target"], sums["kl_target_tokens"] = _kept_kl(
                student, kept, frozen, args.lam, temperature, device, args.offload_frozen)
    grad_norm = torch.nn.utils.clip_grad_norm_(student.parameters(), args.grad_clip or math.inf)
    if hasattr(grad_norm, "full_tensor"):  # FSDP: a DTensor
        grad_norm = grad_norm.full_tensor()
    sums = _reduce_sums(sums)
    if not torch.isfinite(grad_norm) or not torch.isfinite(sums["loss"]):
        die(f"non-finite loss or gradient at step {step + 1} (loss {sums['loss'].item()}, grad "
            f"norm {grad_norm.item()}); nothing was saved for this step, the last checkpoint in "
            f"{args.out} is intact. Lower --lr or check the models' dtypes")
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return sums, grad_norm.item()


@contextmanager
def phase(name, times, device):
    """Time one phase of a step; running out of GPU memory becomes one line with the fixes."""
    start = synced_time(device)
    try:
        yield
    except torch.cuda.OutOfMemoryError:
        die(f"out of GPU memory during {name}; lower --rollout-batch, --micro-batch or "
            f"--max-new-tokens, or add --grad-checkpointing or --fsdp")
    times[f"time_{name}"] = synced_time(device) - start


def due(step, every, first=False, last=False):
    """The one rule of the every-N-steps actions, at 1-based `step`: every N-th step (never for
    N = 0), also step 1 when `first`, and the last step when `last`, whatever N."""
    return last or (every > 0 and (step % every == 0 or (first and step == 1)))


@dataclass
class Run:
    """What the bookkeeping of every step reads: the parts of the run that stay."""
    args: argparse.Namespace
    rank: int
    world: int
    device: torch.device
    log: object  # print on rank 0, nothing elsewhere
    student: torch.nn.Module  # unwrapped (under DDP), sharded in place (under FSDP)
    tokenizer: object
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    rows: list
    eval_sets: dict
    rollout_batch: int
    data_hash: str
    trackers: dict
    results: dict = field(default_factory=dict)  # evaluations "before" and "after" training


def _step_record(step, batches, sums, grad_norm, outcome, lr, times, t0, lam, device):
    """The metrics.jsonl record of a step: the loss, _step_metrics, the outcome accuracy of the
    checked rollouts (outcome: the future of check_outcomes' counts on this rank), timings.
    Non-finite values are None."""
    outcome = all_reduce_sum(torch.tensor(outcome.result(), dtype=torch.float, device=device))
    elapsed = synced_time(device) - t0
    metrics = {"step": step, "loss": sums["loss"].item(), **_step_metrics(sums, batches, lam),
               "grad_norm": grad_norm, "lr": lr, "tokens_per_s": sums["tokens"].item() / elapsed,
               **times, "rollout_useful_fraction": useful_fraction(batches), "time_step": elapsed}
    if outcome[1] > 0:  # correct, checked
        metrics["outcome_accuracy"] = (outcome[0] / outcome[1]).item()
    return {k: v if not isinstance(v, float) or math.isfinite(v) else None
            for k, v in metrics.items()}


def end_step(run, step, batches, sums, grad_norm, outcome, times, t0):
    """The bookkeeping of 1-based `step`: its record, logged to metrics.jsonl and the trackers and
    printed; a few decoded rollouts, the evaluation and the checkpoint when they are due."""
    args, last = run.args, step == run.args.steps
    metrics = _step_record(step, batches, sums, grad_norm, outcome, run.scheduler.get_last_lr()[0],
                          times, t0, args.lam, run.device)
    if step == 1 and uses_reference(args.lam) and args.ref is None and metrics["ref_gap"] > 0.05:
        run.log(f"gopd: warning: at step 1 the student and its reference (the same weights) "
                f"differ by {metrics['ref_gap']:.3f} nats per token, more than bf16 noise: the "
                f"reference term of the advantage is biased by the precision gap (frozen "
                f"bf16 vs float32 master weights)")
    if run.eval_sets and due(step, args.eval_every, last=last):
        metrics["eval"] = run_eval(run)
        if last:
            run.results["after"] = metrics["eval"]
    if run.rank == 0:
        _append_jsonl(os.path.join(args.out, "metrics.jsonl"), metrics)
        report(run.trackers, metrics)
        if due(step, args.log_samples_every, first=True):
            _write_samples(os.path.join(args.out, "samples.jsonl"), step, batches, run.rows,
                          run.tokenizer)
        shown = ["step", "loss", "implicit_reward", "kl_teacher", "kl_target", "entropy",
                 "response_len", "outcome_accuracy", "grad_norm", "eval"]
        tqdm.write(" ".join(f"{k}={metrics[k]:.4g}" if isinstance(metrics[k], float)
                            else f"{k}={metrics[k]}" for k in shown if k in metrics))
    if due(step, args.save_every, last=last):
        record = run_record(args, run.rollout_batch, run.world, step, run.data_hash)
        save_checkpoint(args.out, record, run.student, run.tokenizer, run.optimizer,
                        run.scheduler, run.rank, run.device)


def eval_before(run):
    """The evaluation before training: logged, and metrics.jsonl's record of step 0."""
    run.results["before"] = run_eval(run)
    run.log(f"gopd: before training {run.results['before']}")
    if run.rank == 0:
        record = {"step": 0, "eval": run.results["before"]}
        _append_jsonl(os.path.join(run.args.out, "metrics.jsonl"), record)
        report(run.trackers, record)


def eval_after(run):
    """The evaluation after training (the last step's, or a new one when resumed after it): the
    table of both, and OUT/eval.json."""
    if "after" not in run.results:  # resumed after the last step
        run.results["after"] = run_eval(run)
    if run.rank == 0:
        percent = {when: {k: 100 * v for k, v in accs.items()}
                   for when, accs in run.results.items()}
        print(evaluate.format_table(percent, first="accuracy %"))
        with open(os.path.join(run.args.out, "eval.json"), "w") as f:
            json.dump(run.results, f, indent=2)


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt("SIGTERM")  # schedulers send it before killing: stop as for Ctrl-C


def main(argv=None):
    args = parse_args(argv)
    rank, world, device = setup_distributed(args.dist_timeout, args.fsdp)
    progress = {"step": None}  # where a Ctrl-C or SIGTERM found the run
    previous_handler = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        with out_lock(args.out, rank, device):
            train(args, rank, world, device, progress)
    except KeyboardInterrupt as e:
        by = e.args[0] if e.args else "Ctrl-C"
        where = "before training"
        if progress["step"]:
            where = f"at step {progress['step']} of {args.steps}"
        last = checkpoints(args.out)
        if rank == 0:
            print(f"gopd: stopped by {by} {where}; the last checkpoint is "
                  f"{last[-1] if last else 'none'}; continue with the same command plus --resume",
                  file=sys.stderr)
        raise SystemExit(143 if by == "SIGTERM" else 130)
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        if dist.is_initialized():
            dist.destroy_process_group()


def train(args, rank, world, device, progress):
    log = print if rank == 0 else (lambda *a, **k: None)

    # Setup: the checkpoint to resume (--out was checked and locked by main), the data (cheap, and
    # where most mistakes show), then the models and the optimizer
    if args.prompts_per_step % world:
        die(f"--prompts-per-step {args.prompts_per_step} is not divisible by {world} ranks")
    checkpoint = find_checkpoint(args.out, args.resume, world, rank, device, log)  # None: fresh
    random.seed(args.seed + rank)
    np.random.seed(args.seed + rank)
    torch.manual_seed(args.seed + rank)
    rows, tokenizer, prompts, own_prompts, eval_sets = load_data(args, log)
    data_hash = _hash_rows(rows)
    if checkpoint:
        validate_resume_flags(checkpoint.record, args, data_hash, checkpoint.folder, log)
    student, teachers, ref = load_models(args, device, checkpoint.folder if checkpoint else None)
    optimizer = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(args))
    start = 0
    if checkpoint:  # the student's weights are the checkpoint's already
        start = resume(checkpoint, student, optimizer, scheduler, args, rank, log)
        checkpoint = checkpoint._replace(state=None)  # frees its copy of the optimizer state
    model = DDP(student) if dist.is_initialized() and not args.fsdp else student  # FSDP: in place
    rollout_batch = rollout_batch_for(args, checkpoint, student, optimizer, prompts, world, device,
                                      log)
    stop_ids = evaluate.stop_ids(tokenizer, student)
    sampling = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                    top_p=args.top_p, stop_ids=stop_ids, pad_id=tokenizer.pad_token_id)
    teacher_prompts = {d: own_prompts.get(path) for d, path in args.teachers.items()}
    ref_prompts = {None: own_prompts.get(reference_path(args))}
    report_domains = list(teachers) if len(teachers) > 1 else []  # several teachers: per domain
    frozen = list(dict.fromkeys([*teachers.values(), *([ref] if ref is not None else [])]))
    checkable = set(_outcome_idx(rows))
    checker = ThreadPoolExecutor(1)  # checks rollouts while the step goes on
    run = Run(args, rank, world, device, log, student, tokenizer, optimizer, scheduler, rows,
              eval_sets, rollout_batch, data_hash,
              _start_trackers(args, rollout_batch, start) if rank == 0 else {})
    if eval_sets and start == 0:
        eval_before(run)

    try:
        for step in tqdm(range(start, args.steps), disable=rank != 0, desc="gopd", initial=start,
                         total=args.steps):
            progress["step"] = step + 1
            times, t0 = {}, synced_time(device)
            idx = step_indices(len(rows), step, args.prompts_per_step, args.seed)[rank::world]
            idx = [i for i in idx for _ in range(args.samples_per_prompt)]

            # 1. Rollout: the student samples, unwrapped (or gathered, under FSDP), since no
            # collective may run inside generate; from its weights in bf16 on GPU
            with phase("generate", times, device), autocast(device), gathered(student), \
                    cast_weights(student, compute_dtype(device)):
                student.eval()
                batches = rollout_batches(student, [prompts[i] for i in idx], idx,
                                          [rows[i].get("domain") for i in idx], sampling,
                                          rollout_batch, args.micro_batch)
            to_check = checkable if due(step + 1, args.grade_every, first=True) else set()
            outcome = checker.submit(check_outcomes,
                                     *_decoded_responses(batches, rows, to_check, tokenizer))

            # 2. Scoring: every sampled token by its row's teacher, and by the reference
            with phase("score", times, device):
                score_batches(batches, teachers, ref, teacher_prompts, ref_prompts,
                              args.temperature or 1.0, tokenizer.pad_token_id, device,
                              args.offload_frozen, kept_positions(args.estimator, step))

            # 3. Update: one optimizer step on the loss of --estimator over the whole batch
            with phase("update", times, device):
                sums, grad_norm = update(model, batches, optimizer, scheduler, args, stop_ids,
                                         report_domains, step, frozen)

            # Bookkeeping: metrics, samples, evaluation, checkpoint
            end_step(run, step + 1, batches, sums, grad_norm, outcome, times, t0)
    finally:
        checker.shutdown(wait=False, cancel_futures=True)
        _close_trackers(run.trackers)
    if eval_sets:
        eval_after(run)


if __name__ == "__main__":
    main()
