"""The WSGI app (/metrics, /, /healthz) and a threaded HTTP server, so concurrent scrapes run in parallel."""

from __future__ import annotations

import html
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import choose_encoder

from exporter import __version__
from exporter.exposition import CachedExposition
from exporter.state import StateStore
from exporter.webconfig import REALM, BasicAuth

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
HANDSHAKE_TIMEOUT = 10.0


def _index(store: StateStore) -> bytes:
    rows = []
    for name, state in store.states().items():
        up = "starting" if state.up is None else ("up" if state.up else f"down ({state.last_error})")
        last = (
            time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(state.last_success))
            if state.last_success is not None
            else "never"
        )
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{html.escape(up)}</td><td>{html.escape(last)}</td></tr>")
    page = (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>sugon-exporter</title></head><body>'
        f"<h1>sugon-exporter {html.escape(__version__)}</h1>"
        '<p>Prometheus exporter for the Sugon HPC OpenAPI job list. <a href="metrics">Metrics</a></p>'
        '<table border="1" cellpadding="4"><tr><th>cluster</th><th>state</th><th>last success</th></tr>'
        + "".join(rows)
        + "</table></body></html>"
    )
    return page.encode("utf-8")


def make_app(
    registry: CollectorRegistry,
    store: StateStore,
    auth: BasicAuth | None = None,
    exposition: CachedExposition | None = None,
) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """The exporter's WSGI application; with ``auth`` every path but /healthz needs credentials.

    With ``exposition``, /metrics is served from it (rendered once per change of the job data); a scrape
    that filters by ``name[]`` is left to prometheus-client's own handler.
    """
    metrics_app = make_wsgi_app(registry)

    def cached_metrics(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        assert exposition is not None
        _, content_type = choose_encoder(environ.get("HTTP_ACCEPT", ""))
        openmetrics = content_type.startswith("application/openmetrics-text")
        compressed = "gzip" in environ.get("HTTP_ACCEPT_ENCODING", "")
        body = exposition.render(openmetrics, compressed)
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        if compressed:
            headers.append(("Content-Encoding", "gzip"))
        start_response("200 OK", headers)
        return [body]

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if auth is not None and path != "/healthz" and not auth.allows(environ.get("HTTP_AUTHORIZATION")):
            body = b"401 Unauthorized\n"
            start_response(
                "401 Unauthorized",
                [
                    ("Content-Type", "text/plain; charset=utf-8"),
                    ("Content-Length", str(len(body))),
                    ("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"'),
                ],
            )
            return [body]
        if path == "/metrics":
            if exposition is not None and "name[]" not in parse_qs(environ.get("QUERY_STRING", "")):
                return cached_metrics(environ, start_response)
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            body, ctype, status = b"ok\n", "text/plain; charset=utf-8", "200 OK"
        elif path == "/":
            body, ctype, status = _index(store), "text/html; charset=utf-8", "200 OK"
        else:
            body, ctype, status = b"not found\n", "text/plain; charset=utf-8", "404 Not Found"
        start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
        return [body]

    return app


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    tls: ssl.SSLContext | None = None

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        if self.tls is not None:
            # The handshake happens in the request's own thread (see _QuietHandler.setup), so that a slow
            # or hostile client cannot stall the accepting thread.
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver calls this from inside its except block, so the exception is at hand.
        log.debug("request from %s failed", client_address, exc_info=True)  # noqa: LOG014


class _QuietHandler(WSGIRequestHandler):
    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(HANDSHAKE_TIMEOUT)
            self.request.do_handshake()
            self.request.settimeout(None)
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # the stdlib's signature
        log.debug("%s %s", self.address_string(), format % args)


class WebServer:
    """Serves the app on ``host:port`` in a background thread."""

    def __init__(
        self, app: Callable[..., Iterable[bytes]], host: str, port: int, tls: ssl.SSLContext | None = None
    ) -> None:
        server_class = type(
            "_Server",
            (_ThreadingServer,),
            {"address_family": socket.AF_INET6 if ":" in host else socket.AF_INET, "tls": tls},
        )
        self._server: WSGIServer = make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
        self.port: int = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,), name="web", daemon=True)

    def start(self) -> None:
        """Start answering requests."""
        self._thread.start()

    def stop(self) -> None:
        """Stop answering and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
