"""The exporter's pages, one request handler for exporter.web.WebServer: the metrics (on --web.telemetry-path),
the status page /, and the probes /healthz, /-/healthy and /-/ready. Password checks and renderings run in the
server's worker threads, never in its event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence

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


def _text(status: int, body: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=body.encode(), headers={"Content-Type": TEXT, **(headers or {})})


def make_app(
    exposition: Exposition,
    auth: BasicAuth | None = None,
    telemetry_path: str = "/metrics",
    *,
    clock: Callable[[], float] = time.time,
) -> Handler:
    """The exporter's request handler; with ``auth`` every path but OPEN_PATHS needs credentials.

    The metrics are served on ``telemetry_path`` from ``exposition`` (rendered once per publish), also when
    filtered by ``name[]``. / is the status page (see exporter.status), with ages by ``clock``. /healthz and
    /-/healthy answer 200 while the process runs; /-/ready answers 503 until every cluster has ended its first
    poll (``up`` is None until then), then 200. Methods other than GET and HEAD get 405.
    """

    async def pages(request: web.BaseRequest) -> web.StreamResponse:
        path, headers = request.path, request.headers
        if request.method not in ("GET", "HEAD"):
            return _text(405, "405 Method Not Allowed\n", {"Allow": "GET, HEAD"})
        if auth is not None and path not in OPEN_PATHS:
            verdict = await asyncio.to_thread(auth.check, headers.get("Authorization"))
            if verdict is Verdict.BUSY:  # too many password checks waiting for bcrypt: come back in a moment
                return _text(503, "503 Service Unavailable\n", {"Retry-After": "1"})
            if verdict is Verdict.DENY:
                return _text(401, "401 Unauthorized\n", {"WWW-Authenticate": CHALLENGE})
        if path == telemetry_path:
            parts, answer = await asyncio.to_thread(_metrics, exposition, headers, request.query.getall("name[]", []))
            return Parts(request, parts, answer)
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


def _metrics(
    exposition: Exposition, headers: Mapping[str, str], names: list[str]
) -> tuple[list[bytes], dict[str, str]]:
    """The exposition in the format Accept asks for, gzipped if Accept-Encoding takes it, only the samples in
    ``names`` if any (as prometheus-client's own name[] filter); in a worker thread."""
    _, content_type = choose_encoder(headers.get("Accept", ""))
    compressed = "gzip" in headers.get("Accept-Encoding", "")
    parts = exposition.body(content_type.startswith("application/openmetrics-text"), compressed, names)
    return parts, {"Content-Type": content_type, **({"Content-Encoding": "gzip"} if compressed else {})}
