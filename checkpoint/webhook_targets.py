"""Where a run's webhook may be posted. Anyone holding an API token names the URL, and the
server posts to it from inside the network it runs in, so a URL must not reach what only
that network should: the cloud metadata service (link-local 169.254.0.0/16 and fe80::/10,
fd00:ec2::254, 100.100.100.200) is refused always, as are addresses nothing legitimate
listens on (unspecified, multicast, reserved). Loopback and private addresses are allowed
(a self-hosted receiver on the same machine or LAN), unless SIGNOFF_WEBHOOK_ALLOW_PRIVATE=0,
for servers whose neighbours must not be reachable by token holders.

The host is resolved and every address it resolves to is checked, when the run is created
and again before each attempt (a name may be pointed elsewhere after it was accepted)."""

from __future__ import annotations

import ipaddress
import socket
from typing import Mapping
from urllib.parse import urlsplit

#: Metadata services that are not link-local (AWS's IPv6 one, Alibaba Cloud's).
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")})
ALLOW_PRIVATE = "SIGNOFF_WEBHOOK_ALLOW_PRIVATE"


class RefusedTarget(ValueError):
    """The URL may not be posted to; the message says why, in one line."""


def private_allowed(environ: Mapping[str, str]) -> bool:
    return (environ.get(ALLOW_PRIVATE) or "1").strip().lower() not in ("0", "false", "no", "off")


def check_url(url: str, environ: Mapping[str, str]) -> None:
    """RefusedTarget unless `url` is an http(s) URL whose host resolves only to addresses a
    webhook may reach."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RefusedTarget("webhook must be an http(s):// URL with a host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise RefusedTarget("webhook URL has a bad port") from None
    try:
        found = {info[4][0] for info in socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)}
    except (socket.gaierror, UnicodeError):
        raise RefusedTarget(f"webhook host {parts.hostname} does not resolve: give a host this server can reach") from None
    allow_private = private_allowed(environ)
    for text in sorted(found):
        why = refusal(ipaddress.ip_address(text.split("%", 1)[0]), allow_private)
        if why:
            raise RefusedTarget(f"webhook host {parts.hostname} resolves to {text}, {why}: webhooks may not be posted there, "
                                "give the URL of a receiver this server may reach")


def refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_private: bool) -> str | None:
    """Why a webhook may not reach `address` (None: it may)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES or address.is_link_local:
        return "a link-local or cloud metadata address"
    if address.is_unspecified or address.is_multicast:
        return "an address no receiver listens on"
    if address.is_loopback or address.is_private or not address.is_global:
        return None if allow_private else f"a loopback or private address ({ALLOW_PRIVATE}=0)"
    return "an address no receiver listens on" if address.is_reserved else None
