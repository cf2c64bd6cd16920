"""Real-shape probe: one full gopd step (rollout of 2,048 new tokens per sequence, scoring by a teacher
and the reference, update) on a randomly initialised model with Qwen3-1.7B's published configuration,
built in code (no download), under DDP and under --fsdp at world size 1: peak GPU memory and tokens/s,
next to the memory plan's prediction (tests/memory.py) for the same run.

    python tests/gpu_probe.py --json     # both modes, each in a fresh torchrun; JSON on the last line
    python tests/gpu_probe.py --tiny     # the same code path on CPU with a tiny model (a smoke test)

Part of tests/gpu_check.sh; not collected by pytest. A random model never samples EOS in practice
(1 in 151,936 per token), so every sequence runs to --max-new-tokens. The teacher and the reference
are copies of the student's weights: their memory and compute are those of two distinct frozen
models of that size (lam = 1.25, so the reference is scored too). The rollout batch is gopd's own
choice (no --rollout-batch): the KV-cache budget caps it at the step's 16 rows or at what fits. The
step's peak is torch.cuda.max_memory_allocated from the rollout to the end of the update; the final
checkpoint is not written (the CUDA tests cover saving under FSDP on a GPU).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import torch  # noqa: E402

import gopd  # noqa: E402
import memory  # noqa: E402

TINY = dict(model_type="qwen3", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, vocab_size=4096, tie_word_embeddings=True)
FULL = dict(memory.SHAPES["Qwen/Qwen3-1.7B"], max_position_embeddings=40960, rope_theta=1e6, rms_norm_eps=1e-6)


def build(root, shape, prompts, prompt_words, device):
    """The model folder (bf16 weights; gopd loads the student in float32) and the prompts file."""
    from bench import make_tokenizer
    from transformers import AutoConfig, AutoModelForCausalLM
    tok = make_tokenizer(shape["vocab_size"])
    shape = dict(shape)
    config = AutoConfig.for_model(shape.pop("model_type"), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                  bos_token_id=None, **shape)
    torch.manual_seed(0)
    with torch.device(device):  # random init on the GPU: seconds, not minutes
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(os.path.join(root, "model"))
    tok.save_pretrained(os.path.join(root, "model"))
    g = torch.Generator().manual_seed(0)
    words = [w[1:] for w in tok.get_vocab() if len(w) == 4 and w[0] == "\u0120"]
    with open(os.path.join(root, "data.jsonl"), "w") as f:
        for _ in range(prompts):
            f.write(json.dumps({"prompt": " ".join(words[i] for i in torch.randint(len(words), (prompt_words,),
                                                                                generator=g).tolist())}) + "\n")


def run_mode(root, mode, a):
    """Inside torchrun: one gopd step; returns this rank's measurements."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = os.path.join(root, f"out_{mode}")
    argv = ["--student", os.path.join(root, "model"), "--teacher", os.path.join(root, "model"),
            "--data", os.path.join(root, "data.jsonl"), "--lam", "1.25", "--steps", "1",
            "--prompts-per-step", str(a.prompts), "--samples-per-prompt", "1", "--max-new-tokens", str(a.new_tokens),
            "--micro-batch", str(a.micro_batch), "--grad-checkpointing", "--log-samples-every", "0", "--out", out,
            *(["--fsdp"] if mode == "fsdp" else [])]
    marks = {}
    rollout_batches, choose_rollout_batch = gopd.rollout_batches, gopd.choose_rollout_batch

    def chosen_batch(*args, **kwargs):
        marks["rollout_batch"] = choose_rollout_batch(*args, **kwargs)
        return marks["rollout_batch"]

    def at_rollout(*args, **kwargs):  # the step starts: peaks from here on
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        return rollout_batches(*args, **kwargs)

    def at_save(*args, **kwargs):  # the step is done; writing 30 GB of checkpoint is not part of it
        if device.type == "cuda":
            marks["step_peak"] = torch.cuda.max_memory_allocated()

    gopd.rollout_batches, gopd.choose_rollout_batch, gopd.save_checkpoint = at_rollout, chosen_batch, at_save
    start = time.time()
    gopd.main(argv)
    step = next(json.loads(line) for line in open(os.path.join(out, "metrics.jsonl")) if "loss" in json.loads(line))
    chosen = marks["rollout_batch"]
    from transformers import AutoConfig
    config = AutoConfig.from_pretrained(os.path.join(root, "model"))
    prompt_len = max(len(gopd.prompt_ids(gopd.load_tokenizer(os.path.join(root, "model")), json.loads(line)["prompt"]))
                     for line in open(os.path.join(root, "data.jsonl")))
    predicted = memory.plan(config, [config, config], mode, 1, a.prompts, prompt_len, a.new_tokens, a.micro_batch,
                            True, on_gpu=device.type == "cuda", rollout_batch=chosen)
    result = {"mode": mode, "rollout_batch": chosen, "response_tokens": round(step["response_len"] * a.prompts),
              "tokens_per_s": round(step["tokens_per_s"], 1),
              "time_s": {k: round(step[f"time_{k}"], 2) for k in ["generate", "score", "update", "step"]},
              "run_s": round(time.time() - start, 1),
              "predicted_peak_gib": round(predicted["peak"] / 2**30, 2)}
    if device.type == "cuda":
        result.update(peak_step_gib=round(marks["step_peak"] / 2**30, 2),
                      peak_total_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2),
                      measured_vs_predicted=round(marks["step_peak"] / predicted["peak"], 3))
    with open(os.path.join(root, f"result_{mode}.json"), "w") as f:
        json.dump(result, f)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="a tiny model on CPU: the same code path, in seconds")
    p.add_argument("--json", action="store_true", help="print the results as JSON on the last line")
    p.add_argument("--modes", nargs="+", default=["ddp", "fsdp"], choices=["ddp", "fsdp"])
    p.add_argument("--run-mode", nargs=2, metavar=("ROOT", "MODE"), help=argparse.SUPPRESS)
    a = p.parse_args()
    a.prompts, a.prompt_words = (4, 8) if a.tiny else (16, 64)
    a.new_tokens, a.micro_batch = (32, 2) if a.tiny else (2048, 4)
    if a.run_mode:
        run_mode(*a.run_mode, a)
        return
    say = (lambda *x: print(*x, file=sys.stderr)) if a.json else print
    gpu = torch.cuda.is_available() and not a.tiny
    if not gpu and not a.tiny:
        sys.exit("gpu_probe.py: error: no CUDA GPU; pass --tiny for the CPU smoke test")
    results = {"device": torch.cuda.get_device_name() if gpu else "cpu", "shape": "tiny" if a.tiny else "Qwen3-1.7B"}
    env = dict(os.environ, OMP_NUM_THREADS="1") if not gpu else dict(os.environ)
    if not gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    with tempfile.TemporaryDirectory(prefix="gopd_probe_") as root:
        t = time.time()
        build(root, TINY if a.tiny else FULL, a.prompts, a.prompt_words, "cuda" if gpu else "cpu")
        say(f"built the model in {time.time() - t:.0f} s")
        for mode in a.modes:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                   os.path.abspath(__file__), *(["--tiny"] if a.tiny else []), "--run-mode", root, mode]
            run = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if run.returncode:
                results[mode] = {"error": (run.stderr or run.stdout).strip().splitlines()[-1][:300]}
                say(run.stdout[-2000:] + run.stderr[-4000:])
            else:
                results[mode] = json.load(open(os.path.join(root, f"result_{mode}.json")))
            say(f"{mode}: {results[mode]}")
    if a.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
