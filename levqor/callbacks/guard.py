"""Outbound requests reach only the public internet (CONTRACT.md §8, issue 11).

One guard for every request Levqor sends to an address a client chose: job callbacks and the
`http.request` workflow. A URL must be http(s) with a host; the host is resolved once, every A/AAAA
record must be a global unicast address, and the request connects to an address that was checked,
never to the name again (a second lookup could answer loopback: DNS rebinding). The name still goes
in the Host header and in TLS (SNI and the certificate check). Redirects are never followed, the
whole exchange has one deadline and the body one size cap. `LEVQOR_CALLBACK_ALLOW_PRIVATE=true`
lifts the address rule (not the scheme rule) for local development and tests.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SCHEMES = ("http", "https")
READ_CHUNK_BYTES = 64 * 1024
_NUMERIC_LABEL = re.compile(r"[0-9]+|0[xX][0-9a-fA-F]*")

# Refused although some Python versions' `is_global` lets parts of them through, so that the answer
# is the same on every supported Python: the IANA special-purpose registries' non-global entries and
# the ranges webhook senders commonly refuse besides.
_REFUSED_V4 = tuple(
    ipaddress.IPv4Network(network)
    for network in (
        "0.0.0.0/8",  # "this network": 0.0.0.0 reaches this host
        "10.0.0.0/8",  # private (RFC 1918), with the two below
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",  # shared address space behind carrier-grade NAT (RFC 6598)
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local, where cloud metadata services answer
        "192.0.0.0/24",  # IETF protocol assignments, anycast relays included
        "192.0.2.0/24",  # documentation, with the two below (RFC 5737)
        "198.51.100.0/24",
        "203.0.113.0/24",
        "192.88.99.0/24",  # the deprecated 6to4 relay anycast (RFC 7526)
        "198.18.0.0/15",  # benchmarking (RFC 2544)
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, the limited broadcast address included
    )
)
# Global unicast IPv6 is 2000::/3 (RFC 4291 §2.4); these parts of it are not reachable destinations.
_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")
_REFUSED_V6 = tuple(
    ipaddress.IPv6Network(network)
    for network in (
        "2001::/23",  # IETF protocol assignments: Teredo, benchmarking, ORCHID, anycast services
        "2001:db8::/32",  # documentation (RFC 3849)
        "3fff::/20",  # documentation (RFC 9637)
    )
)
# NAT64 (RFC 6052) translates to the IPv4 address in the low 32 bits of the well-known /96, which is
# what must be judged. The local-use 64:ff9b:1::/48 (RFC 8215) lies outside 2000::/3 and is refused:
# each network picks its own prefix length inside it, so where the IPv4 address sits is unknown.
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")


class AddressRefused(Exception):
    """The destination is not allowed or cannot be resolved; the message is for the client."""


class HostResolver:
    """Answers the addresses of a host name, with the event loop's `getaddrinfo` (the system's
    resolver). A subclass that answers otherwise is how tests stand in for DNS."""

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses: list[IPAddress] = []
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])  # without an IPv6 zone
            if address not in addresses:
                addresses.append(address)
        return addresses


SYSTEM_RESOLVER = HostResolver()


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for: its IPv4-mapped, 6to4 and NAT64 forms."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64_WELL_KNOWN:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: IPAddress) -> bool:
    """Global unicast only: not loopback, private, link-local, multicast, shared, reserved,
    unspecified or documentation space, also when an IPv4 address hides inside an IPv6 one."""
    if isinstance(address, ipaddress.IPv4Address):
        return address.is_global and not any(address in network for network in _REFUSED_V4)
    embedded = embedded_ipv4(address)
    if embedded is not None:
        return is_public(embedded)
    return (
        address in _GLOBAL_UNICAST_V6
        and address.is_global
        and not any(address in network for network in _REFUSED_V6)
    )


def literal_address(host: str) -> IPAddress | None:
    """The address a host names by itself, in every form the system resolver reads as one
    (`2130706433`, `0x7f000001` and `127.1` are 127.0.0.1), so an injected resolver cannot
    change what a literal means."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class _Target:
    url: URL  # as the transport will send it: the host and port it connects to are these
    host: str  # as sent on the wire: IDNA-encoded, IPv6 without brackets
    port: int
    literal: IPAddress | None  # the address, when the host is one rather than a name


def _target(url: str) -> _Target:
    # Parsed by the transport's own parser (yarl, as aiohttp uses it), and this parsed URL is what is
    # sent: a second parser could read another host out of the same string.
    try:
        parsed = URL(url, encoded=False)
    except (ValueError, TypeError) as exc:
        raise AddressRefused(f"not a valid URL: {exc}") from exc
    if parsed.scheme not in SCHEMES:
        raise AddressRefused("only http and https URLs are allowed")
    host = parsed.raw_host or ""
    if not host:
        raise AddressRefused("the URL has no host")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    literal = literal_address(host)
    if isinstance(literal, ipaddress.IPv4Address) and host != str(literal):
        # `2130706433`, `0x7f000001`, `127.1`: resolvers and parsers disagree on such forms.
        raise AddressRefused(f"not a valid URL: {host} is {literal} written another way; write {literal}")
    if literal is None and _NUMERIC_LABEL.fullmatch(host.rstrip(".").rsplit(".", 1)[-1]):
        # A name whose last label is a number is an IPv4 address or nothing (WHATWG URL, "ends in a
        # number"); resolvers differ on what they make of one that is not a valid address.
        raise AddressRefused(f"not a valid URL: {host} is not an IPv4 address")
    return _Target(parsed, host, port, literal)


def _not_public(host: str, address: IPAddress, *, resolved: bool) -> str:
    if resolved:
        return f"{host} resolves to {address}, which is not a public address"
    if host != str(address):  # a legacy or IPv4-mapped form of the address
        return f"{host} is {address}, which is not a public address"
    return f"{host} is not a public address"


async def _checked(
    host: str, port: int, literal: IPAddress | None, *, allow_private: bool, resolver: HostResolver
) -> list[IPAddress]:
    """The addresses to connect to, in the resolver's order, each one checked."""
    if literal is not None:
        addresses = [literal]
    else:
        try:
            addresses = await resolver.resolve(host, port)
        except OSError as exc:
            raise AddressRefused(f"{host} cannot be resolved: {exc.strerror or exc}") from exc
        if not addresses:
            raise AddressRefused(f"{host} has no address")
    if not allow_private:
        for address in addresses:
            if not is_public(address):
                raise AddressRefused(_not_public(host, address, resolved=literal is None))
    return addresses


async def check_url(url: str, *, allow_private: bool, resolver: HostResolver | None = None) -> None:
    """Refuse (`AddressRefused`) a URL the guard would not send to. With `allow_private` only the
    scheme and host are checked and nothing is resolved."""
    target = _target(url)
    if not allow_private:
        await _checked(
            target.host,
            target.port,
            target.literal,
            allow_private=False,
            resolver=resolver or SYSTEM_RESOLVER,
        )


class _CheckingResolver(AbstractResolver):
    """The transport's resolver: every name it connects to is resolved here, once per connection,
    and only checked addresses come back, so the connection goes to one of them (no second lookup)
    while TLS still verifies the name. Literal addresses never reach a resolver; `guarded_request`
    checks those itself."""

    def __init__(self, resolver: HostResolver, *, allow_private: bool) -> None:
        self._resolver = resolver
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await _checked(
            host, port, literal_address(host), allow_private=self._allow_private, resolver=self._resolver
        )
        found: list[ResolveResult] = []
        for address in addresses:
            address_family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
            if family in (socket.AF_UNSPEC, address_family):
                found.append(
                    ResolveResult(
                        hostname=host,
                        host=str(address),
                        port=port,
                        family=address_family,
                        proto=0,
                        flags=socket.AI_NUMERICHOST,
                    )
                )
        if not found:
            raise AddressRefused(f"{host} has no address of the family asked for")
        return found

    async def close(self) -> None:
        return None


class OutboundSession:
    """The HTTP client of the guard (aiohttp: about ten times the requests per second of the
    alternatives measured, bench/README.md), with its rule built in: `allow_private` and `resolver`
    are the session's, used for every connection it opens. No redirects are followed, no proxy or
    settings come from the environment, and no cookies are kept (one receiver's would be sent to the
    next). Open it in an `async with`; its connections are pooled across requests."""

    def __init__(
        self,
        *,
        allow_private: bool,
        resolver: HostResolver | None = None,
        limit: int = 100,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.allow_private = allow_private
        self.resolver = resolver or SYSTEM_RESOLVER
        self._limit = limit
        self._tls = tls  # None: the system's trust store
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> OutboundSession:
        connector = aiohttp.TCPConnector(
            resolver=_CheckingResolver(self.resolver, allow_private=self.allow_private),
            limit=self._limit,
            ssl=self._tls if self._tls is not None else True,
            use_dns_cache=False,  # each new connection is resolved and checked afresh
        )
        self._session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False
        )
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the outbound session is not open")
        return self._session


@dataclass(frozen=True, slots=True)
class GuardedResponse:
    status_code: int
    headers: dict[str, str]  # names in lower case
    body: bytes  # at most `max_response_bytes`, decoded as the Content-Encoding says
    truncated: bool  # the receiver sent more than that


def _joined(headers: Mapping[str, str]) -> dict[str, str]:
    """Header names in lower case; a header sent more than once, its values joined with ", " (RFC
    9110 §5.3)."""
    joined: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        joined[key] = f"{joined[key]}, {value}" if key in joined else value
    return joined


async def _read_capped(response: aiohttp.ClientResponse, max_bytes: int) -> tuple[bytes, bool]:
    body = bytearray()
    async for chunk in response.content.iter_chunked(READ_CHUNK_BYTES):
        body.extend(chunk)
        if len(body) > max_bytes:
            return bytes(body[:max_bytes]), True
    return bytes(body), False


async def guarded_request(
    outbound: OutboundSession,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    content: bytes | None,
    timeout_s: float,
    max_response_bytes: int,
) -> GuardedResponse:
    """Send one request through the guard; see the module docstring for what it checks.

    Raises `AddressRefused` for a destination the guard refuses, `TimeoutError` when resolving,
    connecting, sending and reading together take longer than `timeout_s`, and lets
    `aiohttp.ClientError` through for other transport failures."""
    target = _target(url)
    if target.literal is not None:
        await _checked(
            target.host,
            target.port,
            target.literal,
            allow_private=outbound.allow_private,
            resolver=outbound.resolver,
        )
    try:
        async with asyncio.timeout(timeout_s):
            async with outbound.session.request(
                method, target.url, headers=dict(headers), data=content, allow_redirects=False
            ) as response:
                body, truncated = await _read_capped(response, max_response_bytes)
                return GuardedResponse(response.status, _joined(response.headers), body, truncated)
    except TimeoutError as exc:
        raise TimeoutError(f"{method} {target.host} did not complete within {timeout_s:g} s") from exc
