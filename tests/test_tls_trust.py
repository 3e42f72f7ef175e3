"""One TLS context per cluster for both transports: the system's trust store, with ca_file added to it."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.config import build_config
from exporter.service import Exporter
from exporter.simulator import SimPlatform, Simulator


def serving(certs: Path, **kwargs: object) -> Iterator[Simulator]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs / "server.pem", certs / "server.key")
    sim = Simulator(**kwargs)  # type: ignore[arg-type]
    sim.serve(tls=context)
    yield sim
    sim.stop()


@pytest.fixture
def ac_host(certs: Path) -> Iterator[Simulator]:
    """The platform, with a certificate of a CA the "system" trusts (SSL_CERT_FILE, set by the tests)."""
    yield from serving(certs, token=None, platform=SimPlatform(passwords={"alice": "pw"}, org_id="org"))


@pytest.fixture
def hpc_host(other_certs: Path, ac_host: Simulator) -> Iterator[Simulator]:
    """The job API, with a certificate of a private CA (ca_file), accepting the platform's region tokens."""
    yield from serving(other_certs, token=None, platform=ac_host.platform, jobs=60, max_page=25)


def cluster(ac_host: Simulator, hpc_host: Simulator, **extra: object) -> dict[str, object]:
    login = {"kind": "password", "url": ac_host.url, "user": "alice", "password": "pw", "org_id": "org"}
    return {"name": "a", "api_url": hpc_host.url, "auth": login, **extra}


def test_ca_file_adds_to_the_system_trust_store(
    ac_host: Simulator,
    hpc_host: Simulator,
    certs: Path,
    other_certs: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The system store is OpenSSL's default paths; SSL_CERT_FILE stands in for it here.
    monkeypatch.setenv("SSL_CERT_FILE", str(certs / "ca.pem"))
    data = {"clusters": [cluster(ac_host, hpc_host, ca_file=str(other_certs / "ca.pem"))]}
    exporter = Exporter(build_config(data, environ={}))
    assert asyncio.run(exporter.poll_all_once())
    assert exporter.registry.get_sample_value("sugon_api_reported_jobs", {"hpc_cluster": "a"}) == 60


def test_without_ca_file_a_private_ca_is_refused(
    ac_host: Simulator, hpc_host: Simulator, certs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certs / "ca.pem"))
    exporter = Exporter(build_config({"clusters": [cluster(ac_host, hpc_host)]}, environ={}))
    assert not asyncio.run(exporter.poll_all_once())
    assert exporter.registry.get_sample_value("sugon_api_errors_total", {"hpc_cluster": "a", "reason": "connection"})
    assert exporter.exposition.get("a").last_error == "connection"


def test_verify_tls_false_checks_no_certificate(
    ac_host: Simulator, hpc_host: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    data = {"clusters": [cluster(ac_host, hpc_host, verify_tls=False)]}
    exporter = Exporter(build_config(data, environ={}))
    assert asyncio.run(exporter.poll_all_once())
