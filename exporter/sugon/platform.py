"""The AC host (the platform): logging in, renewing tokens, and finding a region's HPC URL."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

from exporter.sugon.conversation import ApiAuthError, ApiInvalidResponse, Conversation
from exporter.values import normalise_api_url, split_credentials, token_problem

PASSWORD_LOGIN_PATH = "/ac/openapi/v2/tokens"
AKSK_LOGIN_PATH = "/api/user/v3/tokens"
RENEW_PATH = "/ac/openapi/v2/tokens/next"
CENTER_PATH = "/ac/openapi/v2/center"


@dataclass(frozen=True)
class RegionToken:
    """One entry of a login answer: a region and the account's token there (None where it is suspended)."""

    cluster_id: str
    name: str
    token: str | None = field(default=None, repr=False)

    @property
    def is_platform(self) -> bool:
        """The platform's own entry (clusterId 0 / "ac"): its token is not for the job APIs."""
        return self.cluster_id == "0" or self.name == "ac"


@dataclass(frozen=True)
class Center:
    """What ``/center`` says about a region: its HPC URL and the account's cluster user name."""

    hpc_url: str  # without userinfo
    user_name: str | None
    hpc_authorization: str | None = field(default=None, repr=False)  # Basic credentials from the URL's userinfo


def parse_regions(data: Any) -> list[RegionToken]:
    """The region entries of a login (or ``tokens/next``) answer; clusterId may be a string or a number."""
    if not isinstance(data, list):
        raise ApiInvalidResponse(f"login data is {type(data).__name__}, not a list")
    regions = []
    for item in data:
        raw = item.get("clusterId") if isinstance(item, dict) else None
        cluster_id = str(raw).strip() if isinstance(raw, (int, str)) and not isinstance(raw, bool) else ""
        if not cluster_id:
            continue
        name, token = item.get("clusterName"), item.get("token")
        name = name.strip() if isinstance(name, str) else ""
        token = token.strip() if isinstance(token, str) else ""
        problem = token_problem(token) if token else None
        if problem:
            raise ApiInvalidResponse(f"the token for region {cluster_id} {problem}")
        regions.append(RegionToken(cluster_id=cluster_id, name=name or cluster_id, token=token or None))
    return regions


def choose_region(regions: list[RegionToken], wanted: str | None) -> RegionToken:
    """The region to use: ``wanted`` by clusterId or clusterName, or the only usable one when not given."""
    named = [r for r in regions if not r.is_platform]
    listed = ", ".join(r.name + ("" if r.token else " (no token)") for r in named) or "none"
    if wanted is not None:
        for region in named:
            if wanted in (region.cluster_id, region.name):
                if region.token is None:
                    raise ApiAuthError(f'region "{wanted}" has no token for this account (suspended there?)')
                return region
        raise ApiAuthError(f'region "{wanted}" is not among the regions the login returned: {listed}')
    usable = [r for r in named if r.token]
    if len(usable) != 1:
        raise ApiAuthError(
            f"the login returned {len(usable)} usable regions ({listed}); set auth.region to one of them"
        )
    return usable[0]


def parse_renewal(data: Any, region_id: str) -> str:
    """The new token from ``tokens/next``: a plain token string, or a login-like list (our region's entry)."""
    if isinstance(data, str) and data.strip():
        problem = token_problem(data.strip())
        if problem:
            raise ApiInvalidResponse(f"tokens/next answered a token that {problem}")
        return data.strip()
    regions = [r for r in parse_regions(data) if r.token and not r.is_platform]
    ours = [r for r in regions if r.cluster_id == region_id] or (regions if len(regions) == 1 else [])
    if not ours:
        raise ApiInvalidResponse(f"tokens/next answer has no token for region {region_id}")
    return str(ours[0].token)


def parse_center(data: Any) -> Center:
    """The first enabled HPC URL (``enable`` is the string "true") and the cluster user name."""
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = data[0]  # documented as a list, served as an object: accept both
    if not isinstance(data, dict):
        raise ApiInvalidResponse(f"center data is {type(data).__name__}, not an object")
    urls = data.get("hpcUrls")
    for entry in urls if isinstance(urls, list) else []:
        if not isinstance(entry, dict):
            continue
        enabled = entry.get("enable")
        url = entry.get("url")
        on = enabled is True or (isinstance(enabled, str) and enabled.strip().lower() == "true")
        if on and isinstance(url, str) and url.strip().startswith(("http://", "https://")):
            info = data.get("clusterUserInfo")
            user = info.get("userName") if isinstance(info, dict) else None
            hpc_url, authorization = split_credentials(url.strip())
            user = user if isinstance(user, str) and user else None
            return Center(hpc_url=normalise_api_url(hpc_url), user_name=user, hpc_authorization=authorization)
    raise ApiInvalidResponse("center lists no enabled hpcUrls entry")


def aksk_signature(access_key: str, secret_key: str, user: str, timestamp: str) -> str:
    """Lower-case hex HMAC-SHA256, keyed with the secret key, over the compact sorted-key JSON of the three fields."""
    message = json.dumps(
        {"accessKey": access_key, "timestamp": timestamp, "user": user}, separators=(",", ":"), sort_keys=True
    )
    return hmac.new(secret_key.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).hexdigest()


class PlatformClient:
    """Calls the AC host; a login refused with any non-zero code is an ApiAuthError carrying the server's msg."""

    def __init__(self, url: str, conversation: Conversation, authorization: str | None = None) -> None:
        self.url = url.rstrip("/")  # without userinfo: that is ``authorization``, sent with every request
        self._conversation = conversation
        self._gateway = {"Authorization": authorization} if authorization else {}

    async def _call(self, method: str, path: str, headers: dict[str, str]) -> Any:
        """Every POST here sends credentials: any non-zero code refuses them."""
        headers = {**self._gateway, **headers}
        return await self._conversation.call(method, self.url + path, headers=headers, refusal_is_auth=method == "POST")

    async def login_password(self, user: str, password: str, org_id: str) -> list[RegionToken]:
        """``POST /ac/openapi/v2/tokens`` with the credentials in headers."""
        return parse_regions(
            await self._call("POST", PASSWORD_LOGIN_PATH, {"user": user, "password": password, "orgId": org_id})
        )

    async def login_aksk(self, user: str, access_key: str, secret_key: str, timestamp: int) -> list[RegionToken]:
        """``POST /api/user/v3/tokens`` signed with the secret key (which is never sent)."""
        stamp = str(timestamp)
        signature = aksk_signature(access_key, secret_key, user, stamp)
        headers = {"user": user, "accessKey": access_key, "timestamp": stamp, "signature": signature}
        return parse_regions(await self._call("POST", AKSK_LOGIN_PATH, headers))

    async def renew(self, token: str, region_id: str) -> str:
        """``POST /ac/openapi/v2/tokens/next``: a new token for the same region."""
        return parse_renewal(await self._call("POST", RENEW_PATH, {"token": token}), region_id)

    async def center(self, token: str) -> Center:
        """``GET /ac/openapi/v2/center`` with a region token."""
        return parse_center(await self._call("GET", CENTER_PATH, {"token": token}))
