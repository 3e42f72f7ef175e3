"""The HTTP conversation with one Sugon HPC host: envelope, errors as types, retries, concurrent paging."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Protocol

import httpx

from exporter.auth import TokenSource, TokenUnavailable

log = logging.getLogger(__name__)

JOBS_PATH = "/hpc/openapi/v2/jobs"
SCHEDULERS_PATH = "/hpc/openapi/v2/cluster"
REASONS = ("timeout", "connection", "http_status", "invalid_response", "auth", "api_code")
# 10012 "connection interrupted" and 10013 "timed out" are the server's own transient failures.
TRANSIENT_CODES = frozenset({"10012", "10013"})
AUTH_CODES = frozenset({"10008"})


class ApiError(Exception):
    """Any failed API call; ``reason`` is the ``sugon_api_errors_total`` label, ``transient`` earns a retry."""

    reason: ClassVar[str] = "invalid_response"

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


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


def _clip(value: Any, limit: int = 200) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _count(value: Any) -> int | None:
    """A non-negative int from an int or a digit string (``total`` has been seen as both)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def parse_envelope(response: httpx.Response) -> Any:
    """``data`` of a successful answer; otherwise the ApiError that the answer amounts to."""
    status = response.status_code
    if status in (401, 403):
        raise ApiAuthError(f"HTTP {status}")
    if status >= 300:
        transient = status >= 500 or status == 429
        raise ApiHttpError(f"HTTP {status}", transient=transient)
    try:
        body = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        kind = response.headers.get("content-type", "no content-type")
        raise ApiInvalidResponse(f"body is not JSON ({_clip(kind, 60)}, {len(response.content)} bytes)") from None
    if not isinstance(body, dict) or "code" not in body:
        raise ApiInvalidResponse("body is not the {code, msg, data} envelope")
    code = body["code"]
    code = str(code).strip() if isinstance(code, (str, int)) and not isinstance(code, bool) else None
    if code is None:
        raise ApiInvalidResponse("envelope code is not a string")
    if code == "0":
        return body.get("data")
    msg = _clip(body.get("msg"))
    if code in AUTH_CODES:
        raise ApiAuthError(f"API code {code}: {msg}")
    raise ApiCodeError(code, msg)


def parse_job_page(data: Any) -> tuple[int, list[Any]]:
    """``(data.total, data.list)`` of a job-list answer, checked for shape; rows are left raw."""
    if not isinstance(data, dict):
        raise ApiInvalidResponse(f"job list data is {type(data).__name__}, not an object")
    total = _count(data.get("total"))
    if total is None:
        raise ApiInvalidResponse(f"job list total is missing or not a count ({_clip(repr(data.get('total')), 40)})")
    rows = data.get("list")
    if rows is None and total == 0:
        return 0, []
    if not isinstance(rows, list):
        raise ApiInvalidResponse(f"job list 'list' is {type(rows).__name__}, not a list")
    return total, rows


def parse_schedulers(data: Any) -> list[str]:
    """Scheduler ids (``strClusterIDList`` values) from a ``/cluster`` answer."""
    if not isinstance(data, list):
        raise ApiInvalidResponse(f"cluster data is {type(data).__name__}, not a list")
    ids: list[str] = []
    for item in data:
        raw = item.get("id") if isinstance(item, dict) else None
        if isinstance(raw, int) and not isinstance(raw, bool):
            raw = str(raw)
        if isinstance(raw, str) and raw.strip().isdigit():
            ids.append(raw.strip())
    if not ids:
        raise ApiInvalidResponse("cluster answer lists no scheduler with a numeric id")
    return list(dict.fromkeys(ids))


def _job_ids(rows: list[Any]) -> set[Any]:
    return {r.get("jobId") for r in rows if isinstance(r, dict)} - {None, ""}


def _mostly_repeats(rows: list[Any], first_ids: set[Any]) -> bool:
    """True when most of a later page is page 0 again: the offset was ignored while the list moved.

    Drift alone repeats only as many rows as arrived at the front between two reads; half a page of
    them in that time does not happen. Pages under 4 rows are too small to tell the two apart.
    """
    if len(first_ids) < 4:
        return False
    ids = _job_ids(rows)
    return len(ids) >= 4 and len(ids & first_ids) * 2 >= len(ids)


class SugonClient:
    """Talks to one HPC host with one token source; every failure comes out as an ApiError."""

    def __init__(
        self,
        base_url: str,
        tokens: TokenSource,
        http: httpx.AsyncClient,
        timeout: float,
        observer: RequestObserver | None = None,
        retry_backoff: float = 0.5,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.base_url = base_url
        self._tokens = tokens
        self._http = http
        self._timeout = timeout
        self._observer = observer or _NullObserver()
        self._retry_backoff = retry_backoff
        self._sleep = sleep

    async def _attempt(self, path: str, params: dict[str, Any]) -> Any:
        try:
            token = self._tokens.token()
        except TokenUnavailable as exc:
            raise ApiAuthError(str(exc)) from None
        self._observer.request_sent()
        try:
            # wait_for bounds the whole exchange; httpx's own timeout is per read and a trickling body could outlast it.
            response = await asyncio.wait_for(
                self._http.get(self.base_url + path, params=params, headers={"token": token}),
                timeout=self._timeout,
            )
        except (asyncio.TimeoutError, httpx.TimeoutException):
            raise ApiTimeout(f"no answer within {self._timeout:g}s", transient=True) from None
        except httpx.TransportError as exc:
            raise ApiConnectionError(f"{type(exc).__name__}: {_clip(exc)}", transient=True) from None
        except httpx.HTTPError as exc:
            raise ApiConnectionError(f"{type(exc).__name__}: {_clip(exc)}") from None
        return parse_envelope(response)

    async def call(self, path: str, params: dict[str, Any]) -> Any:
        """GET ``path`` and return ``data``; a transient failure is retried once after a short backoff."""
        try:
            return await self._attempt(path, params)
        except ApiError as exc:
            self._observer.request_failed(exc.reason)
            if not exc.transient:
                raise
            log.debug("%s %s failed (%s), retrying once", self.base_url, path, exc)
        await self._sleep(self._retry_backoff)
        try:
            return await self._attempt(path, params)
        except ApiError as exc:
            self._observer.request_failed(exc.reason)
            raise

    async def schedulers(self) -> list[str]:
        """The scheduler ids this host serves (``GET /hpc/openapi/v2/cluster``)."""
        return parse_schedulers(await self.call(SCHEDULERS_PATH, {}))

    async def _page(self, scheduler_id: str, start: int, limit: int) -> tuple[int, list[Any]]:
        params = {"strClusterIDList": scheduler_id, "start": start, "limit": limit}
        return parse_job_page(await self.call(JOBS_PATH, params))

    async def fetch_jobs(
        self,
        scheduler_id: str,
        page_size: int,
        concurrency: int,
        on_rows: Callable[[list[Any]], None],
    ) -> int:
        """Page through one scheduler's full job list, handing each page's raw rows to ``on_rows`` as it arrives.

        Returns the first page's ``data.total``. Pages are stepped by the rows the server really returns
        (it may cap ``limit``); up to ``concurrency`` requests are in flight. Rows may repeat across pages
        (the list changes while we read it): deduplication is the caller's. Raises ApiError on any failure,
        after cancelling the requests still in flight, so that a caller never mistakes a part for the whole.
        """
        total, rows = await self._page(scheduler_id, 0, page_size)
        on_rows(rows)
        step = len(rows)
        if step == 0 and total > 0:
            # Publishing this would be a false "no jobs"; a real list does not empty between count and read.
            raise ApiInvalidResponse(f"start=0 answered no rows although total is {total}")
        if step >= total:
            return total
        first_rows, first_ids = rows, _job_ids(rows)
        target = total  # where the list ends, as far as we know
        shrunk = False
        next_offset = step
        refills: list[int] = []
        # The list may grow while we page; bound the requests so that a list growing as fast as we read ends.
        budget = 2 * math.ceil(total / step) + 8
        sent = 1
        pending: dict[asyncio.Task[tuple[int, list[Any]]], int] = {}
        try:
            while True:
                while len(pending) < concurrency and sent < budget:
                    if refills:
                        offset = refills.pop()
                    elif next_offset < target:
                        offset, next_offset = next_offset, next_offset + step
                    else:
                        break
                    pending[asyncio.ensure_future(self._page(scheduler_id, offset, page_size))] = offset
                    sent += 1
                if not pending:
                    break
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    offset = pending.pop(task)
                    page_total, page_rows = task.result()
                    if not page_rows:
                        shrunk, target = True, min(target, offset)
                        continue
                    if page_rows == first_rows or _mostly_repeats(page_rows, first_ids):
                        raise ApiInvalidResponse(
                            f"start={offset} answered the rows of start=0: the server ignores the offset; "
                            f"set page_size above the job count ({total}) for this cluster"
                        )
                    on_rows(page_rows)
                    if not shrunk and page_total > target:
                        target = page_total
                    end = offset + len(page_rows)
                    if len(page_rows) < step and end < min(target, page_total):
                        refills.append(end)  # a page shorter than the cap mid-list: fetch what it left out
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        if sent >= budget and (refills or next_offset < target):
            log.warning(
                "%s scheduler %s: job list kept growing; stopped after %d requests", self.base_url, scheduler_id, sent
            )
        return total
