"""Chirp bulk reads: payloads received into the caller's buffer, and pipelined preads.

Covers: ``ChirpConnection`` with ``Request.into`` (sans-I/O, fed byte by byte and
through ``receive_buffer``), and ``ChirpDriver.pread_into`` against both real
servers and against a scripted server that fails in the middle of a pipeline.

Scenario: a file of a few pieces is read with a small ``pipeline_piece``, so one
call is several requests sent back to back; the reply stream must stay in step
(the next call gets its own reply), a short reply (end of file) must end the
count, and an error after some bytes must return those bytes, an error first the
server's errno.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from drivers.chirp import ChirpDriver
from drivers.chirp._connection import BROKEN, ChirpConnection
from drivers.chirp._driver import PIPELINE_DEPTH
from drivers.chirp._events import (
    NEED_DATA,
    AuthOffer,
    DataInto,
    Event,
    RemoteProtocolError,
    Reply,
    Request,
    StatReply,
)
from drivers.chirp.codec import encode_stat
from servers import RunningServer

PIECE = 4096  # bytes per pipelined request in these tests


def ready() -> ChirpConnection:
    conn = ChirpConnection()
    conn.send(AuthOffer("address"))
    conn.receive_data(b"yes\nyes\nyes\naddress\n127.0.0.1\n")
    assert conn.next_event() is not NEED_DATA  # AuthAgreed
    assert conn.next_event() is not NEED_DATA  # Authenticated
    return conn


def drain(conn: ChirpConnection) -> list[Event]:
    found: list[Event] = []
    while (event := conn.next_event()) is not NEED_DATA:
        assert not isinstance(event, type(NEED_DATA))
        found.append(event)
    return found


def pread_into(buffer: memoryview, size: int, offset: int = 0) -> Request:
    return Request(f"pread 3 {size} {offset}", Reply.BYTES, limit=size, into=buffer)


# -- sans-I/O ------------------------------------------------------------------------------


def test_ChirpConnection_into_payload_fed_byte_by_byte() -> None:
    conn = ready()
    first, second = bytearray(5), bytearray(5)
    conn.send(pread_into(memoryview(first), 5))
    conn.send(pread_into(memoryview(second), 5, 5))
    conn.send(Request("fstat 3", Reply.STAT))
    stream = b"5\nhello3\nabc0\n" + encode_stat(os.stat("/")).encode() + b"\n"
    found: list[Event] = []
    for i in range(len(stream)):
        conn.receive_data(stream[i : i + 1])
        found += drain(conn)
    assert found[:2] == [DataInto(5), DataInto(3)]
    assert isinstance(found[2], StatReply)
    assert (bytes(first), bytes(second[:3])) == (b"hello", b"abc")
    assert conn.pending == 0


def test_ChirpConnection_receive_buffer_takes_the_payload_without_the_connection_buffer() -> None:
    conn = ready()
    target = bytearray(100)
    conn.send(pread_into(memoryview(target), 100))
    stream = b"100\n" + bytes(range(100))
    position = 0
    while (event := conn.next_event()) is NEED_DATA:
        view = conn.receive_buffer()
        assert view is not None  # a payload with a home is never read through receive_data
        count = min(len(view), len(stream) - position, 7)
        view[:count] = stream[position : position + count]
        position += count
        conn.received_into(count)
    assert event == DataInto(100)
    assert bytes(target) == bytes(range(100))
    assert position == len(stream)


def test_ChirpConnection_into_refuses_a_payload_larger_than_the_buffer() -> None:
    conn = ready()
    conn.send(Request("pread 3 4 0", Reply.BYTES, limit=None, into=memoryview(bytearray(4))))
    conn.receive_data(b"5\nhello")
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    assert conn.state is BROKEN


def test_ChirpConnection_server_gone_mid_payload_is_econnreset() -> None:
    conn = ready()
    conn.send(pread_into(memoryview(bytearray(10)), 10))
    conn.receive_data(b"10\nabc")
    assert conn.next_event() is NEED_DATA
    view = conn.receive_buffer()
    assert view is not None and len(view) == 7
    conn.received_into(0)
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert info.value.errno_hint == errno.ECONNRESET


# -- real servers --------------------------------------------------------------------------


def pattern(size: int) -> bytes:
    return bytes(i * 13 % 251 for i in range(size))


@pytest.fixture
def piped(chirp_server: RunningServer) -> Iterator[ChirpDriver]:
    with ChirpDriver(
        chirp_server.host, chirp_server.port, auth_methods=("address",), recovery=0
    ) as driver:
        driver.pipeline_piece = PIECE
        yield driver


def test_pread_into_spans_several_pipelined_requests_in_one_round_trip(piped: ChirpDriver) -> None:
    data = pattern(5 * PIECE + 123)
    piped.write_file("/f", data)
    handle = piped.open("/f", os.O_RDONLY)
    buffer = bytearray(5 * PIECE)
    before = piped.counters.snapshot()
    assert piped.pread_into(handle, memoryview(buffer), 100) == 5 * PIECE
    cost = piped.counters.difference(piped.counters.snapshot(), before)["pread"]
    assert bytes(buffer) == data[100 : 100 + 5 * PIECE]
    assert cost.round_trips == 1
    assert cost.bytes_received >= 5 * PIECE + 5 * len(f"{PIECE}\n")
    piped.close(handle)


def test_pread_into_a_short_reply_at_end_of_file_ends_the_count(piped: ChirpDriver) -> None:
    data = pattern(2 * PIECE + 10)
    piped.write_file("/f", data)
    handle = piped.open("/f", os.O_RDONLY)
    buffer = bytearray(6 * PIECE)  # pieces 3..6 are past the end: empty replies, read all the same
    assert piped.pread_into(handle, memoryview(buffer), 0) == len(data)
    assert bytes(buffer[: len(data)]) == data
    assert piped.pread_into(handle, memoryview(buffer), len(data)) == 0
    # Nothing of the pipeline is left on the connection: the next calls get their own replies.
    assert piped.pread(handle, 5, 1) == data[1:6]
    assert piped.fstat(handle).st_size == len(data)
    piped.close(handle)


def test_pread_into_bad_handle_and_offset(piped: ChirpDriver) -> None:
    piped.write_file("/f", b"abc")
    handle = piped.open("/f", os.O_RDONLY)
    with pytest.raises(OSError) as info:
        piped.pread_into(handle, memoryview(bytearray(8)), -1)
    assert info.value.errno == errno.EINVAL
    piped.close(handle)
    with pytest.raises(OSError) as info:
        piped.pread_into(handle, memoryview(bytearray(8)), 0)
    assert info.value.errno == errno.EBADF


def test_pwrite_of_several_buffers_then_a_pipelined_read(piped: ChirpDriver) -> None:
    data = pattern(3 * PIECE + 1)
    handle = piped.open("/g", os.O_RDWR | os.O_CREAT, 0o600)
    assert piped.pwrite(handle, memoryview(data), 0) == len(data)  # type: ignore[arg-type]
    buffer = bytearray(4 * PIECE)
    assert piped.pread_into(handle, memoryview(buffer), 0) == len(data)
    assert bytes(buffer[: len(data)]) == data
    piped.close(handle)


# -- a server that fails in the middle of a pipeline ----------------------------------------


@contextmanager
def scripted(replies: Callable[[list[bytes]], bytes], preads: int) -> Iterator[list[bytes]]:
    """A Chirp server that logs in, opens, reads ``preads`` request lines, answers them all
    with ``replies(lines)``, then answers one ``fstat``. Yields the port first, then (in the
    same list) every request line it read, once the server is done."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    done = threading.Event()
    seen: list[bytes] = []

    def lines(conn: socket.socket, count: int, pending: bytearray) -> list[bytes]:
        found: list[bytes] = []
        while len(found) < count:
            while b"\n" not in pending:
                try:
                    chunk = conn.recv(4096)
                except OSError:  # the client hung up (after a protocol error, on purpose)
                    chunk = b""
                if not chunk:
                    return found
                pending += chunk
            line, _, rest = bytes(pending).partition(b"\n")
            pending[:] = rest
            found.append(line)
        seen.extend(found)
        return found

    def serve() -> None:
        listener.settimeout(10)
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            pending = bytearray()
            stat_line = encode_stat(os.stat("/")).encode() + b"\n"
            lines(conn, 1, pending)
            conn.sendall(b"yes\nyes\nyes\naddress\n127.0.0.1\n")
            lines(conn, 1, pending)  # open
            conn.sendall(b"3\n" + stat_line)
            conn.sendall(replies(lines(conn, preads, pending)))
            if lines(conn, 1, pending):  # fstat: the stream must be in step to get here
                conn.sendall(b"0\n" + stat_line)
            done.wait(10)

    thread = threading.Thread(target=serve)
    thread.start()
    seen.append(str(listener.getsockname()[1]).encode())
    try:
        yield seen
    finally:
        done.set()
        listener.close()
        thread.join(10)


def _driver(seen: list[bytes]) -> ChirpDriver:
    port = int(seen.pop(0))
    driver = ChirpDriver("127.0.0.1", port, auth_methods=("address",), timeout=5, recovery=0)
    driver.pipeline_piece = PIECE
    return driver


def test_an_error_mid_pipeline_returns_the_bytes_before_it_and_keeps_the_stream() -> None:
    first = pattern(PIECE)

    def replies(lines: list[bytes]) -> bytes:
        return f"{PIECE}\n".encode() + first + b"-127\n" + b"5\nlater"

    with scripted(replies, 3) as seen, _driver(seen) as driver:
        handle = driver.open("/f", os.O_RDONLY)
        buffer = bytearray(3 * PIECE)
        assert driver.pread_into(handle, memoryview(buffer), 0) == PIECE
        assert bytes(buffer[:PIECE]) == first
        assert driver.fstat(handle).st_size == os.stat("/").st_size  # in step: fstat's own reply
    # Three requests, sent before any reply was read (the server answered them at once).
    assert seen[2:5] == [f"pread 3 {PIECE} {i * PIECE}".encode() for i in range(3)]
    assert seen[5] == b"fstat 3"


def test_an_error_first_in_a_pipeline_is_its_errno_and_nothing_is_lost() -> None:
    def replies(lines: list[bytes]) -> bytes:
        return b"-12\n" + f"{PIECE}\n".encode() + pattern(PIECE)  # BAD_FD, then data

    with scripted(replies, 2) as seen, _driver(seen) as driver:
        handle = driver.open("/f", os.O_RDONLY)
        with pytest.raises(OSError) as info:
            driver.pread_into(handle, memoryview(bytearray(2 * PIECE)), 0)
        assert info.value.errno == errno.EBADF
        assert driver.fstat(handle).st_size == os.stat("/").st_size


def test_bytes_after_a_short_reply_are_not_counted() -> None:
    # The file grew between the replies (or a server lies): the count is the unbroken run.
    def replies(lines: list[bytes]) -> bytes:
        return b"10\n" + pattern(10) + f"{PIECE}\n".encode() + pattern(PIECE)

    with scripted(replies, 2) as seen, _driver(seen) as driver:
        handle = driver.open("/f", os.O_RDONLY)
        buffer = bytearray(2 * PIECE)
        assert driver.pread_into(handle, memoryview(buffer), 0) == 10
        assert driver.fstat(handle).st_size == os.stat("/").st_size


def test_a_reply_larger_than_its_request_is_eproto() -> None:
    def replies(lines: list[bytes]) -> bytes:
        return f"{PIECE + 1}\n".encode() + pattern(PIECE + 1)

    with scripted(replies, 1) as seen, _driver(seen) as driver:
        handle = driver.open("/f", os.O_RDONLY)
        with pytest.raises(OSError) as info:
            driver.pread_into(handle, memoryview(bytearray(PIECE)), 0)
        assert info.value.errno == errno.EPROTO


def test_a_pipelined_read_after_a_server_restart_is_replayed_whole(
    chirp_server: RunningServer,
) -> None:
    data = pattern(3 * PIECE + 7)
    with ChirpDriver(
        chirp_server.host, chirp_server.port, auth_methods=("address",), timeout=3, recovery=15
    ) as driver:
        driver.pipeline_piece = PIECE
        driver.write_file("/f", data)
        handle = driver.open("/f", os.O_RDONLY)
        chirp_server.restart()
        buffer = bytearray(4 * PIECE)
        assert driver.pread_into(handle, memoryview(buffer), 0) == len(data)
        assert bytes(buffer[: len(data)]) == data
        assert driver.recoveries == 1


def test_pread_into_more_pieces_than_the_pipeline_holds(piped: ChirpDriver) -> None:
    pieces = 3 * PIPELINE_DEPTH + 1
    data = pattern(pieces * PIECE - 5)
    piped.write_file("/f", data)
    handle = piped.open("/f", os.O_RDONLY)
    buffer = bytearray(pieces * PIECE)
    assert piped.pread_into(handle, memoryview(buffer), 0) == len(data)
    assert bytes(buffer[: len(data)]) == data
    assert piped.pread(handle, 3, 0) == data[:3]
    piped.close(handle)
