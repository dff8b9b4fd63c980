"""trioudp: safe, fast UDP messaging for Trio.

Messages, not datagrams: framed, CRC32C-checked, de-duplicated, put back in
order, fragmented and reassembled, over nursery-scoped sockets.
"""

from ._config import Config as Config
from ._config import Options as Options
from ._connection import Connection as Connection
from ._endpoint import UDPServer as UDPServer
from ._errors import PeerLostError as PeerLostError
from ._errors import UnreachableError as UnreachableError
from ._group import BroadcastEndpoint as BroadcastEndpoint
from ._group import MulticastEndpoint as MulticastEndpoint
from ._group import open_broadcast as open_broadcast
from ._group import open_multicast as open_multicast
from ._message import Address as Address
from ._message import Message as Message
from ._multicast import Priority as Priority
from ._open import from_socket as from_socket
from ._open import open_udp_connection as open_udp_connection
from ._open import open_udp_server as open_udp_server
from ._reasons import DropReason as DropReason
from ._reasons import LostReason as LostReason
from ._router import Router as Router
from ._router import RouterStatistics as RouterStatistics
from ._state import ConnectionState as ConnectionState
from ._statistics import EndpointStatistics as EndpointStatistics
from ._statistics import PeerStatistics as PeerStatistics
from ._version import __version__ as __version__
from ._workers import Workers as Workers
from ._workers import serve_workers as serve_workers
from ._workers import worker_index as worker_index

__all__ = [
    "Address",
    "BroadcastEndpoint",
    "Config",
    "Connection",
    "ConnectionState",
    "DropReason",
    "EndpointStatistics",
    "LostReason",
    "Message",
    "MulticastEndpoint",
    "Options",
    "PeerLostError",
    "PeerStatistics",
    "Priority",
    "Router",
    "RouterStatistics",
    "UDPServer",
    "UnreachableError",
    "Workers",
    "__version__",
    "from_socket",
    "open_broadcast",
    "open_multicast",
    "open_udp_connection",
    "open_udp_server",
    "serve_workers",
    "worker_index",
]
