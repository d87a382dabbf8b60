"""Deadlines and recovery decisions shared by every network driver: no I/O but the connect.

Theory of operation
-------------------
A silent NAT drop leaves a TCP connection that neither end knows is gone: a
client that sends waits for the kernel's retransmissions (~15 minutes), one
that only waits in ``recv`` waits forever. Every driver therefore connects
through :func:`connect_tcp`, which gives the socket a deadline for every wait
the kernel makes on our behalf (:func:`tune_socket`) as well as the driver's
own timeout on each call, and decides with :data:`BROKEN_CONNECTION` which
errors mean "the connection broke" (recovery may begin) and with
:data:`RECONNECTABLE` which failures to reconnect are worth another try.
:func:`recovery_budget` reads how long a driver may keep trying, and
:func:`backoff_delays` is the schedule of those tries.

A malformed reply (EPROTO) is not a broken connection: a server that lies
once lies again, so reconnecting would only repeat the lie (or loop for
ever); the call fails at once. A reply that trickles in, a byte now and
then, is held to :class:`ReplyDeadline`: ``timeout`` seconds, renewed only
by :data:`PROGRESS_BYTES` of progress, so every wait ends.
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import struct
import time
from collections.abc import Callable, Iterator
from typing import Concatenate, ParamSpec, Protocol, TypeVar

__all__ = [
    "APPLIED_IF_REPLAYED",
    "BROKEN_CONNECTION",
    "COMMON_RECOVERY_ENV",
    "PROGRESS_BYTES",
    "RECONNECTABLE",
    "ReplyDeadline",
    "backoff_delays",
    "call_with_recovery",
    "connect_tcp",
    "receive_some",
    "recoverable",
    "recovery_budget",
    "tune_socket",
]

T = TypeVar("T")
P = ParamSpec("P")

#: Errors on an established connection that mean it is gone; the request in
#: flight may or may not have reached the server. EPROTO is absent on purpose:
#: a server that broke the protocol is answered with the error, not a reconnect.
BROKEN_CONNECTION = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ETIMEDOUT, errno.ECONNABORTED})
#: The recovery budget for every driver at once (``aviary --recovery-budget``
#: sets it); a driver's own variable (``AVIARY_CHIRP_RECOVERY``...) wins.
COMMON_RECOVERY_ENV = "AVIARY_RECOVERY"
#: Bytes a reply must deliver within each ``timeout`` seconds to keep its
#: deadline: a trickle slower than this (PROGRESS_BYTES / timeout) is ETIMEDOUT.
PROGRESS_BYTES = 64 * 1024
#: Errors while reconnecting that are worth another attempt (the server is
#: restarting, the path is healing); anything else (EACCES at login) is final.
RECONNECTABLE = BROKEN_CONNECTION | {
    errno.ECONNREFUSED,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.EHOSTDOWN,
}

# Strategy: a replayed request whose first copy may have been applied. Each
# entry names the errors that the *replay* gets exactly when the first copy
# did its job, so the caller sees the success it would have seen without the
# fault. The price is that a concurrent client doing the same thing in the
# outage window is indistinguishable from our own first attempt; NFSv2 over
# UDP made the same trade (its "duplicate request cache" only narrows it).
# Operations not listed are idempotent (stat, pread, pwrite at an offset, a
# whole-file put, truncate, chmod, utime, fsync...) and are simply sent again.
# ``open`` with O_EXCL is deliberately absent: an EEXIST there may be our own
# creation or someone else's file, and pretending to own someone else's file
# is worse than an honest EEXIST.
APPLIED_IF_REPLAYED: dict[str, frozenset[int]] = {
    "mkdir": frozenset({errno.EEXIST}),  # the directory we asked for exists
    "rmdir": frozenset({errno.ENOENT}),  # the directory we removed is gone
    "unlink": frozenset({errno.ENOENT}),
    "rmall": frozenset({errno.ENOENT}),
    "rename": frozenset({errno.ENOENT}),  # the source already moved
    "link": frozenset({errno.EEXIST}),
    "symlink": frozenset({errno.EEXIST}),
}


def tune_socket(sock: socket.socket, timeout: float) -> None:
    """Bound every wait the kernel makes for this connection by about ``timeout``.

    ``TCP_USER_TIMEOUT`` ends a connection whose sent data stays unacknowledged
    that long (a silent NAT drop: ~timeout instead of ~15 minutes), and
    keepalive probes an idle connection after ``timeout`` seconds so a
    blackhole is found even when we only wait in ``recv``. The probes also
    refresh a NAT's idle timer when the NAT is slower to forget than we are
    to probe, the seeds' other remedy.
    """
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    idle = max(1, int(timeout))
    interval = max(1, int(timeout / 3))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, max(1, int(timeout * 1000)))


def connect_tcp(host: str, port: int, timeout: float, what: str) -> socket.socket:
    """A connected, tuned TCP socket whose every call times out after ``timeout`` seconds.

    Args:
        host, port: where to connect.
        timeout: seconds for the connect and for each later wait.
        what: names the server in error messages ("FTP server").

    Raises:
        OSError: ETIMEDOUT when no connection came within ``timeout``,
            EHOSTUNREACH when ``host`` does not resolve, or the connect's own
            error (ECONNREFUSED, ENETUNREACH...).
    """
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError:
        raise OSError(
            errno.ETIMEDOUT, f"{what} {host}:{port}: no connection within {timeout:g} s"
        ) from None
    except (socket.gaierror, UnicodeError):
        raise OSError(errno.EHOSTUNREACH, f"cannot resolve {what} {host!r}") from None
    try:
        tune_socket(sock, timeout)
    except OSError:
        sock.close()
        raise
    return sock


def receive_some(sock: socket.socket, size: int, timeout: float, what: str) -> bytes:
    """One ``recv`` within the socket's timeout (b"" when the peer closed).

    Raises:
        OSError: ETIMEDOUT when nothing came within ``timeout`` seconds, or the
            connection's own error (ECONNRESET by default), each naming ``what``.
    """
    try:
        return sock.recv(size)
    except TimeoutError:
        raise OSError(errno.ETIMEDOUT, f"{what}: no reply within {timeout:g} s") from None
    except OSError as exc:
        raise OSError(exc.errno or errno.ECONNRESET, f"{what}: {exc.strerror}") from None


#: A receive into a buffer this large waits in the kernel until the buffer is full
#: (MSG_WAITALL): a reply arriving in many segments then costs one call, not one per
#: segment (in paired runs of a 1 MiB read loop under the agent on one CPU, about a
#: sixth less time per block).
WHOLE_RECEIVE = 64 * 1024
_TIMEVAL = struct.Struct("@ll")  # struct timeval, for SO_RCVTIMEO


class ReplyDeadline:
    """The deadline of one reply: ``timeout`` seconds, renewed by each :data:`PROGRESS_BYTES`.

    A server that sends a byte every few seconds satisfies every single
    ``recv`` timeout and would hold the caller for ever; this bounds the
    whole reply instead, while a large transfer that keeps moving goes on.
    ``limit`` (a ``time.monotonic()`` value) is a hard end no progress renews:
    the end of a recovery budget.
    """

    def __init__(self, timeout: float, what: str, limit: float | None = None) -> None:
        self.timeout = timeout
        self.what = what
        self.limit = limit
        self._progress = 0
        self._ends = time.monotonic() + timeout

    def receive(self, sock: socket.socket, size: int) -> bytes:
        """One ``recv`` within what is left of the deadline (b"" when the peer closed).

        Raises:
            OSError: ETIMEDOUT when the deadline passed, or the connection's own error.
        """
        remaining = self._remaining()
        sock.settimeout(min(self.timeout, remaining))
        data = receive_some(sock, size, self.timeout, self.what)
        sock.settimeout(self.timeout)
        self._progressed(len(data))
        return data

    def receive_into(self, sock: socket.socket, buffer: memoryview) -> int:
        """Like :meth:`receive`, into ``buffer``: how many bytes came (0 when the peer closed).

        Raises:
            OSError: ETIMEDOUT when the deadline passed, or the connection's own error.
        """
        seconds = min(self.timeout, self._remaining())
        whole = len(buffer) >= WHOLE_RECEIVE
        if whole:
            # MSG_WAITALL needs a blocking socket: the wait is bounded by SO_RCVTIMEO
            # instead, and a timeout ends the call with what came (or EAGAIN if nothing).
            sock.settimeout(None)
            micros = max(1000, int(seconds * 1_000_000))  # a zero timeval would wait for ever
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_RCVTIMEO, _TIMEVAL.pack(*divmod(micros, 1_000_000))
            )
        else:
            sock.settimeout(seconds)
        try:
            count = sock.recv_into(buffer, 0, socket.MSG_WAITALL if whole else 0)
        except (TimeoutError, BlockingIOError):
            raise OSError(
                errno.ETIMEDOUT, f"{self.what}: no reply within {self.timeout:g} s"
            ) from None
        except OSError as exc:
            raise OSError(exc.errno or errno.ECONNRESET, f"{self.what}: {exc.strerror}") from None
        finally:
            sock.settimeout(self.timeout)
        self._progressed(count)
        return count

    def _remaining(self) -> float:
        """Seconds left; ETIMEDOUT (naming why) when none are."""
        ends = self._ends if self.limit is None else min(self._ends, self.limit)
        remaining = ends - time.monotonic()
        if remaining <= 0:
            why = (
                "recovery budget spent"
                if ends != self._ends
                else f"reply too slow (under {PROGRESS_BYTES} bytes in {self.timeout:g} s)"
            )
            raise OSError(errno.ETIMEDOUT, f"{self.what}: {why}")
        return remaining

    def _progressed(self, count: int) -> None:
        self._progress += count
        if self._progress >= PROGRESS_BYTES:
            self._progress = 0
            self._ends = time.monotonic() + self.timeout


def recovery_budget(explicit: float | None, env: str, default: float) -> float:
    """Seconds a driver may spend reconnecting.

    The argument, else ``$env``, else ``$AVIARY_RECOVERY``, else ``default``.

    Raises:
        ValueError: the environment holds something that is not a number >= 0.
    """
    if explicit is not None:
        budget = float(explicit)
    else:
        budget = default
        for name in (env, COMMON_RECOVERY_ENV):
            text = os.environ.get(name, "").strip()
            if not text:
                continue
            try:
                budget = float(text)
            except ValueError:
                raise ValueError(f"{name} must be a number of seconds, not {text!r}") from None
            break
    if not 0 <= budget < float("inf"):
        raise ValueError(f"recovery budget must be a finite number >= 0 seconds, not {budget}")
    return budget


def backoff_delays(first: float = 0.05, ceiling: float = 1.0) -> Iterator[float]:
    """Seconds to sleep between reconnect attempts: doubling, bounded by ``ceiling``."""
    delay = first
    while True:
        yield delay
        delay = min(delay * 2, ceiling)


def call_with_recovery(
    operation: str,
    attempt: Callable[[], T],
    *,
    budget: float,
    reset: Callable[[], None],
    sleep: Callable[[float], None] = time.sleep,
    attempt_time: float = 0.0,
) -> T | None:
    """Run ``attempt``; after a broken connection, ``reset`` and run it again within ``budget``.

    For the operations of :data:`APPLIED_IF_REPLAYED`, a replay that fails with
    the listed error returns None: the first attempt did the work.

    Args:
        operation: the operation's name ("stat", "mkdir"...).
        attempt: one try, raising OSError on failure.
        budget: seconds allowed for retries after the first failure (0: none).
        reset: drops the broken connection, so that the next try makes a new one.
        sleep: how to wait between tries (tests pass a fake clock's).
        attempt_time: the longest one try can take (the driver's timeout): a
            retry starts only if it can end within the budget, so the whole
            call ends within the first try's time plus ``budget``.

    Raises:
        OSError: the first error that is not a broken connection, or the last
            one when the budget is spent.
    """
    delays = backoff_delays()
    deadline: float | None = None
    replayed = False
    while True:
        try:
            return attempt()
        except OSError as exc:
            if replayed and exc.errno in APPLIED_IF_REPLAYED.get(operation, ()):
                return None
            if budget <= 0 or exc.errno not in RECONNECTABLE:
                raise
            now = time.monotonic()
            deadline = deadline if deadline is not None else now + budget
            delay = next(delays)
            if now + delay + attempt_time > deadline:
                raise
        reset()
        sleep(delay)
        replayed = True


class Recovering(Protocol):
    """A driver that runs an operation through its own recovery (see :func:`recoverable`)."""

    def _recovering(self, operation: str, attempt: Callable[[], T]) -> T: ...


D = TypeVar("D", bound=Recovering)


def recoverable(method: Callable[Concatenate[D, P], T]) -> Callable[Concatenate[D, P], T]:
    """Decorate a driver operation: run it through ``self._recovering(name, attempt)``, which
    sends it again on a new connection when the old one broke under it."""

    def recovering(self: D, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._recovering(method.__name__, lambda: method(self, *args, **kwargs))

    functools.update_wrapper(recovering, method)
    return recovering
