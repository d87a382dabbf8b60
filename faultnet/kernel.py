"""The kernel back-end: client, NAT router and server in private network namespaces.

Covers: a real conntrack NAT between the code under test and the server, so
the client's own kernel meets the fault (it retransmits into the blackhole,
``TCP_USER_TIMEOUT`` fires, keepalive goes unanswered), which the proxy
cannot show. Everything lives in one unprivileged user namespace made by
``unshare -Urnm`` (see ``_holder.py``): it never touches the host's network
and vanishes with its holder process.

Topology (addresses exist only inside the private namespaces)::

    client ns               router ns (NAT)                     server ns
    c0 10.200.1.2 ---- r0 10.200.1.1 | r1 10.200.2.1 ---- s0 10.200.2.2:PORT
                       conntrack, snat to 10.200.2.1,           relay (the proxy's
                       ct state invalid drop in prerouting      shell) -> host
                                                                127.0.0.1:server

The real server stays on the host's loopback (started, crashed and restarted
by ``servers``); a relay whose listening socket was created inside
the server namespace carries the flow the last hop. The relay is also where
latency goes: this kernel has no ``netem`` (probed at start, used if present).

Faults: the NAT's idle timeout (``nf_conntrack_tcp_timeout_established``,
``nf_conntrack_tcp_loose=0``), a silent kill of the flows (``conntrack -D``),
a kill with RST (``ss -K`` on the server side), silent and loud partitions,
random loss (nft ``numgen``), bandwidth (tbf), refusing or hanging new
connections (nft). Root only: entering the namespaces from a threaded
process (``setns``) needs CAP_SYS_ADMIN over them; a non-root user gets
:class:`KernelUnavailable`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from faultnet.faults import LinkFaults, NewConnections
from faultnet.proxy import FaultProxy

__all__ = ["CLIENT_ADDRESS", "SERVER_ADDRESS", "TOOLS", "KernelNet", "KernelUnavailable"]

T = TypeVar("T")
CLIENT_ADDRESS = "10.200.1.2"
ROUTER_CLIENT_SIDE = "10.200.1.1"
ROUTER_SERVER_SIDE = "10.200.2.1"
SERVER_ADDRESS = "10.200.2.2"
SERVICE_PORT = 9094  # inside the private server namespace nothing else can hold it
TOOLS = ("unshare", "nsenter", "ip", "nft", "conntrack", "ss", "tc")
CLONE_NEWNET = 0x40000000
_START_TIMEOUT = 10.0  # seconds for the holder to report its namespaces

_NAT_RULES = f"""
table ip faultnet {{
  chain prerouting {{
    type filter hook prerouting priority -150; policy accept;
    ct state invalid drop
  }}
  chain forward {{
    type filter hook forward priority 0; policy accept;
  }}
  chain postrouting {{
    type nat hook postrouting priority 100; policy accept;
    oifname "r1" snat to {ROUTER_SERVER_SIDE}
  }}
}}
"""


#: role: (its end of the veth pair, the router's end, its address, the router's address)
_LINKS: dict[str, tuple[str, str, str, str]] = {
    "client": ("c0", "r0", CLIENT_ADDRESS, ROUTER_CLIENT_SIDE),
    "server": ("s0", "r1", SERVER_ADDRESS, ROUTER_SERVER_SIDE),
}


class KernelUnavailable(RuntimeError):
    """The kernel back-end cannot run here; the reason says why."""


def _setns(pid: int) -> None:
    """Move the calling thread into the network namespace of ``pid``."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"setns into the network namespace of {pid}: {os.strerror(code)}")
    finally:
        os.close(fd)


def _listen_in_netns(pid: int, host: str, port: int) -> socket.socket:
    """A listening TCP socket inside the network namespace of ``pid``.

    A throwaway thread enters the namespace, makes the socket and ends: a
    socket keeps the namespace it was made in, the thread is never reused.
    """
    result: list[socket.socket | BaseException] = []

    def make() -> None:
        try:
            _setns(pid)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(64)
            result.append(sock)
        except BaseException as exc:  # handed to the caller's thread
            result.append(exc)

    thread = threading.Thread(target=make, name="faultnet-netns-listen")
    thread.start()
    thread.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


class KernelNet:
    """The three namespaces, the NAT and the relay to ``upstream`` (host, port on loopback).

    Use as a context manager, or call :meth:`up` and :meth:`down`.
    """

    limits = (
        "latency is added in userspace by the relay in the server namespace (no netem in "
        "this kernel, probed at start); root only (setns from a threaded process)"
    )

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        idle_timeout: float = 432000.0,
        extra_ports: Sequence[int] = (),
    ) -> None:
        self.upstream = upstream
        #: More ports of the same upstream host relayed on the same number (FTP's
        #: passive data ports: the client connects to the port EPSV names).
        self.extra_ports = tuple(extra_ports)
        self.idle_timeout = idle_timeout
        self.pids: dict[str, int] = {}
        self.has_netem = False
        self.relay: FaultProxy | None = None
        self._faults_before_crash = LinkFaults()
        self._holder: subprocess.Popen[str] | None = None
        self._client: concurrent.futures.ThreadPoolExecutor | None = None

    # -- lifecycle --------------------------------------------------------------------------

    @staticmethod
    def missing() -> str | None:
        """Why this machine cannot run the back-end, or None."""
        absent = [t for t in TOOLS if shutil.which(t) is None]
        if absent:
            return (
                f"missing tools: {', '.join(absent)} (apt-get install nftables conntrack iproute2)"
            )
        if os.geteuid() != 0:
            return "the kernel back-end needs root (setns into its namespaces)"
        return None

    def up(self) -> KernelNet:
        reason = self.missing()
        if reason is not None:
            raise KernelUnavailable(reason)
        try:
            self._start_holder()
            self._build_topology()
            self.set_idle_timeout(self.idle_timeout)
            self._start_relay()
            self._client = concurrent.futures.ThreadPoolExecutor(
                1, "faultnet-client", initializer=_setns, initargs=(self.pids["client"],)
            )
        except BaseException:
            self.down()
            raise
        return self

    def _start_relay(self) -> FaultProxy:
        """The relay's listening sockets, made inside the (current) server namespace."""
        sock = _listen_in_netns(self.pids["server"], SERVER_ADDRESS, SERVICE_PORT)
        extra = []
        try:
            for port in self.extra_ports:
                listener = _listen_in_netns(self.pids["server"], SERVER_ADDRESS, port)
                extra.append((listener, (self.upstream[0], port)))
        except BaseException:
            sock.close()
            for listener, _ in extra:
                listener.close()
            raise
        self.relay = FaultProxy(self.upstream, listen_socket=sock, extra_listeners=extra)
        return self.relay.start()

    def down(self) -> None:
        """Remove everything: relay, client thread, namespaces (with their holder)."""
        if self.relay is not None:
            self.relay.close()
            self.relay = None
        if self._client is not None:
            self._client.shutdown(wait=True)
            self._client = None
        holder, self._holder = self._holder, None
        if holder is not None:
            with contextlib.suppress(OSError):
                assert holder.stdin is not None
                holder.stdin.close()  # the holder's cue to exit, taking its namespaces along
            try:
                holder.wait(timeout=5)
            except subprocess.TimeoutExpired:
                holder.kill()
                holder.wait(timeout=5)
            if holder.stdout is not None:
                holder.stdout.close()
        self.pids = {}

    def __enter__(self) -> KernelNet:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    def _start_holder(self) -> None:
        argv = ["unshare", "-Urnm", "--kill-child", "--", sys.executable, "-m", "faultnet._holder"]
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, PYTHONPATH=package_root)
        self._holder = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        assert self._holder.stdout is not None
        ready, _, _ = select.select([self._holder.stdout], [], [], _START_TIMEOUT)
        line = self._holder.stdout.readline() if ready else ""
        if not line:
            raise KernelUnavailable("the namespace holder did not start (unshare -Urnm refused?)")
        self.pids = {role: int(pid) for role, pid in json.loads(line).items()}

    def _link(self, role: str) -> None:
        """The veth pair between ``role``'s namespace and the router, addressed and routed."""
        dev, router_dev, address, gateway = _LINKS[role]
        self.router("ip", "link", "add", dev, "type", "veth", "peer", "name", router_dev)
        self.router("ip", "link", "set", dev, "netns", str(self.pids[role]))
        self.router("ip", "addr", "add", f"{gateway}/24", "dev", router_dev)
        self.router("ip", "link", "set", router_dev, "up")
        self.run(role, "ip", "addr", "add", f"{address}/24", "dev", dev)
        self.run(role, "ip", "link", "set", dev, "up")
        self.run(role, "ip", "link", "set", "lo", "up")
        self.run(role, "ip", "route", "add", "default", "via", gateway)

    def _build_topology(self) -> None:
        self.router("ip", "link", "set", "lo", "up")
        for role in ("client", "server"):
            self._link(role)
        self.router("sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.router("nft", "-f", "-", stdin=_NAT_RULES)
        self.router("sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_loose=0")
        probe = self.run(
            "router",
            "tc",
            "qdisc",
            "add",
            "dev",
            "lo",
            "root",
            "netem",
            "delay",
            "1ms",
            check=False,
        )
        self.has_netem = probe.returncode == 0
        if self.has_netem:
            self.router("tc", "qdisc", "del", "dev", "lo", "root")

    # -- running things in the namespaces ----------------------------------------------------

    def run(
        self, role: str, *argv: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the ``role`` namespace ("client", "router", "server")."""
        result = subprocess.run(
            ["nsenter", "-t", str(self.pids[role]), "-n", "--", *argv],
            input=stdin, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise RuntimeError(f"{role}: {' '.join(argv)}: {result.stderr.strip()}")
        return result

    def router(self, *argv: str, stdin: str | None = None) -> None:
        self.run("router", *argv, stdin=stdin)

    def client_command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the client namespace (the code under test)."""
        return ["nsenter", "-t", str(self.pids["client"]), "-n", "--", *argv]

    def in_client(self, fn: Callable[[], T]) -> T:
        """Call ``fn`` in a thread inside the client namespace (its sockets are made there)."""
        assert self._client is not None, "the kernel back-end is not up"
        return self._client.submit(fn).result()

    @property
    def address(self) -> tuple[str, int]:
        """Where the client connects: the server's address behind the NAT."""
        return SERVER_ADDRESS, SERVICE_PORT

    # -- faults ------------------------------------------------------------------------------

    def crash_server_host(self) -> None:
        """The server's whole host dies: its namespace and everything in it, without a word.

        The link goes first, so nothing the dying host's sockets would say (FIN,
        RST) reaches the client; then the relay's sockets close and the namespace
        is ended. The router now has no route to the server: a client's packets
        get ICMP unreachable or nothing, as from a crashed machine.
        """
        self.run("router", "ip", "link", "del", "r1", check=False)
        if self.relay is not None:
            self._faults_before_crash = self.relay.faults
            self.relay.close()
            self.relay = None
        self.pids["server"] = self._renew("server")

    def restart_server_host(self) -> None:
        """The server's host is back: a fresh namespace, the same address, a new relay.

        Connections from before the crash are unknown to it: the client's next
        packet on one gets RST, as from a rebooted machine.
        """
        if self.relay is not None:
            return  # it never went down
        self._link("server")
        relay = self._start_relay()
        relay.set(self._faults_before_crash)  # the link's faults (delay) outlive the host

    def _renew(self, role: str) -> int:
        holder = self._holder
        assert holder is not None and holder.stdin is not None and holder.stdout is not None
        holder.stdin.write(f"renew {role}\n")
        holder.stdin.flush()
        ready, _, _ = select.select([holder.stdout], [], [], _START_TIMEOUT)
        line = holder.stdout.readline() if ready else ""
        if not line:
            raise KernelUnavailable(f"the namespace holder did not renew the {role} namespace")
        return int(json.loads(line)[role])

    def set_idle_timeout(self, seconds: float) -> None:
        """The NAT forgets a flow idle this long (whole seconds, at least 1)."""
        self.idle_timeout = seconds
        value = max(1, round(seconds))
        self.router("sysctl", "-qw", f"net.netfilter.nf_conntrack_tcp_timeout_established={value}")

    def flows(self) -> int:
        """TCP flows the NAT remembers."""
        out = self.run("router", "conntrack", "-L", "-p", "tcp", check=False).stdout
        return sum(1 for line in out.splitlines() if line.startswith("tcp"))

    def silent_kill(self) -> None:
        """The NAT forgets every flow now; neither end is told."""
        self.run("router", "conntrack", "-D", "-p", "tcp", check=False)  # 1 when none

    def rst_kill(self) -> None:
        """Reset every connection to the service (the server side sends RST)."""
        # Only the relay has connections in the server namespace: the service's and,
        # with extra ports, the data connections too.
        self.run("server", "ss", "-K", "-t", "state", "established")

    def partition(self, *, silent: bool) -> None:
        """Cut the router: drop everything (silent) or answer it with RST/ICMP (loud)."""
        verdict = "drop" if silent else "reject with tcp reset"
        proto = "" if silent else "meta l4proto tcp "
        self.router("nft", "add", "rule", "ip", "faultnet", "forward", *f"{proto}{verdict}".split())

    def loss(self, percent: int) -> None:
        """Drop ``percent`` % of forwarded packets at random."""
        rule = f"numgen random mod 100 < {int(percent)} drop"
        self.router("nft", "add", "rule", "ip", "faultnet", "forward", *rule.split())

    def new_connections(self, policy: NewConnections) -> None:
        """Refuse (RST to the SYN) or hang (drop the SYN) connections from now on."""
        if policy is NewConnections.ACCEPT:
            self.heal()
            return
        verdict = "reject with tcp reset" if policy is NewConnections.REFUSE else "drop"
        rule = f"ct state new meta l4proto tcp {verdict}"
        self.router("nft", "add", "rule", "ip", "faultnet", "forward", *rule.split())

    def bandwidth(self, bytes_per_second: float | None) -> None:
        """Limit both directions with tbf (None: unlimited)."""
        for dev in ("r0", "r1"):
            self.run("router", "tc", "qdisc", "del", "dev", dev, "root", check=False)
            if bytes_per_second:
                rate = f"{int(bytes_per_second * 8)}bit"
                self.router("tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate,
                            "burst", "16kb", "latency", "500ms")  # fmt: skip

    def delay(self, seconds: float, jitter: float = 0.0) -> None:
        """One-way latency: netem where the kernel has it, else the relay in userspace."""
        if self.has_netem:
            for dev in ("r0", "r1"):
                self.run("router", "tc", "qdisc", "replace", "dev", dev, "root", "netem",
                         "delay", f"{seconds * 1000:g}ms", f"{jitter * 1000:g}ms")  # fmt: skip
            return
        assert self.relay is not None
        self.relay.set(self.relay.faults.but(delay=seconds, jitter=jitter))

    def heal(self) -> None:
        """Remove partitions, loss, connection policies, delay and bandwidth limits."""
        self.router("nft", "flush", "chain", "ip", "faultnet", "forward")
        self.bandwidth(None)
        if self.relay is not None:
            self.relay.set(LinkFaults())
