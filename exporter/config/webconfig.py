"""The web config file, in the Prometheus exporter-toolkit's format and with its meaning: TLS (optionally mutual),
HTTP headers, basic auth with bcrypt hashes and a rate limit. Every problem names its key and the reason, as the
toolkit's would; what the toolkit loads but serves badly is a warning."""

from __future__ import annotations

import os
import re
import ssl
from dataclasses import dataclass, field
from typing import Any

from exporter.config.checks import Checker, ConfigError, Invalid, read_yaml, show
from exporter.tls import AUTH_TYPES, Pem, ServerTLS, Settings, TLSError

TOP_KEYS = ("tls_server_config", "http_server_config", "basic_auth_users", "rate_limit")
TLS_KEYS = ("cert", "key", "client_ca", "cert_file", "key_file", "client_auth_type", "client_ca_file",
            "cipher_suites", "curve_preferences", "min_version", "max_version", "prefer_server_cipher_suites",
            "client_allowed_sans")  # fmt: skip
_TEXT_KEYS = TLS_KEYS[:7]  # any of them given turns TLS on, as in the toolkit
VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
            "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}  # fmt: skip
# Go's tls.CipherSuites() and OpenSSL's names for them; TLS 1.3's suites cannot be chosen, in Go as in OpenSSL.
CIPHERS = {
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
HTTP2_CIPHERS = ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256")
CURVES = {"CurveP256": "P-256", "CurveP384": "P-384", "CurveP521": "P-521", "X25519": "X25519"}
# The headers the toolkit lets a file set, with the values it allows (None: any).
HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}
_BCRYPT = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")  # costs 4-31, as bcrypt takes
_GO_DURATION = re.compile(r"[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class RateLimit:
    """The toolkit's token bucket: ``burst`` requests at once, one more every ``interval`` seconds."""

    interval: float
    burst: int


@dataclass(frozen=True)
class WebConfig:
    """What the HTTP server is configured with: TLS (None: plain HTTP), the headers of every answer, basic-auth
    users (empty: none), a rate limit (None: none); ``warnings`` are worth a log line."""

    tls: ServerTLS | None = None
    headers: dict[str, str] = field(default_factory=dict)
    users: dict[str, bytes] = field(default_factory=dict, repr=False)
    rate_limit: RateLimit | None = None
    warnings: tuple[str, ...] = ()


def go_duration(text: str) -> float:
    """Seconds in a Go duration (``1s``, ``1m30s``, ``250ms``, ``0``); ValueError if it is not one."""
    if text in ("0", "+0", "-0"):
        return 0.0
    if not _GO_DURATION.fullmatch(text):
        raise ValueError(f"invalid duration {show(text)} (a Go duration, like 1s or 250ms)")
    total = sum(float(n) * _GO_UNITS[u] for n, u in re.findall(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)", text))
    return -total if text.startswith("-") else total


def _string(c: Checker, path: str, raw: Any) -> str | None:
    if raw is None:
        return ""
    if isinstance(raw, (str, int, float)) and not isinstance(raw, bool):
        return str(raw)
    c.error(path, f"expected a string, got {show(raw)}")
    return None


def _readable(c: Checker, path: str, raw: str) -> str:
    """A file that can be read, as Go's os.ReadFile takes it (/dev/null and pipes too)."""
    name = os.path.join(c.base_dir, raw)
    if not os.path.exists(name):
        raise Invalid("no such file")
    if os.path.isdir(name):
        raise Invalid("is a directory")
    if not os.access(name, os.R_OK):
        raise Invalid("file is not readable")
    return name


def _names(c: Checker, path: str, raw: Any, known: dict[str, Any], what: str) -> list[str]:
    """A list of names from ``known``; each other one is an error, as the toolkit words it."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        c.error(path, f"expected a list, got {show(raw)}")
        return []
    for name in raw:
        if not isinstance(name, str) or name not in known:
            c.error(path, f"unknown {what}: {name}")
    return [name for name in raw if isinstance(name, str) and name in known]


def _tls(c: Checker, where: str, raw: Any, http2: bool, warnings: list[str]) -> Settings | None:
    if not isinstance(raw, dict):
        c.error(where, f"expected a mapping, got {show(raw)}")
        return None
    c.known_keys(raw, TLS_KEYS, where)
    before = len(c.errors)
    text = {key: _string(c, f"{where}.{key}", raw.get(key)) for key in _TEXT_KEYS}
    versions = {}
    for bound, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        name = raw.get(bound, default)
        if name not in VERSIONS:
            c.error(f"{where}.{bound}", f"unknown TLS version: {name}")
        versions[bound] = VERSIONS.get(name, VERSIONS[default])
    ciphers = _names(c, f"{where}.cipher_suites", raw.get("cipher_suites"), CIPHERS, "cipher")
    curves = _names(c, f"{where}.curve_preferences", raw.get("curve_preferences"), CURVES, "curve")
    prefer = raw.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        c.error(f"{where}.prefer_server_cipher_suites", f"expected true or false, got {show(prefer)}")
    sans = raw.get("client_allowed_sans")
    if sans is not None and not (isinstance(sans, list) and all(isinstance(s, str) for s in sans)):
        c.error(f"{where}.client_allowed_sans", "expected a list of strings")
    if len(c.errors) > before:
        return None
    if not any(text.values()):  # the toolkit serves plain HTTP then
        if raw:
            warnings.append(f"{where}: no certificate given, so plain HTTP is served (as the toolkit does)")
        return None
    if not text["cert_file"] and not text["cert"]:
        c.error(where, "missing one of cert or cert_file")
    if not text["key_file"] and not text["key"]:
        c.error(where, "missing one of key or key_file")
    pems: dict[str, Pem | None] = {}
    for name in ("cert", "key", "client_ca"):
        if text[f"{name}_file"]:
            if text[name]:
                warnings.append(f"{where}: {name}_file is used and {name} is ignored (as in the toolkit)")
            path = c.check(f"{where}.{name}_file", text[f"{name}_file"], _readable)
            pems[name] = None if path is None else Pem(f"{name}_file", path=path)
        elif text[name]:
            pems[name] = Pem(name, text=text[name] or "")
    auth = text["client_auth_type"] or "NoClientCert"
    if auth == "RequireClientCert":  # the toolkit's older name
        auth = "RequireAnyClientCert"
    if auth not in AUTH_TYPES:
        c.error(f"{where}.client_auth_type", f"invalid ClientAuth: {auth} (expected one of {', '.join(AUTH_TYPES)})")
    ca_key = "client_ca_file" if text["client_ca_file"] else "client_ca"
    if "client_ca" in pems and auth == "NoClientCert":
        c.error(f"{where}.{ca_key}", "client CA's have been configured without a Client Auth Policy (client_auth_type)")
    if versions["min_version"] > versions["max_version"]:
        c.error(f"{where}.min_version", "is above max_version: no client could connect")
    if http2 and ciphers and versions["min_version"] < ssl.TLSVersion.TLSv1_3 and not set(HTTP2_CIPHERS) & set(ciphers):
        c.error(
            f"{where}.cipher_suites",
            f"is missing an HTTP/2-required AES_128_GCM_SHA256 cipher (need at least one of {' or '.join(HTTP2_CIPHERS)}),"
            " as the toolkit requires while http_server_config.http2 is true (this server speaks HTTP/1.1 either way)",
        )
    openssl_ciphers = tuple(name for name in map(CIPHERS.get, ciphers) if name)
    if ciphers and not openssl_ciphers:  # only TLS 1.3 suites listed: TLS 1.2 and below can agree on none
        if versions["max_version"] < ssl.TLSVersion.TLSv1_3:
            c.error(f"{where}.cipher_suites", "lists only TLS 1.3 suites but max_version is below TLS13")
        versions["min_version"] = ssl.TLSVersion.TLSv1_3
    cert, key = pems.get("cert"), pems.get("key")
    if len(c.errors) > before or cert is None or key is None:
        return None
    if sans is not None and auth == "NoClientCert":
        warnings.append(f"{where}.client_allowed_sans: no client certificate is asked for with NoClientCert, so no SAN "
                        "is checked (as in the toolkit)")  # fmt: skip
    if auth in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert") and "client_ca" not in pems:
        warnings.append(f"{where}.client_auth_type: {auth} without client_ca_file checks client certificates against "
                        "the system's CAs (as the toolkit does); set client_ca_file to trust your own CA")  # fmt: skip
    return Settings(
        cert=cert,
        key=key,
        client_ca=pems.get("client_ca"),
        client_auth=auth,
        allowed_sans=None if sans is None else tuple(sans),
        ciphers=openssl_ciphers,
        groups=tuple(CURVES[name] for name in curves),
        min_version=versions["min_version"],
        max_version=versions["max_version"],
        prefer_server_ciphers=prefer,
    )


def _http(c: Checker, where: str, raw: Any) -> tuple[dict[str, str], bool]:
    if not isinstance(raw, dict):
        c.error(where, f"expected a mapping, got {show(raw)}")
        return {}, True
    c.known_keys(raw, ("headers", "http2"), where)
    http2 = raw.get("http2", True)
    if not isinstance(http2, bool):
        c.error(f"{where}.http2", f"expected true or false, got {show(http2)}")
    headers: dict[str, str] = {}
    given = raw.get("headers") or {}
    if not isinstance(given, dict):
        c.error(f"{where}.headers", f"expected a mapping, got {show(given)}")
        given = {}
    for name, raw_value in given.items():
        value = _string(c, f"{where}.headers.{name}", raw_value)
        if name not in HEADERS:
            c.error(f"{where}.headers.{name}", f'HTTP header "{name}" can not be configured')
        elif value is None:
            continue
        elif HEADERS[name] is not None and value not in (HEADERS[name] or ()):
            allowed = " ".join(f'"{v}"' for v in HEADERS[name] or ())
            c.error(
                f"{where}.headers.{name}", f'invalid value for {name}. Expected one of: [{allowed}], but got: "{value}"'
            )
        elif any(ord(ch) < 32 and ch != "\t" or ord(ch) == 127 for ch in value):
            c.error(f"{where}.headers.{name}", "a header value cannot hold control characters")
        elif value:  # a blank one sets no header
            headers[name] = value
    return headers, http2 is not False


def _rate_limit(c: Checker, where: str, raw: Any) -> RateLimit | None:
    if not isinstance(raw, dict):
        c.error(where, f"expected a mapping, got {show(raw)}")
        return None
    c.known_keys(raw, ("interval", "burst"), where)
    interval, burst = raw.get("interval", 0), raw.get("burst", 0)
    if isinstance(interval, int) and not isinstance(interval, bool):
        seconds = interval / 1e9  # a bare number is nanoseconds in the toolkit's YAML
    elif isinstance(interval, str):
        try:
            seconds = go_duration(interval)
        except ValueError as exc:
            c.error(f"{where}.interval", str(exc))
            return None
    else:
        c.error(f"{where}.interval", f"expected a duration, like 1s, got {show(interval)}")
        return None
    if not isinstance(burst, int) or isinstance(burst, bool):
        c.error(f"{where}.burst", f"expected a whole number, got {show(burst)}")
        return None
    return RateLimit(seconds, burst) if seconds > 0 else None  # 0 turns it off; Go's limiter takes < 0 as no limit


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
    raw = read_yaml(path, "web_config_file: ")
    if raw is None:
        return WebConfig()
    if not isinstance(raw, dict):
        raise ConfigError([f"{prefix}expected a mapping of {', '.join(TOP_KEYS)}"])
    c = Checker(os.path.dirname(os.path.abspath(path)))  # relative paths are relative to this file
    top = Checker(c.base_dir)
    top.known_keys(raw, TOP_KEYS, "")
    c.errors += [prefix + error for error in top.errors]
    warnings: list[str] = []
    headers: dict[str, str] = {}
    http2 = True
    if raw.get("http_server_config") is not None:
        headers, http2 = _http(c, f"{prefix}http_server_config", raw["http_server_config"])
    settings = None
    if raw.get("tls_server_config") is not None:
        settings = _tls(c, f"{prefix}tls_server_config", raw["tls_server_config"], http2, warnings)
    users = (
        {} if raw.get("basic_auth_users") is None else _users(c, f"{prefix}basic_auth_users", raw["basic_auth_users"])
    )
    rate_limit = None if raw.get("rate_limit") is None else _rate_limit(c, f"{prefix}rate_limit", raw["rate_limit"])
    if rate_limit and rate_limit.burst < 1:
        warnings.append(f"{prefix}rate_limit.burst: {rate_limit.burst} refuses every request (429), as in the toolkit")
    tls = None
    if settings is not None and not c.errors:
        try:
            tls = ServerTLS(settings)
        except TLSError as exc:
            c.error(f"{prefix}tls_server_config.{exc.key}", exc.reason)
    if c.errors:
        raise ConfigError(c.errors)
    return WebConfig(tls, headers, users, rate_limit, tuple(warnings))
