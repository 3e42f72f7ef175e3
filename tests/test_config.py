"""Config loading: one YAML per failure mode, each naming the exact dotted path; defaults; env; secrets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from exporter.config import ConfigError, build_config, load_config, parse_duration

CONFIGS = Path(__file__).parent / "configs"
ROOT = Path(__file__).parent.parent
FAILURES = sorted(CONFIGS.glob("*.yaml"))


def expected_errors(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [
        line.split("# expect: ", 1)[1].replace("{file}", str(path)) for line in lines if line.startswith("# expect: ")
    ]


@pytest.mark.parametrize("path", FAILURES, ids=[p.stem for p in FAILURES])
def test_each_bad_config_gives_exactly_its_errors(path: Path) -> None:
    expected = expected_errors(path)
    assert expected, f"{path.name} declares no '# expect:' line"
    with pytest.raises(ConfigError) as err:
        load_config(str(path), environ={})
    assert err.value.errors == expected


def test_secrets_in_a_bad_config_never_reach_the_error_text() -> None:
    for path in FAILURES:
        with pytest.raises(ConfigError) as err:
            load_config(str(path), environ={})
        assert "s3cr3t" not in str(err.value), path.name


def test_the_example_config_is_valid_and_documents_every_default() -> None:
    env = {"SUGON_TOKEN": "tok", "SUGON_PASSWORD": "pw", "SUGON_ORG_ID": "org", "SCNET_AK": "ak", "SCNET_SK": "sk"}
    config = load_config(str(ROOT / "config.example.yaml"), environ=env)
    assert config.listen_address == "0.0.0.0:10863"
    assert (config.interval, config.timeout, config.max_staleness) == (60.0, 30.0, 300.0)
    assert (config.page_size, config.concurrency, config.per_user) == (500, 4, True)
    assert (config.per_job, config.max_job_series, config.job_series_users) == (False, 500, ())
    kunshan = config.clusters[0]
    assert kunshan.name == "kunshan"
    assert kunshan.api_url == "https://api01.hpccube.com:65106"
    assert kunshan.cluster_ids == ("1638523853",)
    assert kunshan.token == "tok"
    login, aksk = config.clusters[1:]
    assert login.api_url is None and login.auth is not None
    assert (login.auth.kind, login.auth.url, login.auth.password, login.auth.org_id, login.auth.region) == (
        "password",
        "https://ac.sugon.com",
        "pw",
        "org",
        "11250",
    )
    assert aksk.auth is not None and (aksk.auth.kind, aksk.auth.access_key, aksk.auth.secret_key) == (
        "aksk",
        "ak",
        "sk",
    )


def test_defaults_apply_and_clusters_override_the_four_poll_settings(tmp_path: Path) -> None:
    config = build_config(
        {
            "interval": "2m",
            "page_size": 100,
            "clusters": [
                {"name": "a", "api_url": "https://h:1/hpc/", "token": "t"},
                {
                    "name": "b",
                    "api_url": "https://h:2",
                    "token": "t",
                    "interval": 90,
                    "timeout": "1m",
                    "page_size": 25,
                    "concurrency": 8,
                    "cluster_ids": ["7", 7, 8],
                },
            ],
        },
        environ={},
    )
    a, b = config.clusters
    assert (a.interval, a.timeout, a.page_size, a.concurrency, a.cluster_ids) == (120.0, 30.0, 100, 4, ())
    assert (b.interval, b.timeout, b.page_size, b.concurrency, b.cluster_ids) == (90.0, 60.0, 25, 8, ("7", "8"))
    assert a.api_url == "https://h:1"


def test_environment_variables_are_substituted_in_any_string_and_dollar_dollar_is_literal() -> None:
    config = build_config(
        {
            "listen_address": "${HOST}:10863",
            "clusters": [{"name": "a", "api_url": "https://${HOST}:1", "token": "p$$w${T}"}],
        },
        environ={"HOST": "127.0.0.1", "T": "xyz"},
    )
    assert config.listen_address == "127.0.0.1:10863"
    assert config.clusters[0].api_url == "https://127.0.0.1:1"
    assert config.clusters[0].token == "p$wxyz"


def test_relative_token_file_is_found_next_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("abc\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("clusters:\n  - {name: a, api_url: 'https://h:1', token_file: tok}\n")
    assert load_config(str(cfg), environ={}).clusters[0].token_file == str(tmp_path / "tok")


def test_missing_config_file_is_named() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("/nonexistent/sugon.yaml")
    assert err.value.errors == ["/nonexistent/sugon.yaml: no such file"]


def test_repr_of_a_config_does_not_show_the_token() -> None:
    config = build_config({"clusters": [{"name": "a", "api_url": "https://h:1", "token": "s3cr3t"}]}, environ={})
    assert "s3cr3t" not in repr(config)
    assert "s3cr3t" not in repr(config.clusters[0])


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("2m30s", 150), (45, 45), ("45", 45), (0.5, 0.5)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["fast", "", "0", 0, -1, "5 m", "1d", True, None, "m", "nan"])
def test_not_durations(text: object) -> None:
    assert parse_duration(text) is None


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("https://api01.hpccube.com:65106", "https://api01.hpccube.com:65106"),
        ("https://api01.hpccube.com:65106/", "https://api01.hpccube.com:65106"),
        ("https://api01.hpccube.com:65106/hpc", "https://api01.hpccube.com:65106"),
        ("https://api01.hpccube.com:65106/hpc/", "https://api01.hpccube.com:65106"),
        ("https://gw.example.com/sugon/hpc", "https://gw.example.com/sugon"),
    ],
)
def test_api_url_loses_trailing_slashes_and_one_trailing_hpc(url: str, base: str) -> None:
    config = build_config({"clusters": [{"name": "a", "api_url": url, "token": "t"}]}, environ={})
    assert config.clusters[0].api_url == base


def test_process_environment_is_the_default_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUGON_TEST_TOKEN", "from-env")
    config = build_config({"clusters": [{"name": "a", "api_url": "https://h:1", "token": "${SUGON_TEST_TOKEN}"}]})
    assert config.clusters[0].token == "from-env"
    assert os.environ["SUGON_TEST_TOKEN"] == "from-env"


def test_auth_blocks_are_read_and_api_url_may_then_be_omitted(tmp_path: Path) -> None:
    (tmp_path / "sk").write_text("secret\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "clusters:\n"
        "  - name: kunshan\n"
        "    auth: {kind: password, url: 'https://ac.sugon.com/', user: alice, password: '${PW}', org_id: 42,"
        " region: 11250}\n"
        "  - name: scnet\n"
        "    api_url: https://api01.hpccube.com:65106/hpc\n"
        "    auth: {kind: aksk, url: 'https://api.scnet.cn', user: bob, access_key: AK, secret_key_file: sk}\n"
    )
    kunshan, scnet = load_config(str(cfg), environ={"PW": "pw"}).clusters
    assert kunshan.api_url is None and kunshan.auth is not None
    assert (kunshan.auth.kind, kunshan.auth.url, kunshan.auth.user, kunshan.auth.password) == (
        "password",
        "https://ac.sugon.com",
        "alice",
        "pw",
    )
    assert (kunshan.auth.org_id, kunshan.auth.region) == ("42", "11250")  # YAML numbers read as ids
    assert scnet.api_url == "https://api01.hpccube.com:65106" and scnet.auth is not None
    assert (scnet.auth.access_key, scnet.auth.secret_key, scnet.auth.secret_key_file) == (
        "AK",
        None,
        str(tmp_path / "sk"),
    )
    assert "pw" not in repr(kunshan) and "AK" not in repr(scnet)


def test_backlog_settings_default_and_override_per_cluster(tmp_path: Path) -> None:
    config = build_config(
        {
            "state_file": str(tmp_path / "state.json"),
            "queue_capacity": True,
            "max_users": 50,
            "queues_exclude": ["test.*"],
            "clusters": [
                {"name": "a", "api_url": "https://h:1", "token": "t"},
                {
                    "name": "b",
                    "api_url": "https://h:1",
                    "token": "t",
                    "queue_capacity": False,
                    "max_users": 5,
                    "capacity_interval": "10m",
                    "username": "ops",
                    "users_exclude": ["root"],
                    "state_file": "b.json",
                },
            ],
        },
        environ={},
        base_dir=str(tmp_path),
    )
    a, b = config.clusters
    assert (a.state_file, a.queue_capacity, a.capacity_interval, a.username, a.max_users) == (
        str(tmp_path / "state.json"),
        True,
        300.0,
        "",
        50,
    )
    assert (a.users_exclude, a.queues_exclude) == ((), ("test.*",))
    assert (b.state_file, b.queue_capacity, b.capacity_interval, b.username, b.max_users, b.users_exclude) == (
        str(tmp_path / "b.json"),
        False,
        600.0,
        "ops",
        5,
        ("root",),
    )


def test_the_queue_and_job_bounds_default_and_override_per_cluster() -> None:
    config = build_config(
        {
            "max_queues": 20,
            "clusters": [
                {"name": "a", "api_url": "https://h:1", "token": "t"},
                {"name": "b", "api_url": "https://h:1", "token": "t", "max_queues": 7, "max_jobs": 1000},
            ],
        },
        environ={},
    )
    a, b = config.clusters
    assert (config.max_queues, config.max_jobs) == (20, 5_000_000)
    assert (a.max_queues, a.max_jobs) == (20, 5_000_000)
    assert (b.max_queues, b.max_jobs) == (7, 1000)


def test_the_application_budget_defaults_to_50_and_is_set_at_the_top_or_per_cluster() -> None:
    config = build_config(
        {
            "clusters": [
                {"name": "a", "api_url": "https://h:1", "token": "t"},
                {"name": "b", "api_url": "https://h:1", "token": "t", "max_apps": 5},
            ],
        },
        environ={},
    )
    assert (config.max_apps, config.clusters[0].max_apps, config.clusters[1].max_apps) == (50, 50, 5)
    top = build_config({"max_apps": 3, "clusters": [{"name": "a", "api_url": "https://h:1", "token": "t"}]}, environ={})
    assert top.clusters[0].max_apps == 3


def test_per_job_series_are_off_by_default_and_their_budget_and_users_are_set_at_the_top_or_per_cluster() -> None:
    plain = build_config({"clusters": [{"name": "a", "api_url": "https://h:1", "token": "t"}]}, environ={})
    assert (plain.per_job, plain.clusters[0].max_job_series, plain.clusters[0].job_series_users) == (False, 500, ())
    config = build_config(
        {
            "per_job": True,
            "max_job_series": 20,
            "job_series_users": ["alice"],
            "clusters": [
                {"name": "a", "api_url": "https://h:1", "token": "t"},
                {"name": "b", "api_url": "https://h:1", "token": "t", "max_job_series": 0, "job_series_users": []},
            ],
        },
        environ={},
    )
    a, b = config.clusters
    assert config.per_job is True
    assert (a.max_job_series, a.job_series_users) == (20, ("alice",))
    assert (b.max_job_series, b.job_series_users) == (0, ())


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ({"per_job": "yes"}, 'per_job: expected true or false, got "yes"'),
        ({"max_job_series": 100_001}, "max_job_series: expected a whole number from 0 to 100000, got 100001"),
        ({"max_job_series": True}, "max_job_series: expected a whole number from 0 to 100000, got true"),
        ({"job_series_users": ["alice", 7]}, "job_series_users: expected a list of user names, got a list"),
        ({"job_series_users": [""]}, "job_series_users: expected a list of user names, got a list"),
    ],
)
def test_bad_per_job_settings_are_named_by_their_key(raw: dict[str, object], error: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_config({**raw, "clusters": [{"name": "a", "api_url": "https://h:1", "token": "t"}]}, environ={})
    assert err.value.errors == [error]
