"""Unknown jobStatus values, a few or a flood: one log line a poll, every such row counted, memory bounded."""

from __future__ import annotations

import gc
import logging
import tracemalloc
from typing import Any

import pytest
import respx

from tests.helpers import SCHEDULER
from tests.test_poller import Rig, serve

LONG = "x" * 200


def rows_with(statuses: list[Any]) -> list[dict[str, Any]]:
    """One running-shaped row per status, job ids 0, 1, ... (the same jobs poll after poll)."""
    return [
        {"jobId": str(i), "jobStatus": s, "queue": "debug", "user": "u", "procNumUsed": 1, "jobmanagerId": SCHEDULER}
        for i, s in enumerate(statuses)
    ]


def status_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    records = [r for r in caplog.records if "jobStatus" in r.getMessage()]
    caplog.clear()
    return records


@respx.mock
def test_unknown_statuses_give_one_log_line_a_poll_with_a_few_cut_examples_and_count_as_invalid_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = serve([], cap=5000)
    rig = Rig(page_size=5000)
    assert rig.value("sugon_invalid_fields_total", field="jobStatus") == 0  # there from the start
    caplog.set_level(logging.DEBUG, logger="exporter.poller")

    # 2 + 2000 + 1 rows whose status is none of the known ones (a null one among them), and one that is.
    server.rows = rows_with(["statZZ", "statZZ", "statR", *(f"{i}-{LONG}" for i in range(2000)), None])
    assert rig.poll()
    [line] = status_lines(caplog)
    message = line.getMessage()
    assert line.levelno == logging.WARNING
    assert "2003 rows" in message
    assert "'statZZ'" in message and f"'0-{LONG[:62]}'" in message and LONG[:63] not in message  # cut to 64
    assert "'4-" not in message  # five examples at most
    assert rig.value("sugon_invalid_fields_total", field="jobStatus") == 2003
    assert rig.value("sugon_jobs", queue="debug", status="unknown") == 2003  # the rows still count
    assert rig.value("sugon_jobs", queue="debug", status="running") == 1

    # Only a value the log has shown before: the line is a debug one.
    server.rows = rows_with(["statZZ", "statR"])
    assert rig.poll()
    [line] = status_lines(caplog)
    assert line.levelno == logging.DEBUG and "1 rows" in line.getMessage() and "'statZZ'" in line.getMessage()
    assert rig.value("sugon_invalid_fields_total", field="jobStatus") == 2004

    # New values again: a warning again.
    server.rows = rows_with(["statR", *(f"new-{i}" for i in range(3000))])
    assert rig.poll()
    [line] = status_lines(caplog)
    assert line.levelno == logging.WARNING and "3000 rows" in line.getMessage()
    assert rig.value("sugon_invalid_fields_total", field="jobStatus") == 5004

    # None at all: no line.
    server.rows = rows_with(["statR", "statQ"])
    assert rig.poll()
    assert status_lines(caplog) == []
    assert rig.value("sugon_invalid_fields_total", field="jobStatus") == 5004


@respx.mock
def test_polls_of_twenty_thousand_new_statuses_each_log_one_line_each_and_hold_no_more_memory_poll_after_poll(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = serve([], cap=20_000)
    rig = Rig(page_size=20_000)
    caplog.set_level(logging.DEBUG, logger="exporter.poller")
    lines = []
    held = []  # bytes that Python allocated since the first poll and still holds, after each later poll
    try:
        for poll in range(5):
            server.rows = rows_with([f"flood-{poll}-{i}" for i in range(20_000)])
            assert rig.poll()
            server.rows = []
            respx.reset()  # respx keeps every request and answer
            lines.append(len(status_lines(caplog)))
            gc.collect()
            if poll:
                held.append(tracemalloc.get_traced_memory()[0])
            else:
                tracemalloc.start()
    finally:
        tracemalloc.stop()
    assert lines == [1] * 5
    assert rig.value("sugon_invalid_fields_total", field="jobStatus") == 5 * 20_000
    # 20,000 statuses kept a poll would add well over 1 MB each time (20 MB with a warning each).
    assert held[-1] - held[0] < 1_000_000, held
