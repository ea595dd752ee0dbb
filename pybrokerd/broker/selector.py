"""JMS 1.1 message selectors, evaluated the way ActiveMQ 5.17 evaluates them
for STOMP subscriptions.

Public API::

    compile_selector(text) -> match
    match(lookup) -> bool          # lookup(name) -> str | int | float | bool | None

``compile_selector`` tokenizes and parses the selector once (hand written
tokenizer + recursive descent parser) and turns the tree into nested closures,
so the per-message cost is a handful of Python calls.  Invalid syntax raises
:class:`SelectorError`.  ``match`` never raises: it answers ``True`` only when
the expression is TRUE; FALSE and UNKNOWN both give ``False``.

Semantics (three-valued logic; ``None`` is UNKNOWN / NULL), as ActiveMQ 5.17's
(checked side by side with its STOMP transport):

* ``UNKNOWN AND FALSE`` is FALSE, ``UNKNOWN OR TRUE`` is TRUE, ``NOT UNKNOWN``
  is UNKNOWN.  ``<``, ``>``, ``<=``, ``>=`` with a NULL side are UNKNOWN.
  ``=`` is ActiveMQ's: UNKNOWN when its left side is NULL, FALSE when only its
  right side is, TRUE when both are (``x = y`` with neither set); ``<>`` is
  its negation.
* ActiveMQ's STOMP transport prefixes selectors with
  ``convert_string_expressions:``: a string compared with a number is
  converted to that number's Java type (an integer literal that fits in 32
  bits takes ``Integer.valueOf``: digits and a sign only; a larger one
  ``Long.valueOf``; a decimal one ``Double.valueOf``, which trims blanks and
  takes ``1e3``, ``10f``, ``Infinity``), a string compared with a boolean
  becomes ``Boolean.valueOf`` (``'true'`` in any case).  A failed conversion,
  or two types that cannot meet (a boolean and a number), compare FALSE, not
  UNKNOWN: ``x <> 5`` is TRUE for ``x:abc``.  Two strings compare
  lexicographically, but a string *literal* cannot be ordered (``s < 'b'`` is
  a syntax error, as in ActiveMQ and the JMS specification).
* IN lists hold string literals only; IN and NOT IN on a value that is not a
  string (``JMSPriority IN ('4')``) are UNKNOWN.
* A bare property used as a condition (``redelivered AND ...``) is its value
  when that is a real boolean, UNKNOWN when absent and FALSE otherwise (every
  STOMP header is a string).
* Arithmetic follows Java: int/int division truncates toward zero, ``%`` is
  Java's remainder (sign of the dividend); division or remainder by zero is
  NULL.  ``+`` with a string on its left joins it with the right side as Java
  writes it (``s + 1 = 'ab1'``, ``n + 1 = 51`` for ``n:5``), as ActiveMQ's.
  Other arithmetic does *not* convert strings: on a non-number it is NULL.
  (Differs on purpose: ActiveMQ throws there, which fails the producer's send
  or jams a queue.)

Syntax follows ActiveMQ's SelectorParser.jj (keywords are case-insensitive,
numeric literals: decimal with optional ``L``, ``0x`` hex, ``0``-prefixed
octal, floating point like ``1.5``, ``1e3``, ``.5``, ``7.``; ``/* */`` and
``--`` comments; equality (``= <> IS [NOT] NULL``) binds more loosely than
the relational operators (``< > <= >= LIKE BETWEEN IN``)), except that NOT
has SQL precedence (``NOT a = 1`` is ``NOT (a = 1)``), as the JMS
specification requires.
"""

from __future__ import annotations

import decimal
import functools
import math
import numbers
import operator
import re
from typing import Callable

from pybrokerd.broker.message import java_text

__all__ = ["SelectorError", "compile_selector"]

Lookup = Callable[[str], object]
Matcher = Callable[[Lookup], bool]

#: Maximum nesting of parentheses accepted by the parser.
MAX_NESTING = 64
#: Maximum depth of the compiled expression tree (bounds evaluation recursion).
MAX_DEPTH = 200


class SelectorError(ValueError):
    """Invalid selector syntax; str(e) is one human-readable line naming the problem and position."""

    def __init__(self, message: str, *, selector: str | None = None,
                 reason: str | None = None, position: int | None = None):
        super().__init__(message)
        self.selector = selector
        self.reason = reason if reason is not None else message
        self.position = position


def _display(text: str) -> str:
    if len(text) > 200:
        text = text[:197] + "..."
    return repr(text)


def _error(text: str, reason: str, position: int) -> SelectorError:
    return SelectorError(
        f"Invalid selector {_display(text)}: {reason} at position {position}",
        selector=text, reason=reason, position=position)


# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------

_NUM = frozenset((int, float))
_SCALAR = frozenset((str, int, float, bool))
_ORDERABLE = frozenset((str, int, float))
_PLAIN = frozenset((str, int, float, bool, type(None)))


class _Unsupported:
    """Stands in for looked-up values of types a selector cannot handle."""
    __slots__ = ()

    def __eq__(self, other):  # any comparison with it is UNKNOWN
        return None

    def __ne__(self, other):
        return None

    __hash__ = object.__hash__

    def __repr__(self):
        return "<unsupported>"


_UNSUPPORTED = _Unsupported()


def _normalize(v):
    """Map a looked-up value that is not exactly str/int/float/bool/None."""
    if isinstance(v, bool):
        return bool(v)
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, (numbers.Real, decimal.Decimal)):
        try:
            return float(v)
        except (ValueError, OverflowError, TypeError):
            return _UNSUPPORTED
    if isinstance(v, str):
        return str(v)
    return _UNSUPPORTED


_FLOAT_STR = re.compile(
    r"[+-]?(?:NaN|Infinity|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[fFdD]?)")


_JAVA_BLANKS = "".join(map(chr, range(33)))  # what Java's trim() removes: every char <= ' '
_INT32 = 2 ** 31
_INT64 = 2 ** 63


def _to_num(s: str, like):
    """A STOMP string compared with the number `like`, converted as ActiveMQ does: to the
    number's Java type (Integer.valueOf for an int that fits in 32 bits, Long.valueOf for a
    larger one, Double.valueOf for a float); None when that conversion fails."""
    if type(like) is float:
        s = s.strip(_JAVA_BLANKS)
        if _FLOAT_STR.fullmatch(s):
            if s[-1] in "fFdD":
                s = s[:-1]
            try:
                return float(s)
            except (ValueError, OverflowError):
                return None
        return None
    # Java's Character.digit takes any Unicode decimal digit, as str.isdecimal and int()
    if s.isdecimal() or (s[1:].isdecimal() and s[0] in "+-"):
        value = int(s)
        limit = _INT32 if -_INT32 <= like < _INT32 else _INT64
        if -limit <= value < limit:
            return value
    return None


def _to_bool(s: str) -> bool:
    return s.lower() == "true"  # java.lang.Boolean.valueOf(String)


def _eq(a, b):
    """a = b for non-NULL a, b: True or False (None only for values of unsupported types).
    As ActiveMQ: a string compared with a number or boolean is converted to its type; if
    that fails, or the types cannot meet at all, the answer is FALSE."""
    ta = type(a)
    tb = type(b)
    if ta is tb:
        return a == b if ta in _SCALAR else None
    if ta in _NUM:
        if tb in _NUM:
            return a == b
        if tb is str:
            b = _to_num(b, a)
            return b is not None and a == b
        return False if tb in _PLAIN else None
    if ta is str:
        if tb in _NUM:
            a = _to_num(a, b)
            return a is not None and a == b
        if tb is bool:
            return _to_bool(a) == b
        return False if tb in _PLAIN else None
    if ta is bool:
        if tb is str:
            return a == _to_bool(b)
        return False if tb in _PLAIN else None
    return None


def _ne(a, b):
    r = _eq(a, b)
    return None if r is None else not r


def _order_pair(a, b):
    """Coerce a, b (non-NULL) for <, >, <=, >=; None if they cannot be ordered (a failed
    conversion included: the comparison is then FALSE, as ActiveMQ's)."""
    ta = type(a)
    tb = type(b)
    if ta in _NUM:
        if tb in _NUM:
            return a, b
        if tb is str:
            b = _to_num(b, a)
            return None if b is None else (a, b)
        return None
    if ta is str:
        if tb is str:
            return a, b
        if tb in _NUM:
            a = _to_num(a, b)
            return None if a is None else (a, b)
    if ta is bool and tb is bool:
        return a, b
    return None


def _make_slow_order(op):
    def slow(a, b):
        if type(a) not in _PLAIN or type(b) not in _PLAIN:
            return None  # a value of a type selectors do not know: UNKNOWN
        p = _order_pair(a, b)
        return False if p is None else op(p[0], p[1])
    return slow


_LT = _make_slow_order(operator.lt)
_GT = _make_slow_order(operator.gt)
_LE = _make_slow_order(operator.le)
_GE = _make_slow_order(operator.ge)

# operator -> (fast op for two values of the same "fast" type, slow op, fast types)
_COMPARATORS = {
    "=": (operator.eq, _eq, _SCALAR),
    "<>": (operator.ne, _ne, _SCALAR),
    "<": (operator.lt, _LT, _ORDERABLE),
    ">": (operator.gt, _GT, _ORDERABLE),
    "<=": (operator.le, _LE, _ORDERABLE),
    ">=": (operator.ge, _GE, _ORDERABLE),
}
_FLIPPED = {"=": "=", "<>": "<>", "<": ">", ">": "<", "<=": ">=", ">=": "<="}


def _add(a, b):
    if type(a) is str:  # as ActiveMQ: a string on the left is joined with the right's Java text
        return a + java_text(b)
    if type(a) in _NUM and type(b) in _NUM:
        try:
            return a + b
        except OverflowError:
            return None
    return None


def _sub(a, b):
    if type(a) in _NUM and type(b) in _NUM:
        try:
            return a - b
        except OverflowError:
            return None
    return None


def _mul(a, b):
    if type(a) in _NUM and type(b) in _NUM:
        try:
            return a * b
        except OverflowError:
            return None
    return None


def _div(a, b):
    ta = type(a)
    tb = type(b)
    if ta not in _NUM or tb not in _NUM or b == 0:
        return None
    if ta is int and tb is int:  # Java integer division truncates toward zero
        q = abs(a) // abs(b)
        return q if (a < 0) == (b < 0) else -q
    try:
        return a / b
    except (OverflowError, ZeroDivisionError):
        return None


def _mod(a, b):
    ta = type(a)
    tb = type(b)
    if ta not in _NUM or tb not in _NUM or b == 0:
        return None
    if ta is int and tb is int:  # Java remainder takes the sign of the dividend
        r = abs(a) % abs(b)
        return r if a >= 0 else -r
    try:
        return math.fmod(a, b)
    except (ValueError, OverflowError):
        return None


_ARITH = {"+": _add, "-": _sub, "*": _mul, "/": _div, "%": _mod}


def _negate(v):
    t = type(v)
    if t is int or t is float:
        return -v
    return None


def _plus(v):
    t = type(v)
    if t is int or t is float:
        return v
    return None


# ---------------------------------------------------------------------------
# LIKE
# ---------------------------------------------------------------------------

_ANY = object()
_ONE = object()


def _compile_like(pattern: str, escape: str | None) -> Callable[[str], bool]:
    """Compile a LIKE pattern to a predicate over strings (full match)."""
    items: list = []  # str segments and _ANY / _ONE markers
    lit: list[str] = []
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        # ActiveMQ: the escape char only escapes a following '_', '%' or itself
        if escape is not None and c == escape and i + 1 < n and pattern[i + 1] in ("_", "%", escape):
            lit.append(pattern[i + 1])
            i += 2
            continue
        if c == "%" or c == "_":
            if lit:
                items.append("".join(lit))
                lit = []
            if c == "_":
                items.append(_ONE)
            elif not items or items[-1] is not _ANY:
                items.append(_ANY)
        else:
            lit.append(c)
        i += 1
    if lit:
        items.append("".join(lit))

    if _ONE not in items:
        # Split into literal segments around '%': cheap string operations.
        segments = [""]
        for item in items:
            if item is _ANY:
                segments.append("")
            else:
                segments[-1] += item
        if len(segments) == 1:
            whole = segments[0]
            return lambda s: s == whole
        if len(segments) == 2:
            head, tail = segments
            if not tail:
                return lambda s: s.startswith(head)
            if not head:
                return lambda s: s.endswith(tail)
            minimum = len(head) + len(tail)
            return lambda s: len(s) >= minimum and s.startswith(head) and s.endswith(tail)
        if len(segments) == 3 and not segments[0] and not segments[2]:
            middle = segments[1]
            return lambda s: middle in s

    regex = []
    for item in items:
        if item is _ANY:
            regex.append(".*")
        elif item is _ONE:
            regex.append(".")
        else:
            regex.append(re.escape(item))
    fullmatch = re.compile("".join(regex), re.DOTALL).fullmatch
    return lambda s: fullmatch(s) is not None


# ---------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------

_KEYWORDS = frozenset(("NOT", "AND", "OR", "BETWEEN", "LIKE", "ESCAPE", "IN", "IS",
                       "TRUE", "FALSE", "NULL", "XPATH", "XQUERY"))
_NUMBER_RES = (  # in JavaCC declaration order; the longest match wins, first on ties
    ("dec", re.compile(r"[1-9][0-9]*[lL]?")),
    ("hex", re.compile(r"0[xX][0-9a-fA-F]+")),
    ("oct", re.compile(r"0[0-7]*")),
    ("float", re.compile(r"[0-9]+\.[0-9]*(?:[eE][+-]?[0-9]+)?"
                         r"|\.[0-9]+(?:[eE][+-]?[0-9]+)?"
                         r"|[0-9]+[eE][+-]?[0-9]+")),
)
_IDENT_REST = re.compile(r"[\w$]*")
_DIGITS = "0123456789"
_WHITESPACE = " \t\n\r\f"
_TWO_CHAR_OPS = ("<>", "<=", ">=")
_ONE_CHAR_OPS = "=<>+-*/%(),"

# token: (kind, value, start, end); kind is NUM, STR, ID, KW, OP or EOF


def _number_token(text: str, i: int):
    best_kind, best = None, None
    for kind, rx in _NUMBER_RES:
        m = rx.match(text, i)
        if m is not None and (best is None or m.end() > best.end()):
            best_kind, best = kind, m
    s = best.group()
    try:
        if best_kind == "dec":
            value = int(s.rstrip("lL"))
        elif best_kind == "hex":
            value = int(s[2:], 16)
        elif best_kind == "oct":
            value = int(s, 8)
        else:
            value = float(s)
    except (ValueError, OverflowError):
        raise _error(text, "numeric literal out of range", i) from None
    return ("NUM", value, i, best.end())


def _tokenize(text: str) -> list:
    tokens = []
    append = tokens.append
    i = 0
    n = len(text)
    last_eol = max(text.rfind("\n"), text.rfind("\r"))
    while i < n:
        c = text[i]
        if c in _WHITESPACE:
            i += 1
        elif c == "'":
            parts = []
            j = i + 1
            while True:
                k = text.find("'", j)
                if k < 0:
                    raise _error(text, "unterminated string literal", i)
                parts.append(text[j:k])
                if text.startswith("''", k):
                    parts.append("'")
                    j = k + 2
                else:
                    j = k + 1
                    break
            append(("STR", "".join(parts), i, j))
            i = j
        elif c in _DIGITS or (c == "." and i + 1 < n and text[i + 1] in _DIGITS):
            tok = _number_token(text, i)
            append(tok)
            i = tok[3]
        elif c.isalpha() or c == "_" or c == "$":
            j = _IDENT_REST.match(text, i + 1).end()
            word = text[i:j]
            upper = word.upper()
            if word.isascii() and upper in _KEYWORDS:
                append(("KW", upper, i, j))
            else:
                append(("ID", word, i, j))
            i = j
        elif text.startswith("/*", i):
            k = text.find("*/", i + 2)
            if k < 0:
                raise _error(text, "unterminated comment", i)
            i = k + 2
        elif text.startswith("--", i) and last_eol > i:
            # ActiveMQ's LINE_COMMENT needs a line terminator; without one
            # "--" is two minus signs.
            k = min(p for p in (text.find("\n", i), text.find("\r", i)) if p >= 0)
            i = k + 1
        elif text.startswith("!=", i):
            raise _error(text, "'!=' is not a selector operator (use '<>')", i)
        elif text.startswith("==", i):
            raise _error(text, "'==' is not a selector operator (use '=')", i)
        elif text[i:i + 2] in _TWO_CHAR_OPS:
            append(("OP", text[i:i + 2], i, i + 2))
            i += 2
        elif c in _ONE_CHAR_OPS:
            append(("OP", c, i, i + 1))
            i += 1
        else:
            raise _error(text, f"unexpected character {c!r}", i)
    append(("EOF", None, n, n))
    return tokens


# ---------------------------------------------------------------------------
# Expression nodes
# ---------------------------------------------------------------------------
#
# kind is what ActiveMQ's parser knows statically about an expression:
#   'bool'  - a condition (comparison, logic, TRUE/FALSE); fn returns True/False/None
#   'null'  - the NULL literal
#   'ident' - a property reference (value of any type)
#   'num', 'str' - numeric / string literals
#   'arith' - result of arithmetic or sign operators (number or None)


class _Node:
    __slots__ = ("fn", "kind", "const", "value", "depth", "pos", "name")

    def __init__(self, fn, kind, pos, depth=1, const=False, value=None, name=None):
        self.fn = fn
        self.kind = kind
        self.pos = pos
        self.depth = depth
        self.const = const
        self.value = value
        self.name = name


def _const_fn(value):
    return lambda lookup: value


def _const(value, kind, pos):
    return _Node(_const_fn(value), kind, pos, const=True, value=value)


def _ident_fn(name):
    def ident(lookup):
        v = lookup(name)
        if type(v) in _PLAIN:
            return v
        return _normalize(v)
    return ident


def _no_lookup(name):  # constant sub-expressions never look anything up
    raise AssertionError(name)


# --- comparisons -----------------------------------------------------------

def _cmp_ident_const(name, c, fast, slow, if_null=None):
    """`if_null`: the answer when the property is absent (UNKNOWN, but FALSE for
    `5 = x`: ActiveMQ's = is UNKNOWN only when its left side is NULL)."""
    tc = type(c)
    numeric = tc in _NUM
    no_match = fast is not operator.ne  # a failed conversion: FALSE, and so <> is TRUE

    def compare(lookup):
        a = lookup(name)
        if a is None:
            return if_null
        ta = type(a)
        if ta is tc:
            return fast(a, c)
        if numeric and ta is str:  # the STOMP case: header string vs number literal
            a = _to_num(a, c)
            return (not no_match) if a is None else fast(a, c)
        if ta not in _PLAIN:
            a = _normalize(a)
        return slow(a, c)
    return compare


def _cmp_fn_const(lf, c, fast, slow, if_null=None):
    tc = type(c)

    def compare(lookup):
        a = lf(lookup)
        if a is None:
            return if_null
        if type(a) is tc:
            return fast(a, c)
        return slow(a, c)
    return compare


def _cmp_generic(lf, rf, fast, slow, fast_types, equality=None):
    """equality: None for <, >, <=, >= (NULL on either side is UNKNOWN); True for = and
    False for <>, with ActiveMQ's NULL rule: NULL = NULL is TRUE, NULL = x UNKNOWN,
    x = NULL FALSE (and <> the negation of each)."""
    if equality is None:
        def compare(lookup):
            a = lf(lookup)
            if a is None:
                return None
            b = rf(lookup)
            if b is None:
                return None
            t = type(a)
            if t is type(b) and t in fast_types:
                return fast(a, b)
            return slow(a, b)
        return compare

    def compare_eq(lookup):
        a = lf(lookup)
        b = rf(lookup)
        if a is None:
            return equality if b is None else None
        if b is None:
            return not equality
        t = type(a)
        if t is type(b) and t in fast_types:
            return fast(a, b)
        return slow(a, b)
    return compare_eq


# --- logic ------------------------------------------------------------------

def _ident_cast_fn(name):
    """A property used as a condition: its boolean value; absent is UNKNOWN, and any other
    value (every STOMP header is a string) is FALSE, as ActiveMQ's."""
    def cast(lookup):
        v = lookup(name)
        if v is True or v is False or v is None:
            return v
        return False if type(v) in _PLAIN else None
    return cast


def _not_fn(f):
    def negation(lookup):
        v = f(lookup)
        return None if v is None else not v
    return negation


def _and_fn(fns):
    if len(fns) == 2:
        f1, f2 = fns

        def and2(lookup):
            a = f1(lookup)
            if a is False:
                return False
            b = f2(lookup)
            if b is False:
                return False
            if a is None or b is None:
                return None
            return True
        return and2
    fns = tuple(fns)

    def and_n(lookup):
        unknown = False
        for f in fns:
            v = f(lookup)
            if v is False:
                return False
            if v is None:
                unknown = True
        return None if unknown else True
    return and_n


def _or_fn(fns):
    if len(fns) == 2:
        f1, f2 = fns

        def or2(lookup):
            a = f1(lookup)
            if a is True:
                return True
            b = f2(lookup)
            if b is True:
                return True
            if a is None or b is None:
                return None
            return False
        return or2
    fns = tuple(fns)

    def or_n(lookup):
        unknown = False
        for f in fns:
            v = f(lookup)
            if v is True:
                return True
            if v is None:
                unknown = True
        return None if unknown else False
    return or_n


# --- arithmetic -------------------------------------------------------------

def _arith_fn(fns, ops):
    if len(fns) == 2:
        lf, rf = fns
        op = ops[0]

        def arith2(lookup):
            a = lf(lookup)
            if a is None:
                return None
            b = rf(lookup)
            if b is None:
                return None
            return op(a, b)
        return arith2
    first = fns[0]
    rest = tuple(zip(ops, fns[1:]))

    def arith_n(lookup):
        acc = first(lookup)
        for op, f in rest:
            if acc is None:
                return None
            b = f(lookup)
            if b is None:
                return None
            acc = op(acc, b)
        return acc
    return arith_n


def _unary_fn(f, op):
    def unary(lookup):
        v = f(lookup)
        return None if v is None else op(v)
    return unary


# --- BETWEEN / LIKE / IN / IS NULL ----------------------------------------------

def _between_fn(vf, lof, hif, negated):
    if not negated:
        def between(lookup):
            v = vf(lookup)
            if v is None:
                return None
            lo = lof(lookup)
            hi = hif(lookup)
            a = None if lo is None else _GE(v, lo)
            if a is False:
                return False
            b = None if hi is None else _LE(v, hi)
            if b is False:
                return False
            if a is None or b is None:
                return None
            return True
        return between

    def not_between(lookup):
        v = vf(lookup)
        if v is None:
            return None
        lo = lof(lookup)
        hi = hif(lookup)
        a = None if lo is None else _LT(v, lo)
        if a is True:
            return True
        b = None if hi is None else _GT(v, hi)
        if b is True:
            return True
        if a is None or b is None:
            return None
        return False
    return not_between


def _between_const_fn(vf, lo, hi, negated):
    """BETWEEN with numeric literal bounds: the common case."""
    general = _between_fn(vf, _const_fn(lo), _const_fn(hi), negated)
    same = type(lo) is type(hi) and (type(lo) is float or (-_INT32 <= lo < _INT32) ==
                                     (-_INT32 <= hi < _INT32))
    if not same:  # bounds of different Java types: each converts the header its own way
        return general
    if not negated:
        def between(lookup):
            v = vf(lookup)
            t = type(v)
            if t is str:  # STOMP header: convert once (a failure is FALSE, as ActiveMQ's)
                v = _to_num(v, lo)
                return v is not None and lo <= v <= hi
            if t is int or t is float:
                return lo <= v <= hi
            return general(lookup) if v is not None else None
        return between

    def not_between(lookup):
        v = vf(lookup)
        t = type(v)
        if t is str:
            v = _to_num(v, lo)
            return v is not None and (v < lo or v > hi)
        if t is int or t is float:
            return v < lo or v > hi
        return general(lookup) if v is not None else None
    return not_between


def _like_fn(vf, pred, negated):
    if negated:
        def not_like(lookup):
            v = vf(lookup)
            if type(v) is str:
                return not pred(v)
            return None
        return not_like

    def like(lookup):
        v = vf(lookup)
        if type(v) is str:
            return pred(v)
        return None
    return like


def _in_fn(name, elements, negated):
    """IN over string literals; as ActiveMQ, a value that is not a string (JMSPriority, a
    number) is UNKNOWN, in an IN and a NOT IN alike."""
    members = frozenset(elements)
    if negated:
        def not_in(lookup):
            v = lookup(name)
            if type(v) is not str:
                if not isinstance(v, str):
                    return None
                v = str(v)
            return v not in members
        return not_in

    def in_(lookup):
        v = lookup(name)
        if type(v) is not str:
            if not isinstance(v, str):
                return None
            v = str(v)
        return v in members
    return in_


def _is_null_fn(f, negated):
    if negated:
        return lambda lookup: f(lookup) is not None
    return lambda lookup: f(lookup) is None


def _ident_is_null_fn(name, negated):
    if negated:
        return lambda lookup: lookup(name) is not None
    return lambda lookup: lookup(name) is None


# ---------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------

_RELATIONAL_KW = ("LIKE", "BETWEEN", "IN")
_ORDER_OPS = ("<", ">", "<=", ">=")


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.nesting = 0

    # --- helpers --------------------------------------------------------------

    def error(self, reason: str, position: int):
        raise _error(self.text, reason, position)

    def describe(self, tok) -> str:
        if tok[0] == "EOF":
            return "end of selector"
        s = self.text[tok[2]:tok[3]]
        if len(s) > 40:
            s = s[:37] + "..."
        return repr(s)

    def peek(self):
        return self.tokens[self.i]

    def at_kw(self, word: str) -> bool:
        tok = self.tokens[self.i]
        return tok[0] == "KW" and tok[1] == word

    def at_op(self, op: str) -> bool:
        tok = self.tokens[self.i]
        return tok[0] == "OP" and tok[1] == op

    def node(self, fn, kind, pos, children, **extra) -> _Node:
        """Make a node; fold it to a constant when all its children are constant."""
        if all(c.const for c in children):
            return _const(fn(_no_lookup), kind, pos)
        depth = 1 + max(c.depth for c in children)
        if depth > MAX_DEPTH:
            self.error("selector is nested too deeply", pos)
        return _Node(fn, kind, pos, depth=depth, **extra)

    def boolean(self, node: _Node) -> _Node:
        """Check that node can be used as a condition (ActiveMQ's asBooleanExpression)."""
        kind = node.kind
        if kind == "bool" or kind == "null":
            return node
        if kind == "ident":
            return self.node(_ident_cast_fn(node.name), "bool", node.pos, [node])
        self.error("expected a condition, but this expression is not boolean", node.pos)

    # --- grammar --------------------------------------------------------------

    def parse(self) -> _Node:
        node = self.parse_or()
        tok = self.peek()
        if tok[0] != "EOF":
            if tok[0] == "OP" and tok[1] == ")":
                self.error("unexpected ')' (unbalanced parentheses)", tok[2])
            self.error(f"unexpected {self.describe(tok)}", tok[2])
        return self.boolean(node)

    def parse_or(self) -> _Node:
        node = self.parse_and()
        if not self.at_kw("OR"):
            return node
        items = [self.boolean(node)]
        while self.at_kw("OR"):
            self.i += 1
            items.append(self.boolean(self.parse_and()))
        return self.logic(items, is_and=False)

    def parse_and(self) -> _Node:
        node = self.parse_not()
        if not self.at_kw("AND"):
            return node
        items = [self.boolean(node)]
        while self.at_kw("AND"):
            self.i += 1
            items.append(self.boolean(self.parse_not()))
        return self.logic(items, is_and=True)

    def logic(self, items, is_and: bool) -> _Node:
        dominant = not is_and  # FALSE decides an AND, TRUE decides an OR
        pos = items[0].pos
        kept = []
        for item in items:
            if item.const:
                if item.value is dominant:
                    return _const(dominant, "bool", pos)
                if item.value is (not dominant):
                    continue  # neutral element
            kept.append(item)
        if not kept:
            return _const(not dominant, "bool", pos)
        if len(kept) == 1:
            return kept[0]
        fns = [item.fn for item in kept]
        return self.node(_and_fn(fns) if is_and else _or_fn(fns), "bool", pos, kept)

    def parse_not(self) -> _Node:
        start = self.peek()[2]
        count = 0
        while self.at_kw("NOT"):
            self.i += 1
            count += 1
        node = self.parse_equality()
        if not count:
            return node
        node = self.boolean(node)
        if count % 2 == 0:
            return node
        return self.node(_not_fn(node.fn), "bool", start, [node])

    def parse_equality(self) -> _Node:
        node = self.parse_comparison()
        while True:
            tok = self.peek()
            if tok[0] == "OP" and (tok[1] == "=" or tok[1] == "<>"):
                self.i += 1
                right = self.parse_comparison()
                node = self.compare(tok[1], node, right, tok[2])
            elif tok[0] == "KW" and tok[1] == "IS":
                self.i += 1
                negated = self.at_kw("NOT")
                if negated:
                    self.i += 1
                nxt = self.peek()
                if not (nxt[0] == "KW" and nxt[1] == "NULL"):
                    self.error(f"expected NULL after {'IS NOT' if negated else 'IS'} "
                               f"but found {self.describe(nxt)}", nxt[2])
                self.i += 1
                if node.kind == "ident":
                    fn = _ident_is_null_fn(node.name, negated)
                else:
                    fn = _is_null_fn(node.fn, negated)
                node = self.node(fn, "bool", node.pos, [node])
            else:
                return node

    def parse_comparison(self) -> _Node:
        node = self.parse_add()
        while True:
            tok = self.peek()
            kind, value = tok[0], tok[1]
            if kind == "OP" and value in _ORDER_OPS:
                self.i += 1
                right = self.parse_add()
                node = self.compare(value, node, right, tok[2])
                continue
            negated = False
            if kind == "KW" and value == "NOT":
                nxt = self.tokens[self.i + 1]
                if not (nxt[0] == "KW" and nxt[1] in _RELATIONAL_KW):
                    return node
                self.i += 1
                negated = True
                tok = nxt
                value = nxt[1]
            elif kind != "KW" or value not in _RELATIONAL_KW:
                return node
            self.i += 1
            if value == "LIKE":
                node = self.like_rest(node, negated, tok)
            elif value == "BETWEEN":
                node = self.between_rest(node, negated, tok)
            else:
                node = self.in_rest(node, negated, tok)

    def compare(self, op: str, left: _Node, right: _Node, pos: int) -> _Node:
        if op == "=" or op == "<>":
            for operand in (left, right):
                if operand.kind == "null":
                    self.error(f"NULL cannot be compared with '{op}' (use IS NULL / IS NOT NULL)",
                               operand.pos)
        else:
            for operand in (left, right):
                self.check_orderable(operand, op)
        equality = {"=": True, "<>": False}.get(op)
        swapped = left.const and not right.const
        if swapped:
            left, right = right, left
            op = _FLIPPED[op]
        fast, slow, fast_types = _COMPARATORS[op]
        if right.const:
            c = right.value
            if c is None:  # e.g. a constant arithmetic expression that is NULL
                return _const(None, "bool", left.pos)
            # ActiveMQ: `5 = x` with x NULL is FALSE (and `5 <> x` TRUE); `x = 5` UNKNOWN
            if_null = (not equality) if swapped and equality is not None else None
            if left.kind == "ident":
                fn = _cmp_ident_const(left.name, c, fast, slow, if_null)
            else:
                fn = _cmp_fn_const(left.fn, c, fast, slow, if_null)
        else:
            fn = _cmp_generic(left.fn, right.fn, fast, slow, fast_types, equality)
        return self.node(fn, "bool", left.pos, [left, right])

    def check_orderable(self, operand: _Node, op: str):
        # ActiveMQ's checkLessThanOperand: NULL, TRUE/FALSE, conditions and string
        # literals cannot be ordered (two string properties can: lexicographically)
        if operand.kind == "null":
            self.error(f"NULL cannot be compared with '{op}'", operand.pos)
        if operand.kind == "bool":
            self.error(f"a boolean value cannot be compared with '{op}'", operand.pos)
        if operand.kind == "str":
            self.error(f"a string literal cannot be compared with '{op}' (only = and <> "
                       f"compare strings; a number is written without quotes)", operand.pos)

    def expect_string(self, what: str) -> str:
        tok = self.peek()
        if tok[0] != "STR":
            self.error(f"expected a string literal after {what} but found {self.describe(tok)}",
                       tok[2])
        self.i += 1
        return tok[1]

    def like_rest(self, node: _Node, negated: bool, tok) -> _Node:
        pattern = self.expect_string("LIKE")
        escape = None
        if self.at_kw("ESCAPE"):
            esc_tok = self.peek()
            self.i += 1
            escape = self.expect_string("ESCAPE")
            if len(escape) != 1:
                self.error(f"ESCAPE must be a single character, not {escape!r}", esc_tok[2])
        pred = _compile_like(pattern, escape)
        return self.node(_like_fn(node.fn, pred, negated), "bool", node.pos, [node])

    def between_rest(self, node: _Node, negated: bool, tok) -> _Node:
        low = self.parse_add()
        and_tok = self.peek()
        if not (and_tok[0] == "KW" and and_tok[1] == "AND"):
            self.error(f"expected AND in BETWEEN but found {self.describe(and_tok)}", and_tok[2])
        self.i += 1
        high = self.parse_add()
        for operand in (node, low, high):
            self.check_orderable(operand, "BETWEEN")
        if low.const and high.const and type(low.value) in _NUM and type(high.value) in _NUM:
            fn = _between_const_fn(node.fn, low.value, high.value, negated)
        else:
            fn = _between_fn(node.fn, low.fn, high.fn, negated)
        return self.node(fn, "bool", node.pos, [node, low, high])

    def in_rest(self, node: _Node, negated: bool, tok) -> _Node:
        if node.kind != "ident":
            self.error("the left side of IN must be a property name", node.pos)
        if not self.at_op("("):
            nxt = self.peek()
            self.error(f"expected '(' after IN but found {self.describe(nxt)}", nxt[2])
        self.i += 1
        elements = []
        while True:
            elements.append(self.in_element())
            nxt = self.peek()
            if nxt[0] == "OP" and nxt[1] == ",":
                self.i += 1
            elif nxt[0] == "OP" and nxt[1] == ")":
                self.i += 1
                break
            else:
                self.error(f"expected ',' or ')' in IN list but found {self.describe(nxt)}", nxt[2])
        return self.node(_in_fn(node.name, elements, negated), "bool", node.pos, [node])

    def in_element(self):
        tok = self.peek()
        if tok[0] == "STR":
            self.i += 1
            return tok[1]
        self.error(f"expected a string literal in IN list but found {self.describe(tok)} "
                   f"(as in ActiveMQ, IN lists hold strings only)", tok[2])

    def parse_add(self) -> _Node:
        node = self.parse_mult()
        tok = self.peek()
        if not (tok[0] == "OP" and tok[1] in ("+", "-")):
            return node
        operands = [node]
        ops = []
        while tok[0] == "OP" and tok[1] in ("+", "-"):
            self.i += 1
            ops.append(_ARITH[tok[1]])
            operands.append(self.parse_mult())
            tok = self.peek()
        return self.node(_arith_fn([n.fn for n in operands], ops), "arith", node.pos, operands)

    def parse_mult(self) -> _Node:
        node = self.parse_unary()
        tok = self.peek()
        if not (tok[0] == "OP" and tok[1] in ("*", "/", "%")):
            return node
        operands = [node]
        ops = []
        while tok[0] == "OP" and tok[1] in ("*", "/", "%"):
            self.i += 1
            ops.append(_ARITH[tok[1]])
            operands.append(self.parse_unary())
            tok = self.peek()
        return self.node(_arith_fn([n.fn for n in operands], ops), "arith", node.pos, operands)

    def parse_unary(self) -> _Node:
        start = self.peek()[2]
        negative = None
        while True:
            tok = self.peek()
            if tok[0] == "OP" and tok[1] in ("+", "-"):
                self.i += 1
                negative = bool(negative) ^ (tok[1] == "-")
            else:
                break
        node = self.parse_primary()
        if negative is None:
            return node
        op = _negate if negative else _plus
        if node.const:
            kind = "num" if node.kind == "num" else "arith"
            return _const(op(node.value), kind, start)
        return self.node(_unary_fn(node.fn, op), "arith", start, [node])

    def parse_primary(self) -> _Node:
        tok = self.peek()
        kind, value, pos = tok[0], tok[1], tok[2]
        if kind == "NUM":
            self.i += 1
            return _const(value, "num", pos)
        if kind == "STR":
            self.i += 1
            return _const(value, "str", pos)
        if kind == "ID":
            self.i += 1
            return _Node(_ident_fn(value), "ident", pos, name=value)
        if kind == "KW":
            if value == "TRUE" or value == "FALSE":
                self.i += 1
                return _const(value == "TRUE", "bool", pos)
            if value == "NULL":
                self.i += 1
                return _const(None, "null", pos)
            if value == "XPATH" or value == "XQUERY":
                self.error(f"{value} selectors are not supported", pos)
        elif kind == "OP" and value == "(":
            self.i += 1
            self.nesting += 1
            if self.nesting > MAX_NESTING:
                self.error("selector is nested too deeply", pos)
            node = self.parse_or()
            close = self.peek()
            if not (close[0] == "OP" and close[1] == ")"):
                self.error(f"expected ')' to match '(' at position {pos} but found "
                           f"{self.describe(close)}", close[2])
            self.i += 1
            self.nesting -= 1
            return node
        self.error(f"expected a value but found {self.describe(tok)}", pos)


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------

def _matcher(fn) -> Matcher:
    def match(lookup: Lookup) -> bool:
        try:
            return fn(lookup) is True
        except Exception:  # a misbehaving lookup, or anything unforeseen
            return False
    return match


@functools.lru_cache(maxsize=512)
def _compile(text: str) -> Matcher:
    if not text.strip():
        raise _error(text, "empty selector", 0)
    try:
        node = _Parser(text).parse()
    except RecursionError:
        raise _error(text, "selector is nested too deeply", 0) from None
    if node.const:
        value = node.value is True
        return lambda lookup: value
    return _matcher(node.fn)


def compile_selector(text: str) -> Matcher:
    """Compile a JMS message selector.

    Returns ``match(lookup)``; ``lookup(name)`` gives the value of property
    ``name`` of the message being tested (str, int, float, bool) or None when
    absent.  ``match`` returns True only if the selector evaluates to TRUE and
    never raises.  Raises :class:`SelectorError` if ``text`` is not a valid
    selector (including an empty one).  Compiled selectors are stateless and
    cached, so compiling the same text again is cheap.
    """
    if not isinstance(text, str):
        raise TypeError(f"selector must be a str, not {type(text).__name__}")
    return _compile(text)
