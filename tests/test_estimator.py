"""Tests of --estimator exact: the exact per-state estimator has the sampled estimator's expected
gradient, reaches the same fixed point in fewer steps, never builds [B, R, vocab] logits, makes the
same update on 2 ranks as in one process (DDP and FSDP), resumes bit for bit, and refuses bad input
with one line. Tiny models from tests/tiny.py; nothing touches the network."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import evaluate
import gopd
import tiny
from test_fsdp import DRIVER, assert_same_run, metrics, world  # noqa: F401 (world: its fixture)
from test_fsdp import argv as fsdp_argv
from tiny import base_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(path):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def fixed_states(world, temperature, n_rows=3, n_tokens=10):
    """A student rollout (its states are fixed from here on) and the frozen models' scoring of it:
    teachers by domain (rows 0 and 2 math, row 1 code) and the reference, as score_batches does."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(world["student"])
    student = load(world["student"])
    teachers = {"math": load(world["math"]).requires_grad_(False),
                "code": load(world["code"]).requires_grad_(False)}
    ref = load(world["code"]).requires_grad_(False)  # a reference unlike the student: its term matters
    prompts = [evaluate.prompt_ids(tok, p) for p in ["add 2 and 3", "def f", "a longer prompt"][:n_rows]]
    torch.manual_seed(0)
    seq, attn, mask = gopd.rollout(student, prompts, tok.pad_token_id, [tok.eos_token_id], n_tokens,
                                   temperature, 1.0)
    b = gopd.MicroBatch(seq, attn, mask, list(range(n_rows)), ["math", "code", "math"][:n_rows])
    gopd.score_batches([b], teachers, ref, {"math": None, "code": None}, {None: None}, temperature,
                       tok.pad_token_id, torch.device("cpu"), False, keep=slice(None))
    return student, teachers, ref, b


def full_logprobs(model, b, temperature):
    """log pi(.|s_t) over the whole vocabulary at every response state, [B, R, V] (tests only)."""
    n = b.mask.shape[1]
    pos = (b.attn.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=b.seq, attention_mask=b.attn, position_ids=pos).logits[:, -n - 1:-1]
    return torch.log_softmax(logits.float() / temperature, -1)


def exact_gradient(student, teachers, ref, b, lam, temperature, wrong_target=False):
    """The gradient of exact_loss at b's states, through gopd's own path (target_kl, chunked)."""
    student.zero_grad()
    n = b.mask.shape[1]
    states = dict(b.states)
    if wrong_target:  # the reference term dropped at lam != 1: p* = softmax(lam * z_T / T)
        states["ref"] = None
    hidden, head = gopd.response_hidden(student, b.seq, b.attn, n)
    heads = {m: m.get_output_embeddings() for m in [*teachers.values(), ref]}
    kl = gopd.target_kl(head, hidden, b.seq[:, -n:], states, heads, lam, temperature, chunk=7)[0]
    gopd.exact_loss(kl, b.mask, len(b.mask)).backward()
    return torch.cat([p.grad.flatten() for p in student.parameters()])


def sampled_gradient(student, teachers, ref, b, lam, temperature, n_samples):
    """The mean over n_samples of gopd_loss's gradient when each state's token is drawn afresh from
    the student (the states stay fixed), with log-probs from full softmaxes: the gradient is linear
    in the loss, so it is one backward of the mean loss."""
    student.zero_grad()
    logp_s = full_logprobs(student, b, temperature)
    with torch.no_grad():
        t = torch.stack([full_logprobs(teachers[d], dataclasses.replace(b, seq=b.seq[i:i + 1], attn=b.attn[i:i + 1],
                                                                        mask=b.mask[i:i + 1]),
                                       temperature)[0] for i, d in enumerate(b.domains)])
        r = full_logprobs(ref, b, temperature)
        y = torch.distributions.Categorical(logits=logp_s).sample((n_samples,))  # [N, B, R]
    pick = lambda lp: lp.expand(n_samples, *lp.shape).gather(-1, y[..., None])[..., 0]  # noqa: E731
    mask = b.mask.expand(n_samples, *b.mask.shape).flatten(0, 1)
    loss = gopd.gopd_loss(pick(logp_s).flatten(0, 1), pick(t).flatten(0, 1), pick(r).flatten(0, 1), mask, lam,
                          n_samples * len(b.mask))
    loss.backward()
    return torch.cat([p.grad.flatten() for p in student.parameters()])


def test_sampled_gradient_averages_to_the_exact_gradient(world):
    """At fixed states, the sampled estimator's gradient averaged over N = 100,000 fresh tokens per
    state converges to the exact estimator's gradient (gopd_loss vs exact_loss at lam 1.5, two
    teachers by domain, a reference unlike the student, temperature 0.8). Tolerance: relative error
    |mean - exact| / |exact| < 0.1 and cosine > 0.995. The mean's own noise is 0.046-0.053 here
    (6 seeds; it falls as 1/sqrt(N): 0.20, 0.11, 0.05 at 5k, 20k, 80k); a wrong target, the
    reference term dropped (p* = softmax(lam * z_T / T)), sits 0.38 away and fails the same bound,
    as checked below."""
    lam, temperature = 1.5, 0.8
    student, teachers, ref, b = fixed_states(world, temperature)
    exact = exact_gradient(student, teachers, ref, b, lam, temperature)
    torch.manual_seed(1)
    sampled = sampled_gradient(student, teachers, ref, b, lam, temperature, 100000)
    rel = ((sampled - exact).norm() / exact.norm()).item()
    cos = torch.nn.functional.cosine_similarity(sampled, exact, dim=0).item()
    assert rel < 0.1 and cos > 0.995, (rel, cos)
    wrong = exact_gradient(student, teachers, ref, b, lam, temperature, wrong_target=True)
    assert ((sampled - wrong).norm() / wrong.norm()).item() > 0.1


def bandit(lam, estimator, steps=400, n_tokens=64):
    """One state, six tokens: the student's logits theta start at the reference's; Adam on
    gopd_loss (n_tokens sampled tokens a step) or exact_loss (chunk_kl with identity heads: the
    logits are the 'hidden states'). Returns the total variation to pi_T^lam * pi_ref^(1-lam) after
    every step."""
    torch.manual_seed(0)
    logp_teacher = torch.log_softmax(torch.tensor([1.5, 1.0, 0.5, 0.0, -0.5, -1.0]), -1)
    ref_logits = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0, 1.5])  # the teacher's preferences reversed
    logp_ref = torch.log_softmax(ref_logits, -1)
    target = torch.softmax(lam * logp_teacher + (1 - lam) * logp_ref, -1)
    theta = ref_logits.clone().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=0.03)
    identity = torch.nn.Identity()
    tv = []
    for _ in range(steps):
        if estimator == "exact":
            kl = gopd.chunk_kl(identity, theta[None], torch.zeros(1, dtype=torch.long), identity,
                               logp_teacher[None], identity, logp_ref[None], lam, 1.0)[0]
            loss = gopd.exact_loss(kl[None], torch.ones(1, 1), 1)
        else:
            tokens = torch.multinomial(torch.softmax(theta.detach(), -1), n_tokens, replacement=True)
            loss = gopd.gopd_loss(torch.log_softmax(theta, -1)[tokens][None], logp_teacher[tokens][None],
                                  logp_ref[tokens][None], torch.ones(1, n_tokens), lam, 1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        tv.append(0.5 * (torch.softmax(theta.detach(), -1) - target).abs().sum().item())
    return tv


@pytest.mark.parametrize("lam", [0.5, 1.5])
def test_one_token_bandit_reaches_the_blend_in_fewer_steps_with_exact(lam):
    """The bandit of test_one_token_bandit_converges_to_the_blend, both estimators at 64 sampled
    tokens a step: exact settles within total variation 0.02 of the blend (and stays) by step 200
    (measured: 49 at lam 0.5, 158 at 1.5) and ends within 0.01; sampled, whose noise keeps Adam's
    steps at full size, has not settled within 0.02 by then (measured: 540-690 steps over 3 seeds
    at either lam)."""
    def settled(tv):  # the first step after which tv stays below 0.02
        return next((i for i in range(len(tv)) if max(tv[i:]) < 0.02), len(tv))
    exact, sampled = bandit(lam, "exact"), bandit(lam, "sampled")
    assert settled(exact) < 200 and exact[-1] < 0.01, (settled(exact), exact[-1])
    assert settled(sampled) > settled(exact) + 100, (settled(sampled), settled(exact))


class WidestVocabTensor(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the most rows of any tensor made while active whose last dimension is the vocabulary
    (forward and backward: the autograd engine runs CPU backward in this thread)."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab, self.rows = vocab, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.dim() and t.shape[-1] == self.vocab:
                self.rows = max(self.rows, t.numel() // self.vocab)
        return out


def test_exact_scoring_and_update_never_build_the_response_logits(world, tmp_path, monkeypatch):
    """A real --estimator exact run (gopd.main, lam 1.25: teacher and reference) whose micro-batches
    hold 4 x 64 = 256 response states: while scoring and the update run, no tensor has more than
    128 (the chunk) rows over the vocabulary, in forward or backward. The same spy sees the [B, R,
    vocab] tensor of a naive full softmax (so the check can fail)."""
    from transformers import AutoConfig
    vocab = AutoConfig.from_pretrained(world["student"]).vocab_size
    spies = []

    def spied(fn):
        def run(*args, **kwargs):
            spies.append(WidestVocabTensor(vocab))
            with spies[-1]:
                return fn(*args, **kwargs)
        return run
    monkeypatch.setattr(gopd, "score_batches", spied(gopd.score_batches))
    monkeypatch.setattr(gopd, "update", spied(gopd.update))
    student = str(tmp_path / "student")
    from transformers import AutoTokenizer
    tiny.build_model(student, AutoTokenizer.from_pretrained(world["student"]))  # no stopper: full length
    gopd.main(base_args(world, tmp_path / "o", **{
        "--student": student, "--estimator": "exact", "--steps": "1", "--prompts-per-step": "4",
        "--samples-per-prompt": "1", "--max-new-tokens": "64", "--micro-batch": "4"}))
    rows = [json.loads(line) for line in open(tmp_path / "o" / "metrics.jsonl")]
    assert rows[0]["response_len"] * 4 > 128 and len(spies) == 2
    assert all(0 < spy.rows <= 128 for spy in spies), [spy.rows for spy in spies]
    model = load(student)
    seq = torch.randint(vocab, (4, 80))
    with WidestVocabTensor(vocab) as naive:
        torch.log_softmax(model(input_ids=seq).logits[:, -65:-1], -1)
    assert naive.rows >= 4 * 64


def test_exact_two_ranks_match_one_process_and_resume_bit_exact(world, tmp_path):
    """--estimator exact in one torchrun launch of 2 gloo ranks (test_fsdp's driver and data: rank 0
    holds only math rows, rank 1 only code rows, so each rank runs one teacher on a stand-in row and
    gathers both teachers' output layers): DDP and --fsdp each make the same update as one process,
    at lam 1 (untied student, token-mean, FSDP with --offload-frozen) and lam 1.25 (tied student,
    --grad-checkpointing, a reference); then an FSDP run with checkpoints, copied without its last
    one and resumed, ends bit for bit where the uninterrupted one did."""
    d = tmp_path
    cases = {"lam1": dict(student="student_untied", lam="1", **{"--loss-agg": "token-mean"}),
             "lam125": dict(lam="1.25", **{"--grad-checkpointing": ""})}
    exact = {"--estimator": "exact"}
    jobs = []
    for name, case in cases.items():
        jobs.append({"argv": fsdp_argv(world, d / f"ddp_{name}", **case, **exact)})
        offload = {"--offload-frozen": ""} if name == "lam1" else {}
        jobs.append({"argv": fsdp_argv(world, d / f"fsdp_{name}", **case, **exact, **offload, **{"--fsdp": ""})})
    resume = dict(lam="1.25", **exact, **{"--steps": "4", "--save-every": "2", "--temperature": "1", "--fsdp": ""})
    jobs += [{"argv": fsdp_argv(world, d / "full", **resume)}, {"copy": [str(d / "full"), str(d / "cut")]},
             {"argv": fsdp_argv(world, d / "cut", **resume, **{"--resume": ""})}]
    with open(d / "jobs.json", "w") as f:
        json.dump(jobs, f)
    with open(d / "driver.py", "w") as f:
        f.write(DRIVER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(d / "driver.py"), str(d / "jobs.json"), ROOT]
    run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=dict(os.environ, OMP_NUM_THREADS="1"), start_new_session=True)
    for name, case in cases.items():  # meanwhile, the one-process references
        gopd.main(fsdp_argv(world, d / f"one_{name}", **case, **exact))
    try:
        output, _ = run.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, 9)
        raise
    assert run.returncode == 0, output[-3000:]

    for name in cases:
        for mode in ["ddp", "fsdp"]:
            assert_same_run(d / f"one_{name}", d / f"{mode}_{name}")
            for a, b in zip(metrics(d / f"one_{name}"), metrics(d / f"{mode}_{name}")):
                assert a["kl_target"] == pytest.approx(b["kl_target"], rel=1e-4), (name, mode)
    one = metrics(d / "one_lam1")
    assert all(r["loss"] == pytest.approx(r["kl_target"], rel=1e-5) for r in one)  # token-mean: the loss is it
    sampled = fsdp_argv(world, d / "sampled", **cases["lam1"], **{"--estimator": "sampled"})
    gopd.main(sampled)  # the flag changes the update
    assert metrics(d / "sampled")[0]["loss"] != pytest.approx(one[0]["loss"], rel=1e-2)
    full, cut = (load_file(d / run / "step_000004" / "model.safetensors") for run in ["full", "cut"])
    middle = load_file(d / "full" / "step_000002" / "model.safetensors")
    assert all(torch.equal(full[k], cut[k]) for k in full) and any(not torch.equal(full[k], middle[k]) for k in full)


def test_bad_estimator_input_stops_with_one_line(world, tmp_path):
    """An unknown estimator, and the exact one with nucleus sampling (it compares whole next-token
    distributions, which top-p truncates; training refuses top-p < 1 for either estimator): one
    line each, from the command line, before any model loads."""
    for over, expected in [({"--estimator": "exakt"}, "gopd: error: --estimator must be sampled"),
                           ({"--estimator": "exact", "--top-p": "0.9"},
                            "gopd: error: --top-p 0.9: sample with --top-p 1")]:
        r = subprocess.run([sys.executable, os.path.join(ROOT, "gopd.py"), *base_args(world, tmp_path / "o", **over)],
                           capture_output=True, text=True)
        lines = r.stderr.strip().splitlines()
        assert r.returncode != 0 and len(lines) == 1 and lines[0].startswith(expected), r.stderr
        assert "exakt" in lines[0] or "--top-p 1" in lines[0]
    assert not (tmp_path / "o").exists()
