"""YAML → frozen dataclasses, validated once; every problem is reported with its dotted path."""

from __future__ import annotations

import difflib
import math
import os
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import yaml

from exporter.values import (
    ascii_int,
    normalise_api_url,
    split_credentials,
    token_problem,
    url_problem,
    without_userinfo,
)

# Keys whose values are never echoed back in an error message.
SECRET_KEYS = frozenset({"token", "password", "access_key", "secret_key", "org_id"})
NAME_RE = re.compile(r"^[a-zA-Z0-9_.-]+$")
_DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")
_ENV_RE = re.compile(r"\$\$|\$\{([^}]*)\}")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ConfigError(Exception):
    """One or more configuration problems, each a line starting with the dotted path of the key."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class AuthConfig:
    """A login that yields tokens: ``password`` (user, password, orgId) or ``aksk`` (user, access/secret key)."""

    kind: str
    url: str  # without userinfo: that is in url_authorization
    user: str
    password: str | None = field(default=None, repr=False)
    password_file: str | None = None
    org_id: str | None = field(default=None, repr=False)
    region: str | None = None
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    secret_key_file: str | None = None
    url_authorization: str | None = field(default=None, repr=False)  # Basic credentials from url's userinfo


@dataclass(frozen=True, kw_only=True)
class PollSettings:
    """The settings a cluster may override; their defaults (the top level's) are given here only."""

    interval: float = 60.0
    timeout: float = 30.0
    page_size: int = 500
    concurrency: int = 4
    state_file: str | None = None
    queue_capacity: bool = False
    capacity_interval: float = 300.0
    username: str = ""
    max_users: int = 200
    users_exclude: tuple[str, ...] = ()
    queues_exclude: tuple[str, ...] = ()
    max_queues: int = 100
    max_jobs: int = 5_000_000


@dataclass(frozen=True, kw_only=True)
class ClusterConfig(PollSettings):
    """One Sugon cluster (HPC host + scheduler ids) with its poll settings resolved."""

    name: str
    api_url: str | None  # None: discovered through the AC host's /center (only with auth); no userinfo
    api_authorization: str | None = field(default=None, repr=False)  # Basic credentials from api_url's userinfo
    cluster_ids: tuple[str, ...]
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    auth: AuthConfig | None = None
    verify_tls: bool = True
    ca_file: str | None = None


@dataclass(frozen=True, kw_only=True)
class Config(PollSettings):
    """The whole exporter configuration. The defaults here and in PollSettings are the only ones."""

    listen_address: str = "0.0.0.0:10863"
    web_config_file: str | None = None
    max_staleness: float = 300.0
    per_user: bool = True
    lean_http: bool = True  # the exporter's own HTTP/1.1 transport; false: httpx's standard one
    clusters: tuple[ClusterConfig, ...] = ()


_DEFAULTS = {f.name: f.default for f in fields(Config)}
TOP_KEYS = tuple(_DEFAULTS)
# Keys a cluster may override; their defaults come from the top level.
OVERRIDABLE = tuple(f.name for f in fields(PollSettings))
CLUSTER_KEYS = ("name", "api_url", "cluster_ids", "token", "token_file", "auth", "verify_tls", "ca_file", *OVERRIDABLE)
AUTH_KEYS: dict[str, tuple[str, ...]] = {
    "password": ("kind", "url", "user", "password", "password_file", "org_id", "region"),
    "aksk": ("kind", "url", "user", "access_key", "secret_key", "secret_key_file", "region"),
}


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


def _show(value: Any) -> str:
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


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys instead of silently keeping the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {_show(key)}", key_node.start_mark)
        seen.add(key)
    return dict(loader.construct_mapping(node, deep=deep))


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class Checker:
    """Collects every problem instead of stopping at the first, so one run shows them all."""

    def __init__(self, environ: Mapping[str, str], base_dir: str) -> None:
        self.errors: list[str] = []
        self.environ = environ
        self.base_dir = base_dir

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")

    def has_error(self, path: str) -> bool:
        """Whether a problem of the key at ``path`` has been recorded already."""
        return any(e.startswith(f"{path}: ") for e in self.errors)

    def expand(self, value: Any, path: str) -> Any:
        """Replace ``${VAR}`` in every string (``$$`` is a literal ``$``)."""
        if isinstance(value, str):

            def repl(match: re.Match[str]) -> str:
                if match.group(0) == "$$":
                    return "$"
                name = match.group(1)
                # On error the reference is left as it is, so that it is reported once, not again as an empty value.
                if not _ENV_NAME_RE.match(name):
                    self.error(path, f'"${{{name}}}" is not a valid environment variable reference')
                    return match.group(0)
                if name not in self.environ:
                    self.error(path, f"environment variable {name} is not set")
                    return match.group(0)
                return self.environ[name]

            return _ENV_RE.sub(repl, value)
        if isinstance(value, list):
            return [self.expand(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {k: self.expand(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        return value

    def known_keys(self, data: Mapping[Any, Any], allowed: tuple[str, ...], path: str) -> None:
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
            shown = "a value that is not shown" if path.rsplit(".", 1)[-1] in SECRET_KEYS else _show(raw)
            self.error(path, f"expected {kind}, got {shown}")
        return result


def _int_in(low: int, high: int) -> Callable[[Any], int | None]:
    def check(v: Any) -> int | None:
        return v if isinstance(v, int) and not isinstance(v, bool) and low <= v <= high else None

    return check


def _bool(v: Any) -> bool | None:
    return v if isinstance(v, bool) else None


def _nonempty_str(v: Any) -> str | None:
    return v.strip() if isinstance(v, str) and v.strip() else None


def _id_text(v: Any) -> str | None:
    """A string or a number (YAML reads 11250 as an int) as a non-empty string."""
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return _nonempty_str(v)


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
    "max_jobs": ("a whole number from 1 to 1000000000", _int_in(1, 1_000_000_000)),
}


def _regexes(c: Checker, path: str, raw: Any) -> tuple[str, ...] | None:
    if not isinstance(raw, list):
        c.error(path, f"expected a list of regular expressions, got {_show(raw)}")
        return None
    patterns = []
    for i, item in enumerate(raw):
        if not isinstance(item, str):
            c.error(f"{path}[{i}]", f"expected a regular expression, got {_show(item)}")
            continue
        try:
            re.compile(item)
        except re.error as exc:
            c.error(f"{path}[{i}]", f"invalid regular expression: {exc}")
            continue
        patterns.append(item)
    return tuple(patterns)


def _state_file(c: Checker, path: str, raw: Any) -> str | None:
    name = c.value(path, raw, "a file path", _nonempty_str)
    if name is None:
        return None
    name = os.path.join(c.base_dir, name)
    folder = os.path.dirname(name) or "."
    if not os.path.isdir(folder):
        c.error(path, f"directory {folder} does not exist")
        return None
    if os.path.isdir(name):
        c.error(path, "is a directory")
        return None
    return name


def _setting(c: Checker, path: str, key: str, raw: Any) -> Any:
    """One of the settings that may stand at the top level and in a cluster; None if invalid."""
    if key == "state_file":
        return _state_file(c, path, raw)
    if key in ("users_exclude", "queues_exclude"):
        return _regexes(c, path, raw)
    return c.value(path, raw, *_CHECKS[key])


def check_file(c: Checker, path: str, raw: Any) -> str | None:
    """The path of an existing, readable regular file (relative to the checker's base directory), or None."""
    name = c.value(path, raw, "a file path", _nonempty_str)
    if name is None:
        return None
    name = os.path.join(c.base_dir, name)  # relative paths are relative to the config file
    if not os.path.isfile(name):
        c.error(path, "no such file" if not os.path.exists(name) else "not a regular file")
        return None
    if not os.access(name, os.R_OK):
        c.error(path, "file is not readable")
        return None
    return str(name)


def _loads_as_ca(path: str) -> bool:
    """Whether a file holds CA certificates that TLS can load (PEM)."""
    try:
        ssl.create_default_context().load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError, ValueError):
        return False
    return True


def _scheduler_ids(c: Checker, path: str, raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw:
        c.error(path, f"expected a non-empty list of scheduler ids (omit the key to discover them), got {_show(raw)}")
        return ()
    ids: list[str] = []
    for i, item in enumerate(raw):
        text = str(item) if isinstance(item, int) and not isinstance(item, bool) else item
        if isinstance(text, str) and ascii_int(text) is not None:
            ids.append(text.strip())
        else:
            c.error(f"{path}[{i}]", f"expected a numeric scheduler id, got {_show(item)}")
    return tuple(dict.fromkeys(ids))


def _url(c: Checker, path: str, raw: Any) -> tuple[str, str | None] | None:
    """(the URL, normalised and without userinfo; the Authorization its userinfo asks for), or None."""
    if c.has_error(path):  # a bad ${VAR} in it, reported already
        return None
    problem = url_problem(raw.strip()) if isinstance(raw, str) else "expected an http:// or https:// URL"
    if problem:
        shown = _show(without_userinfo(raw.strip())) if isinstance(raw, str) else _show(raw)
        c.error(path, f"{problem}, got {shown}")
        return None
    url, authorization = split_credentials(raw.strip())
    return normalise_api_url(url), authorization


def _secret(
    c: Checker, path: str, raw: Mapping[str, Any], key: str, required: bool = True
) -> tuple[str | None, str | None]:
    """``key`` or ``key_file`` (exactly one when required): (value, file path)."""
    if key in raw and f"{key}_file" in raw:
        c.error(path, f"{key} and {key}_file are both set; set exactly one")
    elif key in raw:
        return c.value(f"{path}.{key}", raw[key], "a non-empty string", _nonempty_str), None
    elif f"{key}_file" in raw:
        return None, check_file(c, f"{path}.{key}_file", raw[f"{key}_file"])
    elif required:
        c.error(path, f"missing {key}; set {key} or {key}_file")
    return None, None


def _auth(c: Checker, path: str, raw: Any) -> AuthConfig | None:
    if not isinstance(raw, dict):
        c.error(path, f"expected a mapping, got {_show(raw)}")
        return None
    before = len(c.errors)
    kind = raw.get("kind")
    if kind not in AUTH_KEYS:
        c.error(f"{path}.kind" if "kind" in raw else path, f"expected kind password or aksk, got {_show(kind)}")
        return None
    c.known_keys(raw, AUTH_KEYS[kind], path)
    checked = _url(c, f"{path}.url", raw["url"]) if "url" in raw else None
    if "url" not in raw:
        c.error(path, "missing url (the AC host)")
    user = c.value(f"{path}.user", raw["user"], "a non-empty string", _nonempty_str) if "user" in raw else None
    if "user" not in raw:
        c.error(path, "missing user")
    region = raw.get("region")
    if region is not None:
        region = c.value(f"{path}.region", region, "a clusterId or clusterName", _id_text)
    password = password_file = org_id = access_key = secret_key = secret_key_file = None
    if kind == "password":
        password, password_file = _secret(c, path, raw, "password")
        if "org_id" in raw:
            org_id = c.value(f"{path}.org_id", raw["org_id"], "a non-empty string", _id_text)
        else:
            c.error(path, "missing org_id")
    else:
        if "access_key" in raw:
            access_key = c.value(f"{path}.access_key", raw["access_key"], "a non-empty string", _nonempty_str)
        else:
            c.error(path, "missing access_key")
        secret_key, secret_key_file = _secret(c, path, raw, "secret_key")
    if len(c.errors) > before or checked is None or user is None:
        return None
    return AuthConfig(
        kind=kind,
        url=checked[0],
        url_authorization=checked[1],
        user=user,
        password=password,
        password_file=password_file,
        org_id=org_id,
        region=region,
        access_key=access_key,
        secret_key=secret_key,
        secret_key_file=secret_key_file,
    )


def _cluster(c: Checker, path: str, raw: Any, top: dict[str, Any]) -> ClusterConfig | None:
    if not isinstance(raw, dict):
        c.error(path, f"expected a mapping, got {_show(raw)}")
        return None
    c.known_keys(raw, CLUSTER_KEYS, path)
    before = len(c.errors)
    name = raw.get("name")
    if name is None:
        c.error(path, "missing name")
    elif not isinstance(name, str) or not NAME_RE.match(name):
        c.error(f"{path}.name", f"expected letters, digits, _ . or -, got {_show(name)}")
    api_url = api_authorization = None
    if raw.get("api_url") is None:
        if "auth" not in raw:
            c.error(path, "missing api_url (it can only be discovered with auth)")
    else:
        checked = _url(c, f"{path}.api_url", raw["api_url"])
        if checked is not None:
            api_url, api_authorization = checked
    ids = _scheduler_ids(c, f"{path}.cluster_ids", raw["cluster_ids"]) if "cluster_ids" in raw else ()
    token = token_file = auth = None
    given = [key for key in ("token", "token_file", "auth") if key in raw]
    if len(given) > 1:
        c.error(path, f"{' and '.join(given)} are set; set exactly one of token, token_file, auth")
    elif "token" in raw:
        token = c.value(f"{path}.token", raw["token"], "a non-empty string", _nonempty_str)
        problem = token_problem(token) if token is not None else None
        if problem:
            c.error(f"{path}.token", problem)
    elif "token_file" in raw:
        token_file = check_file(c, f"{path}.token_file", raw["token_file"])
    elif "auth" in raw:
        auth = _auth(c, f"{path}.auth", raw["auth"])
    else:
        c.error(path, "missing token; set token, token_file or auth")
    settings: dict[str, Any] = {}
    if "verify_tls" in raw:
        settings["verify_tls"] = c.value(f"{path}.verify_tls", raw["verify_tls"], *_CHECKS["verify_tls"])
    for key in OVERRIDABLE:
        if key in raw:
            settings[key] = _setting(c, f"{path}.{key}", key, raw[key])
    ca_file = check_file(c, f"{path}.ca_file", raw["ca_file"]) if "ca_file" in raw else None
    if ca_file is not None and settings.get("verify_tls") is False:
        c.error(f"{path}.ca_file", "set, but verify_tls is false; remove one of them")
    elif ca_file is not None and not _loads_as_ca(ca_file):
        c.error(f"{path}.ca_file", "cannot load CA certificates from it (a PEM file?)")
    if len(c.errors) > before or not isinstance(name, str):
        return None
    return ClusterConfig(
        name=name,
        api_url=api_url,
        api_authorization=api_authorization,
        cluster_ids=ids,
        token=token,
        token_file=token_file,
        auth=auth,
        verify_tls=settings.get("verify_tls", True),
        ca_file=ca_file,
        **{key: settings.get(key, top[key]) for key in OVERRIDABLE},
    )


def build_config(data: Any, environ: Mapping[str, str] | None = None, base_dir: str = ".") -> Config:
    """Validate parsed YAML into a Config, or raise ConfigError listing every problem.

    ``environ`` supplies ``${VAR}`` (default: the process environment); relative file paths are taken
    from ``base_dir``.
    """
    c = Checker(os.environ if environ is None else environ, base_dir)
    if not isinstance(data, dict):
        raise ConfigError([f"(top level): expected a mapping of settings, got {_show(data)}"])
    data = c.expand(data, "")
    c.known_keys(data, TOP_KEYS, "")
    top: dict[str, Any] = dict(_DEFAULTS)
    for key in TOP_KEYS:
        if key in data and key in (*_CHECKS, *OVERRIDABLE):
            value = _setting(c, key, key, data[key])
            if value is not None:
                top[key] = value
    if "web_config_file" in data:
        top["web_config_file"] = check_file(c, "web_config_file", data["web_config_file"])
    if "listen_address" in data:
        raw = data["listen_address"]
        if not isinstance(raw, str):
            c.error("listen_address", f"expected host:port like 0.0.0.0:10863, got {_show(raw)}")
        else:
            try:
                parse_listen_address(raw)
                top["listen_address"] = raw
            except ValueError as exc:
                c.error("listen_address", str(exc))
    clusters: list[ClusterConfig] = []
    raw_clusters = data.get("clusters")
    if not isinstance(raw_clusters, list) or not raw_clusters:
        c.error("clusters", f"expected a non-empty list of clusters, got {_show(raw_clusters)}")
    else:
        first_seen: dict[str, int] = {}
        for i, raw in enumerate(raw_clusters):
            cluster = _cluster(c, f"clusters[{i}]", raw, top)
            if cluster is not None:
                clusters.append(cluster)
            name = raw.get("name") if isinstance(raw, dict) else None
            if not isinstance(name, str):
                continue
            if name in first_seen:
                c.error(f"clusters[{i}].name", f'duplicate cluster name "{name}" (also clusters[{first_seen[name]}])')
            else:
                first_seen[name] = i
    if c.errors:
        raise ConfigError(c.errors)
    top["clusters"] = tuple(clusters)
    return Config(**top)


def load_config(path: str, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a YAML config file; every failure is a ConfigError naming the file or key."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}"]) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        # Only the problem and its position: the YAML error's own text quotes the line, which may hold a secret.
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError([f"{path}: invalid YAML at {where}: {exc.problem}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: invalid YAML: {type(exc).__name__}"]) from None
    return build_config(data, environ, os.path.dirname(os.path.abspath(path)))
