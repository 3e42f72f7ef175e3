"""Checks of single config values, shared by the config and the web config. A Checker records every problem under its
key's dotted path, so that one run reports them all."""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from exporter import values

SECRET_KEYS = frozenset({"token", "password", "access_key", "secret_key", "org_id"})  # values never shown in errors
_NAME = re.compile(r"[a-zA-Z0-9_.-]+")
_DURATION = re.compile(r"(?=\d)(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


class Invalid(ValueError):
    """A value's problem, raised by a check; Checker.check records it under the key's path."""


class ConfigError(Exception):
    """One or more configuration problems, each a line starting with the dotted path of the key."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


def show(value: Any) -> str:
    """A short, YAML-flavoured rendering of a bad value for an error message."""
    if isinstance(value, str):
        return '"' + (value if len(value) <= 60 else value[:57] + "...") + '"'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return str(value)


def parse_duration(value: Any) -> float | None:
    """Seconds for ``30s`` / ``5m`` / ``1h30m`` / a plain number; None when it is not a positive duration."""
    if isinstance(value, bool):
        return None
    match = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
    if match:
        seconds = sum(float(n) * unit for n, unit in zip(match.groups("0"), (3600, 60, 1), strict=True))
    else:
        try:
            seconds = float(value)
        except (TypeError, ValueError, OverflowError):  # not a number, or an int beyond any float
            return None
    return seconds if seconds > 0 and math.isfinite(seconds) else None


def parse_listen_address(value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:port`` for IPv6; empty host = all interfaces) → (host, port), or raise Invalid."""
    host, sep, port_text = value.rpartition(":")
    port = values.ascii_int(port_text) if sep else None
    if port is None:
        raise Invalid(f'expected host:port like 0.0.0.0:10863, got "{value}"')
    if not 0 < port < 65536:
        raise Invalid(f"port {port} is out of range 1-65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise Invalid(f'IPv6 addresses need brackets, like [::]:10863, got "{value}"')
    return host or "0.0.0.0", port


def nonempty_str(v: Any) -> str | None:
    return v.strip() if isinstance(v, str) and v.strip() else None


def id_text(v: Any) -> str | None:
    """A string or a number (YAML reads 11250 as an int) as a non-empty string."""
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else nonempty_str(v)


@dataclass(frozen=True)
class Expect:
    """A check that takes what ``ok`` makes of the value; when that is None, ``expected {kind}, got ...``."""

    kind: str
    ok: Callable[[Any], Any]

    def __call__(self, c: Checker, path: str, raw: Any) -> Any:
        value = self.ok(raw)
        if value is None:
            shown = "a value that is not shown" if path.rpartition(".")[2] in SECRET_KEYS else show(raw)
            raise Invalid(f"expected {self.kind}, got {shown}")
        return value


def whole(low: int, high: int) -> Expect:
    return Expect(f"a whole number from {low} to {high}", lambda v: v if type(v) is int and low <= v <= high else None)


def duration(example: str) -> Expect:
    return Expect(f"a duration like {example}", parse_duration)


FLAG = Expect("true or false", lambda v: v if isinstance(v, bool) else None)
TEXT = Expect("a non-empty string", nonempty_str)
ID = Expect("a non-empty string", id_text)
NAME = Expect("letters, digits, _ . or -", lambda v: v if isinstance(v, str) and _NAME.fullmatch(v) else None)
FILE_PATH = Expect("a file path", nonempty_str)
NAMES = Expect(
    "a list of user names",
    lambda v: tuple(v) if isinstance(v, list) and all(isinstance(u, str) and u for u in v) else None,
)


class Checker:
    """Collects every problem instead of stopping at the first; relative file paths are taken from ``base_dir``."""

    def __init__(self, base_dir: str) -> None:
        self.errors: list[str] = []
        self.base_dir = base_dir

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")

    def check(self, path: str, raw: Any, check: Check) -> Any:
        """What ``check`` makes of ``raw``, or None with its problem recorded."""
        try:
            return check(self, path, raw)
        except Invalid as exc:
            self.error(path, str(exc))
            return None

    def known_keys(self, data: Mapping[Any, Any], allowed: tuple[str, ...], path: str) -> None:
        """Record each key of ``data`` not in ``allowed`` as unknown, with the closest allowed one as a hint."""
        for key in data:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                self.error(f"{path}.{key}" if path else str(key), f"unknown key{hint}")

    def file(self, path: str, raw: Any) -> str:
        """An existing, readable regular file."""
        name = os.path.join(self.base_dir, FILE_PATH(self, path, raw))
        if not os.path.isfile(name):
            raise Invalid("no such file" if not os.path.exists(name) else "not a regular file")
        if not os.access(name, os.R_OK):
            raise Invalid("file is not readable")
        return name

    def state_file(self, path: str, raw: Any) -> str:
        """A file the exporter may create: its directory must exist."""
        name = os.path.join(self.base_dir, FILE_PATH(self, path, raw))
        folder = os.path.dirname(name) or "."
        if not os.path.isdir(folder):
            raise Invalid(f"directory {folder} does not exist")
        if os.path.isdir(name):
            raise Invalid("is a directory")
        return name

    def regexes(self, path: str, raw: Any) -> tuple[str, ...]:
        if not isinstance(raw, list):
            raise Invalid(f"expected a list of regular expressions, got {show(raw)}")
        for i, item in enumerate(raw):
            if not isinstance(item, str):
                self.error(f"{path}[{i}]", f"expected a regular expression, got {show(item)}")
                continue
            try:
                re.compile(item)
            except re.error as exc:
                self.error(f"{path}[{i}]", f"invalid regular expression: {exc}")
        return tuple(raw)

    def scheduler_ids(self, path: str, raw: Any) -> tuple[str, ...]:
        """A non-empty list of numeric ids (strings or numbers), without repeats."""
        if not isinstance(raw, list) or not raw:
            message = "expected a non-empty list of scheduler ids (omit the key to discover them)"
            raise Invalid(f"{message}, got {show(raw)}")
        ids = [id_text(item) for item in raw]
        for i, text in enumerate(ids):
            if values.ascii_int(text) is None:
                self.error(f"{path}[{i}]", f"expected a numeric scheduler id, got {show(raw[i])}")
        return tuple(dict.fromkeys(text for text in ids if text))

    def url(self, path: str, raw: Any) -> str:
        """An API base URL, normalised and without userinfo (values.split_credentials makes that Basic credentials)."""
        if not isinstance(raw, str):
            raise Invalid(f"expected an http:// or https:// URL, got {show(raw)}")
        problem = values.url_problem(raw.strip())
        if problem:
            raise Invalid(f"{problem}, got {show(values.without_userinfo(raw.strip()))}")
        return values.normalise_api_url(values.split_credentials(raw.strip())[0])

    def token(self, path: str, raw: Any) -> str:
        """A static token: a string that can be sent as a header value."""
        token: str = TEXT(self, path, raw)
        problem = values.token_problem(token)
        if problem:
            raise Invalid(problem)
        return token

    def listen_address(self, path: str, raw: Any) -> str:
        """``host:port`` as parse_listen_address takes it."""
        if not isinstance(raw, str):
            raise Invalid(f"expected host:port like 0.0.0.0:10863, got {show(raw)}")
        parse_listen_address(raw)
        return raw


Check = Callable[[Checker, str, Any], Any]  # a Checker method, or an Expect


def optional(check: Check) -> Check:
    """``check``, but null is taken as the key left out."""
    return lambda c, path, raw: None if raw is None else check(c, path, raw)


class UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys instead of silently keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Hashable] = set()
        for key_node, _ in node.value:
            name = self.construct_object(key_node, deep=deep)
            if not isinstance(name, Hashable):
                break  # the SafeLoader reports it
            if name in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {show(name)}", key_node.start_mark)
            seen.add(name)
        return super().construct_mapping(node, deep)


def read_yaml(path: str, prefix: str = "") -> Any:
    """The YAML document in ``path``; what keeps it from being read is a ConfigError line ``prefix`` + path + why."""
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.load(handle.read(), Loader=UniqueKeyLoader)  # a SafeLoader subclass
    except FileNotFoundError:
        raise ConfigError([f"{prefix}{path}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{prefix}{path}: cannot read: {getattr(exc, 'strerror', None) or exc}"]) from None
    except yaml.MarkedYAMLError as exc:
        # Only the problem and its position: the YAML error's own text quotes the line, which may hold a secret.
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError([f"{prefix}{path}: invalid YAML at {where}: {exc.problem}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{prefix}{path}: invalid YAML: {type(exc).__name__}"]) from None
