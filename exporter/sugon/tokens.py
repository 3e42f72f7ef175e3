"""Where a cluster's token comes from and when it is renewed: a static value, a file, or a login that renews itself."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from exporter.logs import Fields
from exporter.sugon.conversation import ApiAuthError, ApiError
from exporter.sugon.platform import PlatformClient, choose_region
from exporter.sugon.settings import LoginSettings, TokenSettings
from exporter.values import jwt_expiry, token_problem

log = logging.getLogger(__name__)

RENEW_SHARE = 0.1  # renew when less than this share of the lifetime is left...
RENEW_FLOOR = 300.0  # ...or less than this many seconds, whichever comes first...
RENEW_CAP_SHARE = 0.5  # ...but never earlier than half-way, so a short-lived token is not renewed at once
RENEWABLE_AFTER_EXPIRY = 24 * 3600  # tokens/next refuses tokens expired for longer than this
LOGIN_BACKOFF_MAX = 3600.0
STATIC_WARNING_HORIZON = 24 * 3600


class TokenObserver(Protocol):
    """Told of the token in use and of every refresh (for self-metrics)."""

    def token_expiry(self, timestamp: float | None) -> None: ...

    def token_refresh(self, method: str, result: str) -> None: ...


class _NullTokenObserver:
    def token_expiry(self, timestamp: float | None) -> None:
        pass

    def token_refresh(self, method: str, result: str) -> None:
        pass


class TokenProvider(Protocol):
    """Hands out the token to send, and gets a new one when the API rejects it."""

    hint: str

    async def get(self) -> str:
        """A token to send now (may renew or log in first). Raises ApiError when none can be had."""
        ...

    async def rejected(self, token: str) -> bool:
        """The API refused ``token``: True if a different token is now available to retry with."""
        ...


T = TypeVar("T")
P = ParamSpec("P")


async def with_token(
    tokens: TokenProvider, send: Callable[Concatenate[str, P], Awaitable[T]], *args: P.args, **kwargs: P.kwargs
) -> T:
    """``send(token, *args, **kwargs)``; if the API rejects the token, it is replaced once (single-flight) and sent
    again."""
    token = await tokens.get()
    try:
        return await send(token, *args, **kwargs)
    except ApiAuthError:
        if not await tokens.rejected(token):
            raise
    return await send(await tokens.get(), *args, **kwargs)


def _read_secret(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            value = handle.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ApiAuthError(f"{what} {path}: {getattr(exc, 'strerror', None) or 'not UTF-8 text'}") from None
    if not value:
        raise ApiAuthError(f"{what} {path}: file is empty")
    return value


class _StaticExpiry:
    """Publishes a configured token's expiry and warns once per token when it is near."""

    def __init__(self, cluster: str, observer: TokenObserver, clock: Callable[[], float]) -> None:
        self._cluster = cluster
        self._log = Fields(log, {"cluster": cluster})
        self._observer = observer
        self._clock = clock
        self._warned: set[str] = set()

    def note(self, token: str) -> None:
        expiry = jwt_expiry(token)
        self._observer.token_expiry(expiry)
        if expiry is None or token in self._warned:
            return
        left = expiry - self._clock()
        if left < STATIC_WARNING_HORIZON:
            self._warned.add(token)
            when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(expiry))
            state = "expired" if left <= 0 else "expires"
            self._log.warning(
                "cluster %s: the configured token %s at %s; configure auth (password or aksk) to have it renewed",
                self._cluster,
                state,
                when,
                extra={"expiry": when},
            )


class StaticToken:
    """A token given in the config (``token:``)."""

    hint = "renew the token: replace it in the configuration and restart, or configure auth to have it renewed"

    def __init__(
        self,
        value: str,
        cluster: str = "",
        observer: TokenObserver | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._value = value
        _StaticExpiry(cluster, observer or _NullTokenObserver(), clock).note(value)

    async def get(self) -> str:
        """The configured token."""
        return self._value

    async def rejected(self, token: str) -> bool:
        """Nothing to fall back on."""
        return False

    def __repr__(self) -> str:
        return "StaticToken(<redacted>)"


class FileToken:
    """A token kept in a file (``token_file:``); re-read when its inode, size or mtime changes."""

    def __init__(
        self,
        path: str,
        cluster: str = "",
        observer: TokenObserver | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.hint = f"renew the token: write a new one to {path} (re-read when it changes)"
        self._stamp: tuple[int, int, int] | None = None
        self._value: str | None = None
        self._log = Fields(log, {"cluster": cluster, "file": path})
        self._expiry = _StaticExpiry(cluster, observer or _NullTokenObserver(), clock)

    async def get(self) -> str:
        """The file's current content, stripped; the file is only read again after it changed."""
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise ApiAuthError(f"token_file {self.path}: {exc.strerror}") from None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp != self._stamp or self._value is None:
            value = _read_secret(self.path, "token_file")
            problem = token_problem(value)
            if problem:
                raise ApiAuthError(f"token_file {self.path}: the token {problem}")
            if self._stamp is not None:
                self._log.info("token_file %s changed; using the new token", self.path)
            self._stamp, self._value = stamp, value
            self._expiry.note(value)
        return self._value

    async def rejected(self, token: str) -> bool:
        """True if the file now holds another token."""
        return await self.get() != token

    def __repr__(self) -> str:
        return f"FileToken({self.path!r})"


class LoginToken:
    """Tokens from a password or AK/SK login, renewed before they expire and when the API rejects them.

    Every refresh runs under one lock (single-flight): requests that fail together cause one renewal.
    A renewal tries ``tokens/next`` and falls back to logging in; logins are at most one per
    ``min_login_gap`` seconds, backing off further after each failure, so a wrong password never hammers
    the platform. While the current token is still valid, a failed proactive renewal keeps using it.
    """

    def __init__(
        self,
        cluster: str,
        auth: LoginSettings,
        platform: PlatformClient,
        *,
        min_login_gap: float,
        observer: TokenObserver | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._cluster = cluster
        self._log = Fields(log, {"cluster": cluster})
        self._auth = auth
        self._platform = platform
        self._min_gap = min_login_gap
        self._observer = observer or _NullTokenObserver()
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._region_id: str | None = None
        self._expires: float | None = None
        self._renew_at: float | None = None
        self._login_failures = 0
        self._next_login = 0.0
        self._login_error = ""
        self.hint = (
            f"the exporter keeps logging in; check the {auth.kind} credentials of user {auth.user} at {auth.url}"
        )

    def __repr__(self) -> str:
        return f"LoginToken(kind={self._auth.kind!r}, user={self._auth.user!r}, url={self._auth.url!r})"

    def _valid(self, now: float) -> bool:
        return self._token is not None and (self._expires is None or now < self._expires)

    async def get(self) -> str:
        """The current token, renewed first when it is due."""
        token, now = self._token, self._clock()
        if token is not None and (self._renew_at is None or now < self._renew_at):
            return token
        async with self._lock:
            now = self._clock()
            if self._token is not None and (self._renew_at is None or now < self._renew_at):
                return self._token
            try:
                await self._refresh()
            except ApiError as exc:
                if not self._valid(now):
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
                # The token is no good and none replaced it: the next get() logs in, paced by the backoff.
                self._token = None
                raise
            return True

    async def _refresh(self) -> None:
        now = self._clock()
        if (
            self._token is not None
            and self._region_id is not None
            and (self._expires is None or now < self._expires + RENEWABLE_AFTER_EXPIRY)
        ):
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
        try:
            regions = await self._call_login(now)
            region = choose_region(regions, self._auth.region)
        except ApiError as exc:
            self._login_failures += 1
            gap = min(self._min_gap * 2 ** (self._login_failures - 1), max(self._min_gap, LOGIN_BACKOFF_MAX))
            self._next_login = now + gap
            self._login_error = str(exc)
            self._observer.token_refresh("login", "failure")
            self._log.error(
                "cluster %s: %s login of user %s at %s failed: %s; next attempt in %.0fs",
                self._cluster,
                self._auth.kind,
                self._auth.user,
                self._auth.url,
                exc,
                gap,
                extra={"method": "login", "reason": exc.reason, "user": self._auth.user, "url": self._auth.url},
            )
            raise
        if self._login_failures:
            self._log.info(
                "cluster %s: login succeeded after %d failure(s)",
                self._cluster,
                self._login_failures,
                extra={"method": "login", "failures": self._login_failures},
            )
        self._login_failures = 0
        self._next_login = 0.0
        self._observer.token_refresh("login", "success")
        self._log.debug(
            "cluster %s: logged in to region %s",
            self._cluster,
            region.name,
            extra={"method": "login", "region": region.name},
        )
        assert region.token is not None
        self._adopt(region.token, region.cluster_id)

    async def _call_login(self, now: float) -> list[Any]:
        auth = self._auth
        if auth.kind == "password":
            password = (
                auth.password if auth.password is not None else _read_secret(str(auth.password_file), "password_file")
            )
            return await self._platform.login_password(auth.user, password, str(auth.org_id))
        secret = (
            auth.secret_key
            if auth.secret_key is not None
            else _read_secret(str(auth.secret_key_file), "secret_key_file")
        )
        return await self._platform.login_aksk(auth.user, str(auth.access_key), secret, int(now))

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


def token_provider(
    settings: TokenSettings,
    platform: PlatformClient | None = None,
    observer: TokenObserver | None = None,
    clock: Callable[[], float] = time.time,
) -> TokenProvider:
    """The TokenProvider ``settings`` ask for (``platform`` is needed with a login)."""
    if settings.login is not None:
        if platform is None:
            raise ValueError("a login needs a PlatformClient")
        return LoginToken(
            settings.cluster,
            settings.login,
            platform,
            min_login_gap=settings.login_gap,
            observer=observer,
            clock=clock,
        )
    if settings.token_file is not None:
        return FileToken(settings.token_file, settings.cluster, observer, clock)
    if settings.token is not None:
        return StaticToken(settings.token, settings.cluster, observer, clock)
    raise ValueError(f"cluster {settings.cluster} has no token source")  # config validation prevents this
