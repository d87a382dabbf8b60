"""The Chirp wire vocabulary: encodings, lines, codes."""

from __future__ import annotations

import errno
import os

import pytest

from drivers.chirp.codec import (
    ChirpCode,
    chirp_code_for_errno,
    decode_path,
    encode_path,
    errno_for_chirp_code,
    flags_from_letters,
    letters_from_flags,
    parse_stat_line,
)


@pytest.mark.parametrize(
    ("path", "wire"),
    [
        ("/plain/file.txt", "/plain/file.txt"),
        ("/with space", "/with%20space"),
        ("/new\nline", "/new%0Aline"),
        ("/100%", "/100%25"),
        ("/q'\"<>\\", "/q%27%22%3C%3E%5C"),
        ("/tilde~{|}", "/tilde%7E%7B%7C%7D"),
        ("/é", "/%C3%A9"),
    ],
)
def test_paths_encode_like_cctools_url_encode(path: str, wire: str) -> None:
    assert encode_path(path) == wire
    assert decode_path(wire) == path


def test_decode_leaves_malformed_escapes_literal() -> None:
    assert decode_path("/a%zz%4") == "/a%zz%4"
    assert decode_path(b"/%c3%a9") == "/é"


def test_stat_line_field_order() -> None:
    st = parse_stat_line("1 2 33188 4 5 6 7 8 9 10 11 12 13")
    assert (st.st_dev, st.st_ino, st.st_mode, st.st_nlink, st.st_uid, st.st_gid) == (
        1,
        2,
        33188,
        4,
        5,
        6,
    )
    assert (st.st_rdev, st.st_size, st.st_blksize, st.st_blocks) == (7, 8, 9, 10)
    assert (st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns) == (11 * 10**9, 12 * 10**9, 13 * 10**9)
    with pytest.raises(ValueError):
        parse_stat_line("1 2 3")


@pytest.mark.parametrize(
    ("flags", "letters"),
    [
        (os.O_RDONLY, "r"),
        (os.O_WRONLY | os.O_CREAT | os.O_TRUNC, "wct"),
        (os.O_RDWR | os.O_APPEND, "rwa"),
        (os.O_WRONLY | os.O_CREAT | os.O_EXCL, "wcx"),
        (os.O_RDWR | os.O_SYNC, "rws"),
    ],
)
def test_open_flags_round_trip(flags: int, letters: str) -> None:
    assert letters_from_flags(flags) == letters
    assert flags_from_letters(letters) == flags


def test_error_codes_map_both_ways() -> None:
    for code in (
        errno.ENOENT,
        errno.EEXIST,
        errno.EISDIR,
        errno.ENOTDIR,
        errno.ENOTEMPTY,
        errno.EACCES,
    ):
        assert errno_for_chirp_code(chirp_code_for_errno(code)) == code
    assert chirp_code_for_errno(errno.EPERM) == ChirpCode.NOT_AUTHORIZED
    assert chirp_code_for_errno(errno.ELOOP) == ChirpCode.UNKNOWN
    assert errno_for_chirp_code(ChirpCode.BAD_FD) == errno.EBADF
    assert errno_for_chirp_code(-99) == errno.EIO
