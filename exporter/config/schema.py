"""The configuration as frozen dataclasses, with every default in one place, and the keys each level accepts.

The key lists are derived from the dataclasses, so a new setting is declared once, here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

# Keys whose values are never echoed back in an error message.
SECRET_KEYS = frozenset({"token", "password", "access_key", "secret_key", "org_id"})


@dataclass(frozen=True)
class AuthConfig:
    """A login that yields tokens: ``password`` (user, password, orgId) or ``aksk`` (user, access/secret key)."""

    kind: str
    url: str  # without userinfo: that is in url_authorization
    user: str
    password: str | None = field(default=None, repr=False)
    password_file: str | None = None
    org_id: str | None = field(default=None, repr=False)
    region: str | None = None
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    secret_key_file: str | None = None
    url_authorization: str | None = field(default=None, repr=False)  # Basic credentials from url's userinfo


@dataclass(frozen=True, kw_only=True)
class PollSettings:
    """The settings a cluster may override; their defaults (the top level's) are given here only."""

    interval: float = 60.0
    timeout: float = 30.0
    page_size: int = 500
    concurrency: int = 4
    state_file: str | None = None
    queue_capacity: bool = False
    capacity_interval: float = 300.0
    username: str = ""
    max_users: int = 200
    users_exclude: tuple[str, ...] = ()
    queues_exclude: tuple[str, ...] = ()
    max_queues: int = 100
    max_apps: int = 50
    max_jobs: int = 5_000_000


@dataclass(frozen=True, kw_only=True)
class ClusterConfig(PollSettings):
    """One Sugon cluster (HPC host + scheduler ids) with its poll settings resolved."""

    name: str
    api_url: str | None  # None: discovered through the AC host's /center (only with auth); no userinfo
    api_authorization: str | None = field(default=None, repr=False)  # Basic credentials from api_url's userinfo
    cluster_ids: tuple[str, ...]
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    auth: AuthConfig | None = None
    verify_tls: bool = True
    ca_file: str | None = None


@dataclass(frozen=True, kw_only=True)
class Config(PollSettings):
    """The whole exporter configuration. The defaults here and in PollSettings are the only ones."""

    listen_address: str = "0.0.0.0:10863"
    web_config_file: str | None = None
    max_staleness: float = 300.0
    per_user: bool = True
    lean_http: bool = True  # accepted and ignored: one transport serves every request (a warning at load)
    clusters: tuple[ClusterConfig, ...] = ()


DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Config)}
TOP_KEYS = tuple(DEFAULTS)
# Keys a cluster may override; their defaults come from the top level.
OVERRIDABLE = tuple(f.name for f in fields(PollSettings))
CLUSTER_KEYS = ("name", "api_url", "cluster_ids", "token", "token_file", "auth", "verify_tls", "ca_file", *OVERRIDABLE)
AUTH_KEYS: dict[str, tuple[str, ...]] = {
    "password": ("kind", "url", "user", "password", "password_file", "org_id", "region"),
    "aksk": ("kind", "url", "user", "access_key", "secret_key", "secret_key_file", "region"),
}
