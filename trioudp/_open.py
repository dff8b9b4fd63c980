"""Opening endpoints: ``open_udp_server``, ``open_udp_connection`` and
``from_socket``, and the ``async with`` block that runs an endpoint's tasks
(``running``, which the multicast and broadcast openers use too)."""

from __future__ import annotations

import sys
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

from ._config import make_config
from ._endpoint import LIVE, Endpoint, UDPServer, _check_key_framing, _topics, raise_lone
from ._keys import check_key
from ._sockets import adopt_socket, client_socket, server_socket

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    import socket as stdlib_socket
    from collections.abc import AsyncGenerator, Iterable, Sequence

    from typing_extensions import Buffer, Unpack

    from ._config import Config, Options
    from ._connection import Connection


def in_trio() -> None:
    """Refuse to start outside a trio run, saying so (trio's own error says
    "must be called from async context", which puzzles asyncio code)."""
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        raise RuntimeError(
            "trioudp runs on Trio: open its endpoints inside trio.run() (asyncio code can "
            "host a Trio run with trio-asyncio or trio.lowlevel.start_guest_run)"
        ) from None


async def _background(endpoint: Endpoint, *, task_status: trio.TaskStatus[None]) -> None:
    """The endpoint's tasks, in a cancel scope of their own: closing the
    endpoint (``aclose``) ends them, never the block that uses it. A task that
    meets the socket closed under it by ``aclose`` just ends. This task is the
    receive task itself (one task fewer per endpoint)."""
    with trio.CancelScope() as endpoint._tasks:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(endpoint._timer_loop)
                endpoint._transport.start_backlog(nursery.start_soon)
                await endpoint._receive_loop(task_status=task_status)
        except BaseExceptionGroup as group:
            rest = group.split(lambda exc: isinstance(exc, trio.ClosedResourceError))[1]
            if not endpoint._closed:
                raise
            if rest is not None:
                raise rest from None


@asynccontextmanager
async def running(endpoint: Endpoint) -> AsyncGenerator[None, None]:
    try:
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(_background, endpoint)
                LIVE[endpoint] = trio.lowlevel.current_trio_token()
                try:
                    yield
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            endpoint._close()
    except BaseExceptionGroup as group:
        raise_lone(group)


@asynccontextmanager
async def open_udp_server(
    host: str | None,
    port: int,
    *,
    reuse_port: bool = False,
    topics: Iterable[str] | None = None,
    key: Buffer | Sequence[Buffer] | None = None,
    config: Config | None = None,
    **options: Unpack[Options],
) -> AsyncGenerator[UDPServer, None]:
    """Bind a UDP socket to ``host``:``port`` and serve every peer that sends to it.

    ``host`` None or ``""`` binds every interface (IPv4 and IPv6 where the system
    allows one socket for both); port 0 picks a free port (see
    ``server.local_address``). ``topics`` subscribes to just those topics (see
    ``subscriptions``). ``key`` (16 to 64 secret bytes shared by every peer)
    authenticates every frame; frames without it are dropped. To rotate keys,
    give a list of up to 4: the first signs what is sent, every one is
    accepted (docs/security.md). ``reuse_port`` (Linux) lets several servers,
    in one process or several, bind the same address and port; the kernel
    gives each datagram to one of them by a hash of its addresses over the
    servers bound now (so a server that closes moves most peers to others:
    :func:`serve_workers` keeps them in place). A port ``serve_workers``
    serves is not one to share: its placement program gives a server that
    joins its group no datagram. Options are :class:`Config`'s
    fields, as keywords or as ``config=``. Leaving the block stops the
    server's tasks and closes its socket; an error in them is raised here.
    """
    in_trio()
    chosen = make_config(config, options)
    secret = check_key(key)
    if not isinstance(reuse_port, bool):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise TypeError(f"reuse_port must be True or False, got {reuse_port!r}")
    sock = await server_socket(host, port, chosen, shared=reuse_port)
    server = UDPServer(sock, chosen, topics, key=secret)
    async with running(server):
        yield server


@asynccontextmanager
async def open_udp_connection(
    host: str,
    port: int,
    *,
    local_address: tuple[str, int] | None = None,
    topics: Iterable[str] | None = None,
    key: Buffer | Sequence[Buffer] | None = None,
    config: Config | None = None,
    **options: Unpack[Options],
) -> AsyncGenerator[Connection, None]:
    """Connect a UDP socket to ``host``:``port`` (resolved once) and talk to that
    one peer. The socket only takes datagrams from the peer, and the kernel's
    ICMP errors for it are raised by ``receive()`` as :class:`UnreachableError`.
    ``local_address`` binds the local end first. Leaving the block closes it.
    """
    in_trio()
    chosen = make_config(config, options)
    secret = check_key(key)
    endpoint = Endpoint(
        await client_socket(host, port, local_address, chosen), chosen, topics, key=secret
    )
    connection = endpoint._connections[endpoint._remote]  # type: ignore[index]
    connection._inbox()
    async with running(endpoint):
        yield connection


@asynccontextmanager
async def from_socket(
    sock: stdlib_socket.socket | trio.socket.SocketType,
    *,
    topics: Iterable[str] | None = None,
    key: Buffer | Sequence[Buffer] | None = None,
    config: Config | None = None,
    **options: Unpack[Options],
) -> AsyncGenerator[UDPServer, None]:
    """Serve on a UDP socket that is already bound (Twisted's
    ``adoptDatagramPort``; a socket inherited from systemd). trioudp takes it over
    and closes it when the block ends; pass ``sock.dup()`` to keep your own.
    Arguments are checked before it is taken over: if they are refused, the
    socket is left as it was."""
    in_trio()
    chosen = make_config(config, options)
    secret = check_key(key)
    _check_key_framing(chosen, secret)
    if topics is not None:
        topics = _topics(topics)
    server = UDPServer(adopt_socket(sock), chosen, topics, key=secret)
    async with running(server):
        yield server
