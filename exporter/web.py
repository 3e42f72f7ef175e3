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
IDLE_TIMEOUT = 300.0  # a kept-alive connection with no request for this long is closed (scrape intervals are shorter)


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

    def server_activate(self) -> None:
        super().server_activate()
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

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

    def close_connections(self) -> None:
        """End the kept-alive connections: their threads see the end of the stream and return."""
        with self.connections_lock:
            for sock in self.connections:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class _QuietHandler(WSGIRequestHandler):
    """HTTP/1.1 with keep-alive, as Prometheus scrapes: one thread per connection, not per request.

    wsgiref's own handler answers one request per connection in HTTP/1.0, so every scrape paid for a new
    connection (a TLS handshake with ``tls_server_config``), a new thread and several sends; each of those
    gives up the interpreter lock and waits for it again, which is what a scrape waits for while a poll
    runs. Here a response leaves in one send (two for a large body).
    """

    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT  # for the request, on a connection kept alive between requests
    # TCP_NODELAY, as Go's servers (Prometheus's own) have it: otherwise the last part of a large answer
    # can wait for the scraper's delayed ACK (40 ms on Linux). In 8-second runs of 20 wrk connections
    # without it, p99 was 12-71 ms; with it 9-20 ms.
    disable_nagle_algorithm = True
    server: _ThreadingServer

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(HANDSHAKE_TIMEOUT)
            self.request.do_handshake()
            self.request.settimeout(None)
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()
        while not self.close_connection:
            self.handle_one_request()

    def handle_one_request(self) -> None:
        self.close_connection = True
        try:
            self.raw_requestline = self.rfile.readline(65537)
        except (TimeoutError, OSError):
            return  # idle too long, or gone
        if not self.raw_requestline:
            return
        if len(self.raw_requestline) > 65536:
            self.requestline, self.request_version, self.command = "", "", ""
            self.send_error(414)
            return
        if not self.parse_request():  # an error has been sent
            return
        # A request body is never read: the connection ends after the answer, so that no body is taken
        # for the next request.
        if self.headers.get("Transfer-Encoding") or self.headers.get("Content-Length", "0").strip() not in ("", "0"):
            self.close_connection = True
        self._respond(self.get_environ())

    def _respond(self, environ: dict[str, Any]) -> None:
        started: list[Any] = []
        written: list[bytes] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], Any]:
            started[:] = [status, headers]
            return written.append  # WSGI's write(), for an app that uses it

        try:
            app = self.server.get_app()
            assert app is not None
            result = app(environ, start_response)
            try:
                written.extend(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
            status, headers = started
            body = written[0] if len(written) == 1 else b"".join(written)
        except Exception:
            log.exception("serving %s failed", environ.get("PATH_INFO"))
            status, headers, body = "500 Internal Server Error", [("Content-Type", "text/plain")], b"internal error\n"
            self.close_connection = True
        names = {name.lower() for name, _ in headers}
        lines = [f"HTTP/1.1 {status}", f"Date: {self.date_time_string()}", f"Server: {self.version_string()}"]
        lines += [f"{name}: {value}" for name, value in headers if name.lower() != "connection"]
        if "content-length" not in names:
            lines.append(f"Content-Length: {len(body)}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if self.command == "HEAD":
            body = b""
        if len(body) <= 64 * 1024:
            self.wfile.write(head + body)
        else:
            self.wfile.write(head)
            self.wfile.write(body)
        self.log_request(status.split(" ", 1)[0], len(body))

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
        server: WSGIServer = make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
        assert isinstance(server, _ThreadingServer)
        self._server = server
        self.port: int = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,), name="web", daemon=True)

    def reconfigure(self, app: Callable[..., Iterable[bytes]], tls: ssl.SSLContext | None) -> None:
        """Serve new requests with ``app``, and new connections with ``tls`` (None: plain HTTP)."""
        self._server.set_app(app)
        self._server.tls = tls

    def start(self) -> None:
        """Start answering requests."""
        self._thread.start()

    def stop(self) -> None:
        """Stop answering, close the socket and end the kept-alive connections."""
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        self._thread.join(timeout=5)
