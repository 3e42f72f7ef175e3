"""The simulated AC host: accounts, password and AK/SK logins, JWT-shaped tokens that expire, renewal, /center."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PLATFORM = ("0", "ac")
SUSPENDED = ("11251", "西北一区【西安】")
RENEWABLE_AFTER_EXPIRY = 24 * 3600
AKSK_SKEW = 300


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Issued:
    """What the platform remembers of a token it issued."""

    user: str
    region_id: str
    expires: float


class SimPlatform:
    """Logins and tokens of one simulated platform with one usable region (plus the platform entry and a suspended one)."""

    def __init__(
        self,
        region_id: str = "11250",
        region_name: str = "华东一区【昆山】",
        passwords: dict[str, str] | None = None,
        org_id: str = "sim-org",
        access_keys: dict[str, tuple[str, str]] | None = None,
        token_lifetime: float = 3600.0,
        renew_shape: str = "list",
        ids_as_numbers: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.region_id = region_id
        self.region_name = region_name
        self.passwords = passwords if passwords is not None else {"alice": "alice-password"}
        self.org_id = org_id
        self.access_keys = access_keys if access_keys is not None else {"sim-ak": ("bob", "sim-sk")}
        self.token_lifetime = token_lifetime
        self.renew_shape = renew_shape
        self.ids_as_numbers = ids_as_numbers
        self.clock = clock
        self._lock = threading.Lock()
        self._issued: dict[str, Issued] = {}
        self._serial = itertools.count(1)
        self.logins = 0
        self.failed_logins = 0
        self.renewals = 0

    def _token(self, user: str, region_id: str) -> str:
        expires = self.clock() + self.token_lifetime
        payload = {
            "computeUser": user,
            "accountStatus": "Trial",
            "creator": "ac",
            "role": "1",
            "expireTime": str(int(expires * 1000)),
            "clusterId": region_id,
            "user": user,
            "serial": next(self._serial),
        }
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        token = f"{header}.{_b64(json.dumps(payload).encode())}.{_b64(secrets.token_bytes(32))}"
        self._issued[token] = Issued(user, region_id, expires)
        return token

    def _cid(self, value: str) -> str | int:
        return int(value) if self.ids_as_numbers else value

    def _login_answer(self, user: str) -> list[dict[str, Any]]:
        return [
            {"clusterId": self._cid(PLATFORM[0]), "clusterName": PLATFORM[1], "token": self._token(user, PLATFORM[0])},
            {
                "clusterId": self._cid(self.region_id),
                "clusterName": self.region_name,
                "token": self._token(user, self.region_id),
            },
            {"clusterId": self._cid(SUSPENDED[0]), "clusterName": SUSPENDED[1], "token": None},
        ]

    def issued_tokens(self) -> list[str]:
        """Every token issued so far (tests grep output for them)."""
        with self._lock:
            return list(self._issued)

    def region_token_user(self, token: str | None) -> str | None:
        """The user of a valid, unexpired token for this region (the job APIs accept only those), else None."""
        with self._lock:
            issued = self._issued.get(token or "")
            if issued is None or issued.region_id != self.region_id or self.clock() >= issued.expires:
                return None
            return issued.user

    def handle(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]] | None:
        """Answer an AC-host request, or None if the path is not the platform's."""
        with self._lock:
            if method == "POST" and path == "/ac/openapi/v2/tokens":
                self.logins += 1
                user = headers.get("user", "")
                if self.passwords.get(user) != headers.get("password") or headers.get("orgid") != self.org_id:
                    self.failed_logins += 1
                    return 200, {"code": "10004", "msg": "用户名或密码错误", "data": None}
                return 200, {"code": "0", "msg": "success", "data": self._login_answer(user)}
            if method == "POST" and path == "/api/user/v3/tokens":
                self.logins += 1
                return 200, self._aksk(headers)
            if method == "POST" and path == "/ac/openapi/v2/tokens/next":
                return 200, self._renew(headers.get("token", ""))
            if method == "GET" and path == "/ac/openapi/v2/tokens/state":
                issued = self._issued.get(headers.get("token", ""))
                if issued is None or self.clock() >= issued.expires:
                    return 200, {"msg": "auth_fail", "code": "10008", "data": "token is invalid"}
                return 200, {"code": "0", "msg": "success", "data": "token is valid"}
            return None

    def _aksk(self, headers: dict[str, str]) -> dict[str, Any]:
        key, stamp, user = headers.get("accesskey", ""), headers.get("timestamp", ""), headers.get("user", "")
        owner = self.access_keys.get(key)
        fail = {"code": "10004", "msg": "签名校验失败", "data": None}
        if owner is None or owner[0] != user or not stamp.isdigit() or abs(self.clock() - int(stamp)) > AKSK_SKEW:
            self.failed_logins += 1
            return fail
        message = json.dumps(
            {"accessKey": key, "timestamp": stamp, "user": user}, separators=(",", ":"), sort_keys=True
        )
        expected = hmac.new(owner[1].encode(), message.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, headers.get("signature", "")):
            self.failed_logins += 1
            return fail
        return {"code": "0", "msg": "success", "data": self._login_answer(user)}

    def _renew(self, token: str) -> dict[str, Any]:
        issued = self._issued.get(token)
        if issued is None or self.clock() >= issued.expires + RENEWABLE_AFTER_EXPIRY:
            return {"msg": "auth_fail", "code": "10008", "data": "token is invalid"}
        self.renewals += 1
        if self.renew_shape == "string":
            return {"code": "0", "msg": "success", "data": self._token(issued.user, issued.region_id)}
        return {"code": "0", "msg": "success", "data": self._login_answer(issued.user)}

    def center(self, token: str | None, hpc_url: str) -> dict[str, Any]:
        """``/center``: the region's URLs, a disabled one first (``enable`` is a string)."""
        with self._lock:
            issued = self._issued.get(token or "")
            if issued is None or self.clock() >= issued.expires:
                return {"msg": "auth_fail", "code": "10008", "data": "token is invalid"}
            if issued.region_id != self.region_id:
                return {"code": "10001", "msg": "内部错误", "data": None}
            return {
                "code": "0",
                "msg": "success",
                "data": {
                    "hpcUrls": [
                        {"url": "https://retired.hpc.invalid:65106/hpc", "enable": "false", "type": "hpc"},
                        {"url": hpc_url + "/hpc", "enable": "true", "type": "hpc"},
                    ],
                    "efileUrls": [{"url": hpc_url + "/efile", "enable": "true"}],
                    "aiUrls": [],
                    "clusterUserInfo": {"userName": issued.user},
                },
            }
