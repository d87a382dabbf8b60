"""Lying servers that lie inside a session: an SSH server whose SFTP subsystem lies.

``tests/test_lying_servers.py`` lies at the SSH banner; the lies that matter
most to a client come later, in replies to its requests, and need a real SSH
server in front of them. :class:`SftpLiar` is one (paramiko's server side, a
fresh in-memory host key, any client key accepted): it answers the SFTP
handshake truthfully and then each request with what its ``answer`` says.
"""

from __future__ import annotations

import functools
import select
import socket
import struct
import threading
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Protocol

import paramiko

#: SFTP packet types (draft-ietf-secsh-filexfer-02).
INIT, VERSION = 1, 2
CLOSE, OPENDIR, READDIR, STAT = 4, 11, 12, 17
STATUS, HANDLE, NAME, ATTRS = 101, 102, 104, 105


class Connection(Protocol):
    """What a lying script gets of its accepted connection (``Peer`` in the tests)."""

    sock: socket.socket
    stop: threading.Event


class Channel:
    """The SFTP subsystem's channel, as packets."""

    def __init__(self, channel: paramiko.Channel, stop: threading.Event) -> None:
        self.channel = channel
        self.stop = stop
        self._buffer = b""
        self.sent = 0

    def _fill(self, size: int) -> bool:
        while len(self._buffer) < size:
            if self.stop.is_set():
                return False
            readable, _, _ = select.select([self.channel], [], [], 0.1)
            if not readable:
                continue
            data = self.channel.recv(65536)
            if not data:
                return False
            self._buffer += data
        return True

    def request(self) -> tuple[int, int, bytes] | None:
        """The client's next packet: (type, request id, the rest); None once it is gone."""
        if not self._fill(4):
            return None
        (length,) = struct.unpack(">I", self._buffer[:4])
        if not self._fill(4 + length):
            return None
        packet, self._buffer = self._buffer[4 : 4 + length], self._buffer[4 + length :]
        kind = packet[0]
        if kind == INIT:
            return kind, 0, packet[1:]
        return kind, struct.unpack(">I", packet[1:5])[0], packet[5:]

    def send(self, kind: int, body: bytes) -> bool:
        if self.stop.is_set():
            return False
        try:
            self.channel.sendall(struct.pack(">IB", len(body) + 1, kind) + body)
        except (OSError, EOFError, paramiko.SSHException):
            return False
        self.sent += len(body) + 5
        return True


def u32(value: int) -> bytes:
    return struct.pack(">I", value)


def string(data: bytes) -> bytes:
    return u32(len(data)) + data


def status(request: int, code: int = 0) -> bytes:
    return u32(request) + u32(code) + string(b"") + string(b"")


#: An answer to one request (type, id, the rest); False: stop answering (the client gave up).
Answer = Callable[[Channel, int, int, bytes], bool]


class _Server(paramiko.ServerInterface):  # type: ignore[misc]  # paramiko is untyped
    """Any public key logs in; one session channel with the sftp subsystem."""

    def __init__(self) -> None:
        self.subsystem = threading.Event()

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        return int(paramiko.AUTH_SUCCESSFUL)

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return int(paramiko.OPEN_SUCCEEDED)
        return int(paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED)

    def check_channel_subsystem_request(self, channel: paramiko.Channel, name: str) -> bool:
        self.subsystem.set()
        return name == "sftp"


@functools.cache
def _keys() -> tuple[paramiko.PKey, paramiko.PKey]:
    """The server's host key and the client's key, made once per run, in memory."""
    return paramiko.RSAKey.generate(2048), paramiko.RSAKey.generate(2048)


class SftpLiar:
    """A lying-server script: SSH and the SFTP handshake told truly, then ``answer``."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer

    @property
    def host_key(self) -> paramiko.PKey:
        return _keys()[0]

    @property
    def client_key(self) -> paramiko.PKey:
        return _keys()[1]

    def client_env(self, directory: Path, port: int) -> dict[str, str]:
        """The environment under which the driver trusts this server and has a key."""
        known_hosts = directory / "known_hosts"
        known_hosts.write_text(
            f"[127.0.0.1]:{port} {self.host_key.get_name()} {self.host_key.get_base64()}\n"
        )
        identity = directory / "client_key"
        self.client_key.write_private_key_file(str(identity))
        return {"AVIARY_SFTP_KNOWN_HOSTS": str(known_hosts), "AVIARY_SFTP_IDENTITY": str(identity)}

    def __call__(self, peer: Connection) -> None:
        # Replies go out at once, as a real server's do (no 40 ms wait for a delayed ACK).
        peer.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport = paramiko.Transport(peer.sock)
        try:
            transport.add_server_key(self.host_key)
            server = _Server()
            transport.start_server(server=server)
            channel = transport.accept(5)
            if channel is None or not server.subsystem.wait(5):
                return
            with channel:
                self._speak(Channel(channel, peer.stop))
        except (OSError, EOFError, paramiko.SSHException):
            return
        finally:
            with suppress(Exception):
                transport.close()

    def _speak(self, channel: Channel) -> None:
        hello = channel.request()
        if hello is None or hello[0] != INIT or not channel.send(VERSION, u32(3)):
            return
        while (request := channel.request()) is not None:
            if not self.answer(channel, *request):
                break
        while channel.request() is not None:  # hold until the client goes or the test ends
            pass


# -- the lies ---------------------------------------------------------------------------------


def answer_stat_with(reply: Callable[[int], tuple[int, bytes]]) -> Answer:
    """STAT/LSTAT get ``reply(request id)``; anything else an OK status."""

    def answer(channel: Channel, kind: int, request: int, rest: bytes) -> bool:
        if kind in (STAT, 7):  # STAT, LSTAT
            return channel.send(*reply(request))
        return channel.send(STATUS, status(request))

    return answer


def wrong_kind(request: int) -> tuple[int, bytes]:
    """A well-formed STATUS OK where ATTRS belongs (its body even reads as empty attributes)."""
    return STATUS, status(request)


def wrong_id(request: int) -> tuple[int, bytes]:
    """Well-formed ATTRS, for a request that was never sent."""
    return ATTRS, u32(request + 1000) + u32(0)


def endless_wrong_ids(limit: int) -> Answer:
    """Replies to requests never sent, one every 0.1 s, up to ``limit`` of them."""

    def answer(channel: Channel, kind: int, request: int, rest: bytes) -> bool:
        for number in range(limit):
            if not channel.send(ATTRS, u32(request + 1000 + number) + u32(0)) or channel.stop.wait(
                0.1
            ):
                return False
        return False

    return answer


def huge_listing(limit: int, name_size: int = 4000, per_reply: int = 16) -> Answer:
    """A directory whose READDIR never ends: NAME replies up to ``limit`` bytes, never EOF."""
    entry = string(b"n" * name_size) + string(b"") + u32(0)

    def answer(channel: Channel, kind: int, request: int, rest: bytes) -> bool:
        if kind == OPENDIR:
            return channel.send(HANDLE, u32(request) + string(b"dir"))
        if kind == READDIR:
            if channel.sent > limit:
                return channel.send(STATUS, status(request, 1))  # EOF, at last
            return channel.send(NAME, u32(request) + u32(per_reply) + entry * per_reply)
        if kind == CLOSE:
            return channel.send(STATUS, status(request))
        return channel.send(STATUS, status(request, 2))

    return answer


def huge_count(channel: Channel, kind: int, request: int, rest: bytes) -> bool:
    """A NAME reply announcing four billion entries in a few bytes."""
    if kind == OPENDIR:
        return channel.send(HANDLE, u32(request) + string(b"dir"))
    if kind == READDIR:
        return channel.send(NAME, u32(request) + u32(0xFFFFFFFF) + string(b"a"))
    return channel.send(STATUS, status(request))


def trickled_listing(limit: int, gap: float) -> Answer:
    """A listing of one name per READDIR, each reply ``gap`` seconds after its request."""

    def answer(channel: Channel, kind: int, request: int, rest: bytes) -> bool:
        if kind == OPENDIR:
            return channel.send(HANDLE, u32(request) + string(b"dir"))
        if kind == READDIR:
            if channel.stop.wait(gap) or channel.sent > limit:
                return False
            return channel.send(NAME, u32(request) + u32(1) + string(b"n") + string(b"") + u32(0))
        return channel.send(STATUS, status(request))

    return answer


# -- XRootD: a server that logs the client in truly, then lies ------------------------------------

#: XProtocol request ids and response status codes.
KXR_DIRLIST, KXR_PROTOCOL, KXR_LOGIN, KXR_STAT = 3004, 3006, 3007, 3017
KXR_OK, KXR_OKSOFAR, KXR_ERROR = 0, 4000, 4003
_HANDSHAKE = 20  # bytes: ClientInitHandShake
_REQUEST = 24  # bytes: ClientRequestHdr


def _read_exactly(peer: Connection, size: int, buffer: bytearray) -> bytes | None:
    while len(buffer) < size:
        if peer.stop.is_set():
            return None
        readable, _, _ = select.select([peer.sock], [], [], 0.1)
        if not readable:
            continue
        data = peer.sock.recv(65536)
        if not data:
            return None
        buffer += data
    taken = bytes(buffer[:size])
    del buffer[:size]
    return taken


def response(stream: bytes, status_code: int, body: bytes) -> bytes:
    """ServerResponseHeader (stream id, status, dlen) and the body."""
    return stream + struct.pack(">HI", status_code, len(body)) + body


#: What a lying XRootD server does with one request after login: (peer, stream id,
#: request id, body) -> False when it has said all it will.
XrootdAnswer = Callable[[Connection, bytes, int, bytes], bool]


class XrootdLiar:
    """A lying-server script: the handshake, kXR_protocol and kXR_login told truly."""

    def __init__(self, answer: XrootdAnswer) -> None:
        self.answer = answer

    def __call__(self, peer: Connection) -> None:
        peer.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = bytearray()
        if _read_exactly(peer, _HANDSHAKE, buffer) is None:
            return
        # ServerInitHandShake: protocol version 5.2, a data server.
        peer.sock.sendall(response(b"\0\0", KXR_OK, struct.pack(">ii", 0x520, 1)))
        while (header := _read_exactly(peer, _REQUEST, buffer)) is not None:
            stream, request = header[:2], struct.unpack(">H", header[2:4])[0]
            (length,) = struct.unpack(">i", header[20:24])
            body = _read_exactly(peer, length, buffer) if length > 0 else b""
            if body is None:
                return
            if request == KXR_PROTOCOL:
                peer.sock.sendall(response(stream, KXR_OK, struct.pack(">ii", 0x520, 1)))
            elif request == KXR_LOGIN:
                peer.sock.sendall(response(stream, KXR_OK, b"s" * 16))
            elif not self.answer(peer, stream, request, body):
                break
        while _read_exactly(peer, 1, buffer) is not None:  # hold until the client goes
            pass


def xrootd_say(status_code: int, body: bytes) -> XrootdAnswer:
    """Every request after login gets this one reply (its own stream id)."""

    def answer(peer: Connection, stream: bytes, request: int, rest: bytes) -> bool:
        peer.sock.sendall(response(stream, status_code, body))
        return True

    return answer


def xrootd_other_stream(peer: Connection, stream: bytes, request: int, rest: bytes) -> bool:
    """A good stat reply, for a stream id the client never used."""
    other = bytes([stream[0] ^ 0x55, stream[1] ^ 0x55])
    peer.sock.sendall(response(other, KXR_OK, b"1 0 0 0\0"))
    return True


def xrootd_endless_listing(limit: int) -> XrootdAnswer:
    """A dirlist answered with partial replies (kXR_oksofar) up to ``limit`` bytes, never done."""

    def answer(peer: Connection, stream: bytes, request: int, rest: bytes) -> bool:
        if request != KXR_DIRLIST:
            peer.sock.sendall(response(stream, KXR_OK, b"1 0 2 0\0"))  # a directory
            return True
        part = response(stream, KXR_OKSOFAR, b"n" * 4000 + b"\n" * 96)
        sent = 0
        while sent < limit and not peer.stop.is_set():
            try:
                peer.sock.sendall(part * 64)
            except OSError:
                return False
            sent += len(part) * 64
        return False

    return answer
