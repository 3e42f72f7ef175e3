"""Session fixtures: a throw-away CA with a server and a client certificate, made with the openssl CLI; and the
one Hypothesis profile, derandomised, so that every run tries the same examples and a red run can be reproduced."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from exporter import rows
from tests.tools import find_tool

settings.register_profile(
    "deterministic", derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("deterministic")


@pytest.fixture(autouse=True)
def _rows_read_afresh() -> None:
    """Each test reads rows afresh: no value an earlier test left in the caches of exporter.rows answers for
    this one (mutation testing changes the code behind them from test to test)."""
    for cached in (rows._label, rows._reason, rows._app):
        cached.cache_clear()


def _openssl(*args: str, cwd: Path) -> None:
    exe = find_tool("openssl", "apt-get install openssl")
    subprocess.run([exe, *args], cwd=cwd, check=True, capture_output=True)


# The extensions Python 3.13's default VERIFY_X509_STRICT asks for, as a real private CA has them: a CA
# certificate with basicConstraints and keyUsage, leaf certificates with an authority key identifier.
CA_EXTENSIONS = """[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""
LEAF_EXTENSIONS = {
    "server": "subjectAltName = IP:127.0.0.1, DNS:localhost\nextendedKeyUsage = serverAuth\n",
    "client": "extendedKeyUsage = clientAuth\n",
}
LEAF_COMMON = (
    "basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature, keyEncipherment\n"
    "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid, issuer\n"
)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ca.pem, server.pem/server.key (for 127.0.0.1 and localhost) and client.pem/client.key, signed by the CA."""
    return make_pki(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def other_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same files as ``certs``, of another, unrelated CA."""
    return make_pki(tmp_path_factory.mktemp("other-certs"))


def make_pki(d: Path) -> Path:
    """A CA and a server and a client certificate it signed, in ``d``."""
    (d / "ca.ext").write_text(CA_EXTENSIONS)
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=sugon-test-ca",
        "-config",
        "ca.ext",
        "-extensions",
        "ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        cwd=d,
    )
    for name, extra in LEAF_EXTENSIONS.items():
        (d / f"{name}.ext").write_text(LEAF_COMMON + extra)
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            cwd=d,
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            f"{name}.pem",
            "-extfile",
            f"{name}.ext",
            cwd=d,
        )
    return d
