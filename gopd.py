"""
gopd.py: Generalized On-Policy Distillation (G-OPD) and ExOPD in one file.

Paper: "Learning beyond Teacher: Generalized On-Policy Distillation with Reward Extrapolation"
(Yang et al., 2026, arXiv 2602.12125). The student samples its own responses; the teacher and a
fixed reference model score every sampled token; the student is trained by dense KL-constrained RL

    J(theta) = E_{y~pi_theta} [ lam * log(pi_T(y|x) / pi_ref(y|x)) ] - KL(pi_theta || pi_ref)

whose optimum is pi* ~ pi_T^lam * pi_ref^(1-lam). lam = 1 is standard OPD, lam > 1 is ExOPD.

    python gopd.py --lam 1.25                       # the bundled toy world, one process
    torchrun --nproc_per_node=8 gopd.py --student Qwen/Qwen3-4B \\
        --teacher math=PATH_A --teacher code=PATH_B --data FILE --lam 1.25

The file reads in the order of the method: arguments, setup, data, rollout, scoring, objective,
checkpoints, evaluation hook, loop. The objective is `gopd_loss`.
"""

import argparse
import json
import math
import os
import random
import re
import shutil
import time
from contextlib import nullcontext

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.checkpoint import checkpoint
from tqdm import tqdm

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # quiet fork warnings; we batch ourselves

# -----------------------------------------------------------------------------
# Arguments

HERE = os.path.dirname(os.path.abspath(__file__))
TOY = os.path.join(HERE, "toy")

# Hyperparameters of the paper's runs (G-OPD release, README / examples; see README.md).
PAPER_DEFAULTS = dict(prompts_per_step=1024, samples_per_prompt=1, max_new_tokens=16384,
                      lr=1e-5, steps=50, micro_batch=1, rollout_batch=64, out="out")
# With no --student, everything points at the bundled toy world (a CPU demo of minutes).
TOY_DEFAULTS = dict(student=os.path.join(TOY, "models", "student"),
                    teacher=[f"math={os.path.join(TOY, 'models', 'math_expert')}",
                             f"code={os.path.join(TOY, 'models', 'code_expert')}"],
                    data=os.path.join(TOY, "data", "train.jsonl"),
                    eval_data=[os.path.join(TOY, "data", "test_math.jsonl"),
                               os.path.join(TOY, "data", "test_code.jsonl")],
                    prompts_per_step=64, samples_per_prompt=1, max_new_tokens=64,
                    lr=1e-3, steps=40, micro_batch=64, rollout_batch=64, out="out/toy")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="G-OPD / ExOPD on-policy distillation. Without --student, "
                                "every default points at the bundled toy world.")

    def default(key):  # defaults that differ between a real run (the paper's) and the toy demo
        return f" (default: {PAPER_DEFAULTS[key]}; toy: {TOY_DEFAULTS[key]})"
    p.add_argument("--student", help="student model: local folder or hub id (default: the toy student)")
    p.add_argument("--teacher", action="append",
                   help="teacher: PATH, or DOMAIN=PATH once per domain (repeatable)")
    p.add_argument("--ref", help="reference pi_ref (default: a frozen copy of the student's initial weights)")
    p.add_argument("--lam", type=float, default=1.0, help="reward scale lambda: 1 = OPD (default), >1 = ExOPD")
    p.add_argument("--data", help="JSONL/JSON/parquet file or datasets hub name; rows have 'prompt', "
                                  "optional 'domain'")
    p.add_argument("--prompts-per-step", type=int,
                   help="prompts per optimizer step, over all ranks" + default("prompts_per_step"))
    p.add_argument("--samples-per-prompt", type=int,
                   help="responses sampled per prompt" + default("samples_per_prompt"))
    p.add_argument("--max-new-tokens", type=int, help="response length limit" + default("max_new_tokens"))
    p.add_argument("--max-prompt-len", type=int, default=2048, help="longer prompts are skipped (default: 2048)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="sampling temperature; 0 = greedy, for debugging (default: 1.0)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold (default: 1.0)")
    p.add_argument("--lr", type=float, help="AdamW peak learning rate" + default("lr"))
    p.add_argument("--lr-schedule", choices=["constant", "linear", "cosine"], default="constant",
                   help="decay after warmup (default: constant, as in the paper)")
    p.add_argument("--warmup-steps", type=int, default=0, help="linear warmup steps (default: 0)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (default: 0)")
    p.add_argument("--loss-agg", choices=["seq-mean-token-mean", "token-mean"], default="seq-mean-token-mean",
                   help="seq-mean-token-mean: every response weighs the same, as the paper's release runs; "
                        "token-mean: every token does (default: seq-mean-token-mean)")
    p.add_argument("--grad-clip", type=float, default=1.0, help="max global gradient norm (default: 1.0)")
    p.add_argument("--steps", type=int, help="optimizer steps" + default("steps"))
    p.add_argument("--micro-batch", type=int, help="sequences per forward/backward" + default("micro_batch"))
    p.add_argument("--rollout-batch", type=int, help="sequences per generate call" + default("rollout_batch"))
    p.add_argument("--grad-checkpointing", action="store_true", help="trade compute for activation memory")
    p.add_argument("--allow-template-mismatch", action="store_true",
                   help="let teacher/reference chat templates differ from the student's")
    p.add_argument("--eval-data", action="append", help="file to evaluate on before and after training (repeatable)")
    p.add_argument("--eval-n", type=int, default=1, help="samples per evaluation problem, avg@n (default: 1)")
    p.add_argument("--eval-every", type=int, default=0,
                   help="also evaluate every N steps, logged in metrics.jsonl (default: 0, never)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--out", help="output folder: metrics.jsonl, checkpoints, eval.json" + default("out"))
    p.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (default: 0, only at the end)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    args = p.parse_args(argv)

    defaults = TOY_DEFAULTS if args.student is None else PAPER_DEFAULTS
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if not args.teacher:
        die("no teacher given; pass --teacher PATH (or --teacher DOMAIN=PATH per domain)")
    if args.data is None:
        die("no training data given; pass --data FILE (rows with a 'prompt' field)")
    if not args.lam > 0:
        die(f"--lam must be > 0 (got {args.lam}); 1 is OPD, 1.25 the paper's ExOPD")
    if args.temperature < 0 or not 0 < args.top_p <= 1:
        die("--temperature must be >= 0 and --top-p in (0, 1]")
    for name in ["prompts_per_step", "samples_per_prompt", "max_new_tokens", "steps", "micro_batch", "rollout_batch"]:
        if getattr(args, name) < 1:
            die(f"--{name.replace('_', '-')} must be >= 1")
    args.teachers = parse_teachers(args.teacher)
    return args


def parse_teachers(specs):
    """['PATH'] or ['math=PATH', 'code=PATH'] -> {domain or None: path}; None is the default teacher."""
    teachers = {}
    for spec in specs:
        m = re.fullmatch(r"(\w+)=(.+)", spec)
        domain, path = (m.group(1), m.group(2)) if m and not os.path.exists(spec) else (None, spec)
        if domain in teachers:
            die(f"two teachers for domain {domain!r}; pass one --teacher per domain")
        teachers[domain] = path
    return teachers


def die(msg):
    """Bad input ends the run with one line naming the problem and the fix."""
    raise SystemExit(f"gopd: error: {msg}")

# -----------------------------------------------------------------------------
# Setup: processes, devices, models


def setup_distributed():
    """One process (python gopd.py) or one rank per device (torchrun). Returns rank, world, device."""
    if "RANK" not in os.environ:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank))
        return dist.get_rank(), dist.get_world_size(), torch.device("cuda", local_rank)
    dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size(), torch.device("cpu")


def all_reduce_sum(t):
    if dist.is_initialized():
        dist.all_reduce(t)
    return t


def barrier():
    if dist.is_initialized():
        dist.barrier()


def now(device):
    """Wall time after the device's queued work is done, so phase timings are honest on GPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.time()


def check_model_path(path):
    """A path that is clearly local (not an 'org/name' hub id) must exist: fail now, not after retries."""
    looks_local = os.path.isabs(path) or path.startswith(".") or path.count("/") > 1 or path.endswith("/")
    if looks_local and not os.path.isdir(path):
        die(f"model folder {path!r} does not exist; pass a folder with config.json, or a hub id like org/name")


def load_tokenizer(path):
    from transformers import AutoTokenizer
    check_model_path(path)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as e:  # the library's own errors are pages long; name the path and the fix
        die(f"cannot load a tokenizer from {path!r} ({type(e).__name__}); pass a local model folder "
            f"or a hub id that is downloaded (offline runs need the folder)")
    if tok.eos_token_id is None:
        die(f"tokenizer at {path!r} has no EOS token; the student must learn to stop, so set eos_token")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token  # padding is masked out; EOS is a safe filler
    return tok


def load_model(path, dtype, device, trainable=False):
    from transformers import AutoModelForCausalLM
    check_model_path(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    except Exception as e:
        die(f"cannot load a causal LM from {path!r} ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            f"pass a folder with config.json and weights, or a downloaded hub id")
    if not trainable:  # teacher and reference: frozen, no grads, no optimizer state
        model.eval().requires_grad_(False)
    return model


def check_same_tokenizer(student_tok, other_tok, name, allow_template_mismatch=False):
    """G-OPD compares log-probs of the same token ids under two models, so the tokenizers (not the
    embedding sizes, which families pad differently) must agree: vocabulary, EOS and chat template."""
    a, b = student_tok.get_vocab(), other_tok.get_vocab()
    if a != b:
        n = len(set(a.items()) ^ set(b.items()))
        die(f"{name} tokenizer differs from the student's ({n} vocabulary entries differ); "
            f"use a {name} from the student's model family, with the same tokenizer")
    if student_tok.eos_token_id != other_tok.eos_token_id:
        die(f"{name} EOS id {other_tok.eos_token_id} != student EOS id {student_tok.eos_token_id}; "
            f"the student would learn to stop where the {name} does not")
    if student_tok.chat_template != other_tok.chat_template and not allow_template_mismatch:
        die(f"{name} chat template differs from the student's; it would score text in a format it was not "
            f"trained on. Use matching models, or pass --allow-template-mismatch if that is intended")

# -----------------------------------------------------------------------------
# Data


def load_rows(data):
    """Rows {'prompt': str or chat messages, 'domain': optional str} from a file or the hub."""
    if os.path.isfile(data):
        if data.endswith((".jsonl", ".json")):
            with open(data) as f:
                text = f.read()
            try:
                rows = json.loads(text) if text.lstrip().startswith("[") else \
                    [json.loads(line) for line in text.splitlines() if line.strip()]
            except json.JSONDecodeError as e:
                die(f"{data} is not valid JSON/JSONL ({e}); one JSON object per line, or a JSON list")
        elif data.endswith(".parquet"):
            import datasets
            rows = datasets.load_dataset("parquet", data_files=data, split="train").to_list()
        else:
            die(f"{data}: unknown file type; use .jsonl, .json or .parquet")
    else:
        import datasets
        try:
            rows = datasets.load_dataset(data, split="train").to_list()
        except Exception as e:
            die(f"--data {data!r} is neither a file nor a loadable dataset ({type(e).__name__}); check the path")
    if not rows:
        die(f"--data {data!r} has no rows; give a dataset with at least one prompt")
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "prompt" not in row:
            die(f"row {i} of {data!r} has no 'prompt' field; each row needs 'prompt' (a string or a "
                f"list of chat messages) and optionally 'domain'")
        if "domain" not in row and isinstance(row.get("extra_info"), dict) and "opd_teacher" in row["extra_info"]:
            row["domain"] = row["extra_info"]["opd_teacher"]  # how the G-OPD release's data names it
    return rows


def prompt_ids(tokenizer, prompt):
    """Token ids of a prompt, rendered by evaluate.py's rule (the chat template with the assistant
    header, Qwen3 non-thinking mode as in the paper, else raw text), so that training and evaluation
    show the student the same format."""
    from evaluate import render_prompt
    try:
        text = render_prompt(tokenizer, prompt)
    except ValueError as e:
        die(str(e))
    return tokenizer(text, add_special_tokens=not tokenizer.chat_template).input_ids


def check_domains(rows, teachers):
    """Every row's domain needs its own teacher or the default one (key None)."""
    missing = sorted({r.get("domain") for r in rows if r.get("domain") not in teachers}, key=str)
    if missing and None not in teachers:
        missing = ["(no domain)" if d is None else d for d in missing]
        die(f"rows of domain(s) {missing} have no teacher; add --teacher DOMAIN=PATH for each, or a "
            f"default --teacher PATH (have: {sorted(map(str, teachers))})")


def encode_prompts(rows, tokenizer, args, log):
    """Tokenize every prompt once; skip (and count) those that leave no room for a response."""
    from transformers import AutoConfig
    paths = [args.student, *args.teachers.values(), *([args.ref] if args.ref else [])]
    context = min(getattr(AutoConfig.from_pretrained(p), "max_position_embeddings", 1 << 30) for p in paths)
    limit = min(args.max_prompt_len, context - args.max_new_tokens)
    encoded = [prompt_ids(tokenizer, r["prompt"]) for r in rows]
    keep = [i for i, ids in enumerate(encoded) if len(ids) <= limit]
    if len(keep) < len(rows):
        log(f"gopd: skipped {len(rows) - len(keep)} of {len(rows)} prompts longer than {limit} tokens "
            f"(context {context} - max new tokens {args.max_new_tokens}, or --max-prompt-len)")
    if not keep:
        die(f"every prompt is longer than {limit} tokens; raise --max-prompt-len or lower --max-new-tokens")
    return [rows[i] for i in keep], [encoded[i] for i in keep]


def step_rows(n_rows, step, n, seed):
    """Indices of the n prompts of a global step: consecutive slices of per-epoch seeded shuffles.
    A pure function of the step, so resuming needs no data-loader state."""
    idx, perms = [], {}
    for i in range(step * n, (step + 1) * n):
        epoch, j = divmod(i, n_rows)
        if epoch not in perms:
            perms[epoch] = torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed + epoch))
        idx.append(perms[epoch][j].item())
    return idx

# -----------------------------------------------------------------------------
# Rollout: the student samples its own responses


def left_pad(seqs, pad_id):
    """List of id lists -> (ids [B, P], attention_mask [B, P]), padded on the left for generation."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s)
        mask[i, width - len(s):] = 1
    return ids, mask


def response_mask(responses, stop_ids):
    """1 for generated tokens up to and including the first stop token, 0 after it. pad may equal
    EOS, so the first EOS is kept (the student must learn to stop) and only what follows is masked."""
    is_stop = torch.isin(responses, torch.tensor(sorted(stop_ids), device=responses.device)).long()
    return (is_stop.cumsum(-1) - is_stop == 0).long()


@torch.no_grad()
def rollout(model, prompts, pad_id, stop_ids, max_new_tokens, temperature, top_p):
    """Sample one response per prompt (lists of ids) with HF generate and its KV cache.
    Returns sequences [B, P+R] (left-padded prompt, response), attention mask [B, P+R],
    response mask [B, R]. Explicit sampling settings override any in the model's generation_config
    (top_k=0: the full distribution, which is what the loss assumes)."""
    from transformers import GenerationConfig
    ids, attn = left_pad(prompts, pad_id)
    ids, attn = ids.to(model.device), attn.to(model.device)
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                              temperature=temperature or None, top_p=top_p if temperature > 0 else None,
                              top_k=0 if temperature > 0 else None, pad_token_id=pad_id,
                              eos_token_id=sorted(stop_ids), use_cache=True)
    seq = model.generate(input_ids=ids, attention_mask=attn, generation_config=config)
    mask = response_mask(seq[:, ids.shape[1]:], stop_ids)
    return seq, torch.cat([attn, mask], dim=1), mask


def trim(seq, attn, mask):
    """Drop columns that are padding in every row of a micro-batch: leading prompt padding and
    response positions after every row has stopped."""
    n_prompt = seq.shape[1] - mask.shape[1]
    first = int((attn[:, :n_prompt].sum(0) > 0).nonzero()[0])
    n_resp = int(mask.sum(0).nonzero().max()) + 1
    end = n_prompt + n_resp
    return seq[:, first:end], attn[:, first:end], mask[:, :n_resp]


def rollout_batches(model, prompts, domains, pad_id, stop_ids, args):
    """Rollouts for this rank's prompts, generated --rollout-batch at a time and cut into
    micro-batches of (sequences, attention mask, response mask, domains)."""
    batches = []
    for s in range(0, len(prompts), args.rollout_batch):
        seq, attn, mask = rollout(model, prompts[s:s + args.rollout_batch], pad_id, stop_ids,
                                  args.max_new_tokens, args.temperature, args.top_p)
        for m in range(0, len(seq), args.micro_batch):
            rows = slice(m, m + args.micro_batch)
            batches.append((*trim(seq[rows], attn[rows], mask[rows]), domains[s:s + args.rollout_batch][rows]))
    return batches

# -----------------------------------------------------------------------------
# Scoring: log-probs of the sampled tokens


def token_logprobs(model, sequences, attention_mask, n_response, temperature=1.0, chunk=128):
    """log pi(y_t | s_t) for the last n_response tokens of each row, float32 [B, n_response].

    The model body gives final hidden states, never logits; the output layer then runs on `chunk`
    response tokens at a time, and each chosen token's log-prob is its logit minus the logsumexp of
    its row of logits. So no [B, R, vocab] tensor ever exists: with a 150k vocabulary and long
    responses, that tensor, not the model, is what runs out of memory. With gradients on, each chunk
    is recomputed in the backward pass instead of keeping its float32 logits.
    Every model (student, teacher, reference) is scored at the sampling temperature, logits / T: the
    student's log-probs are then those of the distribution it actually sampled from, and all three
    terms of the advantage use one rule. Assumes the usual HF causal-LM layout: a decoder body whose
    last hidden state is final-normed, then the output layer, with no logit post-processing (true of
    Qwen, Llama, Mistral; not of Gemma 2's logit soft-capping)."""
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # left padding does not shift positions
    inputs = dict(input_ids=sequences, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    if isinstance(model, DDP):  # DDP syncs gradients only through its own forward
        hidden = model(**inputs, output_hidden_states=True, logits_to_keep=1).hidden_states[-1]
    else:  # the decoder body alone: no logits, no per-layer states kept
        hidden = model.get_decoder()(**inputs).last_hidden_state
    head = getattr(model, "module", model).get_output_embeddings()
    hidden = hidden[:, -n_response - 1:-1].reshape(-1, hidden.shape[-1])  # the states that predict y_t
    targets = sequences[:, -n_response:].reshape(-1)
    parts = []
    for h, y in zip(hidden.split(chunk), targets.split(chunk)):
        if torch.is_grad_enabled():
            parts.append(checkpoint(chosen_logprobs, head, h, y, temperature, use_reentrant=False))
        else:
            parts.append(chosen_logprobs(head, h, y, temperature))
    return torch.cat(parts).view(sequences.shape[0], n_response)


def chosen_logprobs(head, hidden, targets, temperature):
    """log-softmax of the target tokens only: logit minus logsumexp, in float32."""
    logits = head(hidden).float() / temperature
    return logits.gather(-1, targets[:, None])[:, 0] - logits.logsumexp(-1)


@torch.inference_mode()
def score(models, domains, sequences, attention_mask, n_response, temperature):
    """Log-probs under frozen models, each row under its domain's model (None: the default one)."""
    out = torch.zeros(sequences.shape[0], n_response, device=sequences.device)
    for domain in sorted(set(domains), key=str):
        rows = torch.tensor([i for i, d in enumerate(domains) if d == domain], device=sequences.device)
        model = models.get(domain, models.get(None))
        out[rows] = token_logprobs(model, sequences[rows], attention_mask[rows], n_response, temperature)
    return out

# -----------------------------------------------------------------------------
# Objective


def gopd_loss(logp_student, logp_teacher, logp_ref, mask, lam, n_global, loss_agg="seq-mean-token-mean"):
    """The G-OPD loss on one micro-batch of response tokens ([B, R] tensors, mask 1 on response).

        A_t  = lam * (log pi_T - log pi_ref) - (log pi_theta - log pi_ref)     advantage, no gradient
        loss = - mean over responses of  mean over its tokens of  A_t * log pi_theta(y_t|s_t)

    That is seq-mean-token-mean, what the paper's release runs (every response weighs the same);
    loss_agg="token-mean" weighs every token the same instead. n_global is the count the mean divides
    by, taken over the whole global batch (all micro-batches, all ranks): responses, or response
    tokens for token-mean. Summing the micro-batch losses then gives the same update however the
    batch is split (under DDP, which averages gradients over ranks, multiply the loss by the world size).
    At lam = 1 pi_ref cancels (A_t = log pi_T - log pi_theta): pass logp_ref=None to skip its pass."""
    if logp_ref is None:
        if lam != 1:
            raise ValueError("logp_ref is needed when lam != 1")
        logp_ref = torch.zeros_like(logp_teacher)
    advantage = (lam * (logp_teacher - logp_ref) - (logp_student - logp_ref)).detach()
    per_token = -advantage * logp_student * mask
    if loss_agg == "token-mean":
        return per_token.sum() / n_global
    return (per_token.sum(-1) / mask.sum(-1).clamp(min=1)).sum() / n_global

# -----------------------------------------------------------------------------
# Checkpoints: save_pretrained folders, written atomically, with everything --resume needs


def rng_state():
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None:
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoints(out):
    """Finished checkpoint folders in out, oldest first (temp folders of interrupted saves ignored)."""
    if not os.path.isdir(out):
        return []
    return sorted(os.path.join(out, d) for d in os.listdir(out) if re.fullmatch(r"step_\d{6}", d))


def save_checkpoint(out, step, model, tokenizer, optimizer, scheduler, rank):
    """Write into a temp folder, then rename: a crash mid-save never leaves a half checkpoint."""
    final = os.path.join(out, f"step_{step:06d}")
    tmp = final + ".tmp"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    barrier()
    torch.save(rng_state(), os.path.join(tmp, f"rng_rank{rank}.pt"))  # each rank samples differently
    barrier()
    if rank == 0:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        torch.save({"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                   os.path.join(tmp, "trainer_state.pt"))
        os.rename(tmp, final)
    barrier()


# -----------------------------------------------------------------------------
# Evaluation hook (evaluate.py does the work; imported only when asked for)


def run_eval(model, tokenizer, files, args, rank):
    """Accuracy (avg@n) per benchmark on rank 0; the other ranks wait."""
    result = {}
    if rank == 0:
        import evaluate
        for path in files:
            rows = evaluate.load_rows(path)
            summary, _ = evaluate.evaluate_model(model, tokenizer, rows, n=args.eval_n,
                                                 max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                                 top_p=args.top_p, batch_size=args.rollout_batch)
            result.update({name: s["avg@n"] for name, s in summary.items()})
    barrier()
    return result

def print_table(results):
    names = sorted({k for r in results.values() for k in r})
    print(f"{'':8}" + "".join(f"{n:>10}" for n in names))
    for when, accs in results.items():
        print(f"{when:8}" + "".join(f"{accs.get(n, float('nan')):>10.3f}" for n in names))

# -----------------------------------------------------------------------------
# Training loop


@torch.no_grad()
def batch_stats(logp_s, logp_t, logp_r, mask, seq, stop_ids, lam):
    """Sums over a micro-batch: reward, KL to reference, reverse KL to teacher (per-token estimates;
    the reference terms are NaN when its pass is skipped at lam = 1), rows, tokens, truncated rows."""
    logp_s = logp_s.detach()
    if logp_r is None:
        logp_r = torch.full_like(logp_s, float("nan"))
    stopped = (torch.isin(seq[:, -mask.shape[1]:], torch.tensor(sorted(stop_ids), device=seq.device))
               & mask.bool()).any(1)
    return torch.stack([(lam * (logp_t - logp_r) * mask).sum(), ((logp_s - logp_r) * mask).sum(),
                        ((logp_s - logp_t) * mask).sum(), mask.new_tensor(len(seq)).float(),
                        mask.sum().float(), (~stopped).sum().float()])



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


def main(argv=None):
    args = parse_args(argv)
    rank, world, device = setup_distributed()
    master = rank == 0
    log = print if master else (lambda *a, **k: None)
    try:
        train(args, rank, world, device, master, log)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def train(args, rank, world, device, master, log):
    if args.prompts_per_step % world:
        die(f"--prompts-per-step {args.prompts_per_step} is not divisible by {world} ranks")
    random.seed(args.seed + rank)
    np.random.seed(args.seed + rank)
    torch.manual_seed(args.seed + rank)
    done = checkpoints(args.out)
    if done and not args.resume:
        die(f"{args.out} already has checkpoints; pass --resume to continue, or a new --out")
    if args.resume and not done:
        die(f"--resume: no checkpoint in {args.out}; drop --resume to start fresh")

    # Data and tokenizers are cheap and catch most mistakes, so they come before any weights load.
    rows = load_rows(args.data)
    check_domains(rows, args.teachers)
    tokenizer = load_tokenizer(args.student)
    for domain, path in args.teachers.items():
        check_same_tokenizer(tokenizer, load_tokenizer(path), f"teacher {domain or ''}".strip(),
                             args.allow_template_mismatch)
    if args.ref:
        check_same_tokenizer(tokenizer, load_tokenizer(args.ref), "reference", args.allow_template_mismatch)
    rows, encoded = encode_prompts(rows, tokenizer, args, log)

    # Models. The student keeps float32 master weights (bf16 autocast on GPU); the frozen models
    # run in bf16 on GPU. The reference pass is skipped at lam = 1, where pi_ref cancels.
    on_gpu = device.type == "cuda"
    frozen_dtype = torch.bfloat16 if on_gpu else torch.float32
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu else nullcontext()
    start = 0
    resume_from = done[-1] if args.resume else None
    student = load_model(resume_from or args.student, torch.float32, device, trainable=True)
    teachers = {d: load_model(p, frozen_dtype, device) for d, p in args.teachers.items()}
    ref = load_model(args.ref or args.student, frozen_dtype, device) if args.lam != 1 else None
    if args.grad_checkpointing:
        student.activation_checkpointing_enable({"use_reentrant": False})
    stop_ids = {tokenizer.eos_token_id}
    gen_eos = student.generation_config.eos_token_id
    stop_ids |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else [])

    optimizer = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(args))
    if resume_from:
        state = torch.load(os.path.join(resume_from, "trainer_state.pt"), weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = state["step"]
        rng_file = os.path.join(resume_from, f"rng_rank{rank}.pt")
        if not os.path.exists(rng_file):
            die(f"{resume_from} was written by fewer ranks; resume with the same number of processes")
        set_rng_state(torch.load(rng_file, weights_only=False))
        log(f"gopd: resumed from {resume_from} at step {start}")
    model = DDP(student) if dist.is_initialized() else student
    os.makedirs(args.out, exist_ok=True)

    results = {}
    if args.eval_data and start == 0:
        results["before"] = run_eval(student, tokenizer, args.eval_data, args, rank)
        log(f"gopd: before training {results['before']}")
        if master:
            with open(os.path.join(args.out, "metrics.jsonl"), "a") as f:
                f.write(json.dumps({"step": 0, "eval": results["before"]}) + "\n")

    score_temp = args.temperature or 1.0  # greedy rollouts are scored with the plain softmax
    for step in tqdm(range(start, args.steps), disable=not master, desc="gopd", initial=start, total=args.steps):
        t0 = now(device)
        idx = step_rows(len(rows), step, args.prompts_per_step, args.seed)[rank::world]
        idx = [i for i in idx for _ in range(args.samples_per_prompt)]

        # 1. rollout, with the unwrapped student: no collective may run inside generate
        student.eval()
        with autocast:
            batches = rollout_batches(student, [encoded[i] for i in idx], [rows[i].get("domain") for i in idx],
                                      tokenizer.pad_token_id, stop_ids, args)
        t1 = now(device)

        # 2. scoring by the frozen teacher(s) and reference
        scored = []
        for seq, attn, mask, doms in batches:
            n = mask.shape[1]
            logp_t = score(teachers, doms, seq, attn, n, score_temp)
            logp_r = score({None: ref}, [None] * len(doms), seq, attn, n, score_temp) if ref is not None else None
            scored.append((logp_t, logp_r))
        t2 = now(device)

        # 3. one update on the whole batch; the loss divides by a count over the global batch
        student.train()
        n_tokens = all_reduce_sum(torch.tensor(float(sum(b[2].sum() for b in batches)), device=device))
        n_global = n_tokens if args.loss_agg == "token-mean" else all_reduce_sum(
            torch.tensor(float(sum(len(b[2]) for b in batches)), device=device))
        stats = torch.zeros(7, device=device)  # loss, reward, kl_ref, kl_teacher, rows, tokens, truncated
        for k, ((seq, attn, mask, _), (logp_t, logp_r)) in enumerate(zip(batches, scored)):
            sync = k == len(batches) - 1
            with (nullcontext() if sync or world == 1 else model.no_sync()), autocast:
                logp_s = token_logprobs(model, seq, attn, mask.shape[1], score_temp)
                loss = gopd_loss(logp_s, logp_t, logp_r, mask, args.lam, n_global, args.loss_agg)
            (loss * world).backward()  # DDP averages gradients over ranks; undo it for the global mean
            stats[0] += loss.detach()
            stats[1:] += batch_stats(logp_s, logp_t, logp_r, mask, seq, stop_ids, args.lam)
        grad_norm = torch.nn.utils.clip_grad_norm_(student.parameters(), args.grad_clip)
        all_reduce_sum(stats)
        if not torch.isfinite(grad_norm) or not torch.isfinite(stats[0]):
            die(f"non-finite loss or gradient at step {step + 1} (loss {stats[0].item()}, grad norm "
                f"{grad_norm.item()}); nothing was saved for this step, the last checkpoint in "
                f"{args.out} is intact. Lower --lr or check the models' dtypes")
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        t3 = now(device)

        metrics = {"step": step + 1, "loss": stats[0].item(), "reward": (stats[1] / n_tokens).item(),
                   "kl_ref": (stats[2] / n_tokens).item(), "kl_teacher": (stats[3] / n_tokens).item(),
                   "response_len": (stats[5] / stats[4]).item(), "truncated": (stats[6] / stats[4]).item(),
                   "grad_norm": grad_norm.item(), "lr": scheduler.get_last_lr()[0],
                   "tokens_per_s": n_tokens.item() / (t3 - t0), "time_generate": t1 - t0,
                   "time_score": t2 - t1, "time_update": t3 - t2, "time_step": t3 - t0}
        metrics = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
        last = step + 1 == args.steps
        if args.eval_data and (last or (args.eval_every and (step + 1) % args.eval_every == 0)):
            metrics["eval"] = run_eval(student, tokenizer, args.eval_data, args, rank)
            if last:
                results["after"] = metrics["eval"]
        if master:
            with open(os.path.join(args.out, "metrics.jsonl"), "a") as f:
                f.write(json.dumps(metrics) + "\n")
            tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                for k, v in metrics.items() if not k.startswith("time_")))
        if (args.save_every and (step + 1) % args.save_every == 0) or last:
            save_checkpoint(args.out, step + 1, student, tokenizer, optimizer, scheduler, rank)

    if args.eval_data:
        if "after" not in results:  # resumed after the last step
            results["after"] = run_eval(student, tokenizer, args.eval_data, args, rank)
        if master:
            print_table(results)
            with open(os.path.join(args.out, "eval.json"), "w") as f:
                json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
