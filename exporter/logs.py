"""Log lines as promslog writes them, logfmt or JSON: ``time``, ``level``, ``source``, ``msg``, the ``extra=`` fields,
a traceback in ``exc``. Whatever a message or field holds, a record is one line and cannot forge a line or key."""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import MutableMapping
from typing import Any

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}

# What every LogRecord has; any other attribute came with extra= and is a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
_HEAD = ("time", "level", "source", "msg", "exc", "stack")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_BAD_KEY = re.compile(r"[^A-Za-z0-9_.-]")


def _escape(ch: str) -> str:
    """One character of a quoted logfmt value, as Go's strconv.Quote writes it."""
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    if ch.isprintable():
        return ch
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def logfmt_value(value: object) -> str:
    """A value as logfmt writes it: bare when it can be, else quoted with ``\\``, ``"`` and controls escaped."""
    if isinstance(value, bool):
        value = "true" if value else "false"
    text = "" if value is None else str(value)
    if text and text.isprintable() and not set(' ="').intersection(text):
        return text
    return '"' + "".join(map(_escape, text)) + '"'


def _json_value(value: object) -> Any:
    if value is None or isinstance(value, (str, bool, int)) or isinstance(value, float) and math.isfinite(value):
        return value
    return str(value)


class Fields(logging.LoggerAdapter):  # type: ignore[type-arg]  # LoggerAdapter[...] fails on Python 3.10
    """A logger that adds fixed fields (a cluster's name) to each line, beside the call's own ``extra=``."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


class _Formatter(logging.Formatter):
    """The keys of a line, in order: the four promslog ones, the fields, then a traceback if any."""

    def pairs(self, record: logging.LogRecord) -> list[tuple[str, object]]:
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        # promslog's four level names; CRITICAL, which promslog lacks, is an error.
        level = next((name for name, no in reversed(LEVELS.items()) if record.levelno >= no), "debug")
        out: list[tuple[str, object]] = [
            ("time", f"{created}.{int(record.msecs):03d}Z"),
            ("level", level),
            ("source", f"{record.filename}:{record.lineno}"),
            ("msg", record.getMessage()),
        ]
        for key, value in vars(record).items():
            if key not in _STANDARD:
                key = _BAD_KEY.sub("_", key) or "_"
                out.append((f"field_{key}" if key in _HEAD else key, value))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out.append(("exc", record.exc_text))
        if record.stack_info:
            out.append(("stack", self.formatStack(record.stack_info)))
        return out


class LogfmtFormatter(_Formatter):
    """``time=... level=info source=poller.py:123 msg="..." cluster=kunshan``, one line per record."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{key}={logfmt_value(value)}" for key, value in self.pairs(record))


class JsonFormatter(_Formatter):
    """One JSON object per record with the logfmt keys; UTF-8 as promslog writes it, invisible characters escaped."""

    def format(self, record: logging.LogRecord) -> str:
        line = json.dumps(
            {key: _json_value(value) for key, value in self.pairs(record)}, ensure_ascii=False, separators=(",", ":")
        )
        if line.isprintable():
            return line
        # json escapes only C0 controls: DEL, C1, U+2028 and the like would pass raw; they can only be in strings.
        return "".join(ch if ch.isprintable() else json.dumps(ch)[1:-1] for ch in line)


FORMATTERS: dict[str, type[_Formatter]] = {"logfmt": LogfmtFormatter, "json": JsonFormatter}  # by --log.format
