"""Tools for testing trioudp code: a fake, seeded, faulty UDP network."""

from ._chaos import ChaosProxy as ChaosProxy
from ._chaos import open_chaos_proxy as open_chaos_proxy
from ._fakenet import CLEAN as CLEAN
from ._fakenet import HARSH as HARSH
from ._fakenet import MODERATE as MODERATE
from ._fakenet import STRESS as STRESS
from ._fakenet import FakeNetwork as FakeNetwork
from ._fakenet import FakeSocket as FakeSocket
from ._fakenet import Faults as Faults
from ._fakenet import NetworkStatistics as NetworkStatistics

__all__ = [
    "CLEAN",
    "ChaosProxy",
    "HARSH",
    "MODERATE",
    "STRESS",
    "FakeNetwork",
    "FakeSocket",
    "Faults",
    "NetworkStatistics",
    "open_chaos_proxy",
]
