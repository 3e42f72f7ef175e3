"""How every request to the Sugon API goes: one whole-exchange timeout, errors as types, one retry when transient,
a bound on the body, and the {code, msg, data} envelope read by stdlib json (job pages into Rows)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import httpx
import msgspec

from exporter.model import Row
from exporter.sugon.connection import MAX_BODY, BodyTooLarge
from exporter.sugon.transport import check_header
from exporter.values import ascii_int, count, without_userinfo

log = logging.getLogger(__name__)

# 10012 "connection interrupted" and 10013 "timed out" are the server's own transient failures.
TRANSIENT_CODES = frozenset({"10012", "10013"})
AUTH_CODES = frozenset({"10008"})


class ApiError(Exception):
    """Any failed API call; ``reason`` is the ``sugon_api_errors_total`` label, ``transient`` earns a retry."""

    reason: ClassVar[str] = "invalid_response"

    def __init__(self, message: str, transient: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after


class ApiTimeout(ApiError):
    """The request took longer than ``timeout``."""

    reason = "timeout"


class ApiConnectionError(ApiError):
    """Connecting, sending or reading the body failed."""

    reason = "connection"


class ApiHttpError(ApiError):
    """A non-2xx HTTP status that is not an auth rejection."""

    reason = "http_status"


class ApiInvalidResponse(ApiError):
    """The body is not the JSON envelope, or ``data`` is not shaped as documented."""

    reason = "invalid_response"


class ApiAuthError(ApiError):
    """The token was rejected (code 10008, HTTP 401/403) or none could be had."""

    reason = "auth"


class ApiCodeError(ApiError):
    """The envelope carried a non-zero ``code`` other than an auth rejection."""

    reason = "api_code"

    def __init__(self, code: str, msg: str) -> None:
        super().__init__(f"API code {code}: {msg}", transient=code in TRANSIENT_CODES)
        self.code = code


class Observer(Protocol):
    """Told of every request, failed attempt, token in use and token refresh (for a cluster's self-metrics)."""

    def request_sent(self) -> None: ...
    def request_failed(self, reason: str) -> None: ...
    def token_expiry(self, timestamp: float | None) -> None: ...
    def token_refresh(self, method: str, result: str) -> None: ...


class _Unobserved:
    """Where nobody keeps self-metrics (tests, benchmarks): every report is dropped."""

    def request_sent(self) -> None: ...
    def request_failed(self, reason: str) -> None: ...
    def token_expiry(self, timestamp: float | None) -> None: ...
    def token_refresh(self, method: str, result: str) -> None: ...


UNOBSERVED: Observer = _Unobserved()


def clip(value: Any, limit: int = 200) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


MAX_RETRY_AFTER = 10.0  # a Retry-After longer than this is not waited for within a poll


@dataclass(frozen=True)
class Reply:
    """An answer as the exporter reads it: status, headers and the body (decoded, read whole)."""

    status_code: int
    headers: httpx.Headers
    content: bytes


def check_status(answer: Reply | httpx.Response) -> None:
    """Raise the ApiError that an answer's status other than a success amounts to."""
    status = answer.status_code
    if status == 401 and answer.headers.get("www-authenticate", "").strip().partition(" ")[0].lower() == "basic":
        # A gateway in front of the API, not the API refusing the token (which never asks for Basic).
        raise ApiHttpError(
            "HTTP 401 from a gateway that asks for Basic credentials: give them in the URL as "
            "https://user:password@host/ (percent-encoded), or check the ones given"
        )
    if status in (401, 403):
        raise ApiAuthError(f"HTTP {status}")
    if status == 407:
        raise ApiHttpError(
            "HTTP 407 from the proxy: it wants credentials; give them in the proxy variable's URL as "
            "http://user:password@host:port (percent-encoded), or check the ones given"
        )
    if 300 <= status < 400:
        location = answer.headers.get("location")
        where = f" to {clip(without_userinfo(location.strip()), 120)}" if location else ""
        raise ApiHttpError(
            f"HTTP {status} redirect{where}: redirects are not followed; set api_url (or auth.url) to the new address"
        )
    if status >= 300:
        # Retry-After in seconds; its HTTP-date form is not worth waiting for within a poll, a huge one is no float.
        seconds = ascii_int(answer.headers.get("retry-after", "").strip())
        retry_after = float(min(seconds, MAX_RETRY_AFTER + 1)) if seconds is not None else None
        raise ApiHttpError(f"HTTP {status}", transient=status >= 500 or status == 429, retry_after=retry_after)


def check_code(code: Any, msg: Any, refusal_is_auth: bool = False) -> None:
    """Raise the ApiError that an envelope's ``code`` other than "0" amounts to; with ``refusal_is_auth`` (logins
    and renewals) every non-zero code means "credentials not accepted"."""
    code = str(code).strip() if isinstance(code, (str, int)) and not isinstance(code, bool) else None
    if code is None:
        raise ApiInvalidResponse("envelope code is not a string")
    if code == "0":
        return
    try:
        text = clip(msg)
    except RecursionError:  # a msg nested nearly as deep as the decoder allows
        text = "(nested too deeply to show)"
    if code in AUTH_CODES or (refusal_is_auth and code not in TRANSIENT_CODES):
        raise ApiAuthError(f"API code {code}: {text}")
    raise ApiCodeError(code, text)


Page = tuple[int, list["Row | None"]]  # (data.total, the rows; None for a row that is not an object)


def parse_envelope(answer: Reply | httpx.Response, refusal_is_auth: bool = False) -> Any:
    """``data`` of a successful answer; otherwise the ApiError the answer amounts to. Bodies are read by stdlib
    json, which reads what the API may send that is not strict JSON (NaN, lone surrogates) into values the
    checks downstream bound (bench/RESULTS.md, issue 25)."""
    check_status(answer)
    try:
        body = json.loads(answer.content)
    except ValueError:  # UnicodeDecodeError too
        kind = clip(answer.headers.get("content-type", "no content-type"), 60)
        raise ApiInvalidResponse(f"body is not JSON ({kind}, {len(answer.content)} bytes)") from None
    except RecursionError:  # json refuses nesting deeper than the interpreter's recursion limit
        raise ApiInvalidResponse(f"body is JSON nested too deeply ({len(answer.content)} bytes)") from None
    if not isinstance(body, dict) or "code" not in body:
        raise ApiInvalidResponse("body is not the {code, msg, data} envelope")
    check_code(body["code"], body.get("msg"), refusal_is_auth)
    return body.get("data")


def decode_job_page(answer: Reply | httpx.Response) -> Page:
    """``(data.total, rows)`` of a job-list answer, each row's fields that a Row has (as json read them); otherwise
    the ApiError it amounts to."""
    data = parse_envelope(answer)
    if not isinstance(data, dict):
        raise ApiInvalidResponse(f"job list data is {type(data).__name__}, not an object")
    total = count(data.get("total"))
    if total is None:  # a scalar is shown, anything else by its type (its repr could be huge or too deep)
        shown = data.get("total")
        scalar = shown is None or isinstance(shown, (bool, int, float, str))
        raise ApiInvalidResponse(
            f"job list total is missing or not a count ({clip(repr(shown), 40) if scalar else type(shown).__name__})"
        )
    rows = data.get("list")
    if rows is None and total == 0:
        return 0, []
    if not isinstance(rows, list):
        raise ApiInvalidResponse(f"job list 'list' is {type(rows).__name__}, not a list")
    return total, [msgspec.convert(raw, Row) if isinstance(raw, dict) else None for raw in rows]


class Conversation:
    """Sends requests over one pooled HTTP client with a whole-exchange timeout and one retry when transient."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        timeout: float,
        observer: Observer | None = None,
        retry_backoff: float = 0.5,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.http = http
        self.timeout = timeout
        self.observer = observer or UNOBSERVED
        self._retry_backoff = retry_backoff
        self._sleep = sleep

    async def call(
        self,
        method: str,
        url: str,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        refusal_is_auth: bool = False,
        job_page: bool = False,
    ) -> Any:
        """``data`` of the answer (with ``job_page``, its Page); every failed attempt is counted, and a transient
        one is retried once."""
        headers = headers or {}
        retried = False
        while True:
            self.observer.request_sent()
            try:
                answer = await self._send(method, url, params, headers)
                return decode_job_page(answer) if job_page else parse_envelope(answer, refusal_is_auth)
            except ApiError as exc:
                self.observer.request_failed(exc.reason)
                if retried or not exc.transient or (exc.retry_after or 0) > MAX_RETRY_AFTER:
                    raise
                log.debug(
                    "%s %s failed (%s), retrying once",
                    method,
                    url,
                    exc,
                    extra={"method": method, "url": url, "reason": exc.reason},
                )
                delay = max(self._retry_backoff, exc.retry_after or 0)  # a server that says when gets its wish
            retried = True
            await self._sleep(delay)

    async def _send(self, method: str, url: str, params: dict[str, Any] | None, headers: dict[str, str]) -> Reply:
        try:
            # This bounds the whole exchange; httpx's own timeout is per read, and a trickling body could outlast it.
            return await asyncio.wait_for(self._exchange(method, url, params, headers), self.timeout)
        except (httpx.TimeoutException, asyncio.TimeoutError):
            raise ApiTimeout(f"no answer within {self.timeout:g}s", transient=True) from None
        except BodyTooLarge as exc:  # what the server sends is wrong: asking again would not help
            raise ApiInvalidResponse(clip(exc)) from None
        except httpx.TransportError as exc:
            raise ApiConnectionError(f"{type(exc).__name__}: {clip(exc)}", transient=True) from None
        except httpx.HTTPError as exc:
            raise ApiConnectionError(f"{type(exc).__name__}: {clip(exc)}") from None

    async def _exchange(self, method: str, url: str, params: dict[str, Any] | None, headers: dict[str, str]) -> Reply:
        # httpx would raise UnicodeEncodeError for a header beyond ASCII, quoting it: it may be a secret.
        for name, value in headers.items():
            check_header(name, value)
        # Built with ``params``, the URL is parsed once (httpx would parse it again to add them).
        target = httpx.URL(url, params=params) if params else url
        async with self.http.stream(method, target, headers=headers) as response:
            # The transport bounds the body as sent; this bounds it decompressed, piece by piece.
            parts: list[bytes] = []
            size = 0
            async for part in response.aiter_bytes():
                size += len(part)
                if size > MAX_BODY:
                    raise BodyTooLarge(f"response body too large (over {MAX_BODY} bytes, decompressed)")
                parts.append(part)
            return Reply(status_code=response.status_code, headers=response.headers, content=b"".join(parts))
