"""A blocking I/O shell around :class:`HttpConnection`: one kept-alive socket, deadlines, counters.

Strategy: one :class:`HttpClient` holds at most one TCP connection to one
server and runs one request/response cycle at a time. The connection is
opened lazily by the first request (and charged to that operation in the
counters), kept alive between requests while both sides allow it, and
replaced when the server closed it. A request that finds its kept-alive
connection already closed by the server (servers close idle ones after a
keep-alive timeout) before a single byte of the response arrived is sent once
more on a fresh connection, if its method is idempotent (RFC 9110 section
9.2.2: GET, HEAD, PUT, DELETE, PROPFIND, MKCOL; MOVE is not, as a repeated
MOVE would report ENOENT for a move that happened).

Every wait on the network has a deadline: the socket timeout bounds each
connect, send and receive, and a whole response must arrive within
``timeout`` seconds of the request. Failures surface as OSError with
ECONNREFUSED, ECONNRESET, ETIMEDOUT or EHOSTUNREACH.

Counters: each request is one round trip; each connection opened, and the
bytes each way, go to whatever operation the driver is running.
"""

from __future__ import annotations

import errno
import select
import socket
import time
from contextlib import suppress
from dataclasses import dataclass, field

from drivers._counters import DriverCounters
from drivers._http._connection import HttpConnection
from drivers._http._events import (
    NEED_DATA,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Headers,
    InformationalResponse,
    ProtocolError,
    Request,
    Response,
    header_value,
)
from drivers._network import call_with_recovery, connect_tcp, recovery_budget

__all__ = ["MAX_LISTING_BYTES", "HttpClient", "HttpReply"]

_RECV_CHUNK = 256 * 1024
_IDEMPOTENT = frozenset({"GET", "HEAD", "PROPFIND", "OPTIONS", "PUT", "DELETE", "MKCOL"})
#: Requests sent again after a broken connection, whatever became of the first copy:
#: their replay does the same thing (a PUT carries the whole file). DELETE, MKCOL and
#: MOVE are not: a replay would report the first copy's work as an error (404, 405).
_REPLAYABLE = frozenset({"GET", "HEAD", "PROPFIND", "OPTIONS", "PUT"})
#: Seconds of reconnecting after a connection that worked broke (HTTP and WebDAV).
DEFAULT_RECOVERY = 60.0
RECOVERY_ENV = "AVIARY_HTTP_RECOVERY"
#: A directory listing (an index page, a PROPFIND) larger than this is refused (EPROTO).
MAX_LISTING_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class HttpReply:
    """A whole response: its head and (possibly truncated) body."""

    status: int
    reason: str
    headers: Headers
    body: bytes = field(repr=False)
    #: The body was cut short on purpose (``stop_after``): the rest was never read.
    truncated: bool = False

    def header(self, name: str) -> str | None:
        return header_value(self.headers, name.lower())


class HttpClient:
    """Blocking HTTP/1.1 requests to one server, over one kept-alive connection.

    Args:
        host: server address.
        port: server port.
        counters: the driver's counters, charged with every round trip, connection and byte.
        timeout: seconds allowed for any one network wait and for a whole response.
        label: how the server is named in error messages ("http://127.0.0.1:8080").
    """

    def __init__(
        self,
        host: str,
        port: int,
        counters: DriverCounters,
        *,
        timeout: float,
        label: str,
        recovery: float | None = None,
    ) -> None:
        #: Seconds spent resending a replayable request after a broken connection
        #: (None: ``$AVIARY_HTTP_RECOVERY``, else 60; 0: fail at once).
        self.recovery = recovery_budget(recovery, RECOVERY_ENV, DEFAULT_RECOVERY)
        self._cycles_done = 0
        self.host = host
        self.port = port
        self.counters = counters
        self.timeout = timeout
        self.label = label
        self._sock: socket.socket | None = None
        self._conn: HttpConnection | None = None
        self._requests_on_connection = 0

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def close(self) -> None:
        """Drop the connection; the next request opens a new one."""
        sock, self._sock, self._conn = self._sock, None, None
        if sock is not None:
            with suppress(OSError):
                sock.close()

    # -- one request -------------------------------------------------------------------

    def request(
        self,
        method: str,
        target: str,
        headers: Headers | list[tuple[str, str]] = (),
        body: bytes = b"",
        *,
        stop_after: int | None = None,
        limit: int | None = None,
    ) -> HttpReply:
        """Send one request and read its whole response.

        Args:
            method: "GET", "PUT", "PROPFIND", ...
            target: the percent-encoded path (and query) to ask for.
            headers: extra headers; Host and Content-Length are added here.
            body: the request body (sent with Content-Length).
            stop_after: the body bytes wanted; once more than this arrived, the
                connection is dropped instead of reading the rest (``truncated``).
            limit: the most body bytes a sane reply has (a listing): more is EPROTO.

        Raises:
            OSError: ECONNREFUSED, ECONNRESET, ETIMEDOUT, EHOSTUNREACH, or EPROTO when
                the server breaks HTTP.
        """
        all_headers = [("Host", self.host_header), *headers]
        if body or method in ("PUT", "POST", "PROPFIND"):
            all_headers.append(("Content-Length", str(len(body))))
        request = Request(method, target, tuple(all_headers))

        def once() -> HttpReply:
            reused = self._sock is not None
            try:
                return self._cycle(request, body, stop_after, limit)
            except _StaleConnection:
                self.close()
                if not reused or method not in _IDEMPOTENT:
                    raise OSError(
                        errno.ECONNRESET, f"{self.label}: server closed the connection"
                    ) from None
                return self._cycle(request, body, stop_after, limit)

        # Only a server that once answered is waited for: one never reached is an answer.
        if method not in _REPLAYABLE or not self._cycles_done:
            return once()
        reply = call_with_recovery(
            method, once, budget=self.recovery, reset=self.close, attempt_time=self.timeout
        )
        assert reply is not None  # replayable requests are never "applied by the first copy"
        return reply

    def _cycle(
        self, request: Request, body: bytes, stop_after: int | None, limit: int | None = None
    ) -> HttpReply:
        sock, conn = self._connection()
        deadline = time.monotonic() + self.timeout
        payload = conn.send(request) + conn.send(Data(body)) + conn.send(EndOfMessage())
        self._send_all(sock, payload)
        head: Response | None = None
        parts: list[bytes] = []
        received = 0
        got_any = False
        while True:
            try:
                event = conn.next_event()
            except ProtocolError as exc:
                self.close()
                if not got_any and self._requests_on_connection > 0:
                    raise _StaleConnection() from None
                raise OSError(exc.errno_hint, f"{self.label}: {exc}") from None
            if event is NEED_DATA:
                try:
                    data = self._recv(sock, deadline)
                except _StaleConnection:
                    if got_any:
                        raise OSError(errno.ECONNRESET, f"{self.label}: reset mid-reply") from None
                    raise
                got_any = got_any or bool(data)
                conn.receive_data(data)
                continue
            if isinstance(event, InformationalResponse):
                continue
            if isinstance(event, Response):
                head = event
            elif isinstance(event, Data):
                parts.append(event.data)
                received += len(event.data)
                if limit is not None and received > limit:
                    self.close()
                    raise OSError(
                        errno.EPROTO, f"{self.label}: {request.method} reply over {limit} bytes"
                    )
                if stop_after is not None and received > stop_after:
                    # The rest of a long body is not worth reading: drop the connection.
                    self.counters.round_trip()
                    self.close()
                    assert head is not None
                    return HttpReply(head.status, head.reason, head.headers, b"".join(parts), True)
            elif isinstance(event, EndOfMessage):
                break
            elif isinstance(event, ConnectionClosed):
                self.close()
                raise _StaleConnection()
        assert head is not None
        self.counters.round_trip()
        self._cycles_done += 1
        self._requests_on_connection += 1
        if conn.reusable:
            conn.start_next_cycle()
        else:
            self.close()
        return HttpReply(head.status, head.reason, head.headers, b"".join(parts))

    # -- the socket ----------------------------------------------------------------------

    def _connection(self) -> tuple[socket.socket, HttpConnection]:
        if self._sock is not None and self._conn is not None:
            # Between two cycles nothing may arrive; a readable socket means the
            # server closed it idle (cheroot after 10 s): start afresh rather than
            # find out by losing a request that cannot be retried (MOVE).
            readable, _, _ = select.select([self._sock], [], [], 0)
            if not readable:
                return self._sock, self._conn
            self.close()
        try:
            sock = connect_tcp(self.host, self.port, self.timeout, self.label)
        except OSError as exc:
            if exc.errno in (errno.ETIMEDOUT, errno.EHOSTUNREACH):
                raise
            raise OSError(
                exc.errno or errno.ECONNREFUSED, f"{self.label}: {exc.strerror}"
            ) from None
        self.counters.connection_opened()
        self._sock, self._conn = sock, HttpConnection()
        self._requests_on_connection = 0
        return sock, self._conn

    def _send_all(self, sock: socket.socket, payload: bytes) -> None:
        try:
            sock.sendall(payload)
        except TimeoutError:
            self.close()
            raise OSError(errno.ETIMEDOUT, f"{self.label}: send timed out") from None
        except (BrokenPipeError, ConnectionResetError):
            self.close()
            if self._requests_on_connection > 0:
                raise _StaleConnection() from None
            raise OSError(errno.ECONNRESET, f"{self.label}: connection reset") from None
        except OSError as exc:
            self.close()
            raise OSError(exc.errno or errno.ECONNRESET, f"{self.label}: {exc}") from None
        self.counters.sent(len(payload))

    def _recv(self, sock: socket.socket, deadline: float) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            self.close()
            raise OSError(
                errno.ETIMEDOUT, f"{self.label}: no whole reply within {self.timeout:g} s"
            )
        sock.settimeout(min(remaining, self.timeout))
        try:
            data = sock.recv(_RECV_CHUNK)
        except TimeoutError:
            self.close()
            raise OSError(
                errno.ETIMEDOUT, f"{self.label}: no reply within {self.timeout:g} s"
            ) from None
        except ConnectionResetError:
            # A reset before any reply on a reused connection: the server dropped it idle.
            if self._requests_on_connection > 0:
                self.close()
                raise _StaleConnection() from None
            self.close()
            raise OSError(errno.ECONNRESET, f"{self.label}: connection reset") from None
        except OSError as exc:
            self.close()
            raise OSError(exc.errno or errno.ECONNRESET, f"{self.label}: {exc}") from None
        self.counters.received(len(data))
        return data


class _StaleConnection(Exception):
    """A kept-alive connection turned out closed before any of the reply arrived."""
