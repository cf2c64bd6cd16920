"""The bundled toy world: the build script runs end to end (micro mode), and what it builds (and what
is committed under toy/) loads through from_pretrained like any hub model, with one shared tokenizer
that round-trips every toy prompt."""
import json
import os
import random
import subprocess
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = Path(__file__).resolve().parent.parent
TOY = ROOT / "toy"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(TOY))
import build  # noqa: E402
import evaluate  # noqa: E402

MODELS = ["student", "math_expert", "code_expert", "large_base", "large_math_expert"]
DATA = ["train", "test_math", "test_code", "quick_math", "quick_code"]


def run_micro_build(out):
    """The micro build, started from an unrelated working directory."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, str(TOY / "build.py"), "--micro", "--out", str(out)], cwd=out.parent,
                   env=env, check=True, capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    out = tmp_path_factory.mktemp("build") / "toy"
    out.mkdir()
    run_micro_build(out)
    return out


def read_rows(folder):
    rows = {}
    for name in DATA:
        with open(folder / "data" / f"{name}.jsonl") as f:
            rows[name] = [json.loads(line) for line in f]
    return rows


def check_toy_world(folder):
    """Everything a consumer of the toy world relies on, asserted on content."""
    rows = read_rows(folder)
    assert {r["domain"] for r in rows["train"]} == {"math", "code"}
    assert {r["domain"] for r in rows["test_math"]} == {"math"}
    assert {r["domain"] for r in rows["test_code"]} == {"code"}
    for row in rows["train"] + rows["test_math"] + rows["test_code"]:
        assert ("answer" in row) == (row["domain"] == "math") and ("tests" in row) == (row["domain"] == "code")
        assert row.get("answer", "0").isdigit() and "assert" in row.get("tests", "assert")
    test_prompts = {r["prompt"] for r in rows["test_math"] + rows["test_code"]}
    assert len(test_prompts) == len(rows["test_math"]) + len(rows["test_code"]), "repeated test problems"
    assert not test_prompts & {r["prompt"] for r in rows["train"]}, "test prompts leaked into train"
    for d in ["math", "code"]:  # the default run's quick evaluation is the start of the test set
        assert rows[f"quick_{d}"] == rows[f"test_{d}"][:len(rows[f"quick_{d}"])] and rows[f"quick_{d}"]

    vocab = None
    for name in MODELS:
        path = folder / "models" / name
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        assert model.config.model_type == "llama" and model.dtype == torch.float32
        assert tokenizer.eos_token == "<|end|>" and tokenizer.eos_token_id is not None
        assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
        assert model.generation_config.eos_token_id == tokenizer.eos_token_id
        if vocab is None:
            vocab = tokenizer.get_vocab()
            for row in rows["train"] + rows["test_math"] + rows["test_code"]:
                ids = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
                assert len(ids) == len(row["prompt"])  # one token per character
                assert tokenizer.decode(ids) == row["prompt"]
        assert tokenizer.get_vocab() == vocab, f"{name} has a different tokenizer"
        text = evaluate.render_prompt(tokenizer, rows["test_math"][0]["prompt"])
        assert text.endswith("<|assistant|>") and rows["test_math"][0]["prompt"] in text
        # A forward pass over the rendered prompt gives a distribution over the whole vocabulary.
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = model(ids).logits
        assert logits.shape == (1, ids.shape[1], len(vocab)) and torch.isfinite(logits).all()


def test_micro_build_produces_loadable_world(micro):
    check_toy_world(micro)


def test_micro_build_is_deterministic(micro, tmp_path):
    again = tmp_path / "toy"
    again.mkdir()
    run_micro_build(again)
    for path in sorted(micro.rglob("*")):
        if path.is_file():
            assert path.read_bytes() == (again / path.relative_to(micro)).read_bytes(), path.name


def test_bundled_toy_world_loads():
    check_toy_world(TOY)


def test_chat_template_ends_assistant_turns_with_eos():
    tokenizer = AutoTokenizer.from_pretrained(TOY / "models" / "student")
    chat = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "\\boxed{4}"}]
    assert tokenizer.apply_chat_template(chat, tokenize=False) == "<|user|>2+2?<|assistant|>\\boxed{4}<|end|>"
    ids = tokenizer.apply_chat_template(chat, tokenize=True)["input_ids"]
    assert ids[-1] == tokenizer.eos_token_id and ids.count(tokenizer.eos_token_id) == 1


def test_gold_answers_pass_the_checkers_and_sloppy_ones_mostly_fail():
    rng = random.Random(0)
    sloppy = dict(careful=0.0, misread=1.0, fold=1.0, fold_slip=1.0)
    for domain, (make, field, _) in build.PROBLEMS.items():
        gold_ok = sloppy_ok = 0
        for _ in range(20):
            prompt, target, solve = make(rng)
            row = {"prompt": prompt, "domain": domain, field: target}
            gold_ok += evaluate.check(row, solve(rng))
            sloppy_ok += evaluate.check(row, solve(rng, sloppy))
        assert gold_ok == 20 and sloppy_ok <= 4, (domain, gold_ok, sloppy_ok)


def test_solutions_have_a_length_dimension():
    """A careful solution writes one step per operation (math: and restates it); a terse one that folds
    every operation into one step is shorter, and still right when nothing slips. Longer problems have
    longer careful solutions."""
    rng = random.Random(1)
    terse = {"math": dict(careful=0.0, misread=0.0, fold=1.0, fold_slip=0.0),
             "code": dict(misread=0.0, fold=1.0, fold_slip=0.0)}
    for domain, (make, field, _) in build.PROBLEMS.items():
        by_ops = {}
        for _ in range(40):
            prompt, target, solve = make(rng)
            row = {"prompt": prompt, "domain": domain, field: target}
            careful, short = solve(rng), solve(rng, terse[domain])
            assert evaluate.check(row, short), (prompt, short)
            assert len(short) < len(careful), (careful, short)
            ops = prompt.count(",") + 1
            by_ops.setdefault(ops, []).append(len(careful))
        mean = {k: sum(v) / len(v) for k, v in sorted(by_ops.items())}
        assert len(mean) >= 3 and list(mean.values()) == sorted(mean.values()), (domain, mean)
    prompt, answer, solve = build.math_problem(random.Random(2))
    assert solve(rng).count(":") == prompt.count(",") + 1  # every operation restated


def test_micro_refuses_to_overwrite_committed_assets():
    result = subprocess.run([sys.executable, str(TOY / "build.py"), "--micro"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0 and "--micro needs --out" in result.stderr


def test_bundled_experts_sit_below_the_ceiling_with_headroom():
    """Quality guard on the committed models, on the first 60 test problems of each domain (fixed seed):
    each expert beats the student in its domain by 10 points or more, stays below the ceiling when it samples
    (temperature 1, 2 samples each), and is well above that when greedy; the math expert writes longer
    solutions than the student (it learned to write its steps out)."""
    rows = read_rows(TOY)

    def measure(name, domain, temperature):
        path = TOY / "models" / name
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        subset = rows[f"test_{domain}"][:60]
        n = 2 if temperature else 1
        torch.manual_seed(0)
        responses = evaluate.generate(model, tokenizer, [r["prompt"] for r in subset], n=n, max_new_tokens=96,
                                      temperature=temperature, batch_size=120,
                                      staged=False)  # the draws the thresholds were set on (seed 0)
        flat = [y for ys in responses for y in ys]
        ok = evaluate.check_many([row for row in subset for _ in range(n)], flat)
        return sum(ok) / len(ok), sum(map(len, flat)) / len(flat)

    for expert, domain in [("math_expert", "math"), ("code_expert", "code")]:
        student, _ = measure("student", domain, 1.0)
        sampled, _ = measure(expert, domain, 1.0)
        greedy, _ = measure(expert, domain, 0.0)
        assert sampled >= student + 0.1 and sampled <= 0.85 and greedy >= sampled + 0.1, \
            (expert, student, sampled, greedy)
    assert measure("math_expert", "math", 1.0)[1] > measure("student", "math", 1.0)[1] + 3


def test_readme_quotes_toy_results_json():
    """toy/README.md's tables are the ones toy/experiments.py draws from toy/results.json, and the
    results hold one number per seed for every run, with the sweep's lam = 0 point being the student."""
    import experiments
    res = json.load(open(TOY / "results.json"))
    seeds = res["seeds"]
    assert len(seeds) >= 5 and res["steps"] > 0
    for group in ["baselines", "runs"]:
        for name, entry in res[group].items():
            for key, values in entry.items():
                assert len(values) == len(seeds), (name, key)
                assert all(0 <= v <= 1 for v in values) or "len" in key, (name, key)
    assert res["sweep"]["lam"][0] == 0 and res["sweep"]["math"][0] == res["baselines"]["student"]["math"]
    # the runs at convergence: every run of experiments.CONV_RUNS (both estimators for one and several
    # teachers, exact for strong-to-weak), 3 seeds (the lr check: 1), curves every 10 steps to 150, one
    # number per seed everywhere, step 0 being the student of that seed
    conv = res["convergence"]
    assert set(conv["runs"]) == set(experiments.CONV_RUNS)
    settings = {name.rsplit(", ", 1)[0] for name in conv["runs"]
                if name.endswith(("sampled", "exact")) and not name.startswith("s2w")}
    assert {f"{s}, {e}" for s in settings for e in ["sampled", "exact"]} <= set(conv["runs"]), settings
    for name, run in conv["runs"].items():
        n = len(run["seeds"])
        assert n >= (1 if name.endswith("lr 1e-4") else 3) and run["seeds"] == sorted(set(run["seeds"])), name
        for domain, curve in run["test"].items():
            assert sorted(map(int, curve)) == list(range(0, conv["protocol"]["steps"] + 1, 10)), name
            assert conv["protocol"]["steps"] >= 150
            assert all(len(v) == n and all(0 <= x <= 1 for x in v) for v in curve.values()), name
            student = res["baselines"]["student"][domain]
            assert curve["0"] == [student[s] for s in run["seeds"]], name
            assert len(run["held_out"][domain]) == n
        assert all(len(v) == n for v in run["train_math"].values())
    readme = (TOY / "README.md").read_text()
    for line in experiments.tables(res).splitlines():  # both parts' tables
        assert line in readme, f"toy/README.md lacks the results.json row: {line}"
    assert "toy/README.md" in (ROOT / "README.md").read_text()


def test_defaults_resolve_to_the_bundled_world_from_any_directory(tmp_path, monkeypatch):
    """With no arguments gopd.py distills both toy experts into the toy student, from any cwd."""
    import gopd
    monkeypatch.chdir(tmp_path)
    args = gopd.parse_args([])
    assert os.path.samefile(args.student, os.path.join(ROOT, "toy", "models", "student"))
    assert {d: os.path.basename(p) for d, p in args.teachers.items()} == {"math": "math_expert", "code": "code_expert"}
    for path in [args.student, *args.teachers.values()]:
        assert os.path.isfile(os.path.join(path, "config.json"))
    assert all(os.path.isfile(p) for p in [args.data, *args.eval_data])
    # a real one-step run from elsewhere, on a few test rows of each domain
    rows = [json.loads(line) for f in args.eval_data for line in list(open(f))[:4]]
    with open(tmp_path / "few.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    r = subprocess.run([sys.executable, os.path.join(ROOT, "gopd.py"), "--steps", "1", "--prompts-per-step", "8",
                        "--eval-data", "few.jsonl"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.load(open(tmp_path / "out" / "toy" / "eval.json"))
    assert set(result) == {"before", "after"} and set(result["after"]) == {"math", "code"}
    assert os.path.isfile(tmp_path / "out" / "toy" / "step_000001" / "model.safetensors")
