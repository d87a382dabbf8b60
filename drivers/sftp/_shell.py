"""One SSH connection carrying one SFTP session, with deadlines and wire counters.

Theory of operation
-------------------
paramiko does the SSH transport (key exchange, encryption, channels) in a
thread of its own; this module wraps the pieces the driver needs and nothing
more:

- :class:`CountingSocket` sits between paramiko and the TCP socket, so the
  bytes that really crossed the wire (SSH framing, MACs, padding included) are
  counted. paramiko's thread updates the totals; the driver drains them after
  each request on its own thread (:meth:`SftpSession.drain_bytes`).
- :class:`StatusClient` is paramiko's ``SFTPClient`` with two changes: it keeps
  the extension names the server announces in its VERSION packet (paramiko
  throws them away), and a STATUS reply raises :class:`SftpStatus` with the
  raw SFTP code, because paramiko turns every code but two into a bare
  ``IOError`` and the driver must tell FAILURE from NO_SUCH_FILE to interview.
  A reply to a request that was not asked, or a packet paramiko calls garbage,
  is :class:`SftpProtocolError` (EPROTO): paramiko would skip the first and keep
  waiting, and raise the second as a bare exception.
- :func:`open_session` connects, checks the server's host key against a
  known-hosts file (never accepting an unknown key silently), authenticates
  with a private key, and starts the ``sftp`` subsystem, with a deadline on
  every wait (TCP connect, banner, key exchange, auth, channel open, every
  SFTP reply).
"""

from __future__ import annotations

import errno
import os
import re
import socket
import struct
import threading
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko
from paramiko.sftp import CMD_STATUS, CMD_VERSION, SFTPError
from paramiko.sftp_client import SFTPClient

from drivers._network import connect_tcp
from drivers.sftp._replies import SftpProtocolError

__all__ = [
    "IDENTITY_ENV",
    "KNOWN_HOSTS_ENV",
    "CountingSocket",
    "SftpSession",
    "SftpStatus",
    "open_session",
]

#: Path of the private key to log in with (else ~/.ssh/id_* and the ssh agent).
IDENTITY_ENV = "AVIARY_SFTP_IDENTITY"
#: Path of the known-hosts file the server's key must be in (else ~/.ssh/known_hosts).
KNOWN_HOSTS_ENV = "AVIARY_SFTP_KNOWN_HOSTS"
_DEFAULT_IDENTITIES = ("id_ed25519", "id_ecdsa", "id_rsa")
_DEFAULT_KNOWN_HOSTS = ("~/.ssh/known_hosts", "/etc/ssh/ssh_known_hosts")

# SFTP v3 status codes (draft-ietf-secsh-filexfer-02, section 7).
SFTP_OK = 0
SFTP_EOF = 1
SFTP_NO_SUCH_FILE = 2
SFTP_PERMISSION_DENIED = 3
SFTP_FAILURE = 4
SFTP_BAD_MESSAGE = 5
SFTP_NO_CONNECTION = 6
SFTP_CONNECTION_LOST = 7
SFTP_OP_UNSUPPORTED = 8

#: The errno a status code means when it is not ambiguous; FAILURE (4) and
#: NO_SUCH_FILE (2) need an interview, because OpenSSH's errno_to_portable()
#: folds ENOTDIR and ELOOP into NO_SUCH_FILE and everything unlisted into FAILURE.
ERRNO_BY_STATUS: dict[int, int] = {
    SFTP_EOF: errno.EIO,
    SFTP_NO_SUCH_FILE: errno.ENOENT,
    SFTP_PERMISSION_DENIED: errno.EACCES,
    SFTP_FAILURE: errno.EIO,
    SFTP_BAD_MESSAGE: errno.EINVAL,  # OpenSSH: EINVAL and ENAMETOOLONG
    SFTP_NO_CONNECTION: errno.ENOTCONN,
    SFTP_CONNECTION_LOST: errno.ECONNRESET,
    SFTP_OP_UNSUPPORTED: errno.ENOTSUP,
}


class SftpStatus(OSError):
    """A STATUS reply other than OK: ``code`` is the SFTP status code."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(ERRNO_BY_STATUS.get(code, errno.EIO), text or f"SFTP status {code}")
        self.code = code


class CountingSocket:
    """A TCP socket that counts what passes through it, for paramiko's transport.

    paramiko calls ``send``/``recv``/``settimeout``/``close`` from its own
    thread; the totals are plain ints (one writer each) read by the driver.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.bytes_sent = 0
        self.bytes_received = 0

    def send(self, data: bytes) -> int:
        sent = self._sock.send(data)
        self.bytes_sent += sent
        return sent

    def sendall(self, data: bytes) -> None:
        self._sock.sendall(data)
        self.bytes_sent += len(data)

    def recv(self, size: int) -> bytes:
        data = self._sock.recv(size)
        self.bytes_received += len(data)
        return data

    def __getattr__(self, name: str) -> Any:
        # settimeout, close, fileno, getpeername, _closed...: the real socket's.
        return getattr(self._sock, name)


class StatusClient(SFTPClient):  # type: ignore[misc]  # paramiko is untyped
    """paramiko's SFTP client, keeping server extensions and raw status codes."""

    extensions: dict[str, bytes]

    def _send_version(self) -> int:
        m = paramiko.Message()
        m.add_int(3)
        self._send_packet(1, m)  # SSH_FXP_INIT
        packet_type, data = self._read_packet()
        if packet_type != CMD_VERSION:
            raise paramiko.SFTPError("incompatible sftp protocol")
        version: int = struct.unpack(">I", data[:4])[0]
        self.extensions = {}
        reply = paramiko.Message(data[4:])
        # The rest of VERSION is (name, data) string pairs, one per extension.
        while reply.get_remainder():
            name = reply.get_string().decode("ascii", "replace")
            self.extensions[name] = reply.get_string()
        return version

    def _read_packet(self) -> tuple[int, bytes]:
        try:
            packet: tuple[int, bytes] = super()._read_packet()
        except SFTPError as exc:  # "Garbage packet received": a length of 16 MiB or more
            raise SftpProtocolError(str(exc)) from None
        return packet

    def _read_response(self, waitfor: int | None = None) -> tuple[int | None, Any]:
        if waitfor is None:
            return super()._read_response(waitfor)  # type: ignore[no-any-return]
        # One request at a time: the next reply must be this request's, or the server lies.
        try:
            kind, data = self._read_packet()
        except EOFError as exc:
            raise paramiko.SSHException(f"Server connection dropped: {exc}") from None
        if len(data) < 4:
            raise SftpProtocolError(f"a reply of {len(data)} bytes has no request id")
        message = paramiko.Message(data)
        number = message.get_int()
        with self._lock:
            self._expecting.pop(waitfor, None)
        if number != waitfor:
            raise SftpProtocolError(f"a reply to request {number} came for request {waitfor}")
        if kind == CMD_STATUS:
            self._convert_status(message)
        return kind, message

    def _convert_status(self, msg: paramiko.Message) -> None:
        code = msg.get_int()
        text = msg.get_text()
        if code != SFTP_OK:
            raise SftpStatus(code, text)


@dataclass
class SftpSession:
    """A live SSH transport, its SFTP client, and the counting socket under it."""

    sock: CountingSocket
    transport: paramiko.Transport
    client: StatusClient
    _drained: tuple[int, int] = field(default=(0, 0))

    def drain_bytes(self) -> tuple[int, int]:
        """Bytes (sent, received) since the last drain."""
        sent, received = self.sock.bytes_sent, self.sock.bytes_received
        delta = (sent - self._drained[0], received - self._drained[1])
        self._drained = (sent, received)
        return delta

    def has_extension(self, name: str) -> bool:
        return name in self.client.extensions

    def close(self) -> None:
        with suppress(Exception):
            self.client.close()
        with suppress(Exception):
            self.transport.close()
        with suppress(OSError):
            self.sock.close()


def _load_key(path: Path) -> paramiko.PKey:
    try:
        return paramiko.PKey.from_path(str(path))
    except (OSError, paramiko.SSHException) as exc:
        raise OSError(errno.EACCES, f"cannot load SSH key {path}: {exc}") from None


def _identities() -> list[paramiko.PKey]:
    """The key in $AVIARY_SFTP_IDENTITY, or the user's default keys."""
    configured = os.environ.get(IDENTITY_ENV)
    if configured:
        return [_load_key(Path(configured))]
    keys = []
    for name in _DEFAULT_IDENTITIES:
        path = Path("~/.ssh").expanduser() / name
        if path.exists():
            with suppress(OSError):
                keys.append(_load_key(path))
    return keys


def _check_host_key(transport: paramiko.Transport, host: str, port: int) -> None:
    """The server's key must be in the known-hosts file: nothing is added silently."""
    configured = os.environ.get(KNOWN_HOSTS_ENV)
    files = (
        [configured] if configured else [str(Path(p).expanduser()) for p in _DEFAULT_KNOWN_HOSTS]
    )
    known = paramiko.HostKeys()
    for name in files:
        with suppress(FileNotFoundError):
            known.load(name)
    key = transport.get_remote_server_key()
    lookup = host if port == 22 else f"[{host}]:{port}"
    if known.check(lookup, key):
        return
    verdict = "a different key" if known.lookup(lookup) else "no key"
    raise OSError(
        errno.EACCES,
        f"sftp {host}:{port}: host key {key.get_name()} not trusted: "
        f"{' or '.join(files)} has {verdict} for {lookup} (set {KNOWN_HOSTS_ENV})",
    )


def _authenticate(transport: paramiko.Transport, user: str, host: str, port: int) -> None:
    keys = _identities()
    agent: paramiko.Agent | None = None
    if not os.environ.get(IDENTITY_ENV) and os.environ.get("SSH_AUTH_SOCK"):
        agent = paramiko.Agent()
        keys += list(agent.get_keys())
    try:
        for key in keys:
            with suppress(paramiko.AuthenticationException):
                transport.auth_publickey(user, key)
                return
    finally:
        if agent is not None:
            agent.close()
    raise OSError(
        errno.EACCES,
        f"sftp {user}@{host}:{port}: no key accepted ({len(keys)} tried; set {IDENTITY_ENV})",
    )


_BROKEN_CODES = (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED)
_BROKEN_IN_TEXT = re.compile(r"\[Errno ({})\]".format("|".join(map(str, _BROKEN_CODES))))


def open_session(host: str, port: int, user: str, timeout: float) -> SftpSession:
    """Connect, verify the host key, log in and start the sftp subsystem.

    Raises:
        OSError: ECONNREFUSED/ETIMEDOUT/EHOSTUNREACH for the network, EACCES
            for an untrusted host key or a refused login, EPROTO for SSH errors.
    """
    raw = connect_tcp(host, port, timeout, "sftp server")
    sock = CountingSocket(raw)
    transport = paramiko.Transport(sock)
    transport.banner_timeout = timeout
    transport.handshake_timeout = timeout
    transport.auth_timeout = timeout
    transport.channel_timeout = timeout
    # Banner, key exchange, login and channel each wait up to ``timeout``; a
    # server that answers each just in time would hold us four times as long.
    # The whole opening gets one ``timeout``: then the socket is shut under it.
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        with suppress(OSError):
            raw.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(timeout, expire)
    timer.start()
    try:
        transport.start_client(timeout=timeout)
        _check_host_key(transport, host, port)
        _authenticate(transport, user, host, port)
        channel = transport.open_session(timeout=timeout)
        channel.settimeout(timeout)
        channel.invoke_subsystem("sftp")
        client = StatusClient(channel)
        timer.cancel()
        if expired.is_set():
            raise EOFError("the session opened as its time ran out")
    except OSError as exc:
        transport.close()
        raw.close()
        if expired.is_set():
            raise _expired(host, port, timeout) from None
        raise exc from None
    except (paramiko.SSHException, EOFError) as exc:
        transport.close()
        raw.close()
        if expired.is_set():
            raise _expired(host, port, timeout) from None
        # paramiko wraps a connection the peer reset (a server restarting) in an SSH error:
        # that is a broken connection to recover from, not a server that broke the protocol.
        # The same for a connection closed before a word was said (EOF).
        broken = _BROKEN_IN_TEXT.search(str(exc))
        code = errno.ECONNRESET if isinstance(exc, EOFError) else errno.EPROTO
        if broken:
            code = int(broken.group(1))
        raise OSError(code, f"sftp {host}:{port}: {exc}") from None
    finally:
        timer.cancel()
        timer.join()
    return SftpSession(sock, transport, client)


def _expired(host: str, port: int, timeout: float) -> OSError:
    return OSError(errno.ETIMEDOUT, f"sftp {host}:{port}: no SSH session within {timeout:g} s")
