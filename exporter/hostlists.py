"""Slurm host lists (``nodeUsed``), read as python-hostlist's ``expand_hostlist`` reads them. Pure.

Terms between top-level commas; in a term, text and bracket groups (one level), each group a comma list of
numbers as written and ranges padded to the width of their low end; a node named twice counts once. Two
differences from the library, on purpose: a list may write up to MAX_LISTED names in all, repeats included (the
library refuses a range or a term of more than 100,000, and bounds no whole list); and a value with a line
break inside is not a host list.
"""

from __future__ import annotations

import re
from itertools import product
from math import prod

MAX_LISTED = 200_000  # names a host list may write, repeats included; one that writes more is not a host list
_BRACKETS = re.compile(r"[^\[\]]*(?:\[[^\[\]]*\][^\[\]]*)*")  # pairs of brackets, none inside another
_TOP_COMMA = re.compile(r",(?![^\[\]]*\])")  # a comma not inside brackets
_GROUP = re.compile(r"(\[[^\]]*\])")
_NUMBER = re.compile(r"[0-9]+")
_RANGE = re.compile(r"([0-9]+)-([0-9]+)")


def _terms(text: str) -> list[str] | None:
    """The terms between top-level commas; None when brackets nest or do not pair."""
    if _BRACKETS.fullmatch(text) is None:
        return None
    return [term for term in _TOP_COMMA.split(text) if term]


def _group(text: str) -> list[str] | None:
    """What one bracket group (without its brackets) writes; None when it is not numbers and ranges."""
    written: list[str] = []
    for alternative in text.split(","):
        if _NUMBER.fullmatch(alternative):
            written.append(alternative)
            continue
        bounds = _RANGE.fullmatch(alternative)
        if bounds is None:
            return None
        try:
            low, high = int(bounds[1]), int(bounds[2])
        except ValueError:  # more digits than int() reads
            return None
        if high < low or high - low >= MAX_LISTED:
            return None
        width = len(bounds[1])
        written += [str(i).zfill(width) for i in range(low, high + 1)]
    return written


def expand(text: str) -> list[str] | None:
    """The distinct names ``text`` writes, in order; None when it is not a host list, or writes more than
    MAX_LISTED names."""
    if "\n" in text:
        return None
    terms = _terms(text)
    if terms is None:
        return None
    names: list[str] = []
    for term in terms:
        if "[" not in term:
            names.append(term)
            continue
        pieces: list[list[str]] = []
        for i, piece in enumerate(_GROUP.split(term)):
            written = _group(piece[1:-1]) if i % 2 else [piece]
            if written is None:
                return None
            pieces.append(written)
        if len(names) + prod(map(len, pieces)) > MAX_LISTED:
            return None
        names += map("".join, product(*pieces))
    if len(names) > MAX_LISTED:
        return None
    return list(dict.fromkeys(names))
