"""Issue 25: the gateway cases of tests/test_gateway.py through the maintained transports for httpx, beside the
exporter's own, to see whether one of them could serve every request instead (bench/RESULTS.md).

Each mode runs through the exporter's Conversation over httpx, once per transport: the exporter's own, httpx's
standard one (httpcore), and httpx-aiohttp's AiohttpTransport when it is installed (it is not a dependency:
``pip install httpx-aiohttp``). A mode passes when it ends exactly as tests/test_gateway.py expects. An
exception that is not an ApiError (the exporter would count it as an internal error) is shown by its type.

    PYTHONPATH=. python bench/gateways.py
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import httpx

from exporter.sugon.conversation import Conversation
from exporter.sugon.transport import LeanTransport
from tests.gateway import Gateway
from tests.test_gateway import EXPECTED, TIMEOUT, Attempts, Outcome, Rig, through


def transport(name: str) -> httpx.AsyncBaseTransport:
    if name == "exporter's own":
        return LeanTransport(max_connections=4, proxies={})
    if name == "httpx's standard (httpcore)":
        return httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=4))
    from httpx_aiohttp import AiohttpTransport  # type: ignore[import-not-found]  # optional, not a dependency

    aiohttp: httpx.AsyncBaseTransport = AiohttpTransport(limits=httpx.Limits(max_connections=4), trust_env=False)
    return aiohttp


def outcome(mode: str, name: str) -> Outcome | str:
    with Gateway(mode) as gateway:
        attempts = Attempts()
        client = httpx.AsyncClient(transport=transport(name), trust_env=False)
        conversation = Conversation(client, TIMEOUT.get(mode, 5.0), attempts, retry_backoff=0)
        try:
            return asyncio.run(through(Rig(gateway, None, conversation, attempts), len(EXPECTED[mode].answers)))
        except Exception as exc:  # noqa: BLE001  (what the transport let through: not an ApiError)
            return f"{type(exc).__module__}.{type(exc).__name__}"


def main() -> None:
    names = ["exporter's own", "httpx's standard (httpcore)"]
    if importlib.util.find_spec("httpx_aiohttp") is not None:
        names.append("httpx-aiohttp (AiohttpTransport)")
    print(f"{len(EXPECTED)} gateway modes (tests/gateway.py), from {Path(__file__).name}")
    for name in names:
        failed = []
        for mode, expected in EXPECTED.items():
            got = outcome(mode, name)
            if got != expected:
                failed.append(f"  {mode}: {got}\n    expected {expected}")
        print(f"{name}: {len(EXPECTED) - len(failed)} of {len(EXPECTED)} as expected")
        print("\n".join(failed))


if __name__ == "__main__":
    main()
