"""The HTTP endpoints over a real socket: /metrics (text, OpenMetrics, gzip), /, /healthz, 404, parallel scrapes."""

from __future__ import annotations

import dataclasses
import errno
import gzip
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bcrypt
import httpx
import pytest
from aiohttp import web
from prometheus_client.core import GaugeMetricFamily

from exporter.basicauth import BasicAuth
from exporter.config import build_config
from exporter.endpoints import Parts, make_app
from exporter.model import ClusterState, PollFailure
from exporter.render import Exposition
from exporter.service import Exporter
from exporter.web import ListenError, WebServer
from tests.helpers import read_answer

KUNSHAN = ClusterState("kunshan", True, 1_700_000_000.0, 1.0, None, None)


class Switchable(Exposition):
    """An exposition whose /metrics body can be made to wait or fail, as a test needs."""

    before_body: Callable[[], None] = staticmethod(lambda: None)

    def body(self, openmetrics: bool = False, compressed: bool = False, names: Iterable[str] = ()) -> list[bytes]:
        self.before_body()
        return super().body(openmetrics, compressed, names)


@pytest.fixture
def store() -> Switchable:
    s = Switchable(["kunshan", "<wuxi>"])
    s.publish(KUNSHAN)
    failure = PollFailure("timeout", "no answer within 30s", 1_700_000_000.0)
    s.publish(ClusterState("<wuxi>", False, None, 2.0, "timeout", None, last_failure=failure))
    return s


@pytest.fixture
def served(store: Switchable) -> Iterator[tuple[str, Switchable]]:
    server = WebServer(make_app(store), "127.0.0.1", 0)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}", store
    finally:
        server.stop()


def add_test_gauge(exposition: Exposition) -> None:
    """Kunshan's state with a gauge sugon_test_value 42 among the families it keeps."""
    gauge = GaugeMetricFamily("sugon_test_value", "A test gauge.", value=42)
    exposition.publish(dataclasses.replace(KUNSHAN, kept=(gauge,)))


def test_metrics_is_served_as_text(served: tuple[str, Switchable]) -> None:
    url, store = served
    add_test_gauge(store)
    r = httpx.get(url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert "sugon_test_value 42.0" in r.text


def test_metrics_speaks_openmetrics_when_asked(served: tuple[str, Switchable]) -> None:
    url, store = served
    add_test_gauge(store)
    r = httpx.get(url + "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.rstrip().endswith("# EOF")


def test_metrics_is_gzipped_when_accepted(served: tuple[str, Switchable]) -> None:
    url, store = served
    add_test_gauge(store)
    with httpx.Client() as c:
        r = c.get(url + "/metrics", headers={"Accept-Encoding": "gzip"})
        raw = c.send(c.build_request("GET", url + "/metrics", headers={"Accept-Encoding": "gzip"}), stream=True)
        body = b"".join(raw.iter_raw())
    assert r.headers["content-encoding"] == "gzip"
    assert b"sugon_test_value 42.0" in gzip.decompress(body)


def test_healthz_index_and_404(served: tuple[str, Switchable]) -> None:
    url, _ = served
    assert httpx.get(url + "/healthz").status_code == 200
    index = httpx.get(url + "/")
    assert index.status_code == 200 and "text/html" in index.headers["content-type"]
    assert "kunshan" in index.text and "up" in index.text
    assert "&lt;wuxi&gt;" in index.text and "down (timeout)" in index.text and "<wuxi>" not in index.text
    assert 'href="./metrics"' in index.text
    assert httpx.get(url + "/nope").status_code == 404


def test_concurrent_scrapes_are_served_in_parallel(served: tuple[str, Switchable]) -> None:
    """Each scrape waits in collect() for the other: a server that answers one at a time would time out."""
    url, store = served
    store.before_body = threading.Barrier(2, timeout=5).wait
    with ThreadPoolExecutor(2) as pool:
        codes = list(pool.map(lambda _: httpx.get(url + "/metrics", timeout=10).status_code, range(2)))
    assert codes == [200, 200]


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(5)
    return sock.recv(1) == b""


@pytest.fixture
def conn(served: tuple[str, Switchable]) -> Iterator[socket.socket]:
    port = int(served[0].rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        yield sock


def test_a_scraper_keeps_its_connection_across_scrapes(served: tuple[str, Switchable], conn: socket.socket) -> None:
    # Prometheus keeps the connection open between scrapes: no new connection, thread or TLS handshake each.
    add_test_gauge(served[1])
    buffered = bytearray()
    for _ in range(3):
        conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = read_answer(conn, buffered)
        assert status == "HTTP/1.1 200 OK" and headers.get("connection") != "close"
        assert b"sugon_test_value 42.0" in body
    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_answer(conn, buffered)[2] == b"ok\n"


def test_a_scraper_that_asks_to_close_and_an_http_1_0_one_are_closed_after_theread_answer(
    served: tuple[str, Switchable],
) -> None:
    port = int(served[0].rsplit(":", 1)[1])
    for request in (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /healthz HTTP/1.0\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(request)
            _, headers, body = read_answer(sock, bytearray())
            # HTTP/1.0 closes unless asked otherwise: "Connection: close" is only needed in HTTP/1.1
            closing = headers.get("connection", "close" if b"HTTP/1.0" in request else None)
            assert body == b"ok\n" and closing == "close" and _closed(sock)


def test_a_request_body_is_never_read_as_the_next_request(conn: socket.socket) -> None:
    smuggled = b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(smuggled), smuggled))
    buffered = bytearray()
    status, headers, _ = read_answer(conn, buffered)
    assert status == "HTTP/1.1 200 OK" and headers["connection"] == "close"
    assert _closed(conn) and not buffered  # no 404 for the body


def test_head_gets_the_headers_without_the_body(conn: socket.socket) -> None:
    conn.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.settimeout(5)
    answer = conn.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 3\r\n" in answer
    assert answer.endswith(b"\r\n\r\n")
    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # and the connection is still in step
    assert read_answer(conn, bytearray())[2] == b"ok\n"


def broken_rendering() -> None:
    raise RuntimeError("renderer bug")


def test_a_failing_rendering_gets_500_and_the_server_serves_on(
    served: tuple[str, Switchable], conn: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    url, store = served
    store.before_body = broken_rendering
    conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, _ = read_answer(conn, bytearray())
    assert status.startswith("HTTP/1.1 500") and headers["connection"] == "close" and _closed(conn)
    assert "serving /metrics failed" in caplog.text
    assert httpx.get(url + "/healthz").status_code == 200


def test_stopping_the_server_ends_its_kept_alive_connections(store: Switchable) -> None:
    server = WebServer(make_app(store), "127.0.0.1", 0)
    server.start()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(sock, bytearray())[2] == b"ok\n"
        server.stop()
        assert _closed(sock)


def server_end(client: socket.socket) -> socket.socket | None:
    """A copy of the server's end of ``client``'s connection, found among this process's open descriptors
    (None once the server has closed it)."""
    for fd in os.listdir("/proc/self/fd"):
        try:
            candidate = socket.socket(fileno=os.dup(int(fd)))
        except OSError:
            continue  # not a socket
        try:
            if candidate.type == socket.SOCK_STREAM and candidate.getpeername() == client.getsockname():
                return candidate
        except OSError:
            pass
        candidate.close()
    return None


def test_answers_are_sent_without_waiting_for_acknowledgements(conn: socket.socket) -> None:
    """TCP_NODELAY on every scraper's connection: with Nagle's algorithm, the end of a large answer can
    wait for the scraper's delayed ACK, 40 ms on Linux."""
    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_answer(conn, bytearray())[2] == b"ok\n"
    accepted = server_end(conn)
    assert accepted is not None
    with accepted:
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_reconfigure_gives_new_connections_the_new_tls_and_new_requests_the_new_app(
    store: Switchable, certs: Path
) -> None:
    server = WebServer(make_app(store), "127.0.0.1", 0)
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as kept:
            kept.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b"sugon_test_value" not in read_answer(kept, bytearray())[2]
            add_test_gauge(store)
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.load_cert_chain(str(certs / "server.pem"), str(certs / "server.key"))
            server.reconfigure(make_app(store), lambda: tls)
            kept.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")  # an open connection keeps plain HTTP
            assert b"sugon_test_value 42.0" in read_answer(kept, bytearray())[2]
        verify = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        assert "sugon_test_value 42.0" in httpx.get(f"https://127.0.0.1:{server.port}/metrics", verify=verify).text
        server.reconfigure(make_app(store), None)
        assert httpx.get(f"http://127.0.0.1:{server.port}/healthz").status_code == 200
    finally:
        server.stop()


def test_a_server_on_several_addresses_answers_on_each_and_one_it_cannot_bind_releases_the_others(
    store: Switchable,
) -> None:
    app = make_app(store)
    server = WebServer(app, "127.0.0.1", 0, more_addresses=[("127.0.0.1", 0)])
    server.start()
    try:
        assert len(set(server.ports)) == 2
        for port in server.ports:
            assert httpx.get(f"http://127.0.0.1:{port}/healthz").text == "ok\n"
    finally:
        server.stop()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        with pytest.raises(ListenError) as failed:
            WebServer(app, "127.0.0.1", free, more_addresses=[("127.0.0.1", taken)])
    assert failed.value.address == ("127.0.0.1", taken) and failed.value.errno == errno.EADDRINUSE
    with socket.socket() as again:  # the first address was let go
        again.bind(("127.0.0.1", free))


@pytest.mark.parametrize("sizes", [(5, 0, 7), (300_000, 3, 600_000, 0, 11)])
def test_an_answer_in_parts_is_sent_whole_in_order_without_them_joined(sizes: tuple[int, ...]) -> None:
    """An answer's parts are sent one after another (a /metrics body is a large cached part and small ones),
    large ones in chunks; HEAD gets their total length and no body."""
    parts = [bytes([65 + i]) * size for i, size in enumerate(sizes)]

    async def app(request: web.BaseRequest) -> web.StreamResponse:
        return Parts(request, parts, {"Content-Type": "text/plain"})

    server = WebServer(app, "127.0.0.1", 0)
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            buffered = bytearray()
            for _ in range(2):  # and the connection stays in step after one
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                status, _, body = read_answer(sock, buffered)
                assert status == "HTTP/1.1 200 OK" and body == b"".join(parts)
            sock.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
            while b"\r\n\r\n" not in buffered:
                buffered += sock.recv(65536)
            assert f"Content-Length: {sum(sizes)}\r\n".encode() in buffered
            assert buffered.endswith(b"\r\n\r\n")
    finally:
        server.stop()


# ---- /-/healthy and /-/ready, and X-Content-Type-Options -----------------------------------------------


@pytest.fixture
def fresh() -> Iterator[tuple[str, Exposition]]:
    """A server over two clusters that have not polled yet, with basic auth (user prom, password pw)."""
    store = Exposition(["kunshan", "wuxi"])
    auth = BasicAuth({"prom": bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4))})
    server = WebServer(make_app(store, auth), "127.0.0.1", 0)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}", store
    finally:
        server.stop()


def test_healthy_answers_200_from_the_start_and_ready_503_until_every_cluster_has_ended_its_first_poll(
    fresh: tuple[str, Exposition],
) -> None:
    url, store = fresh
    healthy = httpx.get(url + "/-/healthy")
    assert (healthy.status_code, healthy.text) == (200, "healthy\n")
    assert healthy.headers["content-type"] == "text/plain; charset=utf-8"
    not_ready = httpx.get(url + "/-/ready")
    assert (not_ready.status_code, not_ready.text) == (503, "not ready: 2 of 2 clusters not polled yet\n")
    store.publish(ClusterState("kunshan", True, 1_700_000_000.0, 1.0, None, None))
    assert httpx.get(url + "/-/ready").text == "not ready: 1 of 2 clusters not polled yet\n"
    failure = PollFailure("timeout", "no answer within 30s", 1_700_000_000.0)
    store.publish(ClusterState("wuxi", False, None, 30.0, "timeout", None, last_failure=failure))  # failed: ended
    ready = httpx.get(url + "/-/ready")
    assert (ready.status_code, ready.text) == (200, "ready\n")
    assert httpx.get(url + "/-/healthy").status_code == 200


def test_the_probes_need_no_credentials_while_metrics_and_the_status_page_still_do(
    fresh: tuple[str, Exposition],
) -> None:
    url, _ = fresh
    for path in ("/-/healthy", "/-/ready", "/healthz"):
        assert httpx.get(url + path).status_code in (200, 503), path
        assert httpx.get(url + path, auth=("prom", "wrong")).status_code in (200, 503), path
    for path in ("/metrics", "/", "/-/nope"):
        assert httpx.get(url + path).status_code == 401, path
    assert httpx.get(url + "/metrics", auth=("prom", "pw")).status_code == 200


def test_head_of_the_probes_gets_their_status_and_length_without_a_body(fresh: tuple[str, Exposition]) -> None:
    url, _ = fresh
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for path, head in (
            ("/-/healthy", b"HTTP/1.1 200 OK\r\n"),
            ("/-/ready", b"HTTP/1.1 503 Service Unavailable\r\n"),
        ):
            sock.sendall(f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            answer = b""
            while not answer.endswith(b"\r\n\r\n"):
                answer += sock.recv(65536)
            assert answer.startswith(head), answer
            length = len(httpx.get(url + path).content)
            assert f"Content-Length: {length}\r\n".encode() in answer and length > 0
        sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")  # and the connection is still in step
        assert read_answer(sock, bytearray())[2] == b"healthy\n"


def test_every_answer_says_nosniff() -> None:
    """The status page, the metrics (cached and filtered by name[]), the probes, and every error."""
    exporter = Exporter(build_config({"clusters": [{"name": "a", "api_url": "https://h:1", "token": "t"}]}, environ={}))
    broken = Switchable(["a"])
    broken.before_body = broken_rendering
    auth = BasicAuth({"prom": bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4))})
    apps = {
        "open": make_app(exporter.exposition),
        "auth": make_app(exporter.exposition, auth),
        "broken": make_app(broken),
    }
    seen: list[tuple[str, str, int]] = []
    for name, app in apps.items():
        server = WebServer(app, "127.0.0.1", 0)
        server.start()
        try:
            url = f"http://127.0.0.1:{server.port}"
            requests = {
                "open": [
                    ("GET", "/", {}),
                    ("GET", "/", {"Accept": "application/json"}),
                    ("GET", "/metrics", {}),
                    ("GET", "/metrics", {"Accept-Encoding": "gzip"}),
                    ("GET", "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"}),
                    ("GET", "/metrics?name[]=sugon_up", {}),
                    ("GET", "/healthz", {}),
                    ("GET", "/-/healthy", {}),
                    ("GET", "/-/ready", {}),
                    ("HEAD", "/-/ready", {}),
                    ("GET", "/nope", {}),
                    ("POST", "/metrics", {}),
                ],
                "auth": [("GET", "/metrics", {}), ("GET", "/", {})],
                "broken": [("GET", "/metrics", {})],
            }[name]
            for method, path, headers in requests:
                r = httpx.request(method, url + path, headers=headers)
                seen.append((method, path, r.status_code))
                assert r.headers.get("x-content-type-options") == "nosniff", (method, path, r.status_code)
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:  # a malformed head
                sock.sendall(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n")
                status, head, _ = read_answer(sock, bytearray())
                seen.append(("GET", "malformed", int(status.split()[1])))
                assert head["x-content-type-options"] == "nosniff"
        finally:
            server.stop()
    assert {code for _, _, code in seen} == {200, 400, 401, 404, 405, 500, 503}
