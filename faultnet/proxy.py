"""The proxy back-end: an asyncio TCP proxy on 127.0.0.1 that misbehaves on demand.

Covers: delay and jitter, bandwidth, the idle blackhole of an aggressive NAT
(a flow idle longer than T forwards nothing more, and nobody is told), kill
with RST (``SO_LINGER`` 0) or without (just stop forwarding), refusing or
hanging new connections, and counting connections. What it cannot do is in
:data:`faultnet.faults.CANNOT_REPRODUCE`: the proxy's own kernel acknowledges
everything the client sends, so a client never retransmits into the
blackhole; use the kernel back-end for that.

Scenario::

    proxy = FaultProxy(("127.0.0.1", server.port)).start()
    driver = ChirpDriver(*proxy.address, ...)        # the client talks to the proxy
    proxy.set(proxy.faults.but(idle_timeout=2.0))    # an aggressive NAT
    ...                                              # idle > 2 s: the flow is gone
    proxy.close()                                    # every socket closed, thread joined

The decisions (how long to hold a chunk, whether a flow is forgotten) are the
pure functions of ``faults.py``; this module is the thin asyncio shell around
them, running its own event loop in its own thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import socket
import struct
import threading
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from faultnet.faults import LinkFaults, NewConnections, chunk_delay, is_blackholed

__all__ = ["FaultProxy", "ProxyStats"]

T = TypeVar("T")
LOOPBACK = "127.0.0.1"
_CHUNK = 64 * 1024
_CALL_TIMEOUT = 10.0  # seconds for a request to the proxy's loop to be served
_HELD_CHUNKS = 64  # chunks one direction holds for their delay before reading waits


@dataclass
class ProxyStats:
    """Connection counts since the proxy started."""

    accepted: int = 0  # connections forwarded to the server
    hung: int = 0  # accepted and never answered (HANG)
    refused_periods: int = 0  # times the listener was closed (REFUSE)
    killed_rst: int = 0
    killed_silently: int = 0
    blackholed_idle: int = 0  # flows forgotten after idling

    @property
    def connections(self) -> int:
        return self.accepted + self.hung


@dataclass(eq=False)
class _Flow:
    """One proxied connection: both transports and what the faults did to it."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None
    last_activity: float
    killed: bool = False
    blackholed: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client, self.upstream) if w is not None]


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """A TCP proxy from ``listen`` (127.0.0.1, a free port) to ``upstream``.

    Args:
        upstream: (host, port) of the real server.
        faults: the initial link state (no faults by default).
        seed: seed of the jitter's random generator.
        listen_socket: an already listening socket to serve on instead
            (the kernel back-end makes one inside its server namespace).
        extra_listeners: more listening sockets, each with its own upstream
            (an FTP server's passive data ports), under the same faults.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        faults: LinkFaults | None = None,
        seed: int = 0,
        listen_socket: socket.socket | None = None,
        extra_listeners: Sequence[tuple[socket.socket, tuple[str, int]]] = (),
    ) -> None:
        self.upstream = upstream
        self._extra_listeners = list(extra_listeners)
        self._extra_servers: list[asyncio.Server] = []
        self.faults = faults or LinkFaults()
        self.stats = ProxyStats()
        self._rng = random.Random(seed)
        self._listen_socket = listen_socket
        self._port = 0 if listen_socket is None else int(listen_socket.getsockname()[1])
        self._host = LOOPBACK if listen_socket is None else str(listen_socket.getsockname()[0])
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultnet-proxy")
        self._server: asyncio.Server | None = None
        self._flows: set[_Flow] = set()
        self._held: set[asyncio.StreamWriter] = set()  # HANG: accepted, never answered
        self._handlers: set[asyncio.Task[None]] = set()  # one per accepted connection
        self._writers: set[asyncio.StreamWriter] = set()  # every transport, aborted at shutdown
        self._closed = False

    # -- the public, thread-safe side ------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """Where clients connect."""
        return self._host, self._port

    def start(self) -> FaultProxy:
        self._thread.start()
        try:
            self._run(self._listen())
        except BaseException:
            self.close()
            raise
        return self

    def set(self, faults: LinkFaults) -> None:
        """Apply a new link state (a fault, or the healed link)."""
        self._run(self._apply(faults))

    def kill(self, *, rst: bool) -> int:
        """Kill every open connection, with RST or silently; return how many."""
        return self._run(self._kill(rst))

    def active(self) -> int:
        """Connections open and still forwarding."""
        return self._run(self._count_active())

    def close(self) -> None:
        """Close every socket, stop the loop, join the thread. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self._run(self._shutdown())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(_CALL_TIMEOUT)
        self._loop.close()
        if self._listen_socket is not None:
            self._listen_socket.close()
        for sock, _ in self._extra_listeners:
            sock.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(_CALL_TIMEOUT)

    # -- the loop's side --------------------------------------------------------------------

    async def _listen(self) -> None:
        if not self._extra_servers:  # once: a REFUSE period closes only the main listener
            for sock, upstream in self._extra_listeners:
                accept = functools.partial(self._accept, upstream=upstream)
                self._extra_servers.append(await asyncio.start_server(accept, sock=sock))
        if self._listen_socket is not None:
            self._server = await asyncio.start_server(self._accept, sock=self._listen_socket)
            return
        self._server = await asyncio.start_server(
            self._accept, LOOPBACK, self._port, reuse_address=True
        )
        self._port = int(self._server.sockets[0].getsockname()[1])

    async def _apply(self, faults: LinkFaults) -> None:
        before, self.faults = self.faults.new_connections, faults
        if faults.new_connections is before:
            return
        if faults.new_connections is NewConnections.REFUSE and self._listen_socket is None:
            # Nobody listens: the client's kernel gets RST to its SYN, ECONNREFUSED.
            assert self._server is not None
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            self.stats.refused_periods += 1
        elif before is NewConnections.REFUSE and self._server is None:
            await self._listen()
        if faults.new_connections is not NewConnections.HANG:
            for writer in list(self._held):
                writer.transport.abort()  # the held client sees its connection reset

    async def _kill(self, rst: bool) -> int:
        flows = [f for f in self._flows if not f.killed]
        for flow in flows:
            flow.killed = True
            if rst:
                for writer in flow.writers():
                    _abort_with_rst(writer)
                self.stats.killed_rst += 1
            else:  # both directions swallow from now on
                self.stats.killed_silently += 1
        return len(flows)

    async def _count_active(self) -> int:
        return sum(1 for f in self._flows if not (f.killed or f.blackholed))

    async def _accept(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: tuple[str, int] | None = None,
    ) -> None:
        # Every handler is tracked from its first line: shutdown cancels it
        # wherever it waits (connecting upstream, forwarding, held by HANG),
        # and the finally clause closes whatever it had opened.
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        flow: _Flow | None = None
        try:
            if self.faults.new_connections is NewConnections.HANG:
                self.stats.hung += 1
                self._held.add(writer)
                await asyncio.Event().wait()  # never read, never answered
            try:
                up_reader, up_writer = await asyncio.open_connection(*(upstream or self.upstream))
                self._writers.add(up_writer)
            except OSError:
                _abort_with_rst(writer)  # what a client of a dead server sees: a reset
                return
            self.stats.accepted += 1
            flow = _Flow(writer, up_writer, asyncio.get_running_loop().time())
            self._flows.add(flow)
            flow.tasks = [
                asyncio.create_task(self._pump(flow, reader, up_writer)),
                asyncio.create_task(self._pump(flow, up_reader, writer)),
            ]
            await asyncio.gather(*flow.tasks, return_exceptions=True)
        except asyncio.CancelledError:
            # Our own shutdown. Ending normally, not cancelled: Python 3.11's
            # stream callback calls task.exception() and would log the cancel.
            return
        finally:
            self._handlers.discard(task)
            self._held.discard(writer)
            writer.transport.abort()
            self._writers.discard(writer)
            if flow is not None:
                self._flows.discard(flow)
                for w in flow.writers():
                    w.transport.abort()
                    self._writers.discard(w)

    async def _pump(
        self, flow: _Flow, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Forward one direction chunk by chunk, as the faults decide.

        The delay is a link's, not a queue's: reading goes on while earlier
        chunks are held, and each chunk leaves ``delay`` after it came (in
        order, and no sooner than the bandwidth allows after the one before),
        so a message written in two pieces is late by one delay, not two.
        """
        loop = asyncio.get_running_loop()
        held: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(_HELD_CHUNKS)
        sender = asyncio.create_task(self._send_held(flow, held, writer))
        try:
            while True:
                data = await reader.read(_CHUNK)
                if not data:
                    await held.put(None)
                    await sender
                    if not (flow.killed or flow.blackholed) and writer.can_write_eof():
                        writer.write_eof()  # pass the half-close on
                    if flow.killed or flow.blackholed:
                        await asyncio.Event().wait()  # a forgotten flow tells nobody anything
                    return
                now = loop.time()
                if not flow.blackholed and is_blackholed(
                    self.faults, flow.last_activity, now, flow.killed
                ):
                    flow.blackholed = True
                    if not flow.killed:
                        self.stats.blackholed_idle += 1
                if flow.blackholed:
                    continue  # swallowed: see CANNOT_REPRODUCE
                flow.last_activity = now
                await held.put((now, data))
        except (OSError, asyncio.IncompleteReadError):
            for w in flow.writers():
                w.transport.abort()
        finally:
            if not sender.done():
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender

    async def _send_held(
        self,
        flow: _Flow,
        held: asyncio.Queue[tuple[float, bytes] | None],
        writer: asyncio.StreamWriter,
    ) -> None:
        """Write each held chunk when its time comes; None ends the direction."""
        loop = asyncio.get_running_loop()
        last_release = 0.0
        try:
            while (item := await held.get()) is not None:
                arrived, data = item
                transmit = len(data) / self.faults.bandwidth if self.faults.bandwidth else 0.0
                release = max(
                    arrived + chunk_delay(self.faults, self._rng, len(data)),
                    last_release + transmit,
                )
                last_release = release
                wait = release - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if flow.killed:
                    continue
                writer.write(data)
                await writer.drain()
        except OSError:
            for w in flow.writers():
                w.transport.abort()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            self._listen_socket = None  # closed with the server
        for server in self._extra_servers:
            server.close()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        for writer in self._writers:
            writer.transport.abort()
        # Let the aborted transports' close callbacks run before the loop stops.
        await asyncio.sleep(0.05)
