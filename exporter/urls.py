"""The API's base URLs: checked, normalised, and with their userinfo taken out as Basic credentials. Pure.

A gateway in front of the API may ask for Basic auth, given as ``https://user:pa%20ss@host``. The userinfo
leaves the URL here, once, so that no URL the exporter logs, raises or shows can carry it.
"""

from __future__ import annotations

import base64
import re
from urllib.parse import SplitResult, unquote, urlsplit

_HOST = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[^\s/?#@\[\]<>\"\\^`{|}%:]+)$")


def normalise_api_url(url: str) -> str:
    """Strip trailing slashes and one trailing ``/hpc``: deployments hand the HPC URL out both ways."""
    url = url.rstrip("/")
    if url.endswith("/hpc"):
        url = url[: -len("/hpc")].rstrip("/")
    return url


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
    """(``url`` without its userinfo, the ``Authorization`` header value its userinfo asks for, or None).

    User and password are percent-decoded and sent as UTF-8, as httpx does for a URL with userinfo.
    """
    parts = _split(url)
    if parts is None or "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    pair = f"{unquote(user)}:{unquote(password)}".encode()
    return parts._replace(netloc=host).geturl(), "Basic " + base64.b64encode(pair).decode("ascii")
