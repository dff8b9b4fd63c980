from __future__ import annotations

import functools
import os
import socket

import pytest
from hypothesis import HealthCheck, settings

# pytester runs a pytest of its own, to check the plugin trioudp registers.
pytest_plugins = ["pytester"]

settings.register_profile(
    "ci", max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ipv6: needs an IPv6 loopback (::1); skipped without one")


@functools.cache
def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("ipv6") is not None and not _has_ipv6():
        pytest.skip("this machine has no IPv6 loopback (::1)")
