"""The exporter's own counters of a cluster, as a table: what was reported in, samples out. Every series the
cluster can have starts at 0; each report adds one (or what it says). Every expected value is worked out by hand."""

from __future__ import annotations

from exporter.groups.own import Own
from tests.polls import Samples

REASONS = ("timeout", "connection", "http_status", "invalid_response", "auth", "api_code")
FIELDS = ("jobRunTime", "jobStatus", "nodeUsed", "procNumUsed")


def samples(own: Own) -> dict[str, dict[object, float]]:
    """Every family's samples, keyed by their labels' values but hpc_cluster (one label: the value itself)."""
    s = Samples(own.families())
    labels = {
        "sugon_polls_total": ("result",),
        "sugon_api_requests_total": (),
        "sugon_api_errors_total": ("reason",),
        "sugon_invalid_records_total": (),
        "sugon_invalid_fields_total": ("field",),
        "sugon_rows_recovered_total": (),
        "sugon_departures_confirmed_total": (),
        "sugon_token_expiry_timestamp_seconds": (),
        "sugon_token_refreshes_total": ("method", "result"),
    }
    return {name: s.by(name, *by, nonzero=False) for name, by in labels.items()}


def test_every_series_of_a_cluster_starts_at_zero_and_the_token_expiry_is_absent_until_known() -> None:
    assert samples(Own("c")) == {
        "sugon_polls_total": {"success": 0, "failure": 0},
        "sugon_api_requests_total": {(): 0},
        "sugon_api_errors_total": dict.fromkeys(REASONS, 0),
        "sugon_invalid_records_total": {(): 0},
        "sugon_invalid_fields_total": dict.fromkeys(FIELDS, 0),
        "sugon_rows_recovered_total": {(): 0},
        "sugon_departures_confirmed_total": {(): 0},
        "sugon_token_expiry_timestamp_seconds": {},
        "sugon_token_refreshes_total": {},  # no login configured: no refreshes to count
    }
    refreshes = samples(Own("c", logs_in=True))["sugon_token_refreshes_total"]
    assert refreshes == {
        ("renew", "success"): 0,
        ("renew", "failure"): 0,
        ("login", "success"): 0,
        ("login", "failure"): 0,
    }


def test_each_report_counts_once_under_its_own_labels() -> None:
    own = Own("c", logs_in=True)
    for _ in range(3):
        own.request_sent()
    own.request_failed("timeout")
    own.request_failed("timeout")
    own.request_failed("auth")
    own.token_refresh("renew", "failure")
    own.token_refresh("login", "success")
    own.token_refresh("login", "success")
    own.token_expiry(1_700_003_600.0)
    own.polls["success"] += 2  # the poller's own figures
    own.invalid_fields["nodeUsed"] += 4
    own.invalid_records, own.recovered, own.departures = 5, 6, 7
    got = samples(own)
    assert got["sugon_api_requests_total"] == {(): 3}
    assert got["sugon_api_errors_total"] == {**dict.fromkeys(REASONS, 0), "timeout": 2, "auth": 1}
    assert got["sugon_token_refreshes_total"] == {
        ("renew", "success"): 0,
        ("renew", "failure"): 1,
        ("login", "success"): 2,
        ("login", "failure"): 0,
    }
    assert got["sugon_token_expiry_timestamp_seconds"] == {(): 1_700_003_600.0}
    assert got["sugon_polls_total"] == {"success": 2, "failure": 0}
    assert got["sugon_invalid_fields_total"] == {**dict.fromkeys(FIELDS, 0), "nodeUsed": 4}
    assert (got["sugon_invalid_records_total"], got["sugon_rows_recovered_total"]) == ({(): 5}, {(): 6})
    assert got["sugon_departures_confirmed_total"] == {(): 7}
    own.token_expiry(None)  # the token in use no longer says: the series goes
    assert samples(own)["sugon_token_expiry_timestamp_seconds"] == {}


def test_a_report_the_series_were_not_made_for_starts_its_own_at_one() -> None:
    own = Own("c")  # no login configured, yet a token renewed (a token file's token, say)
    own.token_refresh("renew", "success")
    own.request_failed("other")
    got = samples(own)
    assert got["sugon_token_refreshes_total"] == {("renew", "success"): 1}
    assert got["sugon_api_errors_total"] == {**dict.fromkeys(REASONS, 0), "other": 1}


def test_every_series_is_the_clusters_own() -> None:
    own = Own("kunshan", logs_in=True)
    own.token_expiry(1.0)
    families = own.families()
    assert all(family.samples for family in families)
    assert {s.labels.get("hpc_cluster") for f in families for s in f.samples} == {"kunshan"}


# The contract: the HELP of each family, as served before issue 25 (and typed out by hand here).
HELP = {
    "sugon_polls": ("counter", "Polls of the job list by result."),
    "sugon_api_requests": ("counter", "HTTP requests sent to the Sugon API."),
    "sugon_api_errors": (
        "counter",
        "Failed Sugon API requests by reason (timeout, connection, http_status, invalid_response, auth, api_code).",
    ),
    "sugon_invalid_records": (
        "counter",
        (
            "Job-list rows skipped as unusable (not an object, or no jobId), or whose job was counted with 0 CPUs "
            "because procNumUsed was above 10000000."
        ),
    ),
    "sugon_invalid_fields": (
        "counter",
        (
            "Job-list values that could not be read, by field (jobRunTime, jobStatus, nodeUsed, procNumUsed): the row "
            "still counts, the field does not (a jobStatus that is none of the known ones counts as status unknown)."
        ),
    ),
    "sugon_rows_recovered": (
        "counter",
        (
            "Job-list rows that a poll's pages skipped while the list moved, read by reading the stretch again or by "
            "looking the job up (strJobId)."
        ),
    ),
    "sugon_departures_confirmed": (
        "counter",
        (
            "Jobs confirmed to have left the job list: by a poll that read it without a gap, by a lookup of the job, or "
            "after 10 polls unread."
        ),
    ),
    "sugon_token_expiry_timestamp_seconds": (
        "gauge",
        "Expiry (expireTime) of the token in use, in Unix seconds, when the token shows it.",
    ),
    "sugon_token_refreshes": (
        "counter",
        "Token refreshes by method (renew = tokens/next, login) and result (success, failure).",
    ),
}


def test_each_family_has_its_help_and_type() -> None:
    families = Own("c", logs_in=True).families()
    assert {f.name: (f.type, f.documentation) for f in families} == HELP
