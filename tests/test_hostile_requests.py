"""Clients that misbehave on purpose, one at a time, against the /metrics server in this process with short
deadlines: trickled heads, idle and slow clients, the connection cap, HTTP that is not quite HTTP, and
password floods. Every client is on 127.0.0.1.
"""

from __future__ import annotations

import base64
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from aiohttp import web

from exporter.basicauth import BasicAuth
from exporter.endpoints import Parts, make_app
from exporter.render import Exposition
from exporter.web import Handler, Limits, WebServer
from tests.helpers import read_answer
from tests.test_hostile_clients import GET, closed_by_server, connect, scrape, still_open, wait_until
from tests.test_web import server_end

# Deadlines, the connection cap, slow readers, stopping: a server in this process with short limits


class Blocking(Exposition):
    """An exposition whose /metrics body waits for ``release``: a request in progress, for as long as needed."""

    def __init__(self) -> None:
        super().__init__(["kunshan"])
        self.entered = threading.Event()
        self.release = threading.Event()

    def body(self, openmetrics: bool = False, compressed: bool = False, names: Iterable[str] = ()) -> list[bytes]:
        self.entered.set()
        assert self.release.wait(10)
        return super().body(openmetrics, compressed, names)


@pytest.fixture
def serve() -> Iterator[Callable[..., WebServer]]:
    servers: list[WebServer] = []

    def start(app: Any = None, limits: Limits | None = None, exposition: Exposition | None = None) -> WebServer:
        app = app or make_app(exposition or Exposition(["kunshan"]))
        servers.append(WebServer(app, "127.0.0.1", 0, limits=limits))
        servers[-1].start()
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def test_a_head_trickled_a_line_at_a_time_is_cut_off_at_the_head_deadline(serve: Callable[..., WebServer]) -> None:
    """The deadline is for the whole head, not for each read: a client that keeps sending never meets it."""
    server = serve(limits=Limits(head_timeout=0.5))
    with connect(server.port) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\n")
        started = time.monotonic()
        cut_off = False
        while time.monotonic() - started < 5 and not cut_off:
            try:
                sock.sendall(b"X-Slow: y\r\n")
            except (BrokenPipeError, ConnectionResetError):
                cut_off = True
            cut_off = cut_off or not still_open(sock)
            time.sleep(0.05)
        assert cut_off and time.monotonic() - started >= 0.4


def test_a_connection_that_never_sends_a_head_or_finishes_a_tls_handshake_is_closed(
    serve: Callable[..., WebServer], certs: Path
) -> None:
    server = serve(limits=Limits(head_timeout=0.5))
    with connect(server.port) as sock:
        assert closed_by_server(sock)
    tls = WebServer(make_app(Exposition([])), "127.0.0.1", 0, lambda: _server_tls(certs), Limits(head_timeout=0.5))
    tls.start()
    try:
        with connect(tls.port) as sock:
            sock.sendall(b"\x16\x03\x01\x00\xa5")  # the start of a ClientHello, and no more
            assert closed_by_server(sock)
    finally:
        tls.stop()


def _server_tls(certs: Path) -> Any:
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(certs / "server.pem"), str(certs / "server.key"))
    return ctx


def test_a_kept_alive_connection_idle_past_the_idle_timeout_is_closed(serve: Callable[..., WebServer]) -> None:
    server = serve(limits=Limits(idle_timeout=0.5))
    with connect(server.port) as sock:
        sock.sendall(GET)
        assert read_answer(sock)[0] == "HTTP/1.1 200 OK"
        assert closed_by_server(sock)


def test_at_the_connection_cap_the_least_recently_active_idle_connection_makes_room(
    serve: Callable[..., WebServer],
) -> None:
    server = serve(limits=Limits(max_connections=20))
    idle = [connect(server.port) for _ in range(20)]
    with connect(server.port) as scraper:  # the 21st: the first idle connection makes room
        scraper.sendall(GET)
        assert read_answer(scraper)[0] == "HTTP/1.1 200 OK"
        more = [connect(server.port) for _ in range(5)]  # idle[1:6] make room; the scraper was active since
        assert scrape(server.port) == "HTTP/1.1 200 OK"  # and idle[6]
        assert all(closed_by_server(sock) for sock in idle[:7])
        assert all(still_open(sock) for sock in idle[7:] + more)
        scraper.sendall(GET)
        assert read_answer(scraper)[0] == "HTTP/1.1 200 OK"
    for sock in idle + more:
        sock.close()


def test_a_request_in_progress_is_never_evicted(serve: Callable[..., WebServer]) -> None:
    blocking = Blocking()
    server = serve(exposition=blocking, limits=Limits(max_connections=3))
    with connect(server.port) as busy:
        busy.sendall(GET)
        assert blocking.entered.wait(5)
        others = [connect(server.port) for _ in range(10)]
        wait_until(lambda: not still_open(others[-3]), what="idle connections evicted for newer ones")
        blocking.release.set()
        assert read_answer(busy)[0] == "HTTP/1.1 200 OK"
    for sock in others:
        sock.close()


def big_app(size: int, calls: list[int]) -> Handler:
    body = b"x" * size

    async def app(request: web.BaseRequest) -> web.StreamResponse:
        calls.append(1)
        return Parts(request, [body], {"Content-Type": "text/plain"})

    return app


def server_end_open(client: socket.socket) -> bool:
    """True while this process holds the server's end of ``client``'s connection."""
    end = server_end(client)
    if end is None:
        return False
    end.close()
    return True


def test_a_client_that_does_not_read_its_answer_is_cut_off_at_the_write_deadline(
    serve: Callable[..., WebServer],
) -> None:
    size = 64 << 20
    server = serve(big_app(size, []), Limits(write_timeout=0.5))
    with connect(server.port) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(GET)
        wait_until(lambda: not server_end_open(sock), what="the server drops the connection")
        received = 0
        try:
            while data := sock.recv(1 << 20):
                received += len(data)
        except ConnectionResetError:
            pass
        assert received < size


def test_a_pipelined_request_is_not_read_until_the_answer_before_it_is_taken(
    serve: Callable[..., WebServer],
) -> None:
    calls: list[int] = []
    server = serve(big_app(16 << 20, calls))  # more than the kernel buffers on both sides hold
    with connect(server.port) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(GET * 3)
        wait_until(lambda: len(calls) == 1, what="the first request runs")
        with pytest.raises(AssertionError):
            wait_until(lambda: len(calls) > 1, seconds=0.5)  # not while the first answer is not taken
        buffered = bytearray()
        sock.settimeout(10)
        for _ in range(3):
            assert read_answer(sock, buffered)[0] == "HTTP/1.1 200 OK"
        assert len(calls) == 3


def test_the_server_runs_a_fixed_number_of_threads_and_stop_ends_them_and_every_connection(
    serve: Callable[..., WebServer],
) -> None:
    before = threading.active_count()
    server = serve(limits=Limits(workers=4))
    idle = [connect(server.port) for _ in range(100)]
    assert scrape(server.port) == "HTTP/1.1 200 OK"
    assert threading.active_count() <= before + 4 + 1
    server.stop()
    assert all(closed_by_server(sock) for sock in idle)
    assert threading.active_count() <= before
    for sock in idle:
        sock.close()


# HTTP hygiene (item 14), over raw sockets


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE"])
def test_methods_other_than_get_and_head_get_405_with_allow(serve: Callable[..., WebServer], method: bytes) -> None:
    server = serve()
    with connect(server.port) as sock:
        sock.sendall(method + b" /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab")
        status, headers, _ = read_answer(sock)
        assert status == "HTTP/1.1 405 Method Not Allowed" and headers["allow"] == "GET, HEAD"
        assert "server" not in headers and closed_by_server(sock)


def test_a_method_that_http_does_not_know_is_refused_by_the_parser(serve: Callable[..., WebServer]) -> None:
    server = serve()
    with connect(server.port) as sock:
        sock.sendall(b"BREW /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = read_answer(sock)
        assert status.split(" ", 1)[1] == "400 Bad Request" and headers["x-content-type-options"] == "nosniff"
        assert "server" not in headers and closed_by_server(sock)
    assert scrape(server.port) == "HTTP/1.1 200 OK"


def test_an_http_0_9_request_line_gets_no_answer_and_the_connection_closed_at_the_head_deadline(
    serve: Callable[..., WebServer],
) -> None:
    server = serve(limits=Limits(head_timeout=0.5))
    with connect(server.port) as sock:
        sock.sendall(b"GET /metrics\r\n")
        assert closed_by_server(sock, seconds=5)  # with not a byte sent


def test_an_absolute_form_target_is_served(serve: Callable[..., WebServer]) -> None:
    server = serve()
    with connect(server.port) as sock:
        sock.sendall(b"GET http://exporter:10863/healthz HTTP/1.1\r\nHost: exporter:10863\r\n\r\n")
        assert read_answer(sock)[2] == b"ok\n"


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n",  # a space before the colon
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\n\r\n",  # no Host
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # TLS on the plain port
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 20000 + b"\r\n\r\n",
        b"GET /" + b"y" * 20000,
    ],
)
def test_a_malformed_request_gets_400_and_the_connection_closes(
    serve: Callable[..., WebServer], request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp refuses these with 400 in HTTP/1.0 (which closes); a client's doing, never an error logged."""
    server = serve()
    with caplog.at_level(logging.WARNING), connect(server.port) as sock:
        sock.sendall(request_bytes)
        got, headers, _ = read_answer(sock)
        assert got == "HTTP/1.0 400 Bad Request" and "server" not in headers
        assert headers["x-content-type-options"] == "nosniff" and closed_by_server(sock)
    assert not caplog.records
    assert scrape(server.port) == "HTTP/1.1 200 OK"


def test_no_answer_names_the_server(serve: Callable[..., WebServer]) -> None:
    server = serve()
    with connect(server.port) as sock:
        for path in (b"/metrics", b"/", b"/healthz", b"/nope"):
            sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            assert "server" not in read_answer(sock)[1]


def test_pipelined_requests_are_answered_in_order_on_one_connection(serve: Callable[..., WebServer]) -> None:
    server = serve()
    with connect(server.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        buffered = bytearray()
        assert read_answer(sock, buffered)[2] == b"ok\n"
        assert read_answer(sock, buffered)[0] == "HTTP/1.1 404 Not Found"


# Basic auth (item 13), over raw sockets

PASSWORD = "scrape-s3cr3t"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4))


def basic(user: str, password: str, scheme: str = "Basic") -> bytes:
    return f"{scheme} ".encode() + base64.b64encode(f"{user}:{password}".encode())


def get_with(authorization: bytes) -> bytes:
    return b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: " + authorization + b"\r\n\r\n"


@pytest.mark.parametrize(
    "authorization",
    [
        b"Basic \xff\xfe\x80",  # not ASCII
        b"Basic " + base64.b64encode(b"\xff\xfe:\xff"),  # not UTF-8
        b"Basic !!!!",
        b"Basic",
        b"Bearer abc",
        basic("prometheus", "x" * 100),  # longer than bcrypt's 72 bytes
        basic("prometheus\x00", PASSWORD),
    ],
)
def test_an_odd_authorization_header_is_a_401_never_a_500(
    serve: Callable[..., WebServer], authorization: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(make_app(Exposition([]), BasicAuth({"prometheus": HASH})))
    with caplog.at_level(logging.ERROR):
        assert scrape(server.port, get_with(authorization)) == "HTTP/1.1 401 Unauthorized"
    assert not caplog.records


@pytest.mark.parametrize("scheme", ["basic", "BASIC", "bAsIc"])
def test_the_basic_scheme_is_matched_in_any_case(serve: Callable[..., WebServer], scheme: str) -> None:
    server = serve(make_app(Exposition([]), BasicAuth({"prometheus": HASH})))
    assert scrape(server.port, get_with(basic("prometheus", PASSWORD, scheme))) == "HTTP/1.1 200 OK"


def test_a_password_flood_waits_for_bcrypt_a_few_at_a_time_and_a_known_scraper_gets_through(
    serve: Callable[..., WebServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one bcrypt check hangs, at most 4 checks run or wait; 6 more distinct wrong passwords get 503
    at once, and a scraper whose credentials were checked before is served."""
    server = serve(make_app(Exposition([]), BasicAuth({"prometheus": HASH})))
    assert scrape(server.port, get_with(basic("prometheus", PASSWORD))) == "HTTP/1.1 200 OK"
    real = bcrypt.checkpw
    hanging, release = threading.Event(), threading.Event()
    running = [0, 0]  # now, most at once

    def slow_checkpw(password: bytes, hashed: bytes) -> bool:
        running[0] += 1
        running[1] = max(running)
        hanging.set()
        assert release.wait(10)
        running[0] -= 1
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", slow_checkpw)
    flood = [connect(server.port) for _ in range(10)]
    flood[0].sendall(get_with(basic("prometheus", "wrong-0")))
    assert hanging.wait(5)
    for i, sock in enumerate(flood[1:], 1):
        sock.sendall(get_with(basic("prometheus", f"wrong-{i}")))
    wait_until(lambda: sum(not still_open(sock) for sock in flood[1:]) == 6, what="six answered at once")
    waiting = [sock for sock in flood if still_open(sock)]  # the one in bcrypt and three waiting for it
    busy = [read_answer(sock) for sock in flood if sock not in waiting]  # while bcrypt still hangs
    assert all(status == "HTTP/1.1 503 Service Unavailable" and h["retry-after"] == "1" for status, h, _ in busy)
    assert len(waiting) == 4
    assert scrape(server.port, get_with(basic("prometheus", PASSWORD))) == "HTTP/1.1 200 OK"
    release.set()
    assert [read_answer(sock)[0] for sock in waiting] == ["HTTP/1.1 401 Unauthorized"] * 4
    assert running[1] == 1
    for sock in flood:
        sock.close()


def test_a_flood_of_one_wrong_password_costs_one_hash(
    serve: Callable[..., WebServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve(make_app(Exposition([]), BasicAuth({"prometheus": HASH})))
    real, hashed = bcrypt.checkpw, []
    monkeypatch.setattr(bcrypt, "checkpw", lambda p, h: hashed.append(p) or real(p, h))
    statuses: list[str] = []
    threads = [
        threading.Thread(target=lambda: statuses.append(scrape(server.port, get_with(basic("prometheus", "guess")))))
        for _ in range(20)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 401, or 503 for those that came while the first check ran with three more waiting for it
    assert len(statuses) == 20 and "HTTP/1.1 401 Unauthorized" in statuses
    assert set(statuses) <= {"HTTP/1.1 401 Unauthorized", "HTTP/1.1 503 Service Unavailable"}
    assert hashed == [b"guess"]
