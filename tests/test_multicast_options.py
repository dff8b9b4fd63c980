"""Argument checks of the multicast and broadcast helpers (no traffic: every
case fails before a socket joins or sends anything)."""

from __future__ import annotations

import socket

import pytest
import trio

import trioudp
from trioudp._multicast import resolve_interface
from trioudp.testing import FakeNetwork


def test_interfaces_by_name_index_and_address() -> None:
    lo = socket.if_nametoindex("lo")
    assert resolve_interface(socket.AF_INET, None) == (0, "0.0.0.0")
    assert resolve_interface(socket.AF_INET, "lo") == (lo, "0.0.0.0")
    assert resolve_interface(socket.AF_INET, lo) == (lo, "0.0.0.0")
    assert resolve_interface(socket.AF_INET, "127.0.0.1") == (0, "127.0.0.1")
    assert resolve_interface(socket.AF_INET6, "::1") == (lo, "0.0.0.0")


@pytest.mark.parametrize(
    ("family", "interface", "error", "message"),
    [
        (socket.AF_INET, "nosuch0", OSError, r"no network interface 'nosuch0'; pass interface="),
        (socket.AF_INET, 999_999, OSError, r"no network interface 999999"),
        (socket.AF_INET6, "127.0.0.1", ValueError, r"an IPv6 group needs an IPv6 interface"),
        (socket.AF_INET6, "fd00:dead::1", OSError, r"no network interface"),
        (socket.AF_INET, 1.5, TypeError, r"a name, an index or an address"),
    ],
)
def test_bad_interfaces_are_named(
    family: int, interface: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        resolve_interface(family, interface)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("group", "options", "error", "message"),
    [
        ("10.1.2.3", {}, ValueError, r"10\.1\.2\.3 is not a multicast address"),
        ("not-an-address", {}, ValueError, r"is not an IP address"),
        (["239.1.1.1", "ff15::1"], {}, ValueError, r"must all be IPv4 or all IPv6"),
        ([], {}, ValueError, r"at least one group"),
        ("239.1.1.1", {"ttl": 256}, ValueError, r"ttl must be an integer from 0 to 255"),
        ("239.1.1.1", {"source": "2001:db8::1"}, ValueError, r"different IP versions"),
        ("239.1.1.1", {"source": "ff15::1"}, ValueError, r"source must be the unicast IP address"),
        ("239.1.1.1", {"source": 5}, ValueError, r"source must be the unicast IP address .* got 5"),
        ("239.1.1.1", {"source": "0.0.0.0"}, ValueError, r"source must be the unicast IP address"),
        (
            "239.1.1.1",
            {"loopback": "no"},
            TypeError,
            r"loopback must be True .* or False, got 'no'",
        ),
        (None, {}, TypeError, r"group must be a str or a list of str, got None"),
        (
            b"239.255.1.1",
            {},
            TypeError,
            r"group must be a str or a list of str, got b'239.255.1.1'",
        ),
        ([239], {}, TypeError, r"a multicast group is an address as a str"),
    ],
)
async def test_bad_multicast_arguments(
    group: object, options: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        async with trioudp.open_multicast(group, 4242, **options):  # type: ignore[arg-type]
            pass


async def test_a_group_on_port_0_is_refused() -> None:
    """Port 0 picks a random port, which no other member could send to (every
    send() failed with EINVAL before)."""
    with pytest.raises(ValueError, match="port 0 would pick a random port"):
        async with trioudp.open_multicast("239.1.1.1", 0):
            pass


async def test_group_membership_mistakes_and_a_closed_endpoint() -> None:
    network = FakeNetwork()
    with network.installed():
        async with trioudp.open_multicast("239.1.1.1", 4242) as group:
            with pytest.raises(ValueError, match=r"already a member of 239\.1\.1\.1"):
                group.join("239.1.1.1")
            with pytest.raises(ValueError, match=r"not of this endpoint's IP version \(IPv4\)"):
                await group.send(b"x", group="ff15::1")
            group.join("239.1.1.2", source="10.0.0.9")
            with pytest.raises(ValueError, match=r"joined with source='10.0.0.9'; pass it"):
                group.leave("239.1.1.2")
            assert group.groups == ["239.1.1.1", "239.1.1.2"]
        assert group.groups == []
        for call in (
            lambda: group.join("239.1.1.3"),
            lambda: group.leave("239.1.1.1"),
            lambda: group.subscribe("alerts"),
            lambda: group.socket,
        ):
            with pytest.raises(trio.ClosedResourceError):
                call()


async def test_broadcast_address_of_the_wrong_kind() -> None:
    with pytest.raises(TypeError, match="address must be an IPv4 broadcast address as a str"):
        async with trioudp.open_broadcast(4242, address=5):  # type: ignore[arg-type]
            pass
    with pytest.raises(ValueError, match=r"239\.1\.1\.1 is a multicast group: use open_multicast"):
        async with trioudp.open_broadcast(4242, address="239.1.1.1"):
            pass


async def test_bad_broadcast_address() -> None:
    with pytest.raises(ValueError, match="IPv4 broadcast address"):
        async with trioudp.open_broadcast(4242, address="ff02::1"):
            pass
