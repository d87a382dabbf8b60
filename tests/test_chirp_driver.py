"""The Chirp driver against real servers, and against servers that misbehave."""

from __future__ import annotations

import errno
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from drivers.chirp import REPLY_REUSE_SECONDS, ChirpDriver
from drivers.chirp.codec import MAX_BUFFER_SIZE
from servers import RunningServer, free_port


def test_one_connection_and_one_round_trip_per_operation(chirp_server: RunningServer) -> None:
    with ChirpDriver(chirp_server.host, chirp_server.port, auth_methods=("address",)) as driver:
        driver.write_file("/f", b"abc")
        before = driver.counters.snapshot()
        driver.stat("/f")
        h = driver.open("/f", os.O_RDONLY)
        driver.pread(h, 3, 0)
        driver.close(h)
        driver.readdir("/")
        after = driver.counters.snapshot()
        costs = {op: c.round_trips for op, c in driver.counters.difference(after, before).items()}
        assert costs == {"stat": 1, "open": 1, "pread": 1, "close": 1, "readdir": 1}
        assert driver.counters.total().connections == 1
        assert after["putfile"].round_trips == 2  # go-ahead, then the final count
        assert after["pread"].bytes_received >= 3 + len("3\n")
        assert driver.subject == "address:127.0.0.1"
        assert driver.whoami() == "address:127.0.0.1"


def test_an_fstat_right_after_its_open_is_the_open_reply(chirp_server: RunningServer) -> None:
    """glibc's fopen and gcc fstat a file as soon as it is open: Chirp's open already said."""
    with ChirpDriver(chirp_server.host, chirp_server.port, auth_methods=("address",)) as driver:
        driver.write_file("/f", b"abc")
        h = driver.open("/f", os.O_RDWR)
        before = driver.counters.total().round_trips
        assert driver.fstat(h).st_size == 3
        assert driver.counters.total().round_trips == before  # and no operation counted
        assert "fstat" not in driver.counters.snapshot()
        assert driver.fstat(h).st_size == 3  # once: a second one asks
        assert driver.counters.total().round_trips == before + 1
        h2 = driver.open("/f", os.O_RDWR)
        driver.pwrite(h2, b"longer", 0)  # something of ours in between: ask the server
        assert driver.fstat(h2).st_size == 6
        assert driver.counters.snapshot()["fstat"].round_trips == 2
        driver.close(h)
        driver.close(h2)
        # Later than REPLY_REUSE_SECONDS: asked, so a loop polling the open file sees change.
        h = driver.open("/f", os.O_RDONLY)
        (chirp_server.data_dir / "f").write_bytes(b"grown by someone else")
        time.sleep(REPLY_REUSE_SECONDS * 1.5)
        assert driver.fstat(h).st_size == len(b"grown by someone else")
        driver.close(h)


def test_names_just_listed_are_stated_from_the_listing(chirp_server: RunningServer) -> None:
    """ls -l lists, then stats every name (and the agent lstats it for each xattr call):
    getlongdir already sent every name's lstat."""
    with ChirpDriver(chirp_server.host, chirp_server.port, auth_methods=("address",)) as driver:
        driver.mkdir("/d")
        driver.write_file("/d/f", b"abc")
        driver.symlink("f", "/d/link")
        names = {entry.name for entry in driver.readdir("/d")}
        assert {"f", "link"} <= names
        before = driver.counters.total().round_trips
        for _ in range(3):  # statx, lgetxattr, getxattr of one name
            assert driver.lstat("/d/f").st_size == 3
        assert driver.stat("/d/f").st_size == 3
        assert driver.lstat("/d/link").is_lnk()
        assert driver.counters.total().round_trips == before  # and no operation counted
        assert {"stat", "lstat"}.isdisjoint(driver.counters.snapshot())
        assert not driver.stat("/d/link").is_lnk()  # a link's target is asked for
        assert driver.counters.total().round_trips == before + 1
        # Anything asked in between: ask the server (the listing may no longer hold).
        driver.readdir("/d")
        driver.write_file("/d/f", b"longer")
        assert driver.lstat("/d/f").st_size == 6
        # Another directory's names are not in the listing.
        driver.readdir("/")
        assert driver.lstat("/d/f").st_size == 6
        assert driver.counters.snapshot()["lstat"].round_trips == 2
        # Later than REPLY_REUSE_SECONDS: asked, so a loop polling a name sees change.
        driver.readdir("/d")
        (chirp_server.data_dir / "d" / "f").write_bytes(b"grown by someone else")
        time.sleep(REPLY_REUSE_SECONDS * 1.5)
        assert driver.lstat("/d/f").st_size == len(b"grown by someone else")


def test_a_readlink_right_after_stats_of_the_name_is_their_answer(
    chirp_server: RunningServer,
) -> None:
    """make stats x.c and x.o, then gcc's realpath asks readlink of both: the stats said."""
    with ChirpDriver(chirp_server.host, chirp_server.port, auth_methods=("address",)) as driver:
        driver.write_file("/x.c", b"int x;")
        driver.symlink("x.c", "/link")
        with pytest.raises(FileNotFoundError):
            driver.stat("/x.o")
        assert driver.stat("/x.c").st_size == 6
        assert driver.stat("/link").st_size == 6  # a link: lstat, then stat for its target
        before = driver.counters.total()
        for path, code in (("/x.c", errno.EINVAL), ("/x.o", errno.ENOENT)):
            with pytest.raises(OSError) as info:
                driver.readlink(path)
            assert info.value.errno == code, path
        assert driver.counters.total().round_trips == before.round_trips  # no operation
        assert driver.counters.total().calls == before.calls
        assert driver.readlink("/link") == "x.c"  # a link's target is asked for
        assert driver.counters.total().round_trips == before.round_trips + 1
        # Something else asked in between: the server answers (the name may be a link now).
        driver.stat("/x.c")
        driver.unlink("/x.c")
        driver.symlink("elsewhere", "/x.c")
        assert driver.readlink("/x.c") == "elsewhere"
        # A stat asked again still asks: only readlink is answered from the stats.
        trips = driver.counters.total().round_trips
        driver.lstat("/link")
        driver.lstat("/link")
        assert driver.counters.total().round_trips == trips + 2
        # Later than REPLY_REUSE_SECONDS: asked, so a change behind the server's back shows.
        driver.write_file("/plain", b"a file")
        assert not driver.lstat("/plain").is_lnk()
        (chirp_server.data_dir / "plain").unlink()
        (chirp_server.data_dir / "plain").symlink_to("x.c")
        time.sleep(REPLY_REUSE_SECONDS * 1.5)
        assert driver.readlink("/plain") == "x.c"


def test_auth_falls_through_refused_methods(chirp_server: RunningServer) -> None:
    # Both test servers accept only "address": unix and hostname are refused first.
    with ChirpDriver(chirp_server.host, chirp_server.port) as driver:
        driver.stat("/")
        assert driver.subject == "address:127.0.0.1"
    with (
        pytest.raises(OSError) as info,
        ChirpDriver(chirp_server.host, chirp_server.port, auth_methods=("hostname",)) as driver,
    ):
        driver.stat("/")
    assert info.value.errno == errno.EACCES


def test_acl_denial_is_eacces(chirp_server: RunningServer) -> None:
    with ChirpDriver(chirp_server.host, chirp_server.port, auth_methods=("address",)) as driver:
        driver.mkdir("/locked")
        driver.write_file("/locked/f", b"secret")
        driver.setacl("/locked", "address:127.0.0.1", "rl")
        assert ("address:127.0.0.1", "rl") in driver.getacl("/locked")
        assert driver.read_file("/locked/f") == b"secret"
        for call in (
            lambda: driver.write_file("/locked/g", b"x"),
            lambda: driver.open("/locked/f", os.O_WRONLY),
            lambda: driver.mkdir("/locked/sub"),
        ):
            with pytest.raises(OSError) as info:
                call()
            assert info.value.errno == errno.EACCES
        # Chirp checks the delete right in the directory *above* the one
        # holding the file, so "rl" on /locked does not stop an unlink.
        driver.unlink("/locked/f")


def test_writes_larger_than_one_message_are_split(chirp_server: RunningServer) -> None:
    data = os.urandom(MAX_BUFFER_SIZE + 4096)
    with ChirpDriver(chirp_server.host, chirp_server.port, auth_methods=("address",)) as driver:
        h = driver.open("/big", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            assert driver.pwrite(h, data, 0) == len(data)
            assert driver.counters.snapshot()["pwrite"].round_trips == 2
            assert driver.pread(h, 4096, MAX_BUFFER_SIZE) == data[MAX_BUFFER_SIZE:]
        finally:
            driver.close(h)


def test_server_not_listening_is_econnrefused() -> None:
    with pytest.raises(OSError) as info, ChirpDriver("127.0.0.1", free_port(), timeout=5) as driver:
        driver.stat("/")
    assert info.value.errno == errno.ECONNREFUSED


@contextmanager
def fake_server(behaviour: Callable[[socket.socket], None]) -> Iterator[int]:
    """A one-connection TCP server on loopback that behaves as told."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(10)
    done = threading.Event()

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            behaviour(conn)
            done.wait(10)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        done.set()
        listener.close()
        thread.join(10)


def _login(conn: socket.socket) -> None:
    conn.recv(100)
    conn.sendall(b"yes\nyes\nyes\naddress\n127.0.0.1\n")
    conn.recv(100)


def test_silent_server_times_out() -> None:
    with (
        fake_server(_login) as port,
        ChirpDriver(
            "127.0.0.1", port, auth_methods=("address",), timeout=0.5, recovery=0
        ) as driver,
        pytest.raises(OSError) as info,
    ):
        driver.stat("/")
    assert info.value.errno == errno.ETIMEDOUT


def test_lying_server_is_eproto() -> None:
    def lie(conn: socket.socket) -> None:
        _login(conn)
        conn.sendall(b"0\nthis is not a stat line\n")

    with (
        fake_server(lie) as port,
        ChirpDriver("127.0.0.1", port, auth_methods=("address",), timeout=5, recovery=0) as driver,
    ):
        with pytest.raises(OSError) as info:
            driver.stat("/")
        assert info.value.errno == errno.EPROTO
        assert not driver.connected


def test_server_that_hangs_up_is_econnreset() -> None:
    def hang_up(conn: socket.socket) -> None:
        _login(conn)
        conn.shutdown(socket.SHUT_RDWR)

    with (
        fake_server(hang_up) as port,
        ChirpDriver("127.0.0.1", port, auth_methods=("address",), timeout=5, recovery=0) as driver,
        pytest.raises(OSError) as info,
    ):
        driver.stat("/")
    assert info.value.errno in (errno.ECONNRESET, errno.EPIPE)


def test_server_gone_mid_session_fails_fast_then_recovers(chirp_server: RunningServer) -> None:
    with ChirpDriver(
        chirp_server.host, chirp_server.port, auth_methods=("address",), timeout=5, recovery=0
    ) as driver:  # recovery disabled: see tests/test_chirp_recovery.py for the other case
        driver.write_file("/f", b"kept")
        h = driver.open("/f", os.O_RDONLY)
        chirp_server.stop()
        with pytest.raises(OSError) as info:
            driver.pread(h, 4, 0)
        assert info.value.errno in (errno.ECONNRESET, errno.EPIPE, errno.ECONNREFUSED)
        with pytest.raises(OSError) as info:
            driver.stat("/f")
        assert info.value.errno == errno.ECONNREFUSED
        with pytest.raises(OSError) as info:
            driver.pread(h, 4, 0)  # the handle died with its connection
        assert info.value.errno == errno.EBADF
