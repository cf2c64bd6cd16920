"""Benchmark for evaluate.py (not a test: pytest does not collect it).

    python tests/bench_evaluate.py [--workers 4] [--limit 164]

Reports check_code throughput on the HumanEval canonical solutions, one at a time vs pooled, and the
per-call latency of check_math on easy, structured, symbolic and pathological answers.
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import evaluate  # noqa: E402


def bench_code(limit, workers):
    rows = evaluate.load_rows("humaneval")[:limit]
    responses = [f"```python\n{r['solution']}\n```" for r in rows]
    start = time.perf_counter()
    serial = [evaluate.check(r, s) for r, s in zip(rows, responses)]
    t_serial = time.perf_counter() - start
    start = time.perf_counter()
    pooled = evaluate.check_many(rows, responses, workers=workers)
    t_pooled = time.perf_counter() - start
    assert all(serial) and all(pooled), "a canonical solution failed"
    print(f"check_code on {len(rows)} HumanEval canonical solutions (sandbox: {evaluate.sandbox_mode()})")
    print(f"  one at a time : {t_serial:6.2f} s  {len(rows) / t_serial:6.1f} programs/s  "
          f"{1000 * t_serial / len(rows):6.1f} ms/program")
    print(f"  pool of {workers:<5}: {t_pooled:6.2f} s  {len(rows) / t_pooled:6.1f} programs/s  "
          f"speed-up x{t_serial / t_pooled:.2f}")


MATH = {
    "easy (integers, fractions, decimals)": [("42", "42"), ("\\frac{1}{2}", "0.5"), ("3\\frac12", "3.5"),
                                             ("1,000", "1000"), ("41", "42")],
    "structured (tuples, intervals, sets)": [("(1,2)", "\\left(1, 2\\right)"), ("[1,2)", "[1,2]"),
                                             ("\\{3,1\\}", "\\{1,3\\}"), ("(-\\infty,1)\\cup(2,\\infty)",
                                                                          "(2,\\infty)\\cup(-\\infty,1)")],
    "symbolic (sympy helper)": [("2x+1", "1+2x"), ("(a+b)^2", "a^2+2ab+b^2"), ("x^2-1=0", "x^2=1")],
    "pathological (power tower)": [("9^{9^{9^{9}}}", "1"), ("10^{10^{10}}", "7")],
}


def bench_math(repeats):
    evaluate.check_math("\\boxed{x+1}", "1+x")          # start the sympy helper outside the timing
    print(f"check_math latency, median over {repeats} calls of each case")
    for name, cases in MATH.items():
        times = []
        for pred, gold in cases:
            response = f"The answer is $\\boxed{{{pred}}}$."
            for _ in range(repeats):
                start = time.perf_counter()
                evaluate.check_math(response, gold)
                times.append(time.perf_counter() - start)
        print(f"  {name:<38}: median {1e6 * statistics.median(times):8.0f} us   max {1e6 * max(times):8.0f} us")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1))
    ap.add_argument("--limit", type=int, default=164)
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPU cores")
    bench_code(args.limit, args.workers)
    bench_math(args.repeats)
