"""One UDP port served by several worker processes (Linux): ``serve_workers``.

The parent binds one socket per worker to the port, in one SO_REUSEPORT group
whose placement program (``_reuseport``) sends every peer's datagrams to the
same socket, and keeps all of them open. Each worker is a new Python process
(its own trio run, on its own core) that is handed its socket and a control
socket, and serves its socket with ``from_socket`` and ``serve(handler)``.

The control socket carries JSON lines: the parent's bootstrap first (what to
import, the options, the key), then the worker's ``ready``, and later
statistics on request. When the control socket closes (the parent is done,
or gone), the worker closes its server and exits. A worker that exits on its
own is logged, counted and started again on the same socket, so its peers'
datagrams wait in that socket's buffer meanwhile and none of them moves.
"""

from __future__ import annotations

import json
import logging
import os
import runpy
import signal
import socket as stdlib_socket
import subprocess
import sys
from contextlib import suppress
from typing import TYPE_CHECKING, Any, NoReturn, cast

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

import attrs
import trio

from ._config import Config, make_config
from ._endpoint import copy_items, raise_lone
from ._errors import check_handler
from ._keys import check_key
from ._open import from_socket, in_trio
from ._reuseport import attach_placement, check_reuse_port
from ._sockets import server_socket
from ._statistics import EndpointStatistics

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Sequence

    from typing_extensions import Buffer, Unpack

    from ._config import Options
    from ._connection import Connection
    from ._message import Address

logger = logging.getLogger("trioudp.workers")

#: Seconds every worker has to report ready before serve_workers gives up.
START_TIMEOUT = 60.0
#: Seconds a worker has to close its server and exit once told to.
STOP_GRACE = 5.0
#: A worker that dies within this many seconds of starting is started again
#: after a pause that doubles each time, up to RESTART_PAUSE_MAX (a crash loop
#: must not eat the machine); one that ran longer comes back at once.
RESTART_PAUSE = 0.1
RESTART_PAUSE_MAX = 30.0
QUICK_DEATH = 5.0
#: What a worker process runs: the parent's module path first.
_WORKER_START = (
    "import json, os, sys; sys.path[:] = json.loads(os.environ['TRIOUDP_WORKER_PATH']); "
    "from trioudp._workers import worker_main; worker_main()"
)
#: Seconds between two readings of every worker's statistics for monitoring.
SNAPSHOT_INTERVAL = 1.0
#: The environment variable that tells a worker its index (0 to workers - 1).
WORKER_VARIABLE = "TRIOUDP_WORKER"


#: Every running group of workers in this process (for trioudp.prometheus).
LIVE_GROUPS: dict[Workers, None] = {}


def live_groups() -> list[Workers]:
    """The running groups of workers (a copy: safe to take from any thread)."""
    return [group for group, _ in copy_items(LIVE_GROUPS)]


def worker_index() -> int | None:
    """This process's index among ``serve_workers``' workers (0 to N - 1), or
    None outside a worker."""
    value = os.environ.get(WORKER_VARIABLE)
    return None if value is None else int(value)


class _Lines:
    """JSON lines over a stream."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def send(self, record: dict[str, Any]) -> None:
        await self._stream.send_all(json.dumps(record).encode() + b"\n")

    async def receive(self) -> dict[str, Any] | None:
        """The next record, or None at the end of the stream."""
        while b"\n" not in self._buffer:
            data = await self._stream.receive_some(65536)
            if not data:
                return None
            self._buffer += data
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer[:] = rest
        record: object = json.loads(line)
        if not isinstance(record, dict):
            raise TypeError(f"not a JSON object: {line[:100]!r}")
        return cast("dict[str, Any]", record)


@attrs.define(eq=False)
class _Worker:
    index: int
    sock: stdlib_socket.socket
    process: trio.Process | None = None
    control: _Lines | None = None
    lock: trio.Lock = attrs.Factory(trio.Lock)
    #: The number of the last statistics request: a reply to an earlier one
    #: (whose asker was cancelled or gave up) is skipped.
    requests: int = 0


class Workers:
    """The worker processes of :func:`serve_workers` (what ``nursery.start``
    gives): their address, restarts and statistics."""

    def __init__(self, sockets: list[stdlib_socket.socket]) -> None:
        self._workers = [_Worker(index, sock) for index, sock in enumerate(sockets)]
        self._restarts = 0
        self._address: Address = sockets[0].getsockname()
        #: The latest statistics of each worker with its process id, renewed
        #: every SNAPSHOT_INTERVAL (what trioudp.prometheus reports, from any
        #: thread: the dict is replaced whole, never changed).
        self._snapshot: dict[int, tuple[int, EndpointStatistics]] = {}

    @property
    def local_address(self) -> Address:
        """The address and port every worker serves."""
        return self._address

    @property
    def count(self) -> int:
        """How many workers there are."""
        return len(self._workers)

    @property
    def restarts(self) -> int:
        """Workers started again after they exited on their own (crashed)."""
        return self._restarts

    def pids(self) -> list[int | None]:
        """Each worker's process id (None while it is being started again)."""
        return [None if w.process is None else w.process.pid for w in self._workers]

    async def _renew_snapshot(self) -> None:
        while True:
            await self.statistics()
            await trio.sleep(SNAPSHOT_INTERVAL)

    async def statistics(self) -> dict[int, EndpointStatistics]:
        """Each running worker's server statistics, by worker index (a worker
        being started again is left out). trioudp.prometheus reports the
        latest of these (they are read every second)."""
        figures: dict[int, EndpointStatistics] = {}
        snapshot: dict[int, tuple[int, EndpointStatistics]] = {}
        for worker in self._workers:
            async with worker.lock:
                control = worker.control
                if control is None:
                    continue
                worker.requests += 1
                number = worker.requests
                try:
                    with trio.fail_after(STOP_GRACE):
                        await control.send({"command": "statistics", "request": number})
                        record = await control.receive()
                        while record is not None and record.get("request") != number:
                            record = await control.receive()
                except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
                    continue
                if record is not None:
                    figures[worker.index] = EndpointStatistics(**record["statistics"])
                    snapshot[worker.index] = (record["pid"], figures[worker.index])
        self._snapshot = snapshot
        return figures


async def serve_workers(
    handler: Callable[[Connection], Awaitable[object]],
    host: str | None,
    port: int,
    *,
    workers: int | None = None,
    topics: Iterable[str] | None = None,
    key: Buffer | Sequence[Buffer] | None = None,
    config: Config | None = None,
    task_status: trio.TaskStatus[Workers] = trio.TASK_STATUS_IGNORED,
    **options: Unpack[Options],
) -> NoReturn:
    """Serve ``host``:``port`` with ``workers`` processes (default: one per
    CPU), each running ``server.serve(handler)`` on its own socket of the
    port (Linux's SO_REUSEPORT), until cancelled: ``await
    nursery.start(trioudp.serve_workers, handler, host, port)`` gives a
    :class:`Workers` once every worker is serving.

    Every datagram of a peer goes to the same worker, for as long as the
    workers run: its session, order and reliable state live there. A worker
    that crashes is logged (logger ``trioudp.workers``), counted and started
    again on the same socket; its peers' datagrams wait in that socket's
    buffer meanwhile, and the new worker takes them up as new peers (a
    reliable sender sees a receiver restart and sends again what was not
    acknowledged). What the dead worker held dies with it: messages it had
    read but its handler had not taken (reliable ones too: they were
    acknowledged on arrival, as TCP acknowledges what reaches the socket),
    and a reliable message its handler took just before it died, not yet
    acknowledged, comes again to the new worker. The other workers' peers
    never notice.

    ``handler`` must be importable by the workers: a function defined at the
    top level of a module (or of the main script, which must then guard its
    own start with ``if __name__ == "__main__":``, as multiprocessing needs).
    Each worker finds its index in ``trioudp.worker_index()``. Cancelling
    (leaving the nursery, Ctrl-C) closes every worker's server and waits for
    the workers to exit, killing one that takes more than 5 s.
    """
    in_trio()
    check_reuse_port()
    if worker_index() is not None:
        raise RuntimeError(
            "serve_workers() was called in one of its own workers: the workers import the "
            "handler's script, so guard the script's start with if __name__ == '__main__':"
        )
    check_handler("serve_workers()", handler)
    target = _import_path(handler)
    count = _worker_count(workers)
    chosen = make_config(config, options)
    secret = check_key(key)
    subscribed = None if topics is None else list(topics)
    sockets = await bind_group(host, port, chosen, count)
    group = Workers(sockets)
    bootstrap: dict[str, Any] = {
        "target": target,
        "options": chosen.to_dict(),
        "topics": subscribed,
        "key": None if secret is None else [each.hex() for each in secret],
    }
    try:
        async with trio.open_nursery() as nursery:
            ready = [trio.Event() for _ in range(count)]
            for worker in group._workers:
                nursery.start_soon(_supervise, group, worker, bootstrap, ready[worker.index])
            with trio.move_on_after(START_TIMEOUT) as waiting:
                for event in ready:
                    await event.wait()
            if waiting.cancelled_caught:
                raise RuntimeError(
                    f"the workers were not all serving after {START_TIMEOUT:g} s "
                    f"(their errors, if any, are on stderr)"
                )
            nursery.start_soon(group._renew_snapshot)
            LIVE_GROUPS[group] = None
            task_status.started(group)
            await trio.sleep_forever()
    except BaseExceptionGroup as errors:
        raise_lone(errors)
    finally:
        LIVE_GROUPS.pop(group, None)
        for sock in sockets:
            sock.close()


async def _supervise(
    group: Workers, worker: _Worker, bootstrap: dict[str, Any], ready: trio.Event
) -> None:
    """Run worker ``worker``, and again whenever it exits, until cancelled."""
    pause = RESTART_PAUSE
    while True:
        started = trio.current_time()
        status = await _run_worker(worker, bootstrap, ready)
        if not ready.is_set():
            raise RuntimeError(
                f"trioudp worker {worker.index} exited with status {status} before it was "
                f"serving (its error is on stderr)"
            )
        group._restarts += 1
        logger.warning(
            "trioudp worker %d exited with status %s; starting it again (restart %d)",
            worker.index,
            status,
            group._restarts,
        )
        if trio.current_time() - started < QUICK_DEATH:
            await trio.sleep(pause)
            pause = min(pause * 2, RESTART_PAUSE_MAX)
        else:
            pause = RESTART_PAUSE


async def _run_worker(worker: _Worker, bootstrap: dict[str, Any], ready: trio.Event) -> int:
    """Start worker ``worker``'s process and wait until it exits (its status);
    when cancelled, tell it to close, and kill it if it takes too long."""
    parent_end, child_end = stdlib_socket.socketpair()
    try:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", _WORKER_START],
            pass_fds=(worker.sock.fileno(), child_end.fileno()),
            env={
                **os.environ,
                WORKER_VARIABLE: str(worker.index),
                "TRIOUDP_WORKER_FDS": f"{worker.sock.fileno()},{child_end.fileno()}",
                # The parent's module path, before trioudp itself is imported:
                # the worker runs the same trioudp (installed or not) as it.
                "TRIOUDP_WORKER_PATH": json.dumps(sys.path),
            },
            stdin=subprocess.DEVNULL,
        )
    except BaseException:
        parent_end.close()
        raise
    finally:
        child_end.close()
    control = _Lines(trio.SocketStream(trio.socket.from_stdlib_socket(parent_end)))
    worker.process = process
    try:
        await control.send(bootstrap)
        record = await control.receive()
        if record is not None and record.get("event") == "ready":
            worker.control = control
            ready.set()
        return await process.wait()
    finally:
        worker.control = worker.process = None
        with trio.CancelScope(shield=True):
            await control._stream.aclose()  # the worker closes its server and exits
            with trio.move_on_after(STOP_GRACE):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


async def bind_group(
    host: str | None, port: int, config: Config, count: int
) -> list[stdlib_socket.socket]:
    """``count`` sockets bound to ``host``:``port`` in one SO_REUSEPORT group,
    with the placement program attached."""
    if port != 0:
        # A port some socket holds already would take ours into its group
        # (and our program would re-place its peers): make sure it is free.
        (await server_socket(host, port, config)).close()
    sockets: list[stdlib_socket.socket] = []
    try:
        for _ in range(count):
            bound = sockets[0].getsockname()[1] if sockets else port
            sockets.append(await server_socket(host, bound, config, shared=True))
        attach_placement(sockets[0], count)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    for sock in sockets:
        sock.set_inheritable(False)
    return sockets


def _worker_count(workers: object) -> int:
    if workers is None:  # the CPUs this process may run on (containers, taskset)
        return max(len(os.sched_getaffinity(0)), 1)
    if type(workers) is not int or not 1 <= workers <= 1024:
        raise ValueError(f"workers must be a number of processes from 1 to 1024, got {workers!r}")
    return workers


def _import_path(handler: object) -> dict[str, str | None]:
    """Where a worker finds ``handler``: its module (or the main script's path)
    and its name there, checked as pickle checks: that name in that module
    must be ``handler`` itself (a bound method or a local function is not)."""
    module = getattr(handler, "__module__", None)
    name = getattr(handler, "__qualname__", None)
    refused = TypeError(
        f"serve_workers() runs the handler in other processes, which import it by name: "
        f"pass a function defined at the top level of a module, got {handler!r}"
    )
    if not isinstance(module, str) or not isinstance(name, str) or "<" in name:
        raise refused
    main = None
    if module == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        if spec is not None and spec.name and spec.name != "__main__":
            module = spec.name  # run with python -m: the workers import it so
        else:
            main = getattr(sys.modules["__main__"], "__file__", None)
            if main is None:
                raise TypeError(
                    "serve_workers() needs the handler in a file the workers can import; "
                    "this one was defined interactively"
                )
            main = os.path.abspath(main)
    # The module it came from: the main one under whichever name it is run.
    found: object = sys.modules.get(getattr(handler, "__module__", ""))
    for part in name.split("."):
        found = getattr(found, part, None)
    if found is not handler:
        raise refused
    return {"module": module, "name": name, "main": main}


# -- the worker's side -------------------------------------------------------------


def worker_main() -> None:
    """A worker process: serve the socket the parent passed until the control
    socket closes."""
    # Ctrl-C reaches the whole process group: the parent tells the workers to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock_fd, control_fd = (int(each) for each in os.environ["TRIOUDP_WORKER_FDS"].split(","))
    control = stdlib_socket.socket(fileno=control_fd)
    line = bytearray()
    while not line.endswith(b"\n"):
        chunk = control.recv(1)
        if not chunk:
            return  # the parent is gone
        line += chunk
    bootstrap = json.loads(line)
    handler = _load(bootstrap["target"])
    trio.run(_serve, handler, stdlib_socket.socket(fileno=sock_fd), control, bootstrap)


def _load(target: dict[str, str | None]) -> Callable[..., Awaitable[object]]:
    main = target["main"]
    namespace: Any
    if main is not None:
        namespace = runpy.run_path(main, run_name="__mp_main__")
        found: Any = namespace[str(target["name"]).split(".")[0]]
        rest = str(target["name"]).split(".")[1:]
    else:
        found = __import__(str(target["module"]), fromlist=["_"])
        rest = str(target["name"]).split(".")
    for part in rest:
        found = getattr(found, part)
    return found  # type: ignore[no-any-return]


async def _serve(
    handler: Callable[..., Awaitable[object]],
    sock: stdlib_socket.socket,
    control_sock: stdlib_socket.socket,
    bootstrap: dict[str, Any],
) -> None:
    key = bootstrap["key"]
    control_sock.setblocking(False)
    control = _Lines(trio.SocketStream(trio.socket.from_stdlib_socket(control_sock)))
    async with (
        from_socket(
            sock,
            topics=bootstrap["topics"],
            key=None if key is None else [bytes.fromhex(each) for each in key],
            config=Config.from_dict(bootstrap["options"]),
        ) as server,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(server.serve, handler)
        # The parent closing the control socket (or going away) ends the worker,
        # however it shows: the end of the stream, or a reset one.
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await control.send({"event": "ready", "pid": os.getpid()})
            while (record := await control.receive()) is not None:
                if record.get("command") == "statistics":
                    figures = attrs.asdict(server.statistics())
                    reply = {"statistics": figures, "pid": os.getpid()}
                    await control.send({**reply, "request": record.get("request")})
        nursery.cancel_scope.cancel()
