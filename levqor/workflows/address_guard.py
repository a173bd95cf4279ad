"""Outbound requests reach only the public internet (CONTRACT.md §8).

A host name is resolved once, every A/AAAA record must be a global unicast address, and the request
then connects to the address that was checked (not to the name again, which a second lookup could
point elsewhere). `LEVQOR_CALLBACK_ALLOW_PRIVATE=true` lifts the rule for local development and tests.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# NAT64 (RFC 6052) embeds an IPv4 address in its low 32 bits; it must be judged by that address.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class AddressRefused(Exception):
    """The destination is not a public address (or cannot be resolved)."""


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: IPAddress) -> bool:
    """Global unicast only: not loopback, private, link-local, multicast, shared, reserved or
    documentation space, also when an IPv4 address hides inside an IPv6 one."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_public(embedded)
    return address.is_global and not address.is_multicast and not address.is_reserved


def check_addresses(host: str, addresses: list[IPAddress]) -> IPAddress:
    """The address to connect to, if every record of `host` is public."""
    if not addresses:
        raise AddressRefused(f"{host} has no address")
    for address in addresses:
        if not is_public(address):
            raise AddressRefused(f"{host} resolves to {address}, which is not a public address")
    return addresses[0]


@dataclass(frozen=True, slots=True)
class Destination:
    host: str
    address: IPAddress


async def resolve_public(host: str, port: int) -> Destination:
    """Resolve `host` (a name or a literal address) and check every record."""
    try:
        literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        return Destination(host, check_addresses(host, [literal]))
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise AddressRefused(f"cannot resolve {host}: {exc.strerror or exc}") from None
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])  # drop an IPv6 zone
        if address not in addresses:
            addresses.append(address)
    return Destination(host, check_addresses(host, addresses))
