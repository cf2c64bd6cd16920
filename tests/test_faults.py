"""gopd.py under bad input and faults: one line for every mistake, nothing lost, and a resume that
can be trusted. Tiny models from tests/tiny.py; nothing touches the network."""

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import gopd
import tiny
from tiny import base_args, run_main, weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT_WITH_UNSHARE = os.geteuid() == 0 and shutil.which("unshare") is not None


def parse_error(argv):
    with pytest.raises(SystemExit) as e:
        gopd.parse_args(argv)
    return str(e.value)


def logged_steps(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line)["step"] for line in f]


def test_bad_numbers_are_refused_at_parse_time(world, tmp_path):
    cases = {
        ("--lam", "inf"): "--lam must be a finite number",
        ("--lam", "nan"): "--lam must be a finite number",
        ("--lam", "1e308"): "--lam must be > 0 and <= 100",
        ("--temperature", "nan"): "--temperature must be a finite number",
        ("--temperature", "inf"): "--temperature must be a finite number",
        ("--temperature", "1e-9"): "--temperature must be 0 (greedy) or in [0.01, 100]",
        ("--top-p", "nan"): "--top-p must be a finite number",
        ("--lr", "nan"): "--lr must be a finite number",
        ("--lr", "-0.001"): "--lr must be > 0",
        ("--lr", "0"): "--lr must be > 0",
        ("--warmup-steps", "-1"): "--warmup-steps must be >= 0",
        ("--save-every", "-1"): "--save-every must be >= 0",
        ("--grad-clip", "-1"): "--grad-clip must be >= 0",
        ("--weight-decay", "-0.1"): "--weight-decay must be >= 0",
        ("--eval-every", "-2"): "--eval-every must be >= 0",
        ("--micro-batch", "0"): "--micro-batch must be >= 1",
        ("--eval-n", "0"): "--eval-n must be >= 1",
        ("--dist-timeout", "0"): "--dist-timeout must be > 0",
    }
    for (flag, value), expected in cases.items():
        assert expected in parse_error(base_args(world, tmp_path, **{flag: value})), (flag, value)


def test_grad_clip_0_turns_clipping_off_and_still_trains(world, tmp_path):
    """--grad-clip 0 used to scale every gradient to zero: a run that trained nothing."""
    gopd.main(base_args(world, tmp_path / "o", **{"--grad-clip": "0", "--steps": "1"}))
    before, after = weights(world["student"]), weights(tmp_path / "o" / "step_000001")
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_bad_rows_and_files_are_one_line_errors(world, tmp_path):
    for prompt in [3, None, {"text": "hi"}, ["hi"], ""]:
        rows = [{"prompt": "fine", "domain": "math"}, {"prompt": prompt, "domain": "math"}]
        msg = run_main(base_args(world, tmp_path / "o", **{"--data": tiny.write_jsonl(tmp_path / "p.jsonl", rows)}))
        assert "row 1" in msg and "bad prompt" in msg, msg
    listed = tiny.write_jsonl(tmp_path / "l.jsonl", [{"prompt": "fine", "domain": ["math"]}])
    msg = run_main(base_args(world, tmp_path / "o", **{"--data": listed}))
    assert "row 0" in msg and "is not a string" in msg
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"prompt": "caf\xe9", "domain": "math"}\n')
    assert "not valid UTF-8" in run_main(base_args(world, tmp_path / "o", **{"--data": str(latin)}))
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(json.dumps({"prompt": f"p{i}", "domain": "math"}) + "\n" for i in range(20))
                   + '{"prompt": "cut sh\n')
    assert "cut.jsonl line 21: not valid JSON" in run_main(base_args(world, tmp_path / "o", **{"--data": str(cut)}))
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert f"--out {str(a_file)!r} is a file" in run_main(base_args(world, a_file))


@pytest.mark.skipif(not ROOT_WITH_UNSHARE, reason="a read-only mount needs root and util-linux unshare")
def test_read_only_out_is_one_line_before_any_model_loads(world, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    gopd_cmd = shlex.join([sys.executable, os.path.join(ROOT, "gopd.py"), *base_args(world, ro / "run")])
    script = f"mount --bind {ro} {ro} && mount -o remount,ro,bind {ro} {ro} && exec {gopd_cmd}"
    r = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"gopd: error: --out {str(ro / 'run')!r} is not writable (Read-only file system); pass a folder you can write to"]


def test_resume_falls_back_to_the_newest_intact_checkpoint(world, tmp_path, capsys):
    over = {"--steps": "3", "--save-every": "1"}
    gopd.main(base_args(world, tmp_path / "full", **over))
    reference = weights(tmp_path / "full" / "step_000003")
    out = tmp_path / "o"
    gopd.main(base_args(world, out, **over))
    resume = base_args(world, out, **over, **{"--resume": ""})

    # the newest lacks its trainer state, the one before has a truncated one: back to step 1
    os.remove(out / "step_000003" / "trainer_state.pt")
    state = out / "step_000002" / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[:1000])
    capsys.readouterr()
    gopd.main(resume)
    printed = capsys.readouterr().out
    assert "skipping" in printed and "step_000003" in printed and "step_000002" in printed
    assert f"resumed from {out / 'step_000001'} at step 1" in printed
    assert all(torch.equal(reference[k], w) for k, w in weights(out / "step_000003").items())
    assert logged_steps(out) == [1, 2, 3]  # the rows after the checkpoint were dropped, not repeated
    assert len([d for d in os.listdir(out) if ".incomplete-" in d]) == 2  # kept aside, not deleted

    # truncated weights in the newest: back to step 2
    model = out / "step_000003" / "model.safetensors"
    model.write_bytes(model.read_bytes()[:-100])
    gopd.main(resume)
    assert f"resumed from {out / 'step_000002'} at step 2" in capsys.readouterr().out
    assert all(torch.equal(reference[k], w) for k, w in weights(out / "step_000003").items())
    assert logged_steps(out) == [1, 2, 3]

    # no intact checkpoint at all: one line, nothing deleted
    for folder in gopd.checkpoints(out):
        os.remove(os.path.join(folder, "model.safetensors"))
    msg = run_main(resume)
    assert "no intact checkpoint in" in msg and "nothing was deleted" in msg
    assert len(gopd.checkpoints(out)) == 3


def test_resume_refuses_flags_that_change_the_optimisation(world, tmp_path):
    out = tmp_path / "o"
    gopd.main(base_args(world, out, **{"--steps": "1"}))
    msg = run_main(base_args(world, out, **{"--steps": "2", "--resume": "", "--lr": "2e-3", "--lam": "1.5"}))
    assert "--lam 1.25 (now 1.5)" in msg and "--lr 0.001 (now 0.002)" in msg and "--resume-override" in msg
    other = tiny.write_jsonl(tmp_path / "other.jsonl", [{"prompt": "x", "domain": "math"}] * 4)
    assert "other training rows" in run_main(base_args(world, out, **{"--steps": "2", "--resume": "", "--data": other}))
    # harmless flags (--steps to extend, --save-every) pass; --resume-override makes the new lr take effect
    gopd.main(base_args(world, out, **{"--steps": "3", "--save-every": "1", "--resume": "", "--lr": "2e-3",
                                       "--resume-override": ""}))
    with open(out / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[0]["lr"] == 1e-3 and rows[-1]["lr"] == 2e-3
    with open(out / "step_000003" / "run.json") as f:
        assert json.load(f)["args"]["lr"] == 2e-3


def test_disk_full_during_a_save_keeps_the_previous_checkpoint(world, tmp_path, monkeypatch):
    """torch.save meets a full disk halfway through the second checkpoint (its real error text)."""
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if "step_000002" in str(f) and str(f).endswith("trainer_state.pt"):
            with open(f, "wb") as partial:
                partial.write(b"\0" * 4096)
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4096 vs 4032")
        return real_save(obj, f, *args, **kwargs)
    monkeypatch.setattr(torch, "save", full_disk)
    out = tmp_path / "o"
    msg = run_main(base_args(world, out, **{"--steps": "2", "--save-every": "1"}))
    assert "could not write checkpoint" in msg and "no space left on device" in msg
    assert "removed the partial folder" in msg and str(out / "step_000001") in msg
    assert sorted(os.listdir(out)) == [".gopd.lock", "metrics.jsonl", "samples.jsonl", "step_000001"]
    monkeypatch.undo()
    gopd.main(base_args(world, out, **{"--steps": "2", "--save-every": "1", "--resume": ""}))
    assert logged_steps(out) == [1, 2]


@pytest.mark.skipif(not ROOT_WITH_UNSHARE, reason="a small tmpfs needs root and util-linux unshare")
def test_a_real_full_disk_is_reported_and_cleaned_up(world, tmp_path):
    """The same on a real 500 kB tmpfs: the first 330 kB checkpoint fits, the second does not."""
    disk = tmp_path / "disk"
    disk.mkdir()
    run = disk / "run"
    gopd_cmd = shlex.join([sys.executable, os.path.join(ROOT, "gopd.py"),
                           *base_args(world, run, **{"--steps": "2", "--save-every": "1"})])
    script = (f"mount -t tmpfs -o size=500k tmpfs {disk} && {gopd_cmd}; echo rc=$?; "
              f"ls -a {run}; ls {run}/step_000001")
    r = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True, timeout=300)
    assert "rc=1" in r.stdout, (r.stdout, r.stderr[-2000:])
    assert "no space left on device" in r.stderr.strip().splitlines()[-1]
    listing = r.stdout.split("rc=1")[1].split()
    assert "step_000001" in listing and not [x for x in listing if x.startswith("step_000002")]
    assert "trainer_state.pt" in listing and "model.safetensors" in listing  # the first one is whole


def test_out_of_gpu_memory_is_one_line_naming_the_phase(world, tmp_path, monkeypatch):
    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    monkeypatch.setattr(gopd, "rollout_batches", oom)
    msg = run_main(base_args(world, tmp_path / "a"))
    assert msg.startswith("gopd: error: out of GPU memory during generate;") and "--rollout-batch" in msg
    monkeypatch.undo()
    monkeypatch.setattr(gopd, "gopd_loss", oom)
    msg = run_main(base_args(world, tmp_path / "b"))
    assert "out of GPU memory during update" in msg and "--grad-checkpointing" in msg and "--fsdp" in msg


@pytest.mark.parametrize("sig, name, code", [(signal.SIGINT, "Ctrl-C", 130), (signal.SIGTERM, "SIGTERM", 143)])
def test_ctrl_c_and_sigterm_stop_with_one_line(world, tmp_path, sig, name, code):
    out = tmp_path / "o"
    # a shell without job control starts background jobs with SIGINT ignored, which a child inherits:
    # restore the default so that Ctrl-C means what it means at a terminal, however the suite was started
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "gopd.py"),
                             *base_args(world, out, **{"--steps": "500", "--save-every": "1"})],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and len(gopd.checkpoints(out)) < 2:
        time.sleep(0.2)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr[-2000:]
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert f"gopd: stopped by {name} at step" in last and "of 500" in last and "--resume" in last
    assert str(gopd.checkpoints(out)[-1]) in last
    steps = logged_steps(out)
    assert steps == list(range(1, len(steps) + 1))


def test_dist_timeout_reaches_init_process_group(monkeypatch):
    """--dist-timeout (minutes) is the collective timeout: long evaluations must not trip NCCL's default."""
    from datetime import timedelta
    seen = {}
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(gopd.dist, "init_process_group", lambda backend, **kw: seen.update(backend=backend, **kw))
    monkeypatch.setattr(gopd.dist, "get_rank", lambda: 0)
    monkeypatch.setattr(gopd.dist, "get_world_size", lambda: 1)
    assert gopd.setup_distributed(90)[1] == 1
    assert seen == {"backend": "gloo", "timeout": timedelta(minutes=90)}
    assert gopd.parse_args(["--dist-timeout", "90"]).dist_timeout == 90


def gopd_process(argv):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "gopd.py"), *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_lock(out, pid):
    """Block until the process `pid` holds --out's lock (it writes its pid there once it does)."""
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if json.loads((out / ".gopd.lock").read_text())["pid"] == pid:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"process {pid} never locked {out}")


def test_a_second_run_into_the_same_out_stops_with_one_line(world, tmp_path):
    """Two runs into one --out used to interleave their metrics and clean up each other's saves. The
    second now stops before loading anything (its --student does not even exist), with one line naming
    the first; the first, paused meanwhile, finishes untouched. A torchrun of 2 ranks stops on both. A
    lock file left by a finished or killed (kill -9) run blocks nothing."""
    import socket
    out = tmp_path / "o"
    first = gopd_process(base_args(world, out, **{"--steps": "6", "--save-every": "2"}))
    wait_for_lock(out, first.pid)
    os.kill(first.pid, signal.SIGSTOP)  # still holding the lock, at a point no later than step 6
    try:
        second = subprocess.run([sys.executable, os.path.join(ROOT, "gopd.py"),
                                 *base_args(world, out, **{"--student": str(tmp_path / "missing")})],
                                capture_output=True, text=True, timeout=300)
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    os.path.join(ROOT, "gopd.py")]
        cpu = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # two ranks even on a machine of one GPU
        two = subprocess.run([*torchrun, *base_args(world, out)], capture_output=True, text=True, timeout=300,
                             env=cpu)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    line = f"gopd: error: {out} is in use by another gopd run (pid {first.pid} on host {socket.gethostname()}"
    assert second.returncode == 1 and second.stdout == ""
    assert len(second.stderr.strip().splitlines()) == 1 and second.stderr.startswith(line), second.stderr
    assert "pass another --out" in second.stderr and "delete" in second.stderr
    assert two.returncode != 0 and two.stderr.count(line) == 2, two.stderr[-3000:]
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr[-2000:]
    assert logged_steps(out) == [1, 2, 3, 4, 5, 6]
    assert [os.path.basename(c) for c in gopd.checkpoints(out)] == ["step_000002", "step_000004", "step_000006"]

    # the lock file stays, naming a process that is gone: it blocks nothing; nor does a kill -9
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time, torch; sys.path.insert(0, sys.argv[1]); "
                               "import gopd\nwith gopd.out_lock(sys.argv[2], 0, torch.device('cpu')): time.sleep(600)",
                               ROOT, str(out)])
    wait_for_lock(out, holder.pid)
    holder.kill()
    holder.wait()
    gopd.main(base_args(world, out, **{"--steps": "7", "--save-every": "2", "--resume": ""}))
    assert logged_steps(out) == [1, 2, 3, 4, 5, 6, 7]


class RunsCode:
    """Unpickling this creates a folder: what any pickle can do with os.system instead."""
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def plant(src, dst, step=None, **files):
    """A copy of checkpoint folder src as dst, its run.json saying `step` (default: dst's), with files
    replaced: name -> object to torch.save, or for run.json the whole record, as given."""
    shutil.copytree(src, dst)
    record = json.loads((src / "run.json").read_text())
    record["step"] = int(dst.name[len("step_"):]) if step is None else step
    for name, obj in files.items():
        if name == "run.json":
            record = obj
        else:
            torch.save(obj, dst / name)
    (dst / "run.json").write_text(json.dumps(record))


def test_resume_never_unpickles_code_from_a_checkpoint_folder(world, tmp_path, capsys):
    """--resume used to torch.load every checkpoint it scanned with weights_only=False: a planted
    step_999999/trainer_state.pt ran its code. Now nothing in a checkpoint folder runs: a pickle in the
    trainer state, the RNG state, an FSDP optimizer shard, or a pytorch_model.bin next to the weights
    makes the folder one to skip (one line each), and the run resumes from the newest intact one."""
    out = tmp_path / "o"
    gopd.main(base_args(world, out, **{"--steps": "2", "--save-every": "1"}))
    good, marker = out / "step_000002", tmp_path / "code_ran"
    state = torch.load(good / "trainer_state.pt", weights_only=True)
    plant(good, out / "step_999999", **{"trainer_state.pt": {**state, "step": RunsCode(marker)}})
    plant(good, out / "step_999998", **{"rng_rank0.pt": [RunsCode(marker)]})
    plant(good, out / "step_999997", **{"pytorch_model.bin": {"w": RunsCode(marker)}})
    sharded = {**state, "step": 999996, "optimizer": None}
    plant(good, out / "step_999996", **{"trainer_state.pt": sharded, "optimizer_rank0.pt": RunsCode(marker)})
    capsys.readouterr()
    gopd.main(base_args(world, out, **{"--steps": "3", "--resume": ""}))
    printed = capsys.readouterr().out
    assert not marker.exists()
    skipped = [line for line in printed.splitlines() if line.startswith("gopd: skipping")]
    assert len(skipped) == 4 and all("not gopd's" in line for line in skipped), printed
    assert "step_999997: incomplete or not gopd's (ValueError: pytorch_model.bin is a pickle" in printed
    assert f"resumed from {good} at step 2" in printed and logged_steps(out) == [1, 2, 3]
    assert len([d for d in os.listdir(out) if ".incomplete-" in d]) == 4


def test_a_tampered_run_json_is_one_line_naming_the_field(world, tmp_path, capsys):
    """A foreign or tampered run.json used to give a KeyError deep in the resume or a nonsense line
    ("written by 1 rank(s) and this run has 1" for "world": "1"). Now each field is checked, and the
    folder is skipped like any incomplete checkpoint, with one line naming the field."""
    out = tmp_path / "o"
    gopd.main(base_args(world, out, **{"--steps": "1"}))
    good = out / "step_000001"
    record = json.loads((good / "run.json").read_text())
    cases = {"'args'": {k: v for k, v in record.items() if k != "args"},
             "'data'": {k: v for k, v in record.items() if k != "data"},
             "'world'": {**record, "world": "1"},
             "'step'": {**record, "step": 1.0},
             "'args.rollout_batch'": {**record, "args": {**record["args"], "rollout_batch": "8"}},
             "JSON object": [record]}
    for field, bad in cases.items():
        folder = tmp_path / "plant" / "step_000001"
        shutil.rmtree(folder.parent, ignore_errors=True)
        plant(good, folder, **{"run.json": bad})
        with pytest.raises(ValueError, match=field):
            gopd.read_checkpoint(str(folder), 1, 0)
    plant(good, out / "step_000002", **{"run.json": {**record, "step": 2, "world": 0}})
    plant(good, out / "step_000003", step=7)
    capsys.readouterr()
    gopd.main(base_args(world, out, **{"--steps": "2", "--resume": ""}))
    printed = capsys.readouterr().out
    assert (f"gopd: skipping {out / 'step_000003'}: incomplete or not gopd's (ValueError: run.json field "
            f"'step' is 7, not the folder's)") in printed
    assert f"skipping {out / 'step_000002'}: incomplete or not gopd's (ValueError: run.json field 'world'" in printed
    assert f"resumed from {good} at step 1" in printed and logged_steps(out) == [1, 2]


def test_resume_reuses_the_rollout_batch_whatever_memory_is_free(world, tmp_path, monkeypatch, capsys):
    """The automatic rollout batch came from the memory free at start: a resume with less free memory
    sampled in smaller batches, so other responses, and diverged. It is now the checkpoint's."""
    auto = {"--rollout-batch": None, "--temperature": "1"}
    gopd.main(base_args(world, tmp_path / "full", **auto, **{"--steps": "3"}))
    gopd.main(base_args(world, tmp_path / "cut", **auto, **{"--steps": "2"}))
    monkeypatch.setattr(gopd, "_free_memory", lambda device: 1)  # room for one sequence, if asked
    capsys.readouterr()
    gopd.main(base_args(world, tmp_path / "cut", **auto, **{"--steps": "3", "--resume": ""}))
    assert f"rollout batch 8 sequences, as in {tmp_path / 'cut' / 'step_000002'}" in capsys.readouterr().out
    a, b = weights(tmp_path / "full" / "step_000003"), weights(tmp_path / "cut" / "step_000003")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_top_p_below_1_is_refused_for_training(world, tmp_path):
    """At top-p < 1 the loss scored the untruncated softmax, not the distribution sampled from."""
    for value in ["0.5", "0.999", "1.5"]:
        msg = parse_error(base_args(world, tmp_path, **{"--top-p": value}))
        assert msg.startswith(f"gopd: error: --top-p {float(value)}: sample with --top-p 1, as the paper does")
        assert "untruncated softmax" in msg and "evaluate.py --top-p" in msg and "\n" not in msg
    assert gopd.parse_args(base_args(world, tmp_path, **{"--top-p": "1"})).top_p == 1


def test_report_to_a_missing_package_or_unknown_tracker_is_one_line(world, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    assert parse_error(base_args(world, tmp_path, **{"--report-to": "none,wandb"})) == \
        "gopd: error: --report-to wandb needs the wandb package: pip install wandb"
    assert parse_error(base_args(world, tmp_path, **{"--report-to": "tensorboard"})) == \
        "gopd: error: --report-to tensorboard needs the tensorboard package: pip install tensorboard"
    assert parse_error(base_args(world, tmp_path, **{"--report-to": "mlflow"})) == \
        "gopd: error: --report-to 'mlflow': unknown tracker; choose from none, wandb, tensorboard"
    assert gopd.parse_args(base_args(world, tmp_path, **{"--report-to": "none"})).report_to == []


def flattened(record):
    """A metrics.jsonl record as the trackers get it: numbers only, evaluations as eval/NAME."""
    flat = {f"eval/{k}": v for k, v in record.get("eval", {}).items()}
    flat.update({k: v for k, v in record.items() if k not in ("step", "eval") and isinstance(v, (int, float))})
    return flat


def test_report_to_wandb_logs_what_metrics_jsonl_holds(world, tmp_path, monkeypatch):
    """A stand-in wandb module records what gopd sends: one log per metrics.jsonl record, at its step."""
    import types
    logged, runs = [], []
    fake = types.ModuleType("wandb")

    def init(name, config):
        run = types.SimpleNamespace(log=lambda data, step: logged.append((step, data)),
                                    finish=lambda: runs.append("finished"), name=name, config=config)
        runs.append(run)
        return run
    fake.init = init
    monkeypatch.setitem(sys.modules, "wandb", fake)
    evals = tiny.write_jsonl(tmp_path / "eval.jsonl", [{"prompt": "add 1 and 2", "domain": "math", "answer": "3"}])
    out = tmp_path / "o"
    gopd.main(base_args(world, out, **{"--report-to": "wandb", "--eval-data": evals, "--eval-every": "1"}))
    with open(out / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert [step for step, _ in logged] == [0, 1, 2] == [r["step"] for r in records]
    assert [data for _, data in logged] == [flattened(r) for r in records]
    assert "eval/math" in logged[0][1] and "loss" in logged[1][1] and "eval/math" in logged[2][1]
    assert runs[0].name == "o" and runs[0].config["lam"] == 1.25 and runs[-1] == "finished"


def test_report_to_tensorboard_logs_what_metrics_jsonl_holds(world, tmp_path):
    """Every number of metrics.jsonl once, at its step, even after a resume that redoes a step the
    interrupted run had logged (as metrics.jsonl drops its row, TensorBoard drops its events)."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out = tmp_path / "o"
    gopd.main(base_args(world, out, **{"--report-to": "tensorboard", "--steps": "3", "--save-every": "2"}))
    shutil.rmtree(out / "step_000003")  # interrupted after logging step 3, before saving it
    gopd.main(base_args(world, out, **{"--report-to": "tensorboard", "--steps": "3", "--resume": "",
                                       "--save-every": "2"}))
    with open(out / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    logged = {}
    for tag in events.Tags()["scalars"]:
        steps = [e.step for e in events.Scalars(tag)]
        assert len(steps) == len(set(steps)), (tag, steps)
        for e in events.Scalars(tag):
            logged.setdefault(e.step, {})[tag] = e.value
    assert sorted(logged) == [r["step"] for r in records] == [1, 2, 3]
    for r in records:
        expected = flattened(r)
        assert logged[r["step"]] == pytest.approx(expected, rel=1e-6) and len(expected) > 10
