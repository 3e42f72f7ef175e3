"""The exporter's own counters of one cluster: polls, API requests and errors, tokens, what the list could not
give, e.g.::

    sugon_polls_total{hpc_cluster="kunshan",result="success"} 42.0
    sugon_api_errors_total{hpc_cluster="kunshan",reason="timeout"} 1.0

They change with every request, failed polls included; /metrics shows them as of the cluster's last poll.
Every series the cluster can have starts at 0.
"""

from __future__ import annotations

import logging

from prometheus_client.core import Metric

from exporter.groups.base import counter, gauge
from exporter.model import INVALID_FIELDS, REASONS

log = logging.getLogger("exporter.poller")

RESULTS = ("success", "failure")
SHOWN_STATUSES = 100  # unknown jobStatus values the log remembers having shown: the first ones, no more
EXAMPLES = 5  # unknown jobStatus values a poll's log line shows, each cut to EXAMPLE_LENGTH characters
EXAMPLE_LENGTH = 64
METHODS = ("renew", "login")


class Own:
    """One cluster's own counters. The API client reports requests and tokens (request_sent, request_failed,
    token_expiry, token_refresh); the poller reports the rest."""

    def __init__(self, cluster: str, logs_in: bool = False) -> None:
        self.cluster = cluster
        self.polls = dict.fromkeys(RESULTS, 0)
        self.requests = 0
        self.errors = dict.fromkeys(REASONS, 0)
        self.invalid_records = 0
        self.invalid_fields = dict.fromkeys(INVALID_FIELDS, 0)
        self.recovered = 0
        self.departures = 0
        self.expiry: float | None = None
        self.refreshes = {(m, r): 0 for m in METHODS for r in RESULTS} if logs_in else {}
        self._shown_statuses: set[str] = set()

    def unknown_statuses(self, values: list[str], rows: int) -> None:
        """A poll's ``rows`` whose jobStatus maps to no status, in one log line with a few of ``values``: a warning
        if it shows a value the log has not shown before (of the first SHOWN_STATUSES), else a debug line."""
        values = [v[:EXAMPLE_LENGTH] for v in values]
        fresh = [v for v in values if v not in self._shown_statuses]
        examples = list(dict.fromkeys([*fresh, *values]))[:EXAMPLES]
        for shown in examples[: max(SHOWN_STATUSES - len(self._shown_statuses), 0)]:
            self._shown_statuses.add(shown)
        log.log(
            logging.WARNING if fresh else logging.DEBUG,
            "cluster %s: %d rows with an unknown jobStatus counted as unknown, such as %s",
            self.cluster,
            rows,
            ", ".join(map(repr, examples)),
            extra={"cluster": self.cluster, "rows": rows},
        )

    def request_sent(self) -> None:
        """One more HTTP request."""
        self.requests += 1

    def request_failed(self, reason: str) -> None:
        """One more failed attempt, by reason (one of REASONS)."""
        self.errors[reason] = self.errors.get(reason, 0) + 1

    def token_expiry(self, timestamp: float | None) -> None:
        """The token in use expires at ``timestamp`` (None: it does not say)."""
        self.expiry = timestamp

    def token_refresh(self, method: str, result: str) -> None:
        """One more renewal or login, by result."""
        self.refreshes[(method, result)] = self.refreshes.get((method, result), 0) + 1

    def families(self) -> list[Metric]:
        cluster, one = self.cluster, ["hpc_cluster"]
        polls = counter("sugon_polls", "Polls of the job list by result.", ["hpc_cluster", "result"])
        for result, n in self.polls.items():
            polls.add_metric([cluster, result], n)
        requests = counter("sugon_api_requests", "HTTP requests sent to the Sugon API.", one)
        requests.add_metric([cluster], self.requests)
        errors = counter(
            "sugon_api_errors",
            "Failed Sugon API requests by reason (timeout, connection, http_status, invalid_response, auth, api_code).",
            ["hpc_cluster", "reason"],
        )
        for reason, n in self.errors.items():
            errors.add_metric([cluster, reason], n)
        records = counter(
            "sugon_invalid_records",
            "Job-list rows skipped as unusable (not an object, or no jobId), or whose job was counted with 0 CPUs "
            "because procNumUsed was above 10000000.",
            one,
        )
        records.add_metric([cluster], self.invalid_records)
        fields = counter(
            "sugon_invalid_fields",
            "Job-list values that could not be read, by field (jobRunTime, jobStatus, nodeUsed, procNumUsed): the row "
            "still counts, the field does not (a jobStatus that is none of the known ones counts as status unknown).",
            ["hpc_cluster", "field"],
        )
        for field, n in self.invalid_fields.items():
            fields.add_metric([cluster, field], n)
        recovered = counter(
            "sugon_rows_recovered",
            "Job-list rows that a poll's pages skipped while the list moved, read by reading the stretch again or "
            "by looking the job up (strJobId).",
            one,
        )
        recovered.add_metric([cluster], self.recovered)
        departed = counter(
            "sugon_departures_confirmed",
            "Jobs confirmed to have left the job list: by a poll that read it without a gap, by a lookup of the job, "
            "or after 10 polls unread.",
            one,
        )
        departed.add_metric([cluster], self.departures)
        expiry = gauge(
            "sugon_token_expiry_timestamp_seconds",
            "Expiry (expireTime) of the token in use, in Unix seconds, when the token shows it.",
            one,
        )
        if self.expiry is not None:
            expiry.add_metric([cluster], self.expiry)
        refreshes = counter(
            "sugon_token_refreshes",
            "Token refreshes by method (renew = tokens/next, login) and result (success, failure).",
            ["hpc_cluster", "method", "result"],
        )
        for (method, result), n in self.refreshes.items():
            refreshes.add_metric([cluster, method, result], n)
        return [polls, requests, errors, records, fields, recovered, departed, expiry, refreshes]
