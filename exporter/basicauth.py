"""Basic auth for the web server, without letting a flood of passwords tie up the server's workers."""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import os
import threading
from collections import OrderedDict

import bcrypt


class Verdict(enum.Enum):
    """What BasicAuth makes of a request's credentials."""

    ALLOW = "allow"
    DENY = "deny"
    BUSY = "busy"  # too many checks wait for bcrypt already: answer 503 at once rather than queue


class BasicAuth:
    """Checks ``Authorization: Basic`` against bcrypt hashes: verdicts remembered (the last ``FAILED_KEPT`` wrong
    ones), one check at a time, BUSY beyond ``max_pending``; unknown users cost as much as known ones."""

    FAILED_KEPT = 4096

    def __init__(self, users: dict[str, bytes], max_pending: int = 4) -> None:
        self._users = users
        cost = max((int(hashed[4:6]) for hashed in users.values()), default=10)  # 12 in $2b$12$...
        self._dummy = bcrypt.hashpw(os.urandom(16), bcrypt.gensalt(rounds=cost))
        self._key = os.urandom(32)  # fingerprints of pairs are keyed: no password's plain hash sits in memory
        self._ok: set[bytes] = set()
        self._failed: OrderedDict[bytes, None] = OrderedDict()  # the oldest first
        self._pending = threading.Semaphore(max_pending)  # checks that run or wait
        self._bcrypt = threading.Lock()  # one check at a time; the only writer of the two above

    def check(self, header: str | None) -> Verdict:
        """ALLOW, DENY, or BUSY when too many bcrypt checks are waiting; never raises on what a client sends."""
        pair = _credentials(header)
        if pair is None:
            return Verdict.DENY
        user, password = pair
        hashed = self._users.get(user)
        fingerprint = hmac.new(self._key, b"\0".join((user.encode(), password, hashed or b"")), hashlib.sha256).digest()
        known = self._known(fingerprint, hashed)
        if known is not None:
            return known
        if not self._pending.acquire(blocking=False):
            return Verdict.BUSY
        try:
            with self._bcrypt:
                known = self._known(fingerprint, hashed)  # another thread may have checked it while this one waited
                return known if known is not None else self._verify(fingerprint, password, hashed)
        finally:
            self._pending.release()

    def _known(self, fingerprint: bytes, hashed: bytes | None) -> Verdict | None:
        if hashed is not None and fingerprint in self._ok:
            return Verdict.ALLOW
        return Verdict.DENY if fingerprint in self._failed else None

    def _verify(self, fingerprint: bytes, password: bytes, hashed: bytes | None) -> Verdict:
        """bcrypt's verdict on a pair, remembered."""
        try:
            ok = bcrypt.checkpw(password, hashed if hashed is not None else self._dummy) and hashed is not None
        except ValueError:  # bcrypt 5 refuses passwords over 72 bytes
            ok = False
        if ok:
            self._ok.add(fingerprint)
            return Verdict.ALLOW
        self._failed[fingerprint] = None
        while len(self._failed) > self.FAILED_KEPT:
            self._failed.popitem(last=False)
        return Verdict.DENY


def _credentials(header: str | None) -> tuple[str, bytes] | None:
    """(user, password) of a Basic Authorization header (the scheme in any case), or None."""
    scheme, _, encoded = (header or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
        user, sep, password = decoded.decode("utf-8").partition(":")
    except ValueError:  # not ASCII, not base64 or not UTF-8
        return None
    return (user, password.encode("utf-8")) if sep else None
