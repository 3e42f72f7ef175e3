"""Logins end to end against the simulator over real HTTP: token lifetimes pass unnoticed, wrong credentials
fail safely and politely, and no secret ever shows up in logs, errors or /metrics."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from exporter.config import build_config
from exporter.endpoints import make_app
from exporter.service import Exporter
from exporter.simulator import SimPlatform, Simulator
from exporter.web import WebServer
from tests.helpers import job_count

PASSWORD = "alice-pa55word-do-not-print"
ACCESS_KEY = "AK-bob-do-not-print"
SECRET_KEY = "SK-bob-do-not-print"


@pytest.fixture
def sims() -> Iterator[tuple[Simulator, Simulator]]:
    """Two platforms issuing 3-second tokens: one renews with a login-like list and numeric ids, one with a string."""
    a = Simulator(
        token=None,
        jobs=120,
        max_page=40,
        seed=2,
        platform=SimPlatform(
            passwords={"alice": PASSWORD}, org_id="org-7", token_lifetime=3, renew_shape="list", ids_as_numbers=True
        ),
    )
    b = Simulator(
        token=None,
        jobs=80,
        max_page=40,
        seed=3,
        platform=SimPlatform(access_keys={ACCESS_KEY: ("bob", SECRET_KEY)}, token_lifetime=3, renew_shape="string"),
    )
    a.serve(), b.serve()
    yield a, b
    a.stop(), b.stop()


def secrets_of(*sims: Simulator) -> list[str]:
    return [PASSWORD, ACCESS_KEY, SECRET_KEY] + [t for s in sims for t in s.platform.issued_tokens()]


def assert_no_secret(texts: list[str], secrets: list[str]) -> None:
    assert secrets, "nothing to look for"
    for text in texts:
        for secret in secrets:
            assert secret not in text, f"a secret leaked into: {text[:200]!r}"


def every_log_text(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every message and every formatted exception caplog saw."""
    handler = logging.Formatter()
    return [r.getMessage() for r in caplog.records] + [
        handler.formatException(r.exc_info) for r in caplog.records if r.exc_info
    ]


def run_for(exporter: Exporter, seconds: float) -> None:
    exporter.start()
    try:
        time.sleep(seconds)
    finally:
        exporter.stop()


def value(exporter: Exporter, name: str, **labels: str) -> float | None:
    return exporter.registry.get_sample_value(name, labels)


def test_many_token_lifetimes_pass_with_no_failed_poll_and_no_secret_in_any_output(
    sims: tuple[Simulator, Simulator], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = sims
    config = build_config(
        {
            "interval": "0.25s",
            "timeout": "5s",
            "clusters": [
                # neither the HPC URL nor the scheduler ids are given: both are discovered
                {
                    "name": "pw",
                    "auth": {
                        "kind": "password",
                        "url": a.url,
                        "user": "alice",
                        "password": PASSWORD,
                        "org_id": "org-7",
                        "region": "11250",
                    },
                },
                {
                    "name": "ak",
                    "auth": {
                        "kind": "aksk",
                        "url": b.url,
                        "user": "bob",
                        "access_key": ACCESS_KEY,
                        "secret_key": SECRET_KEY,
                    },
                },
            ],
        },
        environ={},
    )
    exporter = Exporter(config)
    server = WebServer(make_app(exporter.exposition), "127.0.0.1", 0)
    server.start()
    try:
        with caplog.at_level(logging.DEBUG):
            run_for(exporter, 10.0)  # more than three token lifetimes
            metrics = httpx.get(f"http://127.0.0.1:{server.port}/metrics").text
            index = httpx.get(f"http://127.0.0.1:{server.port}/").text
    finally:
        server.stop()
    for name, sim in (("pw", a), ("ak", b)):
        assert value(exporter, "sugon_polls_total", hpc_cluster=name, result="failure") == 0
        assert (value(exporter, "sugon_polls_total", hpc_cluster=name, result="success") or 0) >= 15
        assert sim.platform.logins == 1  # everything after the first token came from tokens/next
        assert sim.platform.renewals >= 4
        assert sim.job_requests_refused == 0  # no request ever went out with an expired token
        assert value(exporter, "sugon_token_refreshes_total", hpc_cluster=name, method="renew", result="success") == (
            sim.platform.renewals
        )
        expiry = value(exporter, "sugon_token_expiry_timestamp_seconds", hpc_cluster=name)
        assert expiry is not None and abs(expiry - time.time()) < 4
        state = exporter.exposition.get(name)
        assert state.up and state.jobs is not None
        assert job_count(state) == len(sim.rows())
    assert exporter.pollers[0].client.base_url == a.url  # the enabled URL from /center, /hpc stripped
    assert_no_secret(every_log_text(caplog) + [metrics, index], secrets_of(a, b))


def test_a_wrong_password_means_up_0_a_clear_log_no_crash_and_no_hammering(
    sims: tuple[Simulator, Simulator], caplog: pytest.LogCaptureFixture
) -> None:
    a, _ = sims
    wrong = "wr0ng-pa55word-do-not-print"
    config = build_config(
        {
            "interval": "0.5s",
            "clusters": [
                {
                    "name": "pw",
                    "api_url": a.url,
                    "cluster_ids": [1638523853],
                    "auth": {"kind": "password", "url": a.url, "user": "alice", "password": wrong, "org_id": "org-7"},
                },
            ],
        },
        environ={},
    )
    exporter = Exporter(config)
    with caplog.at_level(logging.DEBUG):
        run_for(exporter, 3.2)
    # at most one login per interval, backing off: tries at 0, 0.5 and 1.5 s (the next is due at 3.5 s)
    assert 1 <= a.platform.logins <= 3
    assert a.platform.failed_logins == a.platform.logins
    assert a.requests == a.platform.logins  # no job request went out without a token
    assert value(exporter, "sugon_up", hpc_cluster="pw") == 0
    assert (value(exporter, "sugon_polls_total", hpc_cluster="pw", result="failure") or 0) >= 5
    assert value(exporter, "sugon_token_refreshes_total", hpc_cluster="pw", method="login", result="failure") == (
        a.platform.logins
    )
    assert exporter.exposition.get("pw").last_error == "auth"
    messages = [r.getMessage() for r in caplog.records]
    assert any("login of user alice" in m and "用户名或密码错误" in m for m in messages)
    assert any("check the password credentials of user alice" in m for m in messages)
    assert not any(r.exc_info for r in caplog.records)  # handled, not crashed
    assert_no_secret(every_log_text(caplog), [wrong, *secrets_of(a)])


def test_once_with_a_login_prints_no_secret(sims: tuple[Simulator, Simulator], tmp_path: Path) -> None:
    _, b = sims
    (tmp_path / "sk").write_text(SECRET_KEY + "\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"clusters:\n  - name: ak\n    auth: {{kind: aksk, url: '{b.url}', user: bob, "
        f"access_key: '${{AK}}', secret_key_file: sk}}\n"
    )
    r = subprocess.run(
        [sys.executable, "-m", "exporter", "--config", str(cfg), "--once", "--log-level", "debug"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "AK": ACCESS_KEY},
    )
    assert r.returncode == 0, r.stderr
    assert 'sugon_up{hpc_cluster="ak"} 1.0' in r.stdout
    assert 'sugon_token_refreshes_total{hpc_cluster="ak",method="login",result="success"} 1.0' in r.stdout
    assert_no_secret([r.stdout, r.stderr], secrets_of(b))
