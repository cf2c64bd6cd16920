"""Throughput of evaluate.py's sampling (evaluate.sample: HF generate, bf16, KV cache) on a
randomly initialised model of Qwen3-4B's shape, built in code: new tokens per second for a batch
of 2 x 64 sequences. A random model never samples EOS in practice, so every sequence runs to
--new-tokens. Not collected by pytest; needs a GPU for a meaningful number.

    python tests/bench_generate.py --batch 64 --new-tokens 2048
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import torch  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

import evaluate  # noqa: E402
import memory  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--batch", type=int, default=64)
ap.add_argument("--prompt-tokens", type=int, default=256)
ap.add_argument("--new-tokens", type=int, default=2048)
args = ap.parse_args()
device = "cuda" if torch.cuda.is_available() else "cpu"
shape = dict(memory.SHAPES["Qwen/Qwen3-4B"], max_position_embeddings=40960)
config = AutoConfig.for_model(**shape)
torch.manual_seed(0)
with torch.device(device):
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
ids = torch.randint(0, config.vocab_size, (args.batch, args.prompt_tokens), device=device)
mask = torch.ones_like(ids)
results = []
for batch in (args.batch // 2, args.batch):   # the first call also warms up
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = evaluate.sample(model, ids[:batch], mask[:batch], max_new_tokens=args.new_tokens, temperature=1.0,
                          top_p=1.0, stop_ids=[], pad_id=0)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    new = out.shape[1] - args.prompt_tokens
    results.append({"batch": batch, "new_tokens": new, "seconds": round(seconds, 1),
                    "tokens_per_s": round(batch * new / seconds)})
print(json.dumps({"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "results": results}))
