"""The usage fields of a row: run times in seconds, and Slurm host lists counted and listed exactly as
python-hostlist reads them."""

from __future__ import annotations

import string
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import hostlist
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from exporter.rows import (
    INVALID,
    MAX_LISTED,
    MAX_NODES,
    MAX_RUN_SECONDS,
    NOT_STARTED,
    node_count,
    node_names,
    run_seconds,
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Run times


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("2-00:00:58", 2 * 86_400 + 58),
        ("1-23:59:59", 86_400 + 23 * 3600 + 59 * 60 + 59),
        ("0-00:00:00", 0),
        ("00:00:58", 58),
        ("10:20:30", 10 * 3600 + 20 * 60 + 30),
        ("05:30", 5 * 60 + 30),
        ("0:00", 0),
        ("1-2:3:4", 86_400 + 2 * 3600 + 3 * 60 + 4),  # unpadded fields
        ("100:00:00", 100 * 3600),  # hours past a day without a day count, as PBS writes them
        ("75:00", 75 * 60),  # the leading field takes any number of its unit
        (" 01:00 ", 60),
        ("\t3:00\n", 180),
        ("99999-23:59:59", 99_999 * 86_400 + 86_399),
        ("2399999:59:59", 2_399_999 * 3600 + 3599),
        ("143999999:59", 143_999_999 * 60 + 59),
    ],
)
def test_run_times_in_each_format_seen_are_seconds(value: str, seconds: int) -> None:
    assert run_seconds(value) == seconds


def test_the_longest_run_time_is_99999_days_and_a_second_less() -> None:
    assert MAX_RUN_SECONDS == 99_999 * 86_400 + 86_399
    assert run_seconds("99999-23:59:59") == MAX_RUN_SECONDS
    assert run_seconds("100000-00:00:00") == INVALID
    assert run_seconds("2400000:00:00") == INVALID
    assert run_seconds("144000000:00") == INVALID


@pytest.mark.parametrize("value", [None, "", "   ", "\t\n"])
def test_a_null_or_blank_run_time_is_not_started(value: Any) -> None:
    assert run_seconds(value) is NOT_STARTED is None


@pytest.mark.parametrize(
    "value",
    [
        "00:60",  # seconds past 59
        "00:75:00",  # minutes past 59 after an hour count
        "1-24:00:00",  # hours past 23 after a day count
        "1:005:00",
        "1-05:30",  # D-MM:SS is not a format
        "1-05",
        "2-00:00",
        "1-",
        "30",
        ":30",
        "01:",
        "1:2:3:4",
        "1-1-00:00:00",
        "-01:00",
        "01:-1",
        "01 :00",
        "01: 00",
        "1 - 00:00:00",
        "１２:００",  # fullwidth digits
        "12：00",  # a fullwidth colon
        "٣:٠٠",  # Arabic-Indic digits
        "²:00",
        "0x10:00",
        "1e3:00",
        "1.5:00",
        "INVALID",
        "UNLIMITED",
        "\ud800",
        "9" * 5000 + ":00",
        3600,
        0,
        -1,
        1.5,
        float("nan"),
        True,
        False,
        [],
        {},
        ["01:00"],
        b"01:00",
    ],
)
def test_values_that_are_not_run_times_are_invalid(value: Any) -> None:
    assert run_seconds(value) == INVALID == -1


def _clock(seconds: int, shape: str, pad: bool) -> str:
    """``seconds`` written in one of the three shapes, fields zero-padded or not."""
    two = "{:02d}" if pad else "{:d}"
    if shape == "D-HH:MM:SS":
        days, rest = divmod(seconds, 86_400)
        return f"{days}-" + ":".join(two.format(f) for f in (rest // 3600, rest // 60 % 60, rest % 60))
    if shape == "HH:MM:SS":
        return f"{seconds // 3600:02d}:" + ":".join(two.format(f) for f in (seconds // 60 % 60, seconds % 60))
    return f"{seconds // 60:02d}:" + two.format(seconds % 60)


@SETTINGS
@given(
    seconds=st.integers(0, MAX_RUN_SECONDS) | st.sampled_from([0, 59, 60, 3599, 3600, 86_399, 86_400]),
    shape=st.sampled_from(["D-HH:MM:SS", "HH:MM:SS", "MM:SS"]),
    pad=st.booleans(),
    space=st.sampled_from(["", " ", "\t", " \n"]),
)
def test_any_run_time_written_in_any_shape_is_read_back(seconds: int, shape: str, pad: bool, space: str) -> None:
    assert run_seconds(space + _clock(seconds, shape, pad) + space) == seconds


@SETTINGS
@given(st.text(max_size=16) | st.text(alphabet="0123456789:- ", max_size=16))
def test_any_text_is_a_run_time_in_range_or_invalid_and_never_an_error(text: str) -> None:
    seconds = run_seconds(text)
    if text.strip() == "":
        assert seconds is NOT_STARTED
    elif any(ch not in "0123456789:-" for ch in text.strip()):
        assert seconds == INVALID
    else:
        assert seconds == INVALID or (isinstance(seconds, int) and 0 <= seconds <= MAX_RUN_SECONDS)


# Host lists: what python-hostlist reads, and what it refuses


@contextmanager
def library_limit(size: int) -> Iterator[None]:
    """python-hostlist with its guard against long lists (its public MAX_SIZE) set to ``size``."""
    before = hostlist.MAX_SIZE
    hostlist.MAX_SIZE = size
    try:
        yield
    finally:
        hostlist.MAX_SIZE = before


SIZE_ERRORS = ("range too large", "results too large")


def library(value: str, size: int = hostlist.MAX_SIZE) -> list[str] | str:
    """python-hostlist's list for ``value`` as usage.py reads it (stripped), or its error as text."""
    with library_limit(size):
        try:
            names: list[str] = hostlist.expand_hostlist(value.strip())
        except hostlist.BadHostlist as exc:
            return str(exc)
        except (ValueError, RecursionError) as exc:  # an int() past its digits; thousands of groups
            return type(exc).__name__
    return names


@pytest.mark.parametrize(
    ("value", "names"),
    [
        ("n[01-04,07]", ["n01", "n02", "n03", "n04", "n07"]),
        ("r[1-2]n[01-03]", ["r1n01", "r1n02", "r1n03", "r2n01", "r2n02", "r2n03"]),
        ("h04r3n[01-02],h05r1n[10-12]", ["h04r3n01", "h04r3n02", "h05r1n10", "h05r1n11", "h05r1n12"]),
        ("cn1,cn2,cn10", ["cn1", "cn2", "cn10"]),
        ("n[8-11]", ["n8", "n9", "n10", "n11"]),  # padded to the width of the low end: none
        ("n[08-11]", ["n08", "n09", "n10", "n11"]),
        ("n[098-101]", ["n098", "n099", "n100", "n101"]),
        ("n[7,07,007]", ["n7", "n07", "n007"]),  # numbers as written
        ("n[1-3],n[2-5]", ["n1", "n2", "n3", "n4", "n5"]),  # a node named twice counts once
        ("n1,n1,n[1-2]", ["n1", "n2"]),
        ("n[9-10],n[09-10]", ["n9", "n10", "n09"]),  # n10 is both
        ("n1[0-2],n[10-12]", ["n10", "n11", "n12"]),
        ("n[1,11][1,11]", ["n11", "n111", "n1111"]),  # 1 and 11 meet 11 and 1
        ("[1-3]", ["1", "2", "3"]),
        ("n[1]x[2]y", ["n1x2y"]),
        ("a%d[1-2]{}", ["a%d1{}", "a%d2{}"]),
        ("n1, n2", ["n1", " n2"]),  # the space is the name's, as python-hostlist has it
        (" n1 ", ["n1"]),
        ("n1,,n2,", ["n1", "n2"]),
        ("n" + "9" * 5000, ["n" + "9" * 5000]),
        ("n[" + "9" * 700 + "],n[" + "8" * 700 + "]", ["n" + "9" * 700, "n" + "8" * 700]),  # too long for int()
        ("n[" + "9" * 700 + "]0,n" + "9" * 700 + "0", ["n" + "9" * 700 + "0"]),
    ],
)
def test_host_lists_name_these_nodes_checked_by_hand(value: str, names: list[str]) -> None:
    assert node_names(value) == names
    assert node_count(value) == len(names)
    assert library(value) == names


@pytest.mark.parametrize("value", [None, "", "  ", ",", ",,"])
def test_no_host_list_names_no_node(value: Any) -> None:
    assert node_count(value) == 0
    assert node_names(value) == []


@pytest.mark.parametrize(
    "value",
    [
        "n[",
        "n]",
        "n[1-2",
        "]n[1]",
        "n[[1]]",
        "n[1]]",
        "n[]",
        "n[1,]",
        "n[,1]",
        "n[a]",
        "n[1-]",
        "n[-1]",
        "n[2-1]",
        "n[1-2-3]",
        "n[ 1]",
        "n[1 ]",
        "n[１]",
        "n[1-" + "9" * 5000 + "]",  # past int()'s digits, where python-hostlist fails as well
    ],
)
def test_what_python_hostlist_refuses_is_not_a_host_list(value: str) -> None:
    assert isinstance(library(value), str)
    assert node_count(value) is None
    assert node_names(value) is None


@pytest.mark.parametrize("value", [5, 1.5, True, ["n1"], {"n": 1}, b"n1"])
def test_a_value_that_is_not_text_is_not_a_host_list(value: Any) -> None:
    assert node_count(value) is None
    assert node_names(value) is None


def test_a_line_break_inside_makes_a_value_no_host_list() -> None:
    """The one difference besides the size limits: after a bracket, python-hostlist drops a line break and
    what follows it."""
    assert library("a[1]b\nc") == ["a1b"]
    assert node_count("a[1]b\nc") is None and node_names("a[1]b\nc") is None
    assert node_count("n1\nn2") is None
    assert node_count("n1\n") == 1  # stripped first


def test_a_host_list_writing_more_than_max_listed_names_is_not_one() -> None:
    assert MAX_LISTED == 200_000
    assert node_count("n[1-200000]") == 200_000
    assert node_count("n[1-200001]") is None
    assert node_count("n[1-10000000]") is None and node_names("n[1-10000000]", 3) is None
    assert node_count("r[1-1000]n[1-1000]") is None  # a million names from two groups
    assert node_count("n[1-100000],n[100001-200000],n1") is None  # the whole list, not each term
    assert node_count("n[1-5000000],n[2500001-7500000]") is None


def test_a_host_list_past_the_library_limit_but_within_ours_is_read_as_the_library_would_with_a_higher_one() -> None:
    for value in ["n[0-100000]", "n[1-40000],m[1-40000],n[30001-140002]", "r[1-400]n[1-300]"]:
        assert isinstance(library(value), str)
        names = library(value, 1_000_000)
        assert node_count(value) == len(names)
        assert node_names(value) == names[:MAX_NODES]


def test_names_stop_at_the_limit() -> None:
    assert node_names("n[1-10]", 3) == ["n1", "n2", "n3"]
    assert node_names("n[1-2],n[1-5]", 4) == ["n1", "n2", "n3", "n4"]
    assert node_names("n[1-10]", 0) == []
    assert len(node_names("n[1-200000]") or []) == MAX_NODES == 100_000


def test_a_list_built_to_cost_is_given_up() -> None:
    """Terms that overlap in two dimensions, a thousand of them, or the same 50,000 names over and over: no job's
    nodes, and minutes of the library's work (not run here). Repeats count towards MAX_LISTED."""
    overlapping = ",".join(f"r[{i}-{i + 1000}]n[{i}-{i + 1000}]" for i in range(1, 1001))
    assert node_count(overlapping) is None
    repeated = ",".join(f"n[{i}-{i + 49_999}]" for i in range(1, 101))
    assert node_count(repeated) is None and node_names(repeated, 10) is None
    assert node_count(",".join(["n[1-50000]"] * 4)) == 50_000  # 200,000 written: still one


# Generated host lists, against the library

_LITERAL = st.text(alphabet="abnr-._ %{}0123456789", max_size=4)


@st.composite
def groups(draw: st.DrawFn) -> tuple[str, int]:
    """A bracket group and how many names it lists (repeats included)."""
    alts, listed = [], 0
    for _ in range(draw(st.integers(1, 3))):
        low = draw(st.integers(0, 130))
        width = draw(st.integers(1, 3))
        if draw(st.booleans()):
            alts.append(str(low).zfill(width))
            listed += 1
        else:
            span = draw(st.integers(0, 40))
            alts.append(f"{str(low).zfill(width)}-{low + span}")
            listed += span + 1
    return "[" + ",".join(alts) + "]", listed


@st.composite
def host_lists(draw: st.DrawFn) -> str:
    """Comma-separated terms of literals and up to three groups, listing at most 20,000 names in all."""
    terms, listed = [], 0
    for _ in range(draw(st.integers(1, 4))):
        text, product = draw(_LITERAL), 1
        for _ in range(draw(st.integers(0, 3))):
            group, n = draw(groups())
            text, product = text + group + draw(_LITERAL), product * n
        terms.append(text)
        listed += product
    assume(listed <= 20_000)
    return draw(st.sampled_from(["", " "])) + ",".join(terms)


@SETTINGS
@given(value=host_lists(), limit=st.sampled_from([1, 2, 3, 10, 1000, MAX_NODES]))
@example(value="n[1-12][1-2],n[11-12]1", limit=MAX_NODES)
@example(value="n1[0-9],n[10-19],n1", limit=5)
@example(value="%[1-2]%,{[01-2]}", limit=MAX_NODES)
def test_generated_host_lists_are_read_as_the_library_reads_them(value: str, limit: int) -> None:
    names = library(value)
    assert isinstance(names, list), names
    assert node_count(value) == len(names)
    assert node_names(value, limit) == names[:limit]


def _same_as_library(value: str) -> None:
    """``value`` read as python-hostlist reads it; where only its size limit refuses, as it reads it with a
    higher one (where that can be afforded)."""
    names = library(value)
    if isinstance(names, list):
        assert node_count(value) == len(names)
        assert node_names(value, 50) == names[:50]
    elif names not in SIZE_ERRORS:
        assert node_count(value) is None and node_names(value) is None, names
    else:
        count = node_count(value)
        assert count is None or count > 0
        if count is not None and count <= 250_000:
            names = library(value, 10_000_000)
            if isinstance(names, list):
                assert count == len(names)
                assert node_names(value, 50) == names[:50]


@SETTINGS
@given(st.text(alphabet="n1[]-,0 9%x\n", max_size=24))
@example("n[1-2]x[0-100000]")
@example("n[1-100000,1-100000]")
def test_odd_strings_are_refused_or_read_as_the_library_reads_them(value: str) -> None:
    if "\n" in value.strip():
        assert node_count(value) is None
        return
    _same_as_library(value)


@SETTINGS
@given(st.text(alphabet=string.printable + "０１²[]", max_size=16) | st.text(max_size=12))
def test_any_text_is_refused_or_read_as_the_library_reads_it(value: str) -> None:
    if "\n" in value.strip():
        assert node_count(value) is None
        return
    _same_as_library(value)
