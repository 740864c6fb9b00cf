"""Where a request comes from: its Host, the proxies trusted to speak for a client, and
whether an Origin is this server's own.

uvicorn's own proxy-header handling is switched off (see ``webchat.server.runner``): it would
replace the peer address before the app sees it, and the trust decision of ``--auth proxy``
must be made on the peer itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

__all__ = [
    "LOOPBACK_HOSTS",
    "HostPolicy",
    "ProxyTrust",
    "host_name",
    "is_loopback",
    "request_origin",
    "same_origin",
]

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def is_loopback(host: str) -> bool:
    """Whether ``--host`` listens only on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(host_header: str) -> str:
    """The name part of a Host header (``[::1]:8000`` → ``::1``), lower-cased."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class HostPolicy:
    """The Host names the server answers to; ``*`` (or an empty list) answers any."""

    def __init__(self, allowed: Iterable[str]) -> None:
        names = {host_name(name) for name in allowed if name.strip()}
        self.any = not names or "*" in names
        self.names = frozenset(names)

    def allows(self, host_header: str | None) -> bool:
        if self.any:
            return True
        if not host_header:
            return False
        return host_name(host_header) in self.names


class ProxyTrust:
    """The reverse proxies (CIDRs) whose forwarded headers and user headers are believed."""

    def __init__(self, cidrs: Iterable[str]) -> None:
        self.networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(cidr.strip(), strict=False) for cidr in cidrs if cidr.strip()
        )

    def trusts(self, peer: str | None) -> bool:
        if not peer or not self.networks:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self.networks)


def request_origin(headers: Mapping[str, str]) -> str | None:
    """The browser-reported origin of a request: ``Origin``, else the origin of ``Referer``.
    ``Origin: null`` (sandboxed frames, some redirects) is an origin no server shares."""
    origin = headers.get("origin")
    if origin:
        return origin.rstrip("/")
    referer = headers.get("referer")
    if referer:
        parts = urlsplit(referer)
        if parts.scheme and parts.netloc:
            return f"{parts.scheme}://{parts.netloc}"
        return "null"
    return None


def same_origin(origin: str, host_header: str | None, allowed: Iterable[str] = ()) -> bool:
    """Whether ``origin`` is the server itself (same host and port) or explicitly allowed:
    the one check of HTTP requests (``webchat.server.security``) and WebSocket handshakes
    (``webchat.server.ws``). Scheme and host compare case-insensitively (RFC 3986, 3.1 and
    3.2.2), and a trailing ``/`` does not count, as in the ``allowed_origins`` setting."""
    origin = origin.strip().rstrip("/").lower()
    listed = {entry.rstrip("/").lower() for entry in allowed}
    if origin in listed or "*" in listed:
        return True
    if origin == "null" or not host_header:
        return False
    return urlsplit(origin).netloc == host_header.strip().lower()
