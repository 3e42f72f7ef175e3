"""Counts and ids written as text: ASCII digits only, never an exception."""

from __future__ import annotations

import pytest

from exporter.values import ascii_int


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0", 0),
        ("1638523853", 1638523853),
        (" 42 ", 42),
        ("", None),
        ("  ", None),
        ("-3", None),
        ("+3", None),
        ("1.5", None),
        ("1e3", None),
        ("0x10", None),
        ("²", None),  # a digit to str.isdigit(); int() refuses it
        ("①", None),
        ("١٢", None),  # Arabic-Indic digits: int() takes them, an id or count in them is not what the API sends
        ("12²", None),
        (7, None),  # not text: the caller handles numbers itself
        (None, None),
        pytest.param("9" * 4000, int("9" * 4000), id="4000 digits"),
        pytest.param("9" * 5000, None, id="5000 digits, more than int() takes"),
    ],
)
def test_only_ascii_digits_are_a_number(raw: object, expected: int | None) -> None:
    assert ascii_int(raw) == expected
