"""Benchmark: one gopd.py step next to Hugging Face TRL's GKDTrainer and next to the bare compute,
and the peak memory of gopd's scoring path next to a naive full-vocabulary log-softmax.

    pip install trl                      # benchmark only; gopd.py never imports it
    python tests/bench.py                # table; CUDA in bf16 when available, else CPU float32
    python tests/bench.py --device cpu   # force CPU
    python tests/bench.py --json         # last line: {"gopd_vs_trl": .., "gopd_vs_floor": .., "scoring_mem_vs_naive": ..}
    python tests/bench.py --estimators --json   # the exact estimator beside the sampled one (no trl needed);
                                         # last line: {"sampled": {..}, "exact": {..}, "exact_vs_sampled_time": ..}

Not collected by pytest (the name does not start with test_). Targets: gopd step <= 0.8x TRL,
<= 1.15x the floor, scoring peak memory <= 1/4 of naive.

Timing. The three contenders get the same tiny random Qwen2 student and teacher (built here,
saved and loaded back with from_pretrained), the same prompts (all the same length), batch,
samples per prompt and max new tokens, on-policy reverse KL (lam = 1), temperature 1, top-p 1,
AdamW lr 1e-5, grad clip 1.0, one optimizer step per batch, no logging, no checkpoints:
- gopd: its real training loop (gopd.main), step time split as it logs it in metrics.jsonl;
- TRL: GKDTrainer with lmbda=1 (always student-generated), beta=1 (reverse KL: TRL's generalized
  JSD at beta=1 is KL(student || teacher)), seq_kd=False, and gradient checkpointing off (TRL's
  default is on, which also drops the KV cache in its generate); step time = interval between
  the ends of consecutive optimizer steps (data collation and Trainer overhead included);
- floor: one generate + one teacher forward + one student forward/backward + optimizer step,
  written inline with logits only for response positions: the least any implementation can do.
A random-init model is near uniform over its vocabulary, so rows stop early with probability
about max_new_tokens / vocab; generate keeps computing every column until all rows stop, so all
three do the same work. The contenders run in alternating rounds and the median step is
reported, because other jobs may share the machine; on CPU torch gets one thread (--threads),
since OpenMP threads that wait for each other on a busy machine make generate 10-20x slower.
gopd at lam = 1.25 (one more frozen forward, the reference) is timed too, outside the ratios.

Memory. In a fresh subprocess per path: a one-layer model with a 151,936-token vocabulary (the
size of Qwen3's embedding) scores a 1,024-token response under no-grad, as the teacher does. The
naive path is the textbook one, already kept to response positions:
log_softmax(model(..., logits_to_keep=R + 1).logits.float()).gather(...). The gopd path is
gopd.token_logprobs. Peak is measured above what was allocated before the call: on CUDA with
torch.cuda.max_memory_allocated; on CPU with the process's peak resident set (VmHWM), reset just
before the call through /proc/self/clear_refs (Linux) -- torch's CPU allocator returns large
blocks to the OS, so the high-water mark is the tensors' peak, not allocator caching.
"""

import argparse
import contextlib
import json
import os
import statistics
import string
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is built here; nothing may come from the hub
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "--device=cpu" in sys.argv or "--device" in sys.argv[:-1] and sys.argv[sys.argv.index("--device") + 1] == "cpu":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # gopd.main picks CUDA when it sees one

import torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import gopd  # noqa: E402

# -----------------------------------------------------------------------------
# A tiny world: byte-level BPE tokenizer (Qwen2's), random student and teacher


def make_tokenizer(vocab_size):
    """A Qwen2-style byte-level BPE tokenizer with exactly vocab_size tokens: the 256 byte symbols,
    then ' a'..' z', ' aa'..' zz', ... so every id decodes and a random 3-letter word is one token."""
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    vocab = {s: i for i, s in enumerate(bytes_to_unicode().values())}
    merges, words, room = [], ["\u0120"], vocab_size - 3  # \u0120 is the byte-level space; 3 specials
    while len(vocab) < room:
        longer = []
        for w in words:
            for c in string.ascii_lowercase[:max(0, room - len(vocab))]:
                vocab[w + c] = len(vocab)
                merges.append((w, c))
                longer.append(w + c)
        words = longer
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                         additional_special_tokens=["<|im_start|>"])
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    return tok


def build_model(path, tokenizer, vocab_size, hidden, layers, seed):
    from transformers import Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=4 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=4096, tie_word_embeddings=True, bos_token_id=None,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_world(root, a):
    tok = make_tokenizer(a.vocab)
    paths = {name: build_model(os.path.join(root, name), tok, a.vocab, a.hidden, a.layers, seed)
             for name, seed in [("student", 0), ("teacher", 1)]}
    g = torch.Generator().manual_seed(0)
    words = [w for w in tok.get_vocab() if len(w) == 4 and w[0] == "\u0120"]  # ' abc': one token each
    prompts = [" ".join(words[i][1:] for i in torch.randint(len(words), (a.prompt_words,), generator=g).tolist())
               for _ in range(a.prompts)]
    paths["root"], paths["data"] = root, os.path.join(root, "data.jsonl")
    with open(paths["data"], "w") as f:
        f.writelines(json.dumps({"prompt": p}) + "\n" for p in prompts)
    return paths, prompts


def load(path, dtype, device, trainable):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    return model.train() if trainable else model.eval().requires_grad_(False)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()

# -----------------------------------------------------------------------------
# The three contenders. Each returns a list of per-step dicts (seconds).


def floor_steps(paths, prompts, a, device, n):
    """generate + teacher forward + student forward/backward + AdamW step, nothing else."""
    from transformers import AutoTokenizer
    gpu = device.type == "cuda"
    tok = AutoTokenizer.from_pretrained(paths["student"], padding_side="left")
    student = load(paths["student"], torch.float32, device, True)
    teacher = load(paths["teacher"], torch.bfloat16 if gpu else torch.float32, device, False)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-5)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if gpu else contextlib.nullcontext()
    messages = [[{"role": "user", "content": p}] for p in prompts for _ in range(a.samples)]
    enc = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, padding=True,
                                  return_tensors="pt", return_dict=True).to(device)
    R, times = a.max_new_tokens, []
    for _ in range(n + 1):
        t0 = sync(device)
        with torch.no_grad(), autocast:
            seq = student.eval().generate(**enc, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                                          max_new_tokens=R, pad_token_id=tok.pad_token_id)
        t1 = sync(device)
        attn = torch.cat([enc["attention_mask"], torch.ones_like(seq[:, -R:])], 1)
        target = seq[:, -R:, None]
        with torch.no_grad(), autocast:
            logits = teacher(input_ids=seq, attention_mask=attn, logits_to_keep=R + 1).logits[:, :-1]
            logp_t = logits.float().log_softmax(-1).gather(-1, target)[..., 0]
        t2 = sync(device)
        with autocast:
            logits = student.train()(input_ids=seq, attention_mask=attn, logits_to_keep=R + 1).logits[:, :-1]
            logp_s = logits.float().log_softmax(-1).gather(-1, target)[..., 0]
        loss = -((logp_t - logp_s).detach() * logp_s).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        t3 = sync(device)
        times.append({"generate": t1 - t0, "score": t2 - t1, "update": t3 - t2, "step": t3 - t0,
                      "tokens": seq.shape[0] * (seq.shape[1] - enc["input_ids"].shape[1])})
    return times[1:]  # the first step warms up kernels and allocators


def gopd_steps(paths, a, n, lam=1.0):
    """gopd's own loop, run in this process; per-step times read back from its metrics.jsonl."""
    out = tempfile.mkdtemp(prefix="gopd_", dir=paths["root"])
    argv = ["--student", paths["student"], "--teacher", paths["teacher"], "--data", paths["data"],
            "--lam", str(lam), "--prompts-per-step", str(a.prompts), "--samples-per-prompt", str(a.samples),
            "--max-new-tokens", str(a.max_new_tokens), "--micro-batch", str(a.prompts * a.samples),
            "--rollout-batch", str(a.prompts * a.samples), "--lr", "1e-5", "--steps", str(n + 1),
            "--out", out]
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        gopd.main(argv)
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rows = [r for r in map(json.loads, f) if "time_step" in r]
    return [{"generate": r["time_generate"], "score": r["time_score"], "update": r["time_update"],
             "step": r["time_step"], "tokens": r["tokens_per_s"] * r["time_step"]} for r in rows[1:]]


def trl_steps(paths, prompts, a, device, n):
    """TRL's GKDTrainer configured for fully on-policy reverse-KL distillation."""
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl.experimental.gkd import GKDConfig, GKDTrainer
    gpu = device.type == "cuda"
    tok = AutoTokenizer.from_pretrained(paths["student"])
    # The collator wants whole conversations; with lmbda=1 the assistant turn is always replaced
    # by a fresh student sample. Each prompt appears samples-per-prompt times per batch, as in gopd.
    rows = [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": "x"}]}
            for p in prompts for _ in range(a.samples)]
    dataset = Dataset.from_list(rows * (n + 1))
    ends, generate = [], []

    class Clock(TrainerCallback):
        def on_step_end(self, *args, **kwargs):
            ends.append(sync(device))

    config = GKDConfig(output_dir=tempfile.mkdtemp(prefix="trl_", dir=paths["root"]), per_device_train_batch_size=len(rows),
                       gradient_accumulation_steps=1, max_steps=n + 1, learning_rate=1e-5,
                       lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0, optim="adamw_torch",
                       lmbda=1.0, beta=1.0, seq_kd=False, temperature=1.0, max_new_tokens=a.max_new_tokens,
                       logging_strategy="no", save_strategy="no", eval_strategy="no", report_to="none",
                       disable_tqdm=True, dataloader_num_workers=0, use_cpu=not gpu, bf16=gpu, seed=0,
                       gradient_checkpointing=False)  # TRL's default is on, which also drops the KV cache
                                                      # in its generate; gopd and the floor run without it
    trainer = GKDTrainer(model=load(paths["student"], torch.float32, device, True),
                         teacher_model=load(paths["teacher"], torch.bfloat16 if gpu else torch.float32, device, False),
                         args=config, train_dataset=dataset, processing_class=tok, callbacks=[Clock()])
    rollout = trainer.generate_on_policy_outputs

    def timed_rollout(*args):  # to split TRL's step into generate and the rest
        t = sync(device)
        result = rollout(*args)
        generate.append(sync(device) - t)
        return result

    trainer.generate_on_policy_outputs = timed_rollout
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        trainer.train()
    tokens = len(rows) * a.max_new_tokens
    return [{"generate": g, "score": float("nan"), "update": (e1 - e0) - g, "step": e1 - e0, "tokens": tokens}
            for e0, e1, g in zip(ends, ends[1:], generate[1:])]

# -----------------------------------------------------------------------------
# Scoring memory, one subprocess per path


def memory_probe(which, a):
    """Runs in a fresh process: peak bytes of one no-grad scoring call above the baseline."""
    device = torch.device(a.device)
    gpu = device.type == "cuda"
    from transformers import Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=a.mem_vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         tie_word_embeddings=True, bos_token_id=None, eos_token_id=0, pad_token_id=0)
    with tempfile.TemporaryDirectory(prefix="gopd_bench_mem_") as root:
        Qwen2ForCausalLM(config).save_pretrained(root)
        model = load(root, torch.bfloat16 if gpu else torch.float32, device, False)
    R = a.mem_response
    seq = torch.randint(a.mem_vocab, (1, 64 + R), device=device)
    attn = torch.ones_like(seq)

    def naive():
        logits = model(input_ids=seq, attention_mask=attn, logits_to_keep=R + 1).logits[:, :-1]
        return torch.log_softmax(logits.float(), -1).gather(-1, seq[:, -R:, None])[..., 0]

    def lean():
        return gopd.token_logprobs(model, seq, attn, R)

    run = naive if which == "naive" else lean
    with torch.inference_mode():
        run()  # warm up: lazy initialisation is not the scoring path's memory
        if gpu:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            run()
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - base
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident set
        base = proc_status("VmRSS")
        run()
        return proc_status("VmHWM") - base


def proc_status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status (Linux only)")


def scoring_memory(a):
    peaks = {}
    for which in ["naive", "gopd"]:
        cmd = [sys.executable, os.path.abspath(__file__), "--memory-probe", which, "--device", a.device,
               "--mem-vocab", str(a.mem_vocab), "--mem-response", str(a.mem_response)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        peaks[which] = int(out.strip().splitlines()[-1])
    return peaks

# -----------------------------------------------------------------------------
# Rollout: the one-call path next to the staged one (python tests/bench.py --rollout)
#
# A random Qwen3 whose output layer has a bias on EOS alone, set so that a sampled response stops
# with probability 1 / --mean-len at each step: geometric lengths, most short, a long tail cut at
# --max-new-tokens (at 128 and 512: a third under 50 tokens, one in 55 cut at 512). A random
# model's other logits are nearly flat, so the rate hardly depends on the state; the lengths
# measured are reported. Prompts are random ids of varied length. Both paths sample at
# temperature 1 with the same memory budget, --rollout-batch sequences of the longest prompt +
# --max-new-tokens: the one-call path runs gopd.rollout on --rollout-batch rows at a time (each
# call lasts as long as its longest response), the staged path evaluate.sample_staged on all rows
# with gopd.sequences_per_call (what gopd.rollout_batches does either way). They alternate for --rounds
# rounds with fresh seeds; each path's totals are summed over its rounds. The two paths draw
# different samples, so they do different amounts of real work: new_vs_static compares wall time
# per real token (static tokens/s / staged tokens/s).

ROLLOUT_SHAPES = {  # model shape, and a workload that takes a minute or two on its device
    "tiny": dict(model=dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                            num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                            vocab_size=8192),
                 rows=64, prompt_len=32, max_new_tokens=512, mean_len=128, rollout_batch=16,
                 rounds=2),
    # Qwen3-1.7B's published configuration, random weights, bf16
    "qwen3-1.7b": dict(model=dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                                  num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                                  vocab_size=151936, tie_word_embeddings=True),
                       rows=64, prompt_len=64, max_new_tokens=512, mean_len=128,
                       rollout_batch=16, rounds=1),
}


def rollout_model(shape, mean_len, device, dtype, eos=0):
    """A random Qwen3 of `shape` whose EOS logit has a bias that makes it the sampled token with
    probability about 1 / mean_len at every step."""
    from transformers import AutoModelForCausalLM, Qwen3Config
    torch.manual_seed(0)
    config = Qwen3Config(**ROLLOUT_SHAPES[shape]["model"], max_position_embeddings=32768,
                         eos_token_id=eos, pad_token_id=eos, bos_token_id=None)
    with torch.device(device):  # initialised where it runs, in its dtype
        model = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    head = model.get_output_embeddings()
    biased = torch.nn.Linear(config.hidden_size, config.vocab_size, device=device, dtype=dtype)
    biased.weight = head.weight  # shared with the embedding when tied
    with torch.no_grad():
        biased.weight[eos] = 0
        biased.bias.zero_()
        ids = torch.randint(1, config.vocab_size, (8, 64), device=device)
        hidden = model.model(input_ids=ids).last_hidden_state
        others = head(hidden).float().logsumexp(-1).mean()  # log of the other tokens' mass
        biased.bias[eos] = others + torch.logit(torch.tensor(1 / mean_len))
    model.set_output_embeddings(biased)
    return model


def rollout_paths(model, prompts, a, device, seed):
    """(static, staged) results of one round: wall seconds, real tokens, row-steps, prefilled
    tokens, generate calls, response lengths."""
    import evaluate
    eos = model.config.eos_token_id
    dtype_bytes = 2 if device.type == "cuda" else 4
    results = []
    for staged in (False, True):
        torch.manual_seed(seed)
        t0 = sync(device)
        if staged:
            budget = gopd.sequences_per_call(model.config, a.rollout_batch, max(map(len, prompts)),
                                             a.max_new_tokens, dtype_bytes)
            responses, stats = evaluate.sample_staged(
                model, prompts, max_new_tokens=a.max_new_tokens, temperature=1.0, top_p=1.0,
                stop_ids=[eos], pad_id=eos, rows_per_call=budget,
                **({"keep": a.keep} if a.keep is not None else {}))
            lengths = [len(r) for r in responses]
            row_steps, prefill, calls = sum(stats["row_steps"]), stats["prefill"], stats["calls"]
        else:
            lengths, row_steps, prefill, calls = [], 0, 0, 0
            for s in range(0, len(prompts), a.rollout_batch):
                chunk = prompts[s:s + a.rollout_batch]
                seq, _, mask = gopd.rollout(model, chunk, eos, [eos], a.max_new_tokens, 1.0, 1.0)
                lengths += mask.sum(1).tolist()
                row_steps += mask.numel()
                prefill += (seq.shape[1] - mask.shape[1]) * len(chunk)
                calls += 1
        results.append({"s": sync(device) - t0, "tokens": sum(lengths), "row_steps": row_steps,
                        "prefill": prefill, "calls": calls, "lengths": lengths})
    return results


def rollout_bench(argv):
    p = argparse.ArgumentParser(description="the one-call rollout path next to the staged one")
    p.add_argument("--rollout", action="store_true", help="this mode")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   choices=["cpu", "cuda"])
    p.add_argument("--shape", default="tiny", choices=sorted(ROLLOUT_SHAPES),
                   help="tiny (CPU, float32) or qwen3-1.7b (random-init Qwen3-1.7B, bf16: a GPU)")
    p.add_argument("--json", action="store_true", help="print the results as JSON on the last line")
    for name in ["rows", "prompt_len", "max_new_tokens", "mean_len", "rollout_batch", "rounds"]:
        p.add_argument("--" + name.replace("_", "-"), type=int,
                       help="default: the shape's workload")
    p.add_argument("--keep", type=float, help="sample_staged's keep (default: its own)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads")
    a = p.parse_args(argv)
    for name, value in ROLLOUT_SHAPES[a.shape].items():
        if name != "model" and getattr(a, name) is None:
            setattr(a, name, value)
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench.py: error: --device cuda but torch sees no CUDA GPU")
    if a.device == "cpu":
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    dtype = torch.bfloat16 if a.shape != "tiny" else torch.float32
    say = (lambda *x, **k: print(*x, **k, file=sys.stderr)) if a.json else print
    model = rollout_model(a.shape, a.mean_len, device, dtype)
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(a.prompt_len // 2, a.prompt_len + 1, (a.rows,), generator=g).tolist()
    prompts = [torch.randint(1, model.config.vocab_size, (n,), generator=g).tolist()
               for n in lengths]
    rollout_paths(model, prompts[:4], argparse.Namespace(**{**vars(a), "max_new_tokens": 8}),
                  device, 0)  # warm up kernels and allocators
    totals = [{}, {}]
    for r in range(a.rounds):
        for total, result in zip(totals, rollout_paths(model, prompts, a, device, r + 1)):
            for k, v in result.items():
                total[k] = total.get(k, [] if k == "lengths" else 0) + v
        say(f"round {r + 1}/{a.rounds}: one-call {totals[0]['s']:.1f}s, "
            f"staged {totals[1]['s']:.1f}s")
    static, new = totals
    lengths = torch.tensor(static["lengths"] + new["lengths"], dtype=torch.float)
    result = {
        "useful_fraction": new["tokens"] / new["row_steps"],
        "static_useful_fraction": static["tokens"] / static["row_steps"],
        "new_vs_static": (new["s"] / new["tokens"]) / (static["s"] / static["tokens"]),
        "new_tokens_per_s": new["tokens"] / new["s"],
        "static_tokens_per_s": static["tokens"] / static["s"],
        "new_wall_s": new["s"], "static_wall_s": static["s"],
        "new_tokens": new["tokens"], "static_tokens": static["tokens"],
        "new_prefill_tokens": new["prefill"], "static_prefill_tokens": static["prefill"],
        "new_calls": new["calls"], "static_calls": static["calls"],
        "response_len_mean": lengths.mean().item(),
        "response_len_p10_p50_p90": lengths.quantile(torch.tensor([0.1, 0.5, 0.9])).tolist(),
        "response_len_max": lengths.max().item(),
        "shape": a.shape, "device": torch.cuda.get_device_name() if a.device == "cuda" else "cpu",
        "rows": a.rows, "rounds": a.rounds, "max_new_tokens": a.max_new_tokens,
        "rollout_batch": a.rollout_batch}
    say(f"{a.rows} rows x {a.rounds} rounds, {a.shape} on {result['device']}, responses "
        f"{result['response_len_mean']:.0f} tokens on average (max {a.max_new_tokens}), memory of "
        f"{a.rollout_batch} full-length rows per call")
    say(f"one-call: {static['s']:.1f}s, {result['static_tokens_per_s']:.0f} tokens/s, useful "
        f"{result['static_useful_fraction']:.3f}, {static['calls']} calls")
    say(f"staged:   {new['s']:.1f}s, {result['new_tokens_per_s']:.0f} tokens/s, useful "
        f"{result['useful_fraction']:.3f}, {new['calls']} calls, "
        f"{new['prefill'] / static['prefill']:.2f}x the prefill")
    for key, met, target in [("useful_fraction", result["useful_fraction"] >= 0.85, ">= 0.85"),
                             ("new_vs_static", result["new_vs_static"] <= 0.7, "<= 0.7")]:
        say(f"{key:16} {result[key]:.3f}  (target {target}: {'met' if met else 'MISSED'})")
    if a.json:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                          for k, v in result.items()}))

# -----------------------------------------------------------------------------
# --estimators: the scoring and update phases of one step, with the sampled and the exact estimator


def estimator_world(a, device):
    """A random Qwen3 student (float32), teacher and reference (bf16 on GPU) of a.est_hidden x
    a.est_layers with a.est_vocab tokens, built on the device, and a.est_rows micro-batches of one
    row each: a.est_prompt prompt + a.est_response response tokens, random, none of them EOS. The
    rollout does not depend on the estimator, so the rows are made here, not generated."""
    from transformers import Qwen3Config, Qwen3ForCausalLM
    gpu = device.type == "cuda"
    config = Qwen3Config(vocab_size=a.est_vocab, hidden_size=a.est_hidden, intermediate_size=3 * a.est_hidden,
                         num_hidden_layers=a.est_layers, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                         max_position_embeddings=a.est_prompt + a.est_response, tie_word_embeddings=True,
                         eos_token_id=0, pad_token_id=0, bos_token_id=None)
    models = []
    for seed, dtype in [(0, torch.float32), (1, torch.bfloat16 if gpu else torch.float32), (2, None)]:
        torch.manual_seed(seed)
        with torch.device(device):
            model = Qwen3ForCausalLM(config).to(dtype or models[1].dtype)
        models.append(model if seed == 0 else model.eval().requires_grad_(False))
    g = torch.Generator().manual_seed(0)
    n = a.est_prompt + a.est_response
    batches = [gopd.MicroBatch(torch.randint(1, a.est_vocab, (1, n), generator=g).to(device),
                               torch.ones(1, n, dtype=torch.long, device=device),
                               torch.ones(1, a.est_response, dtype=torch.long, device=device), [i], [None])
               for i in range(a.est_rows)]
    return models, batches


def estimator_step(models, batches, optimizer, scheduler, estimator, step, device):
    """gopd's scoring (score_batches) and update (update) of one step at lam 1.25: (seconds of each,
    peak bytes above what was allocated before: CUDA's allocator, or the process's peak RSS)."""
    from types import SimpleNamespace
    student, teacher, ref = models
    args = SimpleNamespace(estimator=estimator, lam=1.25, loss_agg="seq-mean-token-mean", temperature=1.0,
                           grad_clip=1.0, offload_frozen=False, out="(bench)")
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident set
        base = proc_status("VmRSS")
    t0 = sync(device)
    gopd.score_batches(batches, {None: teacher}, ref, {None: None}, {None: None}, 1.0, 0, device, False,
                       gopd.kept_positions(estimator, step))
    t1 = sync(device)
    gopd.update(student, batches, optimizer, scheduler, args, [0], [], step, [teacher, ref])
    t2 = sync(device)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else proc_status("VmHWM")
    return {"score": t1 - t0, "update": t2 - t1, "step": t2 - t0, "peak": peak - base}


def estimator_bench(a, say):
    """Both estimators on the same models and rows, in alternating rounds (one warm-up step each,
    which also makes AdamW's state); the median step and the largest peak."""
    device = torch.device(a.device)
    models, batches = estimator_world(a, device)
    optimizer = torch.optim.AdamW(models[0].parameters(), lr=1e-5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    runs = {"sampled": [], "exact": []}
    for estimator in runs:
        estimator_step(models, batches, optimizer, scheduler, estimator, 0, device)
    for r in range(a.rounds):
        for estimator, steps in runs.items():
            steps += [estimator_step(models, batches, optimizer, scheduler, estimator, 1 + r * a.steps + k, device)
                      for k in range(a.steps)]
        say(f"round {r + 1}/{a.rounds}: " + ", ".join(f"{k} {median(v, 'step'):.3f}s" for k, v in runs.items()))
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    say(f"\ndevice: {name}; Qwen3 {a.est_layers} layers x {a.est_hidden} hidden, vocab {a.est_vocab}, tied; "
        f"lam 1.25 (teacher and reference); {a.est_rows} micro-batches of 1 row, {a.est_prompt} prompt + "
        f"{a.est_response} response tokens; median of {a.rounds * a.steps} steps")
    say(f"{'':10}{'score':>10}{'update':>10}{'step':>10}{'peak MiB':>10}")
    result = {}
    for estimator, steps in runs.items():
        peak = max(s["peak"] for s in steps)
        cells = [median(steps, k) for k in ["score", "update", "step"]]
        say(f"{estimator:10}" + "".join(f"{c:>9.3f}s" for c in cells) + f"{peak / 2**20:>10.0f}")
        result[estimator] = {"score_s": round(cells[0], 4), "update_s": round(cells[1], 4),
                             "step_s": round(cells[2], 4), "peak_mib": round(peak / 2**20, 1)}
    result["exact_vs_sampled_time"] = round(result["exact"]["step_s"] / result["sampled"]["step_s"], 3)
    # on CPU a small run may grow no resident memory at all (freed blocks are reused): no ratio then
    memory = result["sampled"]["peak_mib"] and result["exact"]["peak_mib"] / result["sampled"]["peak_mib"]
    result["exact_vs_sampled_memory"] = round(memory, 3) if memory else None
    result["device"] = name
    say(f"exact / sampled: step time {result['exact_vs_sampled_time']:.2f}x, peak memory above the models "
        f"{f'{memory:.2f}x' if memory else 'not measurable at this size'}")
    return result

# -----------------------------------------------------------------------------


def median(steps, key):
    return statistics.median(s[key] for s in steps)


def main():
    if "--rollout" in sys.argv[1:]:
        return rollout_bench(sys.argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--json", action="store_true", help="print the three ratios as JSON on the last line")
    p.add_argument("--vocab", type=int, default=32768)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--samples", type=int, default=2, help="samples per prompt")
    p.add_argument("--prompt-words", type=int, default=24)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of each contender")
    p.add_argument("--steps", type=int, default=2, help="timed steps per contender per round (after one warm-up)")
    p.add_argument("--mem-vocab", type=int, default=151936)
    p.add_argument("--mem-response", type=int, default=1024)
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads; on a shared machine OpenMP threads that wait for each other thrash")
    p.add_argument("--memory-probe", choices=["naive", "gopd"], help=argparse.SUPPRESS)
    p.add_argument("--estimators", action="store_true",
                   help="instead: the scoring and update of one step with --estimator sampled and exact")
    p.add_argument("--est-vocab", type=int, default=151936, help="--estimators: vocabulary (Qwen3's)")
    p.add_argument("--est-hidden", type=int, help="--estimators: hidden size (default: 2048, Qwen3-1.7B's, "
                                                   "on CUDA; 128 on CPU)")
    p.add_argument("--est-layers", type=int, default=2, help="--estimators: decoder layers")
    p.add_argument("--est-rows", type=int, help="--estimators: micro-batches of one row (default: 4 on CUDA; 2)")
    p.add_argument("--est-prompt", type=int, default=512, help="--estimators: prompt tokens")
    p.add_argument("--est-response", type=int, help="--estimators: response tokens (default: 16384 on CUDA, the "
                                                     "paper's limit; 256 on CPU)")
    a = p.parse_args()
    if a.device == "cpu":
        torch.set_num_threads(a.threads)
    if a.memory_probe:
        print(memory_probe(a.memory_probe, a))
        return
    if a.estimators:
        gpu = a.device == "cuda"
        a.est_hidden = a.est_hidden or (2048 if gpu else 128)
        a.est_rows = a.est_rows or (4 if gpu else 2)
        a.est_response = a.est_response or (16384 if gpu else 256)
        result = estimator_bench(a, (lambda *x, **k: print(*x, **k, file=sys.stderr)) if a.json else print)
        if a.json:
            print(json.dumps(result))
        return
    try:
        import trl  # noqa: F401
    except ImportError:
        sys.exit("bench.py: error: the TRL comparison needs trl; pip install trl (benchmark only)")
    device = torch.device(a.device)
    say = (lambda *x, **k: print(*x, **k, file=sys.stderr)) if a.json else print

    runs = {"floor": [], "gopd": [], "trl": [], "exopd": []}
    with tempfile.TemporaryDirectory(prefix="gopd_bench_") as root:  # models, runs and checkpoints
        paths, prompts = build_world(root, a)
        for r in range(a.rounds):
            runs["floor"] += floor_steps(paths, prompts, a, device, a.steps)
            runs["gopd"] += gopd_steps(paths, a, a.steps)
            runs["trl"] += trl_steps(paths, prompts, a, device, a.steps)
            runs["exopd"] += gopd_steps(paths, a, a.steps, lam=1.25)  # for reference: one more frozen forward
            say(f"round {r + 1}/{a.rounds}: " + ", ".join(f"{k} {median(v, 'step'):.3f}s" for k, v in runs.items()))
    peaks = scoring_memory(a)

    threads = f"{torch.get_num_threads()} thread(s)"
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({os.cpu_count()} cores), {threads}"
    dtype = "bf16 (student fp32 master weights + autocast)" if device.type == "cuda" else "float32"
    say(f"\ndevice: {name}; {dtype}; Qwen2 {a.layers} layers x {a.hidden} hidden, vocab {a.vocab}; "
        f"{a.prompts} prompts x {a.samples} samples, {a.max_new_tokens} new tokens; "
        f"median of {a.rounds * a.steps} steps")
    say(f"{'':16}{'generate':>10}{'score':>10}{'update':>10}{'step':>10}{'tok/s':>10}{'/ floor':>10}")
    floor = median(runs["floor"], "step")
    labels = {"floor": "floor", "gopd": "gopd.py", "trl": "TRL GKDTrainer", "exopd": "gopd.py lam 1.25"}
    for key, steps in runs.items():
        step = median(steps, "step")
        cells = [median(steps, k) for k in ["generate", "score", "update"]] + [step]
        say(f"{labels[key]:16}" + "".join("       n/a" if c != c else f"{c:>9.3f}s" for c in cells)
            + f"{median(steps, 'tokens') / step:>10.0f}{step / floor:>10.2f}")
    say("(TRL scores inside its update: one loss runs the teacher and student forwards. At lam 1.25 gopd also\n"
        " scores the reference; the ratios use lam 1, the objective TRL can express.)")
    say(f"scoring peak memory, vocab {a.mem_vocab}, {a.mem_response} response tokens: naive "
        f"{peaks['naive'] / 2**20:.0f} MiB, gopd {peaks['gopd'] / 2**20:.0f} MiB")

    ratios = {"gopd_vs_trl": median(runs["gopd"], "step") / median(runs["trl"], "step"),
              "gopd_vs_floor": median(runs["gopd"], "step") / floor,
              "scoring_mem_vs_naive": peaks["gopd"] / peaks["naive"]}
    targets = {"gopd_vs_trl": 0.8, "gopd_vs_floor": 1.15, "scoring_mem_vs_naive": 0.25}
    for k, v in ratios.items():
        say(f"{k:22} {v:6.3f}  (target <= {targets[k]}: {'met' if v <= targets[k] else 'MISSED'})")
    if a.json:
        print(json.dumps({k: round(v, 3) for k, v in ratios.items()}))


if __name__ == "__main__":
    main()
