"""Whom a request counts as: one canonical key per client address (rate limits, caps).

The address is what uvicorn put in the ASGI scope: the peer, or the X-Forwarded-For entry a
trusted proxy (T2A_TRUSTED_PROXIES) wrote, as raw text. Every spelling of one address must be
one client, or each spelling gets a fresh quota:

- IPv4 in any form `inet_aton` reads (`203.0.113.007`, `0xcb.0.113.7`, `3405803783`) and IPv4
  mapped into IPv6 (`::ffff:203.0.113.7`) is the dotted IPv4 address;
- IPv6 in any spelling (case, zeros, `::`, a zone `%eth0`) counts by its /64: one household or
  server usually holds a whole /64, and would otherwise have 2**64 quotas;
- anything else (`garbage`, an empty header) is one shared client, `unknown`, never a fresh one.
"""

from __future__ import annotations

import ipaddress
import socket

IPV6_CLIENT_PREFIX = 64


def client_address(text: str | None) -> str:
    """The canonical client key of an address: `203.0.113.7`, `2001:db8:1:2::/64` or
    `unknown`."""
    host = (text or "").strip().removeprefix("[").removesuffix("]").split("%")[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return _legacy_ipv4(host)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_CLIENT_PREFIX), strict=False))
    return str(ip)


def _legacy_ipv4(host: str) -> str:
    """The IPv4 forms `inet_aton` reads (octal, hex, fewer parts), else `unknown`."""
    if not host or not all(c.isalnum() or c == "." for c in host):
        return "unknown"
    try:
        return str(ipaddress.IPv4Address(socket.inet_aton(host)))
    except OSError:
        return "unknown"
