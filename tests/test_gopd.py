"""Tests of gopd.py: the objective, scoring, rollouts, the loop (DDP, resume) and bad input.
Tiny models are built in code and loaded through from_pretrained; nothing touches the network."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import evaluate
import gopd
import tiny
from tiny import base_args, run_main, weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# -----------------------------------------------------------------------------
# The objective


def student_grad(logits, tokens, logp_t, logp_r, lam, n_tokens=None):
    logits = logits.clone().requires_grad_(True)
    logp_s = torch.log_softmax(logits, -1)[tokens][None]
    mask = torch.ones_like(logp_s)
    gopd.gopd_loss(logp_s, logp_t, logp_r, mask, lam, n_tokens or mask.sum(), "token-mean").backward()
    return logits.grad


def test_lam1_gradient_does_not_depend_on_reference():
    torch.manual_seed(0)
    logits, tokens = torch.randn(7), torch.randint(0, 7, (50,))
    logp_t = torch.log_softmax(torch.randn(7), -1)[tokens][None]
    refs = [torch.log_softmax(torch.randn(7) * 3, -1)[tokens][None] for _ in range(2)]
    g = [student_grad(logits, tokens, logp_t, r, 1.0) for r in refs] + [student_grad(logits, tokens, logp_t, None, 1.0)]
    assert torch.allclose(g[0], g[1], atol=1e-6) and torch.allclose(g[0], g[2], atol=1e-6)
    # ...whereas at lam != 1 the reference does change the gradient (so the check above can fail)
    assert not torch.allclose(student_grad(logits, tokens, logp_t, refs[0], 1.25),
                              student_grad(logits, tokens, logp_t, refs[1], 1.25), atol=1e-4)
    with pytest.raises(ValueError):
        student_grad(logits, tokens, logp_t, None, 1.25)


def test_advantage_carries_no_gradient():
    torch.manual_seed(1)
    logits, tokens = torch.randn(5), torch.randint(0, 5, (40,))
    logp_t = torch.log_softmax(torch.randn(5), -1)[tokens][None]
    logp_r = torch.log_softmax(torch.randn(5), -1)[tokens][None]
    lam = 1.5
    got = student_grad(logits, tokens, logp_t, logp_r, lam)

    def grad_of(detach):
        x = logits.clone().requires_grad_(True)
        ls = torch.log_softmax(x, -1)[tokens][None]
        adv = lam * (logp_t - logp_r) - (ls - logp_r)
        (-((adv.detach() if detach else adv) * ls).sum() / ls.numel()).backward()
        return x.grad
    assert torch.allclose(got, grad_of(detach=True), atol=1e-6)
    assert not torch.allclose(got, grad_of(detach=False), atol=1e-3)


def test_loss_aggregation_weighs_responses_or_tokens_equally():
    """Two responses of 1 and 100 tokens, every advantage 1: under the default (the release's
    seq-mean-token-mean) each response gets the same total weight; under token-mean each token does."""
    mask = torch.zeros(2, 100)
    mask[0, 0] = 1
    mask[1] = 1
    logp_t = torch.zeros(2, 100)

    def weight(agg, n_global):
        logp_s = torch.full((2, 100), -1.0, requires_grad=True)  # A_t = 0 - (-1) = 1 at lam = 1
        gopd.gopd_loss(logp_s, logp_t, None, mask, 1.0, n_global, agg).backward()
        return -logp_s.grad * mask
    seq = weight("seq-mean-token-mean", 2)
    assert seq[0].sum() == pytest.approx(0.5) and seq[1].sum() == pytest.approx(0.5)
    assert seq[1, 0] == pytest.approx(0.005) and seq[0, 0] == pytest.approx(0.5)
    tok = weight("token-mean", 101)
    assert torch.allclose(tok[mask.bool()], torch.full((101,), 1 / 101))
    assert tok[1].sum() == pytest.approx(100 / 101)


@pytest.mark.parametrize("lam", [0.5, 1.0, 1.5])
def test_one_token_bandit_converges_to_the_blend(lam):
    """Sampling from the student and stepping on gopd_loss drives it to
    pi* ~ pi_T^lam * pi_ref^(1-lam), pi_ref being the student's initial (fixed) distribution.
    Tolerance: total variation 0.02 (noise of the last 100 steps' average is ~0.005)."""
    torch.manual_seed(0)
    n = 4096
    logp_teacher = torch.log_softmax(torch.tensor([1.5, 1.0, 0.5, 0.0, -0.5, -1.0]), -1)
    ref_logits = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0, 1.5])  # the teacher's preferences reversed
    vocab = len(ref_logits)
    logp_ref = torch.log_softmax(ref_logits, -1)
    target = torch.softmax(lam * logp_teacher + (1 - lam) * logp_ref, -1)
    theta = ref_logits.clone().requires_grad_(True)  # the student starts as the reference
    opt = torch.optim.Adam([theta], lr=0.03)
    avg = torch.zeros(vocab)
    for step in range(700):
        tokens = torch.multinomial(torch.softmax(theta.detach(), -1), n, replacement=True)
        logp_s = torch.log_softmax(theta, -1)[tokens][None]
        loss = gopd.gopd_loss(logp_s, logp_teacher[tokens][None], logp_ref[tokens][None],
                              torch.ones(1, n), lam, n, "token-mean")
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= 600:
            avg += torch.softmax(theta.detach(), -1) / 100
    tv = 0.5 * (avg - target).abs().sum().item()
    assert tv < 0.02, (avg, target)
    if lam != 1:  # the blend is far from the teacher: a moving reference (pitfall 1) would fail here
        assert 0.5 * (target - logp_teacher.exp()).abs().sum() > 0.1

# -----------------------------------------------------------------------------
# Rollout and scoring


def test_response_mask_keeps_first_eos_only():
    eos = 0  # pad == eos, as in many chat tokenizers
    responses = torch.tensor([[5, 6, 0, 0, 0], [5, 6, 7, 8, 9], [0, 0, 0, 0, 0], [5, 0, 6, 0, 0]])
    assert gopd.response_mask(responses, [eos]).tolist() == [
        [1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]]
    assert gopd.response_mask(torch.tensor([[5, 3, 6, 0]]), [0, 3]).tolist() == [[1, 1, 0, 0]]


def load(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(path)


def test_rollout_masks_stop_at_eos_and_pads_after(world):
    model, tok = load(world["student"])
    prompts = [evaluate.prompt_ids(tok, f"add {i} and {i + 1}") for i in range(8)]
    seq, attn, mask = gopd.rollout(model, prompts, tok.pad_token_id, [tok.eos_token_id], 16, 0, 1.0)
    resp = seq[:, -mask.shape[1]:]
    lengths = mask.sum(1)
    assert len(set(lengths.tolist())) > 1  # the fixture's student stops at varied lengths
    for row, n in zip(resp, lengths):
        eos_at = (row == tok.eos_token_id).nonzero()
        if len(eos_at):
            assert eos_at[0].item() == n - 1  # the first EOS is the last masked-in token
        else:
            assert n == 16
    assert torch.equal(attn[:, -mask.shape[1]:], mask)
    # prompts are left-padded: every prompt ends right before its response
    for i, p in enumerate(prompts):
        assert seq[i, seq.shape[1] - mask.shape[1] - len(p):seq.shape[1] - mask.shape[1]].tolist() == p


def test_token_logprobs_match_naive_softmax_and_ignore_padding(world):
    model, tok = load(world["math"])
    prompts = [evaluate.prompt_ids(tok, s) for s in ["a", "a much longer prompt here", "mid size"]]
    torch.manual_seed(0)
    seq, attn, mask = gopd.rollout(model, prompts, tok.pad_token_id, [tok.eos_token_id], 12, 1.0, 1.0)
    n = mask.shape[1]
    for temp in [1.0, 0.7]:
        got = gopd.token_logprobs(model, seq, attn, n, temperature=temp, chunk=5)
        with torch.no_grad():
            pos = (attn.cumsum(-1) - 1).clamp(min=0)
            full = model(input_ids=seq, attention_mask=attn, position_ids=pos).logits.float() / temp
            naive = torch.log_softmax(full, -1)[:, -n - 1:-1].gather(-1, seq[:, -n:, None]).squeeze(-1)
        assert torch.allclose(got * mask, naive * mask, atol=1e-5)
        _, entropy = gopd.token_logprobs(model, seq, attn, n, temperature=temp, chunk=5, entropy=True)
        logp_all = torch.log_softmax(full, -1)[:, -n - 1:-1]
        assert torch.allclose(entropy * mask, -(logp_all.exp() * logp_all).sum(-1) * mask, atol=1e-4)
        # each row scored alone, without padding, gets the same log-probs
        for i in range(len(prompts)):
            keep = attn[i].bool()
            alone = gopd.token_logprobs(model, seq[i:i + 1, keep], attn[i:i + 1, keep], n, temperature=temp)
            m = mask[i].bool()
            assert torch.allclose(alone[0, m], got[i, m], atol=1e-5)


def test_token_logprobs_gradient_matches_naive_softmax(world):
    """The chunked, recomputed path gives the student the same gradient as a full log-softmax."""
    model, tok = load(world["math"])
    prompts = [evaluate.prompt_ids(tok, s) for s in ["a", "a longer prompt"]]
    torch.manual_seed(0)
    seq, attn, mask = gopd.rollout(model, prompts, tok.pad_token_id, [tok.eos_token_id], 10, 1.0, 1.0)
    n = mask.shape[1]
    weights_ = torch.randn(mask.shape) * mask

    def grads(fn):
        model.zero_grad()
        (fn() * weights_).sum().backward()
        return [p.grad.clone() for p in model.parameters()]
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    naive = grads(lambda: torch.log_softmax(model(input_ids=seq, attention_mask=attn, position_ids=pos).logits.float() / 0.8, -1)
                  [:, -n - 1:-1].gather(-1, seq[:, -n:, None]).squeeze(-1))
    ours = grads(lambda: gopd.token_logprobs(model, seq, attn, n, temperature=0.8, chunk=3))
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(naive, ours))


def test_scoring_temperature_matches_the_sampled_distribution(world):
    """The student's log-probs are those of the distribution generate sampled from (pitfall 3)."""
    from transformers import GenerationConfig
    model, tok = load(world["math"])
    ids, attn = gopd.left_pad([evaluate.prompt_ids(tok, "add 2 and 3"), evaluate.prompt_ids(tok, "x")], tok.pad_token_id)
    config = GenerationConfig(max_new_tokens=8, do_sample=True, temperature=0.6, top_k=0, top_p=1.0,
                              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                              output_scores=True, return_dict_in_generate=True)
    out = model.generate(input_ids=ids, attention_mask=attn, generation_config=config)
    n = len(out.scores)
    sampled = torch.log_softmax(torch.stack(out.scores, 1), -1).gather(-1, out.sequences[:, -n:, None]).squeeze(-1)
    mask = gopd.response_mask(out.sequences[:, -n:], [tok.eos_token_id])
    full_attn = torch.cat([attn, mask], 1)
    got = gopd.token_logprobs(model, out.sequences, full_attn, n, temperature=0.6)
    assert torch.allclose(got * mask, sampled * mask, atol=1e-4)
    wrong = gopd.token_logprobs(model, out.sequences, full_attn, n, temperature=1.0)
    assert not torch.allclose(wrong * mask, sampled * mask, atol=1e-2)


def test_each_row_is_scored_by_its_domain_teacher(world):
    math_t, tok = load(world["math"])
    code_t, _ = load(world["code"])
    prompts = [evaluate.prompt_ids(tok, s) for s in ["a", "bb", "ccc", "dddd"]]
    torch.manual_seed(0)
    seq, attn, mask = gopd.rollout(math_t, prompts, tok.pad_token_id, [tok.eos_token_id], 6, 1.0, 1.0)
    domains = ["math", "code", "code", "math"]
    got = gopd.frozen_logprobs({"math": math_t, "code": code_t}, domains, seq, attn, 6, 1.0)
    for i, d in enumerate(domains):
        own = gopd.token_logprobs({"math": math_t, "code": code_t}[d], seq[i:i + 1], attn[i:i + 1], 6)
        assert torch.allclose(got[i], own[0], atol=1e-5)
    assert not torch.allclose(got[1], gopd.token_logprobs(math_t, seq[1:2], attn[1:2], 6)[0], atol=1e-3)


def test_step_indices_is_a_seeded_pure_function_covering_each_epoch():
    a = gopd.step_indices(10, 3, 4, seed=7)
    assert a == gopd.step_indices(10, 3, 4, seed=7) and a != gopd.step_indices(10, 3, 4, seed=8)
    epoch0 = sum((gopd.step_indices(10, s, 5, seed=7) for s in range(2)), [])
    assert sorted(epoch0) == list(range(10))

# -----------------------------------------------------------------------------
# The loop


def first_token_kl(student_path, teacher_path, prompts):
    """Exact KL(student || teacher) over the vocabulary at the first response position, averaged."""
    student, tok = load(student_path)
    teacher, _ = load(teacher_path)
    ids, attn = gopd.left_pad([evaluate.prompt_ids(tok, p) for p in prompts], tok.pad_token_id)
    with torch.no_grad():
        ls = torch.log_softmax(student(input_ids=ids, attention_mask=attn).logits[:, -1], -1)
        lt = torch.log_softmax(teacher(input_ids=ids, attention_mask=attn).logits[:, -1], -1)
    return (ls.exp() * (ls - lt)).sum(-1).mean().item()


def test_training_moves_toward_the_teacher_and_logs_metrics(world, tmp_path):
    out = tmp_path / "run"
    gopd.main(base_args(world, out, teachers=[world["math"]], **{
        "--steps": "12", "--lr": "1e-2", "--lam": "1.0", "--prompts-per-step": "8", "--samples-per-prompt": "4"}))
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [r["step"] for r in rows] == list(range(1, 13))
    for key in ["kl_teacher", "entropy", "response_len", "response_len_p90", "response_len_max", "truncated",
                "tokens_per_s", "time_generate", "time_score", "time_update", "grad_norm"]:
        assert key in rows[0]
    assert "implicit_reward" not in rows[0] and "kl_ref" not in rows[0]  # lam = 1: no reference pass
    prompts = [json.loads(line)["prompt"] for line in open(world["data"])]
    before = first_token_kl(world["student"], world["math"], prompts)
    after = first_token_kl(str(out / "step_000012"), world["math"], prompts)
    assert after < 0.8 * before, (before, after)


@pytest.mark.parametrize("loss_agg", ["seq-mean-token-mean", "token-mean"])
def test_ddp_two_ranks_make_the_same_update_as_one_process(world, tmp_path, loss_agg):
    """Greedy rollouts make the global batch identical however it is split; the responses have
    different lengths, so a per-rank or per-micro-batch mean would give a different update. The
    evaluation, sharded over the ranks, gives the same accuracies too."""
    evals = [{"prompt": f"add {i} and 1", "domain": "math", "answer": str(i + 1)} for i in range(5)]
    evals += [{"prompt": "write f", "domain": "code", "tests": "assert f() == 1", "benchmark": "tinycode"}]
    common = {"--temperature": "0", "--steps": "2", "--micro-batch": "2", "--save-every": "0",
              "--loss-agg": loss_agg, "--eval-data": tiny.write_jsonl(tmp_path / "eval.jsonl", evals)}
    gopd_py = os.path.join(ROOT, "gopd.py")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", gopd_py]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    single = subprocess.run([sys.executable, gopd_py, *base_args(world, tmp_path / "one", **common)],
                            capture_output=True, text=True, env=env)
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = subprocess.run([*torchrun, *base_args(world, tmp_path / "two", **common)], capture_output=True, text=True,
                         env=env)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    m1 = [json.loads(line) for line in open(tmp_path / "one" / "metrics.jsonl")][1:]
    m2 = [json.loads(line) for line in open(tmp_path / "two" / "metrics.jsonl")][1:]
    assert len({r["response_len"] for r in m1}) >= 1 and m1[0]["truncated"] < 1
    for a, b in zip(m1, m2):
        for key in ["loss", "grad_norm", "kl_teacher", "implicit_reward", "entropy", "response_len",
                    "response_len_max", "math/kl_teacher", "code/response_len"]:
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    w1, w2 = weights(tmp_path / "one" / "step_000002"), weights(tmp_path / "two" / "step_000002")
    for k in w1:
        assert torch.allclose(w1[k], w2[k], atol=2e-6), k
    e1, e2 = (json.load(open(tmp_path / run / "eval.json")) for run in ["one", "two"])
    assert e1 == e2 and set(e1["after"]) == {"math", "tinycode"}

    if loss_agg == "token-mean":  # a checkpoint resumes only with the number of ranks that wrote it
        more = {**common, "--steps": "3", "--resume": ""}
        msg = run_main(base_args(world, tmp_path / "two", **more))
        assert "was written by 2 rank(s) and this run has 1" in msg and "--nproc_per_node=2" in msg
        grown = subprocess.run([*torchrun, *base_args(world, tmp_path / "one", **more)], capture_output=True,
                               text=True, env=env)
        assert grown.returncode != 0 and "was written by 1 rank(s) and this run has 2" in grown.stderr


def test_resume_after_interruption_matches_uninterrupted_run(world, tmp_path):
    over = {"--steps": "4", "--save-every": "2", "--lr-schedule": "cosine", "--warmup-steps": "1"}
    gopd.main(base_args(world, tmp_path / "full", **over))
    gopd.main(base_args(world, tmp_path / "cut", **over))
    # interrupted right after the step-2 checkpoint: the later checkpoint never happened
    shutil.rmtree(tmp_path / "cut" / "step_000004")
    gopd.main(base_args(world, tmp_path / "cut", **over, **{"--resume": ""}))
    a, b = weights(tmp_path / "full" / "step_000004"), weights(tmp_path / "cut" / "step_000004")
    assert all(torch.equal(a[k], b[k]) for k in a)
    start = weights(tmp_path / "full" / "step_000002")
    assert any(not torch.equal(a[k], start[k]) for k in a)  # the last two steps did change the weights
    saved = os.listdir(tmp_path / "full" / "step_000004")
    for f in ["config.json", "model.safetensors", "tokenizer.json", "trainer_state.pt", "rng_rank0.pt"]:
        assert f in saved
    assert not [d for d in os.listdir(tmp_path / "full") if d.endswith(".tmp")]

# -----------------------------------------------------------------------------
# Bad input: one line naming the problem and the fix, before heavy work


def test_bad_inputs_get_one_line_errors(world, tmp_path):
    d = tmp_path
    assert "does not exist" in run_main(base_args(world, d / "o", **{"--student": str(d / "nope")}))
    os.makedirs(d / "empty")
    assert "cannot load a tokenizer" in run_main(base_args(world, d / "o", **{"--student": str(d / "empty")}))
    assert "--lam must be > 0" in run_main(base_args(world, d / "o", **{"--lam": "0"}))
    assert "--lam must be > 0" in run_main(base_args(world, d / "o", **{"--lam": "-1"}))
    assert "has no rows" in run_main(base_args(world, d / "o", **{"--data": tiny.write_jsonl(d / "e.jsonl", [])}))
    no_prompt = tiny.write_jsonl(d / "np.jsonl", [{"question": "hi", "domain": "math"}])
    assert "has no 'prompt' field" in run_main(base_args(world, d / "o", **{"--data": no_prompt}))
    other = tiny.write_jsonl(d / "bio.jsonl", [{"prompt": "cells", "domain": "biology"}])
    msg = run_main(base_args(world, d / "o", **{"--data": other}))
    assert "['biology'] have no teacher" in msg and "--teacher DOMAIN=PATH" in msg
    for msg in [run_main(base_args(world, d / "o", **{"--data": str(d / "missing.jsonl")}))]:
        assert "neither a file nor a loadable dataset" in msg


def test_teacher_tokenizer_must_match_but_embedding_padding_may_differ(world, tmp_path):
    tok = tiny.build_tokenizer(tmp_path / "tok2", extra_chars="éü")
    tiny.build_model(tmp_path / "alien", tok)
    msg = run_main(base_args(world, tmp_path / "o", teachers=[tmp_path / "alien"]))
    assert "tokenizer differs from the student's" in msg
    from transformers import AutoTokenizer
    same = AutoTokenizer.from_pretrained(world["student"])
    tiny.build_model(tmp_path / "padded", same, vocab_pad=128)  # a bigger embedding, same tokenizer: fine
    gopd.main(base_args(world, tmp_path / "ok", teachers=[tmp_path / "padded"], **{"--steps": "1"}))
    assert os.path.isdir(tmp_path / "ok" / "step_000001")
    same.chat_template = "{% for m in messages %}Q: {{ m['content'] }}{% endfor %}A: "
    tiny.build_model(tmp_path / "templ", same)
    # a different chat template is no error: that teacher scores its own rendering of each prompt
    gopd.main(base_args(world, tmp_path / "ok2", teachers=[tmp_path / "templ"], **{"--steps": "1"}))
    assert os.path.isdir(tmp_path / "ok2" / "step_000001")


def test_teacher_with_its_own_template_scores_its_own_rendering(world, tmp_path):
    """Two tokenizers with one vocabulary but different chat templates: the teacher's log-probs are
    those of a plain forward on its own rendering of the prompt followed by the student's response ids."""
    from transformers import AutoTokenizer
    student, tok = load(world["student"])
    teacher, _ = load(world["math"])
    own_tok = AutoTokenizer.from_pretrained(world["math"])
    own_tok.chat_template = "{% for m in messages %}Question: {{ m['content'] }}\n{% endfor %}Answer: "
    prompts = ["add 2 and 3", "a much longer prompt"]
    torch.manual_seed(0)
    seq, attn, mask = gopd.rollout(student, [evaluate.prompt_ids(tok, p) for p in prompts], tok.pad_token_id,
                                   [tok.eos_token_id], 8, 1.0, 1.0)
    n = mask.shape[1]
    own = [evaluate.prompt_ids(own_tok, p) for p in prompts]
    assert own[0] != evaluate.prompt_ids(tok, prompts[0])
    got = gopd.frozen_logprobs({None: teacher}, [None, None], seq, attn, n, 1.0, {None: own}, tok.pad_token_id)
    for i in range(2):
        ids = torch.tensor([own[i] + seq[i, -n:].tolist()])
        direct = gopd.token_logprobs(teacher, ids, torch.cat([torch.ones(1, len(own[i]), dtype=torch.long),
                                                              mask[i:i + 1]], 1), n)
        m = mask[i].bool()
        assert torch.allclose(got[i, m], direct[0, m], atol=1e-5)
    plain = gopd.frozen_logprobs({None: teacher}, [None, None], seq, attn, n, 1.0)  # the student's rendering instead
    assert not torch.allclose(got * mask, plain * mask, atol=1e-3)


def test_too_long_prompts_are_skipped_and_counted(world, tmp_path, capsys):
    rows = [{"prompt": "x" * 400, "domain": "math"}] + [{"prompt": "short", "domain": "code"}] * 4
    data = tiny.write_jsonl(tmp_path / "long.jsonl", rows)
    gopd.main(base_args(world, tmp_path / "o", **{"--data": data, "--steps": "1"}))
    assert "skipped 1 of 5 prompts" in capsys.readouterr().out
    only_long = tiny.write_jsonl(tmp_path / "only.jsonl", rows[:1])
    assert "every prompt is longer" in run_main(base_args(world, tmp_path / "o2", **{"--data": only_long}))


def test_existing_checkpoints_are_never_overwritten(world, tmp_path):
    gopd.main(base_args(world, tmp_path / "o", **{"--steps": "1"}))
    assert "already has checkpoints; pass --resume" in run_main(base_args(world, tmp_path / "o", **{"--steps": "1"}))
    assert "no checkpoint in" in run_main(base_args(world, tmp_path / "new", **{"--resume": ""}))


def nan_copy(src, dst):
    """A copy of a model whose final norm makes every log-prob NaN."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    broken = AutoModelForCausalLM.from_pretrained(src)
    with torch.no_grad():
        broken.model.norm.weight.fill_(float("nan"))
    broken.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return str(dst)


def test_non_finite_loss_stops_and_keeps_last_checkpoint(world, tmp_path):
    nan_copy(world["math"], tmp_path / "nan")
    out = tmp_path / "o"
    gopd.main(base_args(world, out, **{"--steps": "2", "--save-every": "1"}))
    before = weights(out / "step_000002")
    msg = run_main(base_args(world, out, teachers=[tmp_path / "nan"], **{"--steps": "4", "--resume": "",
                                                                          "--resume-override": ""}))
    assert "non-finite loss or gradient at step 3" in msg and "last checkpoint" in msg
    assert sorted(d for d in os.listdir(out) if d.startswith("step_")) == ["step_000001", "step_000002"]
    after = weights(out / "step_000002")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_reference_pass_is_skipped_at_lam_1(world, tmp_path):
    """A reference whose log-probs are NaN is harmless at lam = 1 (never run) and fatal otherwise."""
    ref = nan_copy(world["student"], tmp_path / "nanref")
    gopd.main(base_args(world, tmp_path / "a", **{"--lam": "1", "--steps": "1", "--ref": ref}))
    bad = base_args(world, tmp_path / "b", **{"--lam": "1.25", "--steps": "1", "--ref": ref})
    assert "non-finite" in run_main(bad)


def test_error_is_one_line_on_stderr_with_nonzero_exit(world, tmp_path):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "gopd.py"),
                        *base_args(world, tmp_path / "o", **{"--lam": "-2"})], capture_output=True, text=True)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == ["gopd: error: --lam must be > 0 and <= 100 (got -2.0; at 0 the optimum is pi_ref itself, no teacher signal); 1 is OPD, 1.25 the paper's ExOPD"]


def test_eval_hook_writes_before_after_and_per_step_accuracy(world, tmp_path):
    rows = [{"prompt": f"add {i} and 1", "domain": "math", "answer": str(i + 1)} for i in range(3)]
    rows += [{"prompt": "write f", "domain": "code", "tests": "assert f() == 1", "benchmark": "tinycode"}]
    data = tiny.write_jsonl(tmp_path / "eval.jsonl", rows)
    out = tmp_path / "o"
    gopd.main(base_args(world, out, **{"--eval-data": data, "--eval-every": "1", "--temperature": "0"}))
    result = json.load(open(out / "eval.json"))
    assert set(result) == {"before", "after"} and set(result["before"]) == {"math", "tinycode"}
    logged = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [r["step"] for r in logged if "eval" in r] == [0, 1, 2]
    assert logged[-1]["eval"] == result["after"] and logged[0]["eval"] == result["before"]
    # the logged accuracy is evaluate.py's, for the saved model (greedy decoding is deterministic)
    model, tok = load(str(out / "step_000002"))
    summary, _ = evaluate.evaluate_model(model, tok, rows, n=1, max_new_tokens=16, temperature=0)
    assert {k: v["accuracy"] for k, v in summary.items()} == result["after"]


def test_gradient_checkpointing_gives_the_same_update(world, tmp_path):
    over = {"--steps": "1", "--temperature": "0"}
    gopd.main(base_args(world, tmp_path / "plain", **over))
    gopd.main(base_args(world, tmp_path / "ckpt", **over, **{"--grad-checkpointing": ""}))
    a, b = weights(tmp_path / "plain" / "step_000001"), weights(tmp_path / "ckpt" / "step_000001")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_step_in_bf16(world, tmp_path):
    """On GPU: frozen models in bf16, the student in float32 under bf16 autocast, a finite update."""
    gopd.main(base_args(world, tmp_path / "gpu", **{"--steps": "2"}))
    rows = [json.loads(line) for line in open(tmp_path / "gpu" / "metrics.jsonl")]
    assert all(r["grad_norm"] is not None and r["grad_norm"] == r["grad_norm"] for r in rows)
    w = weights(tmp_path / "gpu" / "step_000002")
    assert all(t.dtype == torch.float32 for t in w.values())
    teacher = gopd.load_model(world["math"], torch.bfloat16, torch.device("cuda"))
    assert next(teacher.parameters()).dtype == torch.bfloat16 and not next(teacher.parameters()).requires_grad


def test_release_rows_route_by_extra_info_opd_teacher(tmp_path):
    """The G-OPD release's parquet rows tag their teacher as extra_info.opd_teacher."""
    rows = [{"prompt": [{"role": "user", "content": "1+1?"}], "extra_info": {"opd_teacher": "math"}},
            {"prompt": "def f", "extra_info": {"opd_teacher": "code"}, "domain": "code"}]
    loaded = gopd.load_train_rows(tiny.write_jsonl(tmp_path / "release.jsonl", rows))
    assert [r["domain"] for r in loaded] == ["math", "code"]
    gopd.validate_domains(loaded, {"math": "A", "code": "B"})
    with pytest.raises(SystemExit, match=r"\['math'\] have no teacher"):
        gopd.validate_domains(loaded, {"code": "B"})


def test_chat_prompts_need_a_chat_template(world, tmp_path):
    """Chat-message rows for a student without a chat template stop with one line, before any
    training; plain-text rows go to such a model as raw text."""
    student = tmp_path / "plain"
    shutil.copytree(world["student"], student)
    tiny.build_tokenizer(student, chat_template=False)  # overwrites the tokenizer files, no template
    (student / "chat_template.jinja").unlink(missing_ok=True)
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"prompt": [{"role": "user", "content": "hi"}], "domain": "math"}) + "\n")
    message = run_main(base_args(world, tmp_path / "o", **{"--student": str(student), "--data": str(data)}))
    assert "no chat template" in message and "\n" not in message.strip()
    assert not (tmp_path / "o" / "step_000001").exists()
    tok = tiny.build_tokenizer(tmp_path / "tok", chat_template=False)
    assert tok.decode(evaluate.prompt_ids(tok, "add 1 and 2")) == "add 1 and 2"


def test_extrapolation_metrics_outcome_grading_and_samples(world, tmp_path, monkeypatch, capsys):
    """What a lam > 1 run logs: the outcome accuracy of exactly the gradable rollouts (graded by
    evaluate.check_many, here a recording stand-in), log-ratio quantiles, the reference gap (0 at
    step 1: the reference is the student's start), and a few decoded rollouts per logged step."""
    rows = [{"prompt": f"add {i} and {i + 1}", "domain": "math", "answer": str(2 * i + 1)} for i in range(4)]
    rows += [{"prompt": f"def f{i}", "domain": "code"} for i in range(4)]  # nothing to grade against
    graded = []

    def recording_check_many(rows, responses, workers=None):
        graded.append(list(zip(rows, responses)))
        return ["e" in r for r in responses]
    monkeypatch.setattr(evaluate, "check_many", recording_check_many)
    out = tmp_path / "o"
    gopd.main(base_args(world, out, **{"--data": tiny.write_jsonl(tmp_path / "d.jsonl", rows), "--steps": "2",
                                       "--grade-every": "1", "--log-samples-every": "1"}))
    assert "warning" not in capsys.readouterr().out
    metrics = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert len(graded) == 2
    for m, pairs in zip(metrics, graded):
        assert pairs and all("answer" in row for row, _ in pairs)
        assert m["outcome_accuracy"] == pytest.approx(sum("e" in r for _, r in pairs) / len(pairs))
        assert m["log_ratio_p1"] <= m["log_ratio_p50"] <= m["log_ratio_p99"] <= m["log_ratio_max"]
        assert m["implicit_reward"] == pytest.approx(1.25 * (m["kl_ref"] - m["kl_teacher"]), abs=1e-5)
    assert metrics[0]["ref_gap"] < 1e-5 < metrics[1]["ref_gap"]
    samples = [json.loads(line) for line in open(out / "samples.jsonl")]
    assert [s["step"] for s in samples] == [1] * 4 + [2] * 4
    assert all(s["prompt"] in [r["prompt"] for r in rows] and s["response"] for s in samples)

    real_load_models = gopd.load_models

    def drifted_reference(*args, **kwargs):  # a reference that is not the student's start
        student, teachers, ref = real_load_models(*args, **kwargs)
        with torch.no_grad():
            ref.model.norm.weight.mul_(3.0)
        return student, teachers, ref
    monkeypatch.setattr(gopd, "load_models", drifted_reference)
    gopd.main(base_args(world, tmp_path / "o2", **{"--steps": "1"}))
    assert "warning: at step 1 the student and its reference" in capsys.readouterr().out


def test_rollouts_ignore_the_checkpoints_sampling_settings(world, tmp_path):
    """A generation_config.json with top_k=1, repetition_penalty=50 and min_p=0.9 must not change what
    the student samples: the loss scores the plain softmax at the sampling temperature."""
    from transformers import AutoModelForCausalLM
    plain, tok = load(world["math"])
    hostile = AutoModelForCausalLM.from_pretrained(world["math"])
    hostile.generation_config.update(top_k=1, repetition_penalty=50.0, min_p=0.9, do_sample=True)
    hostile.save_pretrained(tmp_path / "hostile")
    hostile, _ = load(str(tmp_path / "hostile"))
    assert hostile.generation_config.repetition_penalty == 50.0
    prompts = [evaluate.prompt_ids(tok, p) for p in ["add 2 and 3", "def f"]]
    runs = []
    for model in [plain, hostile]:
        torch.manual_seed(0)
        runs.append(gopd.rollout(model, prompts, tok.pad_token_id, [tok.eos_token_id], 12, 1.0, 1.0)[0])
    assert torch.equal(runs[0], runs[1])
    torch.manual_seed(0)
    raw = hostile.generate(input_ids=gopd.left_pad(prompts, tok.pad_token_id)[0], max_new_tokens=12,
                           attention_mask=gopd.left_pad(prompts, tok.pad_token_id)[1], do_sample=True,
                           pad_token_id=tok.pad_token_id)
    assert not torch.equal(raw, runs[1][:, :raw.shape[1]])  # the settings would have changed the samples
