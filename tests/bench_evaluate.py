"""Benchmark for evaluate.py (not a test: pytest does not collect it).

    python tests/bench_evaluate.py [--workers 4] [--limit 164] [--repeats 50]

Math: check_math on the labelled pairs of tests/test_evaluate.py (every answer class the grader handles), on
held-out benchmark-style pairs and on pathological inputs, side by side with math-verify when it is
installed (`pip install math-verify`, an optional benchmark-only dependency): accuracy against the
labels, agreement, every disagreement, time per check. Code: check_code throughput on the HumanEval
canonical solutions (one at a time vs pooled), how many HumanEval problems two attacks pass (an
always-equal result; answers looked up in a table of the tests' own asserts), and 16 concurrent
CPU-heavy correct programs with the sandbox's run slots bounded or not.
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import evaluate  # noqa: E402
from test_evaluate import MATH_CASES  # noqa: E402

HELDOUT = [  # (answer, gold, label): benchmark-style pairs written before either checker ran on them
    ("\\frac34", "\\frac{3}{4}", True), ("0.75", "\\frac{3}{4}", True), ("\\frac{6}{8}", "\\dfrac{3}{4}", True), ("0.7", "\\frac34", False),
    ("2\\sqrt2", "2\\sqrt{2}", True), ("\\sqrt{8}", "2\\sqrt{2}", True), ("2.828", "2\\sqrt{2}", False), ("2\\sqrt{3}", "2\\sqrt{2}", False),
    ("C", "\\text{(C)}", True), ("\\textbf{(C)}", "C", True), ("D", "\\text{(C)}", False),
    ("18.90", "\\$18.90", True), ("\\$18.9", "18.90", True), ("18.09", "\\$18.90", False),
    ("(2, -1)", "(2,-1)", True), ("\\left(2,-1\\right)", "(2,-1)", True), ("(-1, 2)", "(2,-1)", False),
    ("(x+2)(x+5)", "x^2+7x+10", True), ("x^2+7x+10", "(x+5)(x+2)", True), ("x^2+7x+11", "x^2+7x+10", False),
    ("\\left( \\frac{1}{2}, 3 \\right)", "(0.5,3)", True), ("(\\frac12, 2)", "\\left( \\frac{1}{2}, 3 \\right)", False),
    ("-\\frac{1}{3}", "-\\frac13", True), ("\\frac{-1}{3}", "-\\dfrac{1}{3}", True), ("\\frac{1}{3}", "-\\frac{1}{3}", False),
    ("\\frac{\\sqrt{5}}{5}", "\\frac{1}{\\sqrt{5}}", True), ("\\frac{\\sqrt5}{2}", "\\frac{1}{\\sqrt{5}}", False),
    ("10", "10\\%", True), ("8", "8\\text{ cm}", True), ("8 \\text{cm}", "8", True), ("9 \\text{ cm}", "8\\text{ cm}", False),
    ("\\{1, -2\\}", "\\{-2, 1\\}", True), ("-2, 1", "\\{-2,1\\}", True), ("-2", "\\{-2, 1\\}", False),
    ("[-2, 7]", "[-2,7]", True), ("(-2, 7]", "[-2,7]", False),
    ("(-\\infty, -1) \\cup (1, \\infty)", "(-\\infty,-1)\\cup(1,\\infty)", True), ("(-\\infty,-1]\\cup[1,\\infty)", "(-\\infty,-1)\\cup(1,\\infty)", False),
    ("3+2i", "2i+3", True), ("3-2i", "3+2i", False),
    ("\\begin{pmatrix} 2 \\\\ -1 \\end{pmatrix}", "\\begin{pmatrix}2\\\\-1\\end{pmatrix}", True), ("\\begin{pmatrix} -1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}2\\\\-1\\end{pmatrix}", False),
    ("y=-2x+3", "y = -2x + 3", True), ("2x + y = 3", "y=-2x+3", True), ("y=2x+3", "y=-2x+3", False),
    ("4\\pi", "4 \\pi", True), ("12.566", "4\\pi", False),
    ("3.5", "\\frac{7}{2}", True), ("\\frac{5}{2}", "2.5", True), ("\\frac16", "1/6", True), ("0.16", "1/6", False),
    ("\\infty", "\\infty", True), ("14/3", "\\dfrac{14}{3}", True), ("4\\frac{2}{3}", "\\dfrac{14}{3}", True),
    ("5\\sqrt{2}", "\\sqrt{50}", True), ("k=5", "5", True), ("5", "k = 5", True), ("k=6", "5", False),
    ("\\frac{\\pi}{3}", "60^\\circ", False), ("\\frac{\\pi}{3}", "\\frac{\\pi}{3}", True), ("e^2", "e^{2}", True), ("\\ln 2", "\\log 2", True),
    ("1024", "1{,}024", True), ("2^{100}", "1267650600228229401496703205376", True), ("2^{99}", "1267650600228229401496703205376", False),
    ("120", "\\binom{10}{3}", True), ("\\frac{x^2}{2}", "\\frac{1}{2}x^2", True), ("\\sqrt[3]{2}", "2^{1/3}", True),
    ("0", "0", True), ("-4", "4", False), ("50000", "50,000", True), ("5000", "50,000", False),
]

LOOKUP = r'''  # the lookup attack: answer from a table of the tests' own asserts, wherever they can be read

import ast as _ast, gc as _gc, os as _os, sys as _sys
def _sources():
    texts = []
    for p in ["main.py", "tests.py", "/proc/self/cmdline"]:
        try:
            texts.append(open(p, errors="ignore").read())
        except Exception:
            pass
    frame = _sys._getframe()
    while frame:
        texts += [c for c in frame.f_code.co_consts if isinstance(c, str)]
        frame = frame.f_back
    for o in _gc.get_objects():
        if isinstance(o, dict):
            texts += [v for v in o.values() if isinstance(v, str) and "assert" in v]
    return texts
def _table():
    table = {}
    for text in _sources():
        for line in text.splitlines():
            line = line.strip()
            if not line.startswith("assert candidate("):
                continue
            try:
                test = _ast.parse(line).body[0].test
                call, expected = test.left, test.comparators[0]
                args = tuple(_ast.literal_eval(a) for a in call.args)
                table[repr(args)] = _ast.literal_eval(expected)
            except Exception:
                pass
    return table
def _lookup(*args):
    return _table().get(repr(args))
'''

PATHOLOGICAL = [  # (answer, gold): all wrong, each must return within evaluate.MATH_TIMEOUT
    ("+".join(f"\\frac{{1}}{{{p}^{{99999}}}}" for p in [2, 3, 5, 7, 11] * 20), "1"),
    ("\\cdot".join(f"{p}^{{99}}" for p in range(2, 902)), "1"),
    ("{" * 50000 + "1" + "}" * 50000, "1"),
    (", ".join(f"(x+y+z+{k})^{{{20 + k}}}" for k in range(30)), ", ".join(f"(x+y+z+{k})^{{{20 + k}}}-1" for k in range(30))),
    ("1+" * 500_000 + "1", "1"),
    ("9^{9^{9^{9}}}", "9^{9^{10}}"),
    ("\\sin(x)^{30}+\\cos(x)^{30}", "\\sin(2x)^{15}"),
]


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def compare(title, pairs, mv):
    ours, theirs, disagree = [], [], []
    for pred, gold, label in pairs:
        response = f"The answer is $\\boxed{{{pred}}}$."
        got, dt = timed(evaluate.check_math, response, gold)
        ours.append((got, dt))
        if mv is not None:
            try:
                other, dt2 = timed(mv, response, gold)
            except Exception:
                other, dt2 = False, 0.0
            theirs.append((other, dt2))
            if other != got:
                disagree.append((pred, gold, label, got, other))
    labels = [label for *_, label in pairs]
    print(f"math: {len(pairs)} {title}, {sum(labels)} equal")
    for name, results in [("check_math", ours), ("math-verify", theirs)]:
        if results:
            times = [t for _, t in results]
            print(f"  {name:11}: {sum(r == y for (r, _), y in zip(results, labels)):3d}/{len(pairs)} right, "
                  f"{sum(r and not y for (r, _), y in zip(results, labels))} false positives, "
                  f"median {1e3 * statistics.median(times):.2f} ms, max {1e3 * max(times):.0f} ms per check")
    if mv is not None:
        print(f"  agreement  : {len(pairs) - len(disagree)}/{len(pairs)}; disagreements "
              "(answer | gold | label: check_math, math-verify):")
        for pred, gold, label, got, other in disagree:
            print(f"    {pred[:40]!s:42} | {gold[:30]!s:32} | {label}: {got}, {other}")


def bench_math(repeats):
    try:
        from math_verify import parse, verify
        mv = lambda response, gold: verify(parse(f"${gold}$" if "\\boxed" in gold else f"$\\boxed{{{gold}}}$"),
                                           parse(response))
    except ImportError:
        mv = None
        print("math-verify is not installed (pip install math-verify): check_math alone")
    evaluate.check_math("\\boxed{\\sqrt{2}}", "\\sqrt{2}+0")       # start a sympy helper outside the timing
    for title, pairs in [("the labelled table of tests/test_evaluate.py (every answer class)", MATH_CASES),
                         ("held-out pairs (written before either checker ran on them)", HELDOUT)]:
        compare(title, pairs, mv)
    print("  pathological inputs (all wrong): time per check")
    for pred, gold in PATHOLOGICAL:
        got, dt = timed(evaluate.check_math, f"\\boxed{{{pred}}}", gold)
        line = f"    {len(pred):>8} chars {pred[:36]!s:38} check_math {got!s:5} {dt:6.3f} s"
        if mv is not None and len(pred) < 5000:
            try:
                other, dt2 = timed(mv, f"\\boxed{{{pred}}}", gold)
            except Exception:
                other, dt2 = "error", 0.0
            line += f"   math-verify {other!s:5} {dt2:6.3f} s"
        print(line)
    print(f"  check_math latency, median over {repeats} calls")
    for name, cases in {"integers, fractions, decimals": [("42", "42"), ("\\frac{1}{2}", "0.5"), ("41", "42")],
                        "tuples, intervals, sets": [("(1,2)", "\\left(1, 2\\right)"), ("\\{3,1\\}", "\\{1,3\\}")],
                        "polynomials (random points)": [("2x+1", "1+2x"), ("(a+b)^2", "a^2+2ab+b^2")],
                        "symbolic (sympy helper)": [("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt{3}"), ("(1+i)^2", "2i")],
                        "power tower": [("9^{9^{9^{9}}}", "1")]}.items():
        times = [timed(evaluate.check_math, f"The answer is $\\boxed{{{p}}}$.", g)[1]
                 for p, g in cases for _ in range(repeats)]
        print(f"    {name:32}: {1e6 * statistics.median(times):8.0f} us   (max {1e6 * max(times):8.0f} us)")


def bench_code(limit, workers):
    rows = evaluate.load_benchmark("humaneval")[:limit]
    fence = lambda code: f"```python\n{code}\n```"
    responses = [fence(r["solution"]) for r in rows]
    serial, t_serial = timed(lambda: [evaluate.check(r, s) for r, s in zip(rows, responses)])
    pooled, t_pooled = timed(evaluate.check_many, rows, responses, workers)
    assert all(serial) and all(pooled), "a canonical solution failed"
    print(f"code: {len(rows)} HumanEval canonical solutions, sandbox {evaluate.sandbox_mode()}, "
          f"{evaluate.SANDBOX_SLOTS} slots")
    print(f"  one at a time : {t_serial:6.2f} s  {len(rows) / t_serial:6.1f} programs/s")
    print(f"  pool of {workers:<5}: {t_pooled:6.2f} s  {len(rows) / t_pooled:6.1f} programs/s  x{t_serial / t_pooled:.2f}")
    entry = [r["tests"].split("check(")[-1].split(")")[0] for r in rows]
    always_equal = [fence(r["solution"] + "\nclass _A:\n    def __eq__(s, o): return True\n    def __bool__(s): return True\n"
                          f"    def __sub__(s, o): return 0\n    def __abs__(s): return 0\ndef {e}(*a, **k): return _A()\n")
                    for r, e in zip(rows, entry)]
    lookup = [fence(r["solution"] + "\n" + LOOKUP + f"\ndef {e}(*a, **k): return _lookup(*a)\n")
              for r, e in zip(rows, entry)]
    for name, programs in [("always-equal result", always_equal), ("table of the tests", lookup)]:
        passed, dt = timed(evaluate.check_many, rows, programs, workers)
        print(f"  attack {name:20}: passes {sum(passed)}/{len(rows)} problems ({dt:.1f} s)")
    program = fence("def f():\n    s = 0\n    for i in range(3_000_000):\n        s += i\n    return s")
    load = [{"domain": "code", "tests": f"assert f() == {sum(range(3_000_000))}", "timeout": 1}] * 16
    for slots in (evaluate.SANDBOX_SLOTS, 16):
        evaluate._run_slots = evaluate.threading.BoundedSemaphore(slots)
        passed, dt = timed(evaluate.check_many, load, [program] * 16, 16)
        print(f"  16 concurrent correct programs (~0.25 s CPU each, timeout 1 s CPU), {slots:2d} slots: "
              f"{sum(passed)}/16 pass, {dt:.1f} s wall")
    evaluate._run_slots = evaluate.threading.BoundedSemaphore(evaluate.SANDBOX_SLOTS)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1))
    ap.add_argument("--limit", type=int, default=164)
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}")
    bench_math(args.repeats)
    bench_code(args.limit, args.workers)
