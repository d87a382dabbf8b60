"""The sans-I/O Chirp client core, fed bytes exactly as servers send them."""

from __future__ import annotations

import errno

import pytest

from drivers.chirp._connection import BROKEN, CONNECTED, PUT_SEND, READY, ChirpConnection
from drivers.chirp._events import (
    NEED_DATA,
    AuthAgreed,
    Authenticated,
    AuthOffer,
    AuthRefused,
    ChallengeAnswer,
    ContinuePut,
    Data,
    Done,
    Failure,
    ListReply,
    LocalProtocolError,
    LongListReply,
    PutData,
    RemoteProtocolError,
    Reply,
    Request,
    StatFSReply,
    StatReply,
    UnixChallenge,
)

STAT_LINE = b"65024 2146401 33152 1 1001 1001 0 5 4096 8 1795379218 1795379219 1795379220\n"


def events(conn: ChirpConnection) -> list[object]:
    found: list[object] = []
    while (event := conn.next_event()) is not NEED_DATA:
        found.append(event)
    return found


def feed_bytewise(conn: ChirpConnection, data: bytes) -> list[object]:
    """Feed one byte at a time: every reader must cope with any split."""
    found: list[object] = []
    for i in range(len(data)):
        conn.receive_data(data[i : i + 1])
        found += events(conn)
    return found


def ready_connection() -> ChirpConnection:
    conn = ChirpConnection()
    assert conn.send(AuthOffer("address")) == b"address\n"
    conn.receive_data(b"yes\nyes\nyes\naddress\n127.0.0.1\n")
    assert events(conn) == [AuthAgreed("address"), Authenticated("address", "127.0.0.1")]
    assert conn.state is READY
    return conn


def test_address_auth_as_cctools_sends_it_bytewise() -> None:
    conn = ChirpConnection()
    conn.send(AuthOffer("address"))
    found = feed_bytewise(conn, b"yes\nyes\nyes\naddress\n127.0.0.1\n")
    assert found == [AuthAgreed("address"), Authenticated("address", "127.0.0.1")]
    assert conn.subject == "127.0.0.1"


def test_refused_method_returns_to_negotiation() -> None:
    conn = ChirpConnection()
    conn.send(AuthOffer("kerberos"))
    conn.receive_data(b"no\n")
    assert events(conn) == [AuthRefused("kerberos")]
    assert conn.state is CONNECTED
    conn.send(AuthOffer("hostname"))
    conn.receive_data(b"yes\nno\n")  # agreed to try, then the reverse lookup failed
    assert events(conn) == [AuthAgreed("hostname"), AuthRefused("hostname")]
    assert conn.state is CONNECTED


def test_unix_challenge_accepted() -> None:
    conn = ChirpConnection()
    conn.send(AuthOffer("unix"))
    conn.receive_data(b"yes\n/tmp/challenge.42.7\n")
    assert events(conn) == [AuthAgreed("unix"), UnixChallenge("/tmp/challenge.42.7")]
    assert conn.send(ChallengeAnswer(created=True)) == b"yes\n"
    conn.receive_data(b"yes\nyes\nunix\nalice\n")
    assert events(conn) == [Authenticated("unix", "alice")]


def test_unix_challenge_declined_sends_no_and_renegotiates() -> None:
    conn = ChirpConnection()
    conn.send(AuthOffer("unix"))
    conn.receive_data(b"yes\n/tmp/challenge.1.2\n")
    events(conn)
    assert conn.send(ChallengeAnswer(created=False)) == b"no\n"
    assert conn.state is CONNECTED


def test_requests_before_auth_are_refused() -> None:
    with pytest.raises(LocalProtocolError):
        ChirpConnection().send(Request("stat /"))


@pytest.mark.parametrize(
    ("request_", "wire", "expected"),
    [
        (Request("mkdir /d 493"), b"0\n", Done(0)),
        (Request("stat /x", Reply.STAT), b"0\n" + STAT_LINE, None),
        (Request("pread 0 10 0", Reply.BYTES, limit=10), b"5\nhello", Data(5, b"hello")),
        (Request("pread 0 10 99", Reply.BYTES, limit=10), b"0\n", Data(0, b"")),
        (Request("getdir /", Reply.LINES), b"0\n.\n..\na b\n\n", ListReply((".", "..", "a b"))),
        (Request("stat /nope", Reply.STAT), b"-3\n", Failure(-3)),
        (Request("getdir /f", Reply.LINES), b"-14\n", Failure(-14)),
    ],
)
def test_reply_shapes_bytewise(request_: Request, wire: bytes, expected: object) -> None:
    conn = ready_connection()
    conn.send(request_)
    found = feed_bytewise(conn, wire)
    assert len(found) == 1
    if expected is None:
        assert isinstance(found[0], StatReply)
        assert found[0].stat.st_size == 5
        assert found[0].stat.st_mtime_ns == 1795379219 * 10**9
    else:
        assert found[0] == expected
    assert conn.pending == 0


def test_longdir_pairs_names_and_lstat_lines() -> None:
    conn = ready_connection()
    conn.send(Request("getlongdir /", Reply.LONGDIR))
    zeros = b" ".join([b"0"] * 13) + b"\n"
    found = feed_bytewise(conn, b"0\n.\n" + STAT_LINE + b"broken link\n" + zeros + b"\n")
    assert len(found) == 1 and isinstance(found[0], LongListReply)
    (dot, dot_stat), (name, missing) = found[0].entries
    assert (dot, name) == (".", "broken link")
    assert dot_stat is not None and dot_stat.st_ino == 2146401
    assert missing is None  # the server's all-zero line: its lstat failed


def test_statfs_in_the_codes_field_order() -> None:
    conn = ready_connection()
    conn.send(Request("statfs /", Reply.STATFS))
    conn.receive_data(b"0\n61267 4096 100 60 50 1000 900\n")
    (event,) = events(conn)
    assert isinstance(event, StatFSReply)
    assert (event.statfs.f_type, event.statfs.f_bsize, event.statfs.f_bavail) == (61267, 4096, 50)


def test_pipelined_replies_come_back_in_order() -> None:
    conn = ready_connection()
    conn.send(Request("stat /a", Reply.STAT))
    conn.send(Request("pread 3 4 0", Reply.BYTES, limit=4))
    conn.send(Request("close 3"))
    conn.receive_data(b"-3\n4\nabcd0\n")
    assert events(conn) == [Failure(-3), Data(4, b"abcd"), Done(0)]


def test_putfile_is_two_phase() -> None:
    conn = ready_connection()
    conn.send(Request("putfile /f 420 3", Reply.PUT))
    with pytest.raises(LocalProtocolError):
        conn.send(Request("stat /"))  # nothing may overtake the payload
    conn.receive_data(b"0\n")
    assert events(conn) == [ContinuePut()]
    assert conn.state is PUT_SEND
    assert conn.send(PutData(b"abc")) == b"abc"
    conn.receive_data(b"3\n")
    assert events(conn) == [Done(3)]
    assert conn.state is READY


def test_putfile_refused_sends_no_payload() -> None:
    conn = ready_connection()
    conn.send(Request("putfile /d 420 3", Reply.PUT))
    conn.receive_data(b"-13\n")
    assert events(conn) == [Failure(-13)]
    with pytest.raises(LocalProtocolError):
        conn.send(PutData(b"abc"))


@pytest.mark.parametrize(
    ("request_", "wire"),
    [
        (Request("stat /x", Reply.STAT), b"zero\n"),  # not a number
        (Request("stat /x", Reply.STAT), b"0\n1 2 3\n"),  # a short stat line
        (Request("pread 0 4 0", Reply.BYTES, limit=4), b"999999\n"),  # more than asked
        (Request("getdir /", Reply.LINES), b"0\n" + b"x" * 70000),  # an endless line
    ],
)
def test_a_lying_server_is_a_remote_protocol_error(request_: Request, wire: bytes) -> None:
    conn = ready_connection()
    conn.send(request_)
    conn.receive_data(wire)
    with pytest.raises(RemoteProtocolError) as info:
        events(conn)
    assert info.value.errno_hint == errno.EPROTO
    assert conn.state is BROKEN


def test_hangup_mid_reply_is_connection_reset() -> None:
    conn = ready_connection()
    conn.send(Request("pread 0 10 0", Reply.BYTES, limit=10))
    conn.receive_data(b"10\nhalf")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert info.value.errno_hint == errno.ECONNRESET
    with pytest.raises(LocalProtocolError):
        conn.send(Request("stat /"))


def test_longdir_name_with_newline_is_reassembled() -> None:
    conn = ready_connection()
    conn.send(Request("getlongdir /", Reply.LONGDIR))
    conn.receive_data(b"0\nnew\nline\n" + STAT_LINE + b"\n")
    (event,) = events(conn)
    assert isinstance(event, LongListReply)
    assert [name for name, _ in event.entries] == ["new\nline"]


def test_longdir_without_stat_lines_is_a_lie() -> None:
    conn = ready_connection()
    conn.send(Request("getlongdir /", Reply.LONGDIR))
    conn.receive_data(b"0\n" + b"garbage\n" * 1000)
    with pytest.raises(RemoteProtocolError):
        events(conn)


def test_send_follows_the_transition_table_and_nothing_else() -> None:
    """Every (state, event) the table names leads where it says; every other pair is refused."""
    from drivers.chirp._connection import SEND_TRANSITIONS, State, send_kind
    from drivers.chirp._events import AuthOffer, ChallengeAnswer, Event, PutData

    samples: list[Event] = [
        AuthOffer("address"),
        ChallengeAnswer(created=True),
        ChallengeAnswer(created=False),
        Request("stat /x", Reply.STAT),
        Request("putfile /x 0644 1", Reply.PUT, payload=b""),
        PutData(b"x"),
    ]
    for state in State:
        for event in samples:
            conn = ChirpConnection()
            conn.state = state
            expected = SEND_TRANSITIONS.get((state, send_kind(event)))
            if expected is None:
                with pytest.raises(LocalProtocolError):
                    conn.send(event)
            else:
                conn.send(event)
                assert conn.state is expected, (state, event)
