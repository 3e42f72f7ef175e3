"""Counts and ids written as text, as the API, tokens and the config send them. Pure; imports nothing."""

from __future__ import annotations

MAX_DIGITS = 4000  # int() refuses more than 4,300 digits; no count or id we read comes near either


def decimal(value: object) -> int | None:
    """``value`` as a non-negative int when it is a string of ASCII digits (space around allowed), else None.

    Not str.isdigit(): "²", "①" and other digits of Unicode pass it, and int() refuses them.
    """
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or len(text) > MAX_DIGITS or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def count(value: object, limit: int | None = None) -> int | None:
    """A non-negative int from an int or a digit string (``total`` has been seen as both); None above ``limit``."""
    if isinstance(value, bool):
        return None
    n = (value if value >= 0 else None) if isinstance(value, int) else decimal(value)
    return None if n is None or (limit is not None and n > limit) else n
