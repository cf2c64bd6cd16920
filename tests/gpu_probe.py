"""The Python side of tests/gpu_check.sh: real-shape models built in code, one gopd step on them, and the
summary of each stage of the check as JSON.

    python3 tests/gpu_probe.py --build ROOT                    # Qwen3-1.7B and Qwen3-4B shapes, random, bf16
    python3 -m torch.distributed.run --standalone --nproc_per_node=1 tests/gpu_probe.py --step ROOT SHAPE MODE
    python3 tests/gpu_probe.py --summarize OUT NAME RC SECONDS  # OUT/NAME.log -> OUT/NAME.json, OUT/gpu_check.json
    (--tiny: a tiny shape on CPU, the same code path in seconds)

--step runs gopd.main for one step (rollout, scoring by a teacher and the reference at lam 1.25, update) at world
size 1 under DDP or --fsdp, and prints one JSON line: the step's peak GPU memory (torch.cuda.max_memory_allocated
from the end of loading to the end of the update; the final checkpoint is not written) next to the memory plan's
prediction for the same run (tests/memory.py), tokens/s of each phase, and host memory (gopd's own
"models loaded" line and the process's peak). A random model never samples EOS in practice (1 in 151,936 per
token), so every sequence runs to --max-new-tokens; lengths are cut from the paper's 16k to fit the check's time.
The teacher and the reference are copies of the student's folder: the memory and compute of two distinct frozen
models of that size. Not collected by pytest.
"""

import argparse
import json
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# Published configurations (tests/memory.py's, plus what the hub's config.json adds), and a tiny one for CPU.
QWEN3 = dict(max_position_embeddings=40960, rope_theta=1e6, rms_norm_eps=1e-6)
TINY = dict(model_type="qwen3", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, vocab_size=4096, tie_word_embeddings=True)
# prompts per step, words per prompt, new tokens per response, micro-batch
SIZES = {"gpu": (8, 64, 512, 4), "tiny": (4, 8, 32, 2)}


def shapes(tiny):
    if tiny:
        return {"tiny": TINY}
    import memory
    return {"Qwen3-1.7B": dict(memory.SHAPES["Qwen/Qwen3-1.7B"], **QWEN3),
            "Qwen3-4B": dict(memory.SHAPES["Qwen/Qwen3-4B"], **QWEN3)}


def build(root, tiny):
    """ROOT/<shape>/ for every shape (bf16 weights, as the hub's; gopd loads the student in float32), random
    init on the GPU when there is one (seconds, not minutes), and ROOT/data.jsonl."""
    import torch
    from bench import make_tokenizer
    from transformers import AutoConfig, AutoModelForCausalLM
    device = "cuda" if torch.cuda.is_available() and not tiny else "cpu"
    prompts, words_per_prompt = SIZES["tiny" if tiny else "gpu"][:2]
    tokenizers = {}
    for name, shape in shapes(tiny).items():
        start, shape = time.time(), dict(shape)
        if shape["vocab_size"] not in tokenizers:
            tokenizers[shape["vocab_size"]] = make_tokenizer(shape["vocab_size"])
        tok = tokenizers[shape["vocab_size"]]
        config = AutoConfig.for_model(shape.pop("model_type"), eos_token_id=tok.eos_token_id,
                                      pad_token_id=tok.pad_token_id, bos_token_id=None, **shape)
        torch.manual_seed(0)
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        model.save_pretrained(os.path.join(root, name))
        tok.save_pretrained(os.path.join(root, name))
        del model
        print(f"built {name} in {time.time() - start:.0f} s", file=sys.stderr)
    g = torch.Generator().manual_seed(0)
    words = [w[1:] for w in tok.get_vocab() if len(w) == 4 and w[0] == "\u0120"]
    with open(os.path.join(root, "data.jsonl"), "w") as f:
        for _ in range(prompts):
            ids = torch.randint(len(words), (words_per_prompt,), generator=g).tolist()
            f.write(json.dumps({"prompt": " ".join(words[i] for i in ids)}) + "\n")
    print(json.dumps({"built": sorted(shapes(tiny)), "device": device}))


def step(root, shape, mode, tiny):
    """Inside torchrun (world size 1): one gopd step; prints this rank's measurements as JSON."""
    import torch
    import evaluate
    import gopd
    import memory
    from transformers import AutoConfig
    prompts, _, new_tokens, micro_batch = SIZES["tiny" if tiny else "gpu"]
    gpu = torch.cuda.is_available()
    model, out = os.path.join(root, shape), os.path.join(root, f"out_{shape}_{mode}")
    argv = ["--student", model, "--teacher", model, "--data", os.path.join(root, "data.jsonl"), "--lam", "1.25",
            "--steps", "1", "--prompts-per-step", str(prompts), "--samples-per-prompt", "1",
            "--max-new-tokens", str(new_tokens), "--micro-batch", str(micro_batch), "--rollout-batch", str(prompts),
            "--grad-checkpointing", "--log-samples-every", "0", "--grade-every", "0", "--out", out,
            *(["--fsdp"] if mode == "fsdp" else [])]
    marks, load_models = {}, gopd.load_models

    def loaded(*args, **kwargs):  # the step's peak starts when the models are in place
        models = load_models(*args, **kwargs)
        if gpu:
            torch.cuda.synchronize()
            marks["loaded"] = torch.cuda.max_memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        return models

    def at_save(*args, **kwargs):  # the step is done; writing the checkpoint is not part of it
        if gpu:
            marks["step_peak"] = torch.cuda.max_memory_allocated()

    gopd.load_models, gopd.save_checkpoint = loaded, at_save
    start = time.time()
    gopd.main(argv)
    run_s = time.time() - start
    metrics = next(json.loads(line) for line in open(os.path.join(out, "metrics.jsonl")) if "loss" in line)
    config = AutoConfig.from_pretrained(model)
    tok = gopd.load_tokenizer(model)
    prompt_len = max(len(evaluate.prompt_ids(tok, json.loads(line)["prompt"]))
                     for line in open(os.path.join(root, "data.jsonl")))
    predicted = memory.plan(config, [config, config], mode, 1, prompts, prompt_len, new_tokens, micro_batch, True,
                            on_gpu=gpu, rollout_batch=prompts)
    tokens = round(metrics["response_len"] * prompts)
    result = {"shape": shape, "mode": mode, "response_tokens": tokens, "prompt_tokens": prompt_len,
              "tokens_per_s": {k: round(tokens / metrics[f"time_{k}"], 1) for k in ["generate", "score", "update"]},
              "time_s": {k: round(metrics[f"time_{k}"], 2) for k in ["generate", "score", "update", "step"]},
              "run_s": round(run_s, 1), "predicted_peak_gib": round(predicted["peak"] / 2**30, 2),
              "host_peak_gib": round(memory.proc_status("VmHWM") / 2**30, 2)}
    if gpu:
        result.update(device=torch.cuda.get_device_name(), loaded_gib=round(marks["loaded"] / 2**30, 2),
                      peak_step_gib=round(marks["step_peak"] / 2**30, 2),
                      measured_vs_predicted=round(marks["step_peak"] / predicted["peak"], 3))
    print(json.dumps(result))


def error_line(text):
    """The first line of the real error in a stage's output: gopd's own one-line error, else the first
    exception line of a Python traceback (a torchrun child's, not torchrun's own ChildFailedError and its ====
    banner), else pytest's first FAILED line, else the last line."""
    lines = [re.sub(r"^\[(default)?rank\d+\]:\s?", "", line).rstrip() for line in text.splitlines()]
    lines = [line for line in lines if line.strip()]
    for line in lines:
        if line.startswith("gopd: error:"):
            return line
    for line in lines:
        if re.match(r"([A-Za-z_][\w.]*)?(Error|Exception|Interrupt|Exit)(: |$)", line) \
                and "ChildFailedError" not in line:
            return line
    failed = [line for line in lines if line.startswith(("FAILED", "ERROR "))]
    return (failed or lines or ["no output"])[0][:400]


def summarize(out, name, rc, seconds):
    """OUT/NAME.log and its exit code -> OUT/NAME.json, then every stage's entry so far -> OUT/gpu_check.json.
    An entry: status (ok, failed, timeout, or what a stage wrote itself), seconds, and the stage's own JSON
    (its last output line), or the first line of its error."""
    text = open(os.path.join(out, f"{name}.log"), errors="replace").read()
    lines = text.strip().splitlines()
    entry = {"status": "ok" if rc == 0 else "timeout" if rc in (124, 137) else "failed", "seconds": seconds}
    try:
        entry["result"] = json.loads(lines[-1])
    except (IndexError, ValueError):
        pass
    if name == "cuda_tests" and lines:
        entry["result"] = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", lines[-1])}
        entry["skipped"] = [line for line in lines if line.startswith("SKIPPED")]
    if lines and lines[-1].startswith("STATUS "):  # a stage that did not run says why
        entry["status"] = lines[-1].split(" ", 2)[1].replace("_", " ")
        entry["note"] = lines[-1].split(" ", 2)[2]
    elif rc != 0:
        entry["error"] = f"timed out after {seconds} s" if entry["status"] == "timeout" else error_line(text)
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(entry, f)
    order = open(os.path.join(out, "stages")).read().split()
    stages = {n: json.load(open(os.path.join(out, f"{n}.json"))) for n in order
              if os.path.exists(os.path.join(out, f"{n}.json"))}
    with open(os.path.join(out, "gpu_check.json"), "w") as f:
        json.dump({"stages": stages}, f)
    print(f"{name}: {entry['status']} in {seconds} s" + (f": {entry.get('error') or entry.get('note')}"
                                                        if entry["status"] != "ok" else ""), file=sys.stderr)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="a tiny shape on CPU")
    p.add_argument("--build", metavar="ROOT")
    p.add_argument("--step", nargs=3, metavar=("ROOT", "SHAPE", "MODE"))
    p.add_argument("--summarize", nargs=4, metavar=("OUT", "NAME", "RC", "SECONDS"))
    a = p.parse_args()
    if a.summarize:
        out, name, rc, seconds = a.summarize
        return summarize(out, name, int(rc), int(seconds))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path[:0] = [os.path.dirname(HERE), HERE]
    if a.build:
        build(a.build, a.tiny)
    elif a.step:
        step(*a.step, a.tiny)


if __name__ == "__main__":
    main()
