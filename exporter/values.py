"""Rules for single values, shared by every layer (imports nothing of ours): ASCII decimals, API base URLs and
their userinfo, header values, JWT expiry, and secrets masked out of messages."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

MAX_DIGITS = 4000  # int() refuses more than 4,300 digits


def ascii_int(value: object) -> int | None:
    """A string of ASCII digits (spaces around allowed) as an int, else None; str.isdigit() alone passes "²"."""
    text = value.strip() if isinstance(value, str) else ""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= MAX_DIGITS else None


def count(value: object, limit: int | None = None) -> int | None:
    """A non-negative int from an int or a digit string (``total`` has been seen as both); None above ``limit``."""
    if isinstance(value, bool):
        return None
    n = (value if value >= 0 else None) if isinstance(value, int) else ascii_int(value)
    return None if n is None or (limit is not None and n > limit) else n


_HOST = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[^\s/?#@\[\]<>\"\\^`{|}%:]+)$")


def normalise_api_url(url: str) -> str:
    """Strip trailing slashes and one trailing ``/hpc``: deployments hand the HPC URL out both ways."""
    return url.rstrip("/").removesuffix("/hpc").rstrip("/")


def _split(url: str) -> SplitResult | None:
    try:
        return urlsplit(url)
    except ValueError:  # an unbalanced "[" in the host
        return None


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be an API base URL (scheme, host, port), or None. Never quotes the URL."""
    parts = _split(url)
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        return "expected an http:// or https:// URL"
    host = parts.netloc.rpartition("@")[2]
    hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    if not hostname or not _HOST.match(hostname) or any(not ch.isprintable() for ch in url):
        return "expected an http:// or https:// URL with a valid host name"
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not 0 < port < 65536:
        return "the port must be a number from 1 to 65535"
    return None


def without_userinfo(url: str) -> str:
    """``url`` with any ``user:password@`` removed, for showing it (a redirect's Location, say)."""
    parts = _split(url)
    if parts is None:
        return "(a URL that cannot be parsed)" if "@" in url else url
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def split_credentials(url: str) -> tuple[str, str | None]:
    """(``url`` without its userinfo, the ``Authorization`` its userinfo asks for or None); user and password are
    percent-decoded and sent as UTF-8, as httpx does."""
    parts = _split(url)
    if parts is None or "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    pair = f"{unquote(user)}:{unquote(password)}".encode()
    return parts._replace(netloc=host).geturl(), "Basic " + base64.b64encode(pair).decode("ascii")


# A header we send (RFC 9110): a name is a token, a value visible ASCII, spaces and tabs; never CR or LF.
_VISIBLE = r"\x21-\x7e"
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_VALUE = re.compile(rf"[{_VISIBLE} \t]*")
_TOKEN = re.compile(rf"[{_VISIBLE}]+")


def is_header(name: str, value: str) -> bool:
    """Whether ``name: value`` may go in a request we send."""
    return _HEADER_NAME.fullmatch(name) is not None and _HEADER_VALUE.fullmatch(value) is not None


def token_problem(token: str) -> str | None:
    """Why a token cannot be sent in a ``token:`` header (a header value without whitespace), or None."""
    if not token:
        return "is empty"
    if _TOKEN.fullmatch(token) is None:
        return "contains whitespace, control or non-ASCII characters"
    return None


def jwt_payload(token: str) -> dict[str, Any]:
    """The decoded payload of a JWT (no signature check), or {} when it is not one."""
    try:
        _, body, _ = token.split(".")  # ValueError unless three parts
        payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):  # Recursion: JSON nested too deep
        return {}
    return payload if isinstance(payload, dict) else {}


MAX_EXPIRY = 253402300799.0  # 9999-12-31 23:59:59 UTC


def jwt_expiry(token: str) -> float | None:
    """Expiry (Unix seconds) from a JWT's ``expireTime`` (epoch ms, a string) or else ``exp``, if from 1970 to 9999."""
    payload = jwt_payload(token)
    for key, scale in (("expireTime", 1000.0), ("exp", 1.0)):
        value = payload.get(key)
        if isinstance(value, str):
            value = ascii_int(value)
        # Compared before dividing: a 4,000-digit int cannot be made a float.
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= MAX_EXPIRY * scale:
            return float(value) / scale
    return None


MASK = "***"
# Masked, in order: a JWT; a URL's userinfo; the value after a secret-looking key; a base64-looking credential
# after Bearer or Basic; any other long run of letters and digits (an opaque token).
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)(?:[^\s/?#@]*@)+")
_SECRET_KEY = re.compile(
    r"(?i)(?<![\w/.-])([\w-]*(?:authorization|cookie|token|passw(?:or)?d|pwd|secret|api[_-]?key|access[_-]?key|signature)"
    r"[\"']?\s*[:=\uff1a]\s*[\"']?(?:(?:basic|bearer|token|digest)\s+)?)[^\s\"'&,;}]+"
)
_SCHEME_CREDENTIAL = re.compile(
    r"\b((?i:bearer|basic)\s+)(?=[A-Za-z0-9._~+/-]*(?:[0-9+/=]|[a-z][A-Z]))[A-Za-z0-9._~+/-]{4,}=*"
)
_OPAQUE = re.compile(r"(?<![A-Za-z0-9_+=-])(?=[A-Za-z_+=-]*[0-9])(?=[0-9_+=-]*[A-Za-z])[A-Za-z0-9_+=-]{32,}")


def without_secrets(text: str, limit: int = 500) -> str:
    """``text`` (a message kept to show, quoting a server, say) with secrets masked, cut to ``limit`` characters."""
    text = _JWT.sub(MASK, text)
    text = _USERINFO.sub(rf"\1{MASK}@", text)
    text = _SECRET_KEY.sub(rf"\1{MASK}", text)
    text = _SCHEME_CREDENTIAL.sub(rf"\1{MASK}", text)
    text = _OPAQUE.sub(MASK, text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
