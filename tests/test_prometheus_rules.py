"""The shipped Prometheus files, checked with the real promtool: syntax, unit tests, and completeness."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.tools import find_tool

ROOT = Path(__file__).parent.parent
DEPLOY = ROOT / "deploy" / "prometheus"
TESTS = Path(__file__).parent / "prometheus"
ALERTS = yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"][0]["rules"]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = find_tool("promtool", "apt-get install prometheus")
    return subprocess.run([exe, *args], capture_output=True, text=True, check=False, timeout=120)


def test_the_rules_and_the_scrape_config_pass_promtool_check() -> None:
    result = promtool("check", "rules", str(DEPLOY / "rules.yml"), str(DEPLOY / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    result = promtool("check", "config", str(DEPLOY / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(TESTS / "alerts_test.yml"), str(TESTS / "rules_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_severity_summary_description_and_a_for() -> None:
    names = [a["alert"] for a in ALERTS]
    assert set(names) >= {
        "SugonQueueBacklog",
        "SugonQueuedCpusHigh",
        "SugonJobsWaitingLong",
        "SugonClusterDown",
        "SugonDataStale",
        "SugonExporterDown",
        "SugonTokenExpiringSoon",
        "SugonApiErrors",
        "SugonExporterMemoryGrowing",
    }
    for alert in ALERTS:
        assert alert["labels"]["severity"] in ("warning", "critical"), alert["alert"]
        assert alert["annotations"]["summary"] and alert["annotations"]["description"], alert["alert"]
        assert alert.get("for"), alert["alert"]


def test_every_alert_is_unit_tested_firing() -> None:
    tests = yaml.safe_load((TESTS / "alerts_test.yml").read_text())["tests"]
    fired = {case["alertname"] for t in tests for case in t.get("alert_rule_test", []) if case["exp_alerts"]}
    assert fired == {a["alert"] for a in ALERTS}
