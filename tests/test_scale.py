"""Tests of what the first real run needs: models loaded shard by shard straight from their
safetensors files (equal to from_pretrained: tied and untied output layers, a bf16 multi-file
checkpoint, a Qwen3-MoE whose per-expert tensors transformers fuses), one training step equal to the
old load-then-shard path, one-line errors on every rank, and the supported version range.

One torchrun launch of 2 ranks (gloo) runs every two-rank job in a row (DRIVER)."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

import gopd
import tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Each rank runs the jobs of a JSON list and writes what it saw to OUT/<job>.rank<R>.pt: the gathered
# state dict and buffers of a loaded model, the weights after one step, or the line a load stopped
# with. "unreadable": this rank's safe_open fails as on a node whose copy of the files is unreadable.
DRIVER = r'''
import datetime, json, os, sys
import torch
import torch.distributed as dist
sys.path.insert(0, sys.argv[3])
import gopd
dist.init_process_group("gloo", timeout=datetime.timedelta(minutes=2))
rank, cpu = dist.get_rank(), torch.device("cpu")
gopd.setup_distributed = lambda *args: (rank, 2, cpu)  # gopd.main runs in this group
destroy, dist.destroy_process_group = dist.destroy_process_group, lambda *args: None
out = sys.argv[2]

def full(model):
    return {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in model.state_dict().items()}

def one_step(model):
    """gopd's scoring and a REINFORCE-like loss on this rank's rows, backward, AdamW."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.randint(4, 60, (2, 12), generator=torch.Generator().manual_seed(rank))
    logp = gopd.token_logprobs(model, ids, torch.ones_like(ids), 6)
    (-logp.mean()).backward()
    optimizer.step()
    return full(model)

for job in json.load(open(sys.argv[1])):
    name, path = job["name"], job.get("path")
    dtype = getattr(torch, job.get("dtype", "float32"))
    result = {}
    try:
        if job["kind"] == "load":
            model = gopd.load_model(path, dtype, cpu, trainable=job["trainable"], fsdp=True,
                                    offload=job.get("offload", False))
            result = {"state": full(model), "buffers": dict(model.named_buffers()),
                      "tied": model.get_output_embeddings().weight is model.get_input_embeddings().weight,
                      "local": sum(p.to_local().numel() for p in model.parameters()),
                      "grad": [p.requires_grad for p in model.parameters()]}
        elif job["kind"] == "step":
            from transformers import AutoModelForCausalLM
            old = gopd.shard(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), cpu, trainable=True)
            new = gopd.load_model(path, torch.float32, cpu, trainable=True, fsdp=True)
            result = {"old": one_step(old), "new": one_step(new)}
        elif job["kind"] == "unreadable":
            import safetensors
            real = safetensors.safe_open
            def refused(file, *args, **kwargs):
                raise PermissionError(13, "Permission denied", file)
            if rank == 1:
                safetensors.safe_open = refused
            try:
                gopd.load_model(path, torch.float32, cpu, trainable=True, fsdp=True)
            finally:
                safetensors.safe_open = real
        elif job["kind"] == "main":
            gopd.main(job["argv"])
    except SystemExit as e:
        result = {"exit": str(e)}
    torch.save(result, os.path.join(out, f"{name}.rank{rank}.pt"))
    dist.barrier()
destroy()
'''


def build_moe(path, tokenizer, experts=5):
    """A tiny Qwen3-MoE (experts split 3 + 2 over 2 ranks), saved in many small files so that one
    layer's experts straddle files, as the hub's Qwen3-30B-A3B does."""
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM
    torch.manual_seed(5)
    config = Qwen3MoeConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                            moe_intermediate_size=16, num_experts=experts, num_experts_per_tok=2,
                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                            max_position_embeddings=256, tie_word_embeddings=False,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                            bos_token_id=None)
    Qwen3MoeForCausalLM(config).save_pretrained(path, max_shard_size="8KB")
    tokenizer.save_pretrained(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """{name: folder}: a tied dense model (one float32 file); an untied one with an odd vocabulary
    (105 rows: split 53 + 52), saved in bf16 over several files; the MoE."""
    from transformers import AutoModelForCausalLM
    root = tmp_path_factory.mktemp("scale_models")
    tok = tiny.build_tokenizer(root / "tok")
    paths = {name: str(root / name) for name in ["tied", "untied", "moe"]}
    tiny.build_model(paths["tied"], tok, seed=1)
    tiny.build_model(paths["untied"], tok, seed=2, tie=False, vocab_pad=1)
    bf16 = AutoModelForCausalLM.from_pretrained(paths["untied"], dtype=torch.bfloat16)
    shutil.rmtree(paths["untied"])
    bf16.save_pretrained(paths["untied"], max_shard_size="40KB")
    tok.save_pretrained(paths["untied"])
    build_moe(paths["moe"], tok)
    return paths


def reference(path, dtype):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    return model.state_dict(), dict(model.named_buffers())


def assert_same(state, buffers, path, dtype):
    """The loaded model's (gathered) state dict and buffers are from_pretrained's, bit for bit."""
    expected, expected_buffers = reference(path, dtype)
    assert sorted(state) == sorted(expected)
    for k in expected:
        assert state[k].dtype == dtype and torch.equal(state[k], expected[k]), k
    assert sorted(buffers) == sorted(expected_buffers)
    for k in expected_buffers:
        assert torch.equal(buffers[k], expected_buffers[k]), k


def test_checkpoint_formats(models):
    """The premises: the MoE checkpoint stores experts one tensor per expert, over several files,
    while the model holds them fused; the untied one is bf16 over several files."""
    index = json.load(open(os.path.join(models["moe"], "model.safetensors.index.json")))["weight_map"]
    assert "model.layers.0.mlp.experts.4.up_proj.weight" in index
    layer0 = {f for k, f in index.items() if k.startswith("model.layers.0.mlp.experts.")}
    assert len(layer0) > 1
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(models["moe"])
    assert model.state_dict()["model.layers.0.mlp.experts.gate_up_proj"].shape == (5, 32, 32)
    assert len(set(json.load(open(os.path.join(models["untied"], "model.safetensors.index.json")))
                   ["weight_map"].values())) > 1


def test_plain_load_equals_from_pretrained(models):
    """Without --fsdp (one process, DDP): the same load path, whole tensors, equal to from_pretrained
    in float32 (the student) and bf16 (frozen models on GPU), tied layers still tied."""
    for name, path in models.items():
        for dtype in [torch.float32, torch.bfloat16]:
            model = gopd.load_model(path, dtype, torch.device("cpu"), trainable=dtype == torch.float32)
            assert_same(model.state_dict(), dict(model.named_buffers()), path, dtype)
            tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
            assert tied == (name == "tied")
            assert all(p.requires_grad == (dtype == torch.float32) for p in model.parameters())
            assert not model.training


def test_two_ranks_load_their_shards_and_stop_together(models, tmp_path):
    """2 FSDP ranks: every model loads shard by shard equal to from_pretrained (float32 student,
    bf16 frozen models with --offload-frozen), each rank holding half; one training step equals the
    old path's (from_pretrained, then shard); a missing shard file and a rank that cannot read the
    files stop both ranks with one line naming the cause; gopd.main logs the peak host RSS."""
    broken = tmp_path / "broken"
    shutil.copytree(models["untied"], broken)
    gone = sorted(f for f in os.listdir(broken) if f.endswith(".safetensors"))[-1]
    os.remove(broken / gone)
    jobs = [{"kind": "load", "name": f"{name}_{dtype}", "path": path, "dtype": dtype,
             "trainable": dtype == "float32", "offload": dtype == "bfloat16"}
            for name, path in models.items() for dtype in ["float32", "bfloat16"]]
    jobs += [{"kind": "step", "name": f"step_{name}", "path": models[name]} for name in ["tied", "moe"]]
    jobs += [{"kind": "load", "name": "missing", "path": str(broken), "trainable": True},
             {"kind": "unreadable", "name": "unreadable", "path": models["tied"]}]
    world = tiny.make_world(tmp_path / "world")
    argv = tiny.base_args(world, tmp_path / "run", **{"--steps": "1", "--fsdp": ""})
    jobs.append({"kind": "main", "name": "main", "argv": argv})
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    (tmp_path / "driver.py").write_text(DRIVER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(tmp_path / "driver.py"), str(tmp_path / "jobs.json"), str(tmp_path), ROOT]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]

    def result(name, rank):
        return torch.load(tmp_path / f"{name}.rank{rank}.pt", weights_only=False)
    for name, path in models.items():
        for dtype in [torch.float32, torch.bfloat16]:
            ranks = [result(f"{name}_{str(dtype).split('.')[1]}", r) for r in range(2)]
            assert_same(ranks[0]["state"], ranks[0]["buffers"], path, dtype)
            assert ranks[0]["tied"] == (name == "tied")
            assert all(g == (dtype == torch.float32) for g in ranks[0]["grad"])
            total = sum(t.numel() for t in dict.fromkeys(reference(path, dtype)[0].values()))
            assert ranks[0]["local"] + ranks[1]["local"] <= total + 2  # halves; tied counted once
            assert ranks[0]["local"] < 0.6 * total and ranks[1]["local"] < 0.6 * total
    for name in ["tied", "moe"]:
        step = result(f"step_{name}", 0)
        assert any(not torch.equal(step["new"][k], reference(models[name], torch.float32)[0][k])
                   for k in step["new"])  # the step moved the weights
        assert all(torch.equal(step["old"][k], step["new"][k]) for k in step["old"])
    for rank in range(2):
        missing = result("missing", rank)["exit"]
        assert gone in missing and "missing" in missing and "\n" not in missing, missing
        unreadable = result("unreadable", rank)["exit"]
        assert "rank 1: PermissionError" in unreadable and "\n" not in unreadable, unreadable
    lines = [line for line in run.stdout.splitlines() if "models loaded" in line]
    assert len(lines) == 1 and re.fullmatch(r"gopd: models loaded: peak host RSS \d+\.\d\d GiB \(rank [01]\)",
                                            lines[0]), run.stdout[-2000:]


def test_unmappable_weights_stop_with_one_line(models, tmp_path):
    """A checkpoint without a weight the model needs (an untied config over a tied model's file: no
    output layer), or with another shape, never leaves random weights: one line naming the tensor."""
    from safetensors.torch import load_file, save_file
    no_head, short = tmp_path / "no_head", tmp_path / "short"
    for folder in [no_head, short]:
        shutil.copytree(models["tied"], folder)
    config = json.loads((no_head / "config.json").read_text())
    (no_head / "config.json").write_text(json.dumps(dict(config, tie_word_embeddings=False)))
    weights = load_file(short / "model.safetensors")
    weights["model.norm.weight"] = weights["model.norm.weight"][:-1]
    save_file(weights, short / "model.safetensors")
    for folder, tensor in [(no_head, "lm_head.weight"), (short, "model.norm.weight")]:
        with pytest.raises(SystemExit) as e:
            gopd.load_model(str(folder), torch.float32, torch.device("cpu"))
        assert tensor in str(e.value) and "\n" not in str(e.value), str(e.value)


@pytest.mark.parametrize("package,version,stops", [
    ("torch", "2.10.1+cu126", True), ("transformers", "5.16.0", True),
    ("torch", "2.11.0a0+gitdeadbeef", False), ("transformers", "5.17.0", False),
    ("transformers", "5.99.0", False)])
def test_unsupported_versions_stop_with_one_line(monkeypatch, capsys, package, version, stops):
    """Older than the oldest tested stops with the package, the version found and the one needed
    (a pre-release of the oldest, as NGC images ship, is that release); a newer one warns."""
    import transformers
    monkeypatch.setattr(torch if package == "torch" else transformers, "__version__", version)
    monkeypatch.delenv("RANK", raising=False)
    if stops:
        with pytest.raises(SystemExit) as e:
            gopd.validate_versions()
        needed = ".".join(map(str, gopd.TESTED[package][0]))
        assert str(e.value) == (f"gopd: error: {package} {version} is too old: gopd needs {package}>={needed} "
                                f"(tested {needed} to {'.'.join(map(str, gopd.TESTED[package][1]))}); "
                                f"pip install -r requirements.txt")
    else:
        gopd.validate_versions()
        assert ("newer than the newest tested" in capsys.readouterr().err) == (version == "5.99.0")


def test_requirements_state_the_tested_range():
    """requirements.txt allows exactly gopd.TESTED's range for torch and transformers: the oldest
    and newest tested releases, nothing older, no newer minor release."""
    from packaging.requirements import Requirement
    lines = open(os.path.join(ROOT, "requirements.txt")).read().splitlines()
    allowed = {r.name: r.specifier for r in map(Requirement, [x for x in lines if x and x[0] != "#"])}
    for package, ((a, b), (c, d)) in gopd.TESTED.items():
        spec = allowed[package]
        assert f"{a}.{b}.0" in spec and f"{c}.{d}.0" in spec and f"{a}.{b}.0+cpu" in spec
        assert f"{a}.{b - 1}.9" not in spec and f"{c}.{d + 1}.0" not in spec


def test_every_preset_fits_a_node_of_host_memory():
    """tests/memory.py's host plan: every preset, in the mode it uses, fits a 512 GB node with its 8
    ranks loading or saving at once; under --fsdp a rank's load passes an eighth of what DDP's does
    through host memory (its rows of the largest tensor, not the whole tensor)."""
    import memory
    for name in memory.presets():
        plans, used = memory.preset_plan(name)
        assert memory.host_fits(plans[used]), (name, plans[used]["host"])
        assert plans["fsdp"]["host"]["load"] * 7 < plans["ddp"]["host"]["load"], name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_sharded_load_equals_from_pretrained(models):
    """On a GPU (an FSDP group of one, NCCL): the float32 student's shards on the GPU, bf16 frozen models
    with --offload-frozen in pinned CPU memory, each equal to from_pretrained."""
    rank, world, device = gopd.setup_distributed(fsdp=True)
    try:
        for path in models.values():
            student = gopd.load_model(path, torch.float32, device, trainable=True, fsdp=True)
            frozen = gopd.load_model(path, torch.bfloat16, device, fsdp=True, offload=True)
            assert all(p.to_local().is_cuda for p in student.parameters())
            assert all(p.to_local().is_pinned() for p in frozen.parameters())
            assert all(b.is_cuda for b in [*student.buffers(), *frozen.buffers()])
            for model, dtype in [(student, torch.float32), (frozen, torch.bfloat16)]:
                state = {k: v.to_local().cpu() for k, v in model.state_dict().items()}  # one rank: all of it
                buffers = {k: v.cpu() for k, v in model.named_buffers()}
                assert_same(state, buffers, path, dtype)
    finally:
        torch.distributed.destroy_process_group()


def test_gpu_check_reports_the_real_error(tmp_path):
    """tests/gpu_check.sh's JSON names a failed stage by the first line of the real exception in the
    torchrun child's output, not torchrun's own ChildFailedError or its ==== banner; gopd's one-line
    errors as they are."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import gpu_probe
    script = tmp_path / "fail.py"
    script.write_text("def f():\n    raise ValueError('the real cause')\nf()\n")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                          str(script)], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "====" in run.stderr
    assert gpu_probe.error_line(run.stdout + run.stderr) == "ValueError: the real cause"
    assert gpu_probe.error_line("x\ngopd: error: out of GPU memory during update; lower it\n[rank0]: y") \
        == "gopd: error: out of GPU memory during update; lower it"
