"""Where a cluster's token comes from: a static value, or a file that is re-read whenever it changes."""

from __future__ import annotations

import logging
import os
from typing import Protocol

from exporter.config import ClusterConfig, token_problem

log = logging.getLogger(__name__)


class TokenUnavailable(Exception):
    """No token can be had right now (the token file vanished, is unreadable or empty)."""


class TokenSource(Protocol):
    """Hands out the token to send; may change between calls."""

    def token(self) -> str: ...


class StaticToken:
    """A token given in the config (``token:``)."""

    def __init__(self, value: str) -> None:
        self._value = value

    def token(self) -> str:
        """The configured token."""
        return self._value

    def __repr__(self) -> str:
        return "StaticToken(<redacted>)"


class FileToken:
    """A token kept in a file (``token_file:``); re-read when its inode, size or mtime changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._value: str | None = None

    def token(self) -> str:
        """The file's current content, stripped; the file is only read again after it changed."""
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise TokenUnavailable(f"token_file {self.path}: {exc.strerror}") from None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp != self._stamp or self._value is None:
            try:
                with open(self.path, encoding="utf-8") as handle:
                    value = handle.read().strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise TokenUnavailable(
                    f"token_file {self.path}: {getattr(exc, 'strerror', None) or 'not UTF-8 text'}"
                ) from None
            problem = token_problem(value)
            if problem:
                raise TokenUnavailable(f"token_file {self.path}: the token {problem}")
            if self._stamp is not None:
                log.info("token_file %s changed; using the new token", self.path)
            self._stamp, self._value = stamp, value
        return self._value

    def __repr__(self) -> str:
        return f"FileToken({self.path!r})"


def token_source(cluster: ClusterConfig) -> TokenSource:
    """The TokenSource a cluster's config asks for."""
    if cluster.token_file is not None:
        return FileToken(cluster.token_file)
    if cluster.token is not None:
        return StaticToken(cluster.token)
    raise ValueError(f"cluster {cluster.name} has no token source")  # config validation prevents this
