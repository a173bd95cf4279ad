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
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SCHEMES = ("http", "https")

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
    url: httpx.URL
    host: str  # as sent on the wire: IDNA-encoded, IPv6 without brackets
    port: int
    literal: IPAddress | None  # the address, when the host is one rather than a name


def _target(url: str) -> _Target:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise AddressRefused(f"not a valid URL: {exc}") from exc
    if parsed.scheme not in SCHEMES:
        raise AddressRefused("only http and https URLs are allowed")
    host = parsed.raw_host.decode("ascii")
    if not host:
        raise AddressRefused("the URL has no host")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return _Target(parsed, host, port, literal_address(host))


def _not_public(host: str, address: IPAddress, *, resolved: bool) -> str:
    if resolved:
        return f"{host} resolves to {address}, which is not a public address"
    if host != str(address):  # a legacy or IPv4-mapped form of the address
        return f"{host} is {address}, which is not a public address"
    return f"{host} is not a public address"


async def _addresses(target: _Target, *, allow_private: bool, resolver: HostResolver) -> list[IPAddress]:
    """The addresses to connect to, in the resolver's order, each one checked."""
    if target.literal is not None:
        addresses = [target.literal]
    else:
        try:
            addresses = await resolver.resolve(target.host, target.port)
        except OSError as exc:
            raise AddressRefused(f"{target.host} cannot be resolved: {exc.strerror or exc}") from exc
        if not addresses:
            raise AddressRefused(f"{target.host} has no address")
    if not allow_private:
        for address in addresses:
            if not is_public(address):
                raise AddressRefused(_not_public(target.host, address, resolved=target.literal is None))
    return addresses


async def check_url(url: str, *, allow_private: bool, resolver: HostResolver | None = None) -> None:
    """Refuse (`AddressRefused`) a URL the guard would not send to. With `allow_private` only the
    scheme and host are checked and nothing is resolved."""
    target = _target(url)
    if not allow_private:
        await _addresses(target, allow_private=False, resolver=resolver or SYSTEM_RESOLVER)


@dataclass(frozen=True, slots=True)
class GuardedResponse:
    status_code: int
    headers: httpx.Headers
    body: bytes  # at most `max_response_bytes`, decoded as the Content-Encoding says
    truncated: bool  # the receiver sent more than that


def outbound_client(*, limits: httpx.Limits | None = None) -> httpx.AsyncClient:
    """A client fit for `guarded_request`: no redirects, no proxy or settings from the environment,
    and no cookies, which would otherwise be kept from one receiver's answer and sent to the next
    receiver at the same address."""
    return httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        limits=limits or httpx.Limits(),
    )


def _pinned_request(
    client: httpx.AsyncClient,
    method: str,
    target: _Target,
    address: IPAddress,
    headers: Mapping[str, str],
    content: bytes | None,
    timeout_s: float,
) -> httpx.Request:
    """A request for `target` that connects to `address`. The client's pool keys connections by the
    URL's origin, so later calls to the same checked address and port reuse them (two names at one
    address share them too, the TLS session being the first name's)."""
    sent_headers = httpx.Headers(headers)
    extensions: dict[str, str] = {}
    if target.literal is None:
        # The name, not the address, is what the receiver serves and its certificate names.
        if "host" not in sent_headers:
            sent_headers["Host"] = target.url.netloc.decode("ascii")
        extensions["sni_hostname"] = target.host
    return client.build_request(
        method,
        target.url.copy_with(host=str(address)),
        headers=sent_headers,
        content=content,
        timeout=timeout_s,
        extensions=extensions,
    )


async def _read_capped(response: httpx.Response, max_bytes: int) -> tuple[bytes, bool]:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body.extend(chunk)
        if len(body) > max_bytes:
            return bytes(body[:max_bytes]), True
    return bytes(body), False


async def _send(client: httpx.AsyncClient, request: httpx.Request, max_bytes: int) -> GuardedResponse:
    response = await client.send(request, stream=True, follow_redirects=False)
    try:
        body, truncated = await _read_capped(response, max_bytes)
    finally:
        await response.aclose()
    return GuardedResponse(response.status_code, response.headers, body, truncated)


async def _exchange(
    client: httpx.AsyncClient,
    method: str,
    target: _Target,
    addresses: list[IPAddress],
    headers: Mapping[str, str],
    content: bytes | None,
    timeout_s: float,
    max_response_bytes: int,
) -> GuardedResponse:
    def request_to(address: IPAddress) -> httpx.Request:
        return _pinned_request(client, method, target, address, headers, content, timeout_s)

    for address in addresses[:-1]:
        try:
            return await _send(client, request_to(address), max_response_bytes)
        except httpx.ConnectError:
            continue  # nothing was sent; the next checked record may answer (a dead IPv6 address)
    return await _send(client, request_to(addresses[-1]), max_response_bytes)


async def guarded_request(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    content: bytes | None,
    allow_private: bool,
    timeout_s: float,
    max_response_bytes: int,
    resolver: HostResolver | None = None,
) -> GuardedResponse:
    """Send one request through the guard; see the module docstring for what it checks.

    Raises `AddressRefused` for a destination the guard refuses, `TimeoutError` when resolving,
    connecting, sending and reading together take longer than `timeout_s`, and lets
    `httpx.HTTPError` through for other transport failures. `client` is the caller's, so its
    connections are pooled across calls; `outbound_client()` builds one as the guard needs it."""
    target = _target(url)
    try:
        async with asyncio.timeout(timeout_s):
            addresses = await _addresses(
                target, allow_private=allow_private, resolver=resolver or SYSTEM_RESOLVER
            )
            return await _exchange(
                client, method, target, addresses, headers, content, timeout_s, max_response_bytes
            )
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise TimeoutError(f"{method} {target.host} did not complete within {timeout_s:g} s") from exc
