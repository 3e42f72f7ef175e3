"""Slurm host lists (``nodeUsed``), read as python-hostlist reads them and counted without being listed. Pure.

The syntax is python-hostlist's ``expand_hostlist``: terms between top-level commas, one level of brackets,
alternatives within them (a number as written, or a range padded to the width of its low end), duplicates
named once. The tests hold this module equal to the library, with three differences, on purpose:
- a list is never expanded to be counted, so that one the library refuses as too large (``n[1-10000000]``) is
  counted all the same, up to MAX_COUNT; and names are listed only as far as asked;
- a value with a line break inside is not a host list (after a bracket the library drops what follows one);
- a list built to cost (terms that overlap, or names repeated, beyond a million steps of work) is given up as
  not a host list, where the library would list it all, in minutes.

To count without listing, a name is cut into runs of digits and runs of other characters: two names are the
same when their runs are. A term is then a box, one coordinate per digit run (the set of digit strings the
term writes there), under a skeleton (its other runs in order); a list is a union of boxes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from itertools import pairwise
from math import prod
from typing import Any

MAX_COUNT = 10**9  # nodes one host list may name; a list naming more is not one

Alternative = str | tuple[int, int, int]  # a number as written, or (low, high, the width of low as written)
Span = tuple[int, int]  # keys from, to (inclusive)
Keys = tuple[Span, ...]  # sorted, disjoint, not touching: the keys of a set of digit strings
Box = tuple[Keys, ...]  # one coordinate per digit run of a name
_RUNS = re.compile(r"[0-9]+|[^0-9]+")
_DIGITS = "0123456789"
_LONG = 600  # digits: int() reads this many under any limit Python allows (640 at least)
_MAX_LISTED = 100_000  # strings listed to key one digit run (python-hostlist's own limit on a term)
_MAX_STEPS = 1_000_000  # work on terms that overlap, or names that repeat, before a list is given up


class _Costly(Exception):
    """A list built to cost more than any job's nodes: given up as not a host list."""


class _NotAList(Exception):
    """A group that is not numbers and ranges."""


def _key(digits: str) -> int:
    """An int that tells digit strings apart: "1" and the digits, up to _LONG of them, so that the numbers written
    one length are an interval; a longer string by its bytes (below zero, where no other key is)."""
    if len(digits) <= _LONG:
        return int("1" + digits)
    return -1 - int.from_bytes(digits.encode(), "big")


def _merged(spans: list[Span]) -> Keys:
    if len(spans) == 1:
        return (spans[0],)
    out: list[Span] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1] + 1:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return tuple(out)


def _size(keys: Keys) -> int:
    return sum(b - a + 1 for a, b in keys)


def _group_size(alts: list[Alternative]) -> int:
    """How many distinct strings a group writes (one range: as many as its numbers)."""
    if len(alts) == 1 and isinstance(alts[0], tuple):
        return alts[0][1] - alts[0][0] + 1
    return _size(_run_keys([alts]))


def _alternatives(text: str) -> list[Alternative] | None:
    """A group's alternatives, or None when one is not a number or a range (ASCII digits only)."""
    alts: list[Alternative] = []
    for alt in text.split(","):
        low, dash, high = alt.partition("-")
        if not (low.isdigit() and low.isascii()):
            return None
        if not dash:
            alts.append(low)
            continue
        if not (high.isdigit() and high.isascii()):
            return None
        lo, hi = int(low), int(high)  # ValueError past int()'s digits, as in python-hostlist
        if hi < lo or hi - lo >= MAX_COUNT:
            return None
        alts.append((lo, hi, len(low)))
    return alts


def _distinct(alts: list[Alternative], limit: int, steps: list[int]) -> list[str]:
    """The first ``limit`` distinct strings of a group (a range's numbers are distinct: ``limit`` of it will do)."""
    out: dict[str, None] = {}
    for alt in alts:
        if isinstance(alt, str):
            out[alt] = None
        else:
            lo, hi, width = alt
            number = f"%0{width}d"
            strings = [number % n for n in range(lo, min(hi, lo + limit - 1) + 1)]
            steps[0] -= len(strings)
            if steps[0] < 0:
                raise _Costly
            out.update(dict.fromkeys(strings))
        if len(out) >= limit:
            break
    return list(out)[:limit]


def _pieces(alts: list[Alternative]) -> list[tuple[int, int, int, str]]:
    """A group by length: (length, low, high, "") for a range's numbers written that long, (length, 0, 0, the
    number as written) for a number."""
    out = []
    for alt in alts:
        if isinstance(alt, str):
            out.append((len(alt), 0, 0, alt))
            continue
        lo, hi, width = alt
        digits = len(str(lo))
        if digits <= width:  # the numbers up to ``width`` digits are padded to it
            out.append((width, lo, min(hi, 10**width - 1), ""))
            digits = width + 1
        for d in range(digits, len(str(hi)) + 1):
            out.append((d, max(lo, 10 ** (d - 1)), min(hi, 10**d - 1), ""))
    return out


def _run_keys(parts: list[list[Alternative]]) -> Keys:
    """The keys of the digit strings that a run of consecutive groups and digit literals (``[s]``) writes: each
    string of the parts before the last, then the last's numbers as intervals behind it."""
    *heads, last = parts
    if not heads and len(last) == 1:
        alt = last[0]
        if isinstance(alt, str):
            return ((_key(alt),) * 2,)
    prefixes = [""]
    for part in heads:
        prefixes = [p + s for p in prefixes for s in _distinct(part, _MAX_LISTED + 1, [_MAX_LISTED + 1])]
        if len(prefixes) > _MAX_LISTED:
            raise _Costly
    spans: list[Span] = []
    listed = 0
    for length, lo, hi, written in _pieces(last):
        for p in prefixes:
            if written:
                spans.append((_key(p + written),) * 2)
            elif len(p) + length <= _LONG:
                base = _key(p) * 10**length  # the key of p and ``length`` zeros
                spans.append((base + lo, base + hi))
            else:  # too long to be keyed by value: keyed string by string
                listed += hi - lo + 1
                if listed > _MAX_LISTED:
                    raise _Costly
                spans += [(k, k) for k in (_key(p + str(n).zfill(length)) for n in range(lo, hi + 1))]
    return _merged(spans)


class _Term:
    """One term with brackets: its literals and groups, L0 [g1] L1 ... [gn] Ln."""

    def __init__(self, literals: list[str], groups: list[list[Alternative]]) -> None:
        self.literals = literals
        self.groups = groups

    def count(self) -> int:
        """How many distinct names the term alone gives."""
        lits, last = self.literals, len(self.groups) - 1
        for i in range(last + 1):
            before, after = lits[i][-1:], lits[i + 1][:1]
            if (before in _DIGITS if before else i > 0) or (after in _DIGITS if after else i < last):
                return prod(_size(k) for k in self.box()[1])
        # Every group between non-digits: each its own digit run, so the names are the product of the groups.
        return prod(map(_group_size, self.groups))

    def box(self) -> tuple[tuple[str, ...], Box]:
        """(skeleton, box): the non-digit runs in order (each digit run as ""), and each digit run's keys."""
        skeleton: list[str] = []
        box: list[Keys] = []
        run: list[list[Alternative]] = []
        for i, lit in enumerate(self.literals):
            for text in _RUNS.findall(lit):
                if text[0] in _DIGITS:
                    run.append([text])
                    continue
                if run:
                    skeleton.append("")
                    box.append(_run_keys(run))
                    run = []
                skeleton.append(text)
            if i < len(self.groups):
                run.append(self.groups[i])
        if run:
            skeleton.append("")
            box.append(_run_keys(run))
        return tuple(skeleton), tuple(box)

    def blocks(self, limit: int, steps: list[int]) -> Iterator[list[str]]:
        """Its names in python-hostlist's order (the first group varies slowest), in blocks, as far as the first
        ``limit`` distinct ones go (repeats may be among them).

        Built from the right, as python-hostlist does: what follows the first group is listed once, and only its
        first ``limit`` distinct endings, since behind one head distinct endings make distinct names."""
        lits, groups = self.literals, self.groups
        endings = [lits[-1]]
        for lit, alts in zip(reversed(lits[1:-1]), reversed(groups[1:])):
            strings, per_block = _distinct(alts, limit, steps), max(1, 1024 // len(endings))
            longer: dict[str, None] = {}
            for start in range(0, len(strings), per_block):
                block = [lit + s + e for s in strings[start : start + per_block] for e in endings]
                longer.update(dict.fromkeys(block))
                steps[0] -= len(block)
                if steps[0] < 0:
                    raise _Costly
                if len(longer) >= limit:
                    break
            endings = list(longer)[:limit]
        head, per_block = lits[0], max(1, 1024 // len(endings))
        for alt in groups[0]:
            if isinstance(alt, str):
                yield [head + alt + e for e in endings]
                continue
            lo, hi, width = alt
            number = head.replace("%", "%%") + f"%0{width}d"  # one formatting a name, as python-hostlist does
            single = number + endings[0].replace("%", "%%") if len(endings) == 1 else ""
            for start in range(lo, hi + 1, per_block):
                numbers = range(start, min(start + per_block, hi + 1))
                if single:
                    yield [single % n for n in numbers]
                else:
                    yield [h + e for h in [number % n for n in numbers] for e in endings]


def _union(boxes: list[Box], dim: int, steps: list[int]) -> int:
    """How many points the boxes cover together, from coordinate ``dim`` on: a sweep along it, the boxes over
    each stretch counted on the coordinates after it."""
    if len(boxes) == 1:
        return prod(_size(c) for c in boxes[0][dim:])
    if dim == len(boxes[0]):
        return 1
    events = sorted(e for i, box in enumerate(boxes) for a, b in box[dim] for e in ((a, i, True), (b + 1, i, False)))
    steps[0] -= len(events)
    if steps[0] < 0:
        raise _Costly
    total, at = 0, 0
    active: set[int] = set()
    known: dict[frozenset[int], int] = {}
    for pos, i, opens in events:
        if active and pos > at:
            over = frozenset(active)
            if over not in known:
                known[over] = _union([boxes[j] for j in sorted(over)], dim + 1, steps)
            total += (pos - at) * known[over]
        if opens:
            active.add(i)
        else:
            active.discard(i)
        at = pos
    return total


class HostList:
    """A host list, parsed: its distinct terms, a name without brackets as written."""

    def __init__(self, terms: list[str | _Term]) -> None:
        self.terms = terms

    def count(self) -> int | None:
        """How many distinct nodes it names, or None when that is more than MAX_COUNT or costs too much to tell."""
        terms = self.terms
        if not terms:
            return 0
        try:
            if len(terms) == 1:
                count = 1 if isinstance(terms[0], str) else terms[0].count()
            elif self._apart():
                count = sum(1 if isinstance(t, str) else t.count() for t in terms)
            else:
                by_skeleton: dict[tuple[str, ...], set[Box]] = {}
                for term in terms:
                    term = term if isinstance(term, _Term) else _Term([term], [])
                    skeleton, box = term.box()
                    by_skeleton.setdefault(skeleton, set()).add(box)
                steps = [_MAX_STEPS]
                count = sum(_union(list(boxes), 0, steps) for boxes in by_skeleton.values())
        except (_Costly, RecursionError):  # Recursion: thousands of digit runs alike in overlapping terms
            return None
        return count if count <= MAX_COUNT else None

    def _apart(self) -> bool:
        """Whether no two terms can name one node: every name of a term starts with the term's text up to its
        first bracket, and no such head starts another (sorted, a head that starts another is next to one)."""
        heads = sorted(t if isinstance(t, str) else t.literals[0] for t in self.terms)
        return all(not b.startswith(a) for a, b in pairwise(heads))

    def names(self, limit: int) -> list[str] | None:
        """Its first ``limit`` distinct nodes in order, or None for a list that names the same ones over and over
        (built to cost, not a job's nodes)."""
        names: dict[str, None] = {}
        steps = [_MAX_STEPS + limit]
        try:
            for term in self.terms:
                if len(names) >= limit:
                    break
                if isinstance(term, str):
                    names[term] = None
                    continue
                for block in term.blocks(limit, steps):
                    steps[0] -= len(block)
                    if steps[0] < 0:
                        raise _Costly
                    names.update(dict.fromkeys(block))  # past ``limit`` at most by a block, cut below
                    if len(names) >= limit:
                        break
        except _Costly:
            return None
        return list(names)[:limit]


_EMPTY = HostList([])


def parse(value: Any) -> HostList | None:
    """The host list ``value`` is (null or blank: one naming nothing), or None when it is not one."""
    if value is None:
        return _EMPTY
    if value.__class__ is not str:
        return None
    text = value.strip()
    if not text:
        return _EMPTY
    if "\n" in text:
        return None
    if "[" not in text:
        if "]" in text:
            return None
        return HostList([text] if "," not in text else [t for t in dict.fromkeys(text.split(",")) if t])
    try:
        terms = _terms(text)
    except (_NotAList, ValueError):  # ValueError: a number past int()'s digits, where python-hostlist fails too
        return None
    return None if terms is None else HostList(terms)


def _terms(text: str) -> list[str | _Term] | None:
    """The distinct terms of a list with brackets, or None when its brackets are unbalanced or nested, or a group
    is not numbers and ranges. One pass: each "[" opens a group that the next "]" closes; the text between groups
    is literals, which top-level commas cut into terms."""
    pieces = text.split("[")
    if "]" in pieces[0]:
        return None
    if len(pieces) == 2 and "," not in pieces[0]:  # most lists with brackets: one group, "h04r3n[01-04,07]"
        group, close, lit = pieces[1].partition("]")
        if close and "]" not in lit and "," not in lit:
            alts = _alternatives(group)
            return None if alts is None else [_Term([pieces[0], lit], [alts])]
    terms: dict[tuple[str, ...], str | _Term] = {}  # by the term's text: a term repeated names nothing new
    lits: list[str] = []  # the term so far: literals and groups, each group's text after its literal
    for i, piece in enumerate(pieces):
        if i == 0:
            lit = piece
        else:
            group, close, lit = piece.partition("]")
            if not close or "]" in lit:
                return None
            lits.append(group)
        if "," in lit:
            first, *names, lit = lit.split(",")
            _end(terms, [*lits, first])
            for name in names:
                if name:
                    terms.setdefault((name,), name)
            lits = []
        lits.append(lit)
    _end(terms, lits)
    return list(terms.values())


def _end(terms: dict[tuple[str, ...], str | _Term], parts: list[str]) -> None:
    """Add the term of ``parts`` (literal, group, literal, ... literal) unless it is there; _NotAList for a bad
    group."""
    if len(parts) == 1:
        if parts[0]:
            terms.setdefault((parts[0],), parts[0])
        return
    key = tuple(parts)
    if key not in terms:
        groups = []
        for text in parts[1::2]:
            alts = _alternatives(text)
            if alts is None:
                raise _NotAList
            groups.append(alts)
        terms[key] = _Term(parts[0::2], groups)
