"""Receiving a large payload: one call for the whole buffer, and still bounded in time.

Covers: ``ReplyDeadline.receive_into`` (``drivers/_network.py``) on a real socket pair
whose other end sends like a server on a loaded machine: a payload in many small
segments with pauses between them.

Scenario: a buffer of at least ``WHOLE_RECEIVE`` bytes is filled by one call however
many segments the payload comes in (a call per segment is what made a 1 MiB Chirp
read cost five passes through the driver's receive loop); a peer that stops sending
halfway ends the call with the bytes that came, and the next call with ETIMEDOUT,
both within the deadline; afterwards the socket is back in timeout mode for the
small receives that follow.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from drivers._network import WHOLE_RECEIVE, ReplyDeadline

SEGMENT = 16 * 1024  # bytes the peer sends at a time
PAUSE = 0.002  # seconds between two segments: each arrives on its own


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    try:
        yield ours, theirs
    finally:
        ours.close()
        theirs.close()


def _send_in_segments(sock: socket.socket, data: bytes) -> threading.Thread:
    def send() -> None:
        for at in range(0, len(data), SEGMENT):
            sock.sendall(data[at : at + SEGMENT])
            time.sleep(PAUSE)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    return sender


def test_a_large_buffer_is_filled_by_one_call_however_the_payload_is_cut(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    ours.settimeout(5.0)
    payload = bytes(range(256)) * (1024 * 1024 // 256)  # a Chirp read block
    assert len(payload) >= WHOLE_RECEIVE
    sender = _send_in_segments(theirs, payload)
    buffer = bytearray(len(payload))
    count = ReplyDeadline(5.0, "test").receive_into(ours, memoryview(buffer))
    sender.join(timeout=10)
    assert count == len(payload), f"one call took {count} of {len(payload)} bytes"
    assert buffer == payload
    assert ours.gettimeout() == 5.0  # back in timeout mode for the small receives


def test_a_small_buffer_takes_what_has_come(pair: tuple[socket.socket, socket.socket]) -> None:
    """A result line's read must not wait for its 32 bytes: the reply may be shorter, and
    the server then waits for our next request (seeded: every buffer received whole, the
    call waits out the 60 s deadline)."""
    ours, theirs = pair
    ours.settimeout(60.0)
    theirs.sendall(b"12\n")
    buffer = memoryview(bytearray(32))
    counts: list[int] = []
    receiver = threading.Thread(
        target=lambda: counts.append(ReplyDeadline(60.0, "test").receive_into(ours, buffer)),
        daemon=True,
    )
    receiver.start()
    receiver.join(timeout=20)
    assert not receiver.is_alive(), "a small receive waited for its whole buffer"
    assert counts == [3]


def test_a_payload_that_stops_halfway_ends_at_the_deadline(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    ours.settimeout(0.5)
    theirs.sendall(b"x" * SEGMENT)  # then nothing more, the connection left open
    deadline = ReplyDeadline(0.5, "test")
    buffer = memoryview(bytearray(4 * WHOLE_RECEIVE))
    outcome: list[int | OSError] = []

    def receive_twice() -> None:
        outcome.append(deadline.receive_into(ours, buffer))
        try:
            outcome.append(deadline.receive_into(ours, buffer[SEGMENT:]))
        except OSError as exc:
            outcome.append(exc)

    receiver = threading.Thread(target=receive_twice, daemon=True)
    receiver.start()
    receiver.join(timeout=20)  # a wait without a bound would still be here
    assert not receiver.is_alive(), "the receive did not end"
    assert outcome[0] == SEGMENT  # what came is returned, not lost
    assert isinstance(outcome[1], OSError) and outcome[1].errno == errno.ETIMEDOUT
