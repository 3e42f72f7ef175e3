"""What the README promises: its PromQL passes promtool, it names every metric the exporter emits, the
recording rules it names are the shipped ones, its config for a first real run passes --check-config as
written, and CI runs its test command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import polled_families
from tests.tools import find_tool

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_readmes_metric_tables_name_every_metric_family_the_exporter_registers() -> None:
    names = set()
    for family in polled_families():
        names.add(family.name + ("_total" if family.type == "counter" else ""))
    names = {"sugon_exporter_build_info" if n == "sugon_exporter_build" else n for n in names}
    first_cells = re.findall(r"^\| (`(?:sugon|process|python)_[^|]*)\|", README, re.MULTILINE)
    documented = {n for cell in first_cells for n in re.findall(r"`((?:sugon|process|python)_[a-z_]+)`", cell)}
    assert names <= documented, f"undocumented: {sorted(names - documented)}"
    assert documented <= names, f"documented but not emitted: {sorted(documented - names)}"


def test_every_promql_example_in_the_readme_parses(tmp_path: Path) -> None:
    exprs = [
        line.strip()
        for block in re.findall(r"```promql\n(.*?)```", README, re.DOTALL)
        for line in block.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert len(exprs) >= 10
    rules = {
        "groups": [
            {"name": "readme", "rules": [{"record": f"readme:example{i}", "expr": e} for i, e in enumerate(exprs)]}
        ]
    }
    path = tmp_path / "examples.yml"
    path.write_text(yaml.safe_dump(rules, allow_unicode=True))
    exe = find_tool("promtool", "apt-get install prometheus")
    result = subprocess.run([exe, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_recording_rule_the_readme_names_is_in_the_shipped_rules() -> None:
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yml").read_text())["groups"]
    recorded = {rule["record"] for group in rules for rule in group["rules"]}
    named = set(re.findall(r"\bsugon:[a-z0-9_]+:[a-z0-9_]+", README))
    assert {"sugon:job_core_hours:increase1d", "sugon:user_job_core_hours:increase1d"} <= named
    assert named <= recorded, f"named in the README but not recorded: {sorted(named - recorded)}"


def test_the_config_of_running_it_for_real_passes_check_config_with_its_one_variable_set(tmp_path: Path) -> None:
    section = README.split("\n## Running it for real\n")[1].split("\n## ")[0]
    config = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert config, "no config.yaml in the README's Running it for real"
    (variable,) = set(re.findall(r"\$\{(\w+)\}", config.group(1)))
    assert re.search(rf"^export {variable}=", section, re.MULTILINE), f"the commands do not set {variable}"
    path = tmp_path / "config.yaml"
    path.write_text(config.group(1))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUGON_")} | {variable: "eyJhbGciOi.e30.sig"}
    r = subprocess.run(
        [sys.executable, "-m", "exporter", "--config", str(path), "--check-config"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK, 1 cluster(s)" in r.stdout


def test_ci_runs_the_readmes_test_command_in_a_fresh_virtualenv() -> None:
    readme_command = re.findall(r"```sh\n(.*?)\n```", README, re.DOTALL)[1]
    make_venv, activate, *install_and_test = readme_command.split(" && ")
    assert (make_venv, activate) == ("python3 -m venv .venv", ". .venv/bin/activate")
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r'^  "\$python" -m venv "\$venv"\n(.*\n)*?  \. "\$venv/bin/activate"$', ci, re.MULTILINE)
    assert f"\n  {' && '.join(install_and_test)}\n" in ci


def test_the_worked_example_of_a_metric_group_runs_and_its_table_test_passes(monkeypatch: Any) -> None:
    """The Development section's group module and table test, as written: the module imports as
    exporter.groups.widest, and each of the test's functions passes."""
    section = README.split("### Adding a metric group: a worked example\n")[1].split("\n### ")[0]
    module_code, test_code = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    module = types.ModuleType("exporter.groups.widest")
    monkeypatch.setitem(sys.modules, "exporter.groups.widest", module)
    exec(compile(module_code, "exporter/groups/widest.py", "exec"), module.__dict__)  # noqa: S102 - the README's own code
    tests: dict[str, Any] = {}
    exec(compile(test_code, "tests/test_group_widest.py", "exec"), tests)  # noqa: S102
    names = [name for name in tests if name.startswith("test_")]
    assert names == ["test_the_widest_job_of_each_queue", "test_queues_beyond_max_queues_share_other"]
    for name in names:
        tests[name]()


def test_the_readmes_web_config_example_loads_with_each_commented_key_turned_on(certs: Path, tmp_path: Path) -> None:
    from exporter.config.webconfig import TLS_KEYS, TOP_KEYS, load_web_config

    section = README.split("### Protecting /metrics", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert block is not None
    # every commented key turned on: "  # key: value" -> "  key: value", "#   headers:" -> "  headers:"
    text = re.sub(r"^( *)# (?=\s*[A-Za-z_-]+:)", r"\1", block.group(1), flags=re.MULTILINE)
    for name in ("server.pem", "server.key"):
        (tmp_path / name).write_bytes((certs / name).read_bytes())
    (tmp_path / "clients-ca.pem").write_bytes((certs / "ca.pem").read_bytes())
    (tmp_path / "web.yml").write_text(text)
    web = load_web_config(str(tmp_path / "web.yml"))
    assert web.tls is not None and web.users and web.headers and web.rate_limit
    for key in (*TOP_KEYS, *TLS_KEYS):  # and the table names every key
        assert re.search(rf"`(?:\w+\.)?{key}[`.]", section), key
