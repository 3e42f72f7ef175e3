"""The exporter's HTTP/1.1 transport against scripted servers on 127.0.0.1: framing, keep-alive, failures, TLS,
proxies."""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import socket
import ssl
import struct
import tracemalloc
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from exporter.sugon.connection import BodyTooLarge
from exporter.sugon.conversation import ApiConnectionError, ApiError, ApiInvalidResponse, Conversation
from exporter.sugon.transport import LeanTransport
from exporter.values import is_header
from tests.proxy import ForwardingProxy

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A TCP server on 127.0.0.1 that answers each request with the next scripted reply."""

    def __init__(self, replies: list[bytes | Handler], tls: ssl.SSLContext | None = None) -> None:
        self.replies = replies
        self.tls = tls
        self.connections = 0
        self.clients: list[tuple[str, int]] = []  # the client's address of each connection
        self.requests: list[bytes] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.delay = 0.0
        self._server: asyncio.base_events.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{port}"

    async def __aenter__(self) -> Server:  # noqa: PYI034  (typing.Self needs Python 3.11)
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.clients.append(writer.get_extra_info("peername"))
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                self.requests.append(head + await reader.readexactly(length))
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
                await asyncio.sleep(self.delay)
                self.in_flight -= 1
                reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
                if isinstance(reply, bytes):
                    writer.write(reply)
                    await writer.drain()
                else:
                    await reply(reader, writer)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


def ok(body: bytes = b'{"a": 1}', extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def close_after(data: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
        writer.close()

    return handler


async def get(server: Server, transport: LeanTransport, timeout: float = 5.0) -> httpx.Response:
    """One GET through ``transport``, left open for the next (closing a client closes its transport)."""
    return await httpx.AsyncClient(transport=transport, timeout=timeout).get(server.url + "/x")


def run(coro: Awaitable[object]) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_a_content_length_answer_and_keep_alive_reuse() -> None:
    async def go() -> None:
        async with Server([ok(b'{"n": 1}'), ok(b'{"n": 2}')]) as server:
            transport = LeanTransport()
            async with httpx.AsyncClient(transport=transport) as client:
                first = await client.get(server.url + "/a", params={"start": 100, "q": "x y"}, headers={"token": "t"})
                second = await client.get(server.url + "/b")
            assert (first.status_code, first.json(), second.json()) == (200, {"n": 1}, {"n": 2})
            assert server.connections == 1  # the second request went over the kept-alive connection
            request = server.requests[0].decode()
            assert request.startswith("GET /a?start=100&q=x+y HTTP/1.1\r\n")
            assert "\r\ntoken: t\r\n" in request and f"\r\nHost: {server.url[7:]}\r\n" in request

    run(go())


def test_a_chunked_answer_with_extensions_and_trailers() -> None:
    reply = b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\n{"a"\r\n5\r\n: 12}\r\n0\r\nX-T: 1\r\n\r\n'

    async def go() -> None:
        async with Server([reply, ok()]) as server:
            transport = LeanTransport()
            assert (await get(server, transport)).json() == {"a": 12}
            assert (await get(server, transport)).json() == {"a": 1}
            assert server.connections == 1

    run(go())


def test_a_body_ended_by_closing_the_connection() -> None:
    async def go() -> None:
        handler = await close_after(b'HTTP/1.1 200 OK\r\n\r\n{"closed": true}')
        async with Server([handler, ok()]) as server:
            transport = LeanTransport()
            assert (await get(server, transport)).json() == {"closed": True}
            assert (await get(server, transport)).json() == {"a": 1}
            assert server.connections == 2  # a close-delimited body leaves nothing to reuse

    run(go())


def test_connection_close_and_http_1_0_are_not_reused() -> None:
    async def go() -> None:
        async with Server(
            [ok(extra=b"Connection: close\r\n"), b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}", ok()]
        ) as server:
            transport = LeanTransport()
            for _ in range(3):
                assert (await get(server, transport)).status_code == 200
            assert server.connections == 3

    run(go())


def test_no_body_statuses_and_interim_answers() -> None:
    async def go() -> None:
        async with Server(
            [b"HTTP/1.1 204 No Content\r\n\r\n", b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"[1]")]
        ) as server:
            transport = LeanTransport()
            first = await get(server, transport)
            second = await get(server, transport)
            assert (first.status_code, first.content, second.status_code, second.json()) == (204, b"", 200, [1])

    run(go())


def test_gzip_bodies_are_decoded_by_httpx() -> None:
    body = gzip.compress(b'{"zipped": 1}')

    async def go() -> None:
        async with Server([ok(body, b"Content-Encoding: gzip\r\n")]) as server:
            assert (await get(server, LeanTransport())).json() == {"zipped": 1}

    run(go())


def test_a_post_sends_its_body() -> None:
    async def go() -> None:
        async with Server([ok()]) as server:
            async with httpx.AsyncClient(transport=LeanTransport()) as client:
                await client.post(server.url + "/login", data={"user": "u", "password": "p w"})
            head, _, body = server.requests[0].partition(b"\r\n\r\n")
            assert head.startswith(b"POST /login HTTP/1.1")
            assert b"Content-Length: 19" in head and body == b"user=u&password=p+w"

    run(go())


@pytest.mark.parametrize(
    ("reply", "error", "text"),
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", httpx.RemoteProtocolError, "illegal status line"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", httpx.RemoteProtocolError, "illegal status line"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", httpx.RemoteProtocolError, "illegal header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", httpx.RemoteProtocolError, "bad Content-Length"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            httpx.RemoteProtocolError,
            "illegal chunk header",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            httpx.RemoteProtocolError,
            "Only Transfer-Encoding: chunked",
        ),
    ],
)
def test_malformed_answers_are_protocol_errors(reply: bytes, error: type[Exception], text: str) -> None:
    async def go() -> None:
        async with Server([reply]) as server:
            with pytest.raises(error, match=text):
                await get(server, LeanTransport())

    run(go())


@pytest.mark.parametrize(
    "sent",
    [b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"cut', b"HTTP/1.1 200 OK\r\nContent-", b""],
)
def test_a_connection_closed_in_mid_answer_is_a_transport_error(sent: bytes) -> None:
    async def go() -> None:
        async with Server([await close_after(sent)]) as server:
            with pytest.raises(httpx.RemoteProtocolError, match="closed the connection"):
                await get(server, LeanTransport())

    run(go())


def test_a_kept_alive_connection_the_server_closed_is_replaced() -> None:
    async def go() -> None:
        handler = await close_after(ok(extra=b"Connection: keep-alive\r\n"))  # says keep-alive, closes anyway
        async with Server([handler, ok(b"[2]")]) as server:
            transport = LeanTransport()
            assert (await get(server, transport)).json() == {"a": 1}
            await asyncio.sleep(0.05)
            assert (await get(server, transport)).json() == [2]
            assert server.connections == 2

    run(go())


def test_refused_connection_and_read_timeout() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async def go() -> None:
        async with Server([ok()]) as server:
            url = server.url
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient(transport=LeanTransport()) as client:
                await client.get(url)
        async with Server([slow]) as server:
            with pytest.raises(httpx.ReadTimeout):
                await get(server, LeanTransport(), timeout=0.2)

    run(go())


def test_a_head_of_100_kib_is_read_and_a_head_or_body_over_the_limits_is_refused() -> None:
    padding = b"X-Padding: " + b"a" * 100 * 1024 + b"\r\n"  # httpx's stack reads heads of up to about 100 KiB

    async def go() -> None:
        async with Server([ok(extra=padding)]) as server:
            answer = await get(server, LeanTransport())
            assert answer.json() == {"a": 1} and len(answer.headers["x-padding"]) == 100 * 1024
        async with Server([b"HTTP/1.1 200 OK\r\nX: " + b"a" * 300_000 + b"\r\n\r\n"]) as server:
            with pytest.raises(httpx.RemoteProtocolError, match="head too large"):
                await get(server, LeanTransport())
        async with Server([b"\r\n" * 150_000]) as server:  # endless empty lines count towards the head
            with pytest.raises(httpx.RemoteProtocolError, match="head too large"):
                await get(server, LeanTransport())
        async with Server([ok(b"x" * 2000)]) as server:
            with pytest.raises(BodyTooLarge, match="body too large"):
                await get(server, LeanTransport(max_body=1000))

    run(go())


def test_never_more_requests_in_flight_than_connections() -> None:
    async def go() -> None:
        async with Server([ok()]) as server:
            server.delay = 0.02
            async with httpx.AsyncClient(transport=LeanTransport(max_connections=3)) as client:
                answers = await asyncio.gather(*(client.get(server.url) for _ in range(20)))
            assert [a.status_code for a in answers] == [200] * 20
            assert server.most_in_flight == 3 and server.connections == 3

    run(go())


def test_usable_from_one_event_loop_after_another() -> None:
    transport = LeanTransport()

    async def go(server_reply: bytes) -> object:
        async with Server([server_reply]) as server:
            return (await get(server, transport)).json()

    assert run(go(ok(b"[1]"))) == [1]
    assert run(go(ok(b"[2]"))) == [2]


def test_tls_with_the_right_ca_without_verification_and_with_the_wrong_ca(certs: Path) -> None:
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(certs / "server.pem", certs / "server.key")

    async def go() -> None:
        async with Server([ok(b'{"tls": 1}')], tls=server_tls) as server:
            trusted = LeanTransport(ssl.create_default_context(cafile=str(certs / "ca.pem")), 2)
            assert (await get(server, trusted)).json() == {"tls": 1}
            unverified = ssl.create_default_context()
            unverified.check_hostname = False
            unverified.verify_mode = ssl.CERT_NONE
            assert (await get(server, LeanTransport(unverified, 2))).json() == {"tls": 1}
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await get(server, LeanTransport(ssl.create_default_context(), 2))

    run(go())


PROXY_VARIABLES = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "REQUEST_METHOD",  # in a CGI environment the standard library ignores HTTP_PROXY
)


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The process environment without any proxy variable, to set the ones a test wants."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


EMPTY_PAGE = b'{"code": "0", "msg": "success", "data": {"total": 0, "list": []}}'


@pytest.mark.parametrize(
    ("variables", "setting", "proxied"),
    [
        ({}, {}, False),
        ({"NO_PROXY": "*"}, {}, False),
        ({"HTTP_PROXY": "{proxy}"}, {}, True),
        ({"all_proxy": "{proxy}"}, {}, True),
        ({"http_proxy": "{proxy}"}, {"lean_http": False}, True),
        ({"HTTP_PROXY": "{proxy}", "NO_PROXY": "127.0.0.1"}, {}, False),
        ({"HTTP_PROXY": "{proxy}", "no_proxy": "example.com, .127.0.0.1"}, {}, False),
        ({"HTTP_PROXY": "{proxy}", "NO_PROXY": "localhost"}, {}, True),
        ({"HTTPS_PROXY": "{proxy}"}, {}, False),  # a proxy for https only: http:// goes direct
    ],
    ids=[
        "no variable",
        "NO_PROXY only",
        "HTTP_PROXY",
        "all_proxy",
        "http_proxy, lean_http false",
        "NO_PROXY names the host",
        "no_proxy names a suffix of it",
        "NO_PROXY names another host",
        "HTTPS_PROXY",
    ],
)
def test_the_exporter_polls_through_the_proxy_the_environment_names_unless_no_proxy_names_the_host(
    environment: pytest.MonkeyPatch, variables: dict[str, str], setting: dict[str, bool], proxied: bool
) -> None:
    """The API answers after two empty lines, which only the exporter's transport reads (h11 refuses them): every
    poll succeeds, through the proxy (which relays the bytes as they come) or without it."""
    from exporter.config import build_config
    from exporter.service import Exporter

    async def go(proxy: ForwardingProxy) -> None:
        async with Server([b"\r\n\r\n" + ok(EMPTY_PAGE)]) as api:
            for name, value in variables.items():
                environment.setenv(name, value.format(proxy=proxy.url))
            clusters = [{"name": "a", "api_url": api.url, "token": "t", "cluster_ids": [1]}]
            exporter = Exporter(build_config({**setting, "clusters": clusters}, environ={}))
            assert await exporter.poll_all_once()
            assert len(api.requests) == 1
            if proxied:  # in absolute form, as a client asks an HTTP proxy
                assert [head.split(b" ")[:2] for head in proxy.heads] == [
                    [b"GET", f"{api.url}/hpc/openapi/v2/jobs?strClusterIDList=1&start=0&limit=500".encode()]
                ]
                assert api.requests[0].startswith(b"GET http://127.0.0.1:")
            else:
                assert proxy.heads == [] and api.requests[0].startswith(b"GET /hpc/openapi/v2/jobs?")

    with ForwardingProxy() as proxy:
        run(go(proxy))


def test_lean_http_is_accepted_and_ignored_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    from exporter.config import build_config

    cluster = {"name": "a", "api_url": "http://127.0.0.1:1", "token": "t"}
    with caplog.at_level(logging.WARNING, logger="exporter.config"):
        build_config({"clusters": [cluster]}, environ={})
        assert caplog.records == []
        build_config({"lean_http": False, "clusters": [cluster]}, environ={})
    assert [r.getMessage() for r in caplog.records] == [
        "lean_http is ignored: one HTTP transport now serves every request, proxies included"
    ]


async def fetch(transport: LeanTransport, *urls: str) -> list[bytes]:
    async with httpx.AsyncClient(transport=transport) as client:
        return [(await client.get(url)).content for url in urls]


def test_no_proxy_sends_the_host_it_names_direct_and_another_host_through_the_proxy(
    environment: pytest.MonkeyPatch,
) -> None:
    async def go(proxy: ForwardingProxy) -> None:
        async with Server([ok(b"[1]")]) as named, Server([ok(b"[2]")]) as other:
            environment.setenv("http_proxy", proxy.url)
            environment.setenv("no_proxy", "127.0.0.1")
            other_url = other.url.replace("127.0.0.1", "localhost")  # another name for this machine
            assert await fetch(LeanTransport(), named.url + "/a", other_url + "/b") == [b"[1]", b"[2]"]
            assert named.requests[0].startswith(b"GET /a HTTP/1.1\r\n")
            assert [head.split(b"\r\n")[0] for head in proxy.heads] == [f"GET {other_url}/b HTTP/1.1".encode()]

    with ForwardingProxy() as proxy:
        run(go(proxy))


def tls_server(certs: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs / "server.pem", certs / "server.key")
    return context


SECRET = "s3cr3t pa:ss"


def test_proxy_credentials_are_sent_to_the_proxy_alone_and_never_appear_in_a_log_error_or_repr(
    certs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The proxy asks for Basic credentials (407 without them); the URL carries them percent-encoded."""
    trusted = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    user, password = "proxy-user", SECRET
    encoded = f"http://{user}:s3cr3t%20pa%3Ass@"

    async def go(proxy: ForwardingProxy) -> list[str]:
        async with Server([ok(b"[1]")]) as plain, Server([ok(b"[2]")], tls=tls_server(certs)) as secure:
            url = encoded + proxy.address
            transport = LeanTransport(trusted, proxies={"http": url, "https": url})
            assert await fetch(transport, plain.url + "/p", secure.url + "/s") == [b"[1]", b"[2]"]
            assert b"roxy-" not in secure.requests[0]  # the tunnel carries only the request
            assert SECRET not in repr(transport)
            wrong = encoded.replace("s3cr3t", "wrong") + proxy.address
            errors = []
            for target in (plain.url, secure.url):
                conversation = Conversation(
                    httpx.AsyncClient(transport=LeanTransport(trusted, proxies={"all": wrong})), 5.0, retry_backoff=0
                )
                with pytest.raises(ApiError) as caught:
                    await conversation.call("GET", target + "/x")
                errors.append(f"{caught.value.reason}: {caught.value}")
            return errors

    with caplog.at_level(logging.DEBUG), ForwardingProxy(credentials=(user, password)) as proxy:
        errors = run(go(proxy))
    expected = "Basic " + __import__("base64").b64encode(f"{user}:{password}".encode()).decode()
    authorizations = [line for head in proxy.heads for line in head.split(b"\r\n") if line.startswith(b"Proxy-")]
    assert authorizations[:2] == [f"Proxy-Authorization: {expected}".encode()] * 2
    assert errors[0].startswith("http_status: HTTP 407 from the proxy: it wants credentials")
    assert errors[1].startswith(f"connection: ProxyError: proxy {proxy.address} refused CONNECT 127.0.0.1:")
    assert errors[1].endswith("HTTP 407 Proxy Authentication Required")
    for text in (*errors, caplog.text):
        assert "s3cr3t" not in text and "wrong" not in text and "cHJveHktdXNlcj" not in text


@pytest.mark.parametrize(
    ("refusal", "scheme", "expected"),
    [
        (
            b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n",
            "https",
            "refused CONNECT 127.0.0.1:{port}: HTTP 502",
        ),
        (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", "http", "HTTP 503"),
        (b"", "https", "closed the connection without answering CONNECT"),
        (None, "https", "ConnectionRefusedError"),
    ],
    ids=["502 to CONNECT", "503 to an http request", "closed without an answer", "connection refused"],
)
def test_a_proxy_that_refuses_fails_the_request_with_a_clear_reason(
    refusal: bytes | None, scheme: str, expected: str, certs: Path
) -> None:
    async def go(proxy: ForwardingProxy) -> tuple[ApiError, int]:
        async with Server([ok()], tls=tls_server(certs) if scheme == "https" else None) as server:
            address = proxy.address
            if refusal is None:
                proxy.__exit__()  # nothing listens there any more
            transport = LeanTransport(
                ssl.create_default_context(cafile=str(certs / "ca.pem")), proxies={"all": address}
            )
            conversation = Conversation(httpx.AsyncClient(transport=transport), 5.0, retry_backoff=0)
            with pytest.raises(ApiError) as caught:
                await conversation.call("GET", server.url + "/x")
            port = int(server.url.rsplit(":", 1)[1])
            return caught.value, port

    with ForwardingProxy(refusal=refusal or b"") as proxy:
        error, port = run(go(proxy))
    assert error.reason == ("http_status" if scheme == "http" else "connection")
    assert expected.format(port=port) in str(error)
    if error.reason == "connection":
        assert f"proxy {proxy.address}" in str(error)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("socks5://user:s3cr3t@127.0.0.1:1080", "proxy scheme 'socks5' is not supported, only http://"),
        ("https://user:s3cr3t@127.0.0.1:3128", "proxy scheme 'https' is not supported, only http://"),
        ("http://user:s3cr3t@127.0.0.1:99999", "the proxy URL has a port that is not a number from 0 to 65535"),
    ],
)
def test_a_proxy_url_the_transport_cannot_use_fails_every_request_without_showing_it(url: str, message: str) -> None:
    async def go() -> None:
        conversation = Conversation(
            httpx.AsyncClient(transport=LeanTransport(proxies={"all": url})), 5.0, retry_backoff=0
        )
        with pytest.raises(ApiConnectionError, match=message) as caught:
            await conversation.call("GET", "http://127.0.0.1:1/x")
        assert "s3cr3t" not in str(caught.value)

    run(go())


def deflated(data: bytes, wbits: int) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        (b"gzip", gzip.compress(b'{"code": "0", "data": 1}')),
        (b"deflate", deflated(b'{"code": "0", "data": 1}', zlib.MAX_WBITS)),
        (b"deflate", deflated(b'{"code": "0", "data": 1}', -zlib.MAX_WBITS)),  # raw deflate, as some servers send
        (b"identity", b'{"code": "0", "data": 1}'),
    ],
)
def test_content_encodings_are_undone(encoding: bytes, body: bytes) -> None:
    async def go() -> None:
        async with Server([ok(body, b"Content-Encoding: " + encoding + b"\r\n")]) as server:
            conversation = Conversation(httpx.AsyncClient(transport=LeanTransport()), 5.0)
            assert await conversation.call("GET", server.url + "/x", {"a": 1}, {"token": "t"}) == 1

    run(go())


def test_a_bad_compressed_body_is_a_failed_request() -> None:
    async def go() -> None:
        async with Server([ok(b"not gzip", b"Content-Encoding: gzip\r\n")]) as server:
            conversation = Conversation(httpx.AsyncClient(transport=LeanTransport()), 5.0, retry_backoff=0)
            with pytest.raises(ApiConnectionError, match="DecodingError"):
                await conversation.call("GET", server.url + "/x")

    run(go())


def test_a_compressed_body_that_expands_past_the_bound_is_refused_before_it_is_all_decompressed() -> None:
    # 256 MiB of zeros, gzipped to a quarter of a megabyte: decompressed whole it would take 256 MiB at once.
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = b"".join(packer.compress(bytes(1 << 20)) for _ in range(256)) + packer.flush()

    async def go() -> None:
        async with Server([ok(bomb, b"Content-Encoding: gzip\r\n")]) as server:
            conversation = Conversation(httpx.AsyncClient(transport=LeanTransport()), 30.0, retry_backoff=0)
            tracemalloc.start()
            try:
                with pytest.raises(ApiInvalidResponse, match="body too large"):
                    await conversation.call("GET", server.url + "/x")
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert peak < 100 * 1024 * 1024  # the 64 MiB bound and one piece's expansion, not 256 MiB

    run(go())


def test_requests_carry_the_clients_headers_and_a_retry_after_is_heeded_on_the_same_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def go() -> None:
        replies = [
            b"HTTP/1.1 429 Too Many\r\nRetry-After: 0\r\nContent-Length: 0\r\n\r\n",
            ok(b'{"code": "0", "data": [7]}'),
        ]
        async with Server(replies) as server:
            client = httpx.AsyncClient(transport=LeanTransport(), headers={"User-Agent": "sugon-exporter/test"})
            conversation = Conversation(client, 5.0, retry_backoff=0)
            with caplog.at_level(logging.DEBUG, logger="httpx"):
                assert await conversation.call("GET", server.url + "/jobs", {"start": 100}, {"token": "tok"}) == [7]
            first = server.requests[0].decode()
            assert first.startswith("GET /jobs?start=100 HTTP/1.1\r\nHost: 127.0.0.1:")
            for line in ("User-Agent: sugon-exporter/test", "Accept-Encoding: gzip, deflate", "token: tok"):
                assert f"\r\n{line}" in first
            assert server.requests[1] == server.requests[0] and server.connections == 1  # retried on the same one
            assert "HTTP Request: GET http://127.0.0.1" in caplog.text and '"HTTP/1.1 429 Too Many"' in caplog.text

    run(go())


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("token", "eyJhbGciOi.J9-_x", True),
        ("Authorization", "Basic Z3c6cGEgc3M=", True),
        ("X-Spaced", " a\tb ", True),  # space and tab are allowed in a value
        ("token", "a\r\nX-Injected: 1", False),
        ("token", "a\nb", False),
        ("token", "a\x00b", False),
        ("token", "a\x7fb", False),  # DEL is a control character
        ("user", "usér", False),  # beyond ASCII: never sent
        ("token", "a\x80b", False),
        ("to ken", "a", False),
        ("token:", "a", False),
        ("", "a", False),
    ],
)
def test_the_one_header_rule_takes_visible_ascii_values_under_token_names(name: str, value: str, allowed: bool) -> None:
    assert is_header(name, value) is allowed


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize(
    "secret", ["secret\r\nX-Injected: 1", "secrét", "secret\x00"], ids=["CRLF", "non-ASCII", "NUL"]
)
def test_a_header_the_rule_refuses_is_refused_never_sent_and_never_quoted(method: str, secret: str) -> None:
    async def go() -> None:
        async with Server([ok()]) as server:
            conversation = Conversation(httpx.AsyncClient(transport=LeanTransport()), 5.0, retry_backoff=0)
            with pytest.raises(
                ApiConnectionError, match="header 'password' has a character HTTP does not allow"
            ) as caught:
                await conversation.call(method, server.url, None, {"token": "t", "password": secret})
            assert "secr" not in str(caught.value) and "Injected" not in str(caught.value)
            assert server.requests == []  # nothing went out

    run(go())


def test_the_lean_transport_refuses_such_a_header_from_any_httpx_caller() -> None:
    async def go() -> None:
        async with Server([ok()]) as server:
            client = httpx.AsyncClient(transport=LeanTransport())
            for value in ("a\nb", b"caf\xc3\xa9"):  # bytes beyond ASCII are refused too, as the conversation does
                with pytest.raises(httpx.LocalProtocolError, match="header 'X-Evil' has a character"):
                    await client.get(server.url, headers={"X-Evil": value})
            assert server.requests == []

    run(go())


def test_a_streamed_request_body_is_sent_whole_with_its_length() -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        yield b"ab"
        yield b"cd"

    async def go() -> None:
        async with Server([ok()]) as server:
            async with httpx.AsyncClient(transport=LeanTransport()) as client:
                await client.post(server.url + "/s", content=chunks())
            head, _, body = server.requests[0].partition(b"\r\n\r\n")
            assert b"Content-Length: 4" in head and b"Transfer-Encoding" not in head and body == b"abcd"

    run(go())


# Kept-alive connections that the server wrote on, dropped or reset while idle (issue 12).


def after(reply: bytes, then: bytes, done: asyncio.Event) -> Handler:
    """Answers with ``reply``; a moment later, with the connection idle, writes ``then``."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(reply)
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(then)
        await writer.drain()
        done.set()

    return handler


@pytest.mark.parametrize(
    "then",
    [
        b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n",
        b"\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n[99]",
    ],
    ids=["a 408 and close", "a 408", "a stray CRLF", "an answer to nothing"],
)
def test_a_connection_the_server_wrote_on_while_idle_is_never_reused(then: bytes) -> None:
    async def go() -> None:
        done = asyncio.Event()
        async with Server([after(ok(b"[1]"), then, done), ok(b"[2]")]) as server:
            transport = LeanTransport()
            assert (await get(server, transport)).json() == [1]
            await asyncio.wait_for(done.wait(), 5)
            assert (await get(server, transport)).json() == [2]
            assert server.connections == 2 and len(server.requests) == 2  # nothing was sent on the first one

    run(go())


async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads the request and resets the connection (RST), without a byte of an answer."""
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def timed_out(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The server's idle timeout met the request on the wire: a 408, and the connection closed."""
    writer.write(b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    await writer.drain()
    writer.close()


@pytest.mark.parametrize("second", [reset, timed_out], ids=["reset", "408"])
def test_a_reused_connection_reset_or_timed_out_before_an_answer_is_retried_once_on_a_fresh_one(
    second: Handler,
) -> None:
    async def go() -> None:
        async with Server([ok(b"[1]"), second, ok(b"[2]")]) as server:
            transport = LeanTransport()
            assert (await get(server, transport)).json() == [1]
            assert (await get(server, transport)).json() == [2]
            assert server.connections == 2 and len(server.requests) == 3  # the second request went twice

    run(go())


def test_a_fresh_connection_reset_or_timed_out_is_not_retried() -> None:
    async def go() -> None:
        async with Server([reset, ok()]) as server:
            with pytest.raises(httpx.ReadError, match="ConnectionResetError"):
                await get(server, LeanTransport())
            assert server.connections == 1 and len(server.requests) == 1
        async with Server([timed_out, ok()]) as server:
            assert (await get(server, LeanTransport())).status_code == 408  # the server's answer, as it is
            assert server.connections == 1

    run(go())


def client_end(address: tuple[str, int]) -> socket.socket:
    """This process's socket bound to ``address``: the client's end of a connection (looked up in /proc/self/fd)."""
    for fd in os.listdir("/proc/self/fd"):
        try:
            candidate = socket.socket(fileno=os.dup(int(fd)))
        except OSError:
            continue  # not a socket
        try:
            if candidate.type == socket.SOCK_STREAM and candidate.getsockname() == address:
                return candidate
        except OSError:
            pass
        candidate.close()
    raise AssertionError(f"no socket of this process is bound to {address}")


def test_a_broken_pipe_on_a_reused_connection_is_retried_on_a_fresh_one() -> None:
    # A write on a connection whose socket can no longer send fails with EPIPE. The race that leads there
    # (a reset landing between the idle check and the write) cannot be timed from outside, so the test
    # shuts the sending side of the kept-alive connection's client end down itself.
    async def go() -> None:
        async with Server([ok(b"[1]"), ok(b"[2]")]) as server:
            transport = LeanTransport()
            assert (await get(server, transport)).json() == [1]
            with client_end(server.clients[0]) as kept_alive:
                kept_alive.shutdown(socket.SHUT_WR)
            assert (await get(server, transport)).json() == [2]
            assert server.connections == 2 and len(server.requests) == 2

    run(go())


LENIENT_REPLIES = {
    "bare LF line ends": b'HTTP/1.1 200 OK\nContent-Length: 8\nX-A: 1\n\n{"a": 1}',
    "an obs-fold line": b'HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 8\r\n\r\n{"a": 1}',
    "Content-Length N, N": b'HTTP/1.1 200 OK\r\nContent-Length: 8, 8\r\n\r\n{"a": 1}',
    "two equal Content-Lengths": b'HTTP/1.1 200 OK\r\nContent-Length: 8\r\nContent-Length: 8\r\n\r\n{"a": 1}',
    "empty lines before the status line": b'\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{"a": 1}',
}


@pytest.mark.parametrize("reply", LENIENT_REPLIES.values(), ids=LENIENT_REPLIES.keys())
def test_answers_rfc_9112_asks_a_client_to_accept_are_read_and_keep_the_connection(reply: bytes) -> None:
    async def go() -> None:
        async with Server([reply, reply]) as server:
            transport = LeanTransport()
            for _ in range(2):
                assert (await get(server, transport, timeout=2.0)).json() == {"a": 1}
            assert server.connections == 1

    run(go())


@pytest.mark.parametrize(
    "reply",
    [
        b'HTTP/1.1 200 OK\r\nContent-Length: 8, 9\r\n\r\n{"a": 1}',
        b'HTTP/1.1 200 OK\r\nContent-Length: 8\r\nContent-Length: 9\r\n\r\n{"a": 1}',
    ],
    ids=["a list", "two headers"],
)
def test_differing_content_lengths_are_refused(reply: bytes) -> None:
    async def go() -> None:
        async with Server([reply]) as server:
            with pytest.raises(httpx.RemoteProtocolError, match="conflicting Content-Length"):
                await get(server, LeanTransport())

    run(go())


def test_a_body_over_max_body_is_refused_however_framed_and_the_conversation_reports_it_as_an_invalid_response() -> (
    None
):
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n" + b" " * 1024 + b"\r\n0\r\n\r\n"

    async def go() -> None:
        async with Server([chunked]) as server:
            with pytest.raises(BodyTooLarge):
                await get(server, LeanTransport(max_body=1000))
        async with Server([await close_after(b"HTTP/1.1 200 OK\r\n\r\n" + b" " * 1001)]) as server:
            with pytest.raises(BodyTooLarge):
                await get(server, LeanTransport(max_body=1000))
        async with Server([ok(b" " * 1001)]) as server:
            transport = LeanTransport(max_body=1000)
            conversation = Conversation(httpx.AsyncClient(transport=transport), 5.0, retry_backoff=0)
            with pytest.raises(ApiInvalidResponse, match="body too large") as caught:
                await conversation.call("GET", server.url)
            assert not caught.value.transient and len(server.requests) == 1  # not retried

    run(go())
