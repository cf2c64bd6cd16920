"""The staged rollout path (evaluate.sample_staged, gopd.rollout_batches' default) against the
one-call path (evaluate.sample): the same greedy tokens, the same sampled distribution, the same
masks and layout, the same training step."""

import functools
import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import evaluate
import gopd
import tiny
from tiny import base_args, weights


def load(path):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(path)


def world_prompts(tok, n):
    chat = [[{"role": "user", "content": f"def f{i}"}] for i in range(n // 2)]
    return [evaluate.prompt_ids(tok, p) for p in [f"add {i} and 1" for i in range(n // 2)] + chat]


def test_greedy_staged_rollouts_equal_the_one_call_path(world, monkeypatch):
    """Temperature 0: the same tokens, micro-batches and layout, whether the whole pool fits one
    call, or a tight budget makes rows continue from generate's KV cache and others wait and start
    again from their prefix; evaluate.generate gives the same texts."""
    model, tok = load(world["student"])
    prompts = world_prompts(tok, 24)
    eos, pad = tok.eos_token_id, tok.pad_token_id
    seq, attn, mask = gopd.rollout(model, prompts, pad, [eos], 16, 0, 1.0)
    expected = [seq[i, -16:][mask[i].bool()].tolist() for i in range(len(prompts))]
    lengths = {len(r) for r in expected}
    assert min(lengths) < 8 and 16 in lengths  # rows stop early and run to the limit
    calls, real = [], evaluate._generate

    def recorded(model, config, input_ids, attention_mask, **kwargs):  # how each call starts
        rows = [ids[m.bool()].tolist() for ids, m in zip(input_ids, attention_mask)]
        if kwargs[evaluate._cache_name()] is not None:
            calls.append("cache")
        else:
            calls.append("prefix" if any(r not in prompts for r in rows) else "prompt")
        return real(model, config, input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    monkeypatch.setattr(evaluate, "_generate", recorded)
    for budget, ways in [(1000, {"prompt", "cache"}), (200, {"prompt", "cache", "prefix"})]:
        calls.clear()
        responses, stats = evaluate.sample_staged(
            model, prompts, max_new_tokens=16, temperature=0, top_p=1.0, stop_ids=[eos],
            pad_id=pad, rows_per_call=lambda w, n: max(1, budget // (w + n)))
        assert responses == expected
        assert set(calls) == ways and stats["calls"] == len(calls)
        assert sum(map(len, responses)) <= sum(stats["row_steps"]) < len(prompts) * 16
    monkeypatch.undo()

    sampling = dict(max_new_tokens=16, temperature=0, top_p=1.0, stop_ids=[eos], pad_id=pad)
    idx, domains = list(range(100, 124)), ["math"] * 12 + ["code"] * 12
    one = gopd.rollout_batches(model, prompts, idx, domains, sampling, 24, 5, staged=False)
    staged = gopd.rollout_batches(model, prompts, idx, domains, sampling, 24, 5)
    assert len(one) == len(staged) == 5
    for a, b in zip(one, staged):
        assert a.idx == b.idx and a.domains == b.domains
        for key in ["seq", "attn", "mask"]:
            assert torch.equal(getattr(a, key), getattr(b, key)), key
        assert b.mask.sum() <= b.row_steps <= a.row_steps
    texts = [evaluate.generate(model, tok, ["add 3 and 4", [{"role": "user", "content": "def g"}]],
                               n=2, max_new_tokens=16, temperature=0, batch_size=1, staged=staged)
             for staged in (True, False)]
    assert texts[0] == texts[1]


# -----------------------------------------------------------------------------
# The sampled distribution


@pytest.fixture(scope="module")
def peaked(tmp_path_factory):
    """A tiny model whose next-token distributions are peaked (a scaled output layer) and depend on
    the tokens before the last one and on their positions (sharp attention, RoPE base 2), with an
    EOS row along the mean final hidden state that stops rows after varied numbers of tokens (at
    temperature 1, 24 tokens at most: a tenth stop at once, half within 13, two fifths reach 24).
    No chat template: prompts are raw ids."""
    path = tmp_path_factory.mktemp("peaked")
    tok = tiny.build_tokenizer(path, chat_template=False)
    tiny.build_model(path, tok, seed=3, tie=False)
    config = json.loads((path / "config.json").read_text())
    config["rope_parameters"]["rope_theta"] = 2.0
    (path / "config.json").write_text(json.dumps(config))
    model, tok = load(path)
    prompts = [tok("a").input_ids, tok("bcd").input_ids]
    with torch.no_grad():
        model.lm_head.weight.mul_(40)
        for layer in model.model.layers:
            layer.self_attn.q_norm.weight.mul_(4)
            layer.self_attn.k_norm.weight.mul_(4)
        eos = tok.eos_token_id
        seq = gopd.rollout(model, prompts * 50, eos, [eos], 16, 1.0, 1.0)[0]
        hidden = model.model(input_ids=seq).last_hidden_state.flatten(0, 1).mean(0)
        model.lm_head.weight[eos] = 4 * hidden / hidden.norm()
    return model, tok, prompts


@pytest.fixture(scope="module")
def one_call(peaked):
    """The one-call path's responses to 1,500 rows of each prompt (temperature 1, 24 tokens)."""
    model, tok, prompts = peaked
    rows = [prompts[0]] * 1500 + [prompts[1]] * 1500
    torch.manual_seed(1)
    seq, _, mask = gopd.rollout(model, rows, tok.eos_token_id, [tok.eos_token_id], 24, 1.0, 1.0)
    return rows, [seq[i, -24:][mask[i].bool()].tolist() for i in range(len(rows))]


def chi_square_same(a, b, alpha_z=4.265):
    """Chi-square test that two samples (lists of hashable outcomes) come from one distribution:
    outcomes seen fewer than 10 times in both together are pooled into one cell; the statistic is
    compared with the chi-square quantile at p = 1e-5 (z = 4.265, Wilson-Hilferty). Returns
    (statistic, critical value)."""
    cells = {}
    for sample, column in [(a, 0), (b, 1)]:
        for x in sample:
            cells.setdefault(x, [0, 0])[column] += 1
    rare = [0, 0]
    table = []
    for counts in cells.values():
        if sum(counts) >= 10:
            table.append(counts)
        else:
            rare = [rare[0] + counts[0], rare[1] + counts[1]]
    table += [rare] if sum(rare) else []
    share = len(a) / (len(a) + len(b))  # of each cell's count expected in sample a
    stat = sum((x - (x + y) * share) ** 2 / ((x + y) * share)
               + (y - (x + y) * (1 - share)) ** 2 / ((x + y) * (1 - share)) for x, y in table)
    df = max(1, len(table) - 1)
    return stat, df * (1 - 2 / (9 * df) + alpha_z * math.sqrt(2 / (9 * df))) ** 3


def statistics(responses, prompt_rows, boundary):
    """Two views of a sample: the pairs (token before a stage boundary, token after it) of the rows
    of the first prompt, whose joint frequencies show a continuation that lost the last token or
    read its prefix wrongly, and all response lengths (EOS handling, the first stop kept)."""
    picked = [r for r in responses[:prompt_rows] if len(r) > boundary]
    return [(r[boundary - 1], r[boundary]) for r in picked], [len(r) for r in responses]


def drop_last_token(model, config, input_ids, attention_mask, real, prompt_width, **kwargs):
    """A deliberately broken continuation: it recomputes from a prefix missing its last token."""
    if input_ids.shape[1] == prompt_width:
        return real(model, config, input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    kwargs[evaluate._cache_name()] = None
    out = real(model, config, input_ids=input_ids[:, :-1], attention_mask=attention_mask[:, :-1],
               **kwargs)
    out.sequences = torch.cat([input_ids, out.sequences[:, input_ids.shape[1] - 1:]], 1)
    return out


def repeat_last_token(model, config, input_ids, attention_mask, real, prompt_width, **kwargs):
    """Another: an off-by-one that feeds the last token twice, later positions shifted by one."""
    if input_ids.shape[1] == prompt_width:
        return real(model, config, input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    kwargs[evaluate._cache_name()] = None
    out = real(model, config, input_ids=torch.cat([input_ids, input_ids[:, -1:]], 1),
               attention_mask=torch.cat([attention_mask, attention_mask[:, -1:]], 1), **kwargs)
    out.sequences = torch.cat([input_ids, out.sequences[:, input_ids.shape[1] + 1:]], 1)
    return out


@pytest.mark.parametrize("broken", [None, drop_last_token, repeat_last_token])
@pytest.mark.parametrize("continuation", ["cache", "prefix"])
def test_sampled_staged_rollouts_have_the_one_call_distribution(peaked, one_call, monkeypatch,
                                                                continuation, broken):
    """3,000 rows (1,500 per prompt) at temperature 1 through both paths. The first call of the
    staged path generates as many tokens as its widest prompt (3), so response position 3 is right
    after a stage boundary: there all rows continue from generate's KV cache ("cache"), or 7 in 8 of
    them wait and start again from their prefix ("prefix"). Each statistic passes a chi-square test
    at p = 1e-5; the deliberately broken continuations fail it, so the test can fail."""
    model, tok, _ = peaked
    rows, one = one_call
    eos, n = tok.eos_token_id, len(rows) // 2
    if broken:
        monkeypatch.setattr(evaluate, "_generate",
                            functools.partial(broken, real=evaluate._generate, prompt_width=3))

    def budget(width, new):
        return len(rows) // (1 if continuation == "cache" or width <= 3 else 8)
    torch.manual_seed(2)
    staged, stats = evaluate.sample_staged(model, rows, max_new_tokens=24, temperature=1.0,
                                           top_p=1.0, stop_ids=[eos], pad_id=eos,
                                           rows_per_call=budget)
    assert (stats["prefill"] > 1.5 * 3 * len(rows)) == (continuation == "prefix")  # prefilled again
    lengths = sorted(len(r) for r in one)
    assert lengths[len(rows) // 10] <= 3 and lengths[len(rows) // 2] < 24  # stops spread over 1..24
    results = [chi_square_same(x, y)
               for x, y in zip(statistics(one, n, 3), statistics(staged, n, 3))]
    assert all(stat < critical for stat, critical in results) == (broken is None), results


def test_staged_rollout_masks_keep_the_first_eos_and_pad_after(peaked):
    """Sampled rows through gopd.rollout_batches (pad == EOS): each response's mask covers it up to
    and including its first EOS, the rest of the row is padding, the prompt ends right before it."""
    model, tok, prompts = peaked
    eos = tok.eos_token_id
    assert tok.pad_token_id == eos

    sampling = dict(max_new_tokens=24, temperature=1.0, top_p=1.0, stop_ids=[eos], pad_id=eos)
    rows = [prompts[i % 2] for i in range(40)]
    torch.manual_seed(0)
    batches = gopd.rollout_batches(model, rows, list(range(40)), [None] * 40, sampling, 4, 7)
    assert [len(b.idx) for b in batches] == [7] * 5 + [5]
    stopped = 0
    for b in batches:
        n_prompt = b.seq.shape[1] - b.mask.shape[1]
        assert torch.equal(b.attn[:, n_prompt:], b.mask)
        assert b.mask.sum() <= b.row_steps
        for i, r in enumerate(b.idx):
            response, length = b.seq[i, n_prompt:], int(b.mask[i].sum())
            eos_at = (response == eos).nonzero()
            if len(eos_at):
                assert eos_at[0].item() == length - 1 and (response[length:] == eos).all()
                stopped += 1
            else:
                assert length == 24
            assert b.seq[i, n_prompt - len(rows[r]):n_prompt].tolist() == rows[r]
            assert b.attn[i, :n_prompt].sum() == len(rows[r])
    assert 0 < stopped < 40


def test_training_step_is_the_same_on_both_paths(world, tmp_path, monkeypatch):
    """Temperature 0 through gopd.main: the staged default and the one-call path give the same
    metrics and weights; metrics.jsonl logs the rollout's useful fraction, which is
    response_len / response_len_max for one call."""
    over = {"--temperature": "0", "--steps": "1", "--max-new-tokens": "16", "--save-every": "0"}
    gopd.main(base_args(world, tmp_path / "staged", **over))
    monkeypatch.setattr(gopd, "rollout_batches",
                        functools.partial(gopd.rollout_batches, staged=False))
    gopd.main(base_args(world, tmp_path / "one", **over))
    staged, one = (json.loads(open(tmp_path / run / "metrics.jsonl").readline())
                   for run in ["staged", "one"])
    for key in ["loss", "grad_norm", "kl_teacher", "implicit_reward", "entropy", "response_len",
                "response_len_max"]:
        assert staged[key] == one[key], key
    assert one["response_len"] < one["response_len_max"]  # rows stopped before the longest
    useful = one["response_len"] / one["response_len_max"]
    assert one["rollout_useful_fraction"] == pytest.approx(useful)
    assert one["rollout_useful_fraction"] < staged["rollout_useful_fraction"] <= 1
    w1, w2 = (weights(tmp_path / run / "step_000001") for run in ["staged", "one"])
    assert all(torch.equal(w1[k], w2[k]) for k in w1)




@pytest.mark.parametrize("tie", [True, False])
def test_rollout_weights_are_cast_once_and_the_masters_come_back(world, tmp_path, tie):
    """gopd.cast_weights: inside, every parameter is bf16 (a tied head still the embedding's tensor) and
    generate runs on them; after, the model holds its own float32 parameters again, the same objects and
    storage, bit for bit."""
    path = str(tmp_path / "student")
    tiny.build_model(path, AutoTokenizer.from_pretrained(world["student"]), seed=3, tie=tie)
    model, tok = load(path)
    params = list(model.parameters())
    masters = {n: (p.data_ptr(), p.detach().clone()) for n, p in model.named_parameters()}
    with torch.no_grad(), gopd.cast_weights(model, torch.bfloat16):
        assert all(p.dtype == torch.bfloat16 for p in model.parameters())
        assert (model.lm_head.weight is model.model.embed_tokens.weight) == tie
        seq, _, _ = gopd.rollout(model, world_prompts(tok, 4), tok.pad_token_id, [tok.eos_token_id], 8, 1.0, 1.0)
    assert seq.shape[0] == 4 and all(p is q for p, q in zip(model.parameters(), params))
    for n, p in model.named_parameters():
        assert p.dtype == torch.float32 and p.data_ptr() == masters[n][0] and torch.equal(p, masters[n][1])
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tie



def _ddp_after_cast(rank, store, result):
    """One rank: a DDP step, a cast rollout, a second step; is the second step's gradient the two ranks' mean?"""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(8, 4), torch.nn.Linear(4, 8))
    ddp, x = DistributedDataParallel(model), torch.tensor([[rank, 2 * rank + 1, 3]])
    ddp(x).logsumexp(-1).sum().backward()  # a first step: the gradient accumulators DDP hooks now exist
    model.zero_grad()
    with torch.no_grad(), gopd.cast_weights(model, torch.bfloat16):
        model(x)
    ddp(x).logsumexp(-1).sum().backward()
    local = torch.autograd.grad(model(x).logsumexp(-1).sum(), list(model.parameters()))
    for p, g in zip(model.parameters(), local):
        both = [torch.zeros_like(g) for _ in range(2)]
        dist.all_gather(both, g)
        result[rank] = result.get(rank, True) and torch.allclose(p.grad, (both[0] + both[1]) / 2, atol=1e-6)
    dist.destroy_process_group()


def test_ddp_still_averages_gradients_after_a_cast_rollout(tmp_path):
    """DDP hooks each parameter's gradient accumulator; setting a parameter's .data to another dtype drops it,
    and the ranks silently stop averaging (seen with that version of cast_weights). Two ranks: after a cast
    rollout each rank's gradient is still the mean of both ranks' own."""
    import torch.multiprocessing as mp
    result = mp.Manager().dict()
    mp.spawn(_ddp_after_cast, args=(str(tmp_path / "store"), result), nprocs=2)
    assert dict(result) == {0: True, 1: True}

def test_training_rollouts_and_evaluations_generate_in_the_compute_dtype(world, tmp_path, monkeypatch):
    """The GPU precision path on CPU (compute dtype bf16, autocast): every generate call of a training run, the
    rollouts' and the evaluation's, sees the student's weights in bf16; the update and the checkpoint see float32."""
    seen = []
    real = evaluate._generate

    def spy(model, *args, **kwargs):
        seen.append(next(model.parameters()).dtype)
        return real(model, *args, **kwargs)
    monkeypatch.setattr(evaluate, "_generate", spy)
    monkeypatch.setattr(gopd, "compute_dtype", lambda device: torch.bfloat16)
    monkeypatch.setattr(gopd, "autocast", lambda device: torch.autocast("cpu", dtype=torch.bfloat16))
    evals = tiny.write_jsonl(tmp_path / "eval.jsonl", [{"prompt": "add 1 and 2", "domain": "math", "answer": "3"}])
    gopd.main(base_args(world, tmp_path / "o", **{"--steps": "1", "--eval-data": evals, "--eval-every": "1"}))
    assert len(seen) >= 2 and set(seen) == {torch.bfloat16}
    assert all(t.dtype == torch.float32 for t in weights(tmp_path / "o" / "step_000001").values())
