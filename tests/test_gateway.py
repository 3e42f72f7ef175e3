"""The exporter's requests through misbehaving gateways (tests/gateway.py), over both transports.

Each mode is run through the real client stack, exporter.sugon.conversation.Conversation, once with the lean transport and
once with httpx's standard one, and must end exactly as written below: what each call returned (the
number of the request that was answered, or the ApiError's reason), the connections and requests the
gateway saw, and the failed attempts the Conversation counted (retries included). The lean transport must
survive every gateway httpx's own stack survives; where httpx's stack does worse, the comment says so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest

from exporter.sugon.conversation import ApiError, Conversation
from exporter.sugon.transport import LeanTransport
from tests.gateway import MODES, Gateway


@dataclass(frozen=True)
class Outcome:
    answers: tuple[int | str, ...]  # per call: the request number answered, or the ApiError's reason
    connections: int
    requests: int
    failed: tuple[str, ...] = ()  # failed attempts, by reason, in order (a transient failure is retried once)


FAILED_TWICE = Outcome(("connection",), 2, 2, ("connection", "connection"))
TOO_LARGE = Outcome(("invalid_response",), 1, 1, ("invalid_response",))  # not retried: asking again would not help

# mode: (outcome through the lean transport, outcome through httpx's standard one when it differs)
EXPECTED: dict[str, tuple[Outcome, Outcome | None]] = {
    "keep-alive": (Outcome((1, 2), 1, 2), None),
    # The 408 and the close land on the idle connection; the next request goes on a fresh one.
    "408 on idle": (Outcome((1, 2), 2, 2), None),
    # The 408 crossed the request on the wire: request 2 is sent again, as request 3, on a fresh connection.
    # httpx's stack hands the 408 to the exporter as the answer.
    "408 to a reused connection": (Outcome((1, 3), 2, 3), Outcome((1, "http_status"), 1, 2, ("http_status",))),
    "stray CRLF on idle": (Outcome((1, 2), 2, 2), None),
    "FIN on idle": (Outcome((1, 2), 2, 2), None),
    "RST on idle": (Outcome((1, 2), 2, 2), None),
    # The reset comes before any byte of an answer: request 2 goes again (as 3) on a fresh connection.
    # httpx's stack fails the attempt (ReadError), and only the exporter's retry saves the call.
    "RST when a reused connection is written to": (Outcome((1, 3), 2, 3), Outcome((1, 3), 2, 3, ("connection",))),
    "obs-fold": (Outcome((1, 2), 1, 2), None),
    "bare LF": (Outcome((1, 2), 1, 2), None),
    # h11 refuses a status line after empty lines ("no response line received"), so httpx's stack fails
    # every attempt; the lean transport skips them.
    "empty lines before the status line": (
        Outcome((1, 2), 1, 2),
        Outcome(("connection", "connection"), 4, 4, ("connection",) * 4),
    ),
    "Content-Length N, N": (Outcome((1, 2), 1, 2), None),
    "Content-Length N, M": (Outcome(("connection", "connection"), 4, 4, ("connection",) * 4), None),
    "two equal Content-Lengths": (Outcome((1, 2), 1, 2), None),
    "two differing Content-Lengths": (Outcome(("connection", "connection"), 4, 4, ("connection",) * 4), None),
    "a 100 KiB head": (Outcome((1, 2), 1, 2), None),
    "a Content-Length over 64 MiB": (TOO_LARGE, None),
    "a chunked body over 64 MiB": (TOO_LARGE, None),
    "a gzip bomb": (TOO_LARGE, None),
    "a deflate bomb": (TOO_LARGE, None),
    "a truncated body": (FAILED_TWICE, None),
    # The bytes after the body stay on the connection, which is then not reused. httpx's stack reads them
    # as the next answer, fails that attempt, and the retry (request 3) succeeds.
    "an over-long body": (Outcome((1, 2), 2, 2), Outcome((1, 3), 2, 3, ("connection",))),
    "a truncated chunked body": (FAILED_TWICE, None),
    "100 Continue first": (Outcome((1, 2), 1, 2), None),
    "HTTP/1.0, close-delimited": (Outcome((1, 2), 2, 2), None),
    # httpx's stack takes the copy of answer 1 as the answer to request 2: the wrong data, without an error.
    "a duplicated answer": (Outcome((1, 2), 2, 2), Outcome((1, 1), 1, 2)),
    "a byte a second": (Outcome(("timeout",), 2, 2, ("timeout", "timeout")), None),
}
TIMEOUT = {"a byte a second": 0.3}


class Attempts:
    """A RequestObserver that counts the attempts and keeps the reasons of failed ones."""

    def __init__(self) -> None:
        self.sent = 0
        self.failed: list[str] = []

    def request_sent(self) -> None:
        self.sent += 1

    def request_failed(self, reason: str) -> None:
        self.failed.append(reason)


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the gateway did not settle"
        await asyncio.sleep(0.005)


def conversation(stack: str, timeout: float, attempts: Attempts) -> Conversation:
    """The exporter's Conversation over the lean transport, or over httpx's standard one."""
    if stack == "lean":
        transport = LeanTransport(max_connections=4)
        return Conversation(httpx.AsyncClient(transport=transport), timeout, attempts, retry_backoff=0, lean=transport)
    return Conversation(httpx.AsyncClient(trust_env=False), timeout, attempts, retry_backoff=0)


async def call(client: Conversation, url: str) -> int | str:
    try:
        data = await client.call("GET", url + "/hpc/openapi/v2/jobs", {"start": 0, "limit": 100}, {"token": "t"})
    except ApiError as exc:
        return exc.reason
    return int(data["request"])


async def through(mode: str, stack: str, calls: int) -> Outcome:
    """``calls`` calls one after another through the gateway, each once the gateway has settled."""
    attempts = Attempts()
    client = conversation(stack, TIMEOUT.get(mode, 5.0), attempts)
    answers: list[int | str] = []
    with Gateway(mode) as gateway:
        for i in range(calls):
            if i:
                await until(gateway.settled)  # what the mode does on an idle connection has happened
            answers.append(await call(client, gateway.url))
        await client.http.aclose()
        # A call can end on bytes that were already on the client's side (httpx's stack takes the copy of a
        # duplicated answer as the next one) before the gateway's thread has read the request it sent.
        await until(lambda: gateway.requests >= attempts.sent)
        return Outcome(tuple(answers), gateway.connections, gateway.requests, tuple(attempts.failed))


def test_every_gateway_mode_has_its_expected_outcome() -> None:
    assert set(EXPECTED) == set(MODES)


@pytest.mark.parametrize("stack", ["lean", "httpx"])
@pytest.mark.parametrize("mode", list(EXPECTED))
def test_requests_through_a_misbehaving_gateway_end_exactly_as_expected(mode: str, stack: str) -> None:
    lean, standard = EXPECTED[mode]
    expected = standard if stack == "httpx" and standard is not None else lean
    assert asyncio.run(through(mode, stack, len(expected.answers))) == expected


@pytest.mark.parametrize("stack", ["lean", "httpx"])
def test_four_requests_at_a_time_behind_a_gateway_that_writes_408_on_idle_connections_all_succeed(stack: str) -> None:
    # Five rounds of four concurrent requests, as a poll at concurrency 4 sends them; each connection is
    # answered once and then gets a 408 and a close while idle. Before the fix, 4 of every 5 rounds failed.
    async def go() -> tuple[list[int | str], int, list[str]]:
        attempts = Attempts()
        client = conversation(stack, 5.0, attempts)
        answers: list[int | str] = []
        with Gateway("408 on idle") as gateway:
            for _ in range(5):
                answers += await asyncio.gather(*(call(client, gateway.url) for _ in range(4)))
                await until(gateway.settled)
            await client.http.aclose()
            return answers, gateway.connections, attempts.failed

    answers, connections, failed = asyncio.run(go())
    assert len(answers) == 20 and set(answers) == set(range(1, 21)) and connections == 20 and failed == []
