"""Tokens: login answers, the AK/SK signature, renewal shapes, /center, proactive and single-flight renewal, backoff."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any

import httpx
import pytest
import respx

from exporter.sugon.conversation import ApiAuthError, ApiInvalidResponse, Conversation
from exporter.sugon.joblist import SugonClient
from exporter.sugon.platform import (
    PlatformClient,
    aksk_signature,
    choose_region,
    parse_center,
    parse_regions,
    parse_renewal,
)
from exporter.sugon.settings import LoginSettings, TokenSettings
from exporter.sugon.tokens import FileToken, LoginToken, StaticToken
from exporter.values import jwt_expiry
from tests.helpers import envelope, fixture, row

AC = "https://ac.example.com"
HPC = "https://hpc.example.com:65106"
LOGIN = AC + "/ac/openapi/v2/tokens"
AKSK = AC + "/api/user/v3/tokens"
RENEW = AC + "/ac/openapi/v2/tokens/next"
JOBS = HPC + "/hpc/openapi/v2/jobs"
T0 = 1_700_000_000.0
PASSWORD = "pa55-w0rd-do-not-print"


def jwt(expire_seconds: float | None, tag: str = "a") -> str:
    """A token shaped like the platform's: base64url JSON payload with expireTime in epoch ms, as a string."""
    payload: dict[str, Any] = {"user": "alice", "computeUser": "alice", "clusterId": "11250", "tag": tag}
    if expire_seconds is not None:
        payload["expireTime"] = str(int(expire_seconds * 1000))

    def b64(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(payload)}.c2lnbmF0dXJl"


def login_answer(token: str, cluster_id: Any = "11250") -> dict[str, Any]:
    return envelope(
        [
            {"clusterId": "0", "clusterName": "ac", "token": jwt(T0 + 86400, "platform")},
            {"clusterId": cluster_id, "clusterName": "华东一区【昆山】", "token": token},
        ]
    )


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Seen:
    """An Observer that records what it is told."""

    def __init__(self) -> None:
        self.expiry: list[float | None] = []
        self.refreshes: list[tuple[str, str]] = []

    def token_expiry(self, timestamp: float | None) -> None:
        self.expiry.append(timestamp)

    def token_refresh(self, method: str, result: str) -> None:
        self.refreshes.append((method, result))

    def request_sent(self) -> None:
        pass

    def request_failed(self, reason: str) -> None:
        pass


def password_auth(region: str | None = "11250") -> LoginSettings:
    return LoginSettings(kind="password", url=AC, user="alice", password=PASSWORD, org_id="org-1", region=region)


def login_tokens(
    http: httpx.AsyncClient,
    clock: Clock,
    seen: Seen | None = None,
    auth: LoginSettings | None = None,
    gap: float = 60.0,
) -> LoginToken:
    platform = PlatformClient(AC, Conversation(http, 5.0, seen, retry_backoff=0))
    return LoginToken("kunshan", auth or password_auth(), platform, min_login_gap=gap, observer=seen, clock=clock)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# ---- login answers -------------------------------------------------------------------------------


def test_the_platform_entry_and_suspended_regions_are_skipped_and_a_region_is_found_by_id_or_name() -> None:
    regions = parse_regions(fixture("login_regions.json")["data"])
    assert [(r.cluster_id, r.is_platform, r.token is None) for r in regions] == [
        ("0", True, False),
        ("11250", False, False),
        ("11251", False, True),
        ("11276", False, False),
    ]
    assert choose_region(regions, "11250").token == "REGION-TOKEN-KUNSHAN"
    assert choose_region(regions, "华南一区【广州】").token == "REGION-TOKEN-GUANGZHOU"


def test_numeric_cluster_ids_are_read_as_strings_and_one_usable_region_needs_no_name() -> None:
    regions = parse_regions(fixture("login_numeric_ids.json")["data"])
    assert [r.cluster_id for r in regions] == ["0", "11250", "11251"]
    assert choose_region(regions, None).token == "REGION-TOKEN-KUNSHAN"
    assert choose_region(regions, "11250").cluster_id == "11250"


def test_a_region_that_matches_nothing_lists_the_region_names_and_no_token() -> None:
    regions = parse_regions(fixture("login_regions.json")["data"])
    with pytest.raises(ApiAuthError) as err:
        choose_region(regions, "99999")
    assert str(err.value) == (
        'region "99999" is not among the regions the login returned: '
        "华东一区【昆山】, 西北一区【西安】 (no token), 华南一区【广州】"
    )
    assert "REGION-TOKEN" not in str(err.value)


def test_a_suspended_region_or_several_usable_regions_without_a_choice_are_errors() -> None:
    regions = parse_regions(fixture("login_regions.json")["data"])
    with pytest.raises(ApiAuthError, match="has no token"):
        choose_region(regions, "11251")
    with pytest.raises(ApiAuthError, match="returned 2 usable regions .*set auth.region"):
        choose_region(regions, None)


def test_the_aksk_signature_matches_a_vector_computed_with_openssl() -> None:
    # printf '%s' '{"accessKey":"AKIDz8krbsJ5yKBZQpn74WFkmLPx3","timestamp":"1686036760","user":"bob"}' \
    #   | openssl dgst -sha256 -hmac 'Gu5t9xGARNpq86cd98joQYCN3Cozk1qA'
    got = aksk_signature("AKIDz8krbsJ5yKBZQpn74WFkmLPx3", "Gu5t9xGARNpq86cd98joQYCN3Cozk1qA", "bob", "1686036760")
    assert got == "c8098fbb2ed5de24e0cc15f80ee090810ef499734fc93ca0dba49dc6c7b4e738"


@respx.mock
def test_an_aksk_login_sends_user_key_timestamp_and_signature_but_never_the_secret() -> None:
    route = respx.post(AKSK).mock(return_value=httpx.Response(200, json=login_answer(jwt(T0 + 3600))))
    auth = LoginSettings(
        kind="aksk",
        url=AC,
        user="bob",
        access_key="AKIDz8krbsJ5yKBZQpn74WFkmLPx3",
        secret_key="Gu5t9xGARNpq86cd98joQYCN3Cozk1qA",
    )

    async def go() -> str:
        async with httpx.AsyncClient() as http:
            return await login_tokens(http, Clock(1686036760.4), auth=auth).get()

    assert run(go()) == jwt(T0 + 3600)
    headers = route.calls.last.request.headers
    assert (headers["user"], headers["accessKey"], headers["timestamp"]) == (
        "bob",
        "AKIDz8krbsJ5yKBZQpn74WFkmLPx3",
        "1686036760",
    )
    assert headers["signature"] == "c8098fbb2ed5de24e0cc15f80ee090810ef499734fc93ca0dba49dc6c7b4e738"
    assert "Gu5t9x" not in str(route.calls.last.request.headers) + route.calls.last.request.content.decode()


@respx.mock
def test_a_password_login_sends_the_credentials_in_headers_and_publishes_the_expiry() -> None:
    route = respx.post(LOGIN).mock(return_value=httpx.Response(200, json=login_answer(jwt(T0 + 3600))))
    seen = Seen()

    async def go() -> str:
        async with httpx.AsyncClient() as http:
            return await login_tokens(http, Clock(), seen).get()

    assert run(go()) == jwt(T0 + 3600)
    headers = route.calls.last.request.headers
    assert (headers["user"], headers["password"], headers["orgId"]) == ("alice", PASSWORD, "org-1")
    assert seen.expiry == [T0 + 3600] and seen.refreshes == [("login", "success")]


# ---- renewal -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(lambda new: envelope(new), id="token string"),
        pytest.param(lambda new: login_answer(new), id="login-like list"),
        pytest.param(lambda new: login_answer(new, cluster_id=11250), id="list with numeric ids"),
    ],
)
@respx.mock
def test_renewal_happens_before_expiry_and_accepts_both_answer_shapes(answer: Any) -> None:
    first, second = jwt(T0 + 3600, "first"), jwt(T0 + 7200, "second")
    login = respx.post(LOGIN).mock(return_value=httpx.Response(200, json=login_answer(first)))
    renew = respx.post(RENEW).mock(return_value=httpx.Response(200, json=answer(second)))
    clock, seen = Clock(), Seen()

    async def go() -> list[str]:
        async with httpx.AsyncClient() as http:
            tokens = login_tokens(http, clock, seen)
            got = [await tokens.get()]
            clock.now = T0 + 3600 - 361  # more than 10% of the hour left: keep it
            got.append(await tokens.get())
            clock.now = T0 + 3600 - 359  # less than 10% left: renew now, before it expires
            got.append(await tokens.get())
            return got

    assert run(go()) == [first, first, second]
    assert login.call_count == 1 and renew.call_count == 1
    assert renew.calls.last.request.headers["token"] == first
    assert seen.refreshes == [("login", "success"), ("renew", "success")]
    assert seen.expiry == [T0 + 3600, T0 + 7200]


@pytest.mark.parametrize(("lifetime", "renew_after"), [(86400, 86400 - 8640), (900, 600), (60, 30)])
def test_the_renewal_point_is_10_percent_or_5_minutes_before_expiry_but_never_before_half_way(
    lifetime: float, renew_after: float
) -> None:
    """24 h: 10% (2.4 h) before; 15 min: 5 min before; 1 min: half-way, not at once."""
    with respx.mock:
        respx.post(LOGIN).mock(return_value=httpx.Response(200, json=login_answer(jwt(T0 + lifetime, "a"))))
        renew = respx.post(RENEW).mock(return_value=httpx.Response(200, json=envelope(jwt(T0 + 2 * lifetime, "b"))))
        clock = Clock()

        async def go() -> None:
            async with httpx.AsyncClient() as http:
                tokens = login_tokens(http, clock)
                await tokens.get()
                clock.now = T0 + renew_after - 1
                await tokens.get()
                assert renew.call_count == 0
                clock.now = T0 + renew_after
                await tokens.get()
                assert renew.call_count == 1

        run(go())


@respx.mock
def test_a_failed_renewal_falls_back_to_a_login() -> None:
    login = respx.post(LOGIN).mock(
        side_effect=[
            httpx.Response(200, json=login_answer(jwt(T0 + 600, "a"))),
            httpx.Response(200, json=login_answer(jwt(T0 + 1200, "b"))),
        ]
    )
    respx.post(RENEW).mock(return_value=httpx.Response(200, json=fixture("auth_fail.json")))
    clock, seen = Clock(), Seen()

    async def go() -> str:
        async with httpx.AsyncClient() as http:
            tokens = login_tokens(http, clock, seen)
            await tokens.get()
            clock.now = T0 + 400
            return await tokens.get()

    assert run(go()) == jwt(T0 + 1200, "b")
    assert login.call_count == 2
    assert seen.refreshes == [("login", "success"), ("renew", "failure"), ("login", "success")]


@respx.mock
def test_while_the_token_is_still_valid_a_failed_early_renewal_keeps_it(caplog: pytest.LogCaptureFixture) -> None:
    respx.post(LOGIN).mock(
        side_effect=[
            httpx.Response(200, json=login_answer(jwt(T0 + 600, "a"))),
            httpx.Response(503),
            httpx.Response(503),
        ]
    )
    respx.post(RENEW).mock(return_value=httpx.Response(503))
    clock = Clock()

    async def go() -> str:
        async with httpx.AsyncClient() as http:
            tokens = login_tokens(http, clock)
            await tokens.get()
            clock.now = T0 + 400
            return await tokens.get()

    with caplog.at_level(logging.WARNING):
        assert run(go()) == jwt(T0 + 600, "a")
    assert any("early token renewal failed" in r.getMessage() for r in caplog.records)


# ---- rejection mid-poll: single flight -----------------------------------------------------------


@pytest.mark.parametrize("renewal_works", [True, False], ids=["renewed", "logged in again"])
@respx.mock
def test_eight_requests_rejected_together_cause_one_refresh_and_are_retried(renewal_works: bool) -> None:
    old, new = jwt(T0 + 3600, "old"), jwt(T0 + 3600, "new")
    login = respx.post(LOGIN).mock(
        side_effect=[httpx.Response(200, json=login_answer(old)), httpx.Response(200, json=login_answer(new))]
    )
    renew = respx.post(RENEW).mock(
        return_value=httpx.Response(200, json=envelope(new) if renewal_works else fixture("auth_fail.json"))
    )

    async def jobs(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.01)  # all eight are in flight together
        if request.headers["token"] != new:
            return httpx.Response(200, json=fixture("auth_fail.json"))
        return httpx.Response(200, json=envelope({"total": 1, "list": [row(1)]}))

    hpc = respx.get(JOBS).mock(side_effect=jobs)

    async def go() -> list[Any]:
        async with httpx.AsyncClient() as http:
            tokens = login_tokens(http, Clock())
            client = SugonClient(HPC, tokens, Conversation(http, 5.0, retry_backoff=0))
            return await asyncio.gather(*(client.call("/hpc/openapi/v2/jobs", {"start": i}) for i in range(8)))

    answers = run(go())
    assert all(a["total"] == 1 for a in answers)
    assert renew.call_count == 1
    assert login.call_count == (1 if renewal_works else 2)  # the start-up login, plus one at most
    assert hpc.call_count == 16  # each request once with the old token, once with the new


@respx.mock
def test_a_static_token_that_is_rejected_is_not_retried() -> None:
    hpc = respx.get(JOBS).mock(return_value=httpx.Response(200, json=fixture("auth_fail.json")))

    async def go() -> None:
        async with httpx.AsyncClient() as http:
            await SugonClient(HPC, StaticToken("tok"), Conversation(http, 5.0, retry_backoff=0)).call(
                "/hpc/openapi/v2/jobs", {}
            )

    with pytest.raises(ApiAuthError):
        run(go())
    assert hpc.call_count == 1


# ---- wrong credentials ---------------------------------------------------------------------------


@respx.mock
def test_a_wrong_password_is_retried_at_most_once_per_interval_with_growing_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    login = respx.post(LOGIN).mock(return_value=httpx.Response(200, json=fixture("login_refused.json")))
    clock, seen = Clock(), Seen()
    outcomes: list[str] = []

    async def go() -> None:
        async with httpx.AsyncClient() as http:
            tokens = login_tokens(http, clock, seen, gap=60)
            for at in (0, 1, 59, 60, 61, 119, 180, 300, 420):  # seconds after the first try
                clock.now = T0 + at
                try:
                    await tokens.get()
                except ApiAuthError as exc:
                    outcomes.append(f"{at}:{login.call_count}:{'next attempt' in str(exc)}")

    with caplog.at_level(logging.DEBUG):
        run(go())
    # tries at 0, then 60 (gap 60), 180 (gap 120), 420 (gap 240): never more than one per interval
    assert [c.split(":")[1] for c in outcomes] == ["1", "1", "1", "2", "2", "2", "3", "3", "4"]
    assert login.call_count == 4
    assert seen.refreshes == [("login", "failure")] * 4
    messages = [r.getMessage() for r in caplog.records]
    assert any("用户名或密码错误" in m and "user alice" in m for m in messages)
    assert all(PASSWORD not in m for m in messages)


# ---- /center and the JWT -------------------------------------------------------------------------


def test_center_uses_the_first_enabled_url_and_normalises_it() -> None:
    center = parse_center(fixture("center.json")["data"])
    assert (center.hpc_url, center.user_name) == ("https://api02.hpccube.com:65106", "acct_alice")
    assert parse_center([fixture("center.json")["data"]]).hpc_url == "https://api02.hpccube.com:65106"
    with pytest.raises(ApiInvalidResponse, match="no enabled"):
        parse_center({"hpcUrls": [{"url": "https://x", "enable": "false"}]})


@pytest.mark.parametrize(
    ("payload", "expiry"),
    [
        ({"expireTime": "1686036760954"}, 1686036760.954),
        ({"expireTime": 1686036760954}, 1686036760.954),
        ({"exp": 1686036760}, 1686036760.0),
        ({"user": "x"}, None),
        ({"expireTime": "soon"}, None),
        ({"expireTime": "²"}, None),  # a digit to str.isdigit(), not to int()
        ({"expireTime": "9" * 5000}, None),  # more digits than int() takes
        # Times no float (or the time module) holds: absent, not an OverflowError.
        ({"expireTime": "9" * 4000}, None),
        ({"expireTime": 10**400}, None),
        ({"exp": 1e308}, None),
        ({"exp": float("inf")}, None),
        ({"expireTime": "253402300799000"}, 253402300799.0),  # 9999-12-31 23:59:59 UTC: the last one read
        ({"expireTime": "253402300800000", "exp": 1686036760}, 1686036760.0),
    ],
)
def test_jwt_expiry_reads_expire_time_in_milliseconds(payload: dict[str, Any], expiry: float | None) -> None:
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    assert jwt_expiry(f"eyJhbGciOiJIUzI1NiJ9.{body}.c2ln") == expiry


DEEP = base64.urlsafe_b64encode(b"[" * 100_000 + b"]" * 100_000).decode()  # JSON too deep for the decoder


@pytest.mark.parametrize("token", ["not-a-jwt", "a.b.c", "a.!!!.c", "", "a.W10.c", f"a.{DEEP}.c"])
def test_jwt_expiry_of_garbage_is_none(token: str) -> None:
    assert jwt_expiry(token) is None


def test_the_seed_documents_token_reads_as_expiring_in_june_2023() -> None:
    seed = (
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJjb21wdXRlVXNlciI6InNsdXJtdGVzdCIsImFjY291bnRTdGF0dXMiOiJUcmlhbCIsImNyZW"
        "F0b3IiOiJhYyIsInJvbGUiOiIxIiwiZXhwaXJlVGltZSI6IjE2ODU2MDAyMjU2MTUiLCJjbHVzdGVySWQiOiIxMTExMiIsImludm9rZXIiOiI2MD"
        "Q4Y2U3YmExNWMyYWYyZThjZWMxMjk5MWVjMTNjZiIsInVzZXIiOiJzbHVybXRlc3QiLCJ1c2VySWQiOiIxMTY1NTA0ODU0MSJ9.iLCKJ8PnDDK0_"
        "SA2NPYm1WozUG8D5ojwFqFhwaJCDc8"
    )
    assert jwt_expiry(seed) == 1685600225.615  # "expireTime":"1685600225615" in the payload


def test_a_static_token_near_expiry_warns_once_and_publishes_its_expiry(
    caplog: pytest.LogCaptureFixture, tmp_path: Any
) -> None:
    seen = Seen()
    near = jwt(T0 + 3 * 3600)
    with caplog.at_level(logging.WARNING):
        StaticToken(near, "kunshan", seen, clock=Clock())
        StaticToken(jwt(T0 + 30 * 86400), "far", seen, clock=Clock())
        path = tmp_path / "token"
        path.write_text(near)
        file_tokens = FileToken(str(path), "filed", seen, clock=Clock())
        run(file_tokens.get())
        path.write_text(near + "\n")  # rewritten, same token: no second warning
        run(file_tokens.get())
    warnings = [r.getMessage() for r in caplog.records if "expires at" in r.getMessage()]
    assert len(warnings) == 2 and warnings[0].startswith("cluster kunshan: the configured token expires at")
    assert warnings[1].startswith("cluster filed:")
    assert seen.expiry[:2] == [T0 + 3 * 3600, T0 + 30 * 86400]
    assert all(near not in r.getMessage() for r in caplog.records)


def test_reprs_hide_every_secret() -> None:
    auth = LoginSettings(kind="aksk", url=AC, user="bob", access_key="AK-s3cr3t", secret_key="SK-s3cr3t")
    platform = PlatformClient(AC, Conversation(httpx.AsyncClient(), 5.0))
    assert "s3cr3t" not in repr(auth) + repr(LoginToken("c", auth, platform, min_login_gap=60)) + repr(
        StaticToken("s3cr3t")
    )
    assert "pa55" not in repr(password_auth())
    assert "s3cr3t" not in repr(TokenSettings(cluster="c", token="tok-s3cr3t", login=auth))


@pytest.mark.parametrize("bad", ["with space", "line\nbreak", "tök"])
def test_a_token_that_cannot_be_sent_as_a_header_is_an_invalid_answer(bad: str) -> None:
    with pytest.raises(ApiInvalidResponse):
        parse_regions([{"clusterId": "11250", "clusterName": "x", "token": bad}])
    with pytest.raises(ApiInvalidResponse):
        parse_renewal(bad, "11250")
