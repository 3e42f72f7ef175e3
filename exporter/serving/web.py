"""The WSGI app (/metrics, /, /healthz, /-/healthy, /-/ready) and the server that runs it
(exporter.serving.httpserver.WebServer)."""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import choose_encoder

from exporter.render import Exposition
from exporter.serving.basicauth import REALM, BasicAuth, Verdict
from exporter.serving.httpconn import Limits
from exporter.serving.httpserver import ListenError, WebServer
from exporter.status import status_answer

__all__ = ["OPEN_PATHS", "Limits", "ListenError", "WebServer", "make_app"]

StartResponse = Callable[..., Any]
# The probes' paths: open without credentials, and never the telemetry path.
OPEN_PATHS = ("/healthz", "/-/healthy", "/-/ready")
TEXT = "text/plain; charset=utf-8"


def make_app(
    registry: CollectorRegistry,
    store: Exposition,
    auth: BasicAuth | None = None,
    exposition: Exposition | None = None,
    telemetry_path: str = "/metrics",
    *,
    clock: Callable[[], float] = time.time,
) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """The exporter's WSGI application; with ``auth`` every path but OPEN_PATHS needs credentials.

    The metrics are served on ``telemetry_path`` (``--web.telemetry-path``), from ``exposition`` when given
    (rendered once per change of the job data), also when filtered by ``name[]`` (as prometheus-client's
    own handler filters; without ``exposition``, that handler serves). / is the status page (see
    exporter.serving.status), with each cluster's token expiry from ``token_expiry`` and ages by ``clock``.
    /healthz and /-/healthy answer 200 while the process runs; /-/ready answers 503 until every cluster in
    ``store`` has ended its first poll (``up`` is None until then; a cluster that a reload added or changed
    starts afresh), then 200.
    """
    metrics_app = make_wsgi_app(registry)

    def cached_metrics(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        assert exposition is not None
        _, content_type = choose_encoder(environ.get("HTTP_ACCEPT", ""))
        openmetrics = content_type.startswith("application/openmetrics-text")
        compressed = "gzip" in environ.get("HTTP_ACCEPT_ENCODING", "")
        names = parse_qs(environ.get("QUERY_STRING", "")).get("name[]")
        if names:
            body = exposition.filtered(names, openmetrics)
            parts = [gzip.compress(body, compresslevel=1) if compressed else body]
        else:
            parts = [exposition.body(openmetrics, compressed)]
        headers = [("Content-Type", content_type), ("Content-Length", str(sum(map(len, parts))))]
        if compressed:
            headers.append(("Content-Encoding", "gzip"))
        start_response("200 OK", headers)
        return parts

    def refuse(verdict: Verdict, start_response: StartResponse) -> Iterable[bytes]:
        if verdict is Verdict.BUSY:  # too many password checks waiting for bcrypt: come back in a moment
            status, extra = "503 Service Unavailable", ("Retry-After", "1")
        else:
            status, extra = "401 Unauthorized", ("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')
        body = f"{status}\n".encode()
        start_response(
            status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))), extra]
        )
        return [body]

    def status_page(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        body, ctype = status_answer(store.states(), environ.get("HTTP_ACCEPT"), clock(), telemetry_path)
        headers = [("Content-Type", ctype), ("Content-Length", str(len(body))), ("Vary", "Accept")]
        start_response("200 OK", headers)
        return [body]

    def readiness() -> tuple[str, bytes]:
        states = store.states().values()
        waiting = sum(1 for state in states if state.up is None)
        if waiting:
            return (
                "503 Service Unavailable",
                f"not ready: {waiting} of {len(states)} clusters not polled yet\n".encode(),
            )
        return "200 OK", b"ready\n"

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if auth is not None and path not in OPEN_PATHS:
            verdict = auth.check(environ.get("HTTP_AUTHORIZATION"))
            if verdict is not Verdict.ALLOW:
                return refuse(verdict, start_response)
        if path == telemetry_path:
            if exposition is not None:
                return cached_metrics(environ, start_response)
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        if path == "/":
            return status_page(environ, start_response)
        if path == "/healthz":
            status, body = "200 OK", b"ok\n"
        elif path == "/-/healthy":
            status, body = "200 OK", b"healthy\n"
        elif path == "/-/ready":
            status, body = readiness()
        else:
            status, body = "404 Not Found", b"not found\n"
        start_response(status, [("Content-Type", TEXT), ("Content-Length", str(len(body)))])
        return [body]

    return app
