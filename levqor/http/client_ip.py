"""The client's address: the socket peer, or `X-Forwarded-For` when the peer is a trusted proxy.

Anyone can send `X-Forwarded-For`, so it is read only when the connection comes from one of
`LEVQOR_TRUSTED_PROXIES`, and then from the right: each trusted proxy appends the address it saw, so
the right-most address that is not a trusted proxy is the client (the rule of MDN's
"X-Forwarded-For: Selecting an IP address"). Whatever a client wrote further left is ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import Scope

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

UNKNOWN_CLIENT = "unknown"


def parse_address(raw: str) -> IPAddress | None:
    """An address as proxies write it: bare, `[v6]`, `[v6]:port` or `v4:port`."""
    text = raw.strip().strip('"')
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]  # v4 with a port; a bare v6 has several colons
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ClientAddress:
    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        self.trusted: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(proxy, strict=False) for proxy in trusted_proxies
        )

    def is_trusted(self, address: IPAddress) -> bool:
        return any(address in network for network in self.trusted)

    def of(self, scope: Scope) -> str:
        client = scope.get("client")
        peer_text = client[0] if client else None
        if not peer_text:
            return UNKNOWN_CLIENT
        if not self.trusted:
            return str(peer_text)
        peer = parse_address(peer_text)
        if peer is None:
            return str(peer_text)
        if not self.is_trusted(peer):
            return str(peer)
        hops = _forwarded_for(scope)
        nearest = peer
        for hop in reversed(hops):
            address = parse_address(hop)
            if address is None:
                break  # not written by a proxy we trust: stop at the last address we could read
            if not self.is_trusted(address):
                return str(address)
            nearest = address
        return str(nearest)

    def is_https(self, scope: Scope) -> bool:
        """Whether the client reached us over https: directly, or through a trusted proxy that says
        so in its last `X-Forwarded-Proto`."""
        if scope.get("scheme") in {"https", "wss"}:
            return True
        client = scope.get("client")
        peer = parse_address(client[0]) if client and client[0] else None
        if peer is None or not self.is_trusted(peer):
            return False
        protos = [
            part.strip().lower()
            for name, value in scope["headers"]
            if name == b"x-forwarded-proto"
            for part in value.decode("latin-1").split(",")
        ]
        return bool(protos) and protos[-1] == "https"


def _forwarded_for(scope: Scope) -> list[str]:
    # Several X-Forwarded-For lines are one list, in order (RFC 9110 §5.3).
    hops: list[str] = []
    for name, value in scope["headers"]:
        if name == b"x-forwarded-for":
            hops.extend(part for part in value.decode("latin-1").split(",") if part.strip())
    return hops
