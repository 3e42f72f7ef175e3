"""deploy/kubernetes/: every manifest of a Kubernetes kind is valid against Kubernetes' own OpenAPI schemas.

kubernetes-validate carries the schemas of each Kubernetes release in the package, so this runs offline; its
strict schemas refuse unknown fields, the mistake a hand-written manifest makes most (a typo is otherwise
dropped without a word by client-side tooling). Every file in the folder is checked, so a new manifest of a
core kind is validated without touching this module, and one of a kind that has no check fails. The
prometheus-operator kinds have no schema here: tests/test_deploy.py checks their structure and that they
agree with the Service and deploy/prometheus; it also checks what a schema cannot (non-root, probes on the
exporter's /-/healthy and /-/ready, its port, the ConfigMap holding a config the exporter loads).
"""

from __future__ import annotations

import copy
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

FOLDER = Path(__file__).parent.parent / "deploy" / "kubernetes"

# The newest Kubernetes release the validator bundles and the oldest of the three minor releases the
# Kubernetes project still maintains (November 2026: 1.35, 1.36, 1.37). A field added after the oldest is
# refused there, so the manifests stay usable on every maintained cluster. Move both up with the releases.
KUBERNETES = ("1.35", "1.37")

# Custom resources of the prometheus-operator: their structure is checked in tests/test_deploy.py.
OPERATOR_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
KUSTOMIZATION = ("kustomize.config.k8s.io/v1beta1", "Kustomization")


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to reach the network fails the test: the schemas must come from the installed package."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the Kubernetes schema validation tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def problems(doc: Any, version: str, folder: Path = FOLDER) -> list[str]:
    """What is wrong with one YAML document of ``folder``, each as "where: what"; empty when it is valid."""
    if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
        return ["not a Kubernetes object: it needs an apiVersion and a kind"]
    kind = (doc["apiVersion"], doc["kind"])
    if kind in OPERATOR_KINDS:
        return []
    if kind == KUSTOMIZATION:
        return kustomization_problems(doc, folder)
    try:
        validated = kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [f"{e.message}: neither a Kubernetes kind nor one this test knows how to check"]
    assert validated == version, f"validated against Kubernetes {validated}, not {version}"
    return []


def kustomization_problems(doc: dict[str, Any], folder: Path) -> list[str]:
    """Kustomize has no schema among Kubernetes' own: its resources must exist, and every manifest but the
    examples must be among them (else `kubectl apply -k` leaves it out)."""
    listed = doc.get("resources") or []
    found = [f"resources: {name} does not exist" for name in listed if not (folder / name).is_file()]
    shipped = {p.name for p in folder.glob("*.yaml")} - {"kustomization.yaml"}
    unlisted = sorted(name for name in shipped - set(listed) if not name.endswith(".example.yaml"))
    return found + [f"resources: {name} is not listed" for name in unlisted]


def documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@pytest.mark.parametrize("version", KUBERNETES)
@pytest.mark.parametrize("name", sorted(p.name for p in FOLDER.glob("*.yaml")))
def test_every_manifest_is_valid_against_the_kubernetes_schemas(name: str, version: str) -> None:
    docs = documents(FOLDER / name)
    assert docs, f"{name} holds no manifest"
    assert [f"{name}: {p}" for doc in docs for p in problems(doc, version)] == []


# ---- the validation refuses what a cluster would refuse ------------------------------------------


def manifest(name: str) -> dict[str, Any]:
    (doc,) = documents(FOLDER / name)
    return copy.deepcopy(doc)


def container(doc: dict[str, Any]) -> dict[str, Any]:
    first: dict[str, Any] = doc["spec"]["template"]["spec"]["containers"][0]
    return first


def rename(mapping: dict[str, Any], old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


Break = Callable[[dict[str, Any]], None]

# (manifest, how it is broken, where the error is, what it says): each names the field, by its path or in words
BROKEN: list[tuple[str, Break, str, str]] = [
    # unknown fields: typos of real ones, which Kubernetes' ordinary (not strict) schemas let through
    (
        "deployment.yaml",
        lambda d: rename(container(d)["securityContext"], "readOnlyRootFilesystem", "readOnlyRootFileSystem"),
        "spec.template.spec.containers.0.securityContext",
        "'readOnlyRootFileSystem' was unexpected",
    ),
    (
        "deployment.yaml",
        lambda d: d["spec"]["template"]["spec"].update(contianers=[]),
        "spec.template.spec",
        "'contianers' was unexpected",
    ),
    ("service.yaml", lambda d: rename(d["spec"], "selector", "selectors"), "spec", "'selectors' was unexpected"),
    ("configmap.yaml", lambda d: rename(d, "data", "date"), "", "'date' was unexpected"),
    ("secret.example.yaml", lambda d: rename(d, "stringData", "stringdata"), "", "'stringdata' was unexpected"),
    # wrong types
    ("deployment.yaml", lambda d: d["spec"].update(replicas="one"), "spec.replicas", "is not of type 'integer'"),
    (
        "deployment.yaml",
        lambda d: container(d)["ports"][0].update(containerPort="10863"),
        "spec.template.spec.containers.0.ports.0.containerPort",
        "'10863' is not of type 'integer'",
    ),
    (
        "service.yaml",
        lambda d: d["spec"]["ports"][0].update(port="10863"),
        "spec.ports.0.port",
        "is not of type 'integer'",
    ),
    ("configmap.yaml", lambda d: d["data"].update(interval=60), "data.interval", "60 is not of type 'string'"),
    # missing required fields
    ("deployment.yaml", lambda d: d["spec"].pop("selector"), "spec", "'selector' is a required property"),
    (
        "deployment.yaml",
        lambda d: container(d).pop("name"),
        "spec.template.spec.containers.0",
        "'name' is a required property",
    ),
    ("service.yaml", lambda d: d["spec"]["ports"][0].pop("port"), "spec.ports.0", "'port' is a required property"),
]


CASES = [
    pytest.param(name, brk, where, what, id=f"{name}:{where or '(top)'}:{what}") for name, brk, where, what in BROKEN
]


@pytest.mark.parametrize(("name", "brk", "where", "what"), CASES)
def test_a_broken_manifest_is_refused_naming_the_field(name: str, brk: Break, where: str, what: str) -> None:
    doc = manifest(name)
    assert problems(doc, KUBERNETES[-1]) == []
    brk(doc)
    (problem,) = problems(doc, KUBERNETES[-1])
    assert problem.startswith(f"{where}: ") and what in problem, problem


def test_validation_without_strict_mode_would_let_a_typo_through() -> None:
    # Why strict mode: the same typo passes Kubernetes' ordinary schemas.
    doc = manifest("deployment.yaml")
    rename(container(doc)["securityContext"], "readOnlyRootFilesystem", "readOnlyRootFileSystem")
    assert kubernetes_validate.validate(doc, KUBERNETES[-1], strict=False) == KUBERNETES[-1]


def test_a_manifest_of_a_kind_nobody_checks_fails_rather_than_being_skipped() -> None:
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "sugon-exporter"}}
    (problem,) = problems(widget, KUBERNETES[-1])
    assert "Widget" in problem and "example.com/v1" in problem
    assert problems({"metadata": {"name": "x"}}, KUBERNETES[-1]) == [
        "not a Kubernetes object: it needs an apiVersion and a kind"
    ]


def test_a_removed_api_version_of_a_core_kind_is_refused() -> None:
    doc = manifest("deployment.yaml") | {"apiVersion": "extensions/v1beta1"}
    (problem,) = problems(doc, KUBERNETES[0])
    assert "Deployment" in problem and "extensions/v1beta1" in problem


def test_the_kustomization_lists_only_files_that_exist_and_every_manifest_but_the_examples(tmp_path: Path) -> None:
    for name in ("deployment.yaml", "service.yaml", "secret.example.yaml"):
        (tmp_path / name).write_text("{}")
    doc = {"apiVersion": KUSTOMIZATION[0], "kind": KUSTOMIZATION[1], "resources": ["deployment.yaml", "gone.yaml"]}
    assert problems(doc, KUBERNETES[-1], tmp_path) == [
        "resources: gone.yaml does not exist",
        "resources: service.yaml is not listed",
    ]
