"""aviary's own Chirp server, wire-compatible with cctools' ``chirp_server``.

Theory of operation
-------------------
``ChirpServer`` listens on one TCP address and serves each connection in its
own thread (cctools forks a process per connection; the observable protocol
is the same). A connection goes through two phases:

1. Authentication, the accept side of cctools' ``auth_accept``. The client
   names a method per line; the server answers ``no`` (not enabled) or
   ``yes`` and runs the method's exchange; on success it sends
   ``yes\\n<method>\\n<subject>\\n`` and the caller is ``<method>:<subject>``
   (whitespace and unprintable bytes in the subject become ``_``). Methods:

   - ``address``: ``yes``; the subject is the peer's IP address;
   - ``hostname``: ``yes`` with the peer's reverse-DNS name (numeric if it
     has none), ``no`` if the lookup fails outright;
   - ``unix``: the server sends a fresh path ``<challenge_dir>/challenge.<pid>.<n>``;
     the client creates that file and answers ``yes`` (or ``no`` to give up);
     the server waits up to ``unix_timeout`` seconds for the file to appear,
     answers ``yes`` with the name of the file owner's uid, or ``no``, and
     removes the file.

   The whole phase must finish within ``idle_timeout``.

2. Requests, until the client leaves: one LF-terminated line at a time
   (``\\r`` dropped, empty lines ignored, a line starting with byte 0x04 or
   longer than 1023 characters ends the connection, so does ``idle_timeout``
   without a request). ``_server_verbs.dispatch`` answers each line.

Files are served from ``root`` through ``ServerFS`` (confined as if chrooted)
and authorized by ``ChirpAcl`` (per-directory ``.__acl`` files). As in cctools,
a root without any ACL gets ``unix:<server user> rwlda`` at start-up and
before every connection, and the root holds a ``.__uuid`` file.

This module is the I/O shell: sockets, threads, deadlines and logging. The
protocol decisions live in ``_server_verbs``, ``_server_handlers``, ``_acl``
and ``_server_fs``.

Differences from cctools' chirp_server
--------------------------------------
Measured against Debian's build (coop-computing-tools 9.9) request by request;
everything else answers byte for byte the same.

- Not offered (answered -8 like any unknown request): tickets, jobs,
  thirdput, search, space allocations, audit, localpath, whoareyou, setrep,
  debug. Not offered at login: kerberos, globus, ticket. No superuser (-P),
  ``group:`` ACL entries never match (as cctools without -G), no quotas or
  free-space floor (-Q, -F), no client limit (-M), no catalog updates.
- "No such attribute" is -8, as cctools' source maps ENOATTR; Debian's binary
  was built without ENOATTR and answers -127, which its own client retries.
- ``rmall`` of a missing path is -3 and stops at the first failure, like the
  Debian binary (newer cctools answers 0 and keeps going).
- Metadata opens (chmod, xattrs) add O_NONBLOCK so a FIFO cannot hang a thread.
- The umask is a setting (cctools always uses 077), applied per file without
  touching the process umask; the ACL scratch file is ``.__acl.<pid>.<thread>``.
- ACL files are read through their own descriptors, not through the
  connection's table of 1024 open files; for whole-file requests (getfile,
  putfile, md5, ...) a full table (-9) is reported before path errors.
- A malformed ``%`` escape stays literal (cctools decodes garbage).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pwd
import secrets
import selectors
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from chirp_server._acl import ChirpAcl
from chirp_server._fs import ServerFS
from chirp_server._handlers import CLOSE, Session
from chirp_server._verbs import answer_code, dispatch
from drivers.chirp.codec import LINE_MAX

__all__ = ["AUTH_METHODS", "ChirpServer", "ChirpServerConfig"]

log = logging.getLogger("aviary.chirp.server")

#: The authentication methods this server can accept.
AUTH_METHODS = ("unix", "hostname", "address")
#: Longest method-name line and longest other authentication line (auth.h).
_AUTH_TYPE_MAX = 1024
_AUTH_LINE_MAX = 2048
_RECV = 65536
_EOT = 0x04


@dataclass(frozen=True, slots=True)
class ChirpServerConfig:
    """How a ``ChirpServer`` runs; the defaults are cctools' defaults.

    Attributes:
        root: the exported directory (created if missing).
        host: address to listen on.
        port: TCP port; 0 picks a free one.
        auth_methods: enabled methods, any of ``unix``, ``hostname``, ``address``.
        default_acl: host file used as the ACL of directories without ``.__acl`` (``-A``).
        inherit_default_acl: look for the nearest ancestor's ACL first.
        idle_timeout: seconds a client may stay silent (also the authentication limit).
        stall_timeout: seconds one request's data transfer may take.
        umask: applied to created files and directories (cctools always uses 077).
        challenge_dir: where ``unix`` authentication challenge files go.
        unix_timeout: seconds to wait for a ``unix`` challenge file.
        read_only: grant at most ``r`` and ``l`` whatever the ACLs say (``-R``).
    """

    root: Path
    host: str = "127.0.0.1"
    port: int = 9094
    auth_methods: tuple[str, ...] = AUTH_METHODS
    default_acl: Path | None = None
    inherit_default_acl: bool = False
    idle_timeout: float = 60.0
    stall_timeout: float = 3600.0
    umask: int = 0o077
    challenge_dir: Path = Path("/tmp")
    unix_timeout: float = 5.0
    read_only: bool = False


class _Link:
    """A client socket with a read buffer and deadline-bound reads and writes."""

    def __init__(self, sock: socket.socket, peer: str) -> None:
        self.sock = sock
        self.peer = peer
        self._buffer = bytearray()

    def _fill(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            self.sock.settimeout(remaining)
            data = self.sock.recv(_RECV)
        except OSError:
            return False
        self._buffer += data
        return bool(data)

    def readline(self, limit: int, deadline: float) -> bytes | None:
        """One line without its LF and CRs; None on EOF, timeout or ``limit`` characters."""
        while True:
            end = self._buffer.find(b"\n")
            text = self._buffer if end < 0 else self._buffer[:end]
            if len(text) - text.count(b"\r") >= limit:
                return None
            if end >= 0:
                line = bytes(text).replace(b"\r", b"")
                del self._buffer[: end + 1]
                return line
            if not self._fill(deadline):
                return None

    def read(self, size: int, deadline: float) -> bytes:
        """Up to ``size`` bytes: fewer only at EOF or the deadline."""
        while len(self._buffer) < size and self._fill(deadline):
            pass
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def soak(self, size: int, deadline: float) -> int:
        """Read and drop ``size`` bytes; returns how many arrived."""
        total = 0
        while total < size:
            chunk = self.read(min(_RECV, size - total), deadline)
            if not chunk:
                break
            total += len(chunk)
        return total

    def write(self, data: bytes, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            self.sock.settimeout(remaining)
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def write_parts(self, parts: list[bytes | memoryview], deadline: float) -> bool:
        """Send ``parts`` in order with as few system calls as the socket allows."""
        if len(parts) == 1:
            return self.write(bytes(parts[0]), deadline)
        views = [memoryview(part) for part in parts]
        while views:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                self.sock.settimeout(remaining)
                sent = self.sock.sendmsg(views)
            except OSError:
                return False
            while views and sent >= len(views[0]):
                sent -= len(views[0])
                views.pop(0)
            if sent:
                views[0] = views[0][sent:]
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def _sanitize(subject: str) -> str:
    """Subjects travel in lines and ACL files: whitespace and unprintables become ``_``."""
    raw = os.fsencode(subject)
    return os.fsdecode(bytes(b if 0x21 <= b <= 0x7E else 0x5F for b in raw))


def _server_user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


class ChirpServer:
    """A threaded Chirp file server over ``config.root``.

    Use ``start()`` to bind (it returns the port), then ``serve_forever()`` in a
    thread of your own, and ``shutdown()`` from any thread to stop everything.
    The server is also a context manager that starts it and serves in a
    background thread.

    Raises:
        ValueError: an unknown authentication method in the configuration.
    """

    def __init__(self, config: ChirpServerConfig) -> None:
        unknown = set(config.auth_methods) - set(AUTH_METHODS)
        if unknown:
            raise ValueError(f"unsupported authentication methods: {sorted(unknown)}")
        self.config = config
        self.fs: ServerFS | None = None
        self.acl: ChirpAcl | None = None
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = threading.Event()
        self._lock = threading.RLock()  # shutdown() may run in a signal handler
        self._serving: int | None = None  # thread ident inside serve_forever
        self._served = threading.Event()
        self._closed = False
        self._clients: dict[threading.Thread, socket.socket] = {}
        self._serve_thread: threading.Thread | None = None
        self._accepters: dict[str, Callable[[_Link, float], str | None]] = {
            "address": self._accept_address,
            "hostname": self._accept_hostname,
            "unix": self._accept_unix,
        }

    # -- life cycle

    @property
    def port(self) -> int:
        """The bound port (after ``start()``)."""
        if self._listener is None:
            raise RuntimeError("server not started")
        port: int = self._listener.getsockname()[1]
        return port

    def start(self) -> int:
        """Prepare the root (ACL, ``.__uuid``) and bind; returns the bound port."""
        if self._listener is not None:
            raise RuntimeError("server already started")
        cfg = self.config
        self.fs = ServerFS(cfg.root, cfg.umask)
        self.acl = ChirpAcl(self.fs, cfg.default_acl, cfg.inherit_default_acl, cfg.read_only)
        self.acl.init_root(_server_user())
        self.fs.ensure_uuid(str(uuid.uuid4()))
        self._listener = socket.create_server((cfg.host, cfg.port))
        log.info("serving %s on %s:%d", cfg.root, cfg.host, self.port)
        return self.port

    def serve_forever(self) -> None:
        """Accept clients until ``shutdown()``; each runs in its own thread."""
        if self._listener is None:
            raise RuntimeError("call start() first")
        if self._closed:
            return
        self._serving = threading.get_ident()
        self._served.clear()
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self._listener, selectors.EVENT_READ)
                selector.register(self._wake_r, selectors.EVENT_READ)
                while not self._stopping.is_set():
                    for key, _ in selector.select():
                        if key.fileobj is self._wake_r or self._stopping.is_set():
                            break
                        try:
                            sock, address = self._listener.accept()
                        except OSError:
                            continue
                        self._spawn(sock, str(address[0]))
        finally:
            self._serving = None
            self._served.set()
            if self._stopping.is_set():
                self._close()

    def shutdown(self) -> None:
        """Stop accepting, disconnect every client and wait for their threads.

        Safe from any thread, and from a signal handler interrupting ``serve_forever``
        (which then returns and releases the listening socket itself).
        """
        with self._lock:
            self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        serving = self._serving
        if serving is not None and serving != threading.get_ident():
            self._served.wait()
        with self._lock:
            clients = list(self._clients.items())
        for _, sock in clients:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread, _ in clients:
            thread.join()
        if self._serve_thread is not None and self._serve_thread is not threading.current_thread():
            self._serve_thread.join()
        if self._serving is None:
            self._close()

    def _close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._listener is not None:
            self._listener.close()
        self._wake_r.close()
        self._wake_w.close()
        if self.fs is not None:
            self.fs.close()

    def __enter__(self) -> ChirpServer:
        self.start()
        self._serve_thread = threading.Thread(
            target=self.serve_forever, name="chirp-accept", daemon=True
        )
        self._serve_thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    def _spawn(self, sock: socket.socket, peer: str) -> None:
        thread = threading.Thread(
            target=self._serve_client, args=(sock, peer), name=f"chirp-{peer}", daemon=True
        )
        with self._lock:
            if self._stopping.is_set():
                sock.close()
                return
            self._clients[thread] = sock
            thread.start()

    # -- one connection

    def _serve_client(self, sock: socket.socket, peer: str) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link = _Link(sock, peer)
        session: Session | None = None
        try:
            assert self.fs is not None and self.acl is not None
            self.acl.init_root(_server_user())
            subject = self._authenticate(link)
            if subject is None:
                log.info("%s: authentication failed", peer)
                return
            log.info("%s: login as %s", peer, subject)
            session = Session(self.fs, self.acl, link, subject)
            self._request_loop(session, link)
        except Exception:
            log.exception("%s: connection failed", peer)
        finally:
            if session is not None:
                session.files.close_all()
            link.close()
            with self._lock:
                self._clients.pop(threading.current_thread(), None)
            log.info("%s: disconnected", peer)

    def _request_loop(self, session: Session, link: _Link) -> None:
        cfg = self.config
        while not self._stopping.is_set():
            now = time.monotonic()
            session.stall_deadline = now + cfg.stall_timeout
            line = link.readline(LINE_MAX, now + cfg.idle_timeout)
            if line is None:
                return  # EOF, idle too long, or a line too long
            line = line.split(b"\0", 1)[0]
            if not line:
                continue
            if line[0] == _EOT:
                return
            verb, result = "?", 0
            payload: bytes | memoryview = b""
            try:
                verb, reply = dispatch(session, line)
            except OSError as exc:
                result = answer_code(exc)
            except (OverflowError, ValueError):
                result = answer_code(OSError(errno.EINVAL, "invalid argument"))
            else:
                if reply is CLOSE:
                    log.debug("%s: %s %r = connection consumed", link.peer, verb, line)
                    return
                if not isinstance(reply, tuple):
                    log.debug("%s: %s %r = 0", link.peer, verb, line)
                    continue
                result, payload = reply
            log.debug("%s: %s %r = %d", link.peer, verb, line, result)
            head = f"{result}\n".encode()
            # The payload goes out as it is, not copied onto its result line.
            if not link.write_parts([head, payload] if result >= 0 and payload else [head],
                                    session.stall_deadline):  # fmt: skip
                return

    # -- authentication

    def _authenticate(self, link: _Link) -> str | None:
        """The accept side of cctools' negotiation; returns ``method:subject`` or None."""
        deadline = time.monotonic() + self.config.idle_timeout
        while True:
            line = link.readline(_AUTH_TYPE_MAX, deadline)
            if line is None:
                return None
            method = os.fsdecode(line.split(b"\0", 1)[0])
            if method not in self.config.auth_methods:
                if not link.write(b"no\n", deadline):
                    return None
                continue
            if not link.write(b"yes\n", deadline):
                return None
            subject = self._accepters[method](link, deadline)
            if subject is not None:
                subject = _sanitize(subject)
                if not link.write(f"yes\n{method}\n{subject}\n".encode(), deadline):
                    return None
                return f"{method}:{subject}"

    def _accept_address(self, link: _Link, deadline: float) -> str | None:
        link.write(b"yes\n", deadline)
        return link.peer

    def _accept_hostname(self, link: _Link, deadline: float) -> str | None:
        try:
            name, _ = socket.getnameinfo((link.peer, 0), 0)
        except OSError:
            link.write(b"no\n", deadline)
            return None
        link.write(b"yes\n", deadline)
        return name

    def _accept_unix(self, link: _Link, deadline: float) -> str | None:
        path = self._challenge_path()
        link.write(os.fsencode(path) + b"\n", deadline)
        try:
            answer = link.readline(_AUTH_LINE_MAX, deadline)
            if answer != b"yes":
                return None  # the client declined (or left): nothing more is said
            give_up = time.monotonic() + self.config.unix_timeout
            while True:
                try:
                    owner = os.stat(path).st_uid
                    break
                except OSError:
                    if time.monotonic() >= give_up:
                        link.write(b"no\n", deadline)
                        return None
                    time.sleep(0.05)
            try:
                name = pwd.getpwuid(owner).pw_name
            except KeyError:
                link.write(b"no\n", deadline)
                return None
            link.write(b"yes\n", deadline)
            return name
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def _challenge_path(self) -> str:
        # A name of our own: a stale file of that name is removed, any other problem
        # (say, a directory there) means "pick another name".
        while True:
            path = f"{self.config.challenge_dir}/challenge.{os.getpid()}.{secrets.randbelow(2**31)}"
            try:
                os.unlink(path)
            except FileNotFoundError:
                return path
            except OSError:
                continue
            return path
