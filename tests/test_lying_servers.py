"""Lying servers: every network driver against a loopback listener that breaks its protocol.

Covers: chirp, ftp, http, webdav, sftp (at the banner, a good banner with no key
exchange after it, and inside an SFTP session behind a real SSH server of our own:
``tests/lying_sessions.py``) and xrootd, each against the lies of a hostile or broken server:

- garbage: a reply that is not the protocol (after a good login where there is one);
- overlong: a reply line that never ends;
- trickle: a reply that comes a byte at a time, each byte within the timeout;
- silent: a server that accepts and never answers;
- wrong: a well-formed reply that makes no sense where it comes;
- huge listing: a directory listing without end (and for FTP, whose listings
  come on a connection of their own, and SFTP, whose listings take a request per
  batch of names, a listing that trickles; for SFTP also a reply that announces
  four billion names in a few bytes).

Each case asserts the error's kind (EPROTO for a lie, ETIMEDOUT for silence) and
that the call ended within the configured ``timeout`` plus the recovery budget
plus one second: a bound that follows from the options, not a speed claim. A
lie is also never answered with a reconnect loop: the connections counted stay
few.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from drivers import Driver, open_url
from drivers.chirp.codec import encode_stat
from tests import lying_sessions as sftp_liar

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 1.0  # seconds: the drivers' --timeout in every case
BUDGET = 1.0  # seconds: the recovery budget (AVIARY_RECOVERY)
BOUND = TIMEOUT + BUDGET + 1.0  # the promise: timeout + budget + 1 s
FLOOD_LIMIT = 80 * 1024 * 1024  # bytes: every flood stops here (above the drivers' 64 MiB bounds)
TRICKLE_BYTES = 400  # bytes a trickle sends at most, one per TRICKLE_GAP
TRICKLE_GAP = 0.05  # seconds between two trickled bytes: well within TIMEOUT

Script = Callable[["Peer"], None]


class Peer:
    """One accepted connection, seen from the lying server."""

    def __init__(self, sock: socket.socket, stop: threading.Event) -> None:
        self.sock = sock
        self.stop = stop
        self._buffer = b""

    def line(self) -> bytes | None:
        """The client's next line (without the line end), None once it is gone or we stop."""
        while b"\n" not in self._buffer:
            if self.stop.is_set():
                return None
            readable, _, _ = select.select([self.sock], [], [], 0.1)
            if not readable:
                continue
            try:
                data = self.sock.recv(65536)
            except OSError:
                return None
            if not data:
                return None
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.rstrip(b"\r")

    def request_head(self) -> bytes | None:
        """An HTTP request's head and body (read until the client is quiet for a moment)."""
        while b"\r\n\r\n" not in self._buffer:
            if self.line_data() is None:
                return None
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        length = 0
        for header in head.split(b"\r\n")[1:]:
            name, _, value = header.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self._buffer) < length:
            if self.line_data() is None:
                return None
        self._buffer = self._buffer[length:]
        return head

    def line_data(self) -> bytes | None:
        if self.stop.is_set():
            return None
        readable, _, _ = select.select([self.sock], [], [], 0.1)
        if not readable:
            return b""
        try:
            data = self.sock.recv(65536)
        except OSError:
            return None
        if not data:
            return None
        self._buffer += data
        return data

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def flood(self, pattern: bytes, sock: socket.socket | None = None) -> None:
        """Send ``pattern`` again and again, up to FLOOD_LIMIT bytes or until the client goes."""
        target = sock or self.sock
        chunk = pattern * max(1, (256 * 1024) // len(pattern))
        sent = 0
        # A client that stops reading must not hold this thread past close(): sends time
        # out, so the stop event is looked at again.
        target.settimeout(0.2)
        while sent < FLOOD_LIMIT and not self.stop.is_set():
            try:
                sent += target.send(chunk)
            except TimeoutError:
                continue
            except OSError:
                return

    def trickle(self, byte: bytes = b"1", sock: socket.socket | None = None) -> None:
        """One byte every TRICKLE_GAP seconds, TRICKLE_BYTES at most, never a line end."""
        target = sock or self.sock
        for _ in range(TRICKLE_BYTES):
            if self.stop.wait(TRICKLE_GAP):
                return
            try:
                target.sendall(byte)
            except OSError:
                return

    def hold(self) -> None:
        """Say nothing until the client goes or the test ends."""
        while self.line_data() is not None:
            pass


class LyingServer:
    """A loopback listener that runs ``script`` for each connection, in its own thread."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.stop = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            readable, _, _ = select.select([self.listener], [], [], 0.1)
            if not readable:
                continue
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        with sock, contextlib.suppress(OSError):
            self.script(Peer(sock, self.stop))

    def close(self) -> None:
        self.stop.set()
        self._accepter.join(5)
        self.listener.close()
        for thread in self._threads:
            thread.join(5)


# -- the scripts, per protocol ------------------------------------------------------------


Answer = Callable[[Peer, bytes], None]


def say(data: bytes, then: Answer | None = None) -> Answer:
    """An answer to a request: ``data``, then ``then`` (if any)."""

    def answer(peer: Peer, request: bytes) -> None:
        if peer.send(data) and then is not None:
            then(peer, request)

    return answer


def flood(pattern: bytes) -> Answer:
    return lambda peer, _: peer.flood(pattern)


def trickle(byte: bytes) -> Answer:
    return lambda peer, _: peer.trickle(byte)


def on_connect(answer: Answer, *, wait_for_client: bool = False) -> Script:
    """A script that answers as soon as the client connects (or first speaks), then holds."""

    def script(peer: Peer) -> None:
        if wait_for_client and peer.line_data() is None:
            return
        answer(peer, b"")
        peer.hold()

    return script


def chirp_login(peer: Peer) -> bool:
    """The ``address`` method's exchange (the client offers only it: AVIARY_CHIRP_AUTH)."""
    if peer.line() is None:
        return False
    return peer.send(b"yes\nyes\nyes\naddress\n127.0.0.1\n")


def chirp_then(answer: Answer) -> Script:
    def script(peer: Peer) -> None:
        if not chirp_login(peer):
            return
        request = peer.line()
        if request is not None:
            answer(peer, request)
            peer.hold()

    return script


def chirp_huge_listing(peer: Peer, request: bytes) -> None:
    stat_line = encode_stat(os.stat("/")).encode()
    peer.send(b"0\n")
    peer.flood(b"n" * 4000 + b"\n" + stat_line + b"\n")


CHIRP: dict[str, Script] = {
    "garbage": chirp_then(say(b"banana\n")),
    "overlong": chirp_then(flood(b"1")),
    "trickle": chirp_then(trickle(b"1")),
    "silent": Peer.hold,
    "wrong": chirp_then(say(b"0\n1 2 3\n")),
    "huge listing": chirp_then(chirp_huge_listing),
}


def ftp_session(after_login: Callable[[Peer, bytes], bool]) -> Script:
    """A minimal FTP server: greeting, login, FEAT, TYPE I; then ``after_login`` per command.

    ``after_login`` returns False when it has said what it had to (the script then holds).
    """

    def script(peer: Peer) -> None:
        if not peer.send(b"220 lying ftp\r\n"):
            return
        logged_in = False
        while (line := peer.line()) is not None:
            verb = line.split(b" ", 1)[0].upper()
            if not logged_in and verb in (b"USER", b"PASS"):
                logged_in = True
                peer.send(b"230 in\r\n")
            elif verb == b"FEAT":
                peer.send(b"211-Features:\r\n MLST type*;size*;\r\n211 End\r\n")
            elif not after_login(peer, line):
                peer.hold()
                return

    return script


def ftp_answer(reply: bytes) -> Callable[[Peer, bytes], bool]:
    def answer(peer: Peer, line: bytes) -> bool:
        peer.send(reply)
        return False

    return answer


def ftp_type_then(act: Callable[[Peer, bytes], bool]) -> Callable[[Peer, bytes], bool]:
    """TYPE I is accepted (the login ends well); the next command meets ``act``."""

    def answer(peer: Peer, line: bytes) -> bool:
        if line.upper().startswith(b"TYPE"):
            return peer.send(b"200 binary\r\n")
        return act(peer, line)

    return answer


def ftp_flood(peer: Peer, line: bytes) -> bool:
    peer.flood(b"2")
    return False


def ftp_trickle(peer: Peer, line: bytes) -> bool:
    peer.trickle(b"2")
    return False


def ftp_listing(send: Callable[[Peer, socket.socket], None]) -> Callable[[Peer, bytes], bool]:
    """A passive-mode listing whose data connection gets ``send``."""

    def answer(peer: Peer, line: bytes) -> bool:
        return ftp_data(peer, line, send)

    return answer


def ftp_data(peer: Peer, line: bytes, send: Callable[[Peer, socket.socket], None]) -> bool:
    verb = line.split(b" ", 1)[0].upper()
    if verb == b"EPSV":
        data = socket.create_server(("127.0.0.1", 0))
        peer.data_listener = data  # type: ignore[attr-defined]
        port = data.getsockname()[1]
        return peer.send(f"229 Entering Extended Passive Mode (|||{port}|)\r\n".encode())
    if verb in (b"LIST", b"MLSD", b"NLST"):
        listener: socket.socket = peer.data_listener  # type: ignore[attr-defined]
        listener.settimeout(5)
        data_sock, _ = listener.accept()
        listener.close()
        peer.send(b"150 here it comes\r\n")
        with data_sock:
            send(peer, data_sock)
        return False
    if verb == b"STAT":
        return peer.send(b"213-status\r\n-rw-r--r-- 1 u g 1 Jan  1 00:00 x\r\n213 end\r\n")
    if verb in (b"CWD", b"PWD", b"SIZE", b"MDTM", b"OPTS"):
        return peer.send(b"250 fine\r\n" if verb == b"CWD" else b"500 what\r\n")
    return peer.send(b"500 what\r\n")


FTP: dict[str, Script] = {
    "garbage": ftp_session(ftp_type_then(ftp_answer(b"banana\r\n"))),
    "overlong": ftp_session(ftp_type_then(ftp_flood)),
    "trickle": ftp_session(ftp_type_then(ftp_trickle)),
    "silent": Peer.hold,
    "wrong": ftp_session(ftp_answer(b"500 TYPE? never heard of it\r\n")),
    "huge listing": ftp_session(
        ftp_type_then(ftp_listing(lambda peer, data: peer.flood(b"type=file; n" * 20, data)))
    ),
    "trickle listing": ftp_session(
        ftp_type_then(ftp_listing(lambda peer, data: peer.trickle(b"n", data)))
    ),
}


def http_then(answer: Answer) -> Script:
    def script(peer: Peer) -> None:
        head = peer.request_head()
        if head is not None:
            answer(peer, head)
            peer.hold()

    return script


def http_huge(peer: Peer, head: bytes) -> None:
    status = b"207 Multi-Status" if head.startswith(b"PROPFIND") else b"200 OK"
    peer.send(b"HTTP/1.1 " + status + b"\r\nContent-Length: 1000000000\r\n\r\n")
    peer.flood(b'<a href="name">name</a>\n')


HTTP: dict[str, Script] = {
    "garbage": http_then(say(b"banana\r\n\r\n")),
    "overlong": http_then(say(b"HTTP/1.1 200 OK\r\nX: ", flood(b"x"))),
    "trickle": http_then(trickle(b"H")),
    "silent": Peer.hold,
    "wrong": http_then(say(b"HTTP/1.1 200 OK\r\nbanana\r\n\r\n")),
    "huge listing": http_then(http_huge),
}

WEBDAV: dict[str, Script] = {
    **HTTP,
    "wrong": http_then(say(b"HTTP/1.1 207 Multi-Status\r\nContent-Length: 6\r\n\r\nbanana")),
}

SFTP: dict[str, Script] = {
    "garbage": on_connect(say(b"banana\r\n" * 200)),
    "overlong": on_connect(flood(b"S")),
    "trickle": on_connect(trickle(b"S")),
    "silent": Peer.hold,
    # A good banner, then a key exchange that never comes.
    "wrong": on_connect(say(b"SSH-2.0-OpenSSH_9.2 liar\r\n")),
    # Behind a real SSH session: lies in the replies to SFTP requests.
    "wrong reply": sftp_liar.SftpLiar(sftp_liar.answer_stat_with(sftp_liar.wrong_kind)),
    "wrong id": sftp_liar.SftpLiar(sftp_liar.endless_wrong_ids(200)),
    "huge listing": sftp_liar.SftpLiar(sftp_liar.huge_listing(FLOOD_LIMIT)),
    "overcounted listing": sftp_liar.SftpLiar(sftp_liar.huge_count),
    "trickle listing": sftp_liar.SftpLiar(
        sftp_liar.trickled_listing(TRICKLE_BYTES * 64, TRICKLE_GAP)
    ),
}

XROOTD: dict[str, Script] = {
    "garbage": on_connect(say(b"banana" * 100), wait_for_client=True),
    "overlong": on_connect(flood(b"\xff"), wait_for_client=True),
    "trickle": on_connect(trickle(b"\x00")),
    "silent": Peer.hold,
    # After a true handshake and login: lies in the replies to requests.
    "wrong reply": sftp_liar.XrootdLiar(sftp_liar.xrootd_say(sftp_liar.KXR_OK, b"banana")),
    "wrong id": sftp_liar.XrootdLiar(sftp_liar.xrootd_other_stream),
    "huge listing": sftp_liar.XrootdLiar(sftp_liar.xrootd_endless_listing(FLOOD_LIMIT)),
}


# -- the cases ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    scheme: str
    lie: str
    script: Script
    expected: frozenset[int]

    @property
    def id(self) -> str:
        return f"{self.scheme}-{self.lie.replace(' ', '-')}"


LIE = frozenset({errno.EPROTO})
SILENCE = frozenset({errno.ETIMEDOUT})
#: What each lie must give, where the protocol's client library decides the word:
#: paramiko reports a banner it never got as an SSH error (EPROTO), and XrdCl a
#: handshake that went wrong as an invalid message (EPROTO) or an expired request (ETIMEDOUT).
#: After login, XrdCl drops a reply to a stream id it never used and keeps every partial
#: reply of a listing until the request expires: both lies end as the request's ETIMEDOUT.
_XROOTD_LIE = frozenset({errno.EPROTO, errno.ETIMEDOUT})
EXPECTED: dict[tuple[str, str], frozenset[int]] = {
    ("sftp", "silent"): frozenset({errno.EPROTO, errno.ETIMEDOUT}),
    ("sftp", "trickle"): frozenset({errno.EPROTO, errno.ETIMEDOUT}),
    ("sftp", "overlong"): frozenset({errno.EPROTO, errno.ETIMEDOUT}),
    ("sftp", "wrong"): frozenset({errno.EPROTO, errno.ETIMEDOUT}),
    **{("root", lie): _XROOTD_LIE for lie in XROOTD},
    ("root", "wrong reply"): LIE,
    ("root", "wrong id"): SILENCE,
    ("root", "huge listing"): SILENCE,
}


def _cases() -> Iterator[Case]:
    for scheme, scripts in (
        ("chirp", CHIRP),
        ("ftp", FTP),
        ("http", HTTP),
        ("dav", WEBDAV),
        ("sftp", SFTP),
        ("root", XROOTD),
    ):
        for lie, script in scripts.items():
            default = SILENCE if lie.startswith(("silent", "trickle")) else LIE
            yield Case(scheme, lie, script, EXPECTED.get((scheme, lie), default))


CASES = list(_cases())


#: The XRootD bindings keep a poller per server for the life of the process, so
#: each lying xrootd server is met from a fresh interpreter (the project's own).
_XROOTD_CLIENT = """
import errno, sys, time
from drivers import open_url
driver, path = open_url(sys.argv[1], timeout=float(sys.argv[2]))
start = time.monotonic()
try:
    driver.readdir("/") if sys.argv[3] == "readdir" else driver.stat(path)
except OSError as exc:
    print(exc.errno, time.monotonic() - start, exc)
else:
    print(0, time.monotonic() - start)
"""


def _xrootd_call(url: str, operation: str = "stat") -> tuple[OSError | None, float]:
    env = {**os.environ, "AVIARY_RECOVERY": str(BUDGET)}
    done = subprocess.run(
        [sys.executable, "-c", _XROOTD_CLIENT, url, str(TIMEOUT), operation],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0 and done.stdout.strip(), (
        f"the xrootd client ended with status {done.returncode}: "
        f"stdout {done.stdout.strip()[:300]!r}, stderr {done.stderr.strip()[-600:]!r}"
    )
    code, elapsed, *message = done.stdout.strip().split(maxsplit=2)
    error = OSError(int(code), " ".join(message)) if int(code) else None
    return error, float(elapsed)


def _operation(case: Case) -> Callable[[Driver, str], object]:
    if case.lie.endswith("listing"):
        return lambda driver, path: driver.readdir(path)
    return lambda driver, path: driver.stat(path)


def _call_in_process(case: Case, url: str) -> tuple[OSError | None, float]:
    driver, inner = open_url(url, timeout=TIMEOUT)
    start = time.monotonic()
    try:
        _operation(case)(driver, "/" if case.lie.endswith("listing") else inner)
    except OSError as exc:
        return exc, time.monotonic() - start
    finally:
        driver.close_driver()
    return None, time.monotonic() - start


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_lying_server(case: Case, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The call fails with the lie's error kind within timeout + budget + 1 s, without a loop."""
    monkeypatch.setenv("AVIARY_RECOVERY", str(BUDGET))
    monkeypatch.setenv("AVIARY_CHIRP_AUTH", "address")
    server = LyingServer(case.script)
    if isinstance(case.script, sftp_liar.SftpLiar):  # an SSH server the client must trust
        for name, value in case.script.client_env(tmp_path, server.port).items():
            monkeypatch.setenv(name, value)
        # Both ends encrypt in Python here: 64 MiB of names takes seconds on a busy machine,
        # so the listing bound is checked at 8 MiB (the same code refuses either).
        monkeypatch.setattr("drivers.sftp._requests.MAX_LISTING_BYTES", 8 << 20)
    try:
        user = "nobody@" if case.scheme == "sftp" else ""
        url = f"{case.scheme}://{user}127.0.0.1:{server.port}/x"
        if case.scheme == "root":
            operation = "readdir" if case.lie.endswith("listing") else "stat"
            error, elapsed = _xrootd_call(url.replace("/x", "//x"), operation)
        else:
            error, elapsed = _call_in_process(case, url)
    finally:
        server.close()
    assert error is not None, f"{case.id}: the lie was believed"
    name = errno.errorcode.get(error.errno or 0, str(error.errno))
    assert error.errno in case.expected, f"{name}: {error}"
    assert elapsed <= BOUND, f"{case.id} held the client {elapsed:.1f} s (bound {BOUND} s)"
    # A lie is answered once: no reconnect loop (xrootd's library may retry its handshake).
    assert server.connections <= (3 if case.scheme == "root" else 2), server.connections


def test_lying_server_check_catches_a_reconnect_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checker catches the reconnect loop it names: with EPROTO counted as a broken
    connection again (the old behaviour), a garbage-answering Chirp server is asked again."""
    from drivers._network import BROKEN_CONNECTION, RECONNECTABLE
    from drivers.chirp import _shell as shell

    monkeypatch.setattr(shell, "BROKEN_CONNECTION", BROKEN_CONNECTION | {errno.EPROTO})
    monkeypatch.setattr(shell, "RECONNECTABLE", RECONNECTABLE | {errno.EPROTO})
    monkeypatch.setenv("AVIARY_RECOVERY", str(BUDGET))
    monkeypatch.setenv("AVIARY_CHIRP_AUTH", "address")
    server = LyingServer(CHIRP["garbage"])
    try:
        driver, inner = open_url(f"chirp://127.0.0.1:{server.port}/x", timeout=TIMEOUT)
        try:
            with pytest.raises(OSError):
                driver.stat(inner)
        finally:
            driver.close_driver()
    finally:
        server.close()
    assert server.connections > 2  # the seeded bug reconnects: the assertion above would fail
