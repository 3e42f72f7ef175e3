"""The HPC host's job APIs: scheduler ids, queue capacity, and the full job list, paged concurrently."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncGenerator, Callable
from typing import Any, NamedTuple, TypeVar
from urllib.parse import quote

import msgspec

from exporter.model import QueueCapacity, Row
from exporter.sugon.conversation import ApiInvalidResponse, Conversation, Page, clip
from exporter.sugon.paging import Chain, allowance, next_lap
from exporter.sugon.platform import Center
from exporter.sugon.tokens import TokenProvider, with_token
from exporter.values import ascii_int, count

T = TypeVar("T")

JOBS_PATH = "/hpc/openapi/v2/jobs"
SCHEDULERS_PATH = "/hpc/openapi/v2/cluster"
CAPACITY_PATH = "/hpc/openapi/v2/queuenames/users/"


MAX_QUEUE_SIZE = 10**9  # CPUs or nodes of one queue; a bigger figure is not one, and is left out like a missing one
MAX_JOBS = 5_000_000  # the default of max_jobs
FIND_LIMIT = 10  # rows asked for when looking one job up: one expected, more tell that the filter was ignored


class JobListRead(NamedTuple):
    """What reading one scheduler's job list came to."""

    total: int  # the first page's data.total
    pages: int  # pages answered
    least_total: int  # the least data.total any page gave
    complete: bool  # every two neighbouring pages linked: no job listed throughout the read was missed
    extra: int  # pages read again for gaps
    distinct: int  # distinct job ids read; for a complete read, least_total (it accounts for its jobs by itself)
    spare: int  # requests left of the read's allowance, for looking missing jobs up


def parse_schedulers(data: Any) -> list[str]:
    """Scheduler ids (``strClusterIDList`` values) from a ``/cluster`` answer."""
    if not isinstance(data, list):
        raise ApiInvalidResponse(f"cluster data is {type(data).__name__}, not a list")
    ids: list[str] = []
    for item in data:
        raw = item.get("id") if isinstance(item, dict) else None
        if isinstance(raw, int) and not isinstance(raw, bool):
            raw = str(raw)
        if isinstance(raw, str) and ascii_int(raw) is not None:
            ids.append(raw.strip())
    if not ids:
        raise ApiInvalidResponse("cluster answer lists no scheduler with a numeric id")
    return list(dict.fromkeys(ids))


def parse_capacity(data: Any) -> dict[str, QueueCapacity]:
    """Queue name → capacity from a ``queuenames/users`` answer; rows without a queueName are skipped."""
    if not isinstance(data, list):
        raise ApiInvalidResponse(f"queue list is {type(data).__name__}, not a list")
    out: dict[str, QueueCapacity] = {}
    for item in data:
        name = item.get("queueName") if isinstance(item, dict) else None
        if not isinstance(name, str) or not name.strip():
            continue
        out[name.strip()] = QueueCapacity(
            cpus=count(item.get("queNcpus"), MAX_QUEUE_SIZE),
            free_cpus=count(item.get("queFreeNcpus"), MAX_QUEUE_SIZE),
            nodes=count(item.get("queNodes"), MAX_QUEUE_SIZE),
            free_nodes=count(item.get("queFreeNodes"), MAX_QUEUE_SIZE),
        )
    return out


def _job_id(row: Row | None) -> str | int | None:
    """A row's jobId when it is one that can be compared (a string or number), else None. Decimal digits become
    the number they write, as the job's key reads them alike (a poll keeps every page's ids, and an int takes
    half the memory of its string)."""
    value = row.jobId if row is not None else None
    if isinstance(value, str):
        if value.isascii() and value.isdigit() and value[0] != "0" and len(value) < 19:
            return int(value)
        return value or None
    return value if isinstance(value, int) else None


def _same_rows(a: list[Row | None], b: list[Row | None]) -> bool:
    """Whether two pages hold the same rows but for their run times, which grow between two reads of one page;
    False where comparing would nest too deeply."""
    if len(a) != len(b):
        return False
    try:
        return a == b or all(_without_run_time(x) == _without_run_time(y) for x, y in zip(a, b))
    except RecursionError:
        return False


def _without_run_time(row: Row | None) -> Row | None:
    return None if row is None else msgspec.structs.replace(row, jobRunTime=None)


def _job_ids(rows: list[Row | None]) -> set[str | int]:
    return {i for i in map(_job_id, rows) if i is not None}


def _mostly_repeats(rows: list[Row | None], first_ids: set[str | int]) -> bool:
    """True when most of a later page is page 0 again: the offset was ignored while the list moved (drift alone
    repeats only the few rows that arrived at the front meanwhile). Pages under 4 rows cannot tell."""
    if len(first_ids) < 4:
        return False
    # Half of a contiguous stretch in page 0 puts its first, middle or last row there: most pages need no set.
    probes = (rows[0], rows[len(rows) // 2], rows[-1])
    if not any(_job_id(r) in first_ids for r in probes):
        return False
    ids = _job_ids(rows)
    return len(ids) >= 4 and len(ids & first_ids) * 2 >= len(ids)


class SugonClient:
    """Talks to one HPC host with one token provider; every failure comes out as an ApiError."""

    def __init__(
        self, base_url: str, tokens: TokenProvider, conversation: Conversation, authorization: str | None = None
    ) -> None:
        self.base_url = base_url  # without userinfo: that is ``authorization``
        self.authorization = authorization  # a gateway's Basic credentials, sent with every request
        self.tokens = tokens
        self._conversation = conversation
        self.laps: dict[str, int] = {}  # scheduler id → rows its neighbouring pages share (paging.next_lap)

    def use_center(self, center: Center) -> bool:
        """Talk to the HPC URL a ``/center`` answer names, with its gateway credentials; True if the URL changed."""
        moved = center.hpc_url != self.base_url
        self.base_url, self.authorization = center.hpc_url, center.hpc_authorization
        return moved

    async def call(self, path: str, params: dict[str, Any], job_page: bool = False) -> Any:
        """GET ``path`` and return ``data`` (with ``job_page``, its Page); a rejected token is replaced once and the
        request sent again."""
        return await with_token(self.tokens, self._get, path, params, job_page)

    async def _get(self, token: str, path: str, params: dict[str, Any], job_page: bool) -> Any:
        headers = {"Authorization": self.authorization, "token": token} if self.authorization else {"token": token}
        return await self._conversation.call("GET", self.base_url + path, params, headers, job_page=job_page)

    def _shaped(self, parse: Callable[[Any], T], data: Any) -> T:
        """``parse(data)``; an answer of the wrong shape is counted like any other invalid response."""
        try:
            return parse(data)
        except ApiInvalidResponse as exc:
            raise self.invalid(str(exc)) from None

    def invalid(self, message: str) -> ApiInvalidResponse:
        """An answer that was fine as a request but wrong for paging; counted like any invalid response."""
        self._conversation.observer.request_failed(ApiInvalidResponse.reason)
        return ApiInvalidResponse(message)

    async def queue_capacity(self, username: str, scheduler_id: str) -> dict[str, QueueCapacity]:
        """The queues ``username`` may use on one scheduler, with their CPUs and nodes."""
        path = CAPACITY_PATH + quote(username, safe="")
        return self._shaped(parse_capacity, await self.call(path, {"strJobManagerID": scheduler_id}))

    async def schedulers(self) -> list[str]:
        """The scheduler ids this host serves (``GET /hpc/openapi/v2/cluster``)."""
        return self._shaped(parse_schedulers, await self.call(SCHEDULERS_PATH, {}))

    async def page(self, scheduler_id: str, start: int, limit: int, job_id: str | None = None) -> Page:
        params: dict[str, Any] = {"strClusterIDList": scheduler_id, "start": start, "limit": limit}
        if job_id is not None:
            params["strJobId"] = job_id
        page: Page = await self.call(JOBS_PATH, params, job_page=True)
        return page

    async def find_job(self, scheduler_id: str, job_id: str) -> list[Row | None] | None:
        """The rows the list shows for one job (``strJobId``): one, or none when the job has left it; None when
        the server ignores the filter (it answers rows of other jobs), so that its answer proves nothing."""
        _, rows = await self.page(scheduler_id, 0, FIND_LIMIT, job_id)
        if any(_job_id(row) is None or str(_job_id(row)).strip() != job_id for row in rows):
            return None
        return rows

    async def find_jobs(self, keys: list[str], concurrency: int) -> tuple[dict[str, list[Row | None]], set[str]] | None:
        """Look jobs up by key (``jobmanagerId NUL jobId``), ``concurrency`` at a time: (the rows of those still
        listed, the keys of those that are not); None when the server ignores the filter (a lookup answered other
        jobs), so that no answer proves anything."""
        listed: dict[str, list[Row | None]] = {}
        left: set[str] = set()
        for start in range(0, len(keys), concurrency):
            batch = keys[start : start + concurrency]
            answers = await asyncio.gather(*(self.find_job(*key.split("\x00", 1)) for key in batch))
            for key, rows in zip(batch, answers):
                if rows is None:
                    return None
                if rows:
                    listed[key] = rows
                else:
                    left.add(key)
        return listed, left

    def job_list(self, scheduler_id: str, page_size: int, concurrency: int, max_jobs: int = MAX_JOBS) -> JobListReader:
        """One scheduler's full job list, to read page by page (see JobListReader)."""
        return JobListReader(self, scheduler_id, page_size, concurrency, max_jobs)


class JobListReader:
    """One scheduler's job list, read page by page: ``async for rows, again in reader.pages()``; ``read`` says
    what the read came to once the last page is given."""

    def __init__(self, client: SugonClient, scheduler_id: str, page_size: int, concurrency: int, max_jobs: int) -> None:
        self._client = client
        self._scheduler_id = scheduler_id
        self._page_size = page_size
        self._concurrency = concurrency
        self._max_jobs = max_jobs
        self.read: JobListRead | None = None

    def _check_total(self, total: int, offset: int) -> None:
        if total > self._max_jobs:
            raise self._client.invalid(
                f"start={offset} answered total {clip(total, 40)}, above max_jobs ({self._max_jobs}); "
                "raise max_jobs if the list is really that long"
            )

    async def pages(self) -> AsyncGenerator[tuple[list[Row | None], bool], None]:
        """Each page's rows as it arrives, and whether it is a page read again for a gap (rows repeat across
        pages); ``read`` is set once the last one is given. Pages are stepped by the rows the server really returns
        less a few that neighbouring pages share (exporter.sugon.paging), ``concurrency`` in flight; then each gap
        is read again within the read's ``allowance``. Any failure is an ApiError, raised after the requests in
        flight are cancelled. A ``total`` above ``max_jobs``, or more than ``2 * max_jobs`` rows' worth of pages (the
        list may grow while it is read, not without end), is an invalid response."""
        client, scheduler_id, page_size, max_jobs = self._client, self._scheduler_id, self._page_size, self._max_jobs
        total, rows = await client.page(scheduler_id, 0, page_size)
        self._check_total(total, 0)
        yield rows, False
        step = len(rows)
        if step == 0 and total > 0:
            # Publishing this would be a false "no jobs"; a real list does not empty between count and read.
            raise client.invalid(f"start=0 answered no rows although total is {total}")
        if step >= total:
            self.read = JobListRead(
                total=total,
                pages=1,
                least_total=total,
                complete=True,
                extra=0,
                distinct=len(_job_ids(rows)),
                spare=allowance(1) - 1,
            )
            return
        lap = min(client.laps.get(scheduler_id, 1), step - 1)
        stride = step - lap
        allowed = allowance(math.ceil(total / step))
        chain = Chain(step, lap)
        chain.add(0, [_job_id(r) for r in rows])
        first_rows, first_ids = rows, _job_ids(rows)
        target = least = total  # where the list ends, as far as we know; the least total any page gave
        shrunk = False
        next_offset = stride
        refills: list[int] = []
        # The list may grow while we page, and is read to its new end; but never past twice max_jobs rows.
        most_pages = math.ceil(2 * max_jobs / step)
        sent = answered = 1
        pending: dict[asyncio.Task[Page], int] = {}
        try:
            while True:
                while len(pending) < self._concurrency:
                    if refills:
                        offset = refills.pop()
                    elif next_offset < target:
                        offset, next_offset = next_offset, next_offset + stride
                    else:
                        break
                    if sent >= most_pages:
                        raise client.invalid(
                            f"the job list did not end within {sent} pages of {step} rows "
                            f"(twice max_jobs, {max_jobs}); last total {target}"
                        )
                    pending[asyncio.ensure_future(client.page(scheduler_id, offset, page_size))] = offset
                    sent += 1
                if not pending:
                    break
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    offset = pending.pop(task)
                    page_total, page_rows = task.result()
                    answered += 1
                    self._check_total(page_total, offset)
                    least = min(least, page_total)
                    if not page_rows:
                        shrunk, target = True, min(target, offset)
                        continue
                    if _same_rows(page_rows, first_rows) or _mostly_repeats(page_rows, first_ids):
                        raise client.invalid(
                            f"start={offset} answered the rows of start=0: the server ignores the offset; "
                            f"set page_size above the job count ({total}) for this cluster"
                        )
                    yield page_rows, False
                    chain.add(offset, [_job_id(r) for r in page_rows])
                    if not shrunk and page_total > target:
                        target = page_total
                    end = offset + len(page_rows)
                    if len(page_rows) < step and end < min(target, page_total):
                        refills.append(max(end - lap, offset + 1))  # cut short mid-list: read on from there
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        extra = 0
        gap, offset_next = chain.gap(), None
        client.laps[scheduler_id] = next_lap(lap, step, gap is not None)
        while gap is not None and answered + extra < allowed:
            offset = chain.first_read(gap) if offset_next is None else offset_next
            page_total, page_rows = await client.page(scheduler_id, offset, page_size)
            extra += 1
            self._check_total(page_total, offset)
            least = min(least, page_total)
            yield page_rows, True
            offset_next = chain.place(gap, offset, [_job_id(r) for r in page_rows])
            gap = chain.gap()
        self.read = JobListRead(
            total=total,
            pages=answered + extra,
            least_total=least,
            complete=gap is None,
            extra=extra,
            distinct=chain.distinct() if gap is not None else least,
            spare=max(allowed - answered - extra, 0),
        )
