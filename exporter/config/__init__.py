"""The exporter's configuration: frozen dataclasses whose fields carry each key's default and check (a setting is
declared once, here), and the loader that reads YAML into them, reporting every problem under its dotted path."""

from __future__ import annotations

import logging
import os
import re
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from exporter.config import checks
from exporter.config.checks import (
    Check,
    Checker,
    ConfigError,
    Expect,
    parse_duration,
    parse_listen_address,
    read_yaml,
    show,
)
from exporter.values import split_credentials

__all__ = ["DEFAULTS", "AuthConfig", "ClusterConfig", "Config", "ConfigError", "build_config", "load_config"]
__all__ += ["parse_duration", "parse_listen_address"]

log = logging.getLogger(__name__)


def key(check: Check, default: Any = MISSING, *, secret: bool = False) -> Any:
    """A field set by the config key of its name: ``check`` reads the YAML value; a secret stays out of repr."""
    return field(default=default, repr=not secret, metadata={"check": check})


@dataclass(frozen=True, kw_only=True)
class PollSettings:
    """The settings a cluster may override; their defaults (the top level's) are given here only."""

    interval: float = key(checks.duration("30s"), 60.0)
    timeout: float = key(checks.duration("30s"), 30.0)
    page_size: int = key(checks.whole(1, 100_000), 500)
    concurrency: int = key(checks.whole(1, 64), 4)
    state_file: str | None = key(Checker.state_file, None)
    queue_capacity: bool = key(checks.FLAG, False)
    capacity_interval: float = key(checks.duration("5m"), 300.0)
    username: str = key(Expect("a string", lambda v: v.strip() if isinstance(v, str) else None), "")
    max_users: int = key(checks.whole(1, 100_000), 200)
    users_exclude: tuple[str, ...] = key(Checker.regexes, ())
    queues_exclude: tuple[str, ...] = key(Checker.regexes, ())
    max_queues: int = key(checks.whole(1, 100_000), 100)
    max_apps: int = key(checks.whole(1, 100_000), 50)
    max_jobs: int = key(checks.whole(1, 1_000_000_000), 5_000_000)
    max_job_series: int = key(checks.whole(0, 100_000), 500)
    job_series_users: tuple[str, ...] = key(checks.NAMES, ())


@dataclass(frozen=True, kw_only=True)
class AuthConfig:
    """A login that yields tokens: ``password`` (user, password, orgId) or ``aksk`` (user, access/secret key)."""

    kind: str = key(Expect("kind password or aksk", lambda v: v if v in ("password", "aksk") else None))
    url: str = key(Checker.url)  # the AC host
    user: str = key(checks.TEXT)
    region: str | None = key(checks.optional(Expect("a clusterId or clusterName", checks.id_text)), None)
    password: str | None = key(checks.TEXT, None, secret=True)
    password_file: str | None = key(Checker.file, None)
    org_id: str | None = key(checks.ID, None, secret=True)
    access_key: str | None = key(checks.TEXT, None, secret=True)
    secret_key: str | None = key(checks.TEXT, None, secret=True)
    secret_key_file: str | None = key(Checker.file, None)
    url_authorization: str | None = field(default=None, repr=False)  # Basic credentials from url's userinfo


AUTH_KEYS = {
    "password": ("kind", "url", "user", "region", "password", "password_file", "org_id"),
    "aksk": ("kind", "url", "user", "region", "access_key", "secret_key", "secret_key_file"),
}


def _auth(c: Checker, path: str, raw: Any) -> AuthConfig | None:
    """The ``auth`` key of a cluster: a login, whose keys depend on its kind."""
    if not isinstance(raw, dict):
        raise checks.Invalid(f"expected a mapping, got {show(raw)}")
    kind = c.check(f"{path}.kind" if "kind" in raw else path, raw.get("kind"), CHECKS["kind"])
    if kind is None:
        return None
    c.known_keys(raw, AUTH_KEYS[kind], path)
    for name in ("url", "user", "org_id" if kind == "password" else "access_key"):
        if name not in raw:
            c.error(path, "missing url (the AC host)" if name == "url" else f"missing {name}")
    secret = "password" if kind == "password" else "secret_key"  # or else its file
    both = (secret, f"{secret}_file") if secret in raw and f"{secret}_file" in raw else ()
    if both:
        c.error(path, f"{secret} and {secret}_file are both set; set exactly one")
    elif secret not in raw and f"{secret}_file" not in raw:
        c.error(path, f"missing {secret}; set {secret} or {secret}_file")
    values = _read(c, path, raw, (name for name in AUTH_KEYS[kind] if name not in both))
    if c.errors:
        return None
    return AuthConfig(**values, url_authorization=split_credentials(raw["url"].strip())[1])


@dataclass(frozen=True, kw_only=True)
class ClusterConfig(PollSettings):
    """One Sugon cluster (HPC host + scheduler ids) with its poll settings resolved."""

    name: str = key(checks.optional(checks.NAME))
    api_url: str | None = key(checks.optional(Checker.url), None)  # None: found through the AC host (with auth)
    cluster_ids: tuple[str, ...] = key(Checker.scheduler_ids, ())
    token: str | None = key(Checker.token, None, secret=True)
    token_file: str | None = key(Checker.file, None)
    auth: AuthConfig | None = key(_auth, None)  # noqa: RUF009 (key makes a field, as field does)
    verify_tls: bool = key(checks.FLAG, True)
    ca_file: str | None = key(Checker.file, None)
    api_authorization: str | None = field(default=None, repr=False)  # Basic credentials from api_url's userinfo


@dataclass(frozen=True, kw_only=True)
class Config(PollSettings):
    """The whole exporter configuration. The defaults here and in PollSettings are the only ones."""

    max_staleness: float = key(checks.duration("5m"), 300.0)
    per_user: bool = key(checks.FLAG, True)
    per_job: bool = key(checks.FLAG, False)
    lean_http: bool = key(checks.FLAG, True)  # accepted and ignored, with a warning
    web_config_file: str | None = key(Checker.file, None)
    listen_address: str = key(Checker.listen_address, "0.0.0.0:10863")
    clusters: tuple[ClusterConfig, ...] = ()


DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Config)}
TOP_KEYS = tuple(DEFAULTS)
POLL_KEYS = tuple(f.name for f in fields(PollSettings))
CLUSTER_KEYS = (*(f.name for f in fields(ClusterConfig) if f.metadata and f.name not in POLL_KEYS), *POLL_KEYS)
CHECKS: dict[str, Check] = {
    f.name: f.metadata["check"] for cls in (AuthConfig, ClusterConfig, Config) for f in fields(cls) if f.metadata
}


def _read(c: Checker, path: str, raw: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """Each of ``keys`` that ``raw`` gives, checked; not one whose ``${VAR}`` failed, which is reported already."""
    values = {}
    for name in keys:
        where = f"{path}.{name}" if path else name
        if name in raw and not any(e.startswith(f"{where}: ") for e in c.errors):
            values[name] = c.check(where, raw[name], CHECKS[name])
    return values


def _cluster(c: Checker, path: str, raw: Any, top: Mapping[str, Any]) -> ClusterConfig | None:
    """One cluster; the top level's settings are its defaults."""
    if not isinstance(raw, dict):
        c.error(path, f"expected a mapping, got {show(raw)}")
        return None
    c.known_keys(raw, CLUSTER_KEYS, path)
    if raw.get("name") is None:
        c.error(path, "missing name")
    if raw.get("api_url") is None and "auth" not in raw:
        c.error(path, "missing api_url (it can only be discovered with auth)")
    given = [name for name in ("token", "token_file", "auth") if name in raw]
    if not given:
        c.error(path, "missing token; set token, token_file or auth")
    elif len(given) > 1:
        c.error(path, f"{' and '.join(given)} are set; set exactly one of token, token_file, auth")
    values = _read(c, path, raw, (name for name in CLUSTER_KEYS if len(given) == 1 or name not in given))
    if values.get("ca_file") and values.get("verify_tls") is False:
        c.error(f"{path}.ca_file", "set, but verify_tls is false; remove one of them")
    elif values.get("ca_file"):
        try:
            ssl.create_default_context().load_verify_locations(cafile=values["ca_file"])
        except (ssl.SSLError, OSError, ValueError):
            c.error(f"{path}.ca_file", "cannot load CA certificates from it (a PEM file?)")
    if c.errors:
        return None
    authorization = split_credentials(raw["api_url"].strip())[1] if values.get("api_url") else None
    settings = {name: top[name] for name in POLL_KEYS}
    return ClusterConfig(**{**settings, **values}, api_authorization=authorization)


_ENV = re.compile(r"\$\$|\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _expand(c: Checker, environ: Mapping[str, str], value: Any, path: str) -> Any:
    """``value`` with ``${VAR}`` replaced in every string (``$$`` is a literal ``$``); a bad reference is reported."""
    if isinstance(value, list):
        return [_expand(c, environ, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _expand(c, environ, v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        if not _ENV_NAME.fullmatch(name):
            c.error(path, f'"${{{name}}}" is not a valid environment variable reference')
        elif name not in environ:
            c.error(path, f"environment variable {name} is not set")
        else:
            return environ[name]
        return match.group(0)

    return _ENV.sub(replace, value)


def build_config(data: Any, environ: Mapping[str, str] | None = None, base_dir: str = ".") -> Config:
    """Validate parsed YAML into a Config, or raise ConfigError listing every problem. ``environ`` supplies
    ``${VAR}`` (default: the process environment); relative file paths are taken from ``base_dir``."""
    if not isinstance(data, dict):
        raise ConfigError([f"(top level): expected a mapping of settings, got {show(data)}"])
    c = Checker(base_dir)
    data = _expand(c, os.environ if environ is None else environ, data, "")
    c.known_keys(data, TOP_KEYS, "")
    if "lean_http" in data:
        message = "lean_http is ignored: one HTTP transport now serves every request, proxies included"
        log.warning(message, extra={"key": "lean_http"})
    top = {**DEFAULTS, **_read(c, "", data, (name for name in TOP_KEYS if name != "clusters"))}
    clusters = data.get("clusters")
    if not isinstance(clusters, list) or not clusters:
        c.error("clusters", f"expected a non-empty list of clusters, got {show(clusters)}")
        clusters = []
    first: dict[str, int] = {}  # the index of each name's first cluster
    for i, item in enumerate(clusters):
        clusters[i] = _cluster(c, f"clusters[{i}]", item, top)
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str) and first.setdefault(name, i) != i:
            c.error(f"clusters[{i}].name", f'duplicate cluster name "{name}" (also clusters[{first[name]}])')
    if c.errors:
        raise ConfigError(c.errors)
    top["clusters"] = tuple(clusters)
    return Config(**top)


def load_config(path: str, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a YAML config file; every failure is a ConfigError naming the file or key."""
    data = read_yaml(path)
    return build_config(data, environ, os.path.dirname(os.path.abspath(path)))
