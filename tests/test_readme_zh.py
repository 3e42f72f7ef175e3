"""README.zh-CN.md keeps in step with README.md: every metric name, config key and CLI flag the English README
names is named in the Chinese one too, the quick start is the same, its code blocks are README.md's, and the
links between the two resolve.

What counts as "named" in README.md, and how it is found:

- metric names: ``sugon_*``, ``process_*`` and ``python_*`` identifiers inside backticks (inline code spans, the
  metric tables' first column among them), and ``sugon:...:...`` recording rules anywhere;
- config keys: the first column of every table headed ``key`` (each backticked cell part, verbatim, such as
  ``clusters[].auth.org_id``); every key of README.md's YAML snippets (parsed, so comments do not count); and
  every key the configuration schema accepts that appears as an identifier inside one of README.md's
  backticks (``token_file: ${CREDENTIALS_DIRECTORY}/token`` names ``token_file``);
- CLI flags: every ``--name`` in README.md, prose and commands alike (the exporter's and other tools' flags
  in commands that the Chinese README copies).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from exporter.config import AUTH_KEYS, CLUSTER_KEYS, TOP_KEYS

ROOT = Path(__file__).parent.parent
EN = (ROOT / "README.md").read_text(encoding="utf-8")
ZH = (ROOT / "README.zh-CN.md").read_text(encoding="utf-8")

FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
METRIC = re.compile(r"(?<![\w.:-])(?:sugon|process|python)_[a-z0-9_]*[a-z0-9](?![\w:])")
RECORDING_RULE = re.compile(r"(?<![\w:])sugon:[a-z0-9_]+:[a-z0-9_]+")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:[.-][a-z0-9]+)*")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SCHEMA_KEYS = frozenset(TOP_KEYS) | frozenset(CLUSTER_KEYS) | {key for keys in AUTH_KEYS.values() for key in keys}


def code_spans(text: str) -> list[str]:
    """The inline code spans of a Markdown text (fenced blocks removed first, so their backticks do not pair)."""
    prose = FENCE.sub("", text)
    return [span for span in re.findall(r"`([^`]+)`", prose) if "\n\n" not in span]


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(info string, body) of every fenced code block."""
    return [(info.strip(), body) for info, body in FENCE.findall(text)]


def metric_names(text: str) -> set[str]:
    """Metric names in backticks, and recording rules anywhere."""
    names = {name for span in code_spans(text) for name in METRIC.findall(span)}
    return names | set(RECORDING_RULE.findall(text))


def key_table_cells(text: str) -> set[str]:
    """The backticked parts of the first column of every Markdown table whose header's first cell is "key"."""
    cells: set[str] = set()
    in_key_table = False
    for line in text.splitlines():
        if not line.startswith("|"):
            in_key_table = False
            continue
        first = line.split("|")[1].strip()
        if first == "key":
            in_key_table = True
        elif in_key_table:
            cells.update(re.findall(r"`([^`]+)`", first))
    return cells


def yaml_keys(text: str) -> set[str]:
    """Every mapping key, at any depth, of the text's ```yaml blocks."""
    keys: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                keys.add(str(key))
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for info, body in fenced_blocks(text):
        if info == "yaml":
            walk(yaml.safe_load(body))
    return keys


def code_identifiers(text: str) -> set[str]:
    """Every identifier inside the text's inline code spans and fenced blocks."""
    code = code_spans(text) + [body for _, body in fenced_blocks(text)]
    return {word for piece in code for word in IDENTIFIER.findall(piece)}


def config_keys(text: str) -> set[str]:
    """README.md's YAML keys, and the schema's keys it names in backticks."""
    named = {word for span in code_spans(text) for word in IDENTIFIER.findall(span)}
    return yaml_keys(text) | (SCHEMA_KEYS & named)


def flags(text: str) -> set[str]:
    return set(FLAG.findall(text))


def missing_from_translation(en: str, zh: str) -> dict[str, set[str]]:
    """What the English README names and the Chinese one does not, by kind; all empty when they are in step."""
    zh_words = set(re.findall(r"[\w:.-]+", zh))
    return {
        "metric": {name for name in metric_names(en) if name not in zh_words},
        "config key": config_keys(en) - code_identifiers(zh),
        "config table cell": key_table_cells(en) - set(code_spans(zh)),
        "flag": flags(en) - flags(zh),
    }


def test_the_names_are_found_in_the_english_readme() -> None:
    assert {"sugon_jobs", "sugon_exporter_build_info", "sugon:user_job_core_hours:increase1d"} <= metric_names(EN)
    assert len(metric_names(EN)) >= 40
    assert {"clusters[].auth.org_id", "max_staleness", "clusters[].token"} <= key_table_cells(EN)
    assert {"token_file", "password_file", "region", "tls_server_config", "basic_auth_users"} <= config_keys(EN)
    assert {"--config", "--web.listen-address", "--web.config.file", "--check-config", "--once"} <= flags(EN)


def test_the_chinese_readme_names_every_metric_config_key_and_flag_the_english_one_names() -> None:
    missing = missing_from_translation(EN, ZH)
    assert missing == {"metric": set(), "config key": set(), "config table cell": set(), "flag": set()}, (
        f"named in README.md but not in README.zh-CN.md: { {kind: sorted(names) for kind, names in missing.items()} }"
    )


def test_the_check_reports_a_metric_a_config_key_and_a_flag_removed_from_the_chinese_text() -> None:
    broken = re.sub(r"(?<![\w:])sugon_nodes_in_use(?![\w:])", "REMOVED", ZH)
    broken = re.sub(r"(?<![\w-])--once(?![\w.-])", "REMOVED", broken)
    broken = re.sub(r"(?<!\w)org_id(?!\w)", "REMOVED", broken)
    assert broken.count("REMOVED") >= 3
    assert missing_from_translation(EN, broken) == {
        "metric": {"sugon_nodes_in_use"},
        "config key": {"org_id"},
        "config table cell": {"clusters[].auth.org_id"},
        "flag": {"--once"},
    }


def test_the_line_under_the_english_title_links_to_the_chinese_readme_which_links_back() -> None:
    lines = EN.splitlines()
    assert lines[0] == "# sugon-exporter"
    under_title = next(line for line in lines[1:] if line.strip())
    link = re.fullmatch(r"\[[^\]]+\]\(([^)]+)\)", under_title.strip())
    assert link is not None, f"not a lone link under the title: {under_title!r}"
    assert link.group(1) == "README.zh-CN.md"
    assert (ROOT / link.group(1)).is_file()
    assert "](README.md)" in "\n".join(ZH.splitlines()[:5])


def test_the_quick_start_commands_are_the_same_in_both_readmes() -> None:
    def quick_start(text: str) -> list[str]:
        return [body for info, body in fenced_blocks(text) if info == "sh"][:2]

    assert quick_start(EN) == quick_start(ZH)
    demo, tests = quick_start(EN)
    assert "sugon-exporter --demo" in demo
    assert "pytest" in tests


def test_every_code_block_of_the_chinese_readme_is_copied_from_the_english_one() -> None:
    english = set(fenced_blocks(EN))
    changed = [block for block in fenced_blocks(ZH) if block not in english]
    assert not changed, f"code blocks not in README.md (copy them verbatim): {changed}"


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped (CJK kept), spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    return {github_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", FENCE.sub("", text), re.MULTILINE)}


def test_the_chinese_readmes_section_links_point_to_headings_that_exist() -> None:
    assert github_anchor("### 保护 /metrics：TLS 和 basic auth".lstrip("# ")) == "保护-metricstls-和-basic-auth"
    own = re.findall(r"\]\(#([^)]+)\)", ZH)
    english = re.findall(r"\]\(README\.md#([^)]+)\)", ZH)
    assert own and english
    assert set(own) <= anchors(ZH), sorted(set(own) - anchors(ZH))
    assert set(english) <= anchors(EN), sorted(set(english) - anchors(EN))
