"""The exporter-toolkit's own test cases (web/testdata of prometheus/exporter-toolkit: a file's name says whether the
toolkit loads it, .good., or refuses it, .bad.), each written anew here and judged with the toolkit's reason.

Where the toolkit's file name and its behaviour disagree, the behaviour counts: web_config_auth_clientCAs_missing.bad
holds what web_config_noAuth.good.blocking holds (RequireAndVerifyClientCert, no client CA) and the toolkit loads
both; so do we, with a warning."""

from __future__ import annotations

import shutil
import ssl
import textwrap
from pathlib import Path

import pytest

from exporter.config import ConfigError
from exporter.config.webconfig import RateLimit, load_web_config
from tests.conftest import _openssl

ALL_CIPHERS = """
  cipher_suites:
  - TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
  - TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
  - TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
  - TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
  - TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
  - TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
  - TLS_AES_128_GCM_SHA256
  - TLS_AES_256_GCM_SHA384
  - TLS_CHACHA20_POLY1305_SHA256
  - TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA
  - TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA
  - TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA
  - TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA"""
SERVER = 'tls_server_config:\n  cert_file: "server.crt"\n  key_file: "server.key"\n'
IF_GIVEN = SERVER + '  client_auth_type: "VerifyClientCertIfGiven"\n'
NO_CA = "warn: VerifyClientCertIfGiven without client_ca_file checks client certificates against the system's CAs"
HASHES = """
  alice: $2y$12$1DpfPeqF9HzHJt.EWswy1exHluGfbhnn3yXhR7Xes6m3WJqFg0Wby
  bob: $2y$18$4VeFDzXIoPHKnKTU3O3GH.N.vZu06CVqczYZ8WvfzrddFU6tGqjR.
  carol: $2y$10$qRTBuFoULoYNA7AQ/F3ck.trZBPyjV64.oA4ZsSBCIWvXuvQlQTuu
  dave: $2y$10$2UXri9cIDdgeKjBo4Rlpx.U3ZLDV8X1IxKmsfOvhcM5oXQt/mLmXq"""
HEADERS = {
    "X-Frame-Options": "deny",
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "X-Content-Type-Options": "nosniff",
    "X-XSS-Protection": "1",
    "Content-Security-Policy": "default-src 'self' *.test.example.net",
}

# name: (the file's text, with {cert} and {key} for the server's PEM indented as a YAML block; what is expected:
# "ok", a warning's words after "warn:", or the first error's "key: reason").
CASES: dict[str, tuple[str, str]] = {
    "tls_config_noAuth.requireandverifyclientcert.good": (
        SERVER + '  client_auth_type: "RequireAndVerifyClientCert"\n  client_ca_file: "client_selfsigned.pem"\n',
        "ok",
    ),
    "tls_config_noAuth.requireanyclientcert.good": (SERVER + '  client_auth_type: "RequireAnyClientCert"\n', "ok"),
    "tls_config_noAuth.requireanyclientcertkeyinline.good": (
        'tls_server_config:\n  cert_file: "server.crt"\n  key: |\n{key}\n  client_auth_type: "RequireAnyClientCert"\n',
        "ok",
    ),
    "web_config_auth_clientCAs_invalid.bad": (
        SERVER + '  client_ca_file: "somefile"\n',
        "tls_server_config.client_ca_file: no such file",
    ),
    "web_config_auth_clientCAs_missing.bad": (
        SERVER + '  client_auth_type: "RequireAndVerifyClientCert"\n',
        "warn: RequireAndVerifyClientCert without client_ca_file checks client certificates against the system's CAs",
    ),
    "web_config_auth_client_san.bad": (
        SERVER + '  client_auth_type: "RequireAndVerifyClientCert"\n  client_ca_file: "client2_selfsigned.pem"\n'
        '  client_allowed_sans:\n    - "bad"\n',
        "ok",  # loads; the client's SAN is refused in the handshake (test_web_tls)
    ),
    "web_config_auth_client_san.good": (
        SERVER + '  client_auth_type: "RequireAndVerifyClientCert"\n  client_ca_file: "client2_selfsigned.pem"\n'
        '  client_allowed_sans:\n    - "one"\n    - "test3"\n    - "two"\n',
        "ok",
    ),
    "web_config_auth_user_list_invalid.bad": (
        SERVER + "basic_auth_users:\n  john: doe\n",
        "basic_auth_users.john: expected a bcrypt hash",
    ),
    "web_config_empty": ("", "ok"),
    "web_config_headers.good": (
        (
            "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
            "    Strict-Transport-Security: max-age=31536000; includeSubDomains\n    X-Content-Type-Options: nosniff\n"
            "    X-XSS-Protection: 1\n    Content-Security-Policy: \"default-src 'self' *.test.example.net\"\n"
        ),
        "ok",
    ),
    "web_config_headers_content_type_options.bad": (
        "http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n",
        (
            "http_server_config.headers.X-Content-Type-Options: invalid value for X-Content-Type-Options. Expected one of: "
            '["nosniff"], but got: "sniff"'
        ),
    ),
    "web_config_headers_extra_header.bad": (
        "http_server_config:\n  headers:\n    Content-Type: foo\n",
        'http_server_config.headers.Content-Type: HTTP header "Content-Type" can not be configured',
    ),
    "web_config_headers_frame_options.bad": (
        "http_server_config:\n  headers:\n    X-Frame-Options: foo\n",
        (
            'http_server_config.headers.X-Frame-Options: invalid value for X-Frame-Options. Expected one of: ["deny" '
            '"sameorigin"], but got: "foo"'
        ),
    ),
    "web_config_junk": ("Rkq0wE2nXbT1\nq9ZcV8mLp3Ys\nHd7uQe4Wj6Ga\n", "expected a mapping of tls_server_config"),
    "web_config_junk_key": (
        'tls_server_config:\n  cert_filse: "server.crt"\n',
        "tls_server_config.cert_filse: unknown key (did you mean cert_file?)",
    ),
    "web_config_noAuth.bad": (
        SERVER + '  client_ca_file: "/dev/null"\n',
        "tls_server_config.client_ca_file: client CA's have been configured without a Client Auth Policy",
    ),
    "web_config_noAuth.good.blocking": (
        SERVER + '  client_auth_type: "RequireAndVerifyClientCert"\n',
        "warn: RequireAndVerifyClientCert without client_ca_file",
    ),
    "web_config_noAuth.good": (IF_GIVEN, NO_CA),
    "web_config_noAuth_allCiphers.good": (IF_GIVEN + ALL_CIPHERS + "\n", NO_CA),
    "web_config_noAuth_allCurves.good": (
        IF_GIVEN + "  curve_preferences:\n    - CurveP256\n    - CurveP384\n    - CurveP521\n    - X25519\n",
        NO_CA,
    ),
    "web_config_noAuth_certPath_empty.bad": (
        'tls_server_config:\n  cert_file: ""\n  key_file: "server.key"\n',
        "tls_server_config: missing one of cert or cert_file",
    ),
    "web_config_noAuth_certPath_invalid.bad": (
        'tls_server_config:\n  cert_file: "somefile"\n  key_file: "server.key"\n',
        "tls_server_config.cert_file: no such file",
    ),
    "web_config_noAuth_certPath_keyPath_empty.bad": (
        'tls_server_config:\n  cert_file: ""\n  key_file: ""\n  client_auth_type: "x"\n',
        "tls_server_config: missing one of cert or cert_file",
    ),
    "web_config_noAuth_certPath_keyPath_invalid.bad": (
        'tls_server_config:\n  cert_file: "somefile"\n  key_file: "somefile"\n',
        "tls_server_config.cert_file: no such file",
    ),
    "web_config_noAuth_cert_empty.bad": (
        'tls_server_config:\n  cert: ""\n  key_file: "server.key"\n',
        "tls_server_config: missing one of cert or cert_file",
    ),
    "web_config_noAuth_inventedCiphers.bad": (
        IF_GIVEN + "  cipher_suites:\n  - TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA2048\n",
        "tls_server_config.cipher_suites: unknown cipher: TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA2048",
    ),
    "web_config_noAuth_inventedCurves.bad": (
        IF_GIVEN + "  curve_preferences:\n    - CurveP257\n",
        "tls_server_config.curve_preferences: unknown curve: CurveP257",
    ),
    "web_config_noAuth_keyPath_empty.bad": (
        'tls_server_config:\n  cert_file: "server.crt"\n  key_file: ""\n',
        "tls_server_config: missing one of key or key_file",
    ),
    "web_config_noAuth_keyPath_invalid.bad": (
        'tls_server_config:\n  cert_file: "server.cert"\n  key_file: "somefile"\n',
        "tls_server_config.cert_file: no such file",
    ),
    "web_config_noAuth_key_empty.bad": (
        'tls_server_config:\n  cert_file: "server.crt"\n  key: ""\n',
        "tls_server_config: missing one of key or key_file",
    ),
    "web_config_noAuth_noHTTP2.good": (
        IF_GIVEN + "  cipher_suites:\n    - TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384\n  max_version: TLS12\n"
        "http_server_config:\n  http2: false\n",
        NO_CA,
    ),
    "web_config_noAuth_noHTTP2Cipher.bad": (
        IF_GIVEN + "  cipher_suites:\n    - TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384\n  max_version: TLS12\n",
        "tls_server_config.cipher_suites: is missing an HTTP/2-required AES_128_GCM_SHA256 cipher",
    ),
    "web_config_noAuth_someCiphers.good": (
        IF_GIVEN + "  cipher_suites:\n  - TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\n"
        "  - TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384\n  min_version: TLS12\n  max_version: TLS12\n",
        NO_CA,
    ),
    "web_config_noAuth_someCiphers_noOrder.good": (
        IF_GIVEN + "  cipher_suites:\n  - TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384\n"
        "  - TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\n  prefer_server_cipher_suites: false\n"
        "  min_version: TLS12\n  max_version: TLS12\n",
        NO_CA,
    ),
    "web_config_noAuth_someCurves.good": (
        IF_GIVEN + "  min_version: TLS13\n  curve_preferences:\n  - CurveP521\n",
        NO_CA,
    ),
    "web_config_noAuth_tlsInline.good": ("tls_server_config:\n  cert: |\n{cert}\n  key: |\n{key}\n", "ok"),
    "web_config_noAuth_wrongTLSVersion.bad": (
        IF_GIVEN + "  min_version: TLS111\n",
        "tls_server_config.min_version: unknown TLS version: TLS111",
    ),
    "web_config_rate_limiter_nonblocking": ("rate_limit:\n  interval: 0\n  burst: 0\n", "ok"),
    "web_config_rate_limiter_one_second": (
        'rate_limit:\n  interval: "1s"\n  burst: 0\n',
        "warn: rate_limit.burst: 0 refuses every request (429), as in the toolkit",
    ),
    "web_config_users.good": (SERVER + "basic_auth_users:" + HASHES + "\n", "ok"),
    "web_config_users_noTLS.good": ("basic_auth_users:" + HASHES + "\n", "ok"),
}


def _indented(pem: Path) -> str:
    return textwrap.indent(pem.read_text().strip(), "    ")


@pytest.fixture(scope="module")
def testdata(certs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files the cases name: the server's certificate and key, and two self-signed client certificates."""
    d = tmp_path_factory.mktemp("testdata")
    shutil.copy(certs / "server.pem", d / "server.crt")
    shutil.copy(certs / "server.key", d / "server.key")
    for name, san in (("client_selfsigned", "DNS:client"), ("client2_selfsigned", "DNS:test3")):
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                 "-subj", f"/CN={name}", "-addext", f"subjectAltName={san}", "-keyout", f"{name}.key",
                 "-out", f"{name}.pem", cwd=d)  # fmt: skip
    return d


@pytest.mark.parametrize("name", CASES)
def test_each_case_of_the_toolkits_testdata_is_judged_as_the_toolkit_judges_it(name: str, testdata: Path) -> None:
    text, expected = CASES[name]
    path = testdata / f"{name}.yml"
    pem = {"{cert}": _indented(testdata / "server.crt"), "{key}": _indented(testdata / "server.key")}
    path.write_text(text.replace("{cert}", pem["{cert}"]).replace("{key}", pem["{key}"]))
    if expected == "ok" or expected.startswith("warn: "):
        web = load_web_config(str(path))
        warned = [w for w in web.warnings if expected[len("warn: ") :] in w]
        assert (warned and len(web.warnings) == 1) if expected != "ok" else web.warnings == ()
        if name.endswith(".good") or name.startswith("tls_config"):
            assert (web.tls is not None) == ("tls_server_config" in text)
    else:
        with pytest.raises(ConfigError) as err:
            load_web_config(str(path))
        first = err.value.errors[0]
        assert first.startswith(f"web_config_file {path}: {expected}"), err.value.errors
        assert "PRIVATE KEY" not in str(err.value)


def test_a_missing_web_config_file_is_refused_as_no_such_file() -> None:
    with pytest.raises(ConfigError) as err:
        load_web_config("somefile")
    assert err.value.errors == ["web_config_file: somefile: no such file"]


def test_what_the_good_files_configure(testdata: Path) -> None:
    def load(name: str) -> object:
        text = CASES[name][0].replace("{cert}", _indented(testdata / "server.crt"))
        path = testdata / f"{name}.yml"
        path.write_text(text.replace("{key}", _indented(testdata / "server.key")))
        return load_web_config(str(path))

    assert load("web_config_headers.good").headers == HEADERS  # type: ignore[attr-defined]
    assert load("web_config_rate_limiter_one_second").rate_limit == RateLimit(1.0, 0)  # type: ignore[attr-defined]
    assert load("web_config_rate_limiter_nonblocking").rate_limit is None  # type: ignore[attr-defined]
    users = load("web_config_users_noTLS.good").users  # type: ignore[attr-defined]
    assert sorted(users) == ["alice", "bob", "carol", "dave"] and users["bob"].startswith(b"$2y$18$")
    noorder = load("web_config_noAuth_someCiphers_noOrder.good").tls.settings  # type: ignore[attr-defined]
    assert noorder.ciphers == ("ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-AES128-GCM-SHA256")
    assert not noorder.prefer_server_ciphers
    assert noorder.max_version == ssl.TLSVersion.TLSv1_2
    curves = load("web_config_noAuth_allCurves.good").tls.settings.groups  # type: ignore[attr-defined]
    assert curves == ("P-256", "P-384", "P-521", "X25519")
    inline = load("tls_config_noAuth.requireanyclientcertkeyinline.good").tls.settings  # type: ignore[attr-defined]
    assert inline.key.path is None and inline.cert.path == str(testdata / "server.crt")
    assert "PRIVATE" not in repr(inline)  # the inline key is never shown
