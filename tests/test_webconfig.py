"""/metrics protection: the web config file (exporter-toolkit format), basic auth, TLS and mutual TLS."""

from __future__ import annotations

import base64
import ssl
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import httpx
import pytest

from exporter.basicauth import BasicAuth, Verdict
from exporter.config import ConfigError
from exporter.config.webconfig import load_web_config
from exporter.endpoints import make_app
from exporter.render import Exposition
from exporter.web import WebServer

WEBCONFIGS = Path(__file__).parent / "webconfigs"
FAILURES = sorted(WEBCONFIGS.glob("*.yaml"))
PASSWORD = "scrape-s3cr3t"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()


@pytest.mark.parametrize("path", FAILURES, ids=[p.stem for p in FAILURES])
def test_each_bad_web_config_names_its_key(path: Path) -> None:
    expected = [
        line.split("# expect: ", 1)[1].replace("{file}", str(path))
        for line in path.read_text().splitlines()
        if line.startswith("# expect: ")
    ]
    with pytest.raises(ConfigError) as err:
        load_web_config(str(path))
    assert err.value.errors == expected
    assert "s3cr3t" not in str(err.value)


def test_a_missing_web_config_file_is_named() -> None:
    with pytest.raises(ConfigError) as err:
        load_web_config("/nonexistent/web.yml")
    assert err.value.errors == ["web_config_file: /nonexistent/web.yml: no such file"]


def header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def allows(auth: BasicAuth, value: str | None) -> bool:
    return auth.check(value) is Verdict.ALLOW


def test_basic_auth_accepts_only_the_right_password_of_a_known_user() -> None:
    auth = BasicAuth({"prometheus": HASH.encode()})
    assert allows(auth, header("prometheus", PASSWORD))
    assert allows(auth, header("prometheus", PASSWORD))  # cached
    assert not allows(auth, header("prometheus", "wrong"))
    assert not allows(auth, header("nobody", PASSWORD))
    for bad in (None, "", "Bearer x", "Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode()):
        assert not allows(auth, bad)


def write(tmp: Path, text: str) -> str:
    path = tmp / "web.yml"
    path.write_text(text)
    return str(path)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[object]:
    servers: list[WebServer] = []

    def start(web_yaml: str) -> str:
        web = load_web_config(write(tmp_path, web_yaml))
        store = Exposition(["kunshan"])
        server = WebServer(
            make_app(store, BasicAuth(web.users) if web.users else None),
            "127.0.0.1",
            0,
            web.tls.context if web.tls else None,
        )
        server.start()
        servers.append(server)
        return f"{'https' if web.tls else 'http'}://127.0.0.1:{server.port}"

    yield start
    for s in servers:
        s.stop()


def test_basic_auth_guards_every_path_but_healthz(serve: object) -> None:
    url = serve(f"basic_auth_users:\n  prometheus: '{HASH}'\n")  # type: ignore[operator]
    for path in ("/metrics", "/", "/nope"):
        r = httpx.get(url + path)
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith('Basic realm="sugon-exporter"')
    assert httpx.get(url + "/metrics", auth=("prometheus", "wrong")).status_code == 401
    assert httpx.get(url + "/metrics", auth=("prometheus", PASSWORD)).status_code == 200
    assert httpx.get(url + "/healthz").status_code == 200


def test_tls_serves_https_that_verifies_against_the_ca(serve: object, certs: Path) -> None:
    url = serve(f"tls_server_config:\n  cert_file: {certs}/server.pem\n  key_file: {certs}/server.key\n")  # type: ignore[operator]
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    assert httpx.get(url + "/healthz", verify=ctx).status_code == 200
    with pytest.raises(httpx.HTTPError):
        httpx.get(url.replace("https", "http") + "/healthz", timeout=3).raise_for_status()


def test_mutual_tls_refuses_a_client_without_a_certificate(serve: object, certs: Path) -> None:
    url = serve(  # type: ignore[operator]
        f"tls_server_config:\n  cert_file: {certs}/server.pem\n  key_file: {certs}/server.key\n"
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {certs}/ca.pem\n"
        f"basic_auth_users:\n  prometheus: '{HASH}'\n"
    )
    without = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    with pytest.raises(httpx.HTTPError):
        httpx.get(url + "/healthz", verify=without, timeout=5)
    with_cert = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    with_cert.load_cert_chain(str(certs / "client.pem"), str(certs / "client.key"))
    assert httpx.get(url + "/metrics", verify=with_cert, auth=("prometheus", PASSWORD)).status_code == 200
    assert httpx.get(url + "/metrics", verify=with_cert).status_code == 401


class CountingCheckpw:
    """bcrypt.checkpw that counts its calls and keeps the hashes it was given."""

    def __init__(self) -> None:
        self.hashes: list[bytes] = []
        self.real = bcrypt.checkpw

    def __call__(self, password: bytes, hashed: bytes) -> bool:
        self.hashes.append(hashed)
        return self.real(password, hashed)


@pytest.fixture
def checkpw(monkeypatch: pytest.MonkeyPatch) -> CountingCheckpw:
    counting = CountingCheckpw()
    monkeypatch.setattr(bcrypt, "checkpw", counting)
    return counting


def test_a_wrong_password_is_hashed_once_however_often_it_is_tried(checkpw: CountingCheckpw) -> None:
    auth = BasicAuth({"prometheus": HASH.encode()})
    for _ in range(5):
        assert not allows(auth, header("prometheus", "guess"))
    assert len(checkpw.hashes) == 1
    assert not allows(auth, header("prometheus", "other"))  # another guess is hashed in its turn
    assert not allows(auth, header("prometheus", "guess"))
    assert len(checkpw.hashes) == 2


def test_the_memory_of_wrong_passwords_is_bounded_and_forgets_the_oldest(checkpw: CountingCheckpw) -> None:
    auth = BasicAuth({"prometheus": HASH.encode()})
    auth.FAILED_KEPT = 3
    for guess in ("a", "b", "c", "d"):
        assert not allows(auth, header("prometheus", guess))
    assert not allows(auth, header("prometheus", "d"))  # remembered
    assert len(checkpw.hashes) == 4
    assert not allows(auth, header("prometheus", "a"))  # forgotten: hashed again
    assert len(checkpw.hashes) == 5


def test_an_unknown_user_is_checked_against_a_hash_of_the_users_highest_cost(checkpw: CountingCheckpw) -> None:
    cheap = bcrypt.hashpw(b"x", bcrypt.gensalt(rounds=4))
    dearer = bcrypt.hashpw(b"y", bcrypt.gensalt(rounds=6))
    auth = BasicAuth({"a": cheap, "b": dearer})
    assert not allows(auth, header("nobody", "x"))
    assert [h[:7] for h in checkpw.hashes] == [b"$2b$06$"]
    assert checkpw.hashes[0] not in (cheap, dearer)


@pytest.mark.parametrize("value", ["Basic \xff\xfe", "Basic " + base64.b64encode(b"\xff:\xfe").decode(), "basic"])
def test_a_header_that_is_not_ascii_or_not_utf_8_is_refused_without_an_error(value: str) -> None:
    assert not allows(BasicAuth({"prometheus": HASH.encode()}), value)


def test_the_scheme_is_matched_in_any_case_and_a_long_password_is_refused() -> None:
    auth = BasicAuth({"prometheus": HASH.encode()})
    assert allows(auth, header("prometheus", PASSWORD).replace("Basic", "bASIC"))
    assert not allows(auth, header("prometheus", "p" * 100))  # bcrypt 5 raises on more than 72 bytes


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("basic_auth_users:\n  a: x\n  a: y\n", 'invalid YAML at line 3, column 3: duplicate key "a"'),
        (
            "tls_server_config: [\n",
            "invalid YAML at line 2, column 1: expected the node content, but found '<stream end>'",
        ),
        ("basic_auth_users:\n  a: \x07\n", "invalid YAML: ReaderError"),  # a control character: no position
    ],
)
def test_a_web_config_that_is_not_yaml_is_refused_by_position_without_quoting_it(
    tmp_path: Path, text: str, why: str
) -> None:
    path = tmp_path / "web.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_web_config(str(path))
    assert err.value.errors == [f"web_config_file: {path}: {why}"]
