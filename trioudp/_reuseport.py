"""One UDP port, several sockets: Linux's SO_REUSEPORT groups, and a classic
BPF program that keeps each peer on one socket of the group.

Sockets bound to one address and port with SO_REUSEPORT form a group, and
the kernel gives each datagram to one of them, by default by a hash of the
4-tuple over the sockets open now: when one closes, the rest of the peers
are hashed anew and most of them move (and lose their sessions). A program
attached with SO_ATTACH_REUSEPORT_CBPF picks the socket instead: its return
value is an index into the group, in the order the sockets were bound. Ours
hashes the source address and port, so every datagram of a peer goes to the
same index; ``serve_workers`` binds every socket of the group in the parent
process and keeps it open, so no index ever changes, even while the worker
process that reads one is being restarted (its peers' datagrams wait in its
socket's buffer meanwhile).
"""

from __future__ import annotations

import ctypes
import errno
import secrets
import socket as stdlib_socket
import struct
import sys

#: Linux's socket options (not in the socket module on every Python).
SO_REUSEPORT = getattr(stdlib_socket, "SO_REUSEPORT", 15)
SO_ATTACH_REUSEPORT_CBPF = 51
#: Classic BPF's base for loads relative to the network (IP) header: a
#: reuseport program runs on the UDP payload, the headers before it.
_NET = -0x100000
#: The golden ratio's 32-bit multiplier (Fibonacci hashing, Knuth 6.4).
_GOLDEN = 0x9E3779B1

# Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
_LDB_ABS, _LDH_ABS, _LDW_ABS, _LDH_IND, _LDXB_MSH = 0x30, 0x28, 0x20, 0x48, 0xB1
_RSH_K, _XOR_X, _XOR_K, _MUL_K, _MOD_K = 0x74, 0xAC, 0xA4, 0x24, 0x94
_JEQ_K, _JA, _TAX, _RET_A = 0x15, 0x05, 0x07, 0x16


def _instruction(code: int, k: int = 0, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k & 0xFFFFFFFF)


def placement_program(sockets: int, salt: int) -> bytes:
    """The classic BPF program (``struct sock_filter`` array) that picks one of
    ``sockets`` by a hash of the datagram's source address and port: IPv4
    (options or not) and IPv6 (no extension headers), an IPv4 datagram on a
    dual-stack socket too. A datagram too short to read gives 0. ``salt`` (32
    random bits) keeps the placement from being worked out from outside, so
    that spoofed source addresses cannot all be aimed at one worker."""
    i = _instruction
    return b"".join(
        [
            i(_LDB_ABS, _NET),  # A = the IP header's first byte
            i(_RSH_K, 4),  # A = the IP version
            i(_JEQ_K, 6, jt=6),  # IPv6: to the IPv6 part
            # IPv4: A = source address ^ source port.
            i(_LDXB_MSH, _NET),  # X = the IPv4 header's length
            i(_LDH_IND, _NET),  # A = the UDP header's source port
            i(_TAX),
            i(_LDW_ABS, _NET + 12),  # A = the source address
            i(_XOR_X),
            i(_JA, 13),  # to the hash
            # IPv6: A = the source address's four words and the port, xored.
            i(_LDH_ABS, _NET + 40),  # the UDP source port after a 40-byte header
            i(_TAX),
            i(_LDW_ABS, _NET + 8),
            i(_XOR_X),
            i(_TAX),
            i(_LDW_ABS, _NET + 12),
            i(_XOR_X),
            i(_TAX),
            i(_LDW_ABS, _NET + 16),
            i(_XOR_X),
            i(_TAX),
            i(_LDW_ABS, _NET + 20),
            i(_XOR_X),
            # The hash: the top 16 bits of A, salted, times the golden ratio, modulo.
            i(_XOR_K, salt),
            i(_MUL_K, _GOLDEN),
            i(_RSH_K, 16),
            i(_MOD_K, sockets),
            i(_RET_A),
        ]
    )


def check_reuse_port() -> None:
    """Refuse SO_REUSEPORT's load balancing where the system has none."""
    if not sys.platform.startswith("linux"):
        raise OSError(
            errno.EOPNOTSUPP,
            f"reuse_port=True needs Linux, whose SO_REUSEPORT spreads one UDP port's "
            f"datagrams over several sockets; this system ({sys.platform}) does not "
            f"balance UDP that way: run one server per port instead",
        )


def reuse_port(sock: stdlib_socket.socket) -> None:
    """Let ``sock`` join the SO_REUSEPORT group of the address it binds."""
    check_reuse_port()
    sock.setsockopt(stdlib_socket.SOL_SOCKET, SO_REUSEPORT, 1)


def attach_placement(sock: stdlib_socket.socket, sockets: int) -> None:
    """Attach the placement program for ``sockets`` sockets to the group of
    ``sock`` (bound, with SO_REUSEPORT)."""
    program = placement_program(sockets, secrets.randbits(32))
    code = ctypes.create_string_buffer(program, len(program))
    # struct sock_fprog: an unsigned short count, then a pointer (padded).
    fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(code))
    try:
        sock.setsockopt(stdlib_socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
    except OSError as exc:
        raise OSError(
            exc.errno,
            f"this kernel would not attach the program that keeps each peer on one worker "
            f"(SO_ATTACH_REUSEPORT_CBPF, Linux 4.5 and later: {exc.strerror}); serve_workers "
            f"needs it",
        ) from exc
