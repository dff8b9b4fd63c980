"""Argument checks of the multicast and broadcast helpers (no traffic: every
case fails before a socket joins or sends anything)."""

from __future__ import annotations

import socket

import pytest

import trioudp
from trioudp._multicast import resolve_interface


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
    ("group", "options", "message"),
    [
        ("10.1.2.3", {}, r"10\.1\.2\.3 is not a multicast address"),
        ("not-an-address", {}, r"is not an IP address"),
        (["239.1.1.1", "ff15::1"], {}, r"must all be IPv4 or all IPv6"),
        ([], {}, r"at least one group"),
        ("239.1.1.1", {"ttl": 256}, r"ttl must be an integer from 0 to 255"),
        ("239.1.1.1", {"source": "ff15::1"}, r"different IP versions"),
    ],
)
async def test_bad_multicast_arguments(
    group: object, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        async with trioudp.open_multicast(group, 4242, **options):  # type: ignore[arg-type]
            pass


async def test_bad_broadcast_address() -> None:
    with pytest.raises(ValueError, match="IPv4 broadcast address"):
        async with trioudp.open_broadcast(4242, address="ff02::1"):
            pass
