"""Where a cluster's token comes from, and when it is renewed: a static value, a file, or a login."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Concatenate, ParamSpec, TypeVar

from exporter.logs import Fields
from exporter.sugon.conversation import UNOBSERVED, ApiAuthError, ApiError, Observer
from exporter.sugon.platform import PlatformClient, RegionToken, choose_region
from exporter.sugon.settings import LoginSettings, TokenSettings
from exporter.values import jwt_expiry, token_problem

log = logging.getLogger(__name__)

RENEW_SHARE = 0.1  # renew when less than this share of the lifetime is left...
RENEW_FLOOR = 300.0  # ...or less than this many seconds, whichever comes first...
RENEW_CAP_SHARE = 0.5  # ...but never earlier than half-way, so a short-lived token is not renewed at once
RENEWABLE_AFTER_EXPIRY = 24 * 3600  # tokens/next refuses tokens expired for longer than this
LOGIN_BACKOFF_MAX = 3600.0
STATIC_WARNING_HORIZON = 24 * 3600

T = TypeVar("T")
P = ParamSpec("P")


async def with_token(
    tokens: TokenProvider, send: Callable[Concatenate[str, P], Awaitable[T]], *args: P.args, **kwargs: P.kwargs
) -> T:
    """``send(token, *args, **kwargs)``; if the API rejects the token, it is replaced once (single-flight) and
    sent again. A TokenProvider hands out the token to send (``get``) and says whether a rejected one was
    replaced (``rejected``); its ``hint`` says what to do when tokens keep failing."""
    token = await tokens.get()
    try:
        return await send(token, *args, **kwargs)
    except ApiAuthError:
        if not await tokens.rejected(token):
            raise
    return await send(await tokens.get(), *args, **kwargs)


def _secret(value: str | None, path: str | None, what: str) -> str:
    """``value``, or the content of the file at ``path`` (read each time, stripped)."""
    if value is not None:
        return value
    try:
        with open(str(path), encoding="utf-8") as handle:
            value = handle.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ApiAuthError(f"{what} {path}: {getattr(exc, 'strerror', None) or 'not UTF-8 text'}") from None
    if not value:
        raise ApiAuthError(f"{what} {path}: file is empty")
    return value


def _note_expiry(token: str, cluster: str, observer: Observer, clock: Callable[[], float]) -> None:
    """Publish a configured token's expiry, and warn when it is less than a day away."""
    expiry = jwt_expiry(token)
    observer.token_expiry(expiry)
    if expiry is not None and expiry - clock() < STATIC_WARNING_HORIZON:
        when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(expiry))
        log.warning(
            "cluster %s: the configured token %s at %s; configure auth (password or aksk) to have it renewed",
            cluster,
            "expired" if expiry <= clock() else "expires",
            when,
            extra={"cluster": cluster, "expiry": when},
        )


class StaticToken:
    """A token given in the config (``token:``)."""

    hint = "renew the token: replace it in the configuration and restart, or configure auth to have it renewed"

    def __init__(
        self, value: str, cluster: str = "", observer: Observer | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self._value = value
        _note_expiry(value, cluster, observer or UNOBSERVED, clock)

    async def get(self) -> str:
        return self._value

    async def rejected(self, token: str) -> bool:
        return False  # nothing to fall back on


class FileToken:
    """A token kept in a file (``token_file:``), read for every request so that a new one is used at once."""

    def __init__(
        self, path: str, cluster: str = "", observer: Observer | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = path
        self.hint = f"renew the token: write a new one to {path} (re-read when it changes)"
        self._cluster = cluster
        self._observer = observer or UNOBSERVED
        self._clock = clock
        self._value = ""

    async def get(self) -> str:
        """The file's token, stripped."""
        value = _secret(None, self.path, "token_file")
        problem = token_problem(value)
        if problem:
            raise ApiAuthError(f"token_file {self.path}: the token {problem}")
        if value != self._value:
            if self._value:
                log.info(
                    "token_file %s changed; using the new token",
                    self.path,
                    extra={"cluster": self._cluster, "file": self.path},
                )
            _note_expiry(value, self._cluster, self._observer, self._clock)
            self._value = value
        return self._value

    async def rejected(self, token: str) -> bool:
        """True if the file now holds another token."""
        return await self.get() != token


class LoginToken:
    """Tokens from a password or AK/SK login, renewed before they expire and when the API rejects them. Refreshes
    are single-flight (one lock): requests rejected together cause one renewal, ``tokens/next`` or else a login.
    Logins are at most one per ``min_login_gap`` seconds, more after failures; a failed early renewal keeps a
    token that is still valid."""

    def __init__(
        self,
        cluster: str,
        auth: LoginSettings,
        platform: PlatformClient,
        *,
        min_login_gap: float,
        observer: Observer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._cluster = cluster
        self._log = Fields(log, {"cluster": cluster})
        self._auth = auth
        self._platform = platform
        self._min_gap = min_login_gap
        self._observer = observer or UNOBSERVED
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._region_id = ""
        self._expires: float | None = None
        self._renew_at: float | None = None
        self._login_failures = 0
        self._next_login = 0.0
        self._login_error = ""
        self.hint = (
            f"the exporter keeps logging in; check the {auth.kind} credentials of user {auth.user} at {auth.url}"
        )

    async def get(self) -> str:
        """The current token, renewed first when it is due."""
        async with self._lock:
            now = self._clock()
            if self._token is not None and (self._renew_at is None or now < self._renew_at):
                return self._token
            try:
                await self._refresh()
            except ApiError as exc:
                if self._token is None or (self._expires is not None and now >= self._expires):
                    raise
                self._log.warning(
                    "cluster %s: early token renewal failed (%s); the current token is still valid",
                    self._cluster,
                    exc,
                    extra={"method": "renew", "reason": exc.reason},
                )
                # Try again later, not on every request, and never past the expiry.
                self._renew_at = min(now + self._min_gap, self._expires or now + self._min_gap)
            assert self._token is not None
            return self._token

    async def rejected(self, token: str) -> bool:
        """Replace a rejected token once, however many requests report it."""
        async with self._lock:
            if self._token != token:
                return True  # another request has already replaced (or dropped) it
            self._log.info("cluster %s: the API rejected the token; renewing it", self._cluster)
            try:
                await self._refresh()
            except ApiError:
                self._token = None  # none replaced it: the next get() logs in, paced by the backoff
                raise
            return True

    async def _refresh(self) -> None:
        now = self._clock()
        if self._token is not None and (self._expires is None or now < self._expires + RENEWABLE_AFTER_EXPIRY):
            try:
                new = await self._platform.renew(self._token, self._region_id)
            except ApiError as exc:
                self._observer.token_refresh("renew", "failure")
                self._log.info(
                    "cluster %s: token renewal failed (%s); logging in again",
                    self._cluster,
                    exc,
                    extra={"method": "renew", "reason": exc.reason},
                )
            else:
                self._observer.token_refresh("renew", "success")
                self._adopt(new, self._region_id)
                self._log.debug("cluster %s: token renewed", self._cluster, extra={"method": "renew"})
                return
        await self._login()

    async def _login(self) -> None:
        now = self._clock()
        if now < self._next_login:
            raise ApiAuthError(f"login failed ({self._login_error}); next attempt in {self._next_login - now:.0f}s")
        auth = self._auth
        try:
            regions: list[RegionToken]
            if auth.kind == "password":
                password = _secret(auth.password, auth.password_file, "password_file")
                regions = await self._platform.login_password(auth.user, password, str(auth.org_id))
            else:
                secret = _secret(auth.secret_key, auth.secret_key_file, "secret_key_file")
                regions = await self._platform.login_aksk(auth.user, str(auth.access_key), secret, int(now))
            region = choose_region(regions, auth.region)
        except ApiError as exc:
            self._login_failures += 1
            gap = min(self._min_gap * 2 ** (self._login_failures - 1), max(self._min_gap, LOGIN_BACKOFF_MAX))
            self._next_login, self._login_error = now + gap, str(exc)
            self._observer.token_refresh("login", "failure")
            self._log.error(
                "cluster %s: %s login of user %s at %s failed: %s; next attempt in %.0fs",
                self._cluster,
                auth.kind,
                auth.user,
                auth.url,
                exc,
                gap,
                extra={"method": "login", "reason": exc.reason, "user": auth.user, "url": auth.url},
            )
            raise
        if self._login_failures:
            self._log.info(
                "cluster %s: login succeeded after %d failure(s)",
                self._cluster,
                self._login_failures,
                extra={"method": "login", "failures": self._login_failures},
            )
        self._login_failures, self._next_login = 0, 0.0
        self._observer.token_refresh("login", "success")
        self._log.debug(
            "cluster %s: logged in to region %s",
            self._cluster,
            region.name,
            extra={"method": "login", "region": region.name},
        )
        assert region.token is not None
        self._adopt(region.token, region.cluster_id)

    def _adopt(self, token: str, region_id: str) -> None:
        now = self._clock()
        self._token, self._region_id = token, region_id
        self._expires = jwt_expiry(token)
        self._renew_at = None
        if self._expires is not None and self._expires > now:
            lifetime = self._expires - now
            margin = min(max(RENEW_SHARE * lifetime, RENEW_FLOOR), RENEW_CAP_SHARE * lifetime)
            self._renew_at = self._expires - margin
        self._observer.token_expiry(self._expires)


# Where a cluster's token comes from (one of the three classes above).
TokenProvider = StaticToken | FileToken | LoginToken


def token_provider(
    settings: TokenSettings,
    platform: PlatformClient | None = None,
    observer: Observer | None = None,
    clock: Callable[[], float] = time.time,
) -> TokenProvider:
    """The TokenProvider ``settings`` ask for (a login needs ``platform``; the config validation sees to it that
    one of the three is given)."""
    if settings.login is not None and platform is not None:
        gap = settings.login_gap
        return LoginToken(settings.cluster, settings.login, platform, min_login_gap=gap, observer=observer, clock=clock)
    if settings.token_file is not None:
        return FileToken(settings.token_file, settings.cluster, observer, clock)
    assert settings.token is not None
    return StaticToken(settings.token, settings.cluster, observer, clock)
