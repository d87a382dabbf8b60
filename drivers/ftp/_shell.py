"""The blocking I/O shell of one FTP login: a control connection and its data connections.

Strategy: one control connection is opened lazily, logged in (USER, PASS),
asked for its features (FEAT) and set to binary (TYPE I), then reused for
every operation; it is the one place where bytes cross the control socket,
so it counts round trips and bytes for :class:`DriverCounters`. Each transfer
opens a passive data connection (EPSV, or PASV if EPSV is refused) to the
control connection's own peer, never to the address a PASV reply names, and
counts it as a connection opened.

A download may be left *streaming* between two calls: a sequential reader
(``cat``) then costs one RETR for the whole file instead of one per read.
Before any other command the stream is settled: the data connection is
closed early and the final reply (226 if the server had finished, 426 or 451
if it noticed the close) is read and accepted.

Every wait has the session's deadline: a silent server surfaces as ETIMEDOUT,
a closed one as ECONNRESET, and the next command opens a fresh login.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from typing import BinaryIO

from drivers._counters import DriverCounters
from drivers._interface import raise_errno
from drivers._network import ReplyDeadline, connect_tcp
from drivers.ftp._connection import BROKEN, CLOSED, READY, TRANSFER, FtpConnection
from drivers.ftp._events import NEED_DATA, ProtocolError, Reply
from drivers.ftp._verbs import (
    VERBS,
    Direction,
    Features,
    command,
    parse_epsv,
    parse_features,
    parse_pasv,
)

__all__ = ["DataStream", "FtpSession"]

_RECV_CHUNK = 1 << 16
_QUIT_WAIT = 1.0  # seconds to wait for QUIT's answer before just closing


@dataclass(slots=True)
class DataStream:
    """A download in progress: its data socket and where the next byte sits in the file."""

    key: object  # who owns the stream (an open handle), to continue only its own reads
    sock: socket.socket
    position: int


class FtpSession:
    """One logged-in control connection, opened on demand.

    Args:
        host, port: the server.
        user, password: the login (``anonymous`` when user is None).
        timeout: seconds allowed for any one network wait.
        counters: where round trips, connections and bytes are counted.
    """

    def __init__(
        self,
        host: str,
        port: int,
        user: str | None,
        password: str | None,
        timeout: float,
        counters: DriverCounters,
    ) -> None:
        self.host, self.port = host, port
        self.user = user or "anonymous"
        self.password = password if password is not None else ("aviary@" if user is None else "")
        self.timeout = timeout
        self.counters = counters
        self.features = Features(frozenset())
        self.greeting = ""
        self._sock: socket.socket | None = None
        self._conn: FtpConnection | None = None
        self._epsv_refused = False
        self.stream: DataStream | None = None
        #: Successful logins so far: after the first, a broken connection is recovered.
        self.logins = 0

    def describe(self) -> str:
        return f"ftp://{self.user}@{self.host}:{self.port}"

    # -- the control connection ----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.state not in (BROKEN, CLOSED)

    def ensure(self) -> None:
        """Open and log in the control connection unless it is already up."""
        if self.connected:
            return
        self.disconnect()
        sock = connect_tcp(self.host, self.port, self.timeout, "FTP server")
        self.counters.connection_opened()
        self._sock, self._conn = sock, FtpConnection()
        try:
            self._login()
        except BaseException:
            self.disconnect()
            raise
        self.logins += 1

    def _login(self) -> None:
        greeting = self._receive()
        while greeting.code < 200:  # 120: "ready in N minutes"
            greeting = self._receive()
        self.counters.round_trip()
        if greeting.code != 220:
            raise OSError(errno.ECONNREFUSED, f"{self.describe()} refused us: {greeting}")
        self.greeting = greeting.text
        reply = self._exchange("USER", self.user)
        if reply.code == 331:
            reply = self._exchange("PASS", self.password)
        if reply.code not in (230, 202):
            raise OSError(errno.EACCES, f"{self.describe()}: login refused: {reply}")
        self.features = parse_features(self._exchange("FEAT"))
        reply = self._exchange("TYPE", "I")
        if reply.code != 200:
            raise OSError(errno.EPROTO, f"{self.describe()}: TYPE I refused: {reply}")
        if self.features.has("UTF8"):
            self._exchange("OPTS", "UTF8 ON")
        wanted = [f for f in self.features.mlst_facts if f not in self.features.mlst_enabled]
        if wanted:
            # pyftpdlib leaves unix.mode/uid/gid off until asked: ask for every fact there is.
            self._exchange("OPTS", "MLST " + "".join(f"{f};" for f in self.features.mlst_facts))

    def disconnect(self) -> None:
        """Close everything now; nothing is waited for."""
        self._drop_stream()
        sock, self._sock, self._conn = self._sock, None, None
        if sock is not None:
            with suppress(OSError):
                sock.close()

    def quit(self) -> None:
        """Say QUIT (briefly) and close."""
        if self.connected and self._sock is not None:
            with suppress(OSError):
                self.settle()
                self._sock.settimeout(min(self.timeout, _QUIT_WAIT))
                self._exchange("QUIT")
        self.disconnect()

    def _send(self, verb: str, argument: str | None) -> None:
        assert self._sock is not None and self._conn is not None
        try:
            data = self._conn.send(command(verb, argument))
        except ProtocolError as exc:
            raise OSError(exc.errno_hint, f"{self.describe()}: {exc}") from None
        try:
            self._sock.sendall(data)
        except TimeoutError:
            self.disconnect()
            raise_errno(errno.ETIMEDOUT, self.describe())
        except OSError as exc:
            self.disconnect()
            raise OSError(
                exc.errno or errno.ECONNRESET, f"{self.describe()}: {exc.strerror}"
            ) from None
        self.counters.sent(len(data))

    def _receive(self) -> Reply:
        assert self._sock is not None and self._conn is not None
        conn, sock = self._conn, self._sock
        deadline = ReplyDeadline(self.timeout, self.describe())
        while True:
            try:
                event = conn.next_event()
            except ProtocolError as exc:
                self.disconnect()
                raise OSError(exc.errno_hint, f"{self.describe()}: {exc}") from None
            if event is not NEED_DATA:
                if conn.state is CLOSED and event.code == 421:
                    self.disconnect()
                    raise OSError(errno.ECONNRESET, f"{self.describe()}: {event}")
                return event
            try:
                data = deadline.receive(sock, _RECV_CHUNK)
            except OSError:
                self.disconnect()
                raise
            self.counters.received(len(data))
            conn.receive_data(data)

    def _exchange(self, verb: str, argument: str | None = None) -> Reply:
        """Send one command and return its reply (a 1yz preliminary one for transfers)."""
        self._send(verb, argument)
        reply = self._receive()
        self.counters.round_trip()
        return reply

    def ask(self, verb: str, argument: str | None = None) -> Reply:
        """One command, one reply, on a logged-in connection (settling any stream first)."""
        if VERBS[verb].data is not None:
            raise ValueError(f"{verb} opens a data connection: use download/upload")
        self.ensure()
        self.settle()
        return self._exchange(verb, argument)

    # -- data connections ----------------------------------------------------------------------

    def _open_data(self) -> socket.socket:
        """A passive data connection to the server (EPSV, else PASV)."""
        port = None
        if not self._epsv_refused:
            reply = self._exchange("EPSV")
            if reply.code == 229:
                port = parse_epsv(reply)
            else:
                self._epsv_refused = True
        if port is None:
            reply = self._exchange("PASV")
            if reply.code != 227:
                raise OSError(errno.EPROTO, f"{self.describe()}: passive mode refused: {reply}")
            port = parse_pasv(reply)
        sock = connect_tcp(self.host, port, self.timeout, "FTP data port of")
        self.counters.connection_opened()
        return sock

    def start(
        self, verb: str, argument: str | None, rest: int | None = None
    ) -> tuple[socket.socket | None, Reply]:
        """Begin a transfer: (data socket, 1yz reply), or (None, the failure reply).

        A failed REST is returned as the failure (554: the offset is past the end).
        """
        spec = VERBS[verb]
        assert spec.data is not None
        self.ensure()
        self.settle()
        if rest is not None:
            reply = self._exchange("REST", str(rest))
            if reply.code != 350:
                return None, reply
        sock = self._open_data()
        try:
            reply = self._exchange(verb, argument)
        except BaseException:
            sock.close()
            raise
        if reply.code >= 200:
            sock.close()
            return None, reply
        return sock, reply

    def finish(self, sock: socket.socket | None = None) -> Reply:
        """Close the data socket (if still open) and read the transfer's final reply."""
        if sock is not None:
            with suppress(OSError):
                sock.close()
        assert self._conn is not None
        if self._conn.state is not TRANSFER:
            raise OSError(errno.EPROTO, f"{self.describe()}: no transfer to finish")
        return self._receive()

    def read_all(self, sock: socket.socket) -> Iterator[bytes]:
        """The bytes of a download until the server closes the data connection.

        The download is held to a :class:`ReplyDeadline`: a trickle ends in ETIMEDOUT.
        """
        deadline = ReplyDeadline(self.timeout, f"{self.describe()}: data")
        while True:
            chunk = self._recv_data(sock, _RECV_CHUNK, deadline)
            if not chunk:
                return
            yield chunk

    def _recv_data(
        self, sock: socket.socket, size: int, deadline: ReplyDeadline | None = None
    ) -> bytes:
        try:
            chunk = deadline.receive(sock, size) if deadline is not None else sock.recv(size)
        except TimeoutError:
            sock.close()
            self.disconnect()
            raise OSError(
                errno.ETIMEDOUT, f"{self.describe()}: data stalled for {self.timeout:g} s"
            ) from None
        except OSError as exc:
            sock.close()
            self.disconnect()
            raise OSError(
                exc.errno or errno.ECONNRESET, f"{self.describe()}: data: {exc.strerror}"
            ) from None
        self.counters.received(len(chunk))
        return chunk

    def read_some(self, stream: DataStream, size: int) -> tuple[bytes, bool]:
        """Up to ``size`` bytes from a stream; (data, True) once the server has sent it all."""
        parts: list[bytes] = []
        wanted = size
        while wanted > 0:
            chunk = self._recv_data(stream.sock, min(wanted, 1 << 20))
            if not chunk:
                data = b"".join(parts)
                stream.position += len(data)
                return data, True
            parts.append(chunk)
            wanted -= len(chunk)
        data = b"".join(parts)
        stream.position += len(data)
        return data, False

    def upload(self, verb: str, argument: str, source: BinaryIO | None) -> Reply:
        """STOR or APPE the rest of ``source`` (nothing: an empty file); returns the final reply."""
        assert VERBS[verb].data is Direction.UPLOAD
        sock, reply = self.start(verb, argument)
        if sock is None:
            return reply
        try:
            while source is not None:
                chunk = source.read(1 << 20)
                if not chunk:
                    break
                sock.sendall(chunk)
                self.counters.sent(len(chunk))
            sock.shutdown(socket.SHUT_WR)
        except TimeoutError:
            sock.close()
            self.disconnect()
            raise OSError(errno.ETIMEDOUT, f"{self.describe()}: upload stalled") from None
        except OSError as exc:
            sock.close()
            # The server may have refused mid-way (quota, permission): its reply says why.
            if self.connected:
                return self.finish()
            raise OSError(
                exc.errno or errno.EIO, f"{self.describe()}: upload: {exc.strerror}"
            ) from None
        return self.finish(sock)

    def download(
        self, verb: str, argument: str | None, limit: int | None = None
    ) -> tuple[bytes | None, Reply]:
        """A whole download: (bytes, final reply), or (None, the failure reply).

        Raises:
            OSError: EPROTO when more than ``limit`` bytes arrive (a listing without end).
        """
        sock, reply = self.start(verb, argument)
        if sock is None:
            return None, reply
        parts: list[bytes] = []
        size = 0
        for chunk in self.read_all(sock):
            size += len(chunk)
            if limit is not None and size > limit:
                sock.close()
                self.disconnect()
                raise OSError(
                    errno.EPROTO, f"{self.describe()}: {verb} sent more than {limit} bytes"
                )
            parts.append(chunk)
        return b"".join(parts), self.finish(sock)

    # -- streams -------------------------------------------------------------------------------

    def settle(self) -> None:
        """End a download left streaming, so that the control connection is free."""
        stream, self.stream = self.stream, None
        if stream is None:
            return
        if not self.connected:
            with suppress(OSError):
                stream.sock.close()
            return
        # 226 (all sent before we closed), 426 or 451 (the server saw the close), or
        # pure-ftpd's 150 statistics line: all fine.
        self.finish(stream.sock)

    def _drop_stream(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            with suppress(OSError):
                stream.sock.close()

    @property
    def ready(self) -> bool:
        return self._conn is not None and self._conn.state is READY
