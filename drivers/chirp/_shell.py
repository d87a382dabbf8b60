"""The Chirp driver's I/O shell: one TCP connection, deadlines, and recovery.

Theory of operation
-------------------
:class:`ChirpShell` owns the socket around a sans-I/O :class:`ChirpConnection`
and gives the operations in ``_driver.py`` one primitive, :meth:`ChirpShell._call`:
send a request, return its reply, raise the server's errno. Every wait on
the network has a deadline: ``timeout`` bounds each ``recv``/``send``, and
the socket's ``TCP_USER_TIMEOUT`` and keepalive (``_recovery.tune_socket``)
make the kernel give up on a blackholed connection in about the same time.

Recovery (the seeds' SP5 NAT story): when a call finds a connection that
once logged in broken (ECONNRESET, EPIPE, ETIMEDOUT), the shell
reconnects with bounded backoff for up to ``recovery`` seconds, reopens every
open file by path without O_CREAT/O_TRUNC/O_EXCL, checks that the path still
names the same inode (and size, where it cannot have changed), and sends the
call again, rebuilt so that it names the handle's descriptor on the new
connection. A handle whose file changed answers ESTALE from then on; the
others go on. The decisions (which errors, which flags, same file or not,
what a replayed error means) are the pure functions of ``_recovery.py``.

Bounds: a call ends within ``timeout`` plus ``recovery`` seconds. The budget
starts when the connection breaks and also bounds every wait of the
reconnects and of the replay (``_limit``). A server never logged in to is
not recovered (it never answered: that is the answer), and a malformed reply
is EPROTO at once: a lying server is not asked again.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress

from drivers._counters import UNATTRIBUTED
from drivers._interface import Driver, Handle, raise_errno
from drivers._network import ReplyDeadline
from drivers.chirp._connection import BROKEN, READY, ChirpConnection
from drivers.chirp._events import (
    NEED_DATA,
    AuthAgreed,
    Authenticated,
    AuthOffer,
    AuthRefused,
    ChallengeAnswer,
    Done,
    Event,
    Failure,
    ProtocolError,
    Reply,
    Request,
    StatReply,
    UnixChallenge,
)
from drivers.chirp._recovery import (
    APPLIED_IF_REPLAYED,
    BROKEN_CONNECTION,
    RECONNECTABLE,
    OpenFile,
    backoff_delays,
    recovery_budget,
    reopen_flags,
    stale_reason,
    tune_socket,
)
from drivers.chirp.codec import CHIRP_PORT, LINE_MAX, PATH_MAX, encode_path, errno_for_chirp_code

__all__ = ["DEFAULT_AUTH_METHODS", "SUPPORTED_AUTH_METHODS", "ChirpShell"]

#: cctools' client order, less the methods that need Kerberos or Globus.
DEFAULT_AUTH_METHODS: tuple[str, ...] = ("unix", "hostname", "address")
SUPPORTED_AUTH_METHODS = frozenset(DEFAULT_AUTH_METHODS)
_RECV_CHUNK = 1 << 20


def _send_parts(sock: socket.socket, parts: list[bytes | memoryview]) -> int:
    """Send every part in order, a payload without joining it to its line; the bytes sent."""
    if len(parts) == 1:
        sock.sendall(parts[0])
        return len(parts[0])
    views = [memoryview(part) for part in parts if len(part)]
    total = sum(len(view) for view in views)
    while views:
        sent = sock.sendmsg(views)
        while views and sent >= len(views[0]):
            sent -= len(views[0])
            views.pop(0)
        if sent:
            views[0] = views[0][sent:]
    return total


class _Broken(OSError):
    """The connection failed under a call; whether the server applied it is unknown."""


class ChirpShell(Driver):
    """The connection, its deadlines and its recovery; :class:`ChirpDriver` adds the calls."""

    def __init__(
        self,
        host: str,
        port: int = CHIRP_PORT,
        *,
        auth_methods: Sequence[str] = DEFAULT_AUTH_METHODS,
        timeout: float = 30.0,
        recovery: float | None = None,
    ) -> None:
        super().__init__()
        unknown = [m for m in auth_methods if m not in SUPPORTED_AUTH_METHODS]
        if unknown or not auth_methods:
            raise ValueError(
                f"unsupported chirp auth method(s) {unknown or '(none)'}; "
                f"choose from {', '.join(sorted(SUPPORTED_AUTH_METHODS))}"
            )
        self.host = host
        self.port = port
        self.auth_methods = tuple(auth_methods)
        self.timeout = timeout
        self.recovery = recovery_budget(recovery)
        self._sock: socket.socket | None = None
        self._conn: ChirpConnection | None = None
        self._generation = 0
        self._files: dict[int, OpenFile] = {}
        self._next_handle = 3  # handles are ours, not the server's fds, so they survive reopens
        #: How many times a broken connection was recovered (for tests and reports).
        self.recoveries = 0
        self._logins = 0
        # The monotonic time at which a recovery's budget ends; every wait stops there.
        self._limit: float | None = None
        # A read made on the connection by someone else (``direct_reads``) left it out of
        # step: the next call finds it broken, as if it had broken under that call.
        self._lost: _Broken | None = None

    def describe(self) -> str:
        return f"chirp://{self.host}:{self.port}"

    @property
    def subject(self) -> str | None:
        """Who the server thinks we are (``address:127.0.0.1``), once connected."""
        if self._conn is None or self._conn.subject is None:
            return None
        return f"{self._conn.method}:{self._conn.subject}"

    # -- the I/O shell -------------------------------------------------------------------

    def close_driver(self) -> None:
        self._disconnect()
        self._files.clear()

    def direct_read_broke(self, errno_value: int) -> None:
        reason = f"chirp {self.describe()}: {os.strerror(errno_value)} (a direct read)"
        self._lost = _Broken(errno_value, reason)

    def _disconnect(self) -> None:
        sock, self._sock, self._conn = self._sock, None, None
        if not self.recovery:
            self._files.clear()  # without recovery a handle dies with its connection
        if sock is not None:
            with suppress(OSError):
                sock.close()

    def _connection(
        self, connect_timeout: float | None = None
    ) -> tuple[socket.socket, ChirpConnection]:
        """The live connection; a new one (logged in, open files reopened) if there is none."""
        if self._lost is not None:
            lost, self._lost = self._lost, None
            self._disconnect()
            raise lost
        if self._sock is not None and self._conn is not None and self._conn.state is READY:
            return self._sock, self._conn
        self._disconnect()
        try:
            sock = socket.create_connection(
                (self.host, self.port), timeout=connect_timeout or self.timeout
            )
        except TimeoutError:
            raise_errno(errno.ETIMEDOUT, f"{self.host}:{self.port}")
        except (socket.gaierror, UnicodeError):
            raise OSError(
                errno.EHOSTUNREACH, f"cannot resolve chirp server {self.host!r}"
            ) from None
        sock.settimeout(self.timeout)
        tune_socket(sock, self.timeout)
        self.counters.connection_opened()
        self._generation += 1
        self._sock, self._conn = sock, ChirpConnection()
        try:
            # The login's round trips are the connection's, not the operation's that needed it.
            with self.counters.operation(UNATTRIBUTED):
                self._authenticate(sock, self._conn)
            self._logins += 1
            self._reopen_files()
        except BaseException:
            self._disconnect()
            raise
        return sock, self._conn

    def _reopen_files(self) -> None:
        """After a reconnect: reopen every open file by path and check it is the same file."""
        for entry in self._files.values():
            if entry.stale is not None or entry.generation == self._generation:
                continue
            line = f"open {self._path(entry.path)} {reopen_flags(entry.letters)} {entry.mode}"
            event = self._round_trip(Request(line, Reply.STAT))
            if isinstance(event, Failure):
                code = errno.errorcode.get(errno_for_chirp_code(event.code), "?")
                entry.stale = f"reopening {entry.path} failed with {code}"
                continue
            assert isinstance(event, StatReply), event
            entry.fd, entry.generation = event.value, self._generation
            entry.stale = stale_reason(entry, event.stat)
            if entry.stale is not None:
                with suppress(_Broken):  # not ours any more: let the server forget it
                    self._round_trip(Request(f"close {event.value}"))
            else:
                entry.observed(event.stat, time.time())

    def _recover(self, broken: _Broken) -> None:
        """Reconnect with backoff until the budget is spent; reraise ``broken`` if it is."""
        assert self._limit is not None
        deadline = self._limit
        last: OSError = broken
        for delay in backoff_delays():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                self._connection(connect_timeout=min(self.timeout, remaining))
            except OSError as exc:
                if exc.errno not in RECONNECTABLE:
                    raise
                last = exc
            else:
                self.recoveries += 1
                return
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        raise OSError(
            broken.errno,
            f"{broken.strerror}; gave up reconnecting after {self.recovery:g} s "
            f"(last: {last.strerror or last})",
        ) from None

    def _authenticate(self, sock: socket.socket, conn: ChirpConnection) -> None:
        for method in self.auth_methods:
            self._send(sock, conn, AuthOffer(method))
            event = self._receive(sock, conn)
            self.counters.round_trip()  # each offer, and each challenge answer, waits for the server
            if isinstance(event, AuthRefused):
                continue
            assert isinstance(event, AuthAgreed), event
            event = self._receive(sock, conn)
            if isinstance(event, UnixChallenge):
                event = self._answer_unix_challenge(sock, conn, event.path)
            if isinstance(event, Authenticated):
                return
            assert isinstance(event, AuthRefused), event
        raise OSError(
            errno.EACCES,
            f"chirp server {self.host}:{self.port} refused auth methods {', '.join(self.auth_methods)}",
        )

    def _answer_unix_challenge(
        self, sock: socket.socket, conn: ChirpConnection, path: str
    ) -> Event:
        try:
            fd = os.open(
                path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_SYNC | os.O_NOCTTY, 0o600
            )
        except OSError:
            # The challenge is on the server's filesystem, which we do not share.
            self._send(sock, conn, ChallengeAnswer(created=False))
            return AuthRefused("unix")
        os.close(fd)
        try:
            self._send(sock, conn, ChallengeAnswer(created=True))
            answer = self._receive(sock, conn)
            self.counters.round_trip()
            return answer
        finally:
            with suppress(OSError):
                os.unlink(path)

    def _send(self, sock: socket.socket, conn: ChirpConnection, event: Event) -> None:
        parts = conn.send_parts(event)
        if self._limit is not None:
            sock.settimeout(max(0.001, min(self.timeout, self._limit - time.monotonic())))
        try:
            sent = _send_parts(sock, parts)
        except TimeoutError:
            self._disconnect()
            raise _Broken(errno.ETIMEDOUT, f"chirp {self.describe()}: send timed out") from None
        except OSError as exc:
            self._disconnect()
            raise _Broken(
                exc.errno or errno.ECONNRESET, f"chirp {self.describe()}: {exc.strerror}"
            ) from None
        sock.settimeout(self.timeout)
        self.counters.sent(sent)

    def _receive(self, sock: socket.socket, conn: ChirpConnection) -> Event:
        deadline = ReplyDeadline(self.timeout, f"chirp {self.describe()}", self._limit)
        while True:
            try:
                event = conn.next_event()
            except ProtocolError as exc:
                self._disconnect()
                raise _Broken(exc.errno_hint, f"chirp {self.describe()}: {exc}") from None
            if event is not NEED_DATA:
                return event
            sink = conn.receive_buffer()
            try:
                if sink is not None:  # a payload with a home: straight from the socket
                    count = deadline.receive_into(sock, sink)
                else:
                    data = deadline.receive(sock, _RECV_CHUNK)
                    count = len(data)
            except OSError as exc:
                self._disconnect()
                raise _Broken(exc.errno, exc.strerror) from None
            self.counters.received(count)
            if sink is not None:
                conn.received_into(count)
            else:
                conn.receive_data(data)

    def _round_trip(self, request: Request) -> Event:
        """Send ``request`` on the live connection and return its reply (Failure included)."""
        sock, conn = self._connection()
        self._send(sock, conn, request)
        event = self._receive(sock, conn)
        self.counters.round_trip()
        return event

    def _recovering(self, attempt: Callable[[bool], Event]) -> Event:
        """Run ``attempt(replay)``; after a broken connection, recover and run it again.

        ``replay`` is True when an earlier attempt may have reached the server.
        """
        try:
            return attempt(False)
        except _Broken as broken:
            if not self.recovery or not self._logins or broken.errno not in BROKEN_CONNECTION:
                raise OSError(broken.errno, broken.strerror) from None
            failure = broken
        self._limit = time.monotonic() + self.recovery
        try:
            while True:
                self._recover(failure)
                try:
                    return attempt(True)
                except _Broken as broken:
                    if broken.errno not in BROKEN_CONNECTION or time.monotonic() >= self._limit:
                        raise OSError(broken.errno, broken.strerror) from None
                    failure = broken
        finally:
            self._limit = None

    def _call(
        self,
        build: Request | Callable[[], Request],
        path: str | None = None,
        *,
        before_replay: Callable[[], Event | None] | None = None,
    ) -> Event:
        """One round trip, with recovery: send the request, return its reply.

        ``build`` makes the request once the connection is up, so a request
        naming a handle uses the handle's descriptor on *this* connection.
        ``before_replay`` may answer for a replayed request (the append check).

        Raises:
            OSError: the server's error, ESTALE for a handle whose file changed,
                or the connection's error once recovery has given up.
        """

        def attempt(replay: bool) -> Event:
            self._connection()
            if replay and before_replay is not None:
                answer = before_replay()
                if answer is not None:
                    return answer
            request = build() if callable(build) else build
            if len(request.line) >= LINE_MAX:
                raise_errno(errno.ENAMETOOLONG, path)
            event = self._round_trip(request)
            if isinstance(event, Failure):
                code = errno_for_chirp_code(event.code)
                if replay and code in APPLIED_IF_REPLAYED.get(request.verb, ()):
                    return Done(0)  # our first copy did it (see APPLIED_IF_REPLAYED)
                raise_errno(code, path)
            return event

        return self._recovering(attempt)

    def _simple(self, line: str | Callable[[], str], path: str | None = None) -> int:
        event = self._call((lambda: Request(line())) if callable(line) else Request(line), path)
        assert isinstance(event, Done), event
        return event.value

    @contextmanager
    def _op(self, name: str) -> Iterator[None]:
        with self.counters.operation(name):
            yield

    @staticmethod
    def _path(path: str) -> str:
        encoded = encode_path(path)
        if len(encoded) >= PATH_MAX:
            raise_errno(errno.ENAMETOOLONG, path)
        return encoded

    def _entry(self, handle: Handle) -> OpenFile:
        entry = self._files.get(int(handle))
        if entry is None:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        if entry.stale is not None:
            raise OSError(errno.ESTALE, f"{os.strerror(errno.ESTALE)}: {entry.stale}", entry.path)
        return entry

    def _fd(self, handle: Handle) -> int:
        """The server's descriptor for ``handle`` on the live connection."""
        entry = self._entry(handle)
        if entry.generation != self._generation or self._conn is None:
            raise_errno(errno.EBADF)  # only reachable without recovery
        return entry.fd

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.state is not BROKEN
