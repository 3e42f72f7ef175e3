"""The exporter's own transport under httpx, for every request: keep-alive HTTP/1.1 over asyncio, TLS, and the
proxies the environment names. Failures are the exceptions httpx's own transport raises; a body over ``max_body``
is BodyTooLarge. Why the exporter keeps a transport of its own: bench/RESULTS.md, issue 25."""

from __future__ import annotations

import asyncio
import base64
import ssl
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import httpx

from exporter.sugon.connection import MAX_BODY, MAX_HEAD, ClientConnection, NoAnswer
from exporter.values import is_header

_DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int]


def check_header(name: str, value: str) -> None:
    """LocalProtocolError for a header that breaks the one header rule (values.is_header), naming the header
    but never quoting its value, which may be a secret."""
    if not is_header(name, value):
        raise httpx.LocalProtocolError(f"header {name[:40]!r} has a character HTTP does not allow")


@dataclass(frozen=True)
class Proxy:
    """A forwarding proxy: where it listens, and the Proxy-Authorization value its URL's credentials make."""

    host: str
    port: int
    authorization: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return f"proxy {self.host}:{self.port}"


def route(url: httpx.URL, proxies: Mapping[str, str]) -> Proxy | None:
    """The proxy that ``proxies`` (as urllib.request.getproxies_environment() gives them) name for ``url``, its
    scheme's or ALL_PROXY's; None (direct) when there is none or NO_PROXY names the host. Errors never quote the
    proxy URL, which may hold a password."""
    name = proxies.get(url.scheme) or proxies.get("all")
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]  # not in typeshed's stubs
    if not name or bypass(url.netloc.decode("ascii"), proxies):
        return None
    parts = urlsplit(name if "://" in name else "http://" + name)
    if parts.scheme != "http":
        raise httpx.ProxyError(f"proxy scheme {parts.scheme[:20]!r} is not supported, only http://")
    try:
        port = parts.port or 80
    except ValueError:
        raise httpx.ProxyError("the proxy URL has a port that is not a number from 0 to 65535") from None
    if not parts.hostname:
        raise httpx.ProxyError("the proxy URL names no host")
    authorization = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        authorization = "Basic " + base64.b64encode(pair).decode("ascii")
    return Proxy(host=parts.hostname, port=port, authorization=authorization)


def _request_head(request: httpx.Request, body: bytes, proxy: Proxy | None) -> bytes:
    url = request.url
    target = url.raw_path
    lines: list[bytes] = []
    if proxy is not None and url.scheme == "http":  # absolute form, as a proxy is asked
        target = b"http://" + url.netloc + url.raw_path
        if proxy.authorization:
            lines.append(b"Proxy-Authorization: " + proxy.authorization.encode("ascii"))
    for name, value in request.headers.raw:
        check_header(name.decode("latin-1"), value.decode("latin-1"))
        if name.lower() not in (b"content-length", b"transfer-encoding"):  # the body goes whole, with its length
            lines.append(b"%s: %s" % (name, value))
    if body or request.method in ("POST", "PUT", "PATCH"):
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join([b"%s %s HTTP/1.1" % (request.method.encode("ascii"), target), *lines, b"\r\n"])


class LeanTransport(httpx.AsyncBaseTransport):
    """Keep-alive HTTP/1.1 over asyncio, at most ``max_connections`` requests at a time; a request met by a
    kept-alive connection the server had dropped goes once more on a fresh one. ``proxies`` maps a scheme (and
    "all", "no") to a proxy URL; None: what the environment names, read once."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 8,
        max_body: int = MAX_BODY,
        proxies: Mapping[str, str] | None = None,
    ) -> None:
        self._ssl = ssl_context
        self._proxies = dict(urllib.request.getproxies_environment() if proxies is None else proxies)
        self._max_connections = max_connections
        self._slots = asyncio.Semaphore(max_connections)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: dict[Origin, list[ClientConnection]] = {}
        self._max_body = max_body
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if self._closed:
            raise httpx.ConnectError("transport is closed")
        if url.scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}")
        origin = (url.scheme, url.raw_host.decode("ascii"), url.port or _DEFAULT_PORTS[url.scheme])
        proxy = route(url, self._proxies)
        body = await request.aread()
        data = _request_head(request, body, proxy) + body
        timeouts = request.extensions.get("timeout", {})
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # used from another event loop: what belonged to the old one is useless
            self._loop, self._slots = loop, asyncio.Semaphore(self._max_connections)
            self._drop_idle()
        async with self._slots:
            answer = None
            conn = self._take_idle(origin)
            if conn is not None:  # None back: the server had dropped it, so once more on a fresh one
                answer = await self._exchange(conn, data, request.method, origin, timeouts.get("read"), reused=True)
            if answer is None:
                conn = await self._connect(origin, proxy, timeouts.get("connect"))
                answer = await self._exchange(conn, data, request.method, origin, timeouts.get("read"), reused=False)
        assert answer is not None  # a fresh connection gives an answer or raises
        return answer

    def _take_idle(self, origin: Origin) -> ClientConnection | None:
        """A kept-alive connection to ``origin`` that nothing arrived on since its last answer."""
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if conn.wake():
                return conn
        return None

    async def _connect(self, origin: Origin, proxy: Proxy | None, timeout: float | None) -> ClientConnection:
        scheme, host, port = origin
        tls = (self._ssl or ssl.create_default_context()) if scheme == "https" else None
        through = f" (through {proxy})" if proxy is not None else ""
        try:
            return await asyncio.wait_for(self._open(host, port, tls, proxy), timeout)
        except asyncio.TimeoutError:
            raise httpx.ConnectTimeout(f"no connection within {timeout:g}s{through}") from None
        except OSError as exc:  # ssl.SSLError too
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}{through}") from None

    async def _open(self, host: str, port: int, tls: ssl.SSLContext | None, proxy: Proxy | None) -> ClientConnection:
        loop = asyncio.get_running_loop()
        if proxy is None:
            _, conn = await loop.create_connection(
                ClientConnection, host, port, ssl=tls, server_hostname=host if tls else None
            )
            return conn
        _, conn = await loop.create_connection(ClientConnection, proxy.host, proxy.port)
        if tls is not None:
            try:
                await self._tunnel(conn, proxy, host, port, tls)
            except BaseException:
                conn.abort()
                raise
        return conn

    @staticmethod
    async def _tunnel(conn: ClientConnection, proxy: Proxy, host: str, port: int, tls: ssl.SSLContext) -> None:
        """Ask ``proxy`` over ``conn`` for a tunnel to host:port (CONNECT), then TLS to the host through it."""
        target = (f"[{host}]:{port}" if ":" in host else f"{host}:{port}").encode("ascii")
        lines = [b"CONNECT %s HTTP/1.1" % target, b"Host: %s" % target]
        if proxy.authorization:
            lines.append(b"Proxy-Authorization: " + proxy.authorization.encode("ascii"))
        conn.send(b"\r\n".join([*lines, b"\r\n"]))
        try:
            answer = await conn.read_response("CONNECT", MAX_HEAD)
        except NoAnswer:
            raise httpx.ProxyError(f"{proxy} closed the connection without answering CONNECT") from None
        except httpx.HTTPError as exc:
            raise httpx.ProxyError(f"{proxy} gave no proper answer to CONNECT: {exc}") from None
        if not 200 <= answer.status_code < 300:
            reason = answer.reason_phrase[:60]
            raise httpx.ProxyError(f"{proxy} refused CONNECT {target.decode()}: HTTP {answer.status_code} {reason}")
        if conn.buffer:
            raise httpx.ProxyError(f"{proxy} sent bytes after its answer to CONNECT")
        await conn.start_tls(tls, host)

    async def _exchange(
        self, conn: ClientConnection, data: bytes, method: str, origin: Origin, read_timeout: float | None, reused: bool
    ) -> httpx.Response | None:
        """The answer on ``conn``; None when ``reused`` and the server had already dropped it (it ended before any
        answer, or answered 408)."""
        keep = False
        try:
            conn.send(data)
            response = await asyncio.wait_for(conn.read_response(method, self._max_body), read_timeout)
            if reused and response.status_code == 408:  # the server's idle timeout, met as we sent
                return None
            keep = conn.reusable and not conn.buffer  # bytes after an answer (a duplicate, a stray CRLF): never reuse
        except asyncio.TimeoutError:
            raise httpx.ReadTimeout(f"no answer within {read_timeout:g}s") from None
        except NoAnswer as exc:
            if reused and exc.stale:
                return None
            if exc.error is None:
                raise httpx.RemoteProtocolError("server closed the connection without an answer") from None
            raise httpx.ReadError(f"{type(exc.error).__name__}: {exc.error}") from None
        finally:
            if not keep:
                conn.close()
        idle = self._idle.setdefault(origin, [])
        if len(idle) < self._max_connections and not self._closed:
            conn.rest()
            idle.append(conn)
        else:
            conn.close()
        return response

    def _drop_idle(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                try:
                    conn.close()
                except RuntimeError:  # its event loop is already closed
                    pass
        self._idle.clear()

    async def aclose(self) -> None:
        self._closed = True
        self._drop_idle()
