"""Tests for pybrokerd.broker.selector (JMS selectors, ActiveMQ/STOMP flavour)."""

import itertools
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pybrokerd.broker.selector import SelectorError, compile_selector


def match(selector, **props):
    return compile_selector(selector)(props.get)


def truth(selector, **props):
    """'T', 'F' or 'U' (UNKNOWN): the three-valued result of a condition."""
    if match(selector, **props):
        return "T"
    if match(f"NOT ({selector})", **props):
        return "F"
    return "U"


# ---------------------------------------------------------------------------
# API
# ---------------------------------------------------------------------------

def test_api_shape():
    m = compile_selector("a = 1")
    assert callable(m)
    assert m({"a": 1}.get) is True
    assert m({"a": 2}.get) is False
    assert m({}.get) is False
    assert issubclass(SelectorError, ValueError)


def test_lookup_called_with_names():
    seen = []

    def lookup(name):
        seen.append(name)
        return {"JMSPriority": 7, "JMSType": "car"}.get(name)

    assert compile_selector("JMSPriority > 4 AND JMSType = 'car'")(lookup)
    assert seen == ["JMSPriority", "JMSType"]


def test_compiled_matcher_is_reusable():
    m = compile_selector("color = 'red'")
    assert [m({"color": c}.get) for c in ("red", "blue", "red", None)] == [True, False, True, False]


def test_non_string_selector_is_type_error():
    with pytest.raises(TypeError):
        compile_selector(None)


# ---------------------------------------------------------------------------
# Literals
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("selector, value", [
    ("x = 'abc'", "abc"),
    ("x = 'it''s'", "it's"),
    ("x = ''''", "'"),
    ("x = ''", ""),
    ("x = 'a b %_ \" \\n'", 'a b %_ " \\n'),
    ("x = 123", 123),
    ("x = 123L", 123),
    ("x = 123l", 123),
    ("x = 0x1F", 31),
    ("x = 0X1f", 31),
    ("x = 017", 15),
    ("x = 0", 0),
    ("x = 1.5", 1.5),
    ("x = 1e3", 1000),
    ("x = 1E3", 1000.0),
    ("x = 2.5e-1", 0.25),
    ("x = .5", 0.5),
    ("x = 7.", 7),
    ("x = 1.e2", 100),
    ("x = -5", -5),
    ("x = +5", 5),
    ("x = - -5", 5),
    ("x = TRUE", True),
    ("x = true", True),
    ("x = False", False),
    ("x = 99999999999999999999", 99999999999999999999),
])
def test_literals(selector, value):
    assert match(selector, x=value)


def test_int_and_float_compare():
    assert match("x = 5", x=5.0)
    assert match("x = 5.0", x=5)
    assert match("x < 5.5", x=5)
    assert not match("x = 5", x=5.1)


def test_null_literal_in_logic_is_unknown():
    assert truth("NULL") == "U"
    assert truth("NULL OR TRUE") == "T"
    assert truth("NULL AND FALSE") == "F"
    assert truth("x = 1 AND NULL", x=1) == "U"


def test_constant_selectors():
    assert match("TRUE")
    assert not match("FALSE")
    assert match("1 = 1")
    assert not match("1 = 2")
    assert match("'a' = 'a'")
    assert match("2 * 3 + 1 = 7")


# ---------------------------------------------------------------------------
# Identifiers and keywords
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["a", "abc_def", "_x", "$x", "x$1", "JMSType", "JMSXGroupID",
                                  "a1b2", "notx", "ANDROID", "inside", "isbn", "nullable",
                                  "truth", "falsehood", "escaped", "likes", "between_", "ORx"])
def test_identifier_names(name):
    assert match(f"{name} = 'v'", **{name: "v"})
    assert not match(f"{name} = 'v'", **{name: "w"})


@pytest.mark.parametrize("selector", [
    "a = 1 and b = 2",
    "a = 1 AnD b = 2",
    "a = 1 AND b = 2",
    "not (a = 2) And b = 2",
    "a between 0 and 2 AND b in ('2', '3') and c like 'x%' ESCAPE '!' and d is null",
    "a BeTwEeN 0 AnD 2 AND b In ('2') AND c LiKe 'x%' eScApE '!' AND d iS nOt NuLl OR FALSE",
])
def test_case_insensitive_keywords(selector):
    assert match(selector, a=1, b="2", c="xyz", d=None) or "NOT NULL" in selector.upper()
    assert match(selector, a=1, b="2", c="xyz", d=("q" if "NOT" in selector.upper() else None))


def test_identifiers_are_case_sensitive():
    assert match("Color = 'red'", Color="red")
    assert not match("color = 'red'", Color="red")


def test_keywords_are_not_identifiers():
    for kw in ("AND", "or", "Not", "between", "LIKE", "escape", "IN", "is", "NULL"):
        with pytest.raises(SelectorError):
            compile_selector(f"{kw} = 1")
    # TRUE / FALSE are literals, never property names
    assert not match("true = 1", true=1)
    assert match("FALSE = FALSE", FALSE=True)


def test_comments():
    assert match("a = 1 /* comment */ AND b = 2", a=1, b=2)
    assert match("a = 1 -- comment\n AND b = 2", a=1, b=2)
    # without a line terminator, '--' is two minus signs (as in ActiveMQ's grammar)
    assert match("a--1 = 2", a=1)
    with pytest.raises(SelectorError):
        compile_selector("a = 1 /* unterminated")


def test_whitespace_everywhere():
    assert match(" \t\r\n a\n=\t1\f ", a=1)
    assert match("a=1AND b=2", a=1, b=2)  # JavaCC tokenizes the number, then the keyword


# ---------------------------------------------------------------------------
# Comparisons
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("op, expected", [
    ("=", [False, True, False]),
    ("<>", [True, False, True]),
    ("<", [True, False, False]),
    ("<=", [True, True, False]),
    (">", [False, False, True]),
    (">=", [False, True, True]),
])
def test_numeric_comparisons(op, expected):
    assert [match(f"x {op} 5", x=v) for v in (4, 5, 6)] == expected
    assert [match(f"x {op} 5", x=v) for v in (4.5, 5.0, 5.5)] == expected
    assert [match(f"x {op} y", x=v, y=5) for v in (4, 5, 6)] == expected
    # constant on the left is flipped correctly
    assert [match(f"5 {op} x", x=v) for v in (6, 5, 4)] == expected


def test_string_comparisons():
    assert match("s = 'abc'", s="abc")
    assert not match("s = 'abc'", s="ABC")
    assert match("s <> 'abc'", s="ABC")
    assert match("s = t", s="x", t="x")
    assert match("s < t", s="x", t="y")  # two properties: lexicographic
    assert not match("s >= t", s="abc", t="abd")


@pytest.mark.parametrize("selector", ["s < 'b'", "'a' < 'b'", "s >= 'abc'", "n > '5'",
                                      "s BETWEEN 'a' AND 'c'", "n BETWEEN 5 AND '20'"])
def test_a_string_literal_cannot_be_ordered(selector):
    """As ActiveMQ (and the JMS specification): strings compare with = and <> only."""
    with pytest.raises(SelectorError, match="string literal"):
        compile_selector(selector)


def test_boolean_comparisons():
    assert match("b = TRUE", b=True)
    assert match("b <> TRUE", b=False)
    assert match("b = FALSE", b=False)
    assert match("b = c", b=True, c=True)
    assert truth("b < c", b=False, c=True) == "T"  # ActiveMQ: Boolean is Comparable


@pytest.mark.parametrize("selector, props, result", [
    ("x = 'abc'", {"x": 5}, "F"),
    ("x = 5", {"x": True}, "F"),
    ("x = TRUE", {"x": 1}, "F"),
    ("x > 5", {"x": "abc"}, "F"),
    ("x = 5", {"x": "abc"}, "F"),
    ("x <> 5", {"x": "abc"}, "T"),
    ("x > 5", {"x": False}, "F"),
    ("x < y", {"x": True, "y": 1}, "F"),
])
def test_type_mismatch_is_false(selector, props, result):
    """ActiveMQ: values that cannot be converted to each other's type compare FALSE (so
    `x <> 5` is TRUE for x:abc), not UNKNOWN."""
    assert truth(selector, **props) == result


def test_comparisons_with_null():
    for op in ("<", "<=", ">", ">="):  # UNKNOWN, whichever side is NULL
        assert truth(f"x {op} 1") == "U"
        assert truth(f"1 {op} x") == "U"
        assert truth(f"x {op} y", x=1) == "U"
        assert truth(f"x {op} y", y=1) == "U"
        assert truth(f"x {op} y") == "U"
    # ActiveMQ's =: UNKNOWN when its left side is NULL, FALSE when only its right side is,
    # TRUE when both are; <> is its negation
    for op, both, right in (("=", "T", "F"), ("<>", "F", "T")):
        assert truth(f"x {op} 1") == "U"
        assert truth(f"x {op} 'a'") == "U"
        assert truth(f"x {op} y", y=1) == "U"
        assert truth(f"1 {op} x") == right
        assert truth(f"x {op} y", x=1) == right
        assert truth(f"x {op} y") == both


def test_equality_binds_looser_than_relational():
    # ActiveMQ grammar: '=' / '<>' / IS NULL sit above '<', '>', LIKE, BETWEEN, IN
    assert match("x > 1 = TRUE", x=2)
    assert match("TRUE = x > 1", x=2)
    assert match("x > 1 = y < 1", x=2, y=0)
    assert match("x LIKE 'a%' = FALSE", x="ba")
    assert match("(x = 1) = (y = 2)", x=1, y=2)
    assert match("(x = 1) <> (y = 2)", x=1, y=3)
    assert truth("(x = 1) = TRUE") == "U"


# ---------------------------------------------------------------------------
# ActiveMQ STOMP string conversion
# ---------------------------------------------------------------------------

def test_stomp_string_to_number_conversion():
    assert match("weight > 5", weight="10")
    assert match("weight = 10", weight="10")
    assert match("weight <> 11", weight="10")
    assert match("weight >= 10.0", weight="10")
    assert match("weight < 10.5", weight="10")
    assert match("weight = 10.5", weight="10.5")
    assert not match("weight > 10", weight="10.5")  # Integer.valueOf("10.5") fails: FALSE
    assert match("weight BETWEEN 5 AND 15", weight="10")
    assert not match("weight BETWEEN 11 AND 15", weight="10")
    assert match("weight NOT BETWEEN 11 AND 15", weight="10")
    assert match("5 < weight", weight="10")
    assert match("weight = 10", weight="+10")
    assert match("weight = -10", weight="-10")
    assert match("weight = 10", weight="010")
    assert match("weight = 10", weight="10")
    # as ActiveMQ, the string becomes the literal's Java type: an int literal takes
    # Integer.valueOf (no decimals, exponent or blanks), a decimal one Double.valueOf
    assert not match("weight = 1000", weight="1e3")
    assert match("weight = 1000.0", weight="1e3")
    assert not match("weight = 1500", weight="1500.0")
    assert not match("weight > 5", weight=" 10")
    assert match("weight > 5.0", weight=" 10 ")
    assert not match("weight > 1", weight="Infinity")
    assert match("weight > 1.0", weight="Infinity")
    assert match("weight > 1.0", weight="10f")
    assert not match("weight > 5", weight="3000000000")  # past Integer: no number
    assert match("weight > 5000000000", weight="6000000000")  # a Long literal: Long.valueOf
    # a number property against a string literal converts too
    assert match("n = '10'", n=10)
    assert not match("n = '10.0'", n=10)
    assert match("n > s", n=10, s="9")  # numeric, not lexicographic
    # and property against property
    assert match("a = b", a="10", b=10)
    assert match("a < b", a=9, b="10")


def test_stomp_string_compare_stays_lexicographic():
    assert match("a < b", a="10", b="9")  # both strings: no conversion
    assert match("a = '10'", a="10")
    assert not match("a = '10.0'", a="10")


@pytest.mark.parametrize("value", ["abc", "", " ", "1_000", "0x10", "1,5", "ten", "\u00b2"])
def test_unparseable_string_against_number_is_false(value):
    """ActiveMQ: a failed conversion makes the comparison FALSE (so NOT (...) is TRUE)."""
    assert truth("weight > 5", weight=value) == "F"
    assert truth("weight = 5", weight=value) == "F"
    assert truth("weight <> 5", weight=value) == "T"
    assert truth("weight BETWEEN 1 AND 9", weight=value) == "F"
    assert truth("weight NOT BETWEEN 1 AND 9", weight=value) == "F"


def test_stomp_string_to_boolean_conversion():
    assert match("flag = TRUE", flag="true")
    assert match("flag = TRUE", flag="TRUE")
    assert match("flag = FALSE", flag="false")
    assert not match("flag = TRUE", flag="false")
    assert match("flag <> TRUE", flag="false")
    assert match("TRUE = flag", flag="True")
    # java.lang.Boolean.valueOf: anything but "true" is false
    assert match("flag = FALSE", flag="yes")


def test_arithmetic_does_not_convert_strings():
    assert truth("weight * 2 = 20", weight="10") == "U"
    assert truth("weight - 0 = 10", weight="10") == "U"
    assert truth("-weight = -10", weight="10") == "U"
    assert truth("weight / 1 > 0", weight="10") == "U"
    assert truth("1 + weight = 11", weight="10") == "U"  # a number on the left: no join
    assert match("weight * 2 = 20", weight=10)


@pytest.mark.parametrize("selector, props", [
    # what ActiveMQ 5.17 matched, checked side by side over STOMP (session 10)
    ("s + 'x' = 'abx'", {"s": "ab"}),
    ("s + 1 = 'ab1'", {"s": "ab"}),
    ("n + 1 = 51", {"n": "5"}),               # "51", compared with a number as a number
    ("'a' + 'b' = 'ab'", {}),
    ("s + t = 'abcd'", {"s": "ab", "t": "cd"}),
    ("s + 1.5 = 'ab1.5'", {"s": "ab"}),
    ("s + JMSPriority = 'ab4'", {"s": "ab", "JMSPriority": 4}),
    ("s + TRUE = 'abtrue'", {"s": "ab"}),
    ("s + 1E20 = 'ab1.0E20'", {"s": "ab"}),    # the right side as Java writes a double
    ("s + missing IS NULL", {"s": "ab"}),
])
def test_plus_with_a_string_on_the_left_joins_the_two(selector, props):
    assert match(selector, **props)


def test_a_joined_string_is_compared_as_any_string():
    assert truth("n + 1 = 6", n="5") == "F"
    assert truth("s + missing = 'ab'", s="ab") == "U"


def test_bare_string_property_is_not_a_boolean():
    """ActiveMQ: a property used as a condition is FALSE unless it is a real boolean (every
    STOMP header is a string), UNKNOWN when absent."""
    assert truth("flag", flag="true") == "F"
    assert truth("flag", flag=True) == "T"
    assert truth("flag", flag=False) == "F"
    assert truth("flag") == "U"
    assert truth("flag", flag=1) == "F"
    assert match("NOT flag", flag="yes")


# ---------------------------------------------------------------------------
# Arithmetic
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("selector, props", [
    ("a + b = 7", {"a": 3, "b": 4}),
    ("a - b = -1", {"a": 3, "b": 4}),
    ("a * b = 12", {"a": 3, "b": 4}),
    ("a / b = 0", {"a": 3, "b": 4}),       # int division
    ("a / b = 0.75", {"a": 3.0, "b": 4}),
    ("a / b = -2", {"a": -7, "b": 3}),     # truncation toward zero, as in Java
    ("a / b = -2", {"a": 7, "b": -3}),
    ("a / b = 2", {"a": -7, "b": -3}),
    ("a % b = 1", {"a": 7, "b": 3}),
    ("a % b = -1", {"a": -7, "b": 3}),     # Java remainder: sign of the dividend
    ("a % b = 1", {"a": 7, "b": -3}),
    ("a % b = 1.5", {"a": 7.5, "b": 3}),
    ("a + 0.5 = 3.5", {"a": 3}),
    ("-a = -3", {"a": 3}),
    ("+a = 3", {"a": 3}),
    ("- - a = 3", {"a": 3}),
    ("-(a + b) = -7", {"a": 3, "b": 4}),
    ("a + b * 2 = 11", {"a": 3, "b": 4}),
    ("(a + b) * 2 = 14", {"a": 3, "b": 4}),
    ("a - b - 1 = -2", {"a": 3, "b": 4}),   # left associative
    ("a / b / 2 = 2", {"a": 16, "b": 4}),
    ("a * -1 = -3", {"a": 3}),
    ("2 + 3 * 4 - 6 / 2 = 11", {}),
    ("a + b + a + b + a = 17", {"a": 3, "b": 4}),
    ("a * b / a * b = 16", {"a": 3, "b": 4}),
])
def test_arithmetic(selector, props):
    assert match(selector, **props)


@pytest.mark.parametrize("selector, props", [
    ("a / 0 = 1", {"a": 3}),
    ("a / 0.0 = 1", {"a": 3}),
    ("a / b > 0", {"a": 3.0, "b": 0}),
    ("a % 0 = 0", {"a": 3}),
    ("a + b = 1", {"a": 1}),
    ("a + b = 1", {"b": 1}),
    ("a * 2 = 2", {"a": True}),
    ("a - 1 = 0", {"a": "1"}),
    ("-a = -1", {"a": "1"}),
    ("-a = -1", {"a": True}),
    ("a + 1.0 > 0", {"a": 10 ** 400}),     # overflow converting to float
    ("a * 2.0 > 0", {"a": 10 ** 400}),
])
def test_arithmetic_unknown(selector, props):
    assert truth(selector, **props) == "U"


def test_big_and_special_numbers():
    assert match("a * a > 1e300", a=1e200)   # inf
    assert match("a + 1 = 10000000000000000000001", a=10 ** 22)
    assert truth("a > 0", a=float("nan")) == "F"


# ---------------------------------------------------------------------------
# Logic and three-valued truth tables
# ---------------------------------------------------------------------------

TV = {"T": True, "F": False, "U": None}
AND_TABLE = {("T", "T"): "T", ("T", "F"): "F", ("T", "U"): "U",
             ("F", "T"): "F", ("F", "F"): "F", ("F", "U"): "F",
             ("U", "T"): "U", ("U", "F"): "F", ("U", "U"): "U"}
OR_TABLE = {("T", "T"): "T", ("T", "F"): "T", ("T", "U"): "T",
            ("F", "T"): "T", ("F", "F"): "F", ("F", "U"): "U",
            ("U", "T"): "T", ("U", "F"): "U", ("U", "U"): "U"}
NOT_TABLE = {"T": "F", "F": "T", "U": "U"}


def _operand(name, value):
    # three ways to produce each truth value: property cast, comparison, literal
    return [name, f"({name} = TRUE)", {"T": "TRUE", "F": "FALSE", "U": "NULL"}[value]]


@pytest.mark.parametrize("a, b", list(itertools.product("TFU", repeat=2)))
def test_and_or_truth_tables(a, b):
    props = {"p": TV[a], "q": TV[b]}
    for left, right in itertools.product(_operand("p", a), _operand("q", b)):
        assert truth(f"{left} AND {right}", **props) == AND_TABLE[a, b], (left, right)
        assert truth(f"{left} OR {right}", **props) == OR_TABLE[a, b], (left, right)


@pytest.mark.parametrize("a", "TFU")
def test_not_truth_table(a):
    for operand in _operand("p", a):
        assert truth(f"NOT {operand}", p=TV[a]) == NOT_TABLE[a]
        assert truth(f"NOT NOT {operand}", p=TV[a]) == a
        assert truth(f"NOT NOT NOT {operand}", p=TV[a]) == NOT_TABLE[a]


@pytest.mark.parametrize("values", list(itertools.product("TFU", repeat=4)))
def test_long_and_or_chains(values):
    props = {f"p{i}": TV[v] for i, v in enumerate(values)}
    names = list(props)
    exp_and = "F" if "F" in values else ("U" if "U" in values else "T")
    exp_or = "T" if "T" in values else ("U" if "U" in values else "F")
    assert truth(" AND ".join(names), **props) == exp_and
    assert truth(" OR ".join(names), **props) == exp_or


def test_unknown_comparison_in_logic():
    assert match("x = 1 OR y = 2", y=2)           # UNKNOWN OR TRUE
    assert not match("x = 1 AND y = 2", y=2)      # UNKNOWN AND TRUE
    assert truth("x = 1 AND y = 2", y=3) == "F"   # UNKNOWN AND FALSE
    assert truth("NOT (x = 1)") == "U"
    assert not match("NOT x = 1")


def test_constant_folding_in_logic():
    assert match("x = 1 AND TRUE", x=1)
    assert not match("x = 1 AND FALSE", x=1)
    assert match("x = 1 OR TRUE")
    assert truth("x = 1 OR FALSE") == "U"
    assert truth("TRUE AND TRUE AND x = 1") == "U"


# ---------------------------------------------------------------------------
# Precedence
# ---------------------------------------------------------------------------

def test_and_binds_tighter_than_or():
    assert match("a = 1 OR b = 1 AND c = 1", a=1, b=0, c=0)
    assert not match("(a = 1 OR b = 1) AND c = 1", a=1, b=0, c=0)


def test_not_binds_looser_than_comparison():
    # JMS/SQL precedence: NOT a = 1 is NOT (a = 1)
    assert match("NOT a = 1", a=2)
    assert not match("NOT a = 1", a=1)
    assert match("NOT a = 1 AND b = 2", a=2, b=2)
    assert not match("NOT a = 1 AND b = 2", a=2, b=3)
    assert match("NOT a BETWEEN 1 AND 3", a=5)
    assert match("NOT a LIKE 'x%'", a="yz")
    assert match("NOT a IN ('x')", a="y")
    assert match("NOT a IS NULL", a="y")


def test_not_binds_tighter_than_and_or():
    assert match("NOT a = 1 OR b = 1", a=1, b=1)
    assert not match("NOT (a = 1 OR b = 1)", a=1, b=1)


def test_arithmetic_precedence():
    assert match("a + 2 * 3 = 7", a=1)
    assert match("a * 2 + 3 = 5", a=1)
    assert match("a - 2 - 3 = -4", a=1)
    assert match("-a * 2 = -2", a=1)
    assert match("a + 2 > 2 AND a * 3 < 4", a=1)
    assert match("a = 1 + 1", a=2)


# ---------------------------------------------------------------------------
# BETWEEN
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("value, inside", [(0, False), (1, True), (2, True), (3, True), (4, False),
                                          (0.99, False), (1.0, True), (3.01, False)])
def test_between(value, inside):
    assert match("x BETWEEN 1 AND 3", x=value) is inside
    assert match("x NOT BETWEEN 1 AND 3", x=value) is not inside
    assert match("x BETWEEN lo AND hi", x=value, lo=1, hi=3) is inside
    assert match("x NOT BETWEEN lo AND hi", x=value, lo=1, hi=3) is not inside


def test_between_with_expressions_and_strings():
    assert match("x BETWEEN 1 + 1 AND 2 * 3", x=6)
    assert match("x + 1 BETWEEN 2 AND 3", x=1)
    assert match("s BETWEEN lo AND hi", s="b", lo="a", hi="c")  # properties: lexicographic
    assert match("s NOT BETWEEN lo AND hi", s="d", lo="a", hi="c")
    assert match("x BETWEEN -3 AND -1", x=-2)
    assert match("x BETWEEN 1 AND 3 AND y = 1", x=2, y=1)


def test_between_null_semantics():
    assert truth("x BETWEEN 1 AND 3") == "U"
    assert truth("x NOT BETWEEN 1 AND 3") == "U"
    # x >= lo AND x <= hi with lo UNKNOWN: decided by the other half
    assert truth("x BETWEEN lo AND 3", x=5) == "F"
    assert truth("x BETWEEN lo AND 3", x=2) == "U"
    assert truth("x NOT BETWEEN lo AND 3", x=5) == "T"
    assert truth("x NOT BETWEEN lo AND 3", x=2) == "U"
    assert truth("x BETWEEN 1 AND 3", x="abc") == "F"  # no number: FALSE, as ActiveMQ
    assert truth("x BETWEEN 1 AND 3", x=True) == "F"


# ---------------------------------------------------------------------------
# LIKE
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("pattern, yes, no", [
    ("abc", ["abc"], ["ab", "abcd", "ABC", "xabc"]),
    ("abc%", ["abc", "abcdef"], ["ab", "xabc"]),
    ("%abc", ["abc", "xxabc"], ["abcx"]),
    ("%abc%", ["abc", "xabcx", "abcabc"], ["ab", "acb"]),
    ("a%c", ["ac", "abc", "abbbc"], ["ab", "ca", "a"]),
    ("a%b%c", ["abc", "a-b-c", "abbc"], ["acb", "ab"]),
    ("%", ["", "anything"], []),
    ("%%", ["", "x"], []),
    ("_", ["a", "%"], ["", "ab"]),
    ("a_c", ["abc", "a.c", "a_c"], ["ac", "abbc"]),
    ("__%", ["ab", "abc"], ["a"]),
    ("%_", ["a", "abc"], [""]),
    ("", [""], ["a"]),
    # regex specials must be literal
    ("a.b%", ["a.b", "a.bc"], ["axb", "axbc"]),
    ("a*", ["a*"], ["a", "aa"]),
    ("(a|b)", ["(a|b)"], ["a", "b"]),
    ("[ab]+?$^\\d{2}", ["[ab]+?$^\\d{2}"], ["a", "ab12"]),
    ("%.txt", ["file.txt"], ["filextxt"]),
    # DOTALL: % and _ match line breaks
    ("a%b", ["a\nb", "a\r\nb"], ["a\n"]),
    ("a_b", ["a\nb"], ["a\n\nb"]),
])
def test_like(pattern, yes, no):
    sel = "s LIKE '" + pattern.replace("'", "''") + "'"
    not_sel = "s NOT LIKE '" + pattern.replace("'", "''") + "'"
    for s in yes:
        assert match(sel, s=s), (pattern, s)
        assert not match(not_sel, s=s), (pattern, s)
    for s in no:
        assert not match(sel, s=s), (pattern, s)
        assert match(not_sel, s=s), (pattern, s)


@pytest.mark.parametrize("pattern, escape, yes, no", [
    ("100!%", "!", ["100%"], ["100", "1000", "100!%"]),
    ("a!_b", "!", ["a_b"], ["axb"]),
    ("a!!b", "!", ["a!b"], ["a!!b"]),
    ("!%%", "!", ["%", "%abc"], ["abc"]),
    ("a!b", "!", ["a!b"], ["ab"]),          # escape before a normal char is literal
    ("ab!", "!", ["ab!"], ["ab"]),          # escape at the end is literal
    ("a\\_b", "\\", ["a_b"], ["axb"]),
    ("a''%", "'", ["a%"], ["ab"]),          # quote as escape character
    ("a%%", "%", ["a%"], ["ab"]),           # '%' escaping itself
    ("x_%", "_", ["x%"], ["xa"]),
])
def test_like_escape(pattern, escape, yes, no):
    sel = f"s LIKE '{pattern}' ESCAPE '{escape.replace(chr(39), chr(39) * 2)}'"
    for s in yes:
        assert match(sel, s=s), (sel, s)
    for s in no:
        assert not match(sel, s=s), (sel, s)


def test_like_unknown():
    assert truth("s LIKE 'a%'") == "U"
    assert truth("s NOT LIKE 'a%'") == "U"
    assert truth("s LIKE '1%'", s=10) == "U"
    assert truth("s LIKE 't%'", s=True) == "U"


def test_like_on_expression_and_literal():
    assert match("'abc' LIKE 'a%'")
    assert match("(s) LIKE 'a%'", s="ab")


# ---------------------------------------------------------------------------
# IN
# ---------------------------------------------------------------------------

def test_in():
    sel = "c IN ('red', 'green', 'blue')"
    assert match(sel, c="red")
    assert match(sel, c="blue")
    assert not match(sel, c="Red")
    assert not match(sel, c="")
    assert match("c NOT IN ('red', 'green')", c="blue")
    assert not match("c NOT IN ('red', 'green')", c="red")
    assert match("c IN ('single')", c="single")
    assert match("c IN ('it''s')", c="it's")


def test_in_null_is_unknown():
    assert truth("c IN ('a', 'b')") == "U"
    assert truth("c NOT IN ('a', 'b')") == "U"


@pytest.mark.parametrize("selector", ["n IN (1, 2, 3)", "n IN ('a', 1)", "n NOT IN (-2)"])
def test_in_lists_hold_strings_only(selector):
    """As ActiveMQ: a number in an IN list is a syntax error."""
    with pytest.raises(SelectorError, match="IN list"):
        compile_selector(selector)


def test_in_on_a_value_that_is_not_a_string_is_unknown():
    """As ActiveMQ: JMSPriority IN ('4') never matches, nor does a NOT IN."""
    assert truth("n IN ('1', '2')", n=2) == "U"
    assert truth("n NOT IN ('1', '2')", n=5) == "U"
    assert truth("n IN ('abc', 'def')", n=True) == "U"
    assert match("n IN ('1', '2')", n="2")  # a STOMP header is a string


# ---------------------------------------------------------------------------
# IS NULL
# ---------------------------------------------------------------------------

def test_is_null():
    assert match("x IS NULL")
    assert not match("x IS NULL", x="")
    assert not match("x IS NULL", x=0)
    assert not match("x IS NULL", x=False)
    assert match("x IS NOT NULL", x=0)
    assert not match("x IS NOT NULL")
    assert match("x - 1 IS NULL", x="a")
    assert match("x + 1 IS NOT NULL", x=1)
    assert match("(x = 1) IS NULL")
    assert match("x IS NULL AND y IS NOT NULL", y=1)
    assert match("x is not null", x=1)


# ---------------------------------------------------------------------------
# Lookup robustness
# ---------------------------------------------------------------------------

def test_lookup_exceptions_are_swallowed():
    def bad(name):
        raise KeyError(name)
    assert compile_selector("x = 1")(bad) is False


def test_unusual_lookup_values():
    import decimal
    import fractions

    class MyInt(int):
        pass

    class MyStr(str):
        pass

    assert match("x = 5", x=MyInt(5))
    assert match("x > 4", x=decimal.Decimal("4.5"))
    assert match("x < 1", x=fractions.Fraction(1, 2))
    assert match("x = 'a'", x=MyStr("a"))
    assert match("x IN ('a')", x=MyStr("a"))
    for weird in (b"a", [1], {"a": 1}, object(), 1j):
        for sel in ("x = 1", "x = 'a'", "x > 1", "x LIKE 'a'", "x IN ('a')", "x + 1 = 2",
                    "x", "x BETWEEN 1 AND 2", "x = y"):
            assert truth(sel, x=weird, y=weird) == "U", (sel, weird)
        assert match("x IS NOT NULL", x=weird)


# ---------------------------------------------------------------------------
# Syntax errors
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("selector", [
    "",
    "   ",
    "\n\t",
    "foo = ",
    "= 1",
    "a =",
    "a = = 1",
    "a == 1",
    "a != 1",
    "a = 'abc",
    "a = 'it''s",
    "'",
    "(a = 1",
    "((a = 1)",
    "a = 1)",
    ")",
    "()",
    "a = 1 b = 2",
    "a = 1 AND",
    "AND a = 1",
    "a = 1 OR OR b = 1",
    "a LIKE",
    "a LIKE b",
    "a LIKE 5",
    "a LIKE 'x' ESCAPE",
    "a LIKE 'x' ESCAPE ''",
    "a LIKE 'x' ESCAPE 'ab'",
    "a LIKE 'x' ESCAPE '!!'",
    "a NOT",
    "a NOT = 1",
    "a BETWEEN 1",
    "a BETWEEN 1 OR 2",
    "a BETWEEN AND 2",
    "a IN",
    "a IN ()",
    "a IN ('x'",
    "a IN ('x',)",
    "a IN ('x' 'y')",
    "a IN (b)",
    "a IN ('x', NULL)",
    "1 IN ('x')",
    "'a' IN ('x')",
    "a IS",
    "a IS NOT",
    "a IS TRUE",
    "a IS NOT 1",
    "a = NULL",
    "NULL = a",
    "a <> NULL",
    "a > NULL",
    "a > TRUE",
    "a > (b = 1)",
    "a < b < c",
    "a BETWEEN TRUE AND 2",
    "a BETWEEN 1 AND NULL",
    "5",
    "'abc'",
    "a + 1",
    "-a",
    "5 AND a = 1",
    "a = 1 OR 'x'",
    "NOT 5",
    "NOT",
    "a = 1 #",
    "a = 1 ;",
    "a & b",
    "a | b",
    "a = 1 && b = 2",
    "a ! b",
    "a = @",
    "a = 1.2.3",
    "a = 08",
    "a = 0x",
    "a = 12abc",
    "a = 1e",
    "a.b = 1",
    "a = \"x\"",
    "a = [1]",
    "a = {1}",
    "XPATH '//foo'",
    "XQUERY 'x'",
    "xpath = 1",
    "a = 1 /* x",
    "a = 1 + * 2",
    "a * = 2",
    "a = 1 AND NOT",
    "TRUE FALSE",
    "a IS NULL NULL",
    "a = " + "9" * 5000,
])
def test_syntax_errors(selector):
    with pytest.raises(SelectorError) as info:
        compile_selector(selector)
    message = str(info.value)
    assert message.startswith("Invalid selector ")
    assert "position" in message
    assert "\n" not in message
    assert isinstance(info.value.position, int)


def test_error_message_format():
    with pytest.raises(SelectorError) as info:
        compile_selector("foo = ")
    assert str(info.value) == (
        "Invalid selector 'foo = ': expected a value but found end of selector at position 6")
    assert info.value.position == 6
    assert info.value.selector == "foo = "

    with pytest.raises(SelectorError) as info:
        compile_selector("a = 'oops")
    assert "unterminated string" in str(info.value)
    assert info.value.position == 4

    with pytest.raises(SelectorError) as info:
        compile_selector("(a = 1")
    assert "')'" in str(info.value)

    with pytest.raises(SelectorError) as info:
        compile_selector("a = 1 b")
    assert "unexpected 'b'" in str(info.value)
    assert info.value.position == 6

    with pytest.raises(SelectorError) as info:
        compile_selector("a LIKE 'x' ESCAPE 'ab'")
    assert "ESCAPE" in str(info.value)

    with pytest.raises(SelectorError) as info:
        compile_selector("a != 1")
    assert "<>" in str(info.value)

    with pytest.raises(SelectorError) as info:
        compile_selector("")
    assert "empty" in str(info.value)


def test_error_message_is_one_line_and_bounded():
    with pytest.raises(SelectorError) as info:
        compile_selector("a = 1\nAND\n" + "b" * 1000 + " c")
    message = str(info.value)
    assert "\n" not in message
    assert len(message) < 400


def test_deep_nesting_is_a_selector_error():
    for depth in (100, 1000, 20000):
        with pytest.raises(SelectorError):
            compile_selector("(" * depth + "a = 1" + ")" * depth)
    with pytest.raises(SelectorError):
        compile_selector("(" * 20000)
    with pytest.raises(SelectorError):
        compile_selector("a" + " = TRUE" * 5000)


def test_moderate_nesting_is_fine():
    sel = "(" * 30 + "a = 1" + ")" * 30
    assert match(sel, a=1)
    sel = "NOT (" * 30 + "a = 1" + ")" * 30
    assert match(sel, a=1)


def test_long_flat_chains_are_fine():
    n = 3000
    assert match(" OR ".join(f"a = {i}" for i in range(n)), a=n - 1)
    assert match(" AND ".join(f"a <> {i}" for i in range(n)), a=-1)
    assert match(" + ".join(["a"] * n) + f" = {n}", a=1)
    assert match("NOT " * 5001 + "a = 1", a=2)
    assert match("a = " + "- " * 5000 + "1", a=1)
    assert match("x IN (" + ", ".join(f"'v{i}'" for i in range(n)) + ")", x="v2999")


# ---------------------------------------------------------------------------
# Property-based tests
# ---------------------------------------------------------------------------

FRAGMENTS = [
    "a", "b", "c", "JMSType", "x1", "$y", "_z", "=", "<>", "<", ">", "<=", ">=", "+", "-", "*",
    "/", "%", "(", ")", ",", "AND", "or", "NOT", "BETWEEN", "like", "ESCAPE", "IN", "IS", "NULL",
    "TRUE", "false", "'s'", "'%x_'", "''", "'", "'!'", "1", "0", "-3", "2.5", ".5", "1e3", "0x1F",
    "017", "10L", "--", "/*", "*/", "\n", "!=", "==", "!", ";", "XPATH", "'a''b'",
]

VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.integers(), st.floats(allow_nan=True),
    st.sampled_from(["", "1", "10", "-2.5", "true", "FALSE", "abc", "x%_", "1e3", "NaN", "a\nb"]),
    st.text(max_size=5),
)
LOOKUPS = st.dictionaries(st.sampled_from(["a", "b", "c", "JMSType", "x1", "$y", "_z"]), VALUES)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=12).map(" ".join), LOOKUPS)
def test_random_fragments_compile_or_raise(text, props):
    try:
        m = compile_selector(text)
    except SelectorError as e:
        assert "\n" not in str(e)
        return
    assert m(props.get) in (True, False)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_random_text_compiles_or_raises(text):
    try:
        m = compile_selector(text)
    except SelectorError:
        return
    assert m({}.get) in (True, False)


# A generator of syntactically valid selectors, to exercise evaluation.
_idents = st.sampled_from(["a", "b", "c"])
_num_lits = st.sampled_from(["0", "1", "-1", "2.5", "10", "0x0A", "1e1", "3L"])
_str_lits = st.sampled_from(["'10'", "'abc'", "'true'", "''", "'a''b'", "'1e1'"])
_values = st.recursive(
    st.one_of(_idents, _num_lits, _str_lits),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "%"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"),
        inner.map(lambda v: f"-{v}"),
    ),
    max_leaves=4,
)


def _conditions():
    comparisons = st.one_of(
        st.tuples(_values, st.sampled_from(["=", "<>", "<", ">", "<=", ">="]), _values).map(
            " ".join),
        st.tuples(_values, st.sampled_from(["BETWEEN", "NOT BETWEEN"]), _values, _values).map(
            lambda t: f"{t[0]} {t[1]} {t[2]} AND {t[3]}"),
        st.tuples(_values, st.sampled_from(["LIKE", "NOT LIKE"]),
                  st.sampled_from(["'a%'", "'%1%'", "'_'", "'1!%' ESCAPE '!'", "'%'"])).map(
            " ".join),
        st.tuples(_idents, st.sampled_from(["IN", "NOT IN"]),
                  st.sampled_from(["('abc', 'x')", "(1, 10)", "('10', 2.5)"])).map(" ".join),
        st.tuples(_values, st.sampled_from(["IS NULL", "IS NOT NULL"])).map(" ".join),
        _idents,
        st.sampled_from(["TRUE", "FALSE", "NULL"]),
    )
    return st.recursive(
        comparisons,
        lambda inner: st.one_of(
            st.tuples(inner, st.sampled_from(["AND", "OR"]), inner).map(
                lambda t: f"({t[0]} {t[1]} {t[2]})"),
            inner.map(lambda c: f"NOT ({c})"),
            st.tuples(inner, st.sampled_from(["=", "<>"]), inner).map(
                lambda t: f"({t[0]}) {t[1]} ({t[2]})"),
        ),
        max_leaves=6,
    )


def _compiles(selector):
    try:
        compile_selector(selector)
    except SelectorError:  # e.g. "(NULL) = (a)": NULL literals cannot be compared
        return False
    return True


CONDITIONS = _conditions().filter(_compiles)
EVAL_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 12), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["10", "abc", "true", "a1", "", "1e1", "-0", "Infinity"]),
    st.integers(min_value=-(10 ** 400), max_value=10 ** 400),
)
EVAL_LOOKUPS = st.dictionaries(st.sampled_from(["a", "b", "c"]), EVAL_VALUES)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CONDITIONS, CONDITIONS, EVAL_LOOKUPS)
def test_generated_selectors_evaluate_without_error(p, q, props):
    lookup = props.get
    m_p = compile_selector(p)
    m_not_p = compile_selector(f"NOT ({p})")
    r_p = m_p(lookup)
    r_not_p = m_not_p(lookup)
    assert r_p in (True, False) and r_not_p in (True, False)
    assert not (r_p and r_not_p)
    # three-valued De Morgan and commutativity must hold exactly
    assert (compile_selector(f"NOT (({p}) AND ({q}))")(lookup)
            == compile_selector(f"NOT ({p}) OR NOT ({q})")(lookup))
    assert (compile_selector(f"NOT (({p}) OR ({q}))")(lookup)
            == compile_selector(f"NOT ({p}) AND NOT ({q})")(lookup))
    assert (compile_selector(f"({p}) AND ({q})")(lookup)
            == compile_selector(f"({q}) AND ({p})")(lookup))
    assert (compile_selector(f"({p}) OR ({q})")(lookup)
            == compile_selector(f"({q}) OR ({p})")(lookup))
    # "p OR NOT p" is TRUE exactly when p is not UNKNOWN
    assert compile_selector(f"({p}) OR NOT ({p})")(lookup) == (r_p or r_not_p)


@settings(max_examples=100, deadline=None)
@given(st.integers(-20, 20), st.integers(-20, 20).filter(lambda v: v != 0))
def test_java_integer_division_and_remainder(a, b):
    q = int(a / b)  # truncation toward zero
    assert match(f"a / b = {q}", a=a, b=b)
    assert match(f"a % b = {a - b * q}", a=a, b=b)
    assert match(f"a % b = {math.fmod(a, b)}", a=float(a), b=b)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab%_.*\\![]()^$?+{}|\n"), max_size=8),
       st.text(alphabet=st.sampled_from("ab%_.*\\![]()^$?+{}|\n"), max_size=8))
def test_like_against_reference(pattern, s):
    import re as _re
    regex = "".join(".*" if ch == "%" else "." if ch == "_" else _re.escape(ch) for ch in pattern)
    expected = _re.fullmatch(regex, s, _re.DOTALL) is not None
    sel = "s LIKE '" + pattern.replace("'", "''") + "'"
    assert match(sel, s=s) is expected
