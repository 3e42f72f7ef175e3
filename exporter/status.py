"""The / page: each cluster's state, last poll, jobs (one by one too, with per_job), last error, token expiry and
next poll, as JSON or HTML; every value escaped, no script, no raw control character (upstream names may hold
them; a terminal would act on them)."""

from __future__ import annotations

import html
import json
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from exporter import __version__
from exporter.model import ClusterState, Served

STATUS_COLUMNS = ("running", "queued", "held")  # every other status counts as "other"
JOB_KEYS = (*STATUS_COLUMNS, "other", "total")
JSON_TYPE = "application/json"
# C0 controls but tab and newline, DEL and the C1 controls: shown in the page as \x1b and the like. JSON escapes
# C0 itself; DEL and C1 are legal in a JSON string raw, so they are escaped too (the same value decoded).
_HTML_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0))}
_JSON_CONTROLS = {c: f"\\u{c:04x}" for c in range(0x7F, 0xA0)}


def _jobs(by_status: Mapping[str, int]) -> dict[str, int]:
    out = {key: by_status.get(key, 0) for key in STATUS_COLUMNS}
    total = sum(by_status.values())
    return {**out, "other": total - sum(out.values()), "total": total}


def _job_counts(jobs: Served) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Jobs by status of the whole cluster and of each queue, by name, as its sugon_jobs family has them."""
    queues: dict[str, Counter[str]] = {}
    for family in jobs.families:
        if family.name == "sugon_jobs":
            for sample in family.samples:
                queues.setdefault(sample.labels["queue"], Counter())[sample.labels["status"]] += int(sample.value)
    return _jobs(sum(queues.values(), Counter())), [{"queue": q, **_jobs(queues[q])} for q in sorted(queues)]


def _per_job(jobs: Served) -> dict[str, Any] | None:
    """The jobs with per-job series and the number folded, as the sugon_per_job_* families have them; None
    when they have none (per_job off)."""
    families = {f.name: f for f in jobs.families if f.name.startswith("sugon_per_job_")}
    if "sugon_per_job_info" not in families:
        return None
    listed: dict[tuple[str, str], dict[str, Any]] = {}
    for sample in families["sugon_per_job_info"].samples:
        labels = sample.labels
        listed[labels["scheduler"], labels["job_id"]] = {
            "job_id": labels["job_id"],
            "scheduler": labels["scheduler"],
            "name": labels["job_name"],
            "user": labels["user"],
            "queue": labels["queue"],
            "status": None,
            "cpus": None,
            "nodes": None,
            "run_seconds": None,
        }
    for key in ("status", "cpus", "nodes", "run_seconds"):
        for sample in families[f"sugon_per_job_{key}"].samples:
            job = listed.get((sample.labels["scheduler"], sample.labels["job_id"]))
            if job is not None:
                job[key] = sample.labels["status"] if key == "status" else int(sample.value)
    folded = sum(int(sample.value) for sample in families["sugon_per_job_folded"].samples)
    return {"jobs": list(listed.values()), "folded": folded}


def _age(later: float | None, earlier: float | None) -> float | None:
    """Seconds from ``earlier`` to ``later``, rounded to milliseconds; None if either is."""
    return None if later is None or earlier is None else round(later - earlier, 3)


def _cluster(state: ClusterState, now: float) -> dict[str, Any]:
    served, failure = state.jobs, state.last_failure
    jobs, queues = _job_counts(served) if served is not None else (None, [])
    # starting: no poll has ended (job data from the state file may be served); stale: the last good job data is
    # past max_staleness (/metrics leaves it out); up or down: the last poll succeeded or failed.
    if state.up is None:
        shown = "starting"
    elif served is not None and served.stale(now):
        shown = "stale"
    else:
        shown = "up" if state.up else "down"
    cluster = {
        "name": state.name,
        "state": shown,
        "job_data_expires_at": served.expires_at if served is not None else None,
        "last_success": state.last_success,
        "last_success_age": _age(now, state.last_success),
        "last_poll_duration": state.poll_duration,
        "last_poll_pages": state.pages,
        "jobs": jobs,
        "queues": queues,
        "last_error": None
        if failure is None
        else {"reason": failure.reason, "message": failure.message, "at": failure.at, "age": _age(now, failure.at)},
        "token_expiry": state.token_expiry,
        "token_expires_in": _age(state.token_expiry, now),
        "next_poll_at": state.next_poll_at,
        "next_poll_in": _age(state.next_poll_at, now),
    }
    per_job = _per_job(served) if served is not None else None
    return cluster if per_job is None else {**cluster, "per_job": per_job}


def status_data(states: Mapping[str, ClusterState], now: float, metrics_path: str = "/metrics") -> dict[str, Any]:
    """The status of every cluster at ``now`` as JSON types, times in Unix seconds (keys: README, Running it)."""
    clusters = [_cluster(state, now) for state in states.values()]
    return {"version": __version__, "now": now, "metrics_path": metrics_path, "clusters": clusters}


def _span(seconds: float) -> str:
    """A duration for people: 45s, 3m 20s, 2h 5m, 4d 1h."""
    s = int(abs(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def _stamp(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def _when(at: float | None, now: float, never: str = "never") -> str:
    """A time in UTC with how long before or after ``now`` it is."""
    if at is None:
        return never
    return f"{_stamp(at)} ({_span(now - at)} ago)" if at <= now else f"{_stamp(at)} (in {_span(at - now)})"


def _cell(text: object, cls: str = "") -> str:
    return f'<td class="{cls}">{html.escape(str(text))}</td>' if cls else f"<td>{html.escape(str(text))}</td>"


def _row(c: dict[str, Any], now: float) -> str:
    state, until, error = c["state"], c["job_data_expires_at"], c["last_error"]
    note = ""
    if state in ("down", "starting") and until is not None and now < until:  # starting: from the state file
        note = "<br><small>job data of the last success served until " + _stamp(until) + "</small>"
    elif state == "stale" or state == "starting" and until is not None:
        note = "<br><small>job data older than max_staleness: not served</small>"
    shown = f"down ({error['reason']})" if state == "down" and error is not None else state
    duration, pages, jobs = c["last_poll_duration"], c["last_poll_pages"], c["jobs"] or {}
    poll = "none" if duration is None else f"{duration:.2f}s" + ("" if pages is None else f", {pages} pages")
    failed = "none" if error is None else f"{error['reason']}: {error['message']} ({_when(error['at'], now)})"
    expiry = c["token_expiry"]
    token = ("expired " if expiry is not None and expiry <= now else "") + _when(expiry, now, "not known")
    next_poll = _when(c["next_poll_at"], now, "not scheduled")
    cells = [_cell(c["name"]), f'<td class="{state}">{html.escape(shown)}{note}</td>']
    cells += [_cell(text) for text in (_when(c["last_success"], now), poll)]
    cells += [_cell(jobs.get(key, "-"), "n") for key in JOB_KEYS] + [_cell(text) for text in (failed, token, next_poll)]
    return "<tr>" + "".join(cells) + "</tr>"


def _queues(c: dict[str, Any]) -> str:
    if not c["queues"]:
        return ""
    head = "".join(f"<th>{key}</th>" for key in ("queue", *JOB_KEYS))
    rows = "".join(
        "<tr>" + _cell(q["queue"]) + "".join(_cell(q[key], "n") for key in JOB_KEYS) + "</tr>" for q in c["queues"]
    )
    return f"<h2>{html.escape(c['name'])}: jobs by queue</h2><table><tr>{head}</tr>{rows}</table>"


PER_JOB_HEAD = ("job id", "scheduler", "name", "user", "queue", "status", "CPUs", "nodes", "run time")


def _per_job_table(c: dict[str, Any]) -> str:
    if "per_job" not in c:
        return ""
    per_job = c["per_job"]
    head = "".join(f"<th>{h}</th>" for h in PER_JOB_HEAD)
    rows = "".join(
        "<tr>"
        + "".join(_cell(j[key]) for key in ("job_id", "scheduler", "name", "user", "queue", "status"))
        + _cell(j["cpus"], "n")
        + _cell(j["nodes"], "n")
        + _cell("-" if j["run_seconds"] is None else _span(j["run_seconds"]), "n")
        + "</tr>"
        for j in per_job["jobs"]
    )
    title = f"{html.escape(c['name'])}: jobs with per-job series ({len(per_job['jobs'])}, {per_job['folded']} folded)"
    return f"<h2>{title}</h2><table><tr>{head}</tr>{rows}</table>"


_STYLE = (
    "body{font-family:sans-serif;margin:1em 2em}table{border-collapse:collapse;margin-bottom:1em}"
    "th,td{border:1px solid #bbb;padding:.25em .5em;text-align:left;vertical-align:top}td.n{text-align:right}"
    ".up{color:#070}.down{color:#b00}.stale{color:#a50}.starting{color:#555}"
)
_HEAD = ("cluster", "state", "last success", "last poll", *JOB_KEYS, "last error", "token expires", "next poll")


def _html(data: dict[str, Any]) -> bytes:
    """The page of ``status_data``'s data: every value escaped; links are relative, for a proxy's path prefix."""
    metrics = "./" + data["metrics_path"].lstrip("/")
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>sugon-exporter</title>'
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>sugon-exporter {html.escape(data['version'])}</h1>"
        "<p>Prometheus exporter for the Sugon HPC OpenAPI job list. "
        f'<a href="{html.escape(metrics)}">Metrics</a> · the same as JSON: <code>Accept: application/json</code>. '
        f"Shown at {html.escape(_when(data['now'], data['now']))}.</p>"
        "<table><tr>"
        + "".join(f"<th>{h}</th>" for h in _HEAD)
        + "</tr>"
        + "".join(_row(c, data["now"]) for c in data["clusters"])
        + "</table>"
        + "".join(_queues(c) + _per_job_table(c) for c in data["clusters"])
        + "</body></html>"
    )
    return page.translate(_HTML_CONTROLS).encode("utf-8")


def wants_json(accept: str | None) -> bool:
    """Whether Accept prefers application/json to text/html (a tie is HTML), by the most specific range's q-value."""
    ranges = []
    for part in (accept or "").split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for name, _, value in (param.partition("=") for param in params):
            if name.strip().lower() == "q":
                try:
                    q = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    q = 0.0  # a q-value that is none: the range is not counted
        ranges.append((media.lower(), q))

    def quality(offer: str) -> float:
        ranks = {offer: 2, offer.split("/")[0] + "/*": 1, "*/*": 0}
        return max(((ranks[media], q) for media, q in ranges if media in ranks), default=(-1, 0.0))[1]

    json_q = quality(JSON_TYPE)
    return json_q > 0 and json_q > quality("text/html")


def status_answer(
    states: Mapping[str, ClusterState], accept: str | None, now: float, metrics_path: str = "/metrics"
) -> tuple[bytes, str]:
    """(body, content type) of / for a request's Accept header: JSON when preferred, else HTML."""
    data = status_data(states, now, metrics_path)
    if wants_json(accept):
        return json.dumps(data, ensure_ascii=False).translate(_JSON_CONTROLS).encode("utf-8"), JSON_TYPE
    return _html(data), "text/html; charset=utf-8"
