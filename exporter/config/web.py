"""/metrics protection in the Prometheus exporter-toolkit's web config format: TLS (optionally mutual) and
basic auth with bcrypt hashes. Loaded and checked once at start; every problem names its key."""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import os
import re
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import bcrypt
import yaml

from exporter.config import Checker, ConfigError, check_file

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
_BCRYPT = re.compile(r"^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")  # costs 4-31, as bcrypt takes
REALM = "sugon-exporter"


@dataclass(frozen=True)
class WebConfig:
    """What protects the HTTP server: an SSL context (None: plain HTTP) and basic-auth users (empty: none)."""

    tls: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict, repr=False)


def _tls(c: Checker, prefix: str, raw: Any) -> ssl.SSLContext | None:
    where = f"{prefix}tls_server_config"
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
    cert = check_file(c, f"{where}.cert_file", raw["cert_file"]) if "cert_file" in raw else None
    key = check_file(c, f"{where}.key_file", raw["key_file"]) if "key_file" in raw else None
    auth = raw.get("client_auth_type", "NoClientCert")
    if auth not in CLIENT_AUTH:
        c.error(f"{where}.client_auth_type", f"expected one of {', '.join(CLIENT_AUTH)}, got {auth!r}")
    ca = check_file(c, f"{where}.client_ca_file", raw["client_ca_file"]) if "client_ca_file" in raw else None
    if auth in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert") and "client_ca_file" not in raw:
        c.error(f"{where}.client_ca_file", f"needed for client_auth_type {auth}")
    versions = {}
    for name in ("min_version", "max_version"):
        if name in raw:
            if raw[name] not in VERSIONS:
                c.error(f"{where}.{name}", f"expected one of {', '.join(VERSIONS)}, got {raw[name]!r}")
            else:
                versions[name] = VERSIONS[raw[name]]
    if len(c.errors) > before or cert is None or key is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = versions.get("min_version", ssl.TLSVersion.TLSv1_2)
    if "max_version" in versions:
        context.maximum_version = versions["max_version"]
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError):
        c.error(f"{where}.cert_file", "cannot load the certificate and key (PEM files that belong together?)")
        return None
    context.verify_mode = CLIENT_AUTH[auth]
    if ca is not None:
        try:
            context.load_verify_locations(cafile=ca)
        except (ssl.SSLError, OSError):
            c.error(f"{where}.client_ca_file", "cannot load the CA certificates (a PEM file?)")
            return None
    return context


def _users(c: Checker, prefix: str, raw: Any) -> dict[str, bytes]:
    where = f"{prefix}basic_auth_users"
    if not isinstance(raw, dict):
        c.error(where, "expected a mapping of user names to bcrypt hashes")
        return {}
    users = {}
    for user, hashed in raw.items():
        if not isinstance(user, str) or not user or ":" in user:
            c.error(where, "a user name must be a non-empty string without ':'")
        elif not isinstance(hashed, str) or not _BCRYPT.match(hashed.strip()):
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
    # Relative paths are relative to the web config file, as in the main config.
    c = Checker({}, os.path.dirname(os.path.abspath(path)))
    for key in raw:
        if key not in ("tls_server_config", "basic_auth_users"):
            c.error(f"{prefix}{key}", "not supported (supported: tls_server_config, basic_auth_users)")
    tls = _tls(c, prefix, raw["tls_server_config"]) if raw.get("tls_server_config") is not None else None
    users = _users(c, prefix, raw["basic_auth_users"]) if raw.get("basic_auth_users") is not None else {}
    if c.errors:
        raise ConfigError(c.errors)
    return WebConfig(tls, users)


class Verdict(enum.Enum):
    """What BasicAuth makes of a request's credentials."""

    ALLOW = "allow"
    DENY = "deny"
    BUSY = "busy"  # too many checks wait for bcrypt already: answer 503 at once rather than queue


def bcrypt_cost(hashed: bytes) -> int:
    """The cost (log2 of the rounds) of a bcrypt hash: 12 in ``$2b$12$...``."""
    return int(hashed[4:6])


class BasicAuth:
    """Checks ``Authorization: Basic`` against bcrypt hashes.

    bcrypt is slow on purpose, so: right (user, password) pairs are remembered for good, wrong ones for
    ``FAILED_FOR`` seconds (at most ``FAILED_KEPT`` of them); one bcrypt check runs at a time, and when
    ``max_pending`` already run or wait, a further check is answered BUSY at once, so that a flood of
    passwords ties up at most that many of the server's workers. Unknown users are checked against a hash of
    the users' highest cost, so that timing does not tell which users exist.
    """

    FAILED_FOR = 60.0
    FAILED_KEPT = 4096

    def __init__(
        self, users: dict[str, bytes], max_pending: int = 4, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._users = users
        self._max_pending = max_pending
        self._clock = clock
        cost = max((bcrypt_cost(h) for h in users.values()), default=10)
        # A hash of a random password, checked for unknown users so that their answers take as long as known ones'.
        self._dummy = bcrypt.hashpw(os.urandom(16), bcrypt.gensalt(rounds=cost))
        self._key = os.urandom(32)  # fingerprints of pairs are keyed: no password's plain hash sits in memory
        self._ok: set[bytes] = set()
        self._failed: OrderedDict[bytes, float] = OrderedDict()  # fingerprint -> when it is forgotten
        self._pending = 0
        self._lock = threading.Lock()  # guards the three above
        self._bcrypt = threading.Lock()  # one bcrypt check at a time

    def allows(self, header: str | None) -> bool:
        """True when the header carries a known user and the right password."""
        return self.check(header) is Verdict.ALLOW

    def check(self, header: str | None) -> Verdict:
        """ALLOW, DENY, or BUSY when too many bcrypt checks are waiting; never raises on what a client sends."""
        pair = _credentials(header)
        if pair is None:
            return Verdict.DENY
        user, password = pair
        hashed = self._users.get(user)
        fingerprint = hmac.new(self._key, b"\0".join((user.encode(), password, hashed or b"")), hashlib.sha256).digest()
        with self._lock:
            known = self._known(fingerprint, hashed)
            if known is not None:
                return known
            if self._pending >= self._max_pending:
                return Verdict.BUSY
            self._pending += 1
        try:
            with self._bcrypt:
                with self._lock:  # another thread may have checked the same pair while this one waited
                    known = self._known(fingerprint, hashed)
                if known is None:
                    known = Verdict.ALLOW if self._checkpw(password, hashed) else Verdict.DENY
            with self._lock:
                if known is Verdict.ALLOW:
                    self._ok.add(fingerprint)
                else:
                    self._failed[fingerprint] = self._clock() + self.FAILED_FOR
                    self._failed.move_to_end(fingerprint)
                    while len(self._failed) > self.FAILED_KEPT:
                        self._failed.popitem(last=False)
            return known
        finally:
            with self._lock:
                self._pending -= 1

    def _known(self, fingerprint: bytes, hashed: bytes | None) -> Verdict | None:
        if hashed is not None and fingerprint in self._ok:
            return Verdict.ALLOW
        until = self._failed.get(fingerprint)
        if until is not None:
            if until > self._clock():
                return Verdict.DENY
            del self._failed[fingerprint]
        return None

    def _checkpw(self, password: bytes, hashed: bytes | None) -> bool:
        try:
            ok = bcrypt.checkpw(password, hashed if hashed is not None else self._dummy)
        except ValueError:  # bcrypt 5 refuses passwords over 72 bytes
            return False
        return ok and hashed is not None


def _credentials(header: str | None) -> tuple[str, bytes] | None:
    """(user, password) of a Basic Authorization header (the scheme in any case), or None."""
    scheme, _, encoded = (header or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        # WSGI hands header values over as Latin-1: any character above ASCII is not base64, hence ValueError.
        decoded = base64.b64decode(encoded.strip(), validate=True)
        user, sep, password = decoded.decode("utf-8").partition(":")
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        return None
    if not sep:
        return None
    return user, password.encode("utf-8")
