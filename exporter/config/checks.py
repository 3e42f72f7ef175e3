"""Checks of one config value at a time (durations, numbers, files, URLs, scheduler ids), each recording its
problems under the key's dotted path in a Checker, so one run reports every problem, not just the first.

Shared by the main config and the web config; also the YAML loader that refuses duplicate keys.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import ssl
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from exporter.config.schema import SECRET_KEYS
from exporter.values import ascii_int, normalise_api_url, split_credentials, url_problem, without_userinfo

_DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


class ConfigError(Exception):
    """One or more configuration problems, each a line starting with the dotted path of the key."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


def parse_duration(value: Any) -> float | None:
    """Seconds for ``30s`` / ``5m`` / ``1h30m`` / a plain number; None when it is not a positive duration."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            match = _DURATION_RE.match(text)
            if not text or match is None:
                return None
            h, m, s = (float(g) if g else 0.0 for g in match.groups())
            seconds = h * 3600 + m * 60 + s
    else:
        return None
    return seconds if seconds > 0 and math.isfinite(seconds) else None


def parse_listen_address(value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:port`` for IPv6; empty host = all interfaces) → (host, port); ValueError if not."""
    host, sep, port_text = value.rpartition(":")
    port = ascii_int(port_text) if sep else None
    if port is None:
        raise ValueError(f'expected host:port like 0.0.0.0:10863, got "{value}"')
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range 1-65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f'IPv6 addresses need brackets, like [::]:10863, got "{value}"')
    return host or "0.0.0.0", port


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


class UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys instead of silently keeping the last one."""


def _construct_mapping(loader: UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {show(key)}", key_node.start_mark)
        seen.add(key)
    return dict(loader.construct_mapping(node, deep=deep))


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class Checker:
    """Collects every problem instead of stopping at the first; relative file paths are taken from ``base_dir``."""

    def __init__(self, base_dir: str) -> None:
        self.errors: list[str] = []
        self.base_dir = base_dir

    def error(self, path: str, message: str) -> None:
        """Record a problem of the key at ``path``."""
        self.errors.append(f"{path}: {message}")

    def has_error(self, path: str) -> bool:
        """Whether a problem of the key at ``path`` has been recorded already."""
        return any(e.startswith(f"{path}: ") for e in self.errors)

    def known_keys(self, data: Mapping[Any, Any], allowed: tuple[str, ...], path: str) -> None:
        """Record each key of ``data`` not in ``allowed`` as unknown, with the closest allowed one as a hint."""
        for key in data:
            where = f"{path}.{key}" if path else str(key)
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                self.error(where, f"unknown key{hint}")

    def value(self, path: str, raw: Any, kind: str, ok: Callable[[Any], Any | None]) -> Any:
        """``ok(raw)`` or None, recording ``expected {kind}, got ...`` (never the value of a secret key)."""
        result = ok(raw)
        if result is None:
            shown = "a value that is not shown" if path.rsplit(".", 1)[-1] in SECRET_KEYS else show(raw)
            self.error(path, f"expected {kind}, got {shown}")
        return result


def _int_in(low: int, high: int) -> Callable[[Any], int | None]:
    def check(v: Any) -> int | None:
        return v if isinstance(v, int) and not isinstance(v, bool) and low <= v <= high else None

    return check


def _bool(v: Any) -> bool | None:
    return v if isinstance(v, bool) else None


def nonempty_str(v: Any) -> str | None:
    """A string with something besides spaces, stripped."""
    return v.strip() if isinstance(v, str) and v.strip() else None


def id_text(v: Any) -> str | None:
    """A string or a number (YAML reads 11250 as an int) as a non-empty string."""
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return nonempty_str(v)


_CHECKS: dict[str, tuple[str, Callable[[Any], Any | None]]] = {
    "interval": ("a duration like 30s", parse_duration),
    "timeout": ("a duration like 30s", parse_duration),
    "max_staleness": ("a duration like 5m", parse_duration),
    "page_size": ("a whole number from 1 to 100000", _int_in(1, 100_000)),
    "concurrency": ("a whole number from 1 to 64", _int_in(1, 64)),
    "per_user": ("true or false", _bool),
    "lean_http": ("true or false", _bool),
    "verify_tls": ("true or false", _bool),
    "queue_capacity": ("true or false", _bool),
    "capacity_interval": ("a duration like 5m", parse_duration),
    "username": ("a string", lambda v: v.strip() if isinstance(v, str) else None),
    "max_users": ("a whole number from 1 to 100000", _int_in(1, 100_000)),
    "max_queues": ("a whole number from 1 to 100000", _int_in(1, 100_000)),
    "max_apps": ("a whole number from 1 to 100000", _int_in(1, 100_000)),
    "max_jobs": ("a whole number from 1 to 1000000000", _int_in(1, 1_000_000_000)),
}
# The keys check_setting knows.
SETTINGS = frozenset((*_CHECKS, "state_file", "users_exclude", "queues_exclude"))


def check_setting(c: Checker, path: str, key: str, raw: Any) -> Any:
    """One of the SETTINGS, which may stand at the top level and (most of them) in a cluster; None if invalid."""
    if key == "state_file":
        return _state_file(c, path, raw)
    if key in ("users_exclude", "queues_exclude"):
        return _regexes(c, path, raw)
    return c.value(path, raw, *_CHECKS[key])


def _regexes(c: Checker, path: str, raw: Any) -> tuple[str, ...] | None:
    if not isinstance(raw, list):
        c.error(path, f"expected a list of regular expressions, got {show(raw)}")
        return None
    patterns = []
    for i, item in enumerate(raw):
        if not isinstance(item, str):
            c.error(f"{path}[{i}]", f"expected a regular expression, got {show(item)}")
            continue
        try:
            re.compile(item)
        except re.error as exc:
            c.error(f"{path}[{i}]", f"invalid regular expression: {exc}")
            continue
        patterns.append(item)
    return tuple(patterns)


def _file_path(c: Checker, path: str, raw: Any) -> str | None:
    """``raw`` as a file path, relative to the checker's base directory (the config file's), or None."""
    name = c.value(path, raw, "a file path", nonempty_str)
    return None if name is None else os.path.join(c.base_dir, name)


def _state_file(c: Checker, path: str, raw: Any) -> str | None:
    """A file the exporter may create: its directory must exist."""
    name = _file_path(c, path, raw)
    if name is None:
        return None
    folder = os.path.dirname(name) or "."
    if not os.path.isdir(folder):
        c.error(path, f"directory {folder} does not exist")
        return None
    if os.path.isdir(name):
        c.error(path, "is a directory")
        return None
    return name


def check_file(c: Checker, path: str, raw: Any) -> str | None:
    """The path of an existing, readable regular file (relative to the checker's base directory), or None."""
    name = _file_path(c, path, raw)
    if name is None:
        return None
    if not os.path.isfile(name):
        c.error(path, "no such file" if not os.path.exists(name) else "not a regular file")
        return None
    if not os.access(name, os.R_OK):
        c.error(path, "file is not readable")
        return None
    return name


def loads_as_ca(path: str) -> bool:
    """Whether a file holds CA certificates that TLS can load (PEM)."""
    try:
        ssl.create_default_context().load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError, ValueError):
        return False
    return True


def check_scheduler_ids(c: Checker, path: str, raw: Any) -> tuple[str, ...]:
    """A non-empty list of numeric scheduler ids (strings or numbers), without repeats; () if invalid."""
    if not isinstance(raw, list) or not raw:
        c.error(path, f"expected a non-empty list of scheduler ids (omit the key to discover them), got {show(raw)}")
        return ()
    ids: list[str] = []
    for i, item in enumerate(raw):
        text = id_text(item)
        if text is not None and ascii_int(text) is not None:
            ids.append(text)
        else:
            c.error(f"{path}[{i}]", f"expected a numeric scheduler id, got {show(item)}")
    return tuple(dict.fromkeys(ids))


def check_url(c: Checker, path: str, raw: Any) -> tuple[str, str | None] | None:
    """(the URL, normalised and without userinfo; the Authorization its userinfo asks for), or None."""
    if c.has_error(path):  # a bad ${VAR} in it, reported already
        return None
    problem = url_problem(raw.strip()) if isinstance(raw, str) else "expected an http:// or https:// URL"
    if problem:
        shown = show(without_userinfo(raw.strip())) if isinstance(raw, str) else show(raw)
        c.error(path, f"{problem}, got {shown}")
        return None
    url, authorization = split_credentials(raw.strip())
    return normalise_api_url(url), authorization
