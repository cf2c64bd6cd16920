"""The paper's claims at toy scale: the README's table and plot, from the bundled toy world.

    python toy/experiments.py                    # 3 seeds, all runs, two at a time (~1 h on 2 CPU cores)
    python toy/experiments.py --seeds 0 --jobs 1 # one seed
    python toy/experiments.py --plot-only        # redraw the table and toy/opd_vs_exopd.png from runs/

Runs (every one with the toy hyperparameters of gopd.TOY_DEFAULTS, so only the named flags differ):
- multi-teacher: the math and code experts into the base student, lam = 1 (OPD), 1.25 and 1.5 (ExOPD);
- strong-to-weak, math (the math rows of train.jsonl): the larger math expert into the base student
  at lam = 1.25, with pi_ref = the student (default) or = the larger base (reward correction).
The base models and experts are evaluated with the same settings. Accuracy is avg@n on the toy test
sets at the sampling temperature. The plot (matplotlib, an optional extra) shows test accuracy vs
step for OPD and ExOPD.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

TOY = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TOY)
sys.path.insert(0, ROOT)
import gopd  # noqa: E402

MODELS = {name: os.path.join(TOY, "models", name)
          for name in ["student", "math_expert", "code_expert", "large_base", "large_math_expert"]}
DATA = os.path.join(TOY, "data")
TEST = {"math": os.path.join(DATA, "test_math.jsonl"), "code": os.path.join(DATA, "test_code.jsonl")}
MULTI = ["--teacher", f"math={MODELS['math_expert']}", "--teacher", f"code={MODELS['code_expert']}",
         "--data", os.path.join(DATA, "train.jsonl"), "--eval-data", TEST["math"], "--eval-data", TEST["code"]]
S2W = ["--teacher", MODELS["large_math_expert"], "--data", "{out}/train_math.jsonl", "--eval-data", TEST["math"]]
RUNS = {
    "OPD (λ=1)": MULTI + ["--lam", "1.0"],
    "ExOPD (λ=1.25)": MULTI + ["--lam", "1.25"],
    "ExOPD (λ=1.5)": MULTI + ["--lam", "1.5"],
    "strong-to-weak ExOPD (λ=1.25)": S2W + ["--lam", "1.25"],
    "strong-to-weak ExOPD + reward correction": S2W + ["--lam", "1.25", "--ref", MODELS["large_base"]],
}
BASELINES = ["student", "math_expert", "code_expert", "large_base", "large_math_expert"]


def toy_hyperparameters():
    keys = ["prompts_per_step", "samples_per_prompt", "max_new_tokens", "lr", "steps", "micro_batch", "rollout_batch"]
    return [x for k in keys for x in (f"--{k.replace('_', '-')}", str(gopd.TOY_DEFAULTS[k]))]


def command(name, seed, out, folder):
    run = [a.format(out=out) for a in RUNS[name]]
    return [sys.executable, os.path.join(ROOT, "gopd.py"), "--student", MODELS["student"], *run,
            *toy_hyperparameters(), "--seed", str(seed), "--eval-every", "10", "--out", folder]


def run_dir(out, name, seed):
    slug = "".join(c if c.isalnum() else "_" for c in name).strip("_")
    return os.path.join(out, f"{slug}_seed{seed}")


def train(name, seed, out):
    folder = run_dir(out, name, seed)
    if os.path.exists(os.path.join(folder, "eval.json")):
        return
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    with open(folder + ".log", "w") as log:
        subprocess.run(command(name, seed, out, folder), stdout=log, stderr=subprocess.STDOUT, env=env, check=True)


def evaluate_baseline(name, seed, out):
    """Accuracy of a bundled model with the same evaluation settings as the runs."""
    path = os.path.join(out, f"baseline_{name}_seed{seed}.json")
    if not os.path.exists(path):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        import evaluate
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_pretrained(MODELS[name], dtype=torch.float32).eval()
        tok = AutoTokenizer.from_pretrained(MODELS[name])
        acc = {}
        for domain, file in TEST.items():
            summary, _ = evaluate.evaluate_model(model, tok, evaluate.load_rows(file), n=1,
                                                 max_new_tokens=gopd.TOY_DEFAULTS["max_new_tokens"],
                                                 batch_size=gopd.TOY_DEFAULTS["rollout_batch"])
            acc.update({k: v["avg@n"] for k, v in summary.items()})
        with open(path, "w") as f:
            json.dump(acc, f)
    return json.load(open(path))


def mean_std(values):
    values = [100 * v for v in values]
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values) if len(values) > 1 else 0:.1f}"


def table(out, seeds):
    lines = ["| model / run | math | code |", "|---|---|---|"]
    for name in BASELINES:
        accs = [evaluate_baseline(name, s, out) for s in seeds]
        lines.append(f"| {name} | {mean_std([a['math'] for a in accs])} | {mean_std([a['code'] for a in accs])} |")
    for name in RUNS:
        results = [json.load(open(os.path.join(run_dir(out, name, s), "eval.json"))) for s in seeds]
        cells = [mean_std([r["after"][d] for r in results]) if d in results[0]["after"] else "–"
                 for d in ["math", "code"]]
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def plot(out, seeds, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("toy/experiments.py: the plot needs matplotlib (pip install matplotlib); table only")
        return
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for name in ["OPD (λ=1)", "ExOPD (λ=1.25)", "ExOPD (λ=1.5)"]:
        curves = []
        for s in seeds:
            rows = [json.loads(line) for line in open(os.path.join(run_dir(out, name, s), "metrics.jsonl"))]
            curves.append({r["step"]: r["eval"] for r in rows if "eval" in r})
        steps = sorted(set.intersection(*(set(c) for c in curves)))
        for ax, domain in zip(axes, ["math", "code"]):
            ax.plot(steps, [100 * statistics.mean(c[t][domain] for c in curves) for t in steps], marker="o",
                    markersize=3, label=name)
            ax.set_title(f"toy {domain} test accuracy")
            ax.set_xlabel("step")
            ax.set_ylabel("avg@1 (%)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=2, help="runs at once (each uses one CPU thread)")
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "toy"))
    p.add_argument("--plot-only", action="store_true")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(DATA, "train.jsonl")) as src, open(os.path.join(args.out, "train_math.jsonl"), "w") as dst:
        dst.writelines(line for line in src if json.loads(line)["domain"] == "math")  # strong-to-weak is math only
    if not args.plot_only:
        todo = [(name, s) for s in args.seeds for name in RUNS]
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(lambda job: train(*job, args.out), todo))
    print(table(args.out, args.seeds))
    plot(args.out, args.seeds, os.path.join(TOY, "opd_vs_exopd.png"))


if __name__ == "__main__":
    main()
