"""Which destinations the callback guard allows: the address classification, the literal forms of an
address, and how a resolver's answer is judged (no services needed)."""

from __future__ import annotations

import ipaddress

import pytest

from levqor.callbacks.guard import (
    AddressRefused,
    HostResolver,
    IPAddress,
    check_url,
    is_public,
    literal_address,
)


class FixedResolver(HostResolver):
    """Answers every name with the same records, or fails as an unknown name does."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = [ipaddress.ip_address(address) for address in addresses]
        self.calls = 0

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        self.calls += 1
        if not self.addresses:
            raise OSError(-2, "Name or service not known")
        return self.addresses


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.255.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata, link-local
        "100.64.0.1",  # shared address space
        "0.0.0.0",
        "0.1.2.3",
        "192.0.0.9",  # IETF protocol assignments (global to Python 3.13, refused here all the same)
        "192.0.2.1",  # documentation
        "198.51.100.1",
        "203.0.113.1",
        "192.88.99.1",  # 6to4 relay anycast
        "198.18.0.1",  # benchmarking
        "224.0.0.1",  # multicast
        "239.255.255.250",
        "240.0.0.1",  # reserved
        "255.255.255.255",
        "::",
        "::1",
        "::7f00:1",  # IPv4-compatible, deprecated
        "::ffff:0:7f00:1",  # IPv4-translated
        "100::1",  # discard
        "fe80::1",
        "fec0::1",  # site-local, deprecated
        "fc00::1",
        "fd00:ec2::254",  # unique local, a cloud metadata address
        "ff02::1",
        "2001::1",  # Teredo
        "2001:2::1",  # benchmarking
        "2001:db8::1",  # documentation
        "3fff::1",
        "5f00::1",  # SRv6 segment identifiers
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
        "::ffff:10.0.0.1",
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b:1::a00:1",  # local-use NAT64, whatever it embeds
        "64:ff9b:1::808:808",
        "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    ],
)
def test_non_global_addresses_are_refused(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "2606:4700:4700::1111",
        "::ffff:8.8.8.8",  # IPv4-mapped, judged by the IPv4 address
        "64:ff9b::808:808",  # NAT64 of 8.8.8.8
        "2002:808:808::1",  # 6to4 of 8.8.8.8
    ],
)
def test_global_unicast_addresses_are_allowed(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("::1", "::1"),
        ("::ffff:127.0.0.1", "::ffff:7f00:1"),
    ],
)
def test_every_literal_form_of_an_address_is_read_as_that_address(host: str, address: str) -> None:
    assert literal_address(host) == ipaddress.ip_address(address)


@pytest.mark.parametrize("host", ["localhost", "hooks.example.com", "127.0.0.1.example.com", ""])
def test_names_are_not_literals(host: str) -> None:
    assert literal_address(host) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://[::1]:8080/hook",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0177.0.0.1/",  # a form httpx refuses to parse
        "http://0.0.0.0/",
        "http://[::ffff:127.0.0.1]/",
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "https://[fe80::1%25eth0]/",
    ],
)
async def test_literal_hosts_are_refused_whatever_the_resolver_says(url: str) -> None:
    resolver = FixedResolver("8.8.8.8")
    with pytest.raises(AddressRefused):
        await check_url(url, allow_private=False, resolver=resolver)
    assert resolver.calls == 0  # a literal is never looked up, so no resolver can change its meaning


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://hooks.example.com/", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("http:///hook", "no host"),
        ("http://hooks.example.com:port/", "not a valid URL"),
        ("http://999.1.1.1/", "not a valid URL"),
    ],
)
async def test_urls_that_are_not_http_to_a_host_are_refused_even_when_private_is_allowed(
    url: str, message: str
) -> None:
    for allow_private in (False, True):
        with pytest.raises(AddressRefused, match=message):
            await check_url(url, allow_private=allow_private, resolver=FixedResolver("8.8.8.8"))


async def test_one_private_record_among_public_ones_refuses_the_host() -> None:
    with pytest.raises(AddressRefused, match=r"mixed\.example\.com resolves to 10\.0\.0\.1"):
        await check_url(
            "https://mixed.example.com/", allow_private=False, resolver=FixedResolver("8.8.8.8", "10.0.0.1")
        )
    await check_url("https://public.example.com/", allow_private=False, resolver=FixedResolver("8.8.8.8"))


async def test_a_name_that_does_not_resolve_is_refused() -> None:
    with pytest.raises(AddressRefused, match="cannot be resolved"):
        await check_url("https://gone.example.com/", allow_private=False, resolver=FixedResolver())


async def test_allowing_private_addresses_resolves_nothing() -> None:
    resolver = FixedResolver()
    await check_url("http://receiver.internal:9000/hook", allow_private=True, resolver=resolver)
    await check_url("http://127.0.0.1/hook", allow_private=True, resolver=resolver)
    assert resolver.calls == 0
