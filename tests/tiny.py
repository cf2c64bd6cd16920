"""Tiny models and tokenizers built in code for the tests, saved with save_pretrained and loaded
back with from_pretrained: the same path users take with real models, with no download."""

import json
import os
import string

import torch

CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}"
                 "{% if m['role'] == 'assistant' %}<|end|>{% endif %}{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def build_tokenizer(path, chat_template=True, extra_chars=""):
    """A character-level tokenizer whose pad token is its EOS, as in many chat models."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    specials = ["<|end|>", "<|user|>", "<|assistant|>", "<|unk|>"]
    chars = sorted(set(string.printable) | set(extra_chars))
    vocab = {t: i for i, t in enumerate(specials + chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|end|>", pad_token="<|end|>",
                                 unk_token="<|unk|>", additional_special_tokens=specials[1:3])
    if chat_template:
        hf.chat_template = CHAT_TEMPLATE
    hf.save_pretrained(path)
    return hf


def build_model(path, tokenizer, seed=0, hidden=32, layers=2, vocab_pad=0, context=256, scale=1.0, tie=True):
    """A random tiny Qwen3 model sharing `tokenizer`; vocab_pad adds unused embedding rows, as model
    families do to round the vocabulary size; tie=False gives it an output layer of its own (as
    Qwen3-8B has; 1.7B and 4B tie it to the embeddings)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM
    torch.manual_seed(seed)
    config = Qwen3Config(vocab_size=len(tokenizer) + vocab_pad, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4,
                         max_position_embeddings=context, tie_word_embeddings=tie,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=None)
    model = Qwen3ForCausalLM(config)
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(scale)
        if not tie:
            model.lm_head.weight.mul_(scale)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model


def make_stopper(path, prompts):
    """Point the output layer's EOS row (the embedding's too when tied) along the model's mean final
    hidden state, scaled so that greedy rollouts of `prompts` stop after varied numbers of tokens."""
    import evaluate
    import gopd
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    ids, attn = gopd.left_pad([evaluate.prompt_ids(tok, p) for p in prompts], tok.pad_token_id)
    eos_row = model.get_output_embeddings().weight
    with torch.no_grad():
        hidden = model.model(input_ids=ids, attention_mask=attn).last_hidden_state[attn.bool()]
        direction = hidden.mean(0) / hidden.mean(0).norm()
        best = (0, None)
        for alpha in torch.linspace(0.1, 0.3, 21):
            eos_row[tok.eos_token_id] = alpha * direction
            lengths = gopd.rollout(model, [evaluate.prompt_ids(tok, p) for p in prompts], tok.pad_token_id,
                                   [tok.eos_token_id], 16, 0, 1.0)[2].sum(1)
            best = max(best, (len(set(lengths.tolist())), alpha), key=lambda b: b[0])
        eos_row[tok.eos_token_id] = best[1] * direction
    model.save_pretrained(path)


def write_jsonl(path, rows):
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return str(path)


def make_world(root, n_prompts=16):
    """Student, a math and a code teacher, and prompts of both domains under root."""
    root = str(root)
    tok = build_tokenizer(os.path.join(root, "tok"))
    paths = {}
    for name, seed in [("student", 0), ("math", 1), ("code", 2)]:
        paths[name] = os.path.join(root, name)
        build_model(paths[name], tok, seed=seed, scale=8.0 if name != "student" else 1.0)
    rows = [{"prompt": f"add {i} and {i + 1}", "domain": "math"} for i in range(n_prompts // 2)]
    rows += [{"prompt": [{"role": "user", "content": f"def f{i}"}], "domain": "code"} for i in range(n_prompts // 2)]
    make_stopper(paths["student"], [r["prompt"] for r in rows])
    paths["data"] = write_jsonl(os.path.join(root, "data.jsonl"), rows)
    return paths


def base_args(w, out, teachers=None, **over):
    """gopd argv for a make_world world; teachers defaults to the math and code domain teachers."""
    args = {"--student": w["student"], "--data": w["data"], "--lam": "1.25", "--steps": "2",
            "--prompts-per-step": "4", "--samples-per-prompt": "2", "--max-new-tokens": "16",
            "--micro-batch": "3", "--rollout-batch": "8", "--lr": "1e-3", "--out": str(out)}
    args.update(over)
    argv = [x for k, v in args.items() if v is not None for x in ([k] if v == "" else [k, v])]
    teachers = teachers or [f"math={w['math']}", f"code={w['code']}"]
    return argv + [x for t in teachers for x in ("--teacher", str(t))]


def weights(folder):
    from safetensors.torch import load_file
    return load_file(os.path.join(folder, "model.safetensors"))


def run_main(argv):
    """gopd.main(argv), which must stop with SystemExit; returns its message."""
    import gopd
    import pytest
    with pytest.raises(SystemExit) as e:
        gopd.main(argv)
    return str(e.value)
