"""Credentials in api_url and auth.url: sent as Basic auth on every request, through both transports, and
never shown in a log line, an error or a repr."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Iterator

import httpx
import pytest

from exporter.config import build_config
from exporter.service import Exporter
from exporter.simulator import SimPlatform, Simulator
from exporter.sugon.conversation import ApiHttpError, parse_envelope
from exporter.values import split_credentials, url_problem, without_userinfo

SECRET_PARTS = ("pa ss", "pa%20ss", "p@ss", "p%40ss", "gw:")


def basic(pair: str) -> str:
    return "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")


@pytest.mark.parametrize(
    ("url", "clean", "pair"),
    [
        ("https://gw:pa%20ss@h.example:8443/hpc", "https://h.example:8443/hpc", "gw:pa ss"),
        ("https://gw:p%40ss:x@h/", "https://h/", "gw:p@ss:x"),  # only the first ':' separates user and password
        ("http://us%C3%A9r:%E5%AF%86@[::1]:80", "http://[::1]:80", "usér:密"),
        ("https://gw@h", "https://h", "gw:"),
    ],
)
def test_userinfo_leaves_the_url_as_percent_decoded_basic_credentials(url: str, clean: str, pair: str) -> None:
    assert split_credentials(url) == (clean, basic(pair))


def test_a_url_without_userinfo_has_no_credentials() -> None:
    assert split_credentials("https://h:1/hpc") == ("https://h:1/hpc", None)
    assert without_userinfo("https://h:1/x?a=b@c") == "https://h:1/x?a=b@c"  # an '@' in the query is not userinfo
    assert without_userinfo("https://u:p@h/x") == "https://h/x"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://h:65535", None),
        ("https://[::1]:1/hpc", None),
        ("https://h:65536", "the port must be a number from 1 to 65535"),
        ("https://h:0", "the port must be a number from 1 to 65535"),
        ("https://h:x", "the port must be a number from 1 to 65535"),
        ("https://u:p@h:-1", "the port must be a number from 1 to 65535"),
        ("https://bad host", "expected an http:// or https:// URL with a valid host name"),
        ("https://u:p@", "expected an http:// or https:// URL with a valid host name"),
        ("https://[::1", "expected an http:// or https:// URL"),
        ("ftp://h", "expected an http:// or https:// URL"),
        ("h:1", "expected an http:// or https:// URL"),
    ],
)
def test_url_problems_name_the_part_that_is_wrong(url: str, problem: str | None) -> None:
    assert url_problem(url) == problem


def test_the_config_keeps_credentials_out_of_the_url_and_out_of_its_repr() -> None:
    config = build_config(
        {
            "clusters": [
                {"name": "a", "api_url": "https://gw:pa%20ss@h:1/hpc/", "token": "t"},
                {
                    "name": "b",
                    "auth": {"kind": "password", "url": "https://gw:p%40ss@ac:2", "user": "u", "password": "pw"}
                    | {"org_id": "o"},
                },
            ]
        },
        environ={},
    )
    a, b = config.clusters
    assert (a.api_url, a.api_authorization) == ("https://h:1", basic("gw:pa ss"))
    assert b.auth is not None and (b.auth.url, b.auth.url_authorization) == ("https://ac:2", basic("gw:p@ss"))
    shown = repr(config)
    assert "Basic" not in shown and not any(part in shown for part in SECRET_PARTS)


@pytest.fixture
def gateway() -> Iterator[Simulator]:
    """A simulator behind a gateway that wants user "gw" with password "pa ss", with a password login."""
    sim = Simulator(
        token="sim-token",
        jobs=120,
        max_page=25,
        platform=SimPlatform(passwords={"alice": "pw"}, org_id="org"),
        gateway_credentials=("gw", "pa ss"),
    )
    sim.serve()
    yield sim
    sim.stop()


def test_credentials_in_the_urls_go_with_every_request(gateway: Simulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    host = gateway.url.removeprefix("http://")
    config = build_config(
        {
            "page_size": 25,
            "clusters": [
                {"name": "static", "api_url": f"http://gw:pa%20ss@{host}/hpc", "token": "sim-token"},
                {
                    "name": "login",
                    "api_url": f"http://gw:pa%20ss@{host}",
                    "auth": {"kind": "password", "url": f"http://gw:pa%20ss@{host}", "user": "alice"}
                    | {"password": "pw", "org_id": "org"},
                },
            ],
        },
        environ={},
    )
    exporter = Exporter(config)
    assert asyncio.run(exporter.poll_all_once())
    assert gateway.gateway_refused == 0
    # 120 jobs in pages of 25 for each cluster, the schedulers' discovery, and one login
    assert gateway.requests == 2 * (5 + 1) + 1
    for name in ("static", "login"):
        assert exporter.registry.get_sample_value("sugon_up", {"hpc_cluster": name}) == 1
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "HTTP Request: GET" in logged  # the debug lines that name URLs were there to leak
    assert not any(part in logged for part in SECRET_PARTS)


def test_wrong_gateway_credentials_are_named_as_such_not_blamed_on_the_token(
    gateway: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    host = gateway.url.removeprefix("http://")
    config = build_config(
        {"clusters": [{"name": "a", "api_url": f"http://gw:wrong@{host}", "token": "sim-token"}]},
        environ={},
    )
    exporter = Exporter(config)
    assert not asyncio.run(exporter.poll_all_once())
    assert exporter.registry.get_sample_value("sugon_api_errors_total", {"hpc_cluster": "a", "reason": "http_status"})
    assert exporter.registry.get_sample_value("sugon_api_errors_total", {"hpc_cluster": "a", "reason": "auth"}) == 0
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "asks for Basic credentials" in logged and "renew the token" not in logged
    assert "wrong" not in logged


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_not_followed_and_the_error_names_where_it_points(status: int) -> None:
    response = httpx.Response(status, headers={"Location": "https://gw:s3cr3t@new.example:65106/hpc/openapi/v2/jobs"})
    with pytest.raises(ApiHttpError) as err:
        parse_envelope(response)
    message = str(err.value)
    assert message.startswith(f"HTTP {status} redirect to https://new.example:65106/hpc/openapi/v2/jobs")
    assert "set api_url" in message and "s3cr3t" not in message
    assert not err.value.transient


def test_a_redirect_without_location_still_says_what_to_fix() -> None:
    with pytest.raises(ApiHttpError, match=r"^HTTP 302 redirect: redirects are not followed; set api_url"):
        parse_envelope(httpx.Response(302))
