"""Log lines as promslog writes them: logfmt and JSON, one line per record, fields from extra=, no secrets."""

from __future__ import annotations

import asyncio
import inspect
import io
import json
import logging
import re
import time
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest

from exporter.config import build_config
from exporter.logs import FORMATTERS, Fields, JsonFormatter, LogfmtFormatter, logfmt_value
from exporter.service import Exporter
from exporter.simulator import SimPlatform, Simulator

# 2026-11-29T17:40:01Z, from `date -u -d 2026-11-29T17:40:01Z +%s`
AT = 1795974001


def record(
    msg: str = "cluster %s: API unreachable", *args: object, level: int = logging.INFO, **fields: object
) -> logging.LogRecord:
    """A record of poller.py line 123 at 2026-11-29T17:40:01.123Z, with ``fields`` as extra= would set them."""
    rec = logging.LogRecord("exporter.poller", level, "/srv/exporter/poller.py", 123, msg, args or ("kunshan",), None)
    rec.created, rec.msecs = AT + 0.123, 123.0
    rec.__dict__.update(fields)
    return rec


def parse_logfmt(line: str) -> dict[str, str]:
    """An independent reading of one logfmt line: bare or double-quoted (JSON-escaped) values, nothing left over."""
    pair = r'([A-Za-z0-9_.-]+)=("(?:[^"\\]|\\.)*"|[^ "=]*)'
    assert re.fullmatch(rf"{pair}(?: {pair})*", line), line
    return {k: json.loads(v) if v.startswith('"') else v for k, v in re.findall(pair, line)}


def test_a_logfmt_line_looks_like_promslogs() -> None:
    line = LogfmtFormatter().format(record(cluster="kunshan", reason="timeout"))
    assert line == (
        "time=2026-11-29T17:40:01.123Z level=info source=poller.py:123 "
        'msg="cluster kunshan: API unreachable" cluster=kunshan reason=timeout'
    )


def test_a_json_line_has_the_same_keys_in_the_same_order() -> None:
    line = JsonFormatter().format(record(cluster="kunshan", reason="timeout", failures=3))
    assert line == (
        '{"time":"2026-11-29T17:40:01.123Z","level":"info","source":"poller.py:123",'
        '"msg":"cluster kunshan: API unreachable","cluster":"kunshan","reason":"timeout","failures":3}'
    )


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("kunshan", "kunshan"),
        ("用户名或密码错误", "用户名或密码错误"),
        (r"C:\x", r"C:\x"),
        ("", '""'),
        ("a b", '"a b"'),
        ("a=b", '"a=b"'),
        ('say "hi"', r'"say \"hi\""'),
        ("a b\\c", r'"a b\\c"'),
        ("one\ntwo", r'"one\ntwo"'),
        ("cr\rtab\t", r'"cr\rtab\t"'),
        ("\x1b[31mred", r'"\x1b[31mred"'),
        ("del\x7f", r'"del\x7f"'),
        ("ls\u2028ps\u2029", r'"ls\u2028ps\u2029"'),
        (3, "3"),
        (True, "true"),
        (None, '""'),
    ],
)
def test_logfmt_quotes_only_what_needs_it_and_escapes_quotes_backslashes_and_controls(
    value: object, written: str
) -> None:
    assert logfmt_value(value) == written


FORGED = 'kunshan level=error msg="forged"\ntime=2020-01-01T00:00:00.000Z level=error msg=forged\rx=1 \u2028y=2'


def test_a_field_with_newlines_quotes_and_equals_cannot_forge_a_line_or_a_key_in_logfmt() -> None:
    line = LogfmtFormatter().format(record("queue %s is new", FORGED, cluster=FORGED, queue=FORGED))
    assert "\n" not in line and "\r" not in line and len(line.splitlines()) == 1
    parsed = parse_logfmt(line)
    assert list(parsed) == ["time", "level", "source", "msg", "cluster", "queue"]
    assert parsed["cluster"] == parsed["queue"] == FORGED and parsed["msg"] == f"queue {FORGED} is new"
    assert parsed["level"] == "info"


def test_a_field_with_newlines_and_invisible_characters_stays_one_json_line_and_parses_back() -> None:
    odd = FORGED + "\x7f\x85\u200b\U000e0001"
    line = JsonFormatter().format(record("queue %s", odd, cluster=odd, nan=float("nan")))
    assert line.isprintable() and len(line.splitlines()) == 1
    parsed = json.loads(line)
    assert list(parsed) == ["time", "level", "source", "msg", "cluster", "nan"]
    assert parsed["cluster"] == odd and parsed["msg"] == f"queue {odd}" and parsed["nan"] == "nan"


def test_json_keeps_chinese_text_readable() -> None:
    # ensure_ascii=False: the API's own messages are Chinese; promslog writes UTF-8 too
    line = JsonFormatter().format(record("login failed: %s", "用户名或密码错误"))
    assert "用户名或密码错误" in line


def test_a_field_named_like_a_head_key_does_not_replace_it() -> None:
    parsed = parse_logfmt(LogfmtFormatter().format(record(level=logging.ERROR, time="then")))
    assert parsed["time"] == "2026-11-29T17:40:01.123Z" and parsed["field_time"] == "then"
    assert parsed["level"] == "error"


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, dict[str, io.StringIO]]]:
    """A logger writing each record in both formats."""
    logger = logging.getLogger("tests.test_logs")
    streams = {name: io.StringIO() for name in ("logfmt", "json")}
    handlers = [logging.StreamHandler(stream) for stream in streams.values()]
    for handler, name in zip(handlers, streams, strict=True):
        handler.setFormatter(FORMATTERS[name]())
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield logger, streams
    for handler in handlers:
        logger.removeHandler(handler)


def test_levels_are_promslogs_four_lower_case_names(captured: tuple[logging.Logger, dict[str, io.StringIO]]) -> None:
    logger, streams = captured
    for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL):
        logger.log(level, "x")
    assert [parse_logfmt(line)["level"] for line in streams["logfmt"].getvalue().splitlines()] == [
        "debug",
        "info",
        "warn",
        "error",
        "error",
    ]
    assert [json.loads(line)["level"] for line in streams["json"].getvalue().splitlines()] == [
        "debug",
        "info",
        "warn",
        "error",
        "error",
    ]


def test_source_is_the_callers_file_and_line_also_through_the_fields_adapter(
    captured: tuple[logging.Logger, dict[str, io.StringIO]],
) -> None:
    logger, streams = captured
    first = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
    logger.info("direct")
    Fields(logger, {"cluster": "a", "reason": "x"}).warning("adapted", extra={"reason": "timeout", "n": 2})
    lines = [parse_logfmt(line) for line in streams["logfmt"].getvalue().splitlines()]
    assert [line["source"] for line in lines] == [f"test_logs.py:{first}", f"test_logs.py:{first + 1}"]
    assert (lines[1]["cluster"], lines[1]["reason"], lines[1]["n"]) == ("a", "timeout", "2")
    assert json.loads(streams["json"].getvalue().splitlines()[1])["source"] == f"test_logs.py:{first + 1}"


def test_time_is_utc_with_milliseconds_whatever_the_local_zone(
    captured: tuple[logging.Logger, dict[str, io.StringIO]], monkeypatch: pytest.MonkeyPatch
) -> None:
    logger, streams = captured
    monkeypatch.setenv("TZ", "Asia/Shanghai")  # UTC+8: a local time would be 8 hours off
    time.tzset()
    try:
        logger.info("now")
    finally:
        monkeypatch.undo()
        time.tzset()
    for stamp in (
        parse_logfmt(streams["logfmt"].getvalue().strip())["time"],
        json.loads(streams["json"].getvalue())["time"],
    ):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp)
        logged = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
        assert abs((datetime.now(timezone.utc) - logged).total_seconds()) < 60


def test_a_traceback_is_one_escaped_exc_field(captured: tuple[logging.Logger, dict[str, io.StringIO]]) -> None:
    logger, streams = captured
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        logger.exception("serving %s failed", "/metrics", extra={"path": "/metrics"})
    line = streams["logfmt"].getvalue()
    assert line.count("\n") == 1 and line.endswith("\n")
    parsed = parse_logfmt(line.rstrip("\n"))
    assert parsed["msg"] == "serving /metrics failed" and parsed["path"] == "/metrics"
    assert parsed["exc"].startswith("Traceback (most recent call last):\n")
    assert parsed["exc"].endswith("ValueError: bad\nvalue")
    assert list(parsed) == ["time", "level", "source", "msg", "path", "exc"]
    (as_json,) = streams["json"].getvalue().splitlines()
    assert json.loads(as_json)["exc"] == parsed["exc"]


# ---- secrets -------------------------------------------------------------------------------------

TOKEN = "st4tic-t0ken-s3cret"
BAD_TOKEN = "b4d-t0ken-s3cret"
PASSWORD = "r1ght-passw0rd-s3cret"
WRONG_PASSWORD = "wr0ng-passw0rd-s3cret"
SECRET_KEY = "SK-s3cret-k3y"
SECRETS = (TOKEN, BAD_TOKEN, PASSWORD, WRONG_PASSWORD, SECRET_KEY, "pa ss", "pa%20ss", "pa\\u0020ss", "gw:")


@pytest.mark.parametrize("name", ["logfmt", "json"])
def test_no_secret_reaches_either_format_even_at_debug(name: str) -> None:
    """Tokens, passwords, a secret key and gateway credentials in URLs, with logins and tokens that fail."""
    sim = Simulator(
        token=TOKEN,
        jobs=60,
        max_page=25,
        platform=SimPlatform(passwords={"alice": PASSWORD}, org_id="org", access_keys={"AK-1": ("bob", SECRET_KEY)}),
        gateway_credentials=("gw", "pa ss"),
    )
    sim.serve()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(FORMATTERS[name]())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        url = "http://gw:pa%20ss@" + sim.url.removeprefix("http://")
        password = {"kind": "password", "url": url, "user": "alice", "org_id": "org"}
        aksk = {"kind": "aksk", "url": url, "user": "bob", "access_key": "AK-1", "secret_key": SECRET_KEY}
        config = build_config(
            {
                "page_size": 25,
                "clusters": [
                    {"name": "static", "api_url": url + "/hpc", "token": TOKEN},
                    {"name": "bad-token", "api_url": url + "/hpc", "token": BAD_TOKEN},
                    {"name": "login", "api_url": url, "auth": password | {"password": PASSWORD}},
                    {"name": "wrong-login", "auth": password | {"password": WRONG_PASSWORD}},
                    {"name": "aksk", "api_url": url, "auth": aksk},
                ],
            },
            environ={},
        )
        exporter = Exporter(config)
        asyncio.run(exporter.poll_all_once())
        up = {
            c: exporter.registry.get_sample_value("sugon_up", {"hpc_cluster": c}) for c in ("static", "login", "aksk")
        }
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        sim.stop()
    assert up == {"static": 1, "login": 1, "aksk": 1}
    out = stream.getvalue()
    lines = out.splitlines()
    read = [json.loads(line) for line in lines] if name == "json" else [parse_logfmt(line) for line in lines]
    messages = "\n".join(str(line["msg"]) for line in read)
    # the lines that name URLs, users and failed logins and tokens were there to leak
    assert "HTTP Request: GET" in messages
    assert any(line.get("cluster") == "wrong-login" and line.get("method") == "login" for line in read)
    assert any(line.get("cluster") == "bad-token" and line.get("reason") == "auth" for line in read)
    assert {"static", "login", "aksk"} <= {str(line.get("cluster")) for line in read}
    assert not [secret for secret in SECRETS if secret in out]
