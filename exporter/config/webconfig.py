"""/metrics protection in the Prometheus exporter-toolkit's web config format: TLS (optionally mutual) and basic
auth with bcrypt hashes. Loaded and checked once at start; every problem names its key."""

from __future__ import annotations

import os
import re
import ssl
from dataclasses import dataclass, field
from typing import Any

import yaml

from exporter.config.checks import Checker, ConfigError

TLS_KEYS = ("cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version")
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_BCRYPT = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")  # costs 4-31, as bcrypt takes


@dataclass(frozen=True)
class WebConfig:
    """What protects the HTTP server: an SSL context (None: plain HTTP) and basic-auth users (empty: none)."""

    tls: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict, repr=False)


def _choice(c: Checker, path: str, raw: Any, choices: dict[str, Any]) -> Any:
    if isinstance(raw, str) and raw in choices:
        return choices[raw]
    c.error(path, f"expected one of {', '.join(choices)}, got {raw!r}")
    return None


def _tls(c: Checker, where: str, raw: Any) -> ssl.SSLContext | None:
    if not isinstance(raw, dict):
        c.error(where, "expected a mapping")
        return None
    for key in raw:
        if key not in TLS_KEYS:
            c.error(f"{where}.{key}", f"not supported (supported: {', '.join(TLS_KEYS)})")
    before = len(c.errors)
    for needed in ("cert_file", "key_file"):
        if needed not in raw:
            c.error(where, f"missing {needed}")
    cert = c.check(f"{where}.cert_file", raw["cert_file"], Checker.file) if "cert_file" in raw else None
    key = c.check(f"{where}.key_file", raw["key_file"], Checker.file) if "key_file" in raw else None
    auth = raw.get("client_auth_type", "NoClientCert")
    verify = _choice(c, f"{where}.client_auth_type", auth, CLIENT_AUTH)
    ca = c.check(f"{where}.client_ca_file", raw["client_ca_file"], Checker.file) if "client_ca_file" in raw else None
    if verify in (ssl.CERT_OPTIONAL, ssl.CERT_REQUIRED) and "client_ca_file" not in raw:
        c.error(f"{where}.client_ca_file", f"needed for client_auth_type {auth}")
    versions = {n: _choice(c, f"{where}.{n}", raw[n], VERSIONS) for n in ("min_version", "max_version") if n in raw}
    if len(c.errors) > before or cert is None or key is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = versions.get("min_version", ssl.TLSVersion.TLSv1_2)
    context.maximum_version = versions.get("max_version", ssl.TLSVersion.MAXIMUM_SUPPORTED)
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError):
        c.error(f"{where}.cert_file", "cannot load the certificate and key (PEM files that belong together?)")
        return None
    context.verify_mode = verify
    if ca is not None:
        try:
            context.load_verify_locations(cafile=ca)
        except (ssl.SSLError, OSError):
            c.error(f"{where}.client_ca_file", "cannot load the CA certificates (a PEM file?)")
            return None
    return context


def _users(c: Checker, where: str, raw: Any) -> dict[str, bytes]:
    if not isinstance(raw, dict):
        c.error(where, "expected a mapping of user names to bcrypt hashes")
        return {}
    users = {}
    for user, hashed in raw.items():
        if not isinstance(user, str) or not user or ":" in user:
            c.error(where, "a user name must be a non-empty string without ':'")
        elif not isinstance(hashed, str) or not _BCRYPT.fullmatch(hashed.strip()):
            c.error(f"{where}.{user}", "expected a bcrypt hash ($2y$..., 60 characters); the value is not shown")
        else:
            users[user] = hashed.strip().encode("ascii")
    return users


def load_web_config(path: str) -> WebConfig:
    """Read a web config file; every problem is a ConfigError line that names the file and the key."""
    prefix = f"web_config_file {path}: "
    try:
        with open(path, encoding="utf-8") as handle:
            raw = yaml.safe_load(handle)
    except FileNotFoundError:
        raise ConfigError([f"web_config_file: {path}: no such file"]) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        kind = "invalid YAML" if isinstance(exc, yaml.YAMLError) else "cannot read"
        raise ConfigError([f"web_config_file: {path}: {kind}"]) from None
    if raw is None:
        return WebConfig()
    if not isinstance(raw, dict):
        raise ConfigError([f"{prefix}expected a mapping"])
    c = Checker(os.path.dirname(os.path.abspath(path)))  # relative paths are relative to this file
    for key in raw:
        if key not in ("tls_server_config", "basic_auth_users"):
            c.error(f"{prefix}{key}", "not supported (supported: tls_server_config, basic_auth_users)")
    tls = raw.get("tls_server_config")
    tls = None if tls is None else _tls(c, f"{prefix}tls_server_config", tls)
    users = raw.get("basic_auth_users")
    users = {} if users is None else _users(c, f"{prefix}basic_auth_users", users)
    if c.errors:
        raise ConfigError(c.errors)
    return WebConfig(tls=tls, users=users)
