"""The web config's TLS, headers and rate limit, over real connections: what each setting lets through and what it
refuses, and a certificate renewed on disk served to the next connection."""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt
import pytest

from exporter import tls
from exporter.basicauth import BasicAuth
from exporter.config import ConfigError
from exporter.config.webconfig import load_web_config
from exporter.endpoints import TokenBucket, make_app
from exporter.render import Exposition
from exporter.tls import subject_alt_names
from exporter.web import WebServer
from tests.conftest import _openssl

Serve = Callable[[str], WebServer]
SERVER = "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
HEADERS = {
    "X-Frame-Options": "deny",
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "X-XSS-Protection": "1",
    "Content-Security-Policy": "default-src 'self'",
}


@pytest.fixture(scope="module")
def pki(certs: Path, other_certs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Our CA's server and client certificates, another CA's server certificate (other-server.*), and self-signed
    client certificates with SANs: good.* (DNS:test3), other.* (DNS:other), many.* (every kind of SAN)."""
    d = tmp_path_factory.mktemp("pki")
    for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key"):
        shutil.copy(certs / name, d / name)
    shutil.copy(other_certs / "server.pem", d / "other-server.pem")
    shutil.copy(other_certs / "server.key", d / "other-server.key")
    sans = {
        "good": "DNS:test3",
        "other": "DNS:other",
        "many": "DNS:a.example,email:ops@example.org,IP:10.0.0.7,IP:2001:db8::1,URI:spiffe://hpc/prometheus",
    }
    for name, san in sans.items():
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                 "-subj", f"/CN={name}", "-addext", f"subjectAltName={san}", "-keyout", f"{name}.key",
                 "-out", f"{name}.pem", cwd=d)  # fmt: skip
    return d


@pytest.fixture
def serve(pki: Path, tmp_path: Path) -> Iterator[Serve]:
    """Start a server on a web config (relative paths: the PKI files, copied beside it)."""
    servers: list[WebServer] = []

    def start(text: str) -> WebServer:
        for pem in pki.iterdir():
            shutil.copy(pem, tmp_path / pem.name)
        (tmp_path / "web.yml").write_text(text)
        web = load_web_config(str(tmp_path / "web.yml"))
        limiter = TokenBucket(web.rate_limit.interval, web.rate_limit.burst) if web.rate_limit else None
        app = make_app(Exposition([]), BasicAuth(web.users) if web.users else None, limiter=limiter)
        server = WebServer(app, "127.0.0.1", 0, web.tls.context if web.tls else None, headers=web.headers)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def client(pki: Path, cert: str | None = None, **settings: object) -> ssl.SSLContext:
    """A client that trusts our CA, with the client certificate ``cert`` (a name in the PKI) if given."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(pki / "ca.pem")
    if cert:
        context.load_cert_chain(pki / f"{cert}.pem", pki / f"{cert}.key")
    for name, value in settings.items():
        if name == "ciphers":
            context.set_ciphers(str(value))
        elif name == "curve":
            context.set_ecdh_curve(str(value))
        else:
            setattr(context, name, value)
    return context


def get(
    server: WebServer, context: ssl.SSLContext | None, path: str = "/healthz", **headers: str
) -> http.client.HTTPResponse:
    if context is None:
        connection: http.client.HTTPConnection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    else:
        connection = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=5, context=context)
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def admitted(server: WebServer, context: ssl.SSLContext) -> bool:
    """Whether a request over a new connection with ``context`` is answered; a refusal in the handshake, or (TLS 1.3)
    right after it, ends the connection instead."""
    try:
        return get(server, context).status == 200
    except (ssl.SSLError, OSError, http.client.HTTPException):
        return False


def served_certificate(server: WebServer) -> bytes:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock, context.wrap_socket(sock) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def der(pem: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem.read_text())


# headers


def test_the_configured_headers_are_on_every_answer(serve: Serve, pki: Path) -> None:
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    headers = "".join(f'    {name}: "{value}"\n' for name, value in HEADERS.items())
    server = serve(SERVER + f"http_server_config:\n  headers:\n{headers}basic_auth_users:\n  prom: '{hashed}'\n")
    good = client(pki)
    answers = {
        "unauthorised": get(server, good, "/metrics"),
        "authorised": get(server, good, "/metrics", Authorization="Basic cHJvbTpwdw=="),
        "not found": get(server, good, "/nope", Authorization="Basic cHJvbTpwdw=="),
        "probe": get(server, good, "/-/healthy"),
    }
    assert [a.status for a in answers.values()] == [401, 200, 404, 200]
    for name, answer in answers.items():
        for header, value in HEADERS.items():
            assert answer.getheader(header) == value, (name, header)
        assert answer.getheader("X-Content-Type-Options") == "nosniff"
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock,
        good.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):  # the server's own refusal
        tls.sendall(b"NOT HTTP\r\n\r\n")
        head = tls.recv(65536).decode("latin-1")
    assert head.startswith(("HTTP/1.0 400", "HTTP/1.1 400"))
    assert "X-Frame-Options: deny" in head and "Content-Security-Policy: default-src 'self'" in head


# cipher suites, versions, curves


def test_a_listed_cipher_connects_and_an_unlisted_one_does_not(serve: Serve, pki: Path) -> None:
    server = serve(SERVER + "  cipher_suites:\n  - TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\n"
                   "  - TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384\n  max_version: TLS12\n")  # fmt: skip
    tls12 = ssl.TLSVersion.TLSv1_2
    assert admitted(server, client(pki, ciphers="ECDHE-RSA-AES128-GCM-SHA256", maximum_version=tls12))
    assert admitted(server, client(pki, ciphers="ECDHE-RSA-AES256-GCM-SHA384", maximum_version=tls12))
    assert not admitted(server, client(pki, ciphers="ECDHE-RSA-AES256-SHA", maximum_version=tls12))
    assert not admitted(server, client(pki, ciphers="ECDHE-RSA-CHACHA20-POLY1305", maximum_version=tls12))


@pytest.mark.parametrize(
    ("prefer", "chosen"), [("true", "ECDHE-RSA-AES256-GCM-SHA384"), ("false", "ECDHE-RSA-AES128-GCM-SHA256")]
)
def test_prefer_server_cipher_suites_lets_the_servers_order_or_the_clients_choose(
    serve: Serve, pki: Path, prefer: str, chosen: str
) -> None:
    server = serve(SERVER + "  cipher_suites:\n  - TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384\n"
                   "  - TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\n  max_version: TLS12\n"
                   f"  prefer_server_cipher_suites: {prefer}\n")  # fmt: skip
    context = client(pki, ciphers="ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384")
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.cipher()[0] == chosen  # type: ignore[index]


def test_max_version_tls12_refuses_tls13(serve: Serve, pki: Path) -> None:
    server = serve(SERVER + "  max_version: TLS12\n")
    assert not admitted(server, client(pki, minimum_version=ssl.TLSVersion.TLSv1_3))
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock,
        client(pki).wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() == "TLSv1.2"


def test_curve_preferences_admit_only_the_listed_curves(serve: Serve, pki: Path) -> None:
    server = serve(SERVER + "  min_version: TLS13\n  curve_preferences:\n  - CurveP521\n")
    assert admitted(server, client(pki, curve="secp521r1"))
    assert not admitted(server, client(pki, curve="prime256v1"))
    both = serve(SERVER + "  curve_preferences: [CurveP384, X25519]\n")
    assert admitted(both, client(pki, curve="secp384r1"))
    assert admitted(both, client(pki))  # X25519, among the default client's curves (3.10 cannot ask for it alone)
    assert not admitted(both, client(pki, curve="prime256v1"))


def test_inline_cert_and_key_are_served(serve: Serve, pki: Path) -> None:
    def block(name: str) -> str:
        return "".join(f"    {line}\n" for line in (pki / name).read_text().strip().splitlines())

    server = serve(f"tls_server_config:\n  cert: |\n{block('server.pem')}  key: |\n{block('server.key')}")
    assert served_certificate(server) == der(pki / "server.pem")
    assert admitted(server, client(pki))


# client certificates


def test_each_client_auth_type_admits_and_refuses_as_in_the_toolkit(serve: Serve, pki: Path) -> None:
    ca = "  client_ca_file: ca.pem\n"
    cases = {  # (no certificate, one our CA signed, a self-signed one)
        "NoClientCert": ("", (True, True, True)),
        "RequestClientCert": ("", (True, True, True)),
        "RequireAnyClientCert": ("", (False, True, True)),
        "VerifyClientCertIfGiven": (ca, (True, True, False)),
        "RequireAndVerifyClientCert": (ca, (False, True, False)),
    }
    for auth, (extra, expected) in cases.items():
        server = serve(SERVER + f"  client_auth_type: {auth}\n" + extra)
        got = tuple(admitted(server, client(pki, cert)) for cert in (None, "client", "good"))
        assert got == expected, auth


def test_client_allowed_sans_admits_a_listed_san_and_refuses_another(serve: Serve, pki: Path) -> None:
    sans = "  client_allowed_sans: [one, test3, two]\n"
    for policy in ("RequireAnyClientCert", "RequireAndVerifyClientCert\n  client_ca_file: good.pem"):
        server = serve(SERVER + f"  client_auth_type: {policy}\n" + sans)
        assert admitted(server, client(pki, "good")), policy  # DNS:test3
        assert not admitted(server, client(pki, "other")), policy  # DNS:other
        assert not admitted(server, client(pki)), policy  # none
    only_other = serve(SERVER + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: good.pem\n"
                       "  client_allowed_sans: [bad]\n")  # fmt: skip
    assert not admitted(only_other, client(pki, "good"))  # the chain is good, the SAN is not listed
    by_ip = serve(SERVER + "  client_auth_type: RequireAnyClientCert\n  client_allowed_sans: ['2001:db8::1']\n")
    assert admitted(by_ip, client(pki, "many"))


def test_the_sans_of_a_certificate_are_read_as_go_writes_them(pki: Path) -> None:
    assert subject_alt_names(der(pki / "many.pem")) == [
        "a.example",
        "ops@example.org",
        "10.0.0.7",
        "2001:db8::1",
        "spiffe://hpc/prometheus",
    ]
    assert subject_alt_names(der(pki / "client.pem")) == []  # no SAN extension
    assert subject_alt_names(der(pki / "server.pem")) == ["127.0.0.1", "localhost"]


# certificates renewed on disk


def test_a_certificate_rotated_on_disk_is_served_to_the_next_connection(
    serve: Serve, pki: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(SERVER)
    assert served_certificate(server) == der(pki / "server.pem")
    kept = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=5, context=client(pki))
    kept.request("GET", "/healthz")
    assert kept.getresponse().read() == b"ok\n"

    def rotate(cert: str, key: str) -> None:  # as a renewal does: new files renamed over the old ones
        for source, target in ((key, "server.key"), (cert, "server.pem")):
            shutil.copy(pki / source, tmp_path / f"{target}.new")
            os.replace(tmp_path / f"{target}.new", tmp_path / target)

    rotate("other-server.pem", "other-server.key")
    assert served_certificate(server) == der(pki / "other-server.pem")
    kept.request("GET", "/healthz")  # the open connection goes on with the certificate it began with
    assert kept.getresponse().read() == b"ok\n"
    kept.close()

    caplog.set_level(logging.INFO, logger="exporter.tls")
    (tmp_path / "server.pem").write_text("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
    for _ in range(3):  # the broken one is not taken; the last good one serves, and it is said once
        assert served_certificate(server) == der(pki / "other-server.pem")
    broken = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(broken) == 1 and "cert_file changed and cannot be used: no PEM certificate" in broken[0].getMessage()
    rotate("server.pem", "other-server.key")  # a key that does not belong to the certificate: not taken either
    assert served_certificate(server) == der(pki / "other-server.pem")
    assert "key_file changed and cannot be used: not the private key" in caplog.records[-1].getMessage()
    rotate("server.pem", "server.key")
    assert served_certificate(server) == der(pki / "server.pem")
    assert caplog.records[-1].getMessage().startswith("the TLS certificate files changed")


def test_a_renewed_client_ca_is_used_for_the_next_connection(serve: Serve, pki: Path, tmp_path: Path) -> None:
    (tmp_path / "trusted.pem").write_bytes((pki / "ca.pem").read_bytes())
    server = serve(SERVER + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: trusted.pem\n")
    assert admitted(server, client(pki, "client")) and not admitted(server, client(pki, "good"))
    shutil.copy(pki / "good.pem", tmp_path / "trusted.pem")
    assert admitted(server, client(pki, "good")) and not admitted(server, client(pki, "client"))


# http2, rate limit


def test_http2_false_is_accepted_and_the_server_speaks_http_1_1_either_way(serve: Serve, pki: Path) -> None:
    for http2 in ("true", "false"):
        server = serve(SERVER + f"http_server_config:\n  http2: {http2}\n")
        context = client(pki)
        context.set_alpn_protocols(["h2", "http/1.1"])
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock,
            context.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.selected_alpn_protocol() in (None, "http/1.1")
        assert admitted(server, client(pki))


def test_a_rate_limit_refuses_beyond_its_burst_but_never_the_probes(serve: Serve) -> None:
    server = serve(
        "rate_limit:\n  interval: 1h\n  burst: 2\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n"
    )
    assert [get(server, None, "/metrics").status for _ in range(3)] == [200, 200, 429]
    refused = get(server, None, "/")
    assert refused.status == 429 and refused.getheader("Retry-After") == "3600"
    assert refused.getheader("X-Frame-Options") == "deny"
    assert all(get(server, None, probe).status == 200 for probe in ("/-/healthy", "/-/ready", "/healthz") * 3)
    none = serve('rate_limit:\n  interval: "1s"\n  burst: 0\n')  # the toolkit's file: every request refused
    assert get(none, None, "/metrics").status == 429


def test_the_token_bucket_refills_one_token_an_interval_up_to_its_burst() -> None:
    now = [100.0]
    bucket = TokenBucket(interval=2.0, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] += 1.0  # half a token
    assert not bucket.take()
    now[0] += 1.0
    assert bucket.take() and not bucket.take()
    now[0] += 60.0  # long idle: no more than the burst
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert TokenBucket(1.0, 1).take()  # the real clock is the default


def test_a_reload_gives_new_requests_the_new_headers(serve: Serve) -> None:
    server = serve("http_server_config:\n  headers:\n    X-Frame-Options: deny\n")
    assert get(server, None).getheader("X-Frame-Options") == "deny"
    server.reconfigure(make_app(Exposition([])), None, {"X-Frame-Options": "sameorigin"})
    assert get(server, None).getheader("X-Frame-Options") == "sameorigin"
    server.reconfigure(make_app(Exposition([])), None)
    assert get(server, None).getheader("X-Frame-Options") is None


def test_an_inline_key_that_does_not_fit_is_refused_without_showing_it(pki: Path, tmp_path: Path) -> None:
    key = (pki / "other-server.key").read_text()
    block = "".join(f"    {line}\n" for line in key.strip().splitlines())
    (tmp_path / "web.yml").write_text(f"tls_server_config:\n  cert_file: {pki}/server.pem\n  key: |\n{block}")
    with pytest.raises(ConfigError) as err:
        load_web_config(str(tmp_path / "web.yml"))
    assert err.value.errors == [
        f"web_config_file {tmp_path}/web.yml: tls_server_config.key: not the private key of the certificate"
    ]
    secret = key.strip().splitlines()[1]
    assert secret not in str(err.value) and secret not in repr(err.value)


def test_a_setting_python_cannot_reach_openssl_for_is_refused_not_guessed(
    monkeypatch: pytest.MonkeyPatch, pki: Path, tmp_path: Path
) -> None:
    real = tls._lib

    class Elsewhere:  # as if the SSL_CTX were not where CPython keeps it: the options read through it differ
        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

        @staticmethod
        def SSL_CTX_get_options(pointer: int) -> int:
            return 0xDEAD

    monkeypatch.setattr(tls, "_lib", Elsewhere())
    (tmp_path / "web.yml").write_text(
        f"tls_server_config:\n  cert_file: {pki}/server.pem\n  key_file: {pki}/server.key\n"
        "  client_auth_type: RequireAnyClientCert\n"
    )
    with pytest.raises(ConfigError) as err:
        load_web_config(str(tmp_path / "web.yml"))
    assert err.value.errors == [
        (
            f"web_config_file {tmp_path}/web.yml: tls_server_config.client_auth_type: cannot be set: this Python's ssl "
            "module does not let OpenSSL's context be reached"
        )
    ]
