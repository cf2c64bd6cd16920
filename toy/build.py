"""Build the bundled toy world: data, one shared character-level tokenizer, and five tiny models.

    python toy/build.py                      # rebuild toy/data and toy/models
                                             # (the committed assets)
    python toy/build.py --only small & python toy/build.py --only large
                                             # the same, in two processes
    python toy/build.py --micro --out /tmp/t # a seconds-long miniature of the same pipeline (tests)

The toy world reproduces the paper's multi-teacher and strong-to-weak settings in miniature:

- Two domains. **math**: 3-step word problems ("Tom has 7 pens, buys 5, eats 3 and finds 2.
  How many?") answered with a worked chain ("7+5=12. 12-3=9. 9+2=11. \\boxed{11}").
  **code**: write a one-line Python function from a short spec ("Write f(x) that returns x times
  3, plus 1."), checked by running assert-style tests.
- A **base student**, pretrained (supervised) on both formats from a sloppy solver that reads a
  math verb the wrong way round (its sums are always right) or slips on a code constant or
  built-in, each with probability NOISE, so that about a quarter of its answers are right. The
  student learns the right reading as the most likely one but samples many wrong ones: it is
  fluent, weak at temperature 1, and has support on the right answers.
- Two **domain experts**, each obtained from that same base by rejection-sampling fine-tuning
  with the verifiable reward (sample at temperature 1, keep what evaluate.py's checker accepts,
  fine-tune on it, repeat): the paper's domain teachers, obtained by domain RL from one student.
- A **larger base** (about 2.2x the parameters; same tokenizer, data and recipe) and its math
  expert, for strong-to-weak distillation with reward correction (`--ref` = the larger base).

Everything runs on one CPU thread from fixed seeds, so a rerun reproduces the files exactly on the
same machine (another CPU may round floating-point sums differently and get equivalent, not
bit-identical, models). Weights are stored in bfloat16 to keep the folder small; load them with
`dtype=torch.float32` to train.
"""
import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

import torch
import transformers
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

TOY = Path(__file__).resolve().parent
sys.path.insert(0, str(TOY.parent))
import evaluate  # noqa: E402  (the project's checkers and sampler, so rewards match evaluation)

# ---------------------------------------------------------------------------------------------
# Problems. Each generator returns (prompt, answer or tests, solve); solve(rng, style) writes a
# response, and style=None gives the gold one: every step careful, nothing misread.
#
# Both domains are chains of 2-4 operations, so solutions have a natural length: a careful solution
# takes one operation per step and, in math, first restates what the step does ("eats 3: 12-3=9.");
# a terse one skips the restatement and may fold several operations into one step ("12-3+5=14."),
# which is shorter and more error-prone. The base models' pretraining answers come from a sloppy
# writer with these chances (per operation):
#   careful    (math) that the operation gets a careful step of its own, which the writer never gets
#              wrong; otherwise it is terse;
#   misread    in a terse step, a math verb read the wrong way round ("eats 3" as +3); in code, a
#              constant off by one;
#   fold       that a terse operation joins the step before (code: every step is terse);
#   fold_slip  per operation folded into a step, that the step's result comes out wrong (math: off
#              by 1 or 2; code: a missing pair of parentheses around a sum that is then multiplied).
MATH_STYLE = dict(careful=0.35, misread=0.4, fold=0.5, fold_slip=0.4)
CODE_STYLE = dict(misread=0.25, fold=0.4, fold_slip=0.5)
GOLD = dict(careful=1.0, misread=0.0, fold=0.0, fold_slip=0.0)

NAMES = ["Tom", "Ann", "Bob", "Eve", "Sam", "Mia", "Max", "Zoe", "Leo", "Ivy"]
ITEMS = ["apples", "pens", "cards", "eggs", "coins", "books", "cups", "shells"]
ADD = ["buys {k}", "finds {k}"]
SUB = ["eats {k}", "loses {k}"]


def chunks(rng, ops, fold):
    """Split a chain of operations into steps: each operation after the first joins the step before
    with probability fold."""
    steps = [[ops[0]]]
    for op in ops[1:]:
        if rng.random() < fold:
            steps[-1].append(op)
        else:
            steps.append([op])
    return steps


def math_problem(rng):
    """A word problem of 2-4 operations on a count that stays in 0..20; returns (prompt, answer,
    solve)."""
    n, start = rng.randint(2, 4), rng.randint(2, 12)
    ops, value = [], start
    while len(ops) < n:
        k = rng.randint(1, 9)
        kind = rng.choice("+-") if k <= value else "+"
        if value + k <= 20 or kind == "-":
            ops.append((kind, k, rng.choice(ADD if kind == "+" else SUB).format(k=k)))
            value += k if kind == "+" else -k
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    words = [word for _, _, word in ops]
    prompt = f"{name} has {start} {item}, {', '.join(words[:-1])} and {words[-1]}. How many?"

    def solve(rng, style=None):
        s = style or GOLD
        lines, terse, v = [], [], start

        def write_terse(v):  # the pending terse operations as one step; returns its result
            expr, w = str(v), v
            for kind, k in terse:
                if rng.random() < s["misread"] and (kind == "-" or w >= k):
                    kind = "+" if kind == "-" else "-"
                w = w + k if kind == "+" else w - k
                expr += f"{kind}{k}"
            if rng.random() >= (1 - s["fold_slip"]) ** (len(terse) - 1):  # folded operations slip
                w = max(0, w + rng.choice([-2, -1, 1, 2])) if w > 2 else w + rng.choice([1, 2])
            lines.append(f"{expr}={w}.")
            terse.clear()
            return w

        for kind, k, word in ops:
            if rng.random() < s["careful"]:
                if terse:
                    v = write_terse(v)
                w = v + k if kind == "+" else v - k
                lines.append(f"{word}: {v}{kind}{k}={w}.")
                v = w
            else:
                if terse and rng.random() >= s["fold"]:
                    v = write_terse(v)
                terse.append((kind, k))
        if terse:
            v = write_terse(v)
        return " ".join(lines) + f" \\boxed{{{v}}}"

    return prompt, str(value), solve


VERBS = {"+": "add {k}", "-": "subtract {k}", "*": "multiply by {k}"}


def code_problem(rng):
    """A function applying 2-4 integer operations to its argument; returns (prompt, tests,
    solve)."""
    name, arg = rng.choice("fgh"), rng.choice(["x", "n", "a"])
    ops = [(rng.choice("+-*"), rng.randint(2, 9)) for _ in range(rng.randint(2, 4))]
    words = [VERBS[o].format(k=k) for o, k in ops]
    prompt = f"Write {name}({arg}): start from {arg}, {', '.join(words[:-1])} and {words[-1]}."

    def solve(rng, style=None):
        s = style or GOLD
        lines, var = [], arg
        steps = chunks(rng, ops, s["fold"])
        for i, step in enumerate(steps):
            expr, bare_sum = var, False  # bare_sum: expr ends in an unparenthesized + or -
            for o, k in step:
                if rng.random() < s["misread"]:
                    k += rng.choice([-1, 1])
                if o == "*" and bare_sum and rng.random() >= s["fold_slip"]:
                    expr, bare_sum = f"({expr})*{k}", False
                else:  # a slip here drops the parentheses: x+3*2 for (x+3)*2
                    expr, bare_sum = f"{expr}{o}{k}", bare_sum or o in "+-"
            lines.append(f"    return {expr}" if i == len(steps) - 1 else f"    y = {expr}")
            var = "y"
        return f"def {name}({arg}):\n" + "\n".join(lines)

    namespace = {}
    exec(solve(random.Random(0)), namespace)
    tests = "\n".join(f"assert {name}({x})=={namespace[name](x)}" for x in (0, 1, 3, 7))
    return prompt, tests, solve


PROBLEMS = {"math": (math_problem, "answer", MATH_STYLE),
            "code": (code_problem, "tests", CODE_STYLE)}


def make_rows(rng, domain, count, exclude=()):
    """count distinct problems of one domain as JSONL rows (prompt, domain, answer|tests)."""
    make, field, _ = PROBLEMS[domain]
    rows, seen = [], set(exclude)
    while len(rows) < count:
        prompt, target, _ = make(rng)
        if prompt not in seen:
            seen.add(prompt)
            rows.append({"prompt": prompt, "domain": domain, field: target})
    return rows


def sloppy_corpus(rng, count, exclude):
    """Pretraining pairs (prompt, response) for the base models: both domains, the sloppy writer."""
    pairs = []
    while len(pairs) < count:
        make, _, style = PROBLEMS["math" if rng.random() < 0.5 else "code"]
        prompt, _, solve = make(rng)
        if prompt not in exclude:
            pairs.append((prompt, solve(rng, style)))
    return pairs


# ---------------------------------------------------------------------------------------------
# Tokenizer and models.

SPECIALS = ["<|pad|>", "<|unk|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
# Each turn is <|role|>content; an assistant turn ends with <|end|> (the EOS), so SFT teaches the
# model to stop, and generation starts right after the <|assistant|> header.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}<|end|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def make_tokenizer():
    """One token per character (printable ASCII, newline, tab) plus the chat specials."""
    chars = [chr(i) for i in range(32, 127)] + ["\n", "\t"]
    vocab = {token: i for i, token in enumerate(SPECIALS + chars)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<|unk|>"))
    # every char alone
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()  # join tokens back with nothing in between
    return PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<|end|>", pad_token="<|pad|>", unk_token="<|unk|>",
        additional_special_tokens=SPECIALS[3:], chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False, model_max_length=256,
    )


def make_model(tokenizer, hidden, layers, seed):
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, intermediate_size=3 * hidden,
        max_position_embeddings=256, tie_word_embeddings=True, bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def encode(tokenizer, prompt, response):
    """Token ids of the chat-rendered prompt + response + EOS, and the prompt length."""
    p = tokenizer(evaluate.render_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return p + r, len(p)


def finetune(model, tokenizer, pairs, steps, batch_size, lr, seed):
    """Supervised training on the response tokens of (prompt, response) pairs; cosine lr decay."""
    examples = [encode(tokenizer, p, r) for p, r in pairs]
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.0)
    model.train()
    for step in range(steps):
        for group in opt.param_groups:
            warm = min(1.0, (step + 1) / 20)
            group["lr"] = lr * warm * (
                0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(step / steps * torch.pi)).item()))
        batch = [examples[i]
                 for i in torch.randint(len(examples), (batch_size,), generator=gen).tolist()]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((batch_size, width), tokenizer.pad_token_id)
        labels = torch.full((batch_size, width), -100)
        mask = torch.zeros(batch_size, width, dtype=torch.long)
        for row, (ids, n_prompt) in enumerate(batch):
            input_ids[row, :len(ids)] = torch.tensor(ids)
            labels[row, n_prompt:len(ids)] = torch.tensor(ids[n_prompt:])
            mask[row, :len(ids)] = 1
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 100 == 0 or step == steps - 1:
            print(f"    step {step:5d}  loss {loss.item():.4f}", flush=True)
    model.eval()


def check_unique(rows, responses):
    """evaluate.check_many on each distinct (row, response) pair once: a sharp model repeats itself,
    and every code check is a sandboxed interpreter."""
    keys = [(json.dumps(row, sort_keys=True), y) for row, y in zip(rows, responses)]
    unique = dict(zip(keys, zip(rows, responses)))
    verdicts = dict(zip(unique, evaluate.check_many(*zip(*unique.values())))) if unique else {}
    return [verdicts[key] for key in keys]


def sample_and_check(model, tokenizer, rows, n, batch_size, seed, temperature=1.0):
    """n samples per row (temperature 0: greedy); returns (responses per row, rewards per row)."""
    torch.manual_seed(seed)
    responses = evaluate.generate(model, tokenizer, [r["prompt"] for r in rows], n=n,
                                  max_new_tokens=MAX_NEW, temperature=temperature, top_p=1.0,
                                  batch_size=batch_size)
    flat = check_unique([row for row in rows for _ in range(n)],
                        [y for ys in responses for y in ys])
    return responses, [flat[i * n:(i + 1) * n] for i in range(len(rows))]


def rejection_sampling(model, tokenizer, rows, rounds, prompts, k, steps, batch_size, lr, seed):
    """RFT: sample k answers per prompt at temperature 1, keep those the verifier accepts, fine-tune
    on everything kept so far; repeat. The reward is evaluate.py's checker, as in the paper's
    domain RL."""
    rng = random.Random(seed)
    kept = set()
    for r in range(rounds):
        batch = rng.sample(rows, min(prompts, len(rows)))
        responses, rewards = sample_and_check(model, tokenizer, batch, k, batch_size=256,
                                              seed=seed + r)
        kept |= {(row["prompt"], y) for row, ys, rs in zip(batch, responses, rewards)
                 for y, ok in zip(ys, rs) if ok}
        rate = sum(map(sum, rewards)) / (len(batch) * k)
        print(f"  round {r}: sample accuracy {rate:.3f}, {len(kept)} distinct correct answers kept",
              flush=True)
        if kept:
            finetune(model, tokenizer, sorted(kept), steps, batch_size, lr, seed + 1000 + r)


def accuracy(model, tokenizer, rows, n, seed, temperature=1.0):
    rewards = sample_and_check(model, tokenizer, rows, n, 256, seed, temperature)[1]
    return round(sum(map(sum, rewards)) / (len(rows) * n), 4)


def save(model, tokenizer, path):
    """Weights in bfloat16 (small files); the tokenizer files are identical for every model."""
    # Sampling defaults that match what the trainer and the evaluation assume: the full
    # distribution (transformers would otherwise apply top_k=50 when nothing is set).
    model.generation_config.update(do_sample=True, temperature=1.0, top_p=1.0, top_k=0)
    shutil.rmtree(path, ignore_errors=True)
    model.to(torch.bfloat16).save_pretrained(path)
    tokenizer.save_pretrained(path)
    model.to(torch.float32)


# ---------------------------------------------------------------------------------------------

# rft: (rounds, fine-tuning steps per round) for each expert. The budgets differ as the paper's do
# (math 500 GRPO steps, code 300), set so that the same-size experts stay well below the ceiling
# (55-75% at temperature 1); the larger math expert gets more, as the paper's strong teacher is the
# strongest model in its setting.
FULL = dict(train=2000, test=1000, quick=200, corpus=76800, small=(96, 4), large=(128, 5), batch=32,
            base_steps=2400, large_steps=2400, lr=3e-3, rft_prompts=256, k=4, rft_lr=7e-4,
            report=300, eval_n=2, rft={"math_expert": (2, 20), "code_expert": (1, 10),
                                       "large_math_expert": (4, 20)})
MICRO = dict(train=24, test=8, quick=4, corpus=200, small=(16, 1), large=(24, 1), batch=8,
             base_steps=4, large_steps=4, lr=3e-3, rft_prompts=8, k=2, rft_lr=1e-3, report=8,
             eval_n=1, rft={"math_expert": (1, 2), "code_expert": (1, 2),
                            "large_math_expert": (1, 2)})
MAX_NEW = 96


def build(out, cfg, seed=0, families=("small", "large")):
    t0 = time.time()
    rng = random.Random(seed)
    data, model_dir = out / "data", out / "models"
    test = {d: make_rows(rng, d, cfg["test"]) for d in ("math", "code")}
    held_out = {r["prompt"] for rows in test.values() for r in rows}
    train = {d: make_rows(rng, d, cfg["train"], exclude=held_out) for d in ("math", "code")}
    mixed = [row for pair in zip(train["math"], train["code"]) for row in pair]
    # one writer, so that --only small and --only large can run side by side
    if "small" in families:
        data.mkdir(parents=True, exist_ok=True)
        # the quick_* files: the default run's quick evaluation
        files = [("train", mixed)] + [(f"test_{d}", test[d]) for d in test] + \
            [(f"quick_{d}", test[d][:cfg["quick"]]) for d in test]
        for name, rows in files:
            with open(data / f"{name}.jsonl", "w") as f:
                f.writelines(json.dumps(row) + "\n" for row in rows)
    corpus = sloppy_corpus(rng, cfg["corpus"], held_out)
    tokenizer = make_tokenizer()
    scores = {}

    # a quick look for the log; toy/experiments.py measures the quality table
    def report(name, model):
        rows = {d: test[d][:cfg["report"]] for d in test}
        scores[name] = {d: {"sampled": accuracy(model, tokenizer, rows[d], cfg["eval_n"], seed),
                            "greedy": accuracy(model, tokenizer, rows[d], 1, seed, temperature=0.0)}
                        for d in test}
        print(f"{name}: {scores[name]}  ({time.time() - t0:.0f}s)", flush=True)

    for size, steps, base_name, experts in [
        ("small", cfg["base_steps"], "student", ["math", "code"]),
        ("large", cfg["large_steps"], "large_base", ["math"]),
    ]:
        if size not in families:
            continue
        print(f"pretraining {base_name}", flush=True)
        base = make_model(tokenizer, *cfg[size], seed=seed)
        finetune(base, tokenizer, corpus, steps, cfg["batch"], cfg["lr"], seed)
        save(base, tokenizer, model_dir / base_name)
        report(base_name, base)
        for domain in experts:
            name = f"{'large_' if size == 'large' else ''}{domain}_expert"
            print(f"rejection-sampling fine-tuning {name}", flush=True)
            expert = make_model(tokenizer, *cfg[size], seed=seed)
            expert.load_state_dict(base.state_dict())
            rounds, rft_steps = cfg["rft"][name]
            rejection_sampling(expert, tokenizer, train[domain], rounds, cfg["rft_prompts"],
                               cfg["k"], rft_steps, cfg["batch"], cfg["rft_lr"], seed)
            save(expert, tokenizer, model_dir / name)
            report(name, expert)
    return scores


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=TOY,
                        help="folder to write data/ and models/ into")
    parser.add_argument("--micro", action="store_true", help="tiny sizes and few steps (for tests)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["small", "large"],
                        help="build one model family: small (data, student, experts) or large "
                             "(the larger pair); the two are independent, so two processes halve "
                             "the wait")
    args = parser.parse_args()
    if args.micro and args.out.resolve() == TOY:
        parser.error("--micro needs --out DIR: it must not overwrite the committed toy assets")
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # one thread: the same float summation order whatever the core count
    transformers.utils.logging.disable_progress_bar()
    families = [args.only] if args.only else ["small", "large"]
    scores = build(args.out, MICRO if args.micro else FULL, args.seed, families)
    print(json.dumps(scores))


if __name__ == "__main__":
    main()
