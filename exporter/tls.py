"""The HTTP server's TLS: a context built from the web config's certificate, key and settings, built again for new
connections when the PEM behind it changes, so that a renewed certificate is served without a reload.

Python's ssl module cannot set three of the exporter-toolkit's settings: a list of curves, asking for a client
certificate without checking it (RequestClientCert, RequireAnyClientCert), and a client certificate's SAN checked in
the handshake (client_allowed_sans). Those are set on OpenSSL's own context through ctypes, in the library the ssl
module is linked with."""

from __future__ import annotations

import _ssl
import contextlib
import ctypes
import ipaddress
import logging
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

AUTH_TYPES = ("NoClientCert", "RequestClientCert", "RequireAnyClientCert", "VerifyClientCertIfGiven",
              "RequireAndVerifyClientCert")  # fmt: skip
_VERIFY_PEER, _FAIL_IF_NO_PEER_CERT = 1, 2  # OpenSSL's SSL_VERIFY_* flags
_SET_GROUPS_LIST = 92  # SSL_CTRL_SET_GROUPS_LIST
_APPLICATION_VERIFICATION = 50  # X509_V_ERR_APPLICATION_VERIFICATION: the client's SAN is not allowed
_SAN_OID = b"\x55\x1d\x11"  # 2.5.29.17, subjectAltName


class TLSError(ValueError):
    """A setting or PEM the context cannot be built from: ``key`` (the tls_server_config key) and ``reason``."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key, self.reason = key, reason


@dataclass(frozen=True)
class Pem:
    """PEM text under config key ``key``: in the file ``path``, or given inline as ``text`` (never shown)."""

    key: str
    path: str | None = None
    text: str = field(default="", repr=False)

    def read(self) -> bytes:
        if self.path is None:
            return self.text.encode()
        try:
            with open(self.path, "rb") as handle:
                return handle.read()
        except OSError as exc:
            raise TLSError(self.key, f"cannot read {self.path}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class Settings:
    """What the context is built from. ``ciphers`` and ``groups`` are OpenSSL's names (empty: OpenSSL's defaults);
    ``allowed_sans`` None checks no SAN."""

    cert: Pem
    key: Pem
    client_ca: Pem | None = None
    client_auth: str = "NoClientCert"
    allowed_sans: tuple[str, ...] | None = None
    ciphers: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3
    prefer_server_ciphers: bool = True

    def read(self) -> tuple[bytes, ...]:
        """The PEM of the certificate, the key and the client CA, as they are now."""
        return tuple(pem.read() for pem in (self.cert, self.key, self.client_ca) if pem is not None)


class ServerTLS:
    """The context for each new connection. The PEM is read again for every new connection (a few small files, as
    the toolkit does); when it changed, the context is built again. A change that does not build keeps the last good
    context serving and is logged once. Raises TLSError if the first context cannot be built."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pems = settings.read()
        self._context = build(settings, self._pems)
        self._broken: tuple[bytes, ...] = ()
        self._logged = ""

    def context(self) -> ssl.SSLContext:
        try:
            pems = self.settings.read()
            if pems == self._pems or pems == self._broken:
                return self._context
            self._broken = pems
            context = build(self.settings, pems)
        except TLSError as exc:
            if str(exc) != self._logged:
                self._logged = str(exc)
                message = "tls_server_config.%s changed and cannot be used: %s; new connections keep the previous one"
                log.warning(message, exc.key, exc.reason, extra={"key": exc.key, "reason": exc.reason})
            return self._context
        self._pems, self._context, self._broken, self._logged = pems, context, (), ""
        log.info("the TLS certificate files changed: new connections get the new certificate")
        return context


class _Context(ssl.SSLContext):
    verifier: object = None  # OpenSSL calls it for as long as the context lives, so the context holds it


def build(settings: Settings, pems: tuple[bytes, ...]) -> ssl.SSLContext:
    """A server context from ``settings`` and the PEM read for them (Settings.read)."""
    cert, key, *ca = pems
    context = _Context(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version, context.maximum_version = settings.min_version, settings.max_version
    if settings.ciphers:
        try:
            context.set_ciphers(":".join(settings.ciphers))
        except ssl.SSLError:
            raise TLSError("cipher_suites", "none of them is offered by this OpenSSL") from None
    if settings.prefer_server_ciphers:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=cert.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError):
        raise TLSError(settings.cert.key, "no PEM certificate in it") from None
    with _memory_file(cert, settings.cert.key) as cert_path, _memory_file(key, settings.key.key) as key_path:
        try:
            context.load_cert_chain(cert_path, key_path)
        except ssl.SSLError:
            why = "not the private key of the certificate" if b"PRIVATE KEY-----" in key else "no PEM private key in it"
            raise TLSError(settings.key.key, why) from None
    checks = settings.client_auth in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert")
    if ca:
        try:
            context.load_verify_locations(cadata=ca[0].decode("ascii", "replace"))
        except (ssl.SSLError, ValueError):
            raise TLSError(settings.client_ca.key if settings.client_ca else "", "no PEM certificate in it") from None
    elif checks:
        context.load_default_certs(ssl.Purpose.CLIENT_AUTH)  # the system's CAs, as Go takes them when none is given
    context.verify_mode = {
        "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
        "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
    }.get(settings.client_auth, ssl.CERT_NONE)
    _set_openssl(context, settings, checks)
    return context


@contextlib.contextmanager
def _memory_file(data: bytes, key: str) -> Iterator[str]:
    """``data`` as a path that no other process can open (Linux memfd): ssl loads a certificate chain only from
    a path, and an inline key must not touch the disk."""
    try:
        fd = os.memfd_create("pem", os.MFD_CLOEXEC)
    except OSError as exc:
        raise TLSError(key, f"cannot hold the PEM in memory: {exc.strerror or exc}") from None
    try:
        os.write(fd, data)
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


# OpenSSL through ctypes. dlsym on the ssl module's extension finds the libssl and libcrypto it is linked with.
_lib = ctypes.CDLL(_ssl.__file__)
_VERIFY_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
for _name, _result, _args in (
    ("SSL_CTX_get_options", ctypes.c_uint64, [ctypes.c_void_p]),
    ("SSL_CTX_ctrl", ctypes.c_long, [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_char_p]),
    ("SSL_CTX_set_verify", None, [ctypes.c_void_p, ctypes.c_int, _VERIFY_CALLBACK]),
    ("X509_STORE_CTX_get_error_depth", ctypes.c_int, [ctypes.c_void_p]),
    ("X509_STORE_CTX_set_error", None, [ctypes.c_void_p, ctypes.c_int]),
    ("X509_STORE_CTX_get_current_cert", ctypes.c_void_p, [ctypes.c_void_p]),
    ("i2d_X509", ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]),
):
    getattr(_lib, _name).restype, getattr(_lib, _name).argtypes = _result, _args


def _openssl_context(context: ssl.SSLContext, key: str) -> int:
    """The SSL_CTX pointer behind ``context`` (CPython keeps it first after the object header), proved by reading the
    options through it while they change."""
    pointer = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value or 0
    for _ in range(3):
        if not pointer or _lib.SSL_CTX_get_options(pointer) != context.options:
            raise TLSError(key, "cannot be set: this Python's ssl module does not let OpenSSL's context be reached")
        context.options ^= ssl.OP_NO_TICKET
    context.options ^= ssl.OP_NO_TICKET  # flipped three times: back as it was
    return pointer


def _set_openssl(context: _Context, settings: Settings, checks: bool) -> None:
    asks = settings.client_auth != "NoClientCert"
    own_check = settings.client_auth in ("RequestClientCert", "RequireAnyClientCert") or (
        asks and settings.allowed_sans is not None
    )
    if not settings.groups and not own_check:
        return
    pointer = _openssl_context(context, "curve_preferences" if settings.groups else "client_auth_type")
    if settings.groups and _lib.SSL_CTX_ctrl(pointer, _SET_GROUPS_LIST, 0, ":".join(settings.groups).encode()) != 1:
        raise TLSError("curve_preferences", "not supported by this OpenSSL")
    if own_check:
        required = settings.allowed_sans is not None or settings.client_auth in (
            "RequireAnyClientCert",
            "RequireAndVerifyClientCert",
        )
        context.verifier = _verifier(checks, settings.allowed_sans)
        _lib.SSL_CTX_set_verify(pointer, _VERIFY_PEER | (_FAIL_IF_NO_PEER_CERT if required else 0), context.verifier)


def _verifier(checks: bool, allowed: tuple[str, ...] | None) -> object:
    """OpenSSL's check of a client certificate: the chain as OpenSSL found it when ``checks`` (else any certificate
    passes), then the certificate's SANs against ``allowed``."""

    def verify(ok: int, store: int) -> int:
        try:
            if checks and not ok:
                return 0
            leaf = _lib.X509_STORE_CTX_get_error_depth(store) == 0
            if allowed is not None and leaf and not set(subject_alt_names(_der(store))) & set(allowed):
                _lib.X509_STORE_CTX_set_error(store, _APPLICATION_VERIFICATION)
                return 0
            if not ok:
                _lib.X509_STORE_CTX_set_error(store, 0)  # so that the ssl module shows the certificate it took
            return 1
        except Exception:
            log.exception("checking a client certificate failed")
            return 0

    return _VERIFY_CALLBACK(verify)


def _der(store: int) -> bytes:
    cert = _lib.X509_STORE_CTX_get_current_cert(store)
    size = _lib.i2d_X509(cert, None)
    buffer = ctypes.create_string_buffer(max(size, 0))
    _lib.i2d_X509(cert, ctypes.byref(ctypes.c_void_p(ctypes.addressof(buffer))))
    return buffer.raw


def _items(der: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """The DER items between ``start`` and ``end``: (tag, start of content, end of content)."""
    while start < end:
        tag, size, start = der[start], der[start + 1], start + 2
        if size & 0x80:
            count = size & 0x7F
            size, start = int.from_bytes(der[start : start + count], "big"), start + count
        if start + size > end:
            raise ValueError("a DER item runs past its container")
        yield tag, start, start + size
        start += size


def subject_alt_names(der: bytes) -> list[str]:
    """The DNS names, e-mail addresses, IP addresses and URIs of a DER certificate's subjectAltName, written as Go
    writes them (the toolkit compares those strings)."""
    _, cert_start, cert_end = next(_items(der, 0, len(der)))  # Certificate
    _, tbs_start, tbs_end = next(_items(der, cert_start, cert_end))  # TBSCertificate
    names: list[str] = []
    for tag, start, end in _items(der, tbs_start, tbs_end):
        if tag != 0xA3:  # [3] extensions
            continue
        _, list_start, list_end = next(_items(der, start, end))
        for _, ext_start, ext_end in _items(der, list_start, list_end):
            parts = list(_items(der, ext_start, ext_end))  # OID, critical?, OCTET STRING
            if der[parts[0][1] : parts[0][2]] != _SAN_OID:
                continue
            _, value_start, value_end = next(_items(der, parts[-1][1], parts[-1][2]))
            for kind, a, b in _items(der, value_start, value_end):
                if kind in (0x81, 0x82, 0x86):  # rfc822Name, dNSName, uniformResourceIdentifier
                    names.append(der[a:b].decode("ascii", "replace"))
                elif kind == 0x87:  # iPAddress
                    ip = ipaddress.ip_address(der[a:b])
                    names.append(str(getattr(ip, "ipv4_mapped", None) or ip))
    return names
