"""The exporter's requests through misbehaving gateways (tests/gateway.py): direct, through a proxy, and over TLS
through a proxy's CONNECT tunnel.

Each mode is run through the real client stack (exporter.sugon.conversation.Conversation over httpx and the
exporter's transport) and must end exactly as written below, whichever way the requests go: what each call
returned (the number of the request that was answered, or the ApiError's reason), the connections and requests
the gateway saw, and the failed attempts the Conversation counted (retries included). The proxy (tests/proxy.py)
relays bytes and ends as they come, so that a gateway's misbehaviour reaches the client unchanged.
bench/gateways.py runs the same modes through the maintained transports for httpx, which fail some of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from exporter.sugon.conversation import ApiError, Conversation
from exporter.sugon.transport import LeanTransport
from tests.gateway import MODES, Gateway
from tests.proxy import ForwardingProxy


@dataclass(frozen=True)
class Outcome:
    answers: tuple[int | str, ...]  # per call: the request number answered, or the ApiError's reason
    connections: int
    requests: int
    failed: tuple[str, ...] = ()  # failed attempts, by reason, in order (a transient failure is retried once)


FAILED_TWICE = Outcome(("connection",), 2, 2, ("connection", "connection"))
TOO_LARGE = Outcome(("invalid_response",), 1, 1, ("invalid_response",))  # not retried: asking again would not help

EXPECTED: dict[str, Outcome] = {
    "keep-alive": Outcome((1, 2), 1, 2),
    # The 408 and the close land on the idle connection; the next request goes on a fresh one.
    "408 on idle": Outcome((1, 2), 2, 2),
    # The 408 crossed the request on the wire: request 2 is sent again, as request 3, on a fresh connection.
    "408 to a reused connection": Outcome((1, 3), 2, 3),
    "stray CRLF on idle": Outcome((1, 2), 2, 2),
    "FIN on idle": Outcome((1, 2), 2, 2),
    "RST on idle": Outcome((1, 2), 2, 2),
    # The reset comes before any byte of an answer: request 2 goes again (as 3) on a fresh connection.
    "RST when a reused connection is written to": Outcome((1, 3), 2, 3),
    "obs-fold": Outcome((1, 2), 1, 2),
    "bare LF": Outcome((1, 2), 1, 2),
    "empty lines before the status line": Outcome((1, 2), 1, 2),  # h11 (httpx's own transport) refuses these
    "Content-Length N, N": Outcome((1, 2), 1, 2),
    "Content-Length N, M": Outcome(("connection", "connection"), 4, 4, ("connection",) * 4),
    "two equal Content-Lengths": Outcome((1, 2), 1, 2),
    "two differing Content-Lengths": Outcome(("connection", "connection"), 4, 4, ("connection",) * 4),
    "a 100 KiB head": Outcome((1, 2), 1, 2),
    "a Content-Length over 64 MiB": TOO_LARGE,
    "a chunked body over 64 MiB": TOO_LARGE,
    "a gzip bomb": TOO_LARGE,
    "a deflate bomb": TOO_LARGE,
    "a truncated body": FAILED_TWICE,
    # The bytes after the body stay on the connection, which is then not reused.
    "an over-long body": Outcome((1, 2), 2, 2),
    "a truncated chunked body": FAILED_TWICE,
    "100 Continue first": Outcome((1, 2), 1, 2),
    "HTTP/1.0, close-delimited": Outcome((1, 2), 2, 2),
    # The copy of answer 1 is never taken for the answer to request 2.
    "a duplicated answer": Outcome((1, 2), 2, 2),
    "a byte a second": Outcome(("timeout",), 2, 2, ("timeout", "timeout")),
}
TIMEOUT = {"a byte a second": 0.3}
# (the gateway over TLS, through the proxy): https through the proxy is a CONNECT tunnel, http an absolute-form request
ROUTES = {
    "http": (False, False),
    "https": (True, False),
    "http via proxy": (False, True),
    "https via proxy": (True, True),
}


class Attempts:
    """An Observer that counts the attempts and keeps the reasons of failed ones."""

    def __init__(self) -> None:
        self.sent = 0
        self.failed: list[str] = []

    def request_sent(self) -> None:
        self.sent += 1

    def request_failed(self, reason: str) -> None:
        self.failed.append(reason)

    def token_expiry(self, timestamp: float | None) -> None: ...
    def token_refresh(self, method: str, result: str) -> None: ...


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the gateway did not settle"
        await asyncio.sleep(0.005)


@dataclass
class Rig:
    """A gateway in one mode and the exporter's Conversation towards it, directly or through the proxy."""

    gateway: Gateway
    proxy: ForwardingProxy | None
    client: Conversation
    attempts: Attempts

    def settled(self) -> bool:
        """Whatever the gateway wrote has reached the client's side."""
        return self.gateway.settled() and (self.proxy is None or self.proxy.settled())


@contextlib.contextmanager
def rig(mode: str, route: str, certs: Path, timeout: float = 5.0) -> Iterator[Rig]:
    tls, proxied = ROUTES[route]
    server_tls = client_tls = None
    if tls:
        server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_tls.load_cert_chain(certs / "server.pem", certs / "server.key")
        client_tls = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    with Gateway(mode, tls=server_tls) as gateway, ForwardingProxy() as proxy:
        proxies = {"http": proxy.url, "https": proxy.url} if proxied else {}
        transport = LeanTransport(client_tls, max_connections=4, proxies=proxies)
        attempts = Attempts()
        client = Conversation(httpx.AsyncClient(transport=transport), timeout, attempts, retry_backoff=0)
        yield Rig(gateway, proxy if proxied else None, client, attempts)


async def call(client: Conversation, url: str) -> int | str:
    try:
        data = await client.call("GET", url + "/hpc/openapi/v2/jobs", {"start": 0, "limit": 100}, {"token": "t"})
    except ApiError as exc:
        return exc.reason
    return int(data["request"])


async def through(r: Rig, calls: int) -> Outcome:
    """``calls`` calls one after another, each once what the gateway did has reached the client."""
    answers: list[int | str] = []
    for i in range(calls):
        if i:
            await until(r.settled)  # what the mode does on an idle connection has happened
        answers.append(await call(r.client, r.gateway.url))
    await r.client.http.aclose()
    await until(lambda: r.gateway.requests >= r.attempts.sent)  # the gateway has read every request sent
    return Outcome(tuple(answers), r.gateway.connections, r.gateway.requests, tuple(r.attempts.failed))


def test_every_gateway_mode_has_its_expected_outcome() -> None:
    assert set(EXPECTED) == set(MODES)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("mode", list(EXPECTED))
def test_requests_through_a_misbehaving_gateway_end_exactly_as_expected(mode: str, route: str, certs: Path) -> None:
    expected = EXPECTED[mode]
    with rig(mode, route, certs, TIMEOUT.get(mode, 5.0)) as r:
        assert asyncio.run(through(r, len(expected.answers))) == expected
        if r.proxy is not None:  # they went through it, as many connections as the gateway saw
            method = b"CONNECT 127.0.0.1:" if r.gateway.tls else b"GET http://127.0.0.1:"
            assert len(r.proxy.heads) == expected.connections
            assert all(head.startswith(method) for head in r.proxy.heads)


@pytest.mark.parametrize("route", ROUTES)
def test_four_requests_at_a_time_behind_a_gateway_that_writes_408_on_idle_connections_all_succeed(
    route: str, certs: Path
) -> None:
    # Five rounds of four concurrent requests, as a poll at concurrency 4 sends them; each connection is
    # answered once and then gets a 408 and a close while idle. Before the fix, 4 of every 5 rounds failed.
    async def go(r: Rig) -> tuple[list[int | str], int, list[str]]:
        answers: list[int | str] = []
        for _ in range(5):
            answers += await asyncio.gather(*(call(r.client, r.gateway.url) for _ in range(4)))
            await until(r.settled)
        await r.client.http.aclose()
        return answers, r.gateway.connections, r.attempts.failed

    with rig("408 on idle", route, certs) as r:
        answers, connections, failed = asyncio.run(go(r))
    assert len(answers) == 20 and set(answers) == set(range(1, 21)) and connections == 20 and failed == []
