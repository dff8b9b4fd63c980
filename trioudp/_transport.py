"""The one way to and from the wire: every datagram trioudp sends goes through
``Transport``, under one error policy.

Receiving. ``drain`` reads datagrams with ``recvfrom_into`` into one
preallocated buffer until the kernel has none left or a batch was read (a
few after the socket was empty, so that a burst's first messages go on at
once, doubling up to RECEIVE_BATCH),
feeding each to the engine (with GRO on, several per read, cut apart again),
or until a message fills its receive queue: then the receive task lets that
queue's consumer run before it reads on, so that under a flood what the
consumer cannot take yet stays in the kernel (whose drops are counted,
``kernel_drops``) rather than being decoded only to be dropped (receive
livelock; Mogul and Ramakrishnan, 1997).

Sending. Datagrams go out in the order the engine made them: one per system
call, or with UDP GSO a run of equal-sized datagrams to one address in one
``sendmsg``. The application's own sends (``send``) wait while the kernel has
no room (trio backpressure); the engine's own output (``push``: ACKs, PINGs,
retransmissions, made while reading or on a timer) never waits: what the
kernel cannot take yet waits in order in a backlog that one task sends once
the socket is writable.

Errors. ``POLICY`` below is the whole error policy, the table in
docs/design.md: every errno ends in one ``Action``. Whatever happens to a
datagram the engine made by itself, it never ends the endpoint: it is counted
against its peer, and where it cannot ever be sent, fails that peer alone.
"""

from __future__ import annotations

import enum
import errno
import logging
import math
import os
from collections import deque
from typing import TYPE_CHECKING, NamedTuple

import trio

from ._multicast import priority_cmsg
from ._offload import (
    GRO_ANCILLARY_SIZE,
    GSO_UNSUPPORTED,
    enable_gro,
    gro_segment_size,
    gso_available,
    gso_runs,
    segment_cmsg,
    split_coalesced,
)
from ._sockets import kernel_drops

if TYPE_CHECKING:
    import socket as stdlib_socket
    from collections.abc import Awaitable, Callable, Sequence

    from ._config import Config
    from ._engine import Engine
    from ._message import Address
    from ._sending import Datagram

logger = logging.getLogger(__name__)

#: Datagrams read per batch before the receive task lets other tasks run.
RECEIVE_BATCH = 128
#: Datagrams read by the first drain after the socket was found empty; each
#: drain that reads its fill doubles it, up to RECEIVE_BATCH. A burst's first
#: messages reach their consumers (a handler each, say) before the rest of it
#: is decoded; a backlog is still read in full batches after a few turns.
FIRST_BATCH = 4
#: A drain that read this many checks whether the kernel is dropping meanwhile.
DROPS_CHECKED_AFTER = 8


class Drained(enum.IntEnum):
    """Why ``drain`` stopped."""

    #: The socket has nothing more: wait until it is readable.
    EMPTY = 0
    #: The batch was read (or GRO was just turned on): read on after a checkpoint.
    MORE = 1
    #: A message filled its receive queue: read on once its consumer has run.
    FILLED = 2


#: ENOBUFS back-off: the first wait, doubled up to the last (about 0.5 s in all).
NOBUFS_FIRST_WAIT = 0.001
NOBUFS_LAST_WAIT = 0.256
#: A socket that says it is writable this soon, and then takes nothing, spins.
SPIN = 0.001
_RECEIVE_BUFFER = 65536
#: A datagram this large suggests a sender that segments (GSO): turn GRO on.
GRO_WORTHWHILE = 512
#: ``send_rate``'s bursts: this many bytes (a GSO run's most), or this long at
#: the rate, whichever is more.
PACING_BURST = 65536
PACING_BURST_TIME = 0.005
#: The shortest wait for the rate.
PACING_LEAST_WAIT = 1e-6
#: Under send_rate, a GSO run carries at most this long of the rate (and at
#: least one datagram), so that a message's fragments go evenly spaced.
PACING_RUN_TIME = 0.01


class _Abandoned(list["Datagram"]):
    """A run of a send cancelled while it waited for ``send_rate``: given up
    (counted) when it reaches the front rather than sent."""

    __slots__ = ()


class Sent(NamedTuple):
    """A send ``offer`` could not finish: how many datagrams must have left
    before it is done, the error for its caller so far, and how many
    datagrams it queued."""

    target: int
    failure: Exception | None
    queued: int = 0


class Action(enum.Enum):
    """What a failed send leads to."""

    WAIT_WRITABLE = "wait until the socket is writable, then send it again"
    BACK_OFF = (
        "in the application's send: wait (1 ms, doubling to 256 ms) and send it again, then "
        "a counted drop; the engine's own output: a counted drop at once"
    )
    REPORTED = (
        "an earlier datagram's ICMP error, reported now: counted, noted for receive(), sent again"
    )
    DROP = "counted drop against its peer (datagrams_send_dropped), as a loss on the way"
    REFUSED = "error to the caller who asked; a reliable peer is failed (UNREACHABLE)"
    UNSEGMENTED = (
        "the run sent again one datagram per call; if its first datagram then goes, GSO is "
        "turned off for the endpoint (else the address was at fault, and GSO stays on)"
    )
    CLOSED = "the endpoint is closed: ClosedResourceError to the caller"


#: ICMP errors a connected socket reports on a later send or receive.
_ICMP = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EHOSTDOWN,
        errno.ENETDOWN,
    }
)

#: The error policy. An errno not named here is REFUSED: the address cannot be
#: sent to. On a connected socket the ICMP errors (_ICMP) are REPORTED the first
#: time; a GSO run that fails with an errno of GSO_UNSUPPORTED is UNSEGMENTED.
POLICY: dict[int, Action] = {
    errno.EAGAIN: Action.WAIT_WRITABLE,
    errno.EWOULDBLOCK: Action.WAIT_WRITABLE,
    errno.ENOBUFS: Action.BACK_OFF,
    errno.ENOMEM: Action.BACK_OFF,
    # No route now, or a firewall: the network's condition, not the address's.
    errno.ENETUNREACH: Action.DROP,
    errno.EHOSTUNREACH: Action.DROP,
    errno.ENETDOWN: Action.DROP,
    errno.EHOSTDOWN: Action.DROP,
    errno.ECONNREFUSED: Action.DROP,
    errno.ECONNRESET: Action.DROP,
    errno.EPERM: Action.DROP,
    errno.EADDRNOTAVAIL: Action.DROP,
    # The address can never be sent to, or the datagram never fit.
    errno.EACCES: Action.REFUSED,
    errno.EMSGSIZE: Action.REFUSED,
    errno.EAFNOSUPPORT: Action.REFUSED,
    errno.EINVAL: Action.REFUSED,
    errno.EDESTADDRREQ: Action.REFUSED,
    errno.EISCONN: Action.REFUSED,
    errno.ENOTCONN: Action.REFUSED,
    errno.EBADF: Action.CLOSED,
    errno.ENOTSOCK: Action.CLOSED,
}


def classify(error: int, *, connected: bool, run: int, reported: bool) -> Action:
    """The Action for a send of ``run`` datagrams that failed with ``error``."""
    if run > 1 and error in GSO_UNSUPPORTED:
        return Action.UNSEGMENTED
    if connected and error in _ICMP and not reported:
        return Action.REPORTED
    return POLICY.get(error, Action.REFUSED)


class Transport:
    """One endpoint's socket, read and written under the error policy."""

    def __init__(
        self,
        sock: stdlib_socket.socket,
        config: Config,
        engine: Engine,
        *,
        remote: Address | None,
        real: bool,
        wait_writable: Callable[[], Awaitable[None]],
        on_gone: Callable[[], None],
        on_engine: Callable[[], None],
    ) -> None:
        self._sock = sock
        #: Called when the socket turns out to be gone (EBADF): the endpoint closes.
        self._on_gone = on_gone
        #: Called after a send's failure was told to the engine (a report or a
        #: drop may wake a receiver, or fail a reliable peer), from whichever task
        #: sent: the endpoint hands out the engine's events. It must not send.
        self._on_engine = on_engine
        self._config = config
        self._engine = engine
        #: The receive queues: a message that fills one ends a drain.
        self._delivery = engine.delivery
        self._remote = remote
        self._wait_writable = wait_writable
        #: Segmentation offload (Linux): several datagrams per system call.
        self._gso = real and config.offload and gso_available(sock)
        #: Where (in ``_done``) the datagrams of a GSO run that failed begin,
        #: sent one per call: if the first goes, GSO was at fault.
        self._unsegmented_at: int = -1
        #: GRO is turned on once a datagram of GRO_WORTHWHILE bytes arrives:
        #: reading with recvmsg costs more per call than recvfrom, which small
        #: datagrams (never coalesced on their own) should not pay.
        self.gro = False
        self._gro_possible = real and config.offload
        self._buffer = bytearray(_RECEIVE_BUFFER)
        #: Datagrams waiting for the kernel, in order, in the runs that go to it in
        #: one system call each (a GSO run, or one datagram); how many datagrams
        #: wait; how many have left (sent or dropped) since the start; where an
        #: ICMP report was last taken; how many system calls sent something.
        self._pending: deque[list[Datagram]] = deque()
        self._waiting: int = 0
        self._done: int = 0
        self.calls = 0
        self._reported_at: int = -1
        self._send_lock = trio.Lock()
        #: Starts the backlog task in the endpoint's nursery (None until the
        #: endpoint's tasks run); whether one runs, or is due once it can start.
        self.spawn: Callable[[Callable[[], Awaitable[None]]], object] | None = None
        self._backlog_running = False
        #: Addresses whose senders wait in ``complete``, and the error the policy
        #: gave one of them while another task was sending.
        self._askers: dict[Address, int] = {}
        self._refused: dict[Address, Exception] = {}
        #: The errno of the last datagram that found no room (for a drop).
        self._no_room = errno.ENOBUFS
        #: ``send_rate``'s token bucket: bytes that may go now, as of when;
        #: how long the last drain found it must wait for the next run.
        self._rate = config.send_rate
        self._burst = max(PACING_BURST, (config.send_rate or 0) * PACING_BURST_TIME)
        self._tokens = self._burst
        self._tokens_at = trio.current_time()
        self._pacing = 0.0
        #: Datagrams per run under send_rate: 10 ms of it (a run goes whole).
        self._run_most = (
            max(1, int((config.send_rate or 0) * PACING_RUN_TIME) // config.max_datagram_size)
            if config.send_rate is not None
            else 1 << 30
        )
        #: Set when the endpoint closes: wakes a send waiting for the rate.
        self._closing = trio.Event()
        self.closed = False
        #: The kernel's drop count for the socket when last read (None: the
        #: kernel does not say), and what it has counted since the endpoint
        #: took the socket.
        self._drops_seen: int | None = kernel_drops(sock) if real else None
        self.datagrams_kernel_dropped: int = 0
        #: The count at the last ``check_drops``; datagrams the last drain read.
        self._drops_checked = -1 if self._drops_seen is None else self._drops_seen
        self._reads = 0
        #: How many the next drain reads at most (see FIRST_BATCH).
        self._batch = FIRST_BATCH
        #: The last drain read the count and did not leave the socket empty.
        self._checked = False
        self.receive_errors = 0
        self.datagrams_offloaded = 0
        self.datagrams_coalesced = 0

    # -- receiving ----------------------------------------------------------------------

    def drain(self, now: float) -> Drained:
        """Read datagrams into the engine until the socket has none left, or
        the batch was read (FIRST_BATCH after the socket was empty, doubling up
        to RECEIVE_BATCH), or GRO was just turned on, or a message filled its
        receive queue. A drain that read many tells the engine whether the
        kernel is dropping datagrams meanwhile (``check_drops``)."""
        delivery = self._delivery
        if delivery.kernel_dropping and not self._checked:
            self.check_drops()  # it may have stopped since
        delivery.filled = False
        batch = self._reads = self._batch
        drain = self._drain_coalesced if self.gro else self._drain_plain
        drained = drain(now, batch)
        if drained is Drained.EMPTY:
            self._batch = FIRST_BATCH
        elif drained is Drained.MORE:
            self._batch = min(batch * 2, RECEIVE_BATCH)
        checked = self._reads >= DROPS_CHECKED_AFTER
        if checked:
            self.check_drops()
        # Checked just now, with no wait for the socket to follow: the next
        # drain need not read the count again before it starts.
        self._checked = checked and drained is not Drained.EMPTY
        return drained

    def _drain_plain(self, now: float, batch: int) -> Drained:
        buffer = self._buffer
        receive_datagram = self._engine.receive_datagram
        recvfrom_into = self._sock.recvfrom_into
        view = memoryview(buffer)
        delivery = self._delivery
        for read in range(batch):
            try:
                size, address = recvfrom_into(buffer)
            except BlockingIOError:
                self._reads = read
                return Drained.EMPTY
            except OSError as exc:
                if not self._receive_error(exc, now):
                    self._reads = read
                    return Drained.EMPTY
                continue
            receive_datagram(view[:size], address, now)
            if delivery.filled:
                self._reads = read + 1
                return Drained.FILLED
            if size >= GRO_WORTHWHILE and self._gro_possible:
                self._gro_possible = False
                self.gro = enable_gro(self._sock)
                if self.gro:
                    return Drained.MORE
        return Drained.MORE

    def _drain_coalesced(self, now: float, batch: int) -> Drained:
        """``drain`` with GRO on: a read may bring several datagrams of one size
        (the last may be shorter), which go to the engine one by one."""
        receive_datagram = self._engine.receive_datagram
        recvmsg_into = self._sock.recvmsg_into
        buffers = [self._buffer]
        view = memoryview(self._buffer)
        delivery = self._delivery
        for read in range(batch):
            try:
                size, ancillary, _flags, address = recvmsg_into(buffers, GRO_ANCILLARY_SIZE)
            except BlockingIOError:
                self._reads = read
                return Drained.EMPTY
            except OSError as exc:
                if not self._receive_error(exc, now):
                    self._reads = read
                    return Drained.EMPTY
                continue
            segment = gro_segment_size(ancillary) if ancillary else 0
            if segment:
                for datagram in split_coalesced(view, size, segment):
                    self.datagrams_coalesced += 1
                    receive_datagram(datagram, address, now)
            else:
                receive_datagram(view[:size], address, now)
            if delivery.filled:
                self._reads = read + 1
                return Drained.FILLED
        return Drained.MORE

    def check_drops(self) -> None:
        """Tell the engine whether the kernel has dropped datagrams for the
        socket since the last check."""
        drops = self.read_drops()
        self._delivery.kernel_dropping = drops != self._drops_checked
        self._drops_checked = drops

    def read_drops(self) -> int:
        """The kernel's drop count now (-1 where it does not say), with
        ``datagrams_kernel_dropped`` brought up to date."""
        seen = self._drops_seen
        if seen is None or self.closed:
            return -1
        drops = kernel_drops(self._sock)
        if drops is None:
            return -1
        grown = (drops - seen) % (1 << 32)  # a u32, which may wrap
        if grown < 1 << 31:  # else not this socket's count: the fd was reused
            self.datagrams_kernel_dropped += grown
        self._drops_seen = drops
        return drops

    def figures(self) -> dict[str, int]:
        """The transport's own figures for the endpoint's statistics."""
        self.read_drops()
        return {
            "receive_errors": self.receive_errors,
            "datagrams_offloaded": self.datagrams_offloaded,
            "datagrams_coalesced": self.datagrams_coalesced,
            "datagrams_kernel_dropped": self.datagrams_kernel_dropped,
        }

    def _receive_error(self, exc: OSError, now: float) -> bool:
        """An error reading the socket: counted, never the end of the endpoint
        unless the socket is gone. True: read on; False: stop this batch."""
        self.receive_errors += 1
        code = exc.errno or 0
        if code in _ICMP:
            self._engine.unreachable(code, exc.strerror or str(exc), now)
            logger.debug("ICMP error on a receive: %s", exc)
            return True
        if POLICY.get(code) is Action.CLOSED:
            raise trio.ClosedResourceError("the socket was closed under this trioudp endpoint")
        logger.debug("error reading the socket, counted: %s", exc)
        return False

    # -- sending ------------------------------------------------------------------------

    def offer(self, datagrams: list[Datagram], asker: Address) -> Sent | None:
        """The application's send, as far as it goes without waiting: put
        ``datagrams`` (behind whatever waits already) on the wire. None: all of
        them went (or were handled by the policy) with no error for the caller;
        else what ``complete`` must finish."""
        if self.closed:
            raise trio.ClosedResourceError("this trioudp endpoint is closed")
        pending = self._pending
        if not pending and len(datagrams) == 1 and self._rate is None:
            # The commonest send: one datagram, nothing waiting before it.
            data, address, priority = datagrams[0]
            self.calls += 1
            try:
                if priority is None and address == self._remote:
                    self._sock.send(data)  # what _put does with it, in short
                else:
                    self._put(datagrams, address, priority)
            except (OSError, TypeError, ValueError, OverflowError) as exc:
                self._queue(datagrams)
                failure = self._failed(exc, asker, patient=True)
            else:
                self._done += 1
                return None
        else:
            self._queue(datagrams)
            failure = self._drain(asker, patient=True)
        if failure is None and not pending:
            return None
        return Sent(self._done + self._waiting, failure, len(datagrams))

    def _queue(self, datagrams: list[Datagram]) -> None:
        """Put ``datagrams`` behind what waits, cut into the runs they go in."""
        pending = self._pending
        if len(datagrams) > 1 and self._gso:
            sizes = [len(data) for data, _, _ in datagrams]
            keys = [(address, priority) for _, address, priority in datagrams]
            most = self._run_most
            for start, stop in gso_runs(sizes, keys):
                for cut in range(start, stop, most):  # send_rate: runs of 10 ms or less
                    pending.append(datagrams[cut : min(cut + most, stop)])
        else:
            pending.extend([datagram] for datagram in datagrams)
        self._waiting += len(datagrams)

    async def complete(self, sent: Sent, asker: Address) -> None:
        """Finish what ``offer`` began: wait while the kernel has no room until
        every datagram of that send has left, then raise the error the policy
        gives the caller, if a datagram to ``asker`` met one (whichever task
        happened to hand it to the kernel). Cancelled, it leaves what is still
        waiting to the backlog task; or, when it waited for ``send_rate``, gives
        it up (counted): a send cancelled after waiting long for the rate must
        not leave its message to go out after it, behind which every later send
        would wait."""
        waiting = self._askers
        waiting[asker] = waiting.get(asker, 0) + 1
        failure = sent.failure
        try:
            failure = await self._until_done(sent.target, asker) or failure
        except trio.Cancelled:
            if self._pacing:  # cancelled while it waited for send_rate
                self._abandon(sent.target - sent.queued, sent.target)
            raise
        finally:
            waiting[asker] -= 1
            if not waiting[asker]:
                del waiting[asker]
            failure = self._refused.pop(asker, None) or failure
            if self._pending:
                self._wake_backlog()
        if failure is not None:
            raise failure

    def push(self, datagrams: list[Datagram]) -> None:
        """The engine's own output: sent now as far as the kernel takes it; the
        rest waits, in order, for the backlog task. Never waits, never raises."""
        if self.closed or not datagrams:
            return
        self._queue(datagrams)
        self._drain(None, patient=False)
        if self._pending:
            self._wake_backlog()

    def _abandon(self, first: int, target: int) -> None:
        """The runs of datagrams ``first`` to ``target`` still waiting are marked
        to be given up when they reach the front (``_drain``): the counts of
        what has left stay as they are for every other send."""
        pending = self._pending
        index = self._done
        marked: list[int] = []
        for position, run in enumerate(pending):
            if index >= target:
                break
            if index >= first:
                marked.append(position)
            index += len(run)
        for position in marked:
            pending[position] = _Abandoned(pending[position])

    def _wake_backlog(self) -> None:
        """Datagrams wait that no caller is sending: start the backlog task,
        which sends them as the kernel (and ``send_rate``) has room and ends
        when none are left. It runs only then: an endpoint whose kernel always
        has room has no such task."""
        if self._backlog_running or self.closed:
            return
        self._backlog_running = True
        if self.spawn is not None:
            try:
                self.spawn(self._backlog)
            except RuntimeError:  # the endpoint's tasks have ended: it is closing
                self._backlog_running = False

    def start_backlog(self, spawn: Callable[[Callable[[], Awaitable[None]]], object]) -> None:
        """The endpoint's tasks run: from now on the backlog task can start."""
        self.spawn = spawn
        if self._backlog_running:
            spawn(self._backlog)

    async def _backlog(self) -> None:
        try:
            await self._until_done(None, None)
        finally:
            self._backlog_running = False
        if self._pending:  # more came while it finished
            self._wake_backlog()

    async def _until_done(self, target: int | None, asker: Address | None) -> Exception | None:
        """Wait for room and send, until ``target`` datagrams have left (the
        application's send, ``asker``'s) or the backlog is empty (None)."""
        failure: Exception | None = None
        backoff = NOBUFS_FIRST_WAIT
        spinning = False
        while self._pending and (target is None or self._done < target):
            done = self._done
            if self._pacing:
                now = trio.current_time()
                # Later than now even where the clock's step is coarse.
                with trio.move_on_at(max(now + self._pacing, math.nextafter(now, math.inf))):
                    await self._closing.wait()
            elif self._blocked is Action.BACK_OFF or spinning:
                # The kernel gives no word when it has room again: wait a little
                # longer each time, then give the datagram up as a full router would.
                if backoff > NOBUFS_LAST_WAIT:
                    self._drop_first()
                    backoff = NOBUFS_FIRST_WAIT
                else:
                    await trio.sleep(backoff)
                    backoff *= 2
            elif self._blocked is Action.WAIT_WRITABLE:
                before = trio.current_time()
                async with self._send_lock:
                    await self._wait_writable()
                # Writable at once (under a millisecond), yet no room on the next
                # try: do not spin on it, back off as for ENOBUFS.
                spinning = trio.current_time() - before < SPIN
            if self.closed:
                if target is None:
                    return None
                raise trio.ClosedResourceError("this trioudp endpoint is closed")
            failure = self._drain(asker, patient=target is not None) or failure
            if self._done > done:
                backoff = NOBUFS_FIRST_WAIT
                spinning = False
            elif self._blocked is not Action.WAIT_WRITABLE:
                spinning = False
        return failure

    #: Why the last drain stopped with datagrams still pending.
    _blocked: Action | None = None

    def _drain(self, asker: Address | None, *, patient: bool) -> Exception | None:
        """Send what is pending, in order, until it is all gone or the kernel
        pushes back (``_blocked`` says how). Gives the error for ``asker``, if a
        datagram to it was REFUSED. Only a ``patient`` sender (the application,
        in its own task) backs off on ENOBUFS; the engine's own output is
        dropped at once then, and sent again by reliable delivery if need be."""
        pending = self._pending
        failure: Exception | None = None
        self._blocked = None
        self._pacing = 0.0
        rate = self._rate
        size = 0
        while pending:
            if self.closed:
                self._forget_pending()
                return failure
            run = pending[0]
            _data, address, priority = run[0]
            if type(run) is _Abandoned:
                self._drop_first(errno.ECANCELED)
                continue
            if rate is not None:
                size = sum(len(data) for data, _, _ in run)
                self._pacing = self._paced(size, rate)
                if self._pacing:
                    return failure
            try:
                self._put(run, address, priority)
            except (OSError, TypeError, ValueError, OverflowError) as exc:
                failure = self._failed(exc, asker, patient=patient) or failure
                if self._blocked is not None:
                    return failure
                continue
            if self._done == self._unsegmented_at:
                self._unsegmented()
            self._tokens -= size
            pending.popleft()
            self._waiting -= len(run)
            self._done += len(run)
        return failure

    def _paced(self, size: int, rate: float) -> float:
        """``send_rate``: 0 if a run may go now, else how long until it may. A
        run goes while the bucket holds anything, and may take it below zero:
        the wait after it is then what it overdrew, so runs go evenly spaced
        and none waits longer than its own size at the rate."""
        now = trio.current_time()
        tokens = self._tokens = min(self._burst, self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        if tokens > 0:
            return 0.0
        return max(-tokens / rate, PACING_LEAST_WAIT)

    def _unsegmented(self) -> None:
        """A datagram of a GSO run the kernel refused went alone: GSO is what it
        refuses, so every run waiting is cut into single datagrams, and every
        send is one datagram per call from now on."""
        self._gso = False
        self._unsegmented_at = -1
        logger.debug("UDP GSO refused: one datagram per send from now on")
        pending = self._pending
        # A cancelled send's runs stay marked (_Abandoned) as they are cut.
        singles = [type(run)([datagram]) for run in pending for datagram in run]
        pending.clear()
        pending.extend(singles)

    def _put(self, run: Sequence[Datagram], address: Address, priority: int | None) -> None:
        """Hand one datagram, or a GSO run of several, to the socket: with a DSCP
        marking as ancillary data if it has its own, without an address to the
        peer the socket is connected to."""
        sock = self._sock
        self.calls += 1
        connected = address == self._remote
        marking: list[tuple[int, int, bytes]] = []
        if priority is not None and priority != self._config.priority:
            marking.append(priority_cmsg(sock.family, priority))
        if len(run) > 1:
            marking.append(segment_cmsg(len(run[0][0])))
            sock.sendmsg(
                [data for data, _, _ in run], marking, 0, *(() if connected else (address,))
            )
            self.datagrams_offloaded += len(run)
        elif marking:
            sock.sendmsg([run[0][0]], marking, 0, *(() if connected else (address,)))
        elif connected:
            sock.send(run[0][0])
        else:
            sock.sendto(run[0][0], address)

    def _failed(self, exc: Exception, asker: Address | None, *, patient: bool) -> Exception | None:
        """Apply the policy to the run at the front of the pending queue, which
        failed with ``exc`` (an OSError, or the socket module's TypeError,
        ValueError or OverflowError for an address it cannot take, which is
        EINVAL's case). Gives the error to raise in the caller's task, if any."""
        code = (exc.errno or 0) if isinstance(exc, OSError) else errno.EINVAL
        run = self._pending[0]
        count = len(run)
        data, address, _priority = run[0]
        connected = address == self._remote
        action = classify(
            code, connected=connected, run=count, reported=self._reported_at == self._done
        )
        if action is Action.BACK_OFF and not patient:
            action = Action.DROP
        engine = self._engine
        now = trio.current_time()
        if action is Action.WAIT_WRITABLE or action is Action.BACK_OFF:
            self._blocked = action
            self._no_room = code
            return None
        if self._done == self._unsegmented_at:
            self._unsegmented_at = -1  # alone it fails too: the address, not GSO
        if action is Action.UNSEGMENTED:
            # Was it GSO, or this address (port 0, say)? Its first datagram, sent
            # alone, tells (see _drain).
            self._unsegmented_at = self._done
            pending = self._pending
            pending.popleft()
            pending.extendleft([datagram] for datagram in reversed(run))
            return None
        if action is Action.REPORTED:
            self._reported_at = self._done
            self.receive_errors += 1
            engine.unreachable(code, _strerror(exc), now)
            self._on_engine()
            return None
        if action is Action.CLOSED:
            # The socket is gone under us: so is the endpoint.
            self._forget_pending(code)
            self.closed = True
            self._on_gone()
            return trio.ClosedResourceError(f"the endpoint's socket is gone: {exc}")
        self._pending.popleft()
        self._waiting -= count
        self._done += count
        permanent = engine.send_failed(
            address, code, count, now, permanent=action is Action.REFUSED, size=len(data)
        )
        self._on_engine()
        logger.debug("dropped %d datagram(s) to %s: %s", count, address, exc)
        if permanent:
            error = _caller_error(exc, len(data), address)
            if address == asker:
                return error
            if address in self._askers:
                self._refused[address] = error  # for the task that sent it
        return None

    def _drop_first(self, code: int = 0) -> None:
        """Give the front run up: the kernel had no room for it for long (or
        ``code``: its send was cancelled)."""
        run = self._pending.popleft()
        _data, address, _priority = run[0]
        self._waiting -= len(run)
        self._done += len(run)
        self._blocked = None
        now = trio.current_time()
        self._engine.send_failed(address, code or self._no_room, len(run), now, permanent=False)
        self._on_engine()
        logger.debug(
            "dropped %d datagram(s) to %s: %s",
            len(run),
            address,
            os.strerror(code or self._no_room),
        )

    def _forget_pending(self, code: int = 0) -> None:
        """What waits will never be sent: with ``code``, counted as dropped."""
        if code:
            now = trio.current_time()
            for run in self._pending:
                self._engine.send_failed(run[0][1], code, len(run), now, permanent=False)
        self._done += self._waiting
        self._waiting = 0
        self._pending.clear()

    def close(self) -> None:
        self.read_drops()
        self.closed = True
        self._closing.set()
        self._forget_pending()


def _strerror(exc: Exception) -> str:
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc)


def _caller_error(exc: Exception, size: int, address: Address) -> Exception:
    if isinstance(exc, OSError) and exc.errno == errno.EMSGSIZE:
        return OSError(
            exc.errno,
            f"a {size}-byte datagram is too large to send to {address[0]}: lower "
            f"max_datagram_size (1200 crosses any Internet path)",
        )
    return exc
