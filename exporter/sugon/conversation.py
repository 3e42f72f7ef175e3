"""How every request to the Sugon API goes: one whole-exchange timeout, errors as types, one retry when transient,
and the {code, msg, data} envelope read. Job pages go through the lean transport's GET when there is one."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, ClassVar, Protocol, TypeVar

import httpx

from exporter.sugon.http1 import MAX_BODY, Answer, BodyTooLarge, read_limited
from exporter.sugon.transport import LeanTransport, check_header, within
from exporter.values import ascii_int, without_userinfo

log = logging.getLogger(__name__)
T = TypeVar("T")

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


class RequestObserver(Protocol):
    """Told of every request sent and every failed attempt (for self-metrics)."""

    def request_sent(self) -> None: ...

    def request_failed(self, reason: str) -> None: ...


class _NullObserver:
    def request_sent(self) -> None:
        pass

    def request_failed(self, reason: str) -> None:
        pass


def clip(value: Any, limit: int = 200) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


MAX_RETRY_AFTER = 10.0  # a Retry-After longer than this is not waited for within a poll


class ResponseLike(Protocol):
    """What parse_envelope reads of an answer: an http1.Answer (what a Conversation gets from either path)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Any: ...

    @property
    def content(self) -> bytes: ...


Decode = Callable[[ResponseLike], T]  # an answer → what the caller wants of it, or an ApiError


def _retry_after(response: ResponseLike) -> float | None:
    """Seconds from a ``Retry-After: <seconds>`` header (the HTTP-date form is not worth waiting for here)."""
    value = response.headers.get("retry-after", "").strip()
    seconds = ascii_int(value)
    return float(min(seconds, MAX_RETRY_AFTER + 1)) if seconds is not None else None  # a huge one is no float


def parse_envelope(response: ResponseLike, refusal_is_auth: bool = False) -> Any:
    """``data`` of a successful answer; otherwise the ApiError that the answer amounts to.

    With ``refusal_is_auth`` (logins and renewals) every non-zero code means "credentials not accepted".
    """
    status = response.status_code
    if status == 401 and response.headers.get("www-authenticate", "").strip().partition(" ")[0].lower() == "basic":
        # A gateway in front of the API, not the API refusing the token (which never asks for Basic).
        raise ApiHttpError(
            "HTTP 401 from a gateway that asks for Basic credentials: give them in the URL as "
            "https://user:password@host/ (percent-encoded), or check the ones given"
        )
    if status in (401, 403):
        raise ApiAuthError(f"HTTP {status}")
    if 300 <= status < 400:
        location = response.headers.get("location")
        where = f" to {clip(without_userinfo(location.strip()), 120)}" if location else ""
        raise ApiHttpError(
            f"HTTP {status} redirect{where}: redirects are not followed; set api_url (or auth.url) to the new address"
        )
    if status >= 300:
        transient = status >= 500 or status == 429
        raise ApiHttpError(f"HTTP {status}", transient=transient, retry_after=_retry_after(response))
    try:
        body = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        kind = response.headers.get("content-type", "no content-type")
        raise ApiInvalidResponse(f"body is not JSON ({clip(kind, 60)}, {len(response.content)} bytes)") from None
    except RecursionError:  # json refuses nesting deeper than the interpreter's recursion limit
        raise ApiInvalidResponse(f"body is JSON nested too deeply ({len(response.content)} bytes)") from None
    if not isinstance(body, dict) or "code" not in body:
        raise ApiInvalidResponse("body is not the {code, msg, data} envelope")
    code = body["code"]
    code = str(code).strip() if isinstance(code, (str, int)) and not isinstance(code, bool) else None
    if code is None:
        raise ApiInvalidResponse("envelope code is not a string")
    if code == "0":
        return body.get("data")
    try:
        msg = clip(body.get("msg"))
    except RecursionError:  # a msg nested nearly as deep as json allows
        msg = "(nested too deeply to show)"
    if code in AUTH_CODES or (refusal_is_auth and code not in TRANSIENT_CODES):
        raise ApiAuthError(f"API code {code}: {msg}")
    raise ApiCodeError(code, msg)


MAX_CACHED_URLS = 4096  # page URLs remembered per cluster (a 400,000-job list at 100 rows a page)
MAX_HEADER_BLOCKS = 16  # header sets remembered; tokens change rarely, and these must never pile up


def _check_headers(headers: Iterable[tuple[str, str]]) -> None:
    """Refuse a header that breaks the one header rule before either path sends anything: httpx would raise
    UnicodeEncodeError for one beyond ASCII, and h11 would quote its value, which may be a secret."""
    for name, value in headers:
        check_header(name, value)


class Conversation:
    """Sends requests over one pooled HTTP client with a whole-exchange timeout and one retry when transient.

    With ``lean`` (the transport the client ``http`` itself uses), GETs go straight to its ``get``, past
    httpx's request and response objects: a poll is thousands of them. Everything else goes through ``http``.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        timeout: float,
        observer: RequestObserver | None = None,
        retry_backoff: float = 0.5,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        lean: LeanTransport | None = None,
    ) -> None:
        self.http = http
        self.timeout = timeout
        self.observer = observer or _NullObserver()
        self._lean = lean
        self._urls: dict[tuple[str, tuple[tuple[str, Any], ...]], httpx.URL] = {}
        self._header_blocks: dict[tuple[tuple[str, str], ...], bytes] = {}
        self._retry_backoff = retry_backoff
        self._sleep = sleep

    def _parsed_url(self, url: str, params: dict[str, Any] | None) -> httpx.URL:
        """``url`` with ``params``, parsed once: a poll asks for the same page URLs every time."""
        key = (url, tuple(params.items()) if params else ())
        try:
            return self._urls[key]
        except KeyError:
            pass
        except TypeError:  # an unhashable parameter value
            return httpx.URL(url, params=params)
        if len(self._urls) >= MAX_CACHED_URLS:
            self._urls.clear()
        found = self._urls[key] = httpx.URL(url, params=params)
        return found

    def _header_block(self, headers: dict[str, str]) -> bytes:
        """The client's headers and ``headers`` as request lines for the lean transport's ``get``."""
        key = tuple(headers.items())
        try:
            return self._header_blocks[key]
        except KeyError:
            pass
        client = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in self.http.headers.raw]
        merged = {name.lower(): (name, value) for name, value in client}
        merged["accept-encoding"] = ("Accept-Encoding", "gzip, deflate")  # what the lean transport can undo
        merged.update((name.lower(), (name, value)) for name, value in headers.items())
        _check_headers(merged.values())
        block = "".join(f"{name}: {value}\r\n" for name, value in merged.values()).encode("ascii")
        if len(self._header_blocks) >= MAX_HEADER_BLOCKS:
            self._header_blocks.clear()
        self._header_blocks[key] = block
        return block

    async def _send(self, method: str, url: str, params: dict[str, Any] | None, headers: dict[str, str]) -> Answer:
        if self._lean is not None and method == "GET":
            full = self._parsed_url(url, params)
            answer = await self._lean.get(full, self._header_block(headers))
            log.debug(  # as httpx logs its own
                'HTTP Request: GET %s "HTTP/1.1 %d"',
                full,
                answer.status_code,
                extra={"method": "GET", "url": full, "status": answer.status_code},
            )
            return answer
        _check_headers(headers.items())
        # Streamed, so that a body over MAX_BODY (raw or decompressed) is refused before it is all read.
        async with self.http.stream(method, self._parsed_url(url, params), headers=headers) as response:
            return Answer(response.status_code, response.headers.raw, await read_limited(response, MAX_BODY))

    async def _attempt(
        self,
        method: str,
        url: str,
        params: dict[str, Any] | None,
        headers: dict[str, str],
        refusal_is_auth: bool,
        decode: Decode[Any] | None,
    ) -> Any:
        self.observer.request_sent()
        try:
            # This bounds the whole exchange; httpx's own timeout is per read, and a trickling body could outlast it.
            response = await within(self.timeout, self._send(method, url, params, headers))
        except httpx.TimeoutException:
            raise ApiTimeout(f"no answer within {self.timeout:g}s", transient=True) from None
        except BodyTooLarge as exc:  # what the server sends is wrong: asking again would not help
            raise ApiInvalidResponse(clip(exc)) from None
        except httpx.TransportError as exc:
            raise ApiConnectionError(f"{type(exc).__name__}: {clip(exc)}", transient=True) from None
        except httpx.HTTPError as exc:
            raise ApiConnectionError(f"{type(exc).__name__}: {clip(exc)}") from None
        return parse_envelope(response, refusal_is_auth) if decode is None else decode(response)

    async def call(
        self,
        method: str,
        url: str,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        refusal_is_auth: bool = False,
        decode: Decode[Any] | None = None,
    ) -> Any:
        """``data`` of the answer (or what ``decode`` makes of it: an ApiError, or a value); every failed attempt
        is counted, and a transient one is retried once."""
        headers = headers or {}
        try:
            return await self._attempt(method, url, params, headers, refusal_is_auth, decode)
        except ApiError as exc:
            self.observer.request_failed(exc.reason)
            if not exc.transient or (exc.retry_after or 0) > MAX_RETRY_AFTER:
                raise
            log.debug(
                "%s %s failed (%s), retrying once",
                method,
                url,
                exc,
                extra={"method": method, "url": url, "reason": exc.reason},
            )
            delay = max(self._retry_backoff, exc.retry_after or 0)  # a server that says when gets its wish
        await self._sleep(delay)
        try:
            return await self._attempt(method, url, params, headers, refusal_is_auth, decode)
        except ApiError as exc:
            self.observer.request_failed(exc.reason)
            raise
