"""Memory plan: the per-GPU memory of every part of a gopd step, for each train_multi_gpu.sh preset on
8 x 80 GB GPUs, under DDP and under --fsdp, each with and without --offload-frozen; the mode each
preset uses, and whether it fits. The same arithmetic is checked against the measured peaks of real
gopd runs on small configurations (CPU peak RSS here; tests/gpu_probe.py compares it with
torch.cuda.max_memory_allocated on a GPU).

    python tests/memory.py                  # the table, then the check against measured peaks (9 min)
    python tests/memory.py --no-measure     # the table only
    python tests/memory.py --host           # only the host check: a 2-rank --fsdp load of Qwen3-0.6B's shape
    python tests/memory.py --json           # last line: {"presets": {name: {"mode", "per_gpu_gb", "fits",
                                            #   "host_gb_per_node", "host_fits"}}, "worst_ratio", "host_ratio"}

Host memory (CPU RAM) per rank and per node of 8 ranks is planned too (host_plan), and checked against a
measured load (measure_host).

Not collected by pytest; tests/test_launch.py checks that every preset fits in the mode it uses.

The parts, per GPU (N = student parameters, S = ranks sharing them: 8 under --fsdp, else 1):
- student weights, float32: 4N/S; gradients, float32: 4N/S, plus DDP's bucket copy of them (4N);
  AdamW's two moments: 8N/S.
- frozen models (teachers, reference when lam != 1), bf16: 2 bytes a parameter, /S under --fsdp. With
  --offload-frozen they sit in CPU memory; only the scoring phase holds one on the GPU (the whole model
  under DDP; under FSDP the units being gathered: the root plus two layers).
- rollout copy: generation runs on a bf16 copy of the student (FSDP gathers it; under DDP
  gopd.cast_weights makes it), 2N.
- KV cache, per sequence of prompt + response: gopd.rollout_budget (the same function gopd uses to
  pick --rollout-batch: KV of every layer, the prefill's activations, the sampling buffers).
- activations of one micro-batch of T tokens in the update, with gradient checkpointing: every
  layer's input (the checkpoints) and one layer's recomputed forward, the output layer's chunks, the
  causal mask, and under FSDP the gathered root and two layers with their gradients and the float32
  reduce-scatter buffer (under DDP on GPU: autocast's bf16 weight copies, kept for the backward).
- the estimator's kept hidden states and gathered output layers (estimator_memory).
The phases are rollout (weights, optimizer, frozen, rollout copy, KV), scoring (weights, optimizer,
frozen, a frozen model's forward, kept states), update (weights, gradients, optimizer, frozen,
activations, kept states; exact: gathered output layers), metric (sampled: the gathered output layers
after the backward passes) and optimizer step (AdamW's temporary square roots); the peak is the largest. "per GPU" is that peak with
the KV cache of one sequence; the rollout column is how many sequences gopd's budget then fits in the
rest (of 80 GiB less 3 GiB for the CUDA context, NCCL buffers and fragmentation). On CPU the same
arithmetic runs with float32 everywhere and no autocast copy.
"""

import argparse
import functools
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import evaluate  # noqa: E402
import gopd  # noqa: E402

GIB = 2**30
GPU_GIB, RESERVED_GIB, N_GPUS = 80, 3, 8
# Host memory: NODE_GB, a node's RAM (GB: 10^9 bytes); PROCESS_GIB, an allowance for one rank's process
# (torch, transformers, the CUDA runtime's host side; a CPU rank measures under 1 GiB here, the GPU check
# measures a real one: tests/gpu_check.sh).
NODE_GB, PROCESS_GIB = 512, 4

# Published configurations (config.json on the hub; Qwen3-4B's fine-tunes share its shape).
QWEN3_4B = dict(model_type="qwen3", hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=151936,
                tie_word_embeddings=True)
SHAPES = {
    "Qwen/Qwen3-1.7B": dict(model_type="qwen3", hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                            num_attention_heads=16, num_key_value_heads=8, head_dim=128, vocab_size=151936,
                            tie_word_embeddings=True),
    "Qwen/Qwen3-4B": QWEN3_4B,
    "Qwen/Qwen3-0.6B": dict(model_type="qwen3", hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                            num_attention_heads=16, num_key_value_heads=8, head_dim=128, vocab_size=151936,
                            tie_word_embeddings=True),
    "Keven16/Qwen3-4B-Non-Thinking-RL-Math-Step500": QWEN3_4B,
    "Keven16/Qwen3-4B-Non-Thinking-RL-Code-Step300": QWEN3_4B,
    "Qwen/Qwen3-30B-A3B-Instruct-2507": dict(model_type="qwen3_moe", hidden_size=2048, intermediate_size=6144,
                                             moe_intermediate_size=768, num_experts=128, num_experts_per_tok=8,
                                             num_hidden_layers=48, num_attention_heads=32, num_key_value_heads=4,
                                             head_dim=128, vocab_size=151936, tie_word_embeddings=False),
}
MODES = ["ddp", "ddp+offload", "fsdp", "fsdp+offload"]


def config_of(shape):
    from transformers import AutoConfig
    shape = dict(shape)
    return AutoConfig.for_model(shape.pop("model_type"), **shape)


def counts(config):
    """{'total', 'root' (embeddings, final norm, output layer), 'layer' (the largest decoder layer),
    'largest' (one tensor)}: parameter counts of a model built on the meta device (no memory, no
    download)."""
    return _counts(config.to_json_string())


@functools.lru_cache
def _counts(config_json):
    from transformers import AutoConfig, AutoModelForCausalLM
    shape = json.loads(config_json)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(shape.pop("model_type"), **shape))
    total = sum(p.numel() for p in model.parameters())
    layer = max(sum(p.numel() for p in block.parameters()) for block in model.model.layers)
    return {"total": total, "root": total - sum(p.numel() for p in model.model.layers.parameters()), "layer": layer,
            "largest": max(p.numel() for p in model.parameters())}


@functools.lru_cache
def _tensors(config_json):
    """[(name, shape)] of every distinct tensor of the model (a tied output layer once)."""
    from transformers import AutoConfig, AutoModelForCausalLM
    shape = json.loads(config_json)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(shape.pop("model_type"), **shape))
    return [(name, tuple(p.shape)) for name, p in model.named_parameters()]


def activations(config, tokens, seq_len, micro_batch, compute_bytes, residual_bytes, checkpointing):
    """Bytes of one micro-batch's activations in the update (the student's forward and backward)."""
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    q = config.num_attention_heads * config.head_dim
    kv = config.num_key_value_heads * config.head_dim
    # one layer's saved forward tensors: norms, q/k/v with their norms and rotations, attention output
    # (a flash kernel: no T x T scores), projections, the MLP's gate, up, activation and product; its
    # backward frees them as it makes their gradients
    layer = tokens * (6 * h + 4 * q + 4 * kv + 4 * i) * compute_bytes
    kept = layers * tokens * h * residual_bytes if checkpointing else layers * layer
    head = 3 * 128 * config.vocab_size * 4 + 2 * tokens * h * residual_bytes  # float32 chunk logits; final states
    mask = micro_batch * seq_len ** 2  # the boolean causal mask of a padded micro-batch
    return kept + layer + head + mask


def estimator_memory(student, frozen, mode, rows, new_tokens, estimator, on_gpu=True, kept_hidden=None):
    """Per-rank bytes that --estimator adds to a step (gopd.kept_positions, target_kl, frozen_heads,
    kept_kl):
    - kept states: the frozen models' final hidden states at the kept response positions of all the
      rank's rows of the step, from scoring to the update: rows x new_tokens x kept_hidden x 2 bytes
      (bf16), kept_hidden summing the hidden sizes of the models that score a row (its teacher, and
      the reference at lam != 1; default: one frozen model's); every position for exact (each
      micro-batch's freed after its backward), every gopd.KL_STRIDE-th for sampled (its metric),
      with the student's own there.
    - gathered output layers: under --fsdp each frozen model's root unit (embeddings, final norm,
      output layer), for sampled's metric the student's too; DDP with --offload-frozen: a copy of
      each frozen output layer; resident DDP models: nothing new. Exact holds them through the
      update's backward passes; sampled only after them, for its metric (a phase of its own).
    - chunk temporaries: the teacher's and reference's logits, the target and the KL's terms, about
      7 float32 [128, vocab] tensors besides the student's chunk logits (in `activations`)."""
    fsdp, offload = mode.startswith("fsdp"), mode.endswith("offload")
    fb, cb = (2, 2) if on_gpu else (4, 4)
    kept_hidden = kept_hidden or max(c.hidden_size for c in frozen)
    kept = rows * new_tokens * kept_hidden * fb
    if estimator == "sampled":
        kept = kept / gopd.KL_STRIDE + rows * new_tokens * student.hidden_size * cb / gopd.KL_STRIDE
    if fsdp:
        heads = sum(fb * counts(c)["root"] for c in frozen)
        heads += cb * counts(student)["root"] if estimator == "sampled" else 0
    else:
        heads = sum(fb * c.vocab_size * c.hidden_size for c in frozen) if offload else 0
    return {"kept_states": kept, "gathered_heads": heads, "chunks": 7 * 128 * student.vocab_size * 4}


def plan(student, frozen, mode, world, rows, prompt_len, new_tokens, micro_batch, checkpointing, on_gpu=True,
         memory_gib=GPU_GIB - RESERVED_GIB, rollout_batch=None, estimator="sampled", kept_hidden=None):
    """Per-rank bytes of each part and each phase of one step. student: a transformers config; frozen:
    the configs of the distinct frozen models. rollout_batch: the KV cache's sequences (default: what
    gopd's budget picks in memory_gib). estimator, kept_hidden: see estimator_memory."""
    fsdp, offload = mode.startswith("fsdp"), mode.endswith("offload")
    s = world if fsdp else 1
    n = counts(student)
    frozen_n = [counts(c) for c in frozen]
    cb = 2 if on_gpu else 4  # compute dtype: bf16 on GPU
    fb = cb  # frozen models: bf16 on GPU, float32 on CPU
    residual = 2 if (fsdp and on_gpu) else 4  # DDP's autocast keeps the residual stream in float32
    p = {"weights": 4 * n["total"] / s, "grads": 4 * n["total"] / s + (0 if fsdp else 4 * n["total"]),
         "optimizer": 8 * n["total"] / s,
         "frozen": 0 if offload else sum(fb * f["total"] for f in frozen_n) / s,
         "rollout_copy": cb * n["total"] if (fsdp or on_gpu) else 0}
    if fsdp:
        gathered = lambda c: c["root"] + 2 * c["layer"]  # noqa: E731  the units FSDP holds gathered at once
        scoring = max(2 * fb * gathered(f) for f in frozen_n) if frozen_n else 0  # unit and all-gather buffer
        update_extra = (2 * cb + 4) * gathered(n)  # gathered units, their gradients, float32 reduce-scatter input
    else:
        scoring = max(fb * f["total"] for f in frozen_n) if (offload and frozen_n) else 0
        update_extra = cb * n["total"] if on_gpu else 0  # autocast's bf16 weight copies, kept for the backward
    tokens = micro_batch * (prompt_len + new_tokens)
    p["activations"] = activations(student, tokens, prompt_len + new_tokens, micro_batch, cb, residual,
                                   checkpointing) + update_extra
    p["kv_per_seq"] = gopd.rollout_budget(student, prompt_len, new_tokens, 1, cb)[1]
    states = p["weights"] + p["optimizer"] + p["frozen"] + (0 if fsdp else 4 * n["total"])  # DDP's bucket stays
    rollout = states + p["rollout_copy"]
    if rollout_batch is None:
        rollout_batch = min(rows, gopd.rollout_budget(student, prompt_len, new_tokens,
                                                      memory_gib * GIB - rollout, cb)[0])
    p["rollout_batch"] = rollout_batch
    score_acts = tokens * (4 * frozen[0].hidden_size) * fb if frozen else 0
    grads = p["grads"] - (0 if fsdp else 4 * n["total"])  # the bucket is in `states`
    # AdamW's denominator sqrt(v) / c + eps: for every tensor at once on GPU (foreach, in place after the
    # square root), one tensor at a time on CPU (two temporaries)
    step_temp = (4 * n["total"] if on_gpu else 8 * n["largest"]) / s
    p.update(estimator_memory(student, frozen, mode, rows, new_tokens, estimator, on_gpu, kept_hidden))
    extra = p["gathered_heads"] + p["chunks"]  # through the update (exact), or after it (sampled's metric)
    p["phases"] = {"rollout": rollout + rollout_batch * p["kv_per_seq"],
                   "score": states + scoring + score_acts + p["kept_states"],
                   "update": states + grads + p["activations"] + p["kept_states"]
                   + (extra if estimator == "exact" else 0),
                   "metric": states + grads + p["kept_states"] + (extra if estimator == "sampled" else 0),
                   "optimizer step": states + grads + step_temp}
    p["peak"] = max(p["phases"].values())
    p["peak_one_seq"] = max(p["phases"]["score"], p["phases"]["update"], p["phases"]["metric"],
                            rollout + p["kv_per_seq"])
    return p



def host_plan(student, frozen, mode, world, on_gpu=True, checkpoint_bytes=2, process=PROCESS_GIB * GIB):
    """Host (CPU) memory of one rank, in bytes, and of a node of `world` ranks. gopd builds each model
    on the meta device, shards it, and fills each rank's part from the safetensors files
    (gopd.load_model), so a rank holds in host memory:
    - process: the Python process (torch, transformers, the CUDA runtime's host side);
    - resident: what lives in CPU memory: on a GPU, the frozen models under --offload-frozen (bf16;
      /S under --fsdp); on CPU, every model (float32);
    - load: the largest tensor in flight while loading: this rank's rows of it in the checkpoint's
      dtype, twice (the copy read, and the file's pages mapped while it is read); a fused MoE
      layer's experts are read one by one, concatenated and stacked: three times;
    - save, at each checkpoint: under --fsdp every rank writes its shard of AdamW's state through a
      CPU copy (optimizer_rankR.pt, plain tensors; measured here: 4 bytes a parameter over S ranks at
      once; under DDP rank 0 writes it alone, a tensor at a time), and rank 0 holds the whole float32
      student in CPU memory for save_pretrained (4 bytes a parameter).
    The node's peak is the larger of all ranks loading at once and all ranks saving."""
    fsdp, offload = mode.startswith("fsdp"), mode.endswith("offload")
    s = world if fsdp else 1
    n = counts(student)["total"]
    frozen_bytes = 2 if on_gpu else 4
    resident = 0 if on_gpu else 4 * n / s
    if offload or not on_gpu:
        resident += sum(frozen_bytes * counts(f)["total"] for f in frozen) / s
    load = 0
    for config in [student, *frozen]:
        for name, shape in _tensors(config.to_json_string()):
            rows = -(-shape[0] // s) * (math.prod(shape[1:]) if len(shape) > 1 else 1)
            fused = gopd.FUSED_EXPERTS.fullmatch(name) and config.model_type.endswith("moe")
            load = max(load, (3 if fused else 2) * rows * checkpoint_bytes)
    p = {"process": process, "resident": resident, "load": load, "save": 4 * n / s if fsdp else 0,
         "gathered": 4 * n}
    p["rank"] = process + resident + load
    p["node"] = max(world * p["rank"], world * (process + resident + p["save"]) + p["gathered"])
    return p

# -----------------------------------------------------------------------------
# The presets


def preset_args(name):
    """gopd's parsed arguments for a train_multi_gpu.sh preset (its dry run, with the hub ids)."""
    env = {k: v for k, v in os.environ.items() if k not in ("STUDENT_4B", "STUDENT_1_7B", "MATH_TEACHER",
                                                             "CODE_TEACHER", "STRONG_TEACHER", "DATA", "NPROC_PER_NODE")}
    env["NPROC_PER_NODE"] = str(N_GPUS)
    out = subprocess.run(["bash", os.path.join(ROOT, "train_multi_gpu.sh"), "--dry-run", name], capture_output=True,
                         text=True, env=env, check=True).stdout
    argv = shlex.split(out)
    return gopd.parse_args(argv[next(i for i, a in enumerate(argv) if a.endswith("gopd.py")) + 1:])


def presets():
    help_text = subprocess.run(["bash", os.path.join(ROOT, "train_multi_gpu.sh"), "--help"], capture_output=True,
                               text=True, check=True).stdout
    block = help_text.split("Presets")[1].split("Environment")[0]
    return [line.split()[0] for line in block.splitlines() if line.startswith("  ") and not line.startswith("   ")]


def preset_plan(name, estimator=None):
    """{mode: plan} for a preset on 8 GPUs (with its --estimator, or the one given), and the mode it
    uses."""
    args = preset_args(name)
    paths = [*args.teachers.values(), *([args.ref or args.student] if args.lam != 1 else [])]
    frozen = [config_of(SHAPES[path]) for path in dict.fromkeys(paths)]
    student = config_of(SHAPES[args.student])
    rows = args.prompts_per_step // N_GPUS * args.samples_per_prompt
    kept_hidden = max(config_of(SHAPES[p]).hidden_size for p in args.teachers.values())
    if args.lam != 1:
        kept_hidden += config_of(SHAPES[args.ref or args.student]).hidden_size
    plans = {mode: plan(student, frozen, mode, N_GPUS, rows, args.max_prompt_len, args.max_new_tokens,
                        args.micro_batch, args.grad_checkpointing, estimator=estimator or args.estimator,
                        kept_hidden=kept_hidden) for mode in MODES}
    for mode, p in plans.items():
        p["host"] = host_plan(student, frozen, mode, N_GPUS)
    used = ("fsdp" if args.fsdp else "ddp") + ("+offload" if args.offload_frozen else "")
    return plans, used


def fits(p):
    return p["peak_one_seq"] <= (GPU_GIB - RESERVED_GIB) * GIB


def host_fits(p):
    return p["host"]["node"] <= NODE_GB * 10**9

# -----------------------------------------------------------------------------
# Measured peaks: gopd runs on small models built here, 2 ranks on CPU, peak RSS of each rank


SMALL = {  # name: model shape, teachers, gopd flags
    "A: 42M tied, 1 teacher, lam 1": (
        dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4,
             head_dim=64, tie_word_embeddings=True), 1, ["--lam", "1", "--max-new-tokens", "48", "--micro-batch", "2"]),
    "B: 20M untied, 2 teachers + reference, lam 1.25, long responses": (
        dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
             head_dim=64, tie_word_embeddings=False), 2, ["--lam", "1.25", "--max-new-tokens", "384", "--micro-batch", "4"]),
    "C: B with --estimator exact": (
        dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
             head_dim=64, tie_word_embeddings=False), 2,
        ["--lam", "1.25", "--max-new-tokens", "384", "--micro-batch", "4", "--estimator", "exact"]),
}
VOCAB, PROMPTS, PROMPT_WORDS = 32768, 8, 24
# The same run with models of 70k parameters: what the process itself grows by (Python objects, the
# autograd engine, gloo's buffers, the allocator's arenas), which a GPU's max_memory_allocated does not see.
NULL_SHAPE, NULL_VOCAB = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              num_key_value_heads=1, head_dim=8), 4096


def build_small(root, shape, n_teachers, vocab):
    """Student and teachers of one shape with bench.py's byte-level tokenizer, and prompts."""
    from bench import make_tokenizer
    from transformers import Qwen3Config, Qwen3ForCausalLM
    from transformers.utils import logging
    logging.disable_progress_bar()
    tok = make_tokenizer(vocab)
    paths = {}
    for i, name in enumerate(["student"] + [f"teacher{k}" for k in range(n_teachers)]):
        torch.manual_seed(i)
        Qwen3ForCausalLM(Qwen3Config(vocab_size=vocab, max_position_embeddings=4096, bos_token_id=None,
                                     eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                     **shape)).save_pretrained(os.path.join(root, name))
        tok.save_pretrained(os.path.join(root, name))
        paths[name] = os.path.join(root, name)
    g = torch.Generator().manual_seed(0)
    words = [w[1:] for w in tok.get_vocab() if len(w) == 4 and w[0] == "\u0120"]
    rows = [{"prompt": " ".join(words[j] for j in torch.randint(len(words), (PROMPT_WORDS,), generator=g).tolist()),
             "domain": f"d{i % n_teachers}"} for i in range(PROMPTS)]
    paths["data"] = os.path.join(root, "data.jsonl")
    with open(paths["data"], "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return paths


def proc_status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))


def measure_rank(argv, out_file):
    """Inside torchrun: run gopd.main(argv) and write this rank's peak RSS during the steps above its
    RSS before the models load. Set-up transients (a whole model before sharding, DDP's first broadcast)
    and the final checkpoint's gather (CPU memory on a GPU machine) are left out."""
    record = {}
    load_models, rollout_batches, save_checkpoint = gopd.load_models, gopd.rollout_batches, gopd.save_checkpoint

    def measured_load(*args, **kwargs):
        record["base"] = proc_status("VmRSS")
        return load_models(*args, **kwargs)

    def measured_rollout(*args, **kwargs):
        if "started" not in record:
            record["started"] = True
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # the high-water mark starts again from the resident set now
        return rollout_batches(*args, **kwargs)

    def measured_save(*args, **kwargs):
        record.setdefault("peak", proc_status("VmHWM"))
        return save_checkpoint(*args, **kwargs)

    gopd.load_models, gopd.rollout_batches, gopd.save_checkpoint = measured_load, measured_rollout, measured_save
    gopd.main(argv)
    record["measured"] = record["peak"] - record["base"]
    with open(f"{out_file}.rank{os.environ['RANK']}", "w") as f:
        json.dump(record, f)


def prompt_tokens(paths):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(paths["student"])
    rows = [json.loads(line) for line in open(paths["data"])]
    return max(len(evaluate.prompt_ids(tok, r["prompt"])) for r in rows)


def measured_run(root, shape, vocab, n_teachers, flags, mode):
    """Both ranks' peaks (bytes) of a 2-rank gopd run on CPU, and the prompt length in tokens."""
    paths = build_small(root, shape, n_teachers, vocab)
    out = os.path.join(root, f"out_{mode}")
    argv = ["--student", paths["student"], "--data", paths["data"], "--prompts-per-step", str(PROMPTS),
            "--samples-per-prompt", "1", "--rollout-batch", "4", "--steps", "2", "--lr", "1e-5", "--grad-checkpointing",
            "--log-samples-every", "0", "--out", out, *flags, *(["--fsdp"] if mode == "fsdp" else []),
            *[x for k in range(n_teachers) for x in ("--teacher", f"d{k}={paths[f'teacher{k}']}")]]
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="",
               MALLOC_MMAP_THRESHOLD_="65536")  # big blocks from mmap: freed memory leaves the RSS at once
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           os.path.abspath(__file__), "--measure-rank", json.dumps(argv), out]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if run.returncode:
        sys.exit(f"memory.py: the measured run failed:\n{run.stdout[-2000:]}{run.stderr[-3000:]}")
    return [json.load(open(f"{out}.rank{rank}"))["measured"] for rank in range(2)], prompt_tokens(paths)


def measure(say):
    """[(config, mode, measured, process growth, predicted)] in bytes, the worst rank of each run."""
    results = []
    with tempfile.TemporaryDirectory(prefix="gopd_memory_") as root:
        for name, (shape, n_teachers, flags) in SMALL.items():
            student = config_of(dict(model_type="qwen3", vocab_size=VOCAB, **shape))
            lam = float(flags[flags.index("--lam") + 1])
            frozen = [student] * (n_teachers + (lam != 1))  # distinct models of one shape
            new_tokens, micro = (int(flags[flags.index(f) + 1]) for f in ["--max-new-tokens", "--micro-batch"])
            for mode in ["ddp", "fsdp"]:
                peaks, prompt_len = measured_run(os.path.join(root, f"{name[0]}_{mode}"), shape, VOCAB, n_teachers,
                                                 flags, mode)
                growth, _ = measured_run(os.path.join(root, f"{name[0]}_{mode}_null"), NULL_SHAPE, NULL_VOCAB,
                                         n_teachers, flags, mode)
                estimator = flags[flags.index("--estimator") + 1] if "--estimator" in flags else "sampled"
                predicted = plan(student, frozen, mode, 2, 4, prompt_len, new_tokens, micro, True, on_gpu=False,
                                 rollout_batch=4, estimator=estimator,
                                 kept_hidden=student.hidden_size * (1 + (lam != 1)))["peak"]
                results.append((name, mode, max(peaks), max(growth), predicted))
                say(f"  {name:62} {mode:5} measured {max(peaks) / 2**20:5.0f} MiB, predicted {predicted / 2**20:5.0f}"
                    f" MiB: ratio {max(peaks) / predicted:.2f} (process growth, no tensors: {max(growth) / 2**20:.0f} MiB)")
    return results

# -----------------------------------------------------------------------------
# Measured host memory: gopd loads a model of Qwen3-0.6B's shape as student and teacher, 2 --fsdp ranks on CPU


def build_host_model(root, shape):
    """A random model of `shape`, saved in bf16 as the hub's are, with a byte-level tokenizer, and one prompt."""
    from bench import make_tokenizer
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging
    logging.disable_progress_bar()
    shape = dict(shape)
    tok = make_tokenizer(shape["vocab_size"])
    config = AutoConfig.for_model(shape.pop("model_type"), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                  bos_token_id=None, max_position_embeddings=4096, **shape)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).save_pretrained(os.path.join(root, "model"))
    tok.save_pretrained(os.path.join(root, "model"))
    with open(os.path.join(root, "data.jsonl"), "w") as f:
        f.write(json.dumps({"prompt": "hello"}) + "\n")


def measure_host_rank(argv, out_file):
    """Inside torchrun: gopd's own set-up and model loading (which logs its peak host RSS line), then a
    checkpoint save; this rank's RSS before loading, its peak (VmHWM) after, the bytes of its shards, and
    its peak above its RSS during the save (rank 0 gathers the whole student)."""
    args = gopd.parse_args(argv)
    rank, world, device = gopd.setup_distributed(args.dist_timeout, args.fsdp)
    record = {"base": proc_status("VmRSS")}
    student, teachers, ref = gopd.load_models(args, device)
    record["load_peak"] = proc_status("VmHWM")
    models = dict.fromkeys([student, *teachers.values(), *([ref] if ref is not None else [])])
    record["shards"] = sum((t.to_local() if hasattr(t, "to_local") else t).nbytes
                           for m in models for t in [*m.parameters(), *m.buffers()])
    tokenizer = gopd.load_tokenizer(args.student)
    optimizer = torch.optim.AdamW(student.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, gopd.lr_lambda(args))
    for p in student.parameters():  # AdamW's state exists, as at any checkpoint after a step
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the high-water mark starts again from the resident set now
    before = proc_status("VmRSS")
    gopd.save_checkpoint(args.out, gopd.run_record(args, args.rollout_batch, world, 1, ""), student, tokenizer, optimizer,
                         scheduler, rank, device)
    record["save"] = proc_status("VmHWM") - before
    with open(f"{out_file}.rank{rank}", "w") as f:
        json.dump(record, f)
    torch.distributed.destroy_process_group()


def host_run(root, shape):
    """Both ranks' records of a 2-rank --fsdp load (student and teacher: the same folder) and save, and the
    line gopd logged."""
    build_host_model(root, shape)
    model, out = os.path.join(root, "model"), os.path.join(root, "out")
    argv = ["--student", model, "--teacher", model, "--data", os.path.join(root, "data.jsonl"), "--lam", "1",
            "--fsdp", "--prompts-per-step", "2", "--out", out]
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", MALLOC_MMAP_THRESHOLD_="65536")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           os.path.abspath(__file__), "--measure-host-rank", json.dumps(argv), out]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if run.returncode:
        sys.exit(f"memory.py: the measured load failed:\n{run.stdout[-2000:]}{run.stderr[-3000:]}")
    line = next(x for x in run.stdout.splitlines() if x.startswith("gopd: models loaded"))
    return [json.load(open(f"{out}.rank{rank}")) for rank in range(2)], line


def measure_host(say):
    """The host plan against a measured load of Qwen3-0.6B's shape: {measured, predicted, ...} in bytes."""
    shape = SHAPES["Qwen/Qwen3-0.6B"]
    config = config_of(shape)
    with tempfile.TemporaryDirectory(prefix="gopd_host_") as root:
        null, _ = host_run(os.path.join(root, "null"), dict(shape, **NULL_SHAPE, vocab_size=NULL_VOCAB))
        ranks, line = host_run(os.path.join(root, "qwen3_0.6b"), shape)
    process = max(r["load_peak"] for r in null)
    q = host_plan(config, [config], "fsdp", 2, on_gpu=False, process=process)
    worst = max(range(2), key=lambda r: ranks[r]["load_peak"])
    r = ranks[worst]
    n = counts(config)["total"]
    saves = [r["save"] for r in ranks]
    save_predicted = [q["save"] + q["gathered"], q["save"]]
    result = {"measured": r["load_peak"], "predicted": q["rank"], "process": process, "shards": r["shards"],
              "student_fp32": 4 * n, "save": saves, "save_predicted": save_predicted, "line": line}
    say(f"\nHost memory, measured: 2 ranks --fsdp on CPU load a {n / 1e9:.2f}B-parameter model of Qwen3-0.6B's shape "
        f"(bf16 file) as float32 student and teacher; the float32 student is {4 * n / GIB:.2f} GiB.\n  {line}\n"
        f"  rank {worst}: peak {r['load_peak'] / GIB:.2f} GiB = the process {process / GIB:.2f} (the same load of "
        f"70k-parameter models) + its shards {r['shards'] / GIB:.2f} (on a GPU: GPU memory) + the rest "
        f"{(r['load_peak'] - process - r['shards']) / GIB:.2f}; predicted {q['rank'] / GIB:.2f} GiB (load "
        f"{q['load'] / GIB:.2f}): ratio {r['load_peak'] / q['rank']:.2f}"
        + "".join(f"\n  save, rank {k}: {saves[k] / GIB:.2f} GiB above its resident set; predicted "
                  f"{save_predicted[k] / GIB:.2f}: ratio {saves[k] / save_predicted[k]:.2f}" for k in range(2)))
    return result

# -----------------------------------------------------------------------------


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", action="store_true", help="print the summary as JSON on the last line")
    p.add_argument("--no-measure", action="store_true", help="the plan only, no measured runs")
    p.add_argument("--host", action="store_true", help="the host memory check only (a 0.6B load, 1 min)")
    p.add_argument("--measure-rank", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--measure-host-rank", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.measure_rank:
        measure_rank(json.loads(a.measure_rank[0]), a.measure_rank[1])
        return
    if a.measure_host_rank:
        measure_host_rank(json.loads(a.measure_host_rank[0]), a.measure_host_rank[1])
        return
    say = (lambda *x, **k: print(*x, **k, file=sys.stderr)) if a.json else print

    summary = {}
    gb = lambda x: f"{x / GIB:6.1f}"  # noqa: E731
    if a.host:
        host = measure_host(say)
        if a.json:
            print(json.dumps({"host_ratio": round(host["measured"] / host["predicted"], 3)}))
        return
    say(f"Per-GPU memory (GiB) on {N_GPUS} x {GPU_GIB} GB, {GPU_GIB - RESERVED_GIB} GiB usable; * = the mode the "
        f"preset uses. 'peak' holds the KV cache of one sequence; 'rollout' is how many sequences fit then.")
    say(f"{'preset':18}{'mode':14}{'weights':>8}{'grads':>8}{'optim':>8}{'frozen':>8}{'roll.copy':>10}"
        f"{'activ.':>8}{'KV/seq':>8}{'peak':>8}{'rollout':>8}  fits{'host/node':>11}")
    for name in presets():
        plans, used = preset_plan(name)
        for mode, q in plans.items():
            say(f"{name:18}{mode + ('*' if mode == used else ''):14}{gb(q['weights']):>8}{gb(q['grads']):>8}"
                f"{gb(q['optimizer']):>8}{gb(q['frozen']):>8}{gb(q['rollout_copy']):>10}{gb(q['activations']):>8}"
                f"{gb(q['kv_per_seq']):>8}{gb(q['peak_one_seq']):>8}{q['rollout_batch'] if fits(q) else 0:>8}  "
                f"{'yes' if fits(q) else 'NO ':4}{gb(q['host']['node']):>10}")
        summary[name] = {"mode": used, "per_gpu_gb": round(plans[used]["peak_one_seq"] / GIB, 1),
                         "fits": fits(plans[used]), "host_gb_per_node": round(plans[used]["host"]["node"] / GIB, 1),
                         "host_fits": host_fits(plans[used])}
    say(f"host/node: CPU memory of a node's {N_GPUS} ranks (GiB), {PROCESS_GIB} GiB a rank for the process (an "
        f"allowance), at its peak: all ranks loading, or rank 0 gathering the student for a checkpoint (host_plan)")

    say(f"\nWith --estimator exact, in the mode each preset uses: the frozen models' final hidden states at every "
        f"response position\n(sampled keeps every {gopd.KL_STRIDE}th, for its metric), their gathered output "
        f"layers, the chunks' vocabulary-wide temporaries.")
    say(f"{'preset':18}{'mode':14}{'kept':>8}{'heads':>8}{'sampled':>9}{'exact':>8}{'rollout':>8}  fits")
    for name in presets():
        used = preset_plan(name)[1]
        q, e = preset_plan(name, "sampled")[0][used], preset_plan(name, "exact")[0][used]
        say(f"{name:18}{used:14}{gb(e['kept_states']):>8}{gb(e['gathered_heads']):>8}{gb(q['peak_one_seq']):>9}"
            f"{gb(e['peak_one_seq']):>8}{e['rollout_batch'] if fits(e) else 0:>8}  {'yes' if fits(e) else 'NO'}")
        summary[name]["exact_per_gpu_gb"] = round(e["peak_one_seq"] / GIB, 1)
        summary[name]["exact_fits"] = fits(e)

    worst = host = None
    if not a.no_measure:
        host = measure_host(say)
        say("\nChecked against measured peaks: 2 ranks on CPU, float32, gradient checkpointing; peak RSS above the "
            "RSS before the models load,\nthe worst rank of each run. The process's own growth (the same run with "
            "70k-parameter models) is in the measured peak, not in the plan:")
        results = measure(say)
        ratios = [m / q for _, _, m, _, q in results]
        worst = max(ratios, key=lambda r: abs(r - 1))
        say(f"worst measured/predicted ratio: {worst:.2f} (all: {min(ratios):.2f} to {max(ratios):.2f})")
    if a.json:
        print(json.dumps({"presets": summary, "worst_ratio": None if worst is None else round(worst, 3),
                          "host_ratio": None if host is None else round(host["measured"] / host["predicted"], 3)}))


if __name__ == "__main__":
    main()
