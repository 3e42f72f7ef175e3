"""The / status page: what it shows per cluster, HTML and JSON alike, escaped, with secrets masked."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections import Counter
from collections.abc import Mapping
from html.parser import HTMLParser
from typing import Any

import bcrypt
import httpx
import pytest
import respx
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from exporter.basicauth import BasicAuth
from exporter.config import build_config
from exporter.endpoints import make_app
from exporter.groups.base import Settings
from exporter.groups.own import Own
from exporter.groups.perjob import PerJob
from exporter.model import ClusterState, PollFailure, PollSettings, Served
from exporter.poller import ClusterPoller
from exporter.render import Exposition
from exporter.service import Exporter
from exporter.simulator import Scheduler, Simulator
from exporter.status import status_data, wants_json
from exporter.sugon.conversation import Conversation
from exporter.sugon.discovery import Endpoint
from exporter.sugon.joblist import SugonClient
from exporter.sugon.tokens import StaticToken
from exporter.values import without_secrets
from exporter.web import Handler, WebServer
from tests.helpers import SCHEDULER, PagedList, envelope, row
from tests.polls import Polls
from tests.test_group_perjob import read as read_perjob

NOW = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
SCRIPT = "<script>alert(1)</script>"
BASE = "https://hpc.example.com:65106"
JOBS = BASE + "/hpc/openapi/v2/jobs"


def served(taken_at: float, expires_at: float, by_queue: Mapping[tuple[str, str], int] | None = None) -> Served:
    """Job data as a poll publishes it (its sugon_jobs family); by default running 3+5, queued 2, held 1, and
    4 suspended + 1 completed + 0 exiting as other: 16 jobs."""
    jobs = GaugeMetricFamily("sugon_jobs", "Jobs.", labels=["hpc_cluster", "queue", "status"])
    for (queue, status), n in (
        by_queue
        or {
            ("debug", "running"): 3,
            ("debug", "queued"): 2,
            ("debug", "suspended"): 4,
            ("debug", "exiting"): 0,
            (SCRIPT, "held"): 1,
            (SCRIPT, "completed"): 1,
            ("batch", "running"): 5,
        }
    ).items():
        jobs.add_metric(["x", queue, status], n)
    return Served(taken_at=taken_at, expires_at=expires_at, families=(jobs,))


def states() -> dict[str, ClusterState]:
    failure = PollFailure("timeout", "no answer within 30s <img src=x onerror=alert(1)>", NOW - 20)
    return {
        "up": ClusterState(
            name="up",
            up=True,
            last_success=NOW - 75,
            poll_duration=1.5,
            jobs=served(NOW - 75, NOW + 225),
            pages=4,
            next_poll_at=NOW + 45,
            token_expiry=NOW + 7200.0,
        ),
        "down": ClusterState(
            name="down",
            up=False,
            last_success=NOW - 200,
            poll_duration=30.0,
            last_error="timeout",
            jobs=served(NOW - 200, NOW + 100),
            last_failure=failure,
            next_poll_at=NOW + 30,
            token_expiry=NOW - 60.0,
        ),
        "starting": ClusterState(name="starting"),
        "stale": ClusterState(
            name="stale",
            up=False,
            last_success=NOW - 4000,
            poll_duration=2.0,
            last_error="auth",
            jobs=served(NOW - 4000, NOW - 3700),
            last_failure=failure,
        ),
    }


def by_name(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in data["clusters"]}


def test_each_cluster_shows_its_state_ages_poll_and_jobs_by_status_at_the_clock_given() -> None:
    data = by_name(status_data(states(), NOW))
    up, down, starting, stale = data["up"], data["down"], data["starting"], data["stale"]
    assert [c["state"] for c in (up, down, starting, stale)] == ["up", "down", "starting", "stale"]
    assert up["last_success"] == NOW - 75 and up["last_success_age"] == 75
    assert up["last_poll_duration"] == 1.5 and up["last_poll_pages"] == 4
    assert up["jobs"] == {"running": 8, "queued": 2, "held": 1, "other": 5, "total": 16}
    assert up["queues"] == [
        {"queue": SCRIPT, "running": 0, "queued": 0, "held": 1, "other": 1, "total": 2},
        {"queue": "batch", "running": 5, "queued": 0, "held": 0, "other": 0, "total": 5},
        {"queue": "debug", "running": 3, "queued": 2, "held": 0, "other": 4, "total": 9},
    ]
    assert up["next_poll_at"] == NOW + 45 and up["next_poll_in"] == 45
    assert up["token_expiry"] == NOW + 7200 and up["token_expires_in"] == 7200
    assert up["last_error"] is None and up["job_data_expires_at"] == NOW + 225
    # Down: the last good data is still served (until NOW + 100), and the error is there with its age.
    assert down["last_success_age"] == 200 and down["job_data_expires_at"] == NOW + 100
    assert down["last_error"] == {
        "reason": "timeout",
        "message": "no answer within 30s <img src=x onerror=alert(1)>",
        "at": NOW - 20,
        "age": 20,
    }
    assert down["token_expires_in"] == -60 and down["last_poll_pages"] is None
    assert starting == {
        "name": "starting",
        "state": "starting",
        "job_data_expires_at": None,
        "last_success": None,
        "last_success_age": None,
        "last_poll_duration": None,
        "last_poll_pages": None,
        "jobs": None,
        "queues": [],
        "last_error": None,
        "token_expiry": None,
        "token_expires_in": None,
        "next_poll_at": None,
        "next_poll_in": None,
    }
    assert stale["last_success_age"] == 4000 and stale["jobs"] is not None and stale["next_poll_at"] is None


def test_a_cluster_that_succeeds_past_its_staleness_is_stale_too() -> None:
    """A poll still running when the data expires: /metrics leaves the job data out, so the page says stale."""
    state = ClusterState(
        name="slow", up=True, last_success=NOW - 301, poll_duration=1.0, jobs=served(NOW - 301, NOW - 1)
    )
    assert status_data({"slow": state}, NOW)["clusters"][0]["state"] == "stale"


class Cells(HTMLParser):
    """Every table row of a page as its cells' text; and every tag seen."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.tags: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def get(app: Handler, **headers: str) -> tuple[str, dict[str, str], bytes]:
    """GET / from a request handler: (status, headers, body)."""
    request = make_mocked_request("GET", "/", headers={k.replace("_", "-"): v for k, v in headers.items()})
    response = asyncio.run(app(request))
    assert isinstance(response, web.Response) and isinstance(response.body, bytes)
    return f"{response.status} {response.reason}", {k.lower(): v for k, v in response.headers.items()}, response.body


def app_of(cluster_states: Mapping[str, ClusterState], **options: Any) -> Any:
    store = Exposition(list(cluster_states))
    for state in cluster_states.values():
        store.publish(state)
    return make_app(store, clock=lambda: NOW, **options)


def test_the_html_shows_what_the_json_says_in_words_a_person_reads() -> None:
    app = app_of(states())
    _, _, raw = get(app, accept="application/json")
    data = by_name(json.loads(raw))
    status, headers, page = get(app)
    assert status == "200 OK" and headers["content-type"] == "text/html; charset=utf-8"
    cells = Cells()
    cells.feed(page.decode())
    header, *rows = cells.rows[:5]
    assert header[:4] == ["cluster", "state", "last success", "last poll"]
    shown = {r[0]: dict(zip(header, r)) for r in rows}
    assert set(shown) == set(data)
    for name, c in data.items():
        for key in ("running", "queued", "held", "other", "total"):
            assert shown[name][key] == (str(c["jobs"][key]) if c["jobs"] else "-")
    # The words, worked out by hand from NOW (22:13:20 UTC).
    assert shown["up"]["state"] == "up"
    assert shown["up"]["last success"] == "2023-11-14 22:12:05 UTC (1m 15s ago)"
    assert shown["up"]["last poll"] == "1.50s, 4 pages"
    assert shown["up"]["token expires"] == "2023-11-15 00:13:20 UTC (in 2h 0m)"
    assert shown["up"]["next poll"] == "2023-11-14 22:14:05 UTC (in 45s)"
    assert shown["up"]["last error"] == "none"
    assert shown["down"]["state"] == "down (timeout)job data of the last success served until 2023-11-14 22:15:00 UTC"
    assert shown["down"]["last error"] == (
        "timeout: no answer within 30s <img src=x onerror=alert(1)> (2023-11-14 22:13:00 UTC (20s ago))"
    )
    assert shown["down"]["token expires"] == "expired 2023-11-14 22:12:20 UTC (1m 0s ago)"
    assert shown["down"]["last poll"] == "30.00s"
    assert shown["starting"]["last success"] == "never" and shown["starting"]["next poll"] == "not scheduled"
    assert shown["starting"]["token expires"] == "not known" and shown["starting"]["last poll"] == "none"
    assert shown["stale"]["state"] == "stalejob data older than max_staleness: not served"
    assert shown["stale"]["last success"] == "2023-11-14 21:06:40 UTC (1h 6m ago)"
    # Jobs by queue: one table per cluster with job data, in the JSON's order.
    queue_rows = [r for r in cells.rows[5:] if r[0] != "queue"]
    assert queue_rows[:3] == [
        [q["queue"], *(str(q[k]) for k in ("running", "queued", "held", "other", "total"))]
        for q in data["up"]["queues"]
    ]


def test_a_cluster_started_with_saved_job_data_is_starting_with_its_last_success_and_the_data_while_served() -> None:
    """After a restart with a state file, before the first poll ends (issue 23, D16)."""
    restored = {
        "saved": ClusterState(name="saved", last_success=NOW - 100, jobs=served(NOW - 100, NOW + 200)),
        "too old": ClusterState(name="too old", last_success=NOW - 400, jobs=served(NOW - 400, NOW - 100)),
    }
    data = by_name(status_data(restored, NOW))
    assert data["saved"]["state"] == data["too old"]["state"] == "starting"
    assert data["saved"]["last_success_age"] == 100 and data["saved"]["job_data_expires_at"] == NOW + 200
    assert data["saved"]["jobs"] == {"running": 8, "queued": 2, "held": 1, "other": 5, "total": 16}
    cells = Cells()
    cells.feed(get(app_of(restored))[2].decode())
    header, *rows = cells.rows[:3]
    shown = {r[0]: dict(zip(header, r)) for r in rows}
    assert shown["saved"]["state"] == "startingjob data of the last success served until 2023-11-14 22:16:40 UTC"
    assert shown["saved"]["last success"] == "2023-11-14 22:11:40 UTC (1m 40s ago)"
    assert shown["too old"]["state"] == "startingjob data older than max_staleness: not served"


def test_a_queue_name_and_an_error_with_html_in_them_show_as_text() -> None:
    _, _, page = get(app_of(states()))
    text = page.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "<script" not in text and "<img" not in text
    cells = Cells()
    cells.feed(text)
    assert "script" not in cells.tags and "img" not in cells.tags
    assert any(SCRIPT in row for row in cells.rows)  # read back as the text it is


def test_cluster_names_are_escaped_and_the_metrics_link_is_relative() -> None:
    _, _, page = get(app_of({'"><b>x': ClusterState('"><b>x')}))
    assert b"&quot;&gt;&lt;b&gt;x" in page and b"<b>" not in page
    assert b'href="./metrics"' in page


# ESC (a colour and a window title), NUL, BEL, CR, DEL and C1's CSI: what a terminal acts on.
CONTROLS = "\x1b[31mred\x1b]0;title\x07 \x00nul \rcr \x7fdel \x9b31m"
RAW_CONTROLS = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]|\xc2[\x80-\x9f]")  # tab and newline allowed


def test_control_characters_of_a_queue_name_and_an_error_are_shown_escaped_not_sent_raw() -> None:
    failure = PollFailure("api_code", "API code 1: " + CONTROLS, NOW - 20)
    jobs = served(NOW - 75, NOW + 225, {("q" + CONTROLS, "running"): 1})
    state = ClusterState(
        name="k\x1b[2J",
        up=False,
        last_success=NOW - 75,
        poll_duration=1.0,
        last_error="api_code",
        jobs=jobs,
        last_failure=failure,
    )
    app = app_of({state.name: state})
    _, _, page = get(app)
    assert RAW_CONTROLS.search(page) is None
    shown = r"\x1b[31mred\x1b]0;title\x07 \x00nul \x0dcr \x7fdel \x9b31m"
    text = page.decode()
    assert "API code 1: " + shown in text and "q" + shown in text and r"k\x1b[2J" in text
    _, _, as_json = get(app, accept="application/json")
    assert RAW_CONTROLS.search(as_json) is None
    data = json.loads(as_json)["clusters"][0]  # JSON escapes them, and reads back as they were
    assert data["name"] == state.name and data["last_error"]["message"] == failure.message
    assert data["queues"][0]["queue"] == "q" + CONTROLS


@pytest.mark.parametrize(
    ("accept", "json_wanted"),
    [
        (None, False),
        ("", False),
        ("*/*", False),
        ("text/html", False),
        ("application/json", True),
        ("Application/JSON", True),
        ("application/*", True),
        ("application/json, text/html;q=0.9", True),
        ("text/html, application/json;q=0.9", False),
        ("text/html;q=0.1, application/json;q=0.2", True),
        ("application/json;q=0, */*", False),
        ("text/*, application/json;q=0.5", False),
        ("text/html;q=0.5, */*", True),  # */* gives JSON 1, text/html its own 0.5
        ("text/html;q=0.1, */*;q=0.5, application/json;q=0.3", True),  # the most specific range counts
        ("application/json;q=x", False),
        ("text/html, application/json", False),  # a tie is HTML
    ],
)
def test_json_is_answered_when_the_accept_header_prefers_it(accept: str | None, json_wanted: bool) -> None:
    assert wants_json(accept) is json_wanted


def test_json_comes_as_application_json_and_varies_by_accept() -> None:
    app = app_of(states())
    _, headers, body = get(app, accept="application/json")
    assert headers["content-type"] == "application/json" and headers["vary"] == "Accept"
    data = json.loads(body)
    assert data["now"] == NOW and data["metrics_path"] == "/metrics"
    assert [c["name"] for c in data["clusters"]] == ["up", "down", "starting", "stale"]
    assert get(app)[1]["vary"] == "Accept"


def test_basic_auth_still_guards_the_status_page() -> None:
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4))
    app = app_of(states(), auth=BasicAuth({"prom": hashed}))
    assert get(app)[0].startswith("401")
    assert get(app, accept="application/json")[0].startswith("401")
    good = "Basic " + base64.b64encode(b"prom:pw").decode()
    status, _, body = get(app, authorization=good, accept="application/json")
    assert status == "200 OK" and json.loads(body)["clusters"][0]["name"] == "up"


# ---- masking secrets in the error message ---------------------------------------------------------------

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyIjoiYWxpY2UifQ.c2lnbmF0dXJlLXZhbHVl"


@pytest.mark.parametrize(
    ("message", "secret", "masked"),
    [
        ("cannot reach https://alice:hunter2@gw.example:8443/hpc", "hunter2", "https://***@gw.example:8443/hpc"),
        ("via http://a%40b:p@ss@gw/x", "a%40b", "http://***@gw/x"),
        ("API code 10008: token " + JWT + " expired", "eyJhbGciOiJIUzI1NiJ9", "token *** expired"),
        ("sent Authorization: Basic YWxpY2U6aHVudGVyMg== back", "YWxpY2U6aHVudGVyMg", "Authorization: Basic ***"),
        ("header authorization=Bearer abc.def.ghi", "abc.def", "authorization=Bearer ***"),
        ('API code 1: {"token": "s3cr3t-value", "x": 1}', "s3cr3t-value", '{"token": "***", "x": 1}'),
        ("API code 1: accessToken=opaque42&page=2", "opaque42", "accessToken=***&page=2"),
        ("password: hunter2 is wrong", "hunter2", "password: *** is wrong"),
        ("API code 1: token：中文密钥", "中文密钥", "token：***"),
        ("a Bearer dGhlIHRva2Vu said no", "dGhlIHRva2Vu", "a Bearer *** said no"),
        ("token 0123456789abcdef0123456789abcdef refused", "0123456789abcdef", "token *** refused"),
    ],
)
def test_secrets_in_a_message_are_masked(message: str, secret: str, masked: str) -> None:
    shown = without_secrets(message)
    assert secret not in shown and masked in shown


@pytest.mark.parametrize(
    "message",
    [
        "HTTP 401 from a gateway that asks for Basic credentials: give them in the URL",
        "token_file /etc/sugon/token: No such file or directory",
        "password_file /run/secrets/pw: file is empty",
        "login failed (API code 10003: wrong password); next attempt in 60s",
        "start=100 answered total 5000001, above max_jobs (5000000); raise max_jobs",
        "HTTP 302 redirect to https://new.example/hpc: redirects are not followed",
    ],
)
def test_messages_without_secrets_are_kept_as_they_are(message: str) -> None:
    assert without_secrets(message) == message


def test_a_long_message_is_cut_after_masking() -> None:
    shown = without_secrets("x " * 400 + JWT, limit=100)
    assert len(shown) == 100 and shown.endswith("...")


class Counting(Exposition):
    """An exposition that counts what is published to it."""

    publishes = 0

    def publish(self, state: ClusterState) -> None:
        self.publishes += 1
        super().publish(state)


class Rig:
    """A poller over respx with a hand clock, a hand monotonic clock and a sleep that stops it."""

    def __init__(self, page_size: int = 100) -> None:
        self.now, self.mono = [NOW], [0.0]
        self.own = Own("kunshan")
        self.store = Counting(["kunshan"], clock=lambda: self.now[0])
        self.http = httpx.AsyncClient()
        client = SugonClient(BASE, StaticToken("tok"), Conversation(self.http, 5.0, self.own, retry_backoff=0))
        self.poller = ClusterPoller(
            "kunshan",
            client,
            Endpoint("kunshan", client, (SCHEDULER,)),
            self.store,
            self.own,
            PollSettings(interval=60, page_size=page_size, concurrency=2, max_staleness=300),
            Settings(cluster="kunshan", per_user=False),
            clock=lambda: self.now[0],
            monotonic=lambda: self.mono[0],
            sleep=self._sleep,
        )
        self.store.publishes = 0  # the state before any poll is published at the start
        self.sleeps: list[float] = []

    @property
    def publishes(self) -> int:
        return self.store.publishes

    async def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now[0] += seconds
        self.mono[0] += seconds
        if len(self.sleeps) == 2:
            raise asyncio.CancelledError

    def page(self, accept: str | None = None) -> str:
        app = make_app(self.store, clock=lambda: self.now[0])
        return get(app, **({"accept": accept} if accept else {}))[2].decode()


@respx.mock
def test_a_poll_publishes_its_page_count_and_the_run_loop_the_next_poll_without_a_publish_of_its_own() -> None:
    server = PagedList([row(i, "statR" if i % 2 else "statH", SCRIPT) for i in range(7)], cap=3)

    async def slow(request: httpx.Request) -> httpx.Response:
        rig.mono[0] += 3.0  # each page takes 3 s of the poll: 12 s for four pages (of 3 rows, sharing one)
        rig.now[0] += 3.0
        return await server(request)

    respx.get(JOBS).mock(side_effect=slow)
    rig = Rig(page_size=3)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(rig.poller.run())
    assert rig.sleeps == [48.0, 48.0] and rig.publishes == 2  # one publish per poll, next_poll_at in it
    data = json.loads(rig.page("application/json"))["clusters"][0]
    # Second poll: started at NOW + 60, its pages took 12 s, the next one is due at NOW + 120.
    assert data["last_poll_pages"] == 4 and data["next_poll_at"] == NOW + 120
    assert data["jobs"] == {"running": 3, "queued": 0, "held": 4, "other": 0, "total": 7}
    assert data["state"] == "up" and data["last_success_age"] == 48


@respx.mock
def test_a_failed_polls_message_reaches_the_page_without_its_secrets() -> None:
    msg = f"token {JWT} of https://alice:hunter2@gw.example/ rejected; Authorization: Basic YWxpY2U6aHVudGVy"
    respx.get(JOBS).mock(return_value=httpx.Response(200, json=envelope(None, code="10010", msg=msg)))
    rig = Rig()
    assert not asyncio.run(rig.poller.poll_once())
    html_page, json_page = rig.page(), rig.page("application/json")
    for shown in (html_page, json_page):
        for secret in (JWT.split(".")[0], "alice", "hunter2", "YWxpY2U6aHVudGVy"):
            assert secret not in shown
    error = json.loads(json_page)["clusters"][0]["last_error"]
    assert error["reason"] == "api_code" and error["at"] == NOW
    assert error["message"] == (
        "API code 10010: token *** of https://***@gw.example/ rejected; Authorization: Basic ***"
    )


@respx.mock
def test_the_page_shows_the_expiry_of_the_token_as_the_client_last_told_it() -> None:
    respx.get(JOBS).mock(return_value=httpx.Response(503))
    rig = Rig()
    rig.own.token_expiry(NOW + 600)  # as the token provider reports it
    assert not asyncio.run(rig.poller.poll_once())
    assert json.loads(rig.page("application/json"))["clusters"][0]["token_expires_in"] == 600
    rig.own.token_expiry(None)
    assert not asyncio.run(rig.poller.poll_once())
    assert json.loads(rig.page("application/json"))["clusters"][0]["token_expires_in"] is None


# ---- end to end: the simulator over real HTTP --------------------------------------------------------


def test_the_page_shows_a_real_polls_page_count_and_the_job_counts_metrics_has() -> None:
    sim = Simulator(
        token="int-token", schedulers=[Scheduler("11", "A"), Scheduler("12", "B")], jobs=500, max_page=40, seed=7
    )
    sim.serve()
    config = build_config(
        {"page_size": 100, "concurrency": 3, "clusters": [{"name": "sim", "api_url": sim.url, "token": "int-token"}]},
        environ={},
    )
    exporter = Exporter(config, retry_backoff=0)
    app = make_app(exporter.exposition)
    server = WebServer(app, "127.0.0.1", 0)
    server.start()
    try:
        assert asyncio.run(exporter.poll_all_once())
        url = f"http://127.0.0.1:{server.port}"
        data = httpx.get(url + "/", headers={"Accept": "application/json"}).json()["clusters"][0]
        page = httpx.get(url + "/").text
        metrics = httpx.get(url + "/metrics").text
    finally:
        server.stop()
        sim.stop()
    # Pages of at most 40 rows (the simulator's cap), per scheduler, sharing one row with the next; and every
    # request but the scheduler discovery was a page.
    sizes = [len(sim.rows(s)) for s in ("11", "12")]
    assert data["last_poll_pages"] == sum(1 if n <= 40 else -(-n // 39) for n in sizes) == sim.requests - 1
    assert f", {data['last_poll_pages']} pages" in page
    by_status: Counter[str] = Counter()
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "sugon_jobs" and sample.labels["hpc_cluster"] == "sim":
                by_status[sample.labels["status"]] += int(sample.value)
    others = sum(n for status, n in by_status.items() if status not in ("running", "queued", "held"))
    assert data["jobs"] == {
        "running": by_status["running"],
        "queued": by_status["queued"],
        "held": by_status["held"],
        "other": others,
        "total": sum(sizes),
    }
    assert data["state"] == "up" and data["jobs"]["running"] > 0 and data["jobs"]["queued"] > 0


HOSTILE_NAME = '<script>alert("1")</script>\n作业 \x1b[31m'  # a jobName with HTML, a newline, CJK and ESC


def with_per_job(per_job: bool = True, taken_at: float = NOW - 75) -> ClusterState:
    """A cluster up with the default job data and the per-job group's families of three jobs, with room for two:
    alice's running job 42 of scheduler 1 (hostile name), bob's queued job 7 of scheduler 2, and job 3 folded
    (queued too, but older than job 7); the job data taken at ``taken_at``, served for 300 s."""
    jobs = [
        read_perjob(
            42, "statR", user="alice", procNumUsed=8, nodeUsed="n[1-2]", jobRunTime="01:02:03", jobName=HOSTILE_NAME
        ),
        read_perjob(7, "statQ", scheduler="2", user="bob", procNumUsed=16),
        read_perjob(3, "statQ", user="carol"),
    ]
    families = Polls(groups=[PerJob], per_job=per_job, max_job_series=2).poll(jobs, taken_at).families
    default = served(taken_at, taken_at + 300)
    return ClusterState(
        name="mine",
        up=True,
        last_success=taken_at,
        jobs=Served(taken_at=taken_at, expires_at=taken_at + 300, families=(*default.families, *families)),
    )


# The two jobs with series, worked out by hand: sorted by scheduler and job id; 01:02:03 is 3723 s, n[1-2] 2 nodes.
PER_JOB = {
    "jobs": [
        {
            "job_id": "42",
            "scheduler": "1",
            "name": HOSTILE_NAME,
            "user": "alice",
            "queue": "q",
            "status": "running",
            "cpus": 8,
            "nodes": 2,
            "run_seconds": 3723,
        },
        {
            "job_id": "7",
            "scheduler": "2",
            "name": "",
            "user": "bob",
            "queue": "q",
            "status": "queued",
            "cpus": 16,
            "nodes": 0,
            "run_seconds": 0,
        },
    ],
    "folded": 1,
}


def test_the_json_lists_each_clusters_per_job_jobs_and_how_many_are_folded() -> None:
    app = app_of({"mine": with_per_job(), **states()})
    status, headers, raw = get(app, accept="application/json")
    assert status == "200 OK" and headers["content-type"] == "application/json"
    data = by_name(json.loads(raw))
    assert data["mine"]["per_job"] == PER_JOB
    assert data["mine"]["jobs"] == data["up"]["jobs"]  # the rest of the cluster's entry as without per-job series
    assert b"\\u001b[31m" in raw and b"\x1b" not in raw  # ESC escaped, and read back as the name is


def test_without_per_job_series_a_cluster_has_no_per_job_entry() -> None:
    """per_job off: the status JSON is the contract it was; the per-job group then gives no family at all."""
    off = with_per_job(per_job=False)
    for c in (*status_data(states(), NOW)["clusters"], *status_data({"mine": off}, NOW)["clusters"]):
        assert list(c) == [
            "name",
            "state",
            "job_data_expires_at",
            "last_success",
            "last_success_age",
            "last_poll_duration",
            "last_poll_pages",
            "jobs",
            "queues",
            "last_error",
            "token_expiry",
            "token_expires_in",
            "next_poll_at",
            "next_poll_in",
        ]
    _, _, page = get(app_of({"mine": off}))
    assert b"per-job" not in page


def test_a_stale_clusters_per_job_jobs_are_listed_with_its_job_counts_as_the_page_shows_them() -> None:
    """Past max_staleness the page still shows the last job data, under the state "stale"; the jobs with it."""
    (c,) = status_data({"mine": with_per_job(taken_at=NOW - 4000)}, NOW)["clusters"]
    assert c["state"] == "stale" and c["per_job"] == PER_JOB


def test_the_html_lists_each_job_escaped_with_its_run_time_in_words() -> None:
    _, _, page = get(app_of({"mine": with_per_job()}))
    text = page.decode()
    assert "<script" not in text and "&lt;script&gt;alert(&quot;1&quot;)&lt;/script&gt;" in text
    assert not RAW_CONTROLS.search(page)
    cells = Cells()
    cells.feed(text)
    assert "script" not in cells.tags
    start = cells.rows.index(["job id", "scheduler", "name", "user", "queue", "status", "CPUs", "nodes", "run time"])
    assert cells.rows[start + 1 :] == [
        ["42", "1", HOSTILE_NAME.replace("\x1b", "\\x1b"), "alice", "q", "running", "8", "2", "1h 2m"],
        ["7", "2", "", "bob", "q", "queued", "16", "0", "0s"],
    ]
    assert "mine: jobs with per-job series (2, 1 folded)" in text
