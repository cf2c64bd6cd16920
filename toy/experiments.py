"""The paper's claims at toy scale: every number of toy/README.md, from the toy world.

    python toy/experiments.py                     # every run, two at a time
    python toy/experiments.py --part convergence  # only the runs at convergence (3 seeds)
    python toy/experiments.py --seeds 0 --jobs 1  # one seed
    python toy/experiments.py --plot-only         # results.json, tables and plots from --out
                                                  # (a part not in --out: as results.json has it)

Runs (gopd.py with PROTOCOL; only the named flags differ between them):
- the lambda sweep (the paper's Figs. 2-4 in miniature): the math expert into the student on the
  math prompts of train.jsonl, lam in SWEEP. lam = 0 is not trained: with pi_ref = the student's
  initial weights the student already sits at the lam = 0 optimum (pi* = pi_ref) and its gradient
  is exactly zero, so gopd refuses --lam 0; the lam = 0 point is the student itself.
- multi-teacher: the math and code experts into the student, lam = 1 (OPD) and 1.25 (ExOPD).
- strong-to-weak, math: the large math expert into the student, lam = 1 and 1.25 with pi_ref = the
  student, and lam = 1.25 with pi_ref = the large base (reward correction).
The bundled models are evaluated the same way (greedy once: it ignores the seed), and so is the
sweep's target itself: responses sampled token by token from the per-state blend
pi_T^lam * pi_ref^(1-lam) that gopd_loss pushes every state toward (sample_blend).

The runs at convergence (--part convergence): the single-teacher runs at lam 1, 1.25, 1.5 and the
multi-teacher ones for 150 steps (CONVERGENCE), each with both estimators (--estimator sampled and
exact), and the strong-to-weak ones with exact (ExOPD with and without reward correction with
sampled too), 3 seeds, every seed's test accuracy every CURVE_EVERY steps, its training-prompt
accuracy at TRAIN_EVAL_STEPS (over-fitting?), one learning-rate check (lam 1.25, sampled, lr 1e-4), and the
gradient noise of both estimators measured the same way (gradient_noise). Reported besides the
last step: the mean of the PLATEAU checkpoints, and a step chosen on held-out halves of the test
problems (held_out_best).

Evaluation happens here, after training, with evaluate.py's generate and checkers: every seed's
last checkpoint on all 1,000 test problems per domain, one sample each at temperature 1, and seed
0's checkpoints every SAVE_EVERY steps for the convergence curve. Code verdicts are cached by
(tests, response): a sharp model repeats its programs, and every check is a sandboxed interpreter.
Results are mean +- standard error over the seeds (sample std / sqrt(n)).
"""

import argparse
import hashlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import partial

TOY = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TOY)
sys.path.insert(0, ROOT)

MODELS = {name: os.path.join(TOY, "models", name) for name in
          ["student", "math_expert", "code_expert", "large_base", "large_math_expert"]}
DATA = os.path.join(TOY, "data")
TEST = {d: os.path.join(DATA, f"test_{d}.jsonl") for d in ["math", "code"]}
TEST["train_math"] = "{out}/train_math.jsonl"  # the 1,000 math prompts the runs train on

PROTOCOL = dict(steps=50, prompts_per_step=64, samples_per_prompt=1, lr=3e-4, max_new_tokens=96,
                micro_batch=64, rollout_batch=64, grade_every=0)
SAVE_EVERY = 25  # seed 0 only: its curve shows whether the runs have converged
EVAL_N = 1       # samples per test problem
SEEDS = [0, 1, 2, 3, 4]
SWEEP = [0.25, 0.5, 0.75, 1.0, 1.25, 1.5]

MATH_DATA = "{out}/train_math.jsonl"
SINGLE = ["--teacher", MODELS["math_expert"], "--data", MATH_DATA]
MULTI = ["--teacher", f"math={MODELS['math_expert']}", "--teacher",
         f"code={MODELS['code_expert']}", "--data", os.path.join(DATA, "train.jsonl")]
S2W = ["--teacher", MODELS["large_math_expert"], "--data", MATH_DATA]
RUNS = {f"single λ={lam:g}": SINGLE + ["--lam", str(lam)] for lam in SWEEP}
RUNS.update({
    "multi OPD (λ=1)": MULTI + ["--lam", "1"],
    "multi ExOPD (λ=1.25)": MULTI + ["--lam", "1.25"],
    "s2w OPD (λ=1)": S2W + ["--lam", "1"],
    "s2w ExOPD (λ=1.25)": S2W + ["--lam", "1.25"],
    "s2w ExOPD (λ=1.25) + reward correction": S2W + ["--lam", "1.25", "--ref",
                                                     MODELS["large_base"]],
})
BASELINES = ["student", "math_expert", "code_expert", "large_math_expert"]

# The runs at convergence: PROTOCOL for 150 steps, both estimators, test accuracy of every seed
# every CURVE_EVERY steps and training-prompt accuracy at TRAIN_EVAL_STEPS (over-fitting?), one
# learning-rate check. Seed by seed, so that a cut leaves every run with the same seeds.
CONVERGENCE = dict(PROTOCOL, steps=150)
CURVE_EVERY = 10
TRAIN_EVAL_STEPS = [50, 100, 150]
# At convergence: the mean of these checkpoints (10 x 1,000 samples per seed, past the rise)
PLATEAU = [str(t) for t in range(60, 151, CURVE_EVERY)]
CONV_SEEDS = [0, 1, 2]
ESTIMATORS = ["sampled", "exact"]
CONV_RUNS = {f"{name}, {est}": flags + ["--estimator", est]
             for name, flags in [("single λ=1.25", SINGLE + ["--lam", "1.25"]),
                                 ("single λ=1", SINGLE + ["--lam", "1"]),
                                 ("single λ=1.5", SINGLE + ["--lam", "1.5"]),
                                 ("multi OPD (λ=1)", MULTI + ["--lam", "1"]),
                                 ("multi ExOPD (λ=1.25)", MULTI + ["--lam", "1.25"])]
             for est in ESTIMATORS}
CONV_RUNS["single λ=1.25, sampled, lr 1e-4"] = SINGLE + ["--lam", "1.25", "--lr", "1e-4"]
# strong-to-weak: exact; ExOPD with and without reward correction with the sampled estimator too
CONV_RUNS.update({f"{name}, {est}": RUNS[name] + ["--estimator", est] for name in RUNS
                  if name.startswith("s2w") for est in ESTIMATORS if est == "exact" or "ExOPD" in name})
TRAIN_BASELINES = ["student", "math_expert"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")


def domains_of(name):
    return ["math", "code"] if name.startswith("multi") or name in BASELINES else ["math"]


def run_dir(out, name, seed):
    slug = "".join(c if c.isalnum() else "_" for c in name.replace("λ=", "lam")).strip("_")
    return os.path.join(out, f"{slug.replace('__', '_')}_seed{seed}")


def run_logged(argv, log_path):
    with open(log_path, "w") as log:
        subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=ENV, check=True)


def run_job(name, seed, out):
    """Train (unless done), then evaluate (unless done); each in its own process."""
    folder = run_dir(out, name, seed)
    if not os.path.exists(os.path.join(folder, f"step_{PROTOCOL['steps']:06d}")):
        shutil.rmtree(folder, ignore_errors=True)  # an interrupted run restarts from scratch
        flags = [x for k, v in PROTOCOL.items() for x in (f"--{k.replace('_', '-')}", str(v))]
        save_every = SAVE_EVERY if seed == 0 else PROTOCOL["steps"]
        run_logged([sys.executable, os.path.join(ROOT, "gopd.py"), "--student", MODELS["student"],
                    *[a.format(out=out) for a in RUNS[name]], *flags, "--seed", str(seed),
                    "--save-every", str(save_every), "--out", folder], folder + ".log")
    if not os.path.exists(os.path.join(folder, "eval.json")):
        run_logged([sys.executable, __file__, "--evaluate", folder, "--seed", str(seed),
                    "--out", out, "--domains", *domains_of(name)], folder + ".eval.log")


def conv_job(name, seed, out):
    """A run at convergence: train (unless done; checkpoints every CURVE_EVERY steps), then
    evaluate every checkpoint (unless done: each checkpoint's numbers are kept as they come)."""
    folder = run_dir(out, name, seed)
    if not os.path.exists(os.path.join(folder, f"step_{CONVERGENCE['steps']:06d}")):
        shutil.rmtree(folder, ignore_errors=True)  # an interrupted run restarts from scratch
        flags = [x for k, v in CONVERGENCE.items() for x in (f"--{k.replace('_', '-')}", str(v))]
        run_logged([sys.executable, os.path.join(ROOT, "gopd.py"), "--student", MODELS["student"],
                    *flags, *[a.format(out=out) for a in CONV_RUNS[name]], "--seed", str(seed),
                    "--save-every", str(CURVE_EVERY), "--out", folder], folder + ".log")
    if not os.path.exists(os.path.join(folder, "curve.json")):
        run_logged([sys.executable, __file__, "--evaluate-curve", folder, "--seed", str(seed),
                    "--out", out, "--domains", *domains_of(name)], folder + ".eval.log")


def train_baseline_job(name, seed, out):
    """A bundled model's accuracy on the math training prompts (the runs' train accuracy at 0)."""
    path = os.path.join(out, f"train_baseline_{name}_seed{seed}.json")
    if not os.path.exists(path):
        run_logged([sys.executable, __file__, "--evaluate", MODELS[name],
                    "--seed", str(seed), "--out", out, "--domains", "train_math", "--write", path],
                   path[:-5] + ".log")


NOISE = dict(lams=[1.25, 1.0], steps=[50, 150], repeats=8)


def noise_job(out):
    """gradient_noise for each lam of NOISE, once seed 0's single-teacher sampled runs are done."""
    for lam in NOISE["lams"]:
        path = os.path.join(out, f"gradient_noise_lam{lam:g}.json")
        if not os.path.exists(path):
            run_logged([sys.executable, __file__, "--noise", str(lam), "--write", path, "--out",
                        out], path[:-5] + ".log")


EVAL_NOISE = dict(run="single λ=1.25, sampled", step=50, eval_seeds=[0, 1, 2, 3, 50])


def eval_noise_job(out):
    """The evaluation's own noise: one checkpoint (EVAL_NOISE) evaluated with several sampling
    seeds (seed 0's is what the 50-step runs' final evaluation used)."""
    path = os.path.join(out, "eval_noise.json")
    if not os.path.exists(path):
        folder = run_dir(out, EVAL_NOISE["run"], 0)
        run_logged([sys.executable, __file__, "--eval-noise", folder, "--write", path, "--out", out],
                   path[:-5] + ".log")


def baseline_job(name, seed, out):
    path = os.path.join(out, f"baseline_{name}_seed{seed}.json")
    if not os.path.exists(path):
        greedy = ["--greedy"] if seed == 0 else []
        run_logged([sys.executable, __file__, "--evaluate", MODELS[name], "--seed", str(seed),
                    "--out", out, "--domains", "math", "code", *greedy, "--write", path],
                   path[:-5] + ".log")


def blend_job(out):
    path = os.path.join(out, "target.json")
    if not os.path.exists(path):
        run_logged([sys.executable, __file__, "--blend", "--write", path, "--out", out],
                   path[:-5] + ".log")

# -----------------------------------------------------------------------------
# Evaluation (each in its own process, on one torch thread)


class Verdicts:
    """evaluate.check with a cache of code verdicts shared by every evaluation in out/."""

    def __init__(self, out):
        self.path = os.path.join(out, "code_verdicts.jsonl")
        self.cache = {}
        if os.path.exists(self.path):
            with open(self.path) as f:
                for line in f:
                    try:
                        key, ok = json.loads(line)
                    except ValueError:  # a line cut short by an interrupted writer
                        continue
                    self.cache[key] = ok

    def check(self, rows, responses):
        import evaluate
        keys = [hashlib.sha1(json.dumps([r.get("tests"), y]).encode()).hexdigest()
                if r["domain"] == "code" else None for r, y in zip(rows, responses)]
        todo = {k: (r, y) for k, r, y in zip(keys, rows, responses) if k and k not in self.cache}
        if todo:
            found = evaluate.check_many(*zip(*todo.values()))
            self.cache.update(zip(todo, found))
            with open(self.path, "a") as f:
                f.write("".join(json.dumps([k, ok]) + "\n" for k, ok in zip(todo, found)))
        return [self.cache[k] if k else evaluate.check(r, y)
                for k, r, y in zip(keys, rows, responses)]


def mean_tokens(tok, texts):
    return sum(len(tok(y, add_special_tokens=False).input_ids) for y in texts) / len(texts)


def evaluate_model(path, domains, n, seed, verdicts, greedy=False, out=None):
    """({domain: accuracy at temperature 1, n samples each}, {domain: mean response tokens},
    {domain: greedy accuracy} when greedy, {domain: '0'/'1' per temperature-1 sample, in order})."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    import evaluate
    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    acc, length, acc_greedy, correct = {}, {}, {}, {}
    for domain in domains:
        rows = evaluate.load_benchmark(TEST[domain].format(out=out))
        for temperature in [1.0, 0.0] if greedy else [1.0]:
            k = n if temperature else 1
            torch.manual_seed(seed)
            responses = evaluate.generate(model, tok, [r["prompt"] for r in rows], n=k,
                                          temperature=temperature, batch_size=256,
                                          max_new_tokens=PROTOCOL["max_new_tokens"])
            flat = [y for ys in responses for y in ys]
            ok = verdicts.check([r for r in rows for _ in range(k)], flat)
            if temperature:
                acc[domain] = sum(ok) / len(ok)
                length[domain] = mean_tokens(tok, flat)
                correct[domain] = "".join("01"[bool(x)] for x in ok)
            else:
                acc_greedy[domain] = sum(ok) / len(ok)
    return acc, length, acc_greedy, correct


def sample_blend(teacher, ref, tok, prompts, lam, max_new_tokens, batch_size=250):
    """Responses sampled token by token from the per-state target, normalized at each state:
    pi_T(.|s)^lam * pi_ref(.|s)^(1-lam), what a student at gopd_loss's optimum would write."""
    import torch
    import evaluate
    out = []
    for start in range(0, len(prompts), batch_size):
        texts = [evaluate.render_prompt(tok, p) for p in prompts[start:start + batch_size]]
        enc = tok(texts, return_tensors="pt", padding=True, padding_side="left",
                  add_special_tokens=False)
        ids, attn = enc["input_ids"], enc["attention_mask"]
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        caches, new = [None, None], []
        done = torch.zeros(len(ids), dtype=torch.bool)
        with torch.inference_mode():
            for _ in range(max_new_tokens):
                logp = []
                for i, model in enumerate([teacher, ref]):
                    o = model(input_ids=ids, attention_mask=attn, position_ids=pos,
                              cache=caches[i], use_cache=True)
                    caches[i] = o.cache
                    logp.append(torch.log_softmax(o.logits[:, -1].float(), -1))
                blend = torch.softmax(lam * logp[0] + (1 - lam) * logp[1], -1)
                y = torch.multinomial(blend, 1)[:, 0]
                y[done] = tok.pad_token_id
                new.append(y)
                done |= y == tok.eos_token_id
                if done.all():
                    break
                ids, pos = y[:, None], pos[:, -1:] + 1
                attn = torch.cat([attn, torch.ones_like(ids)], 1)
        out += tok.batch_decode(torch.stack(new, 1), skip_special_tokens=True)
    return out


def evaluate_blends(teacher_path, ref_path, lams, seed, write):
    """Math accuracy and mean length of the per-state target for each lam, one sample each."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    import evaluate
    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(ref_path)
    teacher, ref = (AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32).eval()
                    for p in [teacher_path, ref_path])
    rows = evaluate.load_benchmark(TEST["math"])
    result = {"lam": lams, "math": [], "response_len": []}
    for lam in lams:
        torch.manual_seed(seed)
        flat = sample_blend(teacher, ref, tok, [r["prompt"] for r in rows], lam,
                            PROTOCOL["max_new_tokens"])
        ok = evaluate.check_many(rows, flat)
        result["math"].append(sum(ok) / len(ok))
        result["response_len"].append(mean_tokens(tok, flat))
        print(f"lam {lam}: {result['math'][-1]:.4f}, {result['response_len'][-1]:.1f} tokens",
              flush=True)
    with open(write, "w") as f:
        json.dump(result, f)


def evaluate_run(folder, domains, seed, out):
    """Every checkpoint of a run (the curve; the last is the final number), then drop all but the
    last checkpoint (their numbers are kept in eval.json)."""
    verdicts = Verdicts(out)
    steps = sorted(int(d[5:]) for d in os.listdir(folder)
                   if d.startswith("step_") and d[5:].isdigit())
    curve = {}
    for step in steps[:-1]:
        path = os.path.join(folder, f"step_{step:06d}")
        curve[step] = evaluate_model(path, domains, 1, 1000 * seed + step, verdicts)[0]
        print(f"step {step}: {curve[step]}", flush=True)
    last = os.path.join(folder, f"step_{steps[-1]:06d}")
    acc, length, *_ = evaluate_model(last, domains, EVAL_N, seed, verdicts)
    curve[steps[-1]] = acc
    result = {"final": acc, "response_len": length, "curve": curve, "steps": steps[-1]}
    with open(os.path.join(folder, "eval.json"), "w") as f:
        json.dump(result, f, indent=1)
    for step in steps[:-1]:
        shutil.rmtree(os.path.join(folder, f"step_{step:06d}"), ignore_errors=True)
    print(result, flush=True)

def evaluate_curve(folder, domains, seed, out):
    """Test accuracy of every checkpoint of a run at convergence, and training-prompt accuracy at
    TRAIN_EVAL_STEPS, into curve.json; each checkpoint's numbers are written as they come (an
    interrupted evaluation goes on where it stopped), and checkpoints other than
    TRAIN_EVAL_STEPS' are dropped once evaluated (gradient_noise reads those)."""
    verdicts = Verdicts(out)
    steps = sorted({int(d[5:]) for d in os.listdir(folder) if d.startswith("step_") and d[5:].isdigit()}
                   | {int(d[10:-5]) for d in os.listdir(folder)  # evaluated, checkpoint dropped
                      if d.startswith("eval_step_") and d.endswith(".json")})
    for step in steps:
        path = os.path.join(folder, f"step_{step:06d}")
        done = os.path.join(folder, f"eval_step_{step}.json")
        if not os.path.exists(done):
            which = domains + (["train_math"] if step in TRAIN_EVAL_STEPS else [])
            acc, length, _, correct = evaluate_model(path, which, 1, 1000 * seed + step, verdicts,
                                                     out=out)
            with open(done, "w") as f:  # per problem: the best step is chosen on held-out halves
                json.dump({"acc": acc, "response_len": length, "correct": correct}, f)
            print(f"step {step}: {acc}", flush=True)
        if step not in TRAIN_EVAL_STEPS:
            shutil.rmtree(path, ignore_errors=True)
    per_step = {step: json.load(open(os.path.join(folder, f"eval_step_{step}.json")))
                for step in steps}
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        logged = [json.loads(line) for line in f]
    train = {key: [r.get(key) for r in logged if "loss" in r]
             for key in ["kl_target", "kl_teacher", "loss", "grad_norm", "entropy", "response_len"]}
    with open(os.path.join(folder, "curve.json"), "w") as f:
        json.dump({"eval": per_step, "train_metrics": train}, f)

def estimator_gradients(student, teacher, ref, tok, prompts, lam):
    """The student's gradient of each estimator's loss on one batch of its own rollouts of
    `prompts` (the same states for both): {estimator: flat gradient}, through gopd's functions."""
    import torch
    import evaluate
    import gopd
    ids = [evaluate.prompt_ids(tok, p) for p in prompts]
    seq, attn, mask = gopd.rollout(student, ids, tok.pad_token_id, [tok.eos_token_id],
                                   PROTOCOL["max_new_tokens"], 1.0, 1.0)
    b = gopd.MicroBatch(seq, attn, mask, list(range(len(ids))), [None] * len(ids))
    gopd.score_batches([b], {None: teacher}, ref, {None: None}, {None: None}, 1.0, tok.pad_token_id,
                       torch.device("cpu"), False, keep=slice(None))
    heads = {m: m.get_output_embeddings() for m in [teacher, ref] if m is not None}
    n, grads = mask.shape[1], {}
    for estimator in ESTIMATORS:
        student.zero_grad()
        if estimator == "exact":
            hidden, head = gopd.response_hidden(student, seq, attn, n)
            kl = gopd.target_kl(head, hidden, seq[:, -n:], b.states, heads, lam, 1.0)[0]
            loss = gopd.exact_loss(kl, mask, len(mask))
        else:
            logp = gopd.token_logprobs(student, seq, attn, n)
            loss = gopd.gopd_loss(logp, b.logp_t, b.logp_r, mask, lam, len(mask))
        loss.backward()
        grads[estimator] = torch.cat([p.grad.flatten() for p in student.parameters()])
    return grads


def gradient_noise(out, lam, steps, repeats, write):
    """The gradient noise of both estimators, measured the same way: at a fixed policy (the student,
    and seed 0's checkpoints of the single-teacher sampled run at `steps`), the cosine between the
    gradients of two independent half-batches (32 prompts each, their own rollouts), per estimator,
    and the cosine between the two estimators' gradients on the same half-batch; `repeats` pairs."""
    import random
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    torch.set_num_threads(1)
    def load(path):
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(MODELS["student"])
    teacher = load(MODELS["math_expert"]).requires_grad_(False)
    with open(MATH_DATA.format(out=out)) as f:
        prompts = [json.loads(line)["prompt"] for line in f]
    cos = torch.nn.functional.cosine_similarity
    result = {}
    ref = load(MODELS["student"]).requires_grad_(False) if lam != 1 else None
    for step in [0] + steps:
        folder = run_dir(out, f"single λ={lam:g}, sampled", 0)
        student = load(MODELS["student"] if step == 0 else os.path.join(folder, f"step_{step:06d}"))
        rng = random.Random(step)
        torch.manual_seed(step)
        rows = {"sampled": [], "exact": [], "sampled vs exact": []}
        for _ in range(repeats):
            half = PROTOCOL["prompts_per_step"] // 2
            a, b = (estimator_gradients(student, teacher, ref, tok, rng.sample(prompts, half), lam)
                    for _ in range(2))
            for estimator in ESTIMATORS:
                rows[estimator].append(cos(a[estimator], b[estimator], dim=0).item())
            rows["sampled vs exact"].append(cos(a["sampled"], a["exact"], dim=0).item())
        result[f"λ={lam:g}, step {step}"] = rows
        print(f"lam {lam} step {step}: " + ", ".join(
            f"{k} {statistics.mean(v):.3f}" for k, v in rows.items()), flush=True)
    with open(write, "w") as f:
        json.dump(result, f)

# -----------------------------------------------------------------------------
# Results: toy/results.json, toy/README.md's tables, the plots


def collect(out, seeds):
    """toy/results.json's content from the run folders."""
    needed = [os.path.join(out, f"baseline_{b}_seed{s}.json") for b in BASELINES for s in seeds]
    needed += [os.path.join(run_dir(out, name, s), "eval.json") for name in RUNS for s in seeds]
    missing = [path for path in needed if not os.path.exists(path)]
    if missing:
        sys.exit(f"toy/experiments.py: {len(missing)} results missing in {out} (first: "
                 f"{missing[0]}); run every run for these seeds, then --plot-only")
    protocol = dict(PROTOCOL, save_every=SAVE_EVERY, eval_n=EVAL_N, test_problems=1000)
    res = {"seeds": seeds, "steps": PROTOCOL["steps"], "protocol": protocol, "baselines": {},
           "greedy": {}, "runs": {}, "curves": {}}
    for name in BASELINES:
        per_seed = [json.load(open(os.path.join(out, f"baseline_{name}_seed{s}.json")))
                    for s in seeds]
        res["baselines"][name] = {d: [p["final"][d] for p in per_seed] for d in ["math", "code"]}
        res["baselines"][name]["response_len"] = [p["response_len"]["math"] for p in per_seed]
        res["greedy"][name] = per_seed[0]["greedy"]
    for name in RUNS:
        per_seed = [json.load(open(os.path.join(run_dir(out, name, s), "eval.json")))
                    for s in seeds]
        run = {d: [p["final"][d] for p in per_seed] for d in domains_of(name)}
        run["response_len"] = [p["response_len"]["math"] for p in per_seed]
        res["runs"][name] = run
        curve = per_seed[0]["curve"]  # seed 0's checkpoints; step 0 is the student
        res["curves"][name] = {d: {0: res["baselines"]["student"][d][0],
                                   **{int(t): curve[t][d] for t in sorted(curve, key=int)}}
                               for d in domains_of(name)}
    single = [res["runs"][f"single λ={lam:g}"] for lam in SWEEP]
    student = res["baselines"]["student"]
    res["sweep"] = {"lam": [0.0] + SWEEP,
                    "math": [student["math"]] + [r["math"] for r in single],
                    "response_len": [student["response_len"]] + [r["response_len"] for r in single],
                    "note": "lam = 0 is the student itself"}
    target = os.path.join(out, "target.json")
    if os.path.exists(target):
        res["target"] = dict(json.load(open(target)), note="the per-state target, seed 0")
    return res


def collect_convergence(out, seeds, res):
    """toy/results.json's "convergence" part: per run, the seeds it has finished (seeds are cut
    last) and per seed: test accuracy every CURVE_EVERY steps (step 0: the student, res's
    baselines), the accuracy of a step chosen on held-out halves of the test problems (held_out),
    training-prompt accuracy at TRAIN_EVAL_STEPS, the logged training metrics as means over
    CURVE_EVERY steps; and the gradient noise when measured."""
    def read(path):
        with open(path) as f:
            return json.load(f)
    conv = {"protocol": dict(CONVERGENCE, curve_every=CURVE_EVERY, test_problems=1000,
                             train_eval_steps=TRAIN_EVAL_STEPS), "runs": {}, "train_baselines": {}}
    for b in TRAIN_BASELINES:
        found = [s for s in seeds
                 if os.path.exists(os.path.join(out, f"train_baseline_{b}_seed{s}.json"))]
        conv["train_baselines"][b] = {"seeds": found, "math": [read(os.path.join(
            out, f"train_baseline_{b}_seed{s}.json"))["final"]["train_math"] for s in found]}
    for name in CONV_RUNS:
        done = [s for s in seeds
                if os.path.exists(os.path.join(run_dir(out, name, s), "curve.json"))]
        if not done:
            continue
        per_seed = [read(os.path.join(run_dir(out, name, s), "curve.json"))["eval"] for s in done]
        logged = [read(os.path.join(run_dir(out, name, s), "curve.json"))["train_metrics"]
                  for s in done]
        steps = sorted(map(int, per_seed[0]))
        run = {"seeds": done, "test": {}, "held_out": {}, "held_out_step": {}}
        for d in domains_of(name):
            run["test"][d] = {0: [res["baselines"]["student"][d][s] for s in done],
                              **{t: [p[str(t)]["acc"][d] for p in per_seed] for t in steps}}
            chosen = [held_out_best(p, d) for p in per_seed]
            run["held_out"][d] = [acc for acc, _ in chosen]
            run["held_out_step"][d] = [t for _, t in chosen]
        student = dict(zip(*conv["train_baselines"]["student"].values()))
        run["train_math"] = {0: [student[s] for s in done],
                             **{t: [p[str(t)]["acc"]["train_math"] for p in per_seed]
                                for t in TRAIN_EVAL_STEPS}}
        run["response_len"] = {t: [p[str(t)]["response_len"]["math"] for p in per_seed]
                               for t in steps}
        run["train_metrics"] = {key: {t: [statistics.mean(v for v in m[key][t - CURVE_EVERY:t]
                                                          if v is not None) for m in logged]
                                      for t in steps}
                                for key in ["kl_target", "kl_teacher", "grad_norm"]}
        conv["runs"][name] = run
    if not conv["runs"]:
        sys.exit(f"toy/experiments.py: no run at convergence has finished in {out}")
    if os.path.exists(os.path.join(out, "eval_noise.json")):
        conv["eval_noise"] = read(os.path.join(out, "eval_noise.json"))
    for lam in NOISE["lams"]:
        noise = os.path.join(out, f"gradient_noise_lam{lam:g}.json")
        if os.path.exists(noise):
            conv.setdefault("gradient_noise", {"protocol": NOISE}).update(read(noise))
    return conv


def held_out_best(evals, domain):
    """Two-fold choice of the step: the step with the best accuracy on the even-numbered test
    problems is scored on the odd ones, and the reverse; (mean of the two scores, the two steps)."""
    scores, steps = [], []
    for pick, score in [(0, 1), (1, 0)]:
        best = max(evals, key=lambda t: (halves(evals[t]["correct"][domain])[pick], -int(t)))
        scores.append(halves(evals[best]["correct"][domain])[score])
        steps.append(int(best))
    return statistics.mean(scores), steps


def halves(correct):
    """Accuracy on the even- and on the odd-numbered problems of a '0'/'1' string."""
    return [statistics.mean(int(c) for c in correct[k::2]) for k in (0, 1)]


def mean_se(values, scale=100.0):
    values = [scale * v for v in values]
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return statistics.mean(values), se


def cell(values, scale=100.0):
    """mean ± standard error; one value alone (one seed) has no error to show."""
    if len(values) == 1:
        return f"{scale * values[0]:.1f}"
    return "{:.1f} ± {:.1f}".format(*mean_se(values, scale))


def tables(res):
    """toy/README.md's markdown tables: the bundled models, the sweep, the comparisons."""
    lines = ["| model | math, T=1 | math, greedy | code, T=1 | code, greedy | math length |",
             "|---|---|---|---|---|---|"]
    for name, b in res["baselines"].items():
        g = res["greedy"][name]
        lines.append(f"| `{name}` | {cell(b['math'])} | {100 * g['math']:.1f} | {cell(b['code'])} "
                     f"| {100 * g['code']:.1f} | {cell(b['response_len'], 1)} |")
    sweep, target = res["sweep"], res.get("target")
    lines += ["", "| λ | student after G-OPD: math | its length | the per-state target: math "
              "| its length |", "|---|---|---|---|---|"]
    for i, lam in enumerate(sweep["lam"]):
        goal = (f"{100 * target['math'][i]:.1f} | {target['response_len'][i]:.1f}" if target
                else "– | –")
        lines.append(f"| {lam:g} | {cell(sweep['math'][i])} | {cell(sweep['response_len'][i], 1)} "
                     f"| {goal} |")
    lines += ["", "| run | math | code | math length |", "|---|---|---|---|"]
    for name, r in res["runs"].items():
        if not name.startswith("single"):
            code = cell(r["code"]) if "code" in r else "–"
            lines.append(f"| {name} | {cell(r['math'])} | {code} | {cell(r['response_len'], 1)} |")
    if "convergence" in res:
        lines += ["", *convergence_tables(res)]
    return "\n".join(lines)


def paired(a, b, get):
    """mean +- standard error over the seeds both runs have of get(run) (a list per seed, in the
    run's seed order) of a minus the same of b."""
    x, y = (dict(zip(r["seeds"], get(r))) for r in (a, b))
    common = [s for s in x if s in y]
    if len(common) == 1:
        return f"{100 * (x[common[0]] - y[common[0]]):+.1f} (1 seed)"
    return "{:+.1f} ± {:.1f}".format(*mean_se([x[s] - y[s] for s in common]))


def plateau(run, domain):
    """Per seed, the mean test accuracy over the PLATEAU checkpoints (10 x 1,000 samples)."""
    return [statistics.mean(run["test"][domain][t][k] for t in PLATEAU)
            for k in range(len(run["seeds"]))]


def convergence_tables(res):
    """toy/README.md's tables of the runs at convergence: accuracy by run (with its number of seeds),
    the comparisons behind the verdicts (paired by seed), and the gradient noise."""
    conv, last = res["convergence"], str(CONVERGENCE["steps"])
    runs = {name: json.loads(json.dumps(r)) for name, r in conv["runs"].items()}  # str steps

    def peak(curve):  # the best step of the seed-mean curve
        means = {int(t): statistics.mean(v) for t, v in curve.items() if int(t) > 0}
        best = max(means, key=means.get)
        return f"{100 * means[best]:.1f} ({best})"
    lines = ["| one teacher | estimator | seeds | math, step 50 | step 150 | mean of steps 60–150 "
             "| best step, held out | peak of the mean (step) | training prompts, step 150 |",
             "|---|---|---|---|---|---|---|---|---|"]
    teacher, train = res["baselines"]["math_expert"]["math"], conv["train_baselines"]["math_expert"]
    lines.append(f"| teacher (`math_expert`) | – | {len(teacher)} / {len(train['seeds'])} "
                 f"| {cell(teacher)} | {cell(teacher)} | {cell(teacher)} | – | – "
                 f"| {cell(train['math'])} |")
    def math_row(label, estimator, r, *extra):  # a run's math: step 50, last, plateau, held out, ...
        t = r["test"]["math"]
        return " | ".join(["", label, estimator, str(len(r["seeds"])), cell(t["50"]), cell(t[last]),
                           cell(plateau(r, "math")), cell(r["held_out"]["math"]), *extra,
                           cell(r["train_math"][last]), ""]).strip()
    for name, r in runs.items():
        if name.startswith("single"):
            lam, estimator = name[len("single "):].split(", ", 1)
            lines.append(math_row(lam, estimator, r, peak(r["test"]["math"])))
    lines += ["", "| several teachers | estimator | seeds | math, step 150 | math, mean of steps "
              "60–150 | math, best step held out | code, step 150 | code, mean of steps 60–150 "
              "| code, best step held out |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in runs.items():
        if name.startswith("multi"):
            run, estimator = name.rsplit(", ", 1)
            t, h = r["test"], r["held_out"]
            lines.append(f"| {run} | {estimator} | {len(r['seeds'])} " + "".join(
                f"| {cell(t[d][last])} | {cell(plateau(r, d))} | {cell(h[d])} "
                for d in ["math", "code"]) + "|")

    s2w = {name: r for name, r in runs.items() if name.startswith("s2w")}
    if s2w:
        big = res["baselines"]["large_math_expert"]["math"]
        lines += ["", "| strong-to-weak (`large_math_expert`) | estimator | seeds | math, step 50 | step 150 "
                  "| mean of steps 60–150 | best step, held out | training prompts, step 150 |",
                  "|---|---|---|---|---|---|---|---|",
                  f"| teacher (`large_math_expert`) | – | {len(big)} | {cell(big)} | {cell(big)} "
                  f"| {cell(big)} | – | – |"]
        for name, r in s2w.items():
            run, estimator = name.rsplit(", ", 1)
            lines.append(math_row(run[len("s2w "):], estimator, r))

    def per_seed(run, d, step):  # a run's accuracy per seed: at a step, its plateau, held out
        if step == "plateau":
            return plateau(run, d)
        return run["held_out"][d] if step == "held out" else run["test"][d][step]

    def differences(a, b, d, estimators, steps):  # cells of a - b, for the runs that exist
        cells = []
        for e_a, e_b in estimators:
            ra, rb = runs.get(f"{a}, {e_a}"), runs.get(f"{b}, {e_b}")
            for step in steps:
                get = partial(per_seed, d=d, step=step)
                cells.append(paired(ra, rb, get) if ra and rb else "–")
        return " | ".join(cells)
    multi = ("multi ExOPD (λ=1.25)", "multi OPD (λ=1)")
    lines += ["", "| difference, paired by seed | sampled, step 150 | sampled, steps 60–150 "
              "| sampled, held out | exact, step 150 | exact, steps 60–150 | exact, held out |",
              "|---|---|---|---|---|---|---|"]
    for label, a, b, d in [("one teacher, λ=1.25 − λ=1 (math)", "single λ=1.25", "single λ=1",
                            "math"),
                           ("one teacher, λ=1.5 − λ=1 (math)", "single λ=1.5", "single λ=1",
                            "math"),
                           ("several teachers, ExOPD − OPD (math)", *multi, "math"),
                           ("several teachers, ExOPD − OPD (code)", *multi, "code"),
                           ("strong-to-weak, ExOPD − OPD (math)", "s2w ExOPD (λ=1.25)", "s2w OPD (λ=1)",
                            "math"),
                           ("strong-to-weak, reward correction − none (math)",
                            "s2w ExOPD (λ=1.25) + reward correction", "s2w ExOPD (λ=1.25)", "math")]:
        pairs = [(e, e) for e in ESTIMATORS]
        lines.append(f"| {label} | {differences(a, b, d, pairs, [last, 'plateau', 'held out'])} |")
    lines += ["", "| exact − sampled, paired by seed | step 50 | step 150 | steps 60–150 "
              "| best step, held out |", "|---|---|---|---|---|"]
    for base in ["single λ=1", "single λ=1.25", "single λ=1.5", *multi[::-1]]:
        for d in domains_of(base):
            cells = differences(base, base, d, [("exact", "sampled")],
                                ["50", last, "plateau", "held out"])
            lines.append(f"| {base} ({d}) | {cells} |")
    if "gradient_noise" in conv:
        lines += ["", "| policy (one teacher) | half-batch cosine, sampled | half-batch cosine, "
                  "exact | sampled vs exact, same states |", "|---|---|---|---|"]
        for policy, rows in conv["gradient_noise"].items():
            if policy != "protocol":
                lines.append(f"| {policy} | " + " | ".join(
                    "{:.3f} ± {:.3f}".format(*mean_se(rows[k], 1.0))
                    for k in ["sampled", "exact", "sampled vs exact"]) + " |")
    return lines


def plots(res):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("toy/experiments.py: the plots need matplotlib (pip install matplotlib)")
        return
    sweep, target = res["sweep"], res.get("target")
    fig, ax = plt.subplots(figsize=(6, 3.8))
    acc = [mean_se(v) for v in sweep["math"]]
    length = [mean_se(v, 1.0) for v in sweep["response_len"]]
    ax.errorbar(sweep["lam"], [m for m, _ in acc], [s for _, s in acc], marker="o", capsize=3,
                color="C0", label="student after G-OPD: math accuracy")
    if target:
        ax.plot(target["lam"], [100 * v for v in target["math"]], "o--", color="C0", alpha=0.5,
                label="per-state target, seed 0: math accuracy")
    teacher = mean_se(res["baselines"]["math_expert"]["math"])[0]
    ax.axhline(teacher, color="C0", ls=":", lw=1, label=f"teacher (math expert) {teacher:.1f}")
    ax.set_xlabel("λ  (0 = the student itself, 1 = OPD, > 1 = ExOPD)")
    ax.set_ylabel("math accuracy (%)", color="C0")
    ax2 = ax.twinx()
    ax2.errorbar(sweep["lam"], [m for m, _ in length], [s for _, s in length], marker="s",
                 capsize=3, color="C1", label="student: response length")
    ax2.set_ylabel("mean response length (tokens)", color="C1")
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="lower right")
    ax.set_title(f"toy, math, one teacher: mean ± SE of {len(res['seeds'])} seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(TOY, "lambda_sweep.png"), dpi=120)

    if "convergence" in res:
        convergence_plot(res, plt)
    else:  # the 50-step runs' seed-0 curves
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
        for lam in SWEEP:
            c = res["curves"][f"single λ={lam:g}"]["math"]
            axes[0].plot([int(t) for t in c], [100 * v for v in c.values()], "o-", lw=1,
                         label=f"λ={lam:g}")
        for name in [n for n in RUNS if not n.startswith("single")]:
            for domain in domains_of(name):
                c = res["curves"][name][domain]
                axes[1].plot([int(t) for t in c], [100 * v for v in c.values()],
                             "o-" if domain == "math" else "s--", lw=1, label=f"{name}: {domain}")
        axes[0].set_title("sweep: math (seed 0)", fontsize=9)
        axes[1].set_title("multi-teacher and strong-to-weak (seed 0)", fontsize=9)
        for ax in axes:
            ax.set_xlabel("step")
            ax.set_ylabel("accuracy (%)")
            ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(os.path.join(TOY, "curves.png"), dpi=120)
    print("wrote toy/lambda_sweep.png, toy/curves.png")


def jobs_of(args):
    """The jobs of --part, seed by seed (an interrupted sweep leaves every run with the same
    seeds): the 50-step runs over --seeds (default SEEDS), then the runs at convergence over
    --seeds (default CONV_SEEDS)."""
    jobs = []
    if args.part != "convergence":
        jobs += [job for s in args.seeds or SEEDS
                 for job in [(run_job, name, s) for name in RUNS if name in (args.only or RUNS)]
                 + [(baseline_job, b, s) for b in BASELINES]]
    if args.part != "short":
        jobs += [job for s in args.seeds or CONV_SEEDS
                 for job in [(train_baseline_job, b, s) for b in TRAIN_BASELINES]
                 + [(conv_job, name, s) for name in CONV_RUNS if name in (args.only or CONV_RUNS)]]
    return jobs


def convergence_plot(res, plt):
    """toy/curves.png: the runs at convergence, mean +- SE over their seeds, a curve per estimator
    (sampled solid, exact dashed): one teacher's test accuracy, several teachers', training-prompt
    against test accuracy, the exact per-state KL to the target that both minimise, and strong-to-weak."""
    runs = res["convergence"]["runs"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 7))
    style = {"sampled": "-", "exact": "--"}

    def curve(ax, name, get, label, color, ls, marker="o", scale=100.0):
        if name not in runs:
            return
        values = get(runs[name])
        steps = sorted(values, key=int)
        stats = [mean_se(values[t], scale) for t in steps]
        ax.errorbar([int(t) for t in steps], [m for m, _ in stats], [e for _, e in stats], ls=ls,
                    marker=marker, ms=3, lw=1, capsize=2, color=color, label=label)
    singles = ["single λ=1", "single λ=1.25", "single λ=1.5"]
    for i, name in enumerate(singles):
        for est in ESTIMATORS:
            curve(axes[0, 0], f"{name}, {est}", lambda r: r["test"]["math"], f"{name[7:]}, {est}",
                  f"C{i}", style[est])
    teacher = mean_se(res["baselines"]["math_expert"]["math"])[0]
    axes[0, 0].axhline(teacher, color="k", ls=":", lw=1, label=f"teacher {teacher:.1f}")
    axes[0, 0].set_title("one teacher: test math", fontsize=9)
    for i, name in enumerate(["multi OPD (λ=1)", "multi ExOPD (λ=1.25)"]):
        for d, marker in [("math", "o"), ("code", "s")]:
            for est in ESTIMATORS:
                curve(axes[0, 1], f"{name}, {est}", lambda r, d=d: r["test"][d],
                      f"{name[6:]} {d}, {est}", f"C{2 * i + (d == 'code')}", style[est], marker)
    for d, expert in [("math", "math_expert"), ("code", "code_expert")]:
        level = mean_se(res["baselines"][expert][d])[0]
        axes[0, 1].axhline(level, color="k", ls=":", lw=1)
        axes[0, 1].text(0, level + 0.3, f"{expert} {level:.1f}", fontsize=6)
    axes[0, 1].set_title("several teachers: test math and code", fontsize=9)
    for i, name in enumerate(["single λ=1.25, sampled", "single λ=1.25, exact",
                              "single λ=1.25, sampled, lr 1e-4"]):
        curve(axes[1, 0], name, lambda r: r["test"]["math"], f"{name[7:]}: test", f"C{i}", "-")
        curve(axes[1, 0], name, lambda r: r["train_math"], f"{name[7:]}: training prompts",
              f"C{i}", ":", "s")
    axes[1, 0].set_title("training prompts against test problems (math)", fontsize=9)
    for i, name in enumerate(singles):
        for est in ESTIMATORS:
            curve(axes[1, 1], f"{name}, {est}", lambda r: r["train_metrics"]["kl_target"],
                  f"{name[7:]}, {est}", f"C{i}", style[est], scale=1000.0)
    axes[1, 1].set_yscale("log")
    axes[1, 1].set_ylabel("KL(π_θ ‖ p*) per token, 1e-3 nats (mean of 10 steps)")
    axes[1, 1].set_title("what both estimators minimise (training rollouts)", fontsize=9)
    s2w = sorted({n.rsplit(", ", 1)[0] for n in runs if n.startswith("s2w")})
    for i, name in enumerate(s2w):
        for est in ESTIMATORS:
            curve(axes[0, 2], f"{name}, {est}", lambda r: r["test"]["math"], f"{name[4:]}, {est}", f"C{i}",
                  style[est])
            curve(axes[1, 2], f"{name}, {est}", lambda r: r["train_metrics"]["kl_target"], f"{name[4:]}, {est}",
                  f"C{i}", style[est], scale=1000.0)
    big = mean_se(res["baselines"]["large_math_expert"]["math"])[0]
    axes[0, 2].axhline(big, color="k", ls=":", lw=1, label=f"teacher (large) {big:.1f}")
    axes[0, 2].set_title("strong-to-weak: test math", fontsize=9)
    axes[1, 2].set_yscale("log")
    axes[1, 2].set_title("strong-to-weak: KL(π_θ ‖ p*), 1e-3 nats", fontsize=9)
    for ax in axes.flat:
        ax.set_xlabel("step")
        ax.legend(fontsize=6)
    for ax in [axes[0, 0], axes[0, 1], axes[0, 2], axes[1, 0]]:
        ax.set_ylabel("accuracy (%), T = 1")
    seeds = sorted({len(r["seeds"]) for r in runs.values()})
    fig.suptitle(f"toy, runs at convergence: mean ± SE over seeds ({'-'.join(map(str, seeds))}); "
                 f"sampled: solid, exact: dashed", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(TOY, "curves.png"), dpi=120)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+",
                   help=f"default: {SEEDS} (50-step runs), {CONV_SEEDS} (runs at convergence)")
    p.add_argument("--part", choices=["all", "short", "convergence"], default="all",
                   help="the 50-step runs, the runs at convergence, or both (default)")
    p.add_argument("--jobs", type=int, default=2, help="runs at once (one CPU thread each)")
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "toy"))
    p.add_argument("--only", nargs="+", help="run names (default: all)")
    p.add_argument("--plot-only", action="store_true",
                   help="no training: results, tables and plots from --out")
    # internal: evaluate one run folder (or, with --write, one bundled model), or the blends
    p.add_argument("--evaluate", help=argparse.SUPPRESS)
    p.add_argument("--evaluate-curve", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--domains", nargs="+", help=argparse.SUPPRESS)
    p.add_argument("--greedy", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--write", help=argparse.SUPPRESS)
    p.add_argument("--blend", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--noise", type=float, help=argparse.SUPPRESS)
    p.add_argument("--eval-noise", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.jobs < 1:
        p.error("--jobs must be at least 1")
    unknown = [name for name in args.only or [] if name not in RUNS and name not in CONV_RUNS]
    if unknown:
        p.error(f"--only: no run named {unknown[0]!r}; the runs are "
                f"{', '.join(map(repr, [*RUNS, *CONV_RUNS]))}")
    os.makedirs(args.out, exist_ok=True)
    if args.eval_noise:
        path = os.path.join(args.eval_noise, f"step_{EVAL_NOISE['step']:06d}")
        accs = [evaluate_model(path, ["math"], 1, seed, Verdicts(args.out))[0]["math"]
                for seed in EVAL_NOISE["eval_seeds"]]
        with open(args.write, "w") as f:
            json.dump(dict(EVAL_NOISE, math=accs), f)
        return
    if args.noise is not None:
        gradient_noise(args.out, args.noise, NOISE["steps"], NOISE["repeats"], args.write)
        return
    if args.blend:
        evaluate_blends(MODELS["math_expert"], MODELS["student"], [0.0] + SWEEP, 0, args.write)
        return
    if args.evaluate and args.write:
        acc, length, greedy, _ = evaluate_model(args.evaluate, args.domains, EVAL_N, args.seed,
                                             Verdicts(args.out), greedy=args.greedy, out=args.out)
        with open(args.write, "w") as f:
            json.dump({"final": acc, "response_len": length, "greedy": greedy}, f)
        return
    if args.evaluate:
        evaluate_run(args.evaluate, args.domains, args.seed, args.out)
        return
    if args.evaluate_curve:
        evaluate_curve(args.evaluate_curve, args.domains, args.seed, args.out)
        return
    results = os.path.join(TOY, "results.json")
    if not args.plot_only:
        with open(os.path.join(DATA, "train.jsonl")) as src, \
                open(MATH_DATA.format(out=args.out), "w") as dst:
            dst.writelines(line for line in src if json.loads(line)["domain"] == "math")
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(lambda job: job[0](job[1], job[2], args.out), jobs_of(args)))
        if args.part != "convergence":
            blend_job(args.out)
        if args.part != "short":
            noise_job(args.out)
            eval_noise_job(args.out)
    # each part's numbers from --out when its runs are there, else as toy/results.json has them
    res = json.load(open(results)) if os.path.exists(results) else {}
    found = False
    if os.path.exists(os.path.join(args.out, "baseline_student_seed0.json")):
        res.update(collect(args.out, args.seeds or SEEDS))
        found = True
    if os.path.exists(os.path.join(args.out, "train_baseline_student_seed0.json")) and res:
        res["convergence"] = collect_convergence(args.out, args.seeds or CONV_SEEDS, res)
        found = True
    if not res:
        sys.exit(f"toy/experiments.py: no runs in {args.out} and no {results}; run without "
                 f"--plot-only first")
    if found:
        with open(results, "w") as f:
            json.dump(res, f, indent=1)
        print(f"wrote {results}")
    print(tables(res))
    plots(res)

if __name__ == "__main__":
    main()
