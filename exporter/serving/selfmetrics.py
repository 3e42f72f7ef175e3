"""The exporter's own metrics (direct instrumentation on an explicit registry): polls, requests, errors, tokens."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from exporter.model import INVALID_FIELDS, REASONS


class PollMetrics:
    """The exporter's own counters (direct instrumentation), registered on an explicit registry.

    Change them only through the methods here and of ClusterObserver: each bumps ``version``, which tells
    /metrics when its rendering of these counters is out of date.
    """

    def __init__(self, registry: CollectorRegistry, started: float = 0.0) -> None:
        self.version = 0
        self.polls = Counter(
            "sugon_polls", "Polls of the job list by result.", ["hpc_cluster", "result"], registry=registry
        )
        self.requests = Counter(
            "sugon_api_requests", "HTTP requests sent to the Sugon API.", ["hpc_cluster"], registry=registry
        )
        self.errors = Counter(
            "sugon_api_errors",
            "Failed Sugon API requests by reason (timeout, connection, http_status, invalid_response, auth, api_code).",
            ["hpc_cluster", "reason"],
            registry=registry,
        )
        self.invalid_records = Counter(
            "sugon_invalid_records",
            "Job-list rows skipped as unusable (not an object, or no jobId), or whose job was counted with 0 CPUs "
            "because procNumUsed was above 10000000.",
            ["hpc_cluster"],
            registry=registry,
        )
        self.invalid_fields = Counter(
            "sugon_invalid_fields",
            "Job-list values that could not be read, by field (jobRunTime, jobStatus, nodeUsed, procNumUsed): the row "
            "still counts, the field does not (a jobStatus that is none of the known ones counts as status unknown).",
            ["hpc_cluster", "field"],
            registry=registry,
        )
        self.recovered = Counter(
            "sugon_rows_recovered",
            "Job-list rows that a poll's pages skipped while the list moved, read by reading the stretch again or "
            "by looking the job up (strJobId).",
            ["hpc_cluster"],
            registry=registry,
        )
        self.departed = Counter(
            "sugon_departures_confirmed",
            "Jobs confirmed to have left the job list: by a poll that read it without a gap, by a lookup of the job, "
            "or after 10 polls unread.",
            ["hpc_cluster"],
            registry=registry,
        )
        self.token_expiry = Gauge(
            "sugon_token_expiry_timestamp_seconds",
            "Expiry (expireTime) of the token in use, in Unix seconds, when the token shows it.",
            ["hpc_cluster"],
            registry=registry,
        )
        self.token_refreshes = Counter(
            "sugon_token_refreshes",
            "Token refreshes by method (renew = tokens/next, login) and result (success, failure).",
            ["hpc_cluster", "method", "result"],
            registry=registry,
        )

        self.reload_ok = Gauge(
            "sugon_config_last_reload_successful",
            "1 if the last configuration reload (SIGHUP) succeeded, else 0; 1 from the start.",
            registry=registry,
        )
        self.reload_time = Gauge(
            "sugon_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration reload, or of the start.",
            registry=registry,
        )
        self._expiries: dict[str, float] = {}  # cluster → its token's expiry, as the gauge has it
        self.reload_result(True, started)

    def reload_result(self, ok: bool, now: float) -> None:
        """A configuration reload (or the start, which loaded the configuration) succeeded or failed."""
        self.reload_ok.set(1 if ok else 0)
        if ok:
            self.reload_time.set(now)
        self.changed()

    def forget(self, cluster: str) -> None:
        """Remove a cluster's series: it has left the configuration."""
        label_sets: list[tuple[Any, tuple[str, ...]]] = [
            (self.requests, (cluster,)),
            (self.invalid_records, (cluster,)),
            (self.recovered, (cluster,)),
            (self.departed, (cluster,)),
            (self.token_expiry, (cluster,)),
        ]
        for result in ("success", "failure"):
            label_sets.append((self.polls, (cluster, result)))
            label_sets += [(self.token_refreshes, (cluster, method, result)) for method in ("renew", "login")]
        label_sets += [(self.errors, (cluster, reason)) for reason in REASONS]
        label_sets += [(self.invalid_fields, (cluster, field)) for field in INVALID_FIELDS]
        for metric, labels in label_sets:
            try:
                metric.remove(*labels)
            except KeyError:  # never created
                pass
        self._expiries.pop(cluster, None)
        self.changed()

    def token_expires_at(self, cluster: str) -> float | None:
        """When ``cluster``'s token in use expires (Unix seconds), or None when it does not say (for the status
        page; any thread may ask)."""
        return self._expiries.get(cluster)

    def set_token_expiry(self, cluster: str, timestamp: float | None) -> None:
        """``cluster``'s token in use expires at ``timestamp`` (None: it does not say)."""
        if timestamp is None:
            if self._expiries.pop(cluster, None) is not None:
                self.token_expiry.remove(cluster)
        else:
            self.token_expiry.labels(cluster).set(timestamp)
            self._expiries[cluster] = timestamp
        self.changed()

    def changed(self) -> None:
        """One of the counters changed (single writer: the event loop's thread)."""
        self.version += 1

    def poll_result(self, cluster: str, result: str) -> None:
        """One more poll of ``cluster`` ended, as success or failure."""
        self.polls.labels(cluster, result).inc()
        self.changed()

    def invalid_rows(self, cluster: str, rows: int) -> None:
        """``rows`` more rows of ``cluster``'s list were skipped as unusable."""
        self.invalid_records.labels(cluster).inc(rows)
        self.changed()

    def invalid_values(self, cluster: str, field: str, values: int) -> None:
        """``values`` more values of ``field`` (one of INVALID_FIELDS) in ``cluster``'s list could not be read."""
        self.invalid_fields.labels(cluster, field).inc(values)
        self.changed()

    def rows_recovered(self, cluster: str, rows: int) -> None:
        """``rows`` more rows of ``cluster``'s list that paging had skipped were read."""
        if rows:
            self.recovered.labels(cluster).inc(rows)
            self.changed()

    def departures(self, cluster: str, jobs: int) -> None:
        """``jobs`` more jobs were confirmed to have left ``cluster``'s list."""
        if jobs:
            self.departed.labels(cluster).inc(jobs)
            self.changed()

    def observer(self, cluster: str, logs_in: bool = False) -> ClusterObserver:
        """A per-cluster observer of requests and tokens; creates every label set so each series starts at 0."""
        for result in ("success", "failure"):
            self.polls.labels(cluster, result)
            if logs_in:
                for method in ("renew", "login"):
                    self.token_refreshes.labels(cluster, method, result)
        for reason in REASONS:
            self.errors.labels(cluster, reason)
        self.invalid_records.labels(cluster)
        self.recovered.labels(cluster)
        self.departed.labels(cluster)
        for field in INVALID_FIELDS:
            self.invalid_fields.labels(cluster, field)
        self.changed()
        return ClusterObserver(self, cluster)


class ClusterObserver:
    """Counts one cluster's requests and failed attempts."""

    def __init__(self, metrics: PollMetrics, cluster: str) -> None:
        self._requests = metrics.requests.labels(cluster)
        self._metrics = metrics
        self._cluster = cluster

    def request_sent(self) -> None:
        """One more HTTP request."""
        self._requests.inc()
        self._metrics.changed()

    def request_failed(self, reason: str) -> None:
        """One more failed attempt, by reason."""
        self._metrics.errors.labels(self._cluster, reason).inc()
        self._metrics.changed()

    def token_expiry(self, timestamp: float | None) -> None:
        """The token in use expires at ``timestamp`` (None: it does not say)."""
        self._metrics.set_token_expiry(self._cluster, timestamp)

    def token_refresh(self, method: str, result: str) -> None:
        """One more renewal or login, by result."""
        self._metrics.token_refreshes.labels(self._cluster, method, result).inc()
        self._metrics.changed()
