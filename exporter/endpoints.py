"""The exporter's pages for exporter.web.WebServer: the metrics, the status page / and the probes. Password checks
and renderings run in the server's worker threads, never in its event loop; a scrape that finds its text rendered
is answered on the loop."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from exporter.basicauth import BasicAuth, Verdict
from exporter.render import Exposition
from exporter.status import status_answer
from exporter.web import CHUNK, Handler

OPEN_PATHS = ("/healthz", "/-/healthy", "/-/ready")  # open without credentials, and never the telemetry path
TEXT = "text/plain; charset=utf-8"
CHALLENGE = 'Basic realm="sugon-exporter", charset="UTF-8"'


class Parts(web.StreamResponse):
    """An answer whose body is ``parts`` sent one after another, CHUNK bytes at a time as the client takes
    them: a /metrics body is megabytes of cached bytes that every scrape shares, never joined or copied."""

    def __init__(self, request: web.BaseRequest, parts: Sequence[bytes], headers: dict[str, str]) -> None:
        super().__init__(headers=headers)
        self.content_length = sum(map(len, parts))
        self._parts = parts if request.method != "HEAD" else ()

    async def write_eof(self, data: bytes = b"") -> None:
        parts, self._parts = self._parts, ()
        for part in parts:
            view = memoryview(part)
            for start in range(0, len(view), CHUNK):
                await self.write(view[start : start + CHUNK])
        await super().write_eof(data)


class TokenBucket:
    """The toolkit's rate limit (Go's rate.Limiter): ``burst`` tokens at the start and at most, one more every
    ``interval`` seconds; a request takes one or is refused."""

    def __init__(self, interval: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval, self.burst, self._clock = interval, burst, clock
        self._tokens, self._at = float(burst), clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) / self.interval)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


def _text(status: int, body: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=body.encode(), headers={"Content-Type": TEXT, **(headers or {})})


def make_app(
    exposition: Exposition,
    auth: BasicAuth | None = None,
    telemetry_path: str = "/metrics",
    *,
    clock: Callable[[], float] = time.time,
    limiter: TokenBucket | None = None,
) -> Handler:
    """The request handler: the metrics on ``telemetry_path``, / the status page at ``clock``'s time, the probes;
    with ``auth`` every path but OPEN_PATHS needs credentials, with ``limiter`` every path but OPEN_PATHS takes
    a token or is refused (429)."""

    async def pages(request: web.BaseRequest) -> web.StreamResponse:
        path, headers = request.path, request.headers
        if limiter is not None and path not in OPEN_PATHS and not limiter.take():
            wait = str(max(1, math.ceil(limiter.interval)))
            return _text(429, "429 Too Many Requests\n", {"Retry-After": wait})
        if request.method not in ("GET", "HEAD"):
            return _text(405, "405 Method Not Allowed\n", {"Allow": "GET, HEAD"})
        if auth is not None and path not in OPEN_PATHS:
            verdict = await asyncio.to_thread(auth.check, headers.get("Authorization"))
            if verdict is Verdict.BUSY:  # too many password checks waiting for bcrypt: come back in a moment
                return _text(503, "503 Service Unavailable\n", {"Retry-After": "1"})
            if verdict is Verdict.DENY:
                return _text(401, "401 Unauthorized\n", {"WWW-Authenticate": CHALLENGE})
        if path == telemetry_path:  # in the format Accept asks for, gzipped if Accept-Encoding takes it
            _, content_type = choose_encoder(headers.get("Accept", ""))
            gzipped = "gzip" in headers.get("Accept-Encoding", "")
            openmetrics = content_type.startswith("application/openmetrics-text")
            names = request.query.getall("name[]", [])
            if names or not exposition.ready(openmetrics):  # a rendering: in a worker thread, the probes never wait
                parts = await asyncio.to_thread(exposition.body, openmetrics, gzipped, names)
            else:  # the rendered text and the process's own metrics: on the loop, with no thread to wait for
                parts = exposition.body(openmetrics, gzipped)
            encoding = {"Content-Encoding": "gzip"} if gzipped else {}
            return Parts(request, parts, {"Content-Type": content_type, **encoding})
        if path == "/":
            states, accept = exposition.states(), headers.get("Accept")
            body, ctype = await asyncio.to_thread(status_answer, states, accept, clock(), telemetry_path)
            return web.Response(body=body, headers={"Content-Type": ctype, "Vary": "Accept"})
        if path == "/healthz":
            return _text(200, "ok\n")
        if path == "/-/healthy":
            return _text(200, "healthy\n")
        if path == "/-/ready":
            clusters = exposition.states().values()
            waiting = sum(1 for state in clusters if state.up is None)
            if waiting:
                return _text(503, f"not ready: {waiting} of {len(clusters)} clusters not polled yet\n")
            return _text(200, "ready\n")
        return _text(404, "not found\n")

    return pages
