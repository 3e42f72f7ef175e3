"""YAML file → Config: ``${ENV}`` references, the top level, each cluster, its token or login, and secrets given
inline or as ``*_file``. Every problem is collected with its dotted path and raised at the end as one ConfigError.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from exporter.config.checks import (
    SETTINGS,
    Checker,
    ConfigError,
    UniqueKeyLoader,
    check_file,
    check_scheduler_ids,
    check_setting,
    check_url,
    id_text,
    loads_as_ca,
    nonempty_str,
    parse_listen_address,
    show,
)
from exporter.config.schema import (
    AUTH_KEYS,
    CLUSTER_KEYS,
    DEFAULTS,
    OVERRIDABLE,
    TOP_KEYS,
    AuthConfig,
    ClusterConfig,
    Config,
)
from exporter.values import token_problem

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[a-zA-Z0-9_.-]+$")
_ENV_RE = re.compile(r"\$\$|\$\{([^}]*)\}")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _expand(c: Checker, environ: Mapping[str, str], value: Any, path: str) -> Any:
    """Replace ``${VAR}`` in every string (``$$`` is a literal ``$``)."""
    if isinstance(value, str):

        def repl(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name = match.group(1)
            # On error the reference is left as it is, so that it is reported once, not again as an empty value.
            if not _ENV_NAME_RE.match(name):
                c.error(path, f'"${{{name}}}" is not a valid environment variable reference')
                return match.group(0)
            if name not in environ:
                c.error(path, f"environment variable {name} is not set")
                return match.group(0)
            return environ[name]

        return _ENV_RE.sub(repl, value)
    if isinstance(value, list):
        return [_expand(c, environ, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _expand(c, environ, v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    return value


def _required(
    c: Checker, path: str, raw: Mapping[str, Any], key: str, ok: Callable[[Any], str | None] = nonempty_str
) -> str | None:
    """``raw[key]`` as a non-empty string, or None with the problem recorded (``missing key`` when absent)."""
    if key not in raw:
        c.error(path, f"missing {key}")
        return None
    result: str | None = c.value(f"{path}.{key}", raw[key], "a non-empty string", ok)
    return result


def _secret(c: Checker, path: str, raw: Mapping[str, Any], key: str) -> tuple[str | None, str | None]:
    """``key`` or ``key_file``, exactly one: (value, file path)."""
    if key in raw and f"{key}_file" in raw:
        c.error(path, f"{key} and {key}_file are both set; set exactly one")
    elif key in raw:
        return c.value(f"{path}.{key}", raw[key], "a non-empty string", nonempty_str), None
    elif f"{key}_file" in raw:
        return None, check_file(c, f"{path}.{key}_file", raw[f"{key}_file"])
    else:
        c.error(path, f"missing {key}; set {key} or {key}_file")
    return None, None


def _auth(c: Checker, path: str, raw: Any) -> AuthConfig | None:
    if not isinstance(raw, dict):
        c.error(path, f"expected a mapping, got {show(raw)}")
        return None
    before = len(c.errors)
    kind = raw.get("kind")
    if kind not in AUTH_KEYS:
        c.error(f"{path}.kind" if "kind" in raw else path, f"expected kind password or aksk, got {show(kind)}")
        return None
    c.known_keys(raw, AUTH_KEYS[kind], path)
    checked = check_url(c, f"{path}.url", raw["url"]) if "url" in raw else None
    if "url" not in raw:
        c.error(path, "missing url (the AC host)")
    user = _required(c, path, raw, "user")
    region = raw.get("region")
    if region is not None:
        region = c.value(f"{path}.region", region, "a clusterId or clusterName", id_text)
    password = password_file = org_id = access_key = secret_key = secret_key_file = None
    if kind == "password":
        password, password_file = _secret(c, path, raw, "password")
        org_id = _required(c, path, raw, "org_id", id_text)
    else:
        access_key = _required(c, path, raw, "access_key")
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


def _cluster(c: Checker, path: str, raw: Any, top: Mapping[str, Any]) -> ClusterConfig | None:
    if not isinstance(raw, dict):
        c.error(path, f"expected a mapping, got {show(raw)}")
        return None
    c.known_keys(raw, CLUSTER_KEYS, path)
    before = len(c.errors)
    name = raw.get("name")
    if name is None:
        c.error(path, "missing name")
    elif not isinstance(name, str) or not NAME_RE.match(name):
        c.error(f"{path}.name", f"expected letters, digits, _ . or -, got {show(name)}")
    api_url = api_authorization = None
    if raw.get("api_url") is None:
        if "auth" not in raw:
            c.error(path, "missing api_url (it can only be discovered with auth)")
    else:
        checked = check_url(c, f"{path}.api_url", raw["api_url"])
        if checked is not None:
            api_url, api_authorization = checked
    ids = check_scheduler_ids(c, f"{path}.cluster_ids", raw["cluster_ids"]) if "cluster_ids" in raw else ()
    token = token_file = auth = None
    given = [key for key in ("token", "token_file", "auth") if key in raw]
    if len(given) > 1:
        c.error(path, f"{' and '.join(given)} are set; set exactly one of token, token_file, auth")
    elif "token" in raw:
        token = c.value(f"{path}.token", raw["token"], "a non-empty string", nonempty_str)
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
    for key in ("verify_tls", *OVERRIDABLE):
        if key in raw:
            settings[key] = check_setting(c, f"{path}.{key}", key, raw[key])
    ca_file = check_file(c, f"{path}.ca_file", raw["ca_file"]) if "ca_file" in raw else None
    if ca_file is not None and settings.get("verify_tls") is False:
        c.error(f"{path}.ca_file", "set, but verify_tls is false; remove one of them")
    elif ca_file is not None and not loads_as_ca(ca_file):
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


def _clusters(c: Checker, raw: Any, top: Mapping[str, Any]) -> tuple[ClusterConfig, ...]:
    """The valid clusters of the list, with the top level's settings as their defaults; names must be unique."""
    if not isinstance(raw, list) or not raw:
        c.error("clusters", f"expected a non-empty list of clusters, got {show(raw)}")
        return ()
    clusters: list[ClusterConfig] = []
    first_seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        cluster = _cluster(c, f"clusters[{i}]", item, top)
        if cluster is not None:
            clusters.append(cluster)
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str):
            continue
        if name in first_seen:
            c.error(f"clusters[{i}].name", f'duplicate cluster name "{name}" (also clusters[{first_seen[name]}])')
        else:
            first_seen[name] = i
    return tuple(clusters)


def build_config(data: Any, environ: Mapping[str, str] | None = None, base_dir: str = ".") -> Config:
    """Validate parsed YAML into a Config, or raise ConfigError listing every problem.

    ``environ`` supplies ``${VAR}`` (default: the process environment); relative file paths are taken
    from ``base_dir``.
    """
    c = Checker(base_dir)
    if not isinstance(data, dict):
        raise ConfigError([f"(top level): expected a mapping of settings, got {show(data)}"])
    data = _expand(c, os.environ if environ is None else environ, data, "")
    c.known_keys(data, TOP_KEYS, "")
    if "lean_http" in data:
        log.warning(
            "lean_http is ignored: one HTTP transport now serves every request, proxies included",
            extra={"key": "lean_http"},
        )
    top: dict[str, Any] = dict(DEFAULTS)
    for key in TOP_KEYS:
        if key in data and key in SETTINGS:
            value = check_setting(c, key, key, data[key])
            if value is not None:
                top[key] = value
    if "web_config_file" in data:
        top["web_config_file"] = check_file(c, "web_config_file", data["web_config_file"])
    if "listen_address" in data:
        raw = data["listen_address"]
        if not isinstance(raw, str):
            c.error("listen_address", f"expected host:port like 0.0.0.0:10863, got {show(raw)}")
        else:
            try:
                parse_listen_address(raw)
                top["listen_address"] = raw
            except ValueError as exc:
                c.error("listen_address", str(exc))
    top["clusters"] = _clusters(c, data.get("clusters"), top)
    if c.errors:
        raise ConfigError(c.errors)
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
        data = yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        # Only the problem and its position: the YAML error's own text quotes the line, which may hold a secret.
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError([f"{path}: invalid YAML at {where}: {exc.problem}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: invalid YAML: {type(exc).__name__}"]) from None
    return build_config(data, environ, os.path.dirname(os.path.abspath(path)))
