"""trioudp: safe, fast UDP messaging for Trio.

Messages, not datagrams: framed, CRC32C-checked, de-duplicated, put back in
order, fragmented and reassembled, over nursery-scoped sockets.
"""

from ._config import Config as Config
from ._config import Options as Options
from ._endpoint import Connection as Connection
from ._endpoint import UDPServer as UDPServer
from ._endpoint import from_socket as from_socket
from ._endpoint import open_udp_connection as open_udp_connection
from ._endpoint import open_udp_server as open_udp_server
from ._errors import UnreachableError as UnreachableError
from ._message import Address as Address
from ._message import Message as Message
from ._multicast import Priority as Priority
from ._statistics import EndpointStatistics as EndpointStatistics
from ._statistics import PeerStatistics as PeerStatistics
from ._version import __version__ as __version__

__all__ = [
    "Address",
    "Config",
    "Connection",
    "EndpointStatistics",
    "Message",
    "Options",
    "PeerStatistics",
    "Priority",
    "UDPServer",
    "UnreachableError",
    "__version__",
    "from_socket",
    "open_udp_connection",
    "open_udp_server",
]
