"""What the API client is told about a cluster's token, built by the service from the configuration (the client
knows nothing of the YAML schema): plain records, built by keyword, secrets never shown."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class LoginSettings:
    """A login that yields tokens: ``password`` (user, password, org id) or ``aksk`` (user, access and secret
    key). A secret given as a file is read at each login."""

    kind: str
    url: str  # the AC host, without userinfo (named in messages)
    user: str
    region: str | None = None  # clusterId or clusterName; None: the only usable one
    password: str | None = field(default=None, repr=False)
    password_file: str | None = None
    org_id: str | None = field(default=None, repr=False)
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    secret_key_file: str | None = None


@dataclass(frozen=True, kw_only=True)
class TokenSettings:
    """Where a cluster's token comes from: a token, a file that holds one, or a login (the first given)."""

    cluster: str  # its name, in messages
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    login: LoginSettings | None = None
    login_gap: float = 60.0  # seconds at least between two logins, more after failures
