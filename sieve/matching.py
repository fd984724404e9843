"""Comparators (RFC 4790, RFC 5228 §2.7.3) and match types (RFC 5228 §2.7.1, RFC 5231,
draft-ietf-sieve-regex). Pure.

Implementation notes
--------------------
- i;ascii-casemap folds ASCII letters only, as RFC 4790 §9.2 says; i;octet compares
  the UTF-8 octets; i;ascii-numeric compares the leading digits as a number, and a
  value without leading digits is positive infinity (RFC 4790 §9.1.1).
- :matches translates the wildcards to a regular expression; each "*" matches as
  little as possible, so with several the leftmost ones are short and the last takes
  the rest, and "?" one character. The captured texts are those of the original
  value (folding ASCII case keeps every index), for RFC 5229 match variables.
- :regex uses the `regex` module with a time limit per match (REGEX_TIMEOUT), so a
  pattern that backtracks without end fails the script instead of stalling delivery.
"""
import math
import re

import regex

REGEX_TIMEOUT = 0.25  # seconds for one match (a seam for tests)
MAX_PATTERN = 4096  # characters in a :matches or :regex key


class RegexError(Exception):
    """A :regex key that is not a valid expression, or one that ran too long."""


_ASCII_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold(text, comparator):
    return text.translate(_ASCII_FOLD) if comparator == "i;ascii-casemap" else text


def _numeric(text):
    digits = re.match(r"[0-9]*", text).group()
    return int(digits) if digits else math.inf


def _ordered(text, comparator):
    if comparator == "i;ascii-numeric":
        return _numeric(text)
    return fold(text, comparator).encode("utf-8", "surrogatepass")


def compare(left, right, comparator):
    """-1, 0 or 1: how `left` orders against `right` under the comparator."""
    a, b = _ordered(left, comparator), _ordered(right, comparator)
    return (a > b) - (a < b)


def relation_holds(relation, order):
    return {
        "gt": order > 0, "ge": order >= 0, "lt": order < 0, "le": order <= 0, "eq": order == 0, "ne": order != 0,
    }[relation.lower()]


_wildcard_cache = {}


def _wildcard_regex(pattern):
    compiled = _wildcard_cache.get(pattern)
    if compiled is not None:
        return compiled
    parts = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            parts.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if char == "*":
            parts.append("(.*?)")
        elif char == "?":
            parts.append("(.)")
        else:
            parts.append(re.escape(char))
        i += 1
    compiled = re.compile("".join(parts), re.DOTALL)
    if len(_wildcard_cache) > 1000:
        _wildcard_cache.clear()
    _wildcard_cache[pattern] = compiled
    return compiled


_regex_cache = {}


def compile_regex(pattern, comparator):
    """The compiled :regex key; raises RegexError."""
    key = (pattern, comparator)
    compiled = _regex_cache.get(key)
    if compiled is not None:
        return compiled
    if len(pattern) > MAX_PATTERN:
        raise RegexError(f"a regular expression is at most {MAX_PATTERN} characters")
    flags = regex.DOTALL | regex.VERSION0
    if comparator == "i;ascii-casemap":
        flags |= regex.IGNORECASE | regex.ASCII
    try:
        compiled = regex.compile(pattern, flags)
    except (regex.error, OverflowError, RecursionError, ValueError) as error:
        raise RegexError(str(error).split(" at position")[0][:100]) from None
    if len(_regex_cache) > 1000:
        _regex_cache.clear()
    _regex_cache[key] = compiled
    return compiled


def match(value, key, match_type, comparator, relation=None):
    """(matched, captures) for one value against one key.

    `captures` is a list of strings for the match variables (RFC 5229 §3.2: ${0} is
    the whole value, then one per wildcard or group), or None when the match type
    sets none.
    """
    if match_type == ":is":
        if comparator == "i;ascii-numeric":
            return _numeric(value) == _numeric(key), None
        return fold(value, comparator) == fold(key, comparator), None
    if match_type == ":contains":
        return fold(key, comparator) in fold(value, comparator), None
    if match_type == ":matches":
        if len(key) > MAX_PATTERN:
            raise RegexError(f"a :matches key is at most {MAX_PATTERN} characters")
        found = _wildcard_regex(fold(key, comparator)).fullmatch(fold(value, comparator))
        if not found:
            return False, None
        return True, [value] + [value[start:end] for start, end in (found.span(i) for i in range(1, found.re.groups + 1))]
    if match_type == ":regex":
        compiled = compile_regex(key, comparator)
        try:
            found = compiled.search(value, timeout=REGEX_TIMEOUT)
        except TimeoutError:
            raise RegexError("a regular expression took too long") from None
        if not found:
            return False, None
        return True, [found.group(0)] + [g or "" for g in found.groups()]
    if match_type == ":value":
        return relation_holds(relation, compare(value, key, comparator)), None
    raise ValueError(f"unknown match type {match_type}")
