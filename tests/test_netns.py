"""Multicast and broadcast across real hosts: network namespaces joined by veth
pairs and bridges, each host running tests/netns_agent.py.

Needs root and iproute2 (CI has both); elsewhere these tests skip, saying why.
The last ones route between two hosts over links of different MTUs, for path
MTU probing.
Run them alone with ``nox -s netns``. Addresses come from 198.18.0.0/15 and
fd00::/8, every namespace is removed when its test ends, pass or fail, and no
datagram leaves the namespaces.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

AGENT = Path(__file__).resolve().with_name("netns_agent.py")
PORT = 4242
ETH0 = ("--interface", "eth0")
_labs = itertools.count()


def _unavailable() -> str | None:
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux-only"
    if os.geteuid() != 0:
        return "creating network namespaces needs root (CI runs as root; try sudo nox -s netns)"
    if shutil.which("ip") is None:
        return "needs iproute2's ip command (apt-get install iproute2)"
    probe = f"tuprobe{os.getpid()}"
    made = subprocess.run(
        ["ip", "netns", "add", probe], capture_output=True, text=True, check=False
    )
    if made.returncode:
        return f"cannot create a network namespace here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], check=False)
    return None


UNAVAILABLE = _unavailable()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or "")


def ip(*arguments: str) -> None:
    done = subprocess.run(
        ["ip", *arguments], capture_output=True, text=True, timeout=30, check=False
    )
    if done.returncode:
        raise RuntimeError(f"ip {' '.join(arguments)}: {done.stderr.strip()}")


class Agent:
    """One agent process in a namespace, driven line by line."""

    def __init__(self, namespace: str, *arguments: str) -> None:
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", namespace, sys.executable, str(AGENT), *arguments],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        #: Lines read while waiting for another kind (messages that came in
        #: while a command was being answered, say).
        self.backlog: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.expect("ready")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(json.loads(line))
        self.lines.put({"exited": self.process.wait()})

    def expect(self, key: str, timeout: float = 15) -> dict[str, Any]:
        """The next line that carries ``key`` (others wait in the backlog);
        an exit or an error fails the test."""
        for index, line in enumerate(self.backlog):
            if key in line:
                return self.backlog.pop(index)
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"the agent said no {key!r} within {timeout} s") from None
            if key in line:
                return line
            if "exited" in line or "error" in line:
                stderr = self.process.stderr.read() if self.process.stderr else ""
                raise AssertionError(f"expected {key!r} from the agent, got {line}\n{stderr}")
            self.backlog.append(line)

    def received(self, timeout: float = 15) -> str:
        return str(self.expect("got", timeout)["got"])

    def do(self, command: str, answer: str | None = None) -> dict[str, Any] | None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.expect(answer) if answer else None

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.do("quit")
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=10)
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


class Lab:
    """Test hosts: namespaces, switches (bridges, each in a namespace of its
    own) and the agents running in them."""

    def __init__(self) -> None:
        self.tag = f"tu{os.getpid() % 100000}n{next(_labs)}"
        self.namespaces: list[str] = []
        self.agents: list[Agent] = []
        self._ports = itertools.count()

    def host(self, name: str) -> str:
        namespace = f"{self.tag}-{name}"
        ip("netns", "add", namespace)
        self.namespaces.append(namespace)
        ip("-n", namespace, "link", "set", "lo", "up")
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                namespace,
                "sysctl",
                "-q",
                "-w",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ],
            check=True,
            capture_output=True,
        )
        return namespace

    def switch(self, name: str) -> str:
        namespace = self.host(name)
        ip("-n", namespace, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        ip("-n", namespace, "link", "set", "br0", "up")
        return namespace

    def plug(self, host: str, switch: str, *addresses: str, interface: str = "eth0") -> None:
        """Connect ``host`` to ``switch`` by a veth pair and give it addresses."""
        port = f"p{next(self._ports)}"
        ip(
            "-n",
            host,
            "link",
            "add",
            interface,
            "type",
            "veth",
            "peer",
            "name",
            port,
            "netns",
            switch,
        )
        ip("-n", switch, "link", "set", port, "master", "br0", "up")
        ip("-n", host, "link", "set", interface, "up")
        for address in addresses:
            ip("-n", host, "addr", "add", address, "dev", interface)

    def agent(self, host: str, *arguments: str) -> Agent:
        agent = Agent(host, *arguments)
        self.agents.append(agent)
        return agent

    def close(self) -> None:
        for agent in self.agents:
            agent.close()
        for namespace in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", namespace], check=False, capture_output=True)


@pytest.fixture
def lab() -> Iterator[Lab]:
    made = Lab()
    try:
        yield made
    finally:
        made.close()
    leftover = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    assert made.tag not in leftover.stdout


def lan(lab: Lab, *names: str, subnet: int = 1) -> dict[str, str]:
    """Hosts on one switch: host name -> namespace; host i gets 198.18.S.i and
    fd00:S::i."""
    switch = lab.switch(f"sw{subnet}")
    hosts: dict[str, str] = {}
    for number, name in enumerate(names, 1):
        hosts[name] = lab.host(name)
        lab.plug(hosts[name], switch, f"198.18.{subnet}.{number}/24", f"fd00:{subnet}::{number}/64")
    return hosts


GROUP = "239.255.42.1"
GROUP6 = "ff15::c73d:cf41:ea8e:b0a0"  # mcl's example group


@pytest.mark.parametrize("group", [GROUP, GROUP6])
def test_multicast_reaches_every_member_and_no_one_else(lab: Lab, group: str) -> None:
    hosts = lan(lab, "a", "b", "c", "d")
    port = str(PORT)
    b = lab.agent(hosts["b"], "multicast", group, port, "--interface", "eth0")
    # The interface may also be named by one of its addresses.
    c_address = "198.18.1.3" if group == GROUP else "fd00:1::3"
    c = lab.agent(hosts["c"], "multicast", group, port, "--interface", c_address)
    d = lab.agent(hosts["d"], "unicast", port)  # on the port, but not a member
    a = lab.agent(hosts["a"], "multicast", group, port, "--interface", "eth0")
    for text, size in (("hello", 5), ("large", 200_000), ("third", 5)):
        a.do(f"send {text} {size}", "sent")
        for member in (b, c):
            got = member.expect("got")
            assert (got["got"], got["size"]) == (text, size)
            assert got["from"] in ("198.18.1.1", "fd00:1::1")
    d_address = "198.18.1.4" if group == GROUP else "fd00:1::4"
    a.do(f"sendto {d_address} {port} probe", "sent")
    assert d.received() == "probe"  # and before it, none of the group's messages
    stats = a.do("stats", "stats")
    assert stats is not None
    assert stats["stats"]["own"] == 1 + 171 + 1  # its own copies, looped back and dropped
    assert stats["stats"]["delivered"] == 0


def test_leaving_a_group_stops_delivery(lab: Lab) -> None:
    hosts = lan(lab, "a", "b")
    b = lab.agent(hosts["b"], "multicast", GROUP, str(PORT), *ETH0)
    a = lab.agent(hosts["a"], "multicast", GROUP, str(PORT), "--no-loopback", *ETH0)
    a.do("send before", "sent")
    assert b.received() == "before"
    b.do(f"leave {GROUP}", "left")
    a.do("send after", "sent")
    a.do(f"sendto 198.18.1.2 {PORT} probe", "sent")
    assert b.received() == "probe"
    b.do(f"join {GROUP}", "joined")
    a.do("send again", "sent")
    assert b.received() == "again"


def test_several_groups_on_one_port(lab: Lab) -> None:
    hosts = lan(lab, "a", "b")
    other = "239.255.42.2"
    both = lab.agent(hosts["b"], "multicast", GROUP, str(PORT), *ETH0)
    both.do(f"join {other}", "joined")
    # On the same host, so that the host as a whole has joined both groups:
    # the endpoint must still get only its own (IP_MULTICAST_ALL is off).
    first_only = lab.agent(hosts["b"], "multicast", GROUP, str(PORT), *ETH0)
    sender = lab.agent(hosts["a"], "multicast", GROUP, str(PORT), *ETH0)
    sender.do(f"sendgroup {other} to-second", "sent")
    sender.do(f"sendgroup {GROUP} to-first", "sent")
    assert [both.received(), both.received()] == ["to-second", "to-first"]
    assert first_only.received() == "to-first"  # the second group's never came


def test_loopback_option_decides_what_this_host_hears(lab: Lab) -> None:
    hosts = lan(lab, "a", "b")
    listener = lab.agent(hosts["a"], "multicast", GROUP, str(PORT), *ETH0)
    remote = lab.agent(hosts["b"], "multicast", GROUP, str(PORT), *ETH0)
    quiet = lab.agent(hosts["a"], "multicast", GROUP, str(PORT), "--no-loopback", *ETH0)
    loud = lab.agent(hosts["a"], "multicast", GROUP, str(PORT), *ETH0)
    quiet.do("send unlooped", "sent")
    assert remote.received() == "unlooped"
    loud.do("send looped", "sent")
    assert remote.received() == "looped"
    assert listener.received() == "looped"  # the unlooped one never came
    assert quiet.received() == "looped"


@pytest.mark.parametrize("group", [GROUP, GROUP6])
def test_ttl_and_hop_limit_are_set(lab: Lab, group: str) -> None:
    hosts = lan(lab, "a", "b")
    hops = lab.agent(hosts["b"], "hops", group, str(PORT), "--interface", "eth0")
    for ttl in ("1", "9"):
        sender = lab.agent(
            hosts["a"], "multicast", group, str(PORT), "--ttl", ttl, "--interface", "eth0"
        )
        sender.do(f"send ttl{ttl}", "sent")
        got = hops.expect("got")
        assert (got["got"], got["hops"]) == (f"ttl{ttl}", int(ttl))


def test_source_specific_join_hears_only_that_source(lab: Lab) -> None:
    hosts = lan(lab, "a", "b", "c")
    group = "232.1.2.3"  # the source-specific range, RFC 4607
    b = lab.agent(hosts["b"], "multicast", group, str(PORT), "--source", "198.18.1.1", *ETH0)
    a = lab.agent(hosts["a"], "multicast", group, str(PORT), "--source", "198.18.1.1", *ETH0)
    c = lab.agent(hosts["c"], "multicast", group, str(PORT), "--source", "198.18.1.1", *ETH0)
    a.do("send from-a", "sent")
    assert b.received() == "from-a"
    c.do("send from-c", "sent")
    a.do("send from-a-again", "sent")
    assert b.received() == "from-a-again"


@pytest.mark.parametrize(
    ("interface", "complaint"),
    [("nosuch0", "no network interface 'nosuch0'"), (None, "cannot join multicast group")],
)
def test_a_join_that_cannot_work_says_which_interface_to_pass(
    lab: Lab, interface: str | None, complaint: str
) -> None:
    host = lab.host("lonely")  # only a loopback interface: no multicast route
    arguments = ["multicast", GROUP, str(PORT)] + (["--interface", interface] if interface else [])
    done = subprocess.run(
        ["ip", "netns", "exec", host, sys.executable, str(AGENT), *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    error = json.loads(done.stdout)["error"]
    assert complaint in error
    assert "pass interface=" in error
    assert "lo" in error  # the interfaces it could use are listed


def test_multicast_sender_gets_unicast_replies(lab: Lab) -> None:
    # Twisted's MulticastServer / MulticastClient: the client multicasts, the
    # server answers it alone, by unicast, on the same port.
    hosts = lan(lab, "client", "server")
    lab.agent(hosts["server"], "multicast", GROUP, str(PORT), "--reply", *ETH0)
    client = lab.agent(hosts["client"], "multicast", GROUP, str(PORT), "--no-loopback", *ETH0)
    client.do("send Client:Ping", "sent")
    got = client.expect("got")
    assert (got["got"], got["from"]) == ("re:Client:Ping", "198.18.1.2")


def test_ipv6_link_local_multicast(lab: Lab) -> None:
    switch = lab.switch("sw")
    a, b = lab.host("a"), lab.host("b")
    lab.plug(a, switch)  # link-local addresses only
    lab.plug(b, switch)
    group = "ff02::4242"
    listener = lab.agent(b, "multicast", group, str(PORT), "--interface", "eth0", "--reply")
    sender = lab.agent(a, "multicast", group, str(PORT), "--interface", "eth0")
    sender.do("send link-local", "sent")
    got = listener.expect("got")
    assert got["got"] == "link-local"
    assert got["from"].startswith("fe80:")
    # The reply goes back to a link-local address, so it needs the scope id.
    assert sender.received() == "re:link-local"


def test_topics_filter_multicast(lab: Lab) -> None:
    hosts = lan(lab, "camera", "viewer")
    viewer = lab.agent(
        hosts["viewer"], "multicast", GROUP6, str(PORT), "--interface", "eth0", "--topics", "frames"
    )
    camera = lab.agent(hosts["camera"], "multicast", GROUP6, str(PORT), "--interface", "eth0")
    camera.do("send status 10 status", "sent")
    camera.do("send frame 300000 frames", "sent")
    got = viewer.expect("got")
    assert (got["got"], got["size"], got["topic"]) == ("frame", 300_000, "frames")
    stats = viewer.do("stats", "stats")
    assert stats is not None
    assert stats["stats"]["filtered"] == 1
    assert stats["stats"]["received"] == stats["stats"]["accounted"]


def test_broadcast_reaches_its_subnet_and_stops_at_the_router(lab: Lab) -> None:
    hosts = lan(lab, "a", "b", "c")
    router = lab.host("router")
    lab.plug(router, lab.namespaces[0], "198.18.1.254/24")
    other = lab.switch("sw2")
    lab.plug(router, other, "198.18.2.254/24", interface="eth1")
    subprocess.run(
        ["ip", "netns", "exec", router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
        check=True,
        capture_output=True,
    )
    far = lab.host("far")
    lab.plug(far, other, "198.18.2.1/24")
    for namespace, gateway in [
        (hosts["a"], "198.18.1.254"),
        (hosts["b"], "198.18.1.254"),
        (hosts["c"], "198.18.1.254"),
        (far, "198.18.2.254"),
    ]:
        ip("-n", namespace, "route", "add", "default", "via", gateway)
    b = lab.agent(hosts["b"], "broadcast", str(PORT))
    b_again = lab.agent(hosts["b"], "broadcast", str(PORT))  # two listeners on one host
    c = lab.agent(hosts["c"], "broadcast", str(PORT))
    e = lab.agent(far, "broadcast", str(PORT))
    a = lab.agent(hosts["a"], "broadcast", str(PORT))
    subnet = lab.agent(hosts["a"], "broadcast", str(PORT), "--address", "198.18.1.255")
    a.do("send limited", "sent")
    subnet.do("send directed", "sent")
    for member in (b, b_again, c):
        assert sorted(member.received() for _ in range(2)) == ["directed", "limited"]
    a.do(f"sendto 198.18.2.1 {PORT} probe", "sent")
    assert e.received() == "probe"  # routed unicast arrives; the broadcasts did not


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example(namespace: str, script: str, *arguments: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ip", "netns", "exec", namespace, sys.executable, str(EXAMPLES / script), *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run_example(
    namespace: str, script: str, *arguments: str, check: bool = False
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", namespace, sys.executable, str(EXAMPLES / script), *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
    )


def first_line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    return process.stdout.readline()


def finish(process: subprocess.Popen[str]) -> str:
    output, _ = process.communicate(timeout=60)
    return output


def test_example_twisted_multicast_pair(lab: Lab) -> None:
    hosts = lan(lab, "client", "server")
    server = example(
        hosts["server"], "multicast_server.py", "--interface", "eth0", "--duration", "20"
    )
    try:
        assert "joined 228.0.0.5" in first_line(server)
        client = run_example(
            hosts["client"], "multicast_client.py", "--interface", "eth0", "--wait", "2"
        )
        assert client.returncode == 0, client.stdout + client.stderr
        assert client.stdout.strip() == "Datagram b'Server: Pong' received from 198.18.1.2"
    finally:
        server.terminate()
        output = finish(server)
    assert "Datagram b'Client: Ping' received from 198.18.1.1" in output


def test_example_topic_pubsub_over_ipv6(lab: Lab) -> None:
    hosts = lan(lab, "publisher", "viewer", "logger")
    viewer = example(
        hosts["viewer"],
        "topic_pubsub.py",
        "--interface",
        "eth0",
        "listen",
        "--topics",
        "camera",
        "--duration",
        "20",
    )
    logger = example(
        hosts["logger"],
        "topic_pubsub.py",
        "--interface",
        "eth0",
        "listen",
        "--topics",
        "status",
        "--duration",
        "20",
    )
    try:
        assert "listening for camera" in first_line(viewer)
        assert "listening for status" in first_line(logger)
        for topic, size in (("camera", "500000"), ("status", "12")):
            published = run_example(
                hosts["publisher"],
                "topic_pubsub.py",
                "--interface",
                "eth0",
                "publish",
                "--topic",
                topic,
                "--size",
                size,
                check=True,
            )
            digest = published.stdout.split("sha256 ")[1].strip()
            reader = viewer if topic == "camera" else logger
            line = first_line(reader)
            assert f"'topic': '{topic}', 'payload': {size} bytes, sha256 {digest}" in line
    finally:
        for process in (viewer, logger):
            process.terminate()
            finish(process)


def test_example_broadcast_discovery(lab: Lab) -> None:
    hosts = lan(lab, "asker", "printer", "scanner")
    for namespace in hosts.values():
        ip("-n", namespace, "route", "add", "default", "via", "198.18.1.254")
    responders = [
        example(
            hosts[name], "broadcast_discovery.py", "respond", "--name", name, "--duration", "20"
        )
        for name in ("printer", "scanner")
    ]
    try:
        for responder in responders:
            assert "answering discovery" in first_line(responder)
        asked = run_example(hosts["asker"], "broadcast_discovery.py", "ask", "--wait", "2")
        assert asked.returncode == 0, asked.stdout + asked.stderr
        lines = sorted(asked.stdout.splitlines())
        assert lines == ["2 found", "found printer at 198.18.1.2", "found scanner at 198.18.1.3"]
    finally:
        for responder in responders:
            responder.terminate()
            finish(responder)


# -- path MTU probing across a router (issue 14, target 3) --------------------------

PMTU_SERVER = """
import sys, trio, trioudp
async def main():
    async with trioudp.open_udp_server("0.0.0.0", 4242, reliable=True) as server:
        print("ready", flush=True)
        with trio.fail_after(60):
            for _ in range(int(sys.argv[1])):
                message = await server.receive()
                print(len(message.payload), message.payload[:1].hex(), flush=True)
trio.run(main)
"""
PMTU_CLIENT = """
import json, sys, trio, trioudp
async def main():
    options = json.loads(sys.argv[2])
    async with trioudp.open_udp_connection(sys.argv[1], 4242, reliable=True, **options) as client:
        with trio.fail_after(60):
            for number in range(3):
                await client.send(bytes([number]) * 262144)
            await client.flush()
            await trio.sleep(1)  # the probes run their course
        stats = client.statistics()
        print(json.dumps({"size": stats.max_datagram_size, "failed": stats.messages_failed}))
trio.run(main)
"""


def routed(lab: Lab, near_mtu: int, far_mtu: int) -> tuple[str, str]:
    """A client host and a server host with a router between them: the
    client's link carries ``near_mtu`` bytes, the server's ``far_mtu``."""
    client, router, server = lab.host("client"), lab.host("router"), lab.host("server")
    for host, side, subnet, mtu in ((client, "rt1", 1, near_mtu), (server, "rt2", 2, far_mtu)):
        ip("-n", host, "link", "add", "eth0", "type", "veth", "peer", "name", side, "netns", router)
        for namespace, interface, number in ((host, "eth0", 1), (router, side, 254)):
            ip("-n", namespace, "link", "set", "dev", interface, "mtu", str(mtu), "up")
            ip("-n", namespace, "addr", "add", f"198.18.{subnet}.{number}/24", "dev", interface)
        ip("-n", host, "route", "add", "default", "via", f"198.18.{subnet}.254")
    subprocess.run(
        ["ip", "netns", "exec", router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
        check=True,
        capture_output=True,
    )
    return client, server


@pytest.mark.parametrize(
    ("near_mtu", "far_mtu", "options", "size"),
    [
        # A jumbo-frame link, then an Ethernet one: the 8972-byte probe leaves
        # and is dropped at the router (Don't Fragment): lost, three times.
        (9000, 1500, {}, 1472),
        # The client's own interface takes 1500: the kernel refuses the probe.
        (1500, 1500, {}, 1472),
        (9000, 9000, {}, 8972),
        (9000, 1500, {"probe_path_mtu": False}, 1200),
    ],
)
def test_path_mtu_probing_finds_the_narrowest_link(
    lab: Lab, near_mtu: int, far_mtu: int, options: dict[str, object], size: int
) -> None:
    client, server = routed(lab, near_mtu, far_mtu)
    receiving = subprocess.Popen(
        ["ip", "netns", "exec", server, sys.executable, "-c", PMTU_SERVER, "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert receiving.stdout is not None
        assert receiving.stdout.readline().strip() == "ready"
        sending = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                client,
                sys.executable,
                "-c",
                PMTU_CLIENT,
                "198.18.2.1",
                json.dumps(options),
            ],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert sending.returncode == 0, sending.stderr
        received, errors = receiving.communicate(timeout=30)
        assert receiving.returncode == 0, errors
    finally:
        if receiving.poll() is None:
            receiving.kill()
            receiving.wait()
    assert received.split() == ["262144", "00", "262144", "01", "262144", "02"]
    assert json.loads(sending.stdout) == {"size": size, "failed": 0}
