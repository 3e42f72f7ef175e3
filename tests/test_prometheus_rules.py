"""The shipped Prometheus files, checked with the real promtool: syntax, unit tests, and completeness; each
alert links its runbook section of the README."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from tests.test_readme_zh import EN, ZH, anchors, github_anchor
from tests.tools import find_tool

ROOT = Path(__file__).parent.parent
DEPLOY = ROOT / "deploy" / "prometheus"
TESTS = Path(__file__).parent / "prometheus"
ALERTS = yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"][0]["rules"]
# The runbook_url of every alert: its own section of the English README, as GitHub renders it.
README_URL = "https://github.com/sugon-exporter/sugon-exporter/blob/main/README.md"


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
        "SugonJobFailed",
        "SugonJobCompleted",
    }
    for alert in ALERTS:
        info = alert["alert"] == "SugonJobCompleted"  # a notice, not a problem: off in the README's routing
        assert alert["labels"]["severity"] in (("info",) if info else ("warning", "critical")), alert["alert"]
        assert alert["annotations"]["summary"] and alert["annotations"]["description"], alert["alert"]
        assert alert.get("for"), alert["alert"]


def test_every_alert_is_unit_tested_firing() -> None:
    tests = yaml.safe_load((TESTS / "alerts_test.yml").read_text())["tests"]
    fired = {case["alertname"] for t in tests for case in t.get("alert_rule_test", []) if case["exp_alerts"]}
    assert fired == {a["alert"] for a in ALERTS}


def runbook_anchors(text: str, heading: str) -> set[str]:
    """The anchors of the headings in ``text``'s section ``heading`` (a level-3 heading line)."""
    assert f"\n{heading}\n" in text, f"no section {heading!r}"
    section = text.split(f"\n{heading}\n", 1)[1]
    return anchors(re.split(r"^#{1,3} ", section, maxsplit=1, flags=re.MULTILINE)[0])


def test_every_alert_links_its_own_section_of_the_readmes_runbook() -> None:
    assert github_anchor("SugonQueueBacklog") == "sugonqueuebacklog"
    english = runbook_anchors(EN, "### What to do when an alert fires")
    chinese = runbook_anchors(ZH, "### 告警触发后怎么办")
    for alert in ALERTS:
        anchor = github_anchor(alert["alert"])
        assert alert["annotations"].get("runbook_url") == f"{README_URL}#{anchor}", alert["alert"]
        assert anchor in english, f"README.md's runbook has no heading for {alert['alert']}"
        assert anchor in chinese, f"README.zh-CN.md's runbook has no heading for {alert['alert']}"
