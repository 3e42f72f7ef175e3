"""Command line: argument parsing, logging set-up, wiring, signal handling; the only place that exits."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import queue
import re
import signal
import sys
import time

from prometheus_client import generate_latest

from exporter import __version__, build_facts
from exporter.basicauth import BasicAuth
from exporter.config import DEFAULTS, Config, ConfigError, load_config, parse_listen_address
from exporter.config.webconfig import WebConfig, load_web_config
from exporter.endpoints import OPEN_PATHS, TokenBucket, make_app
from exporter.logs import FORMATTERS, LEVELS
from exporter.service import Exporter
from exporter.web import Handler, ListenError, WebServer

log = logging.getLogger("exporter")

_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@/-]*")  # RFC 3986 path characters, bar %-escapes


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sugon-exporter",
        description="Prometheus exporter for the Sugon / SCNet HPC OpenAPI v2 real-time job list.",
    )
    p.add_argument("--config", metavar="FILE", help="YAML configuration file")
    # Each help text that has a default ends with it, as "(default: ...)".
    p.add_argument(
        "--web.listen-address",
        dest="listen_address",
        action="append",
        metavar="ADDR",
        help="host:port to serve on; repeat it to serve on several (default: listen_address of the configuration, "
        f"{DEFAULTS['listen_address']})",
    )
    p.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="FILE",
        help="TLS and basic auth for the HTTP server, in the exporter-toolkit format (overrides web_config_file)",
    )
    p.add_argument(
        "--web.telemetry-path",
        dest="telemetry_path",
        metavar="PATH",
        default="/metrics",
        type=_telemetry_path,
        help="the path the metrics are served on (default: %(default)s)",
    )
    p.add_argument(
        "--log.level",
        dest="log_level",
        default="info",
        choices=list(LEVELS),
        type=str.lower,
        help="only log lines of this level and above (default: %(default)s)",
    )
    # The spelling before --log.level, kept for one release; it also takes "warning".
    p.add_argument(
        "--log-level", dest="old_log_level", choices=[*LEVELS, "warning"], type=str.lower, help=argparse.SUPPRESS
    )
    p.add_argument(
        "--log.format",
        dest="log_format",
        default="logfmt",
        choices=list(FORMATTERS),
        help="logfmt, or json: one object per line (default: %(default)s)",
    )
    p.add_argument("--check-config", action="store_true", help="validate the configuration and exit 0 (valid) or 1")
    p.add_argument(
        "--once", action="store_true", help="poll every cluster once, print the exposition, exit 1 if any failed"
    )
    p.add_argument("--demo", action="store_true", help="serve metrics from the built-in simulator; needs no config")
    p.add_argument("--version", action="store_true", help="print the version, the Python version and the platform")
    return p


def _telemetry_path(value: str) -> str:
    """--web.telemetry-path: an absolute path that no other page of the exporter uses."""
    if not _PATH.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"expected a URL path like /metrics (starting with /, no query, spaces or %-escapes), got {value!r}"
        )
    if value == "/" or value in OPEN_PATHS:
        raise argparse.ArgumentTypeError(f"{value} is the exporter's own page; choose another path like /metrics")
    return value


def _setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(FORMATTERS[fmt]())
    logging.basicConfig(level=LEVELS[level], handlers=[handler])
    if level != "debug":
        # httpx logs every request at INFO; that is debug detail for an exporter.
        logging.getLogger("httpx").setLevel(logging.WARNING)


def _warn(web: WebConfig) -> None:
    for warning in web.warnings:
        log.warning("%s", warning, extra={"warning": warning})


def _web_config(args: argparse.Namespace, config: Config) -> WebConfig:
    web_file = args.web_config_file or config.web_config_file
    return load_web_config(web_file) if web_file else WebConfig()


class _Daemon:
    """The serving process: one Exporter and the web server, and the reload that SIGHUP asks for."""

    def __init__(self, args: argparse.Namespace, config: Config, web: WebConfig) -> None:
        self.args = args
        self.listen: list[str] = args.listen_address or [config.listen_address]  # the flags, or else the config
        self.exporter = Exporter(config)
        self.clusters = ", ".join(c.name for c in config.clusters)
        self.web = web

    def _app(self, web: WebConfig) -> Handler:
        """The exporter's pages, with ``web``'s basic auth and rate limit."""
        auth = BasicAuth(web.users) if web.users else None
        limiter = TokenBucket(web.rate_limit.interval, web.rate_limit.burst) if web.rate_limit else None
        return make_app(self.exporter.exposition, auth, self.args.telemetry_path, limiter=limiter)

    def reload(self, server: WebServer) -> None:
        """Read the configuration again and apply it; an invalid one is logged in full and changes nothing."""
        if not self.args.config:
            log.info("received SIGHUP: nothing to reload (--demo has no configuration file)")
            return
        ok = False
        try:
            config = load_config(self.args.config)
            web = _web_config(self.args, config)
            if (self.args.listen_address or [config.listen_address]) != self.listen:
                serving = ", ".join(self.listen)
                message = "listen_address changed: it takes effect at the next start; still serving %s"
                log.warning(message, serving, extra={"listen_address": serving})
            if self.exporter.can_reload(config):
                summary = self.exporter.reload(config)
            else:  # per_user or per_job changed: /metrics has other families now
                changed = "per_user" if config.per_user != self.exporter.config.per_user else "per_job"
                old, self.exporter = self.exporter, Exporter(config)
                self.exporter.start(server.loop)
                old.stop()
                summary = f"{changed} changed: every cluster starts afresh"
            server.reconfigure(self._app(web), web.tls.context if web.tls else None, web.headers)
            _warn(web)
            ok = True
            log.info("configuration reloaded (%s)", summary)
        except ConfigError as exc:
            for line in exc.errors:
                log.error(
                    "reload failed, the running configuration stays: config error: %s", line, extra={"error": line}
                )
        except Exception:  # a bug must not end the daemon; what was applied stays applied
            log.exception("reload failed")
        self.exporter.exposition.reload_result(ok, time.time())

    def serve(self) -> int:
        addresses = [parse_listen_address(address) for address in self.listen]
        try:
            tls = self.web.tls.context if self.web.tls else None
            server = WebServer(
                self._app(self.web), *addresses[0], tls, more_addresses=addresses[1:], headers=self.web.headers
            )
        except ListenError as exc:
            given, reason = self.listen[addresses.index(exc.address)], exc.strerror or str(exc)
            log.error("cannot listen on %s: %s", given, reason, extra={"listen_address": given, "reason": reason})
            return 1
        signals: queue.SimpleQueue[int] = queue.SimpleQueue()  # put() may be called from a signal handler
        for handled in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(handled, lambda number, _frame: signals.put(number))
        server.start()
        self.exporter.start(server.loop)
        scheme = "https" if self.web.tls else "http"
        guarded = " (basic auth)" if self.web.users else ""
        urls = ", ".join(f"{scheme}://{address}{self.args.telemetry_path}" for address in self.listen)
        extra = {"version": __version__, "url": urls, "clusters": self.clusters}
        log.info("sugon-exporter %s serving %s%s for %s", __version__, urls, guarded, self.clusters, extra=extra)
        while (signum := signals.get()) == signal.SIGHUP:
            self.reload(server)
        name = signal.Signals(signum).name
        log.info("received %s, stopping", name, extra={"signal": name})
        self.exporter.stop()
        server.stop()
        return 0


def main(argv: list[str] | None = None) -> int:
    """Run the exporter; returns the process exit code."""
    args = _parser().parse_args(argv)
    if args.version:  # the facts that sugon_exporter_build_info's labels carry, as Prometheus's exporters print them
        facts = build_facts()
        print(f"sugon-exporter, version {facts['version']}")
        print(f"  python version: {facts['python_version']} ({facts['python_implementation']})")
        print(f"  platform:       {facts['platform']}")
        return 0
    level = args.log_level if args.old_log_level is None else args.old_log_level.replace("warning", "warn")
    _setup_logging(level, args.log_format)
    if args.old_log_level is not None:
        log.warning(
            "--log-level is deprecated and goes in the next release; use --log.level", extra={"flag": "--log-level"}
        )
    with contextlib.ExitStack() as cleanup:
        try:
            errors = []
            for value in args.listen_address or ():
                try:
                    parse_listen_address(value)
                except ValueError as exc:
                    errors.append(f"--web.listen-address: {exc}")
            if errors:
                raise ConfigError(errors)
            if args.demo and args.config:
                print("sugon-exporter: --demo needs no --config; give one or the other", file=sys.stderr)
                return 2
            if not args.demo and not args.config:
                print("sugon-exporter: --config FILE is required (or try --demo)", file=sys.stderr)
                return 2
            if args.demo:
                from exporter.simulator.demo import start_demo  # only --demo needs the simulator

                config, simulators = start_demo()
                for simulator in simulators:
                    cleanup.callback(simulator.stop)
            else:
                config = load_config(args.config)
            web = _web_config(args, config)
        except ConfigError as exc:
            for line in exc.errors:
                print(f"config error: {line}", file=sys.stderr)
            return 1
        _warn(web)
        if args.check_config:
            names = ", ".join(c.name for c in config.clusters)
            print(f"{args.config or 'the demo configuration'}: OK, {len(config.clusters)} cluster(s): {names}")
            return 0
        if args.once:
            exporter = Exporter(config)
            ok = asyncio.run(exporter.poll_all_once())
            sys.stdout.write(generate_latest(exporter.registry).decode("utf-8"))
            return 0 if ok else 1
        return _Daemon(args, config, web).serve()
