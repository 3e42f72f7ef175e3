"""The exporter's pages, one request handler for exporter.web.WebServer: /metrics (or the path
--web.telemetry-path names), the status page /, and the probes /healthz, /-/healthy and /-/ready. Password
checks and renderings run in the server's worker threads, never in its event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from exporter.basicauth import REALM, BasicAuth, Verdict
from exporter.render import Exposition
from exporter.status import status_answer
from exporter.web import CHUNK, Handler

# The probes' paths: open without credentials, and never the telemetry path.
OPEN_PATHS = ("/healthz", "/-/healthy", "/-/ready")
ALLOWED_METHODS = ("GET", "HEAD")
TEXT = "text/plain; charset=utf-8"


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


class _Pages:
    """The exporter's pages; see make_app."""

    def __init__(
        self, exposition: Exposition, auth: BasicAuth | None, telemetry_path: str, clock: Callable[[], float]
    ) -> None:
        self._exposition = exposition
        self._auth = auth
        self._telemetry_path = telemetry_path
        self._clock = clock

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if request.method not in ALLOWED_METHODS:
            return _text(405, "405 Method Not Allowed\n", {"Allow": ", ".join(ALLOWED_METHODS)})
        if self._auth is not None and path not in OPEN_PATHS:
            verdict = await asyncio.to_thread(self._auth.check, request.headers.get("Authorization"))
            if verdict is Verdict.BUSY:  # too many password checks waiting for bcrypt: come back in a moment
                return _text(503, "503 Service Unavailable\n", {"Retry-After": "1"})
            if verdict is Verdict.DENY:
                challenge = f'Basic realm="{REALM}", charset="UTF-8"'
                return _text(401, "401 Unauthorized\n", {"WWW-Authenticate": challenge})
        if path == self._telemetry_path:
            accept, encoding = request.headers.get("Accept", ""), request.headers.get("Accept-Encoding", "")
            names = request.query.getall("name[]", [])
            parts, headers = await asyncio.to_thread(self._metrics, accept, encoding, names)
            return Parts(request, parts, headers)
        if path == "/":
            body, ctype = await asyncio.to_thread(
                status_answer,
                self._exposition.states(),
                request.headers.get("Accept"),
                self._clock(),
                self._telemetry_path,
            )
            return web.Response(body=body, headers={"Content-Type": ctype, "Vary": "Accept"})
        if path == "/healthz":
            return _text(200, "ok\n")
        if path == "/-/healthy":
            return _text(200, "healthy\n")
        if path == "/-/ready":
            clusters = self._exposition.states().values()
            waiting = sum(1 for state in clusters if state.up is None)
            if waiting:
                return _text(503, f"not ready: {waiting} of {len(clusters)} clusters not polled yet\n")
            return _text(200, "ready\n")
        return _text(404, "not found\n")

    def _metrics(self, accept: str, encoding: str, names: list[str]) -> tuple[list[bytes], dict[str, str]]:
        """The exposition in the format ``accept`` asks for, gzipped if ``encoding`` takes it, only the samples in
        ``names`` if any (as prometheus-client's own name[] filter); in a worker thread."""
        _, content_type = choose_encoder(accept)
        openmetrics = content_type.startswith("application/openmetrics-text")
        compressed = "gzip" in encoding
        headers = {"Content-Type": content_type, **({"Content-Encoding": "gzip"} if compressed else {})}
        return self._exposition.body(openmetrics, compressed, names), headers


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
    return _Pages(exposition, auth, telemetry_path, clock)
