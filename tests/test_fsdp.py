"""Tests of --fsdp and --offload-frozen: two FSDP ranks (torchrun, gloo on CPU) make the same update as
one process, tied and untied output layers, lam 1 and 1.25, with ranks whose domain mixes differ;
bit-exact --resume and save_pretrained folders under FSDP; offloaded frozen models score the same.

Every torchrun start costs ~10 s here, so one launch runs all the two-rank jobs in a row (DRIVER)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import tiny
import evaluate
import gopd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_ROWS, PROMPTS_PER_STEP = 8, 4

# Runs gopd.main for each job in a JSON list, in one torchrun launch and one process group (a group
# created again in the same process can race on the rendezvous store's old keys). {"copy": [src, dst]}
# makes an interrupted run: src without its newest checkpoint. Each rank also writes its weight shards
# at every checkpoint, so the test can check the saved folder against what the ranks held, and counts
# FSDP's all-gathers, in and out of HF generate.
DRIVER = r'''
import datetime, json, os, shutil, sys
import torch
import torch.distributed as dist
import transformers.generation.utils
sys.path.insert(0, sys.argv[2])
import gopd
counts, inside = {"all_gathers": 0, "in_generate": 0}, [False]
# FSDP2's all-gather: all_gather_single from torch 2.13, all_gather_into_tensor before
GATHER = "all_gather_single" if hasattr(dist, "all_gather_single") else "all_gather_into_tensor"
all_gather, generate = getattr(dist, GATHER), transformers.generation.utils.GenerationMixin.generate
def counted(*args, **kwargs):
    counts["all_gathers"] += 1
    counts["in_generate"] += inside[0]
    return all_gather(*args, **kwargs)
def spied(*args, **kwargs):
    inside[0] = True
    try:
        return generate(*args, **kwargs)
    finally:
        inside[0] = False
setattr(dist, GATHER, counted)
transformers.generation.utils.GenerationMixin.generate = spied
dist.init_process_group("gloo", timeout=datetime.timedelta(minutes=2))
rank, world = dist.get_rank(), dist.get_world_size()
gopd.setup_distributed = lambda *args: (rank, world, torch.device("cpu"))
destroy, dist.destroy_process_group = dist.destroy_process_group, lambda *args: None  # gopd.main's, at its end
save_sharded = gopd.save_sharded
def spy(model, optimizer, folder):
    shards = {k: v.to_local().clone() for k, v in model.state_dict().items()}
    torch.save(shards, folder.replace(".tmp", "") + f".shards{rank}.pt")
    return save_sharded(model, optimizer, folder)
gopd.save_sharded = spy
for job in json.load(open(sys.argv[1])):
    if "copy" in job:
        src, dst = job["copy"]
        if rank == 0:
            shutil.copytree(src, dst)
            shutil.rmtree(gopd.checkpoints(dst)[-1])
    else:
        gopd.main(job["argv"])
    dist.barrier()
json.dump(counts, open(f"{sys.argv[1]}.counts{rank}", "w"))
destroy()
'''


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The tiny world, plus an untied student (with its stopper) and an untied code teacher, and data
    whose rows put only math on rank 0 and only code on rank 1 for the first two steps of 2 ranks."""
    root = tmp_path_factory.mktemp("fsdp_world")
    w = tiny.make_world(root)
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(w["student"])
    w["student_untied"] = str(root / "student_untied")
    tiny.build_model(w["student_untied"], tok, seed=3, tie=False)
    rows = [json.loads(line) for line in open(w["data"])]
    tiny.make_stopper(w["student_untied"], [r["prompt"] for r in rows])
    w["code_untied"] = str(root / "code_untied")
    tiny.build_model(w["code_untied"], tok, seed=4, scale=8.0, tie=False)
    math_rows = [r for r in rows if r["domain"] == "math"]
    code_rows = [r for r in rows if r["domain"] == "code"]
    perm = gopd.step_indices(N_ROWS, 0, N_ROWS, seed=0)  # steps 0 and 1 together: one epoch
    split = [None] * N_ROWS
    for j, i in enumerate(perm):  # idx[rank::2] of each step: even positions -> rank 0, odd -> rank 1
        split[i] = (math_rows if j % 2 == 0 else code_rows)[j // 2]
    w["split_data"] = tiny.write_jsonl(root / "split.jsonl", split)
    return w


def argv(w, out, student="student", lam="1", teachers=None, **over):
    args = {"--student": w[student], "--data": w["split_data"], "--lam": lam, "--steps": "2",
            "--prompts-per-step": str(PROMPTS_PER_STEP), "--samples-per-prompt": "2", "--max-new-tokens": "12",
            "--micro-batch": "3", "--rollout-batch": "4", "--lr": "1e-2", "--temperature": "0",
            "--log-samples-every": "0", "--dist-timeout": "1", "--out": str(out)}
    args.update(over)
    teachers = teachers or [f"math={w['math']}", f"code={w['code_untied']}"]
    flags = [x for k, v in args.items() if v is not None for x in ([k] if v == "" else [k, v])]
    return flags + [x for t in teachers for x in ("--teacher", t)]


def metrics(out):
    return [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]


def assert_same_run(one, two, atol=1e-4):
    """Same metrics and same saved weights (same tensor names, as save_pretrained writes them). At lr
    1e-2 an AdamW step moves a weight by about 1e-2; summation order (all-reduce vs reduce-scatter)
    moves a few by up to 1e-5 (Adam divides near-zero gradients by their own size)."""
    m1, m2 = metrics(one), metrics(two)
    assert [r["step"] for r in m1] == [r["step"] for r in m2] and m1
    for a, b in zip(m1, m2):
        assert a.get("eval") == b.get("eval")
        for key in ["loss", "grad_norm", "kl_teacher", "entropy", "response_len", "implicit_reward", "kl_ref"]:
            if a.get(key) is None:
                assert b.get(key) is None, key
            else:
                assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    last = gopd.checkpoints(one)[-1].split(os.sep)[-1]
    w1, w2 = (load_file(os.path.join(o, last, "model.safetensors")) for o in (one, two))
    assert sorted(w1) == sorted(w2)
    for k in w1:
        assert torch.allclose(w1[k], w2[k], atol=atol), k


def test_split_data_gives_each_rank_one_domain(world):
    """The premise of the multi-teacher jobs below: rank 0 sees only math rows, rank 1 only code."""
    rows = [json.loads(line) for line in open(world["split_data"])]
    for step in range(2):
        idx = gopd.step_indices(N_ROWS, step, PROMPTS_PER_STEP, seed=0)
        assert {rows[i]["domain"] for i in idx[0::2]} == {"math"}
        assert {rows[i]["domain"] for i in idx[1::2]} == {"code"}


def test_fsdp_two_ranks_match_one_process_and_resume_bit_exact(world, tmp_path):
    """One torchrun launch of 2 FSDP ranks runs: tied and untied students at lam 1 and 1.25, two
    teachers (one tied, one untied) with each rank holding rows of one domain only (so each rank runs
    a teacher on a stand-in row: without that the ranks' collectives no longer pair up); one run with
    --grad-checkpointing, one with --offload-frozen, one evaluating 3 problems on 2 ranks; then a
    sampled (temperature 1) run with checkpoints, copied without its last one and resumed."""
    d = tmp_path
    evals = tiny.write_jsonl(d / "eval.jsonl", [{"prompt": f"add {i} and 1", "domain": "math", "answer": str(i + 1)}
                                                 for i in range(3)])  # 2 problems on rank 0, 1 on rank 1
    cases = {"tied_lam1": dict(lam="1", **{"--grad-checkpointing": ""}),
             "tied_lam125": dict(lam="1.25", **{"--eval-data": evals}),
             "untied_lam1": dict(student="student_untied", lam="1"),
             "untied_lam125": dict(student="student_untied", lam="1.25", **{"--offload-frozen": ""})}
    resume = dict(lam="1.25", **{"--steps": "4", "--save-every": "2", "--temperature": "1", "--fsdp": ""})
    jobs = [{"argv": argv(world, d / f"fsdp_{name}", **case, **{"--fsdp": ""})} for name, case in cases.items()]
    jobs += [{"argv": argv(world, d / "full", **resume)}, {"copy": [str(d / "full"), str(d / "cut")]},
             {"argv": argv(world, d / "cut", **resume, **{"--resume": ""})}]
    with open(d / "jobs.json", "w") as f:
        json.dump(jobs, f)
    with open(d / "driver.py", "w") as f:
        f.write(DRIVER)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(d / "driver.py"), str(d / "jobs.json"), ROOT]
    run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                           start_new_session=True)
    # meanwhile, the one-process references (plain gopd: no FSDP, no offload)
    for name, case in cases.items():
        case = {k: v for k, v in case.items() if k != "--offload-frozen"}
        gopd.main(argv(world, d / f"one_{name}", **case))
    try:
        output, _ = run.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, 9)
        raise
    assert run.returncode == 0, output[-3000:]

    for name in cases:
        assert_same_run(d / f"one_{name}", d / f"fsdp_{name}")
    assert json.load(open(d / "fsdp_tied_lam125" / "eval.json")) == json.load(open(d / "one_tied_lam125" / "eval.json"))
    for rank in range(2):  # generate (rollouts, evaluation) ran on the gathered student: no collective inside
        counts = json.load(open(d / f"jobs.json.counts{rank}"))
        assert counts["all_gathers"] > 100 and counts["in_generate"] == 0, counts
    assert "implicit_reward" not in metrics(d / "one_tied_lam1")[0]  # lam 1: no reference pass
    for name in cases:  # responses of varied lengths: a per-rank or per-micro-batch mean would differ
        first = next(r for r in metrics(d / f"one_{name}") if "loss" in r)
        assert first["response_len"] < first["response_len_max"] and first["truncated"] < 1

    # resume: bit-exact, and the folder is the ranks' shards put together, loadable by from_pretrained
    full, cut = load_file(d / "full" / "step_000004" / "model.safetensors"), \
        load_file(d / "cut" / "step_000004" / "model.safetensors")
    assert sorted(full) == sorted(cut) and all(torch.equal(full[k], cut[k]) for k in full)
    middle = load_file(d / "full" / "step_000002" / "model.safetensors")
    assert any(not torch.equal(full[k], middle[k]) for k in full)
    assert {"optimizer_rank0.pt", "optimizer_rank1.pt"} <= set(os.listdir(d / "full" / "step_000004"))
    from transformers import AutoModelForCausalLM
    loaded = AutoModelForCausalLM.from_pretrained(d / "cut" / "step_000004").state_dict()
    shards = [torch.load(d / "cut" / f"step_000004.shards{r}.pt") for r in range(2)]
    assert set(loaded) == set(shards[0])  # tied: lm_head.weight is the embedding, in both
    for k in loaded:
        assert torch.equal(loaded[k], torch.cat([shards[0][k], shards[1][k]])), k


def test_fsdp_in_one_process_and_resume_needs_the_same_mode(world, tmp_path):
    """--fsdp without torchrun: a group of one, the same update as plain gopd. A checkpoint written
    with --fsdp (optimizer in shards) refuses a resume without it, and the reverse."""
    gopd.main(argv(world, tmp_path / "plain", lam="1.25", **{"--steps": "1"}))
    gopd.main(argv(world, tmp_path / "fsdp", lam="1.25", **{"--steps": "1", "--fsdp": ""}))
    assert_same_run(tmp_path / "plain", tmp_path / "fsdp")
    more = {"--steps": "2", "--resume": "", "--resume-override": ""}
    with pytest.raises(SystemExit, match="was written with --fsdp.*resume with --fsdp"):
        gopd.main(argv(world, tmp_path / "fsdp", lam="1.25", **more))
    with pytest.raises(SystemExit, match="was written without --fsdp"):
        gopd.main(argv(world, tmp_path / "plain", lam="1.25", **more, **{"--fsdp": ""}))
    with pytest.raises(SystemExit, match="--fsdp True"):  # without --resume-override: a changed flag
        gopd.main(argv(world, tmp_path / "fsdp", lam="1.25", **{"--steps": "2", "--resume": ""}))


def test_offloaded_frozen_models_score_the_same(world):
    """score_batches with --offload-frozen: the same log-probs as resident models and as scoring each
    micro-batch with `score`; the frozen models are on the compute device only while they score."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    load = lambda p: AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32).to(device).eval()  # noqa: E731
    tok = AutoTokenizer.from_pretrained(world["student"])
    student, teachers = load(world["student"]), {"math": load(world["math"]), "code": load(world["code_untied"])}
    ref = load(world["student_untied"])
    rows = [json.loads(line) for line in open(world["split_data"])]
    prompts = [evaluate.prompt_ids(tok, r["prompt"]) for r in rows]

    sampling = dict(max_new_tokens=10, temperature=0, top_p=1.0, stop_ids=[tok.eos_token_id], pad_id=tok.pad_token_id)
    batches = gopd.rollout_batches(student, prompts, list(range(N_ROWS)), [r["domain"] for r in rows], sampling, 8, 3)
    expected = [(gopd.frozen_logprobs(teachers, b.domains, b.seq, b.attn, b.mask.shape[1], 1.0),
                 gopd.frozen_logprobs({None: ref}, [None] * len(b.seq), b.seq, b.attn, b.mask.shape[1], 1.0))
                for b in batches]
    args = (teachers, ref, {"math": None, "code": None}, {None: None}, 1.0, tok.pad_token_id, device)
    gopd.score_batches(batches, *args, offload=False)
    resident = [(b.logp_t.clone(), b.logp_r.clone()) for b in batches]
    where = []
    hooks = [m.register_forward_pre_hook(lambda mod, a: where.append(next(mod.parameters()).device))
             for m in [*teachers.values(), ref]]
    for m in [*teachers.values(), ref]:
        m.to("cpu")
    gopd.score_batches(batches, *args, offload=True)
    for h in hooks:
        h.remove()
    assert where and all(w.type == device.type for w in where)
    assert all(p.device.type == "cpu" for m in [*teachers.values(), ref] for p in m.parameters())
    for (t, r), (rt, rr), b in zip(expected, resident, batches):
        assert torch.equal(t, rt) and torch.equal(r, rr)
        assert torch.allclose(b.logp_t, t, atol=1e-6) and torch.allclose(b.logp_r, r, atol=1e-6)
    # each domain's rows were scored by their own teacher: the two teachers disagree
    b = next(b for b in batches if len(set(b.domains)) > 1)
    swapped = {"math": teachers["code"].to(device), "code": teachers["math"].to(device)}  # on CPU since offload
    other = gopd.frozen_logprobs(swapped, b.domains, b.seq, b.attn, b.mask.shape[1], 1.0)
    assert not torch.allclose(other, b.logp_t, atol=1e-3)


def test_rollout_batch_from_the_kv_cache_budget(world, tmp_path, capsys, monkeypatch):
    """Qwen3-4B's published shape: 36 layers x 8 KV heads x 128 dims, K and V, bf16 = 144 KiB a token;
    a sequence of 2048 + 16384 tokens holds 2.53 GiB of KV cache. Without --rollout-batch gopd picks
    and logs a batch: all the rank's rows if they fit, else a multiple of --micro-batch."""
    from types import SimpleNamespace
    from transformers import Qwen3Config
    config = Qwen3Config(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                         num_key_value_heads=8, head_dim=128, vocab_size=151936)
    assert gopd.kv_bytes_per_token(config, 2) == 36 * 8 * 128 * 2 * 2 == 147456
    batch, per_seq = gopd.rollout_budget(config, 2048, 16384, 60 * 2**30, 2)
    kv = 18432 * 147456
    assert kv < per_seq < kv * 1.1 and batch == int(0.8 * 60 * 2**30 // per_seq) == 17
    assert gopd.rollout_budget(config, 2048, 16384, 10**6, 2)[0] == 1  # never below one sequence

    gopd.main(argv(world, tmp_path / "auto", **{"--steps": "1", "--rollout-batch": None}))
    assert "gopd: rollout batch 8 sequences" in capsys.readouterr().out  # all 4 prompts x 2 samples
    assert json.load(open(tmp_path / "auto" / "step_000001" / "run.json"))["args"]["rollout_batch"] == 8
    # room for 7 of the 8 rows: 6, a multiple of --micro-batch 3
    student = gopd.load_model(world["student"], torch.float32, torch.device("cpu"), trainable=True)
    optimizer = torch.optim.AdamW(student.parameters())
    pending = 8 * sum(p.numel() for p in student.parameters())  # AdamW's moments, not allocated yet
    one = gopd.rollout_budget(student.config, 20, 12, 1, 4)[1]
    monkeypatch.setattr(gopd, "_free_memory", lambda device: pending + int(7.5 * one / 0.8))
    args = SimpleNamespace(fsdp=False, max_prompt_len=2048, max_new_tokens=12, prompts_per_step=4,
                           samples_per_prompt=2, micro_batch=3)
    choose = lambda: gopd.choose_rollout_batch(student, optimizer, [[1] * 20], args, 1, torch.device("cpu"),  # noqa: E731
                                               lambda *a: None)
    assert choose() == 6
    args.micro_batch = 8
    assert choose() == 7


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fsdp_in_one_process(world, tmp_path):
    """On GPU (bf16 compute, float32 master weights, NCCL group of one): --fsdp with sharded frozen
    models kept in CPU memory trains like plain gopd within bf16 noise, and saves float32 weights."""
    over = dict(lam="1.25", **{"--steps": "2", "--grad-checkpointing": ""})
    gopd.main(argv(world, tmp_path / "plain", **over))
    gopd.main(argv(world, tmp_path / "fsdp", **over, **{"--fsdp": "", "--offload-frozen": ""}))
    for a, b in zip(metrics(tmp_path / "plain"), metrics(tmp_path / "fsdp")):
        for key in ["loss", "grad_norm", "kl_teacher", "response_len"]:
            assert a[key] == pytest.approx(b[key], rel=0.05, abs=0.05), key
    w = load_file(tmp_path / "fsdp" / "step_000002" / "model.safetensors")
    assert all(t.dtype == torch.float32 for t in w.values())
